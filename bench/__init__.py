"""Ruta's benchmarks: the price of trust measured against direct gRPC, and the hot-path parts.

``make bench`` (``python -m bench``) runs the exchange benchmark (:mod:`bench.exchange`) and the
micro-benchmarks (:mod:`bench.micro`); see ``bench/README.md``. Nothing here asserts a time.
"""
