"""Adapters that put legacy systems on the bus without code.

An adapter is a gRPC server that a provider security server routes to like any backend. It serves
the methods of a ``.proto`` service from a declarative file, answering each from a read-only SQL
query, a REST/JSON call, a SOAP operation or a CSV lookup, with the field mapping the file states.
It imports :mod:`ruta` only and meets the other parts on the wire.

Entry points: :class:`adapters.server.Adapter` (``Adapter.load(path)``) with
:func:`adapters.server.start_server`, :func:`adapters.check.check_adapter`, and the commands
``ruta adapter serve`` / ``ruta adapter check`` (:mod:`adapters.serve_cli`). The file format is
:mod:`adapters.spec`; the guide is ``docs/guides/legacy-systems.md``. Examples for the once-only
scenario live in :mod:`adapters.examples`.
"""
