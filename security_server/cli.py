"""``ruta ss …``: the security server's command group.

Each concern keeps its commands in its own module; they are listed here by name and imported only
when used (:class:`ruta.cli.LazyGroup`).
"""

from __future__ import annotations

from ruta.cli import LazyGroup

group = LazyGroup(
    name="ss",
    help="Initialise, enrol and run an agency's security server.",
    lazy_commands={
        # "name": "module:click_command",  one line per concern
        "serve": "security_server.serve_cli:serve",
        "init": "security_server.init_cli:init",
        "reload": "security_server.settings_cli:reload",
        "backend": "security_server.settings_cli:backend",
        "refusals": "security_server.refusals_cli:refusals",
        "backup": "security_server.backup:backup",
    },
)
