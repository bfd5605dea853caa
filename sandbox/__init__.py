"""The developer kit: a whole Ruta instance on loopback, as real processes (``ruta sandbox
up|down``), the once-only demo (``make demo``, :mod:`sandbox.demo`) and the example population
backend the tests put behind a provider (:mod:`sandbox.examples`).

A part like the others (docs/adr/0015-dev-kit-part.md): production code never imports it. It
drives the registry and the security servers only through their command line and their wire
protocols, so it exercises exactly what an operator runs; from the adapters it takes only their
example files and legacy systems (:mod:`adapters.examples`).
"""
