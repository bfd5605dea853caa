"""The central registry of a Ruta instance.

It owns the store of members, subsystems, security servers, services (with their protobuf
descriptors) and contracts; the admin API and its audit trail; the instance's certificate authority
and OCSP responder; the publisher of the signed global configuration; and the witness that cosigns
the security servers' log checkpoints. It imports :mod:`ruta` only and meets the other parts on the
wire.
"""
