"""``ruta adapter …``: serve and check adapters for legacy systems.

Each concern keeps its commands in its own module; they are listed here by name and imported only
when used (:class:`ruta.cli.LazyGroup`).
"""

from __future__ import annotations

from ruta.cli import LazyGroup

group = LazyGroup(
    name="adapter",
    help="Serve a bus service from a legacy SQL, REST, SOAP or CSV system, from a file.",
    lazy_commands={
        # "name": "module:click_command",  one line per concern
        "serve": "adapters.serve_cli:serve",
        "check": "adapters.serve_cli:check",
    },
)
