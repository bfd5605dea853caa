"""Adapters that put legacy systems on the bus without code.

An adapter is a gRPC server that a provider security server routes to like any backend. It serves
the methods of a ``.proto`` service from a declarative file, answering each from a read-only SQL
query, a REST/JSON call, a SOAP operation or a CSV lookup, with the field mapping the file states.
It imports :mod:`ruta` only and meets the other parts on the wire.
"""
