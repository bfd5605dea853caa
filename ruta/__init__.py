"""Ruta's core library, shared by every part of the bus.

It owns what all parts must agree on: identifiers (:mod:`ruta.ids`), the error root and the stable
fault codes (:mod:`ruta.faults`), settings loading (:mod:`ruta.settings`), PKI and message
signatures (:mod:`ruta.pki`), the wire contracts generated from ``proto/`` (:mod:`ruta.v1`) and the
``ruta`` command line (:mod:`ruta.cli`). It imports none of the parts (registry, security server,
adapters, gateway); they import it and meet each other only on the wire.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("ruta")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
