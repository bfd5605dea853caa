"""Code generated from ``proto/ruta/v1/`` by ``make proto``; never edited by hand.

The ``*_pb2.py``, ``*_pb2_grpc.py`` and their ``.pyi`` stubs are produced at install time and are
not committed (docs/adr/0001-generated-code-at-install.md). Only this file is kept in the repository.
"""
