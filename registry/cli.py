"""``ruta registry …``: the registry's command group.

Each concern keeps its commands in its own module; they are listed here by name and imported only
when used (:class:`ruta.cli.LazyGroup`).
"""

from __future__ import annotations

from ruta.cli import LazyGroup

group = LazyGroup(
    name="registry",
    help="Run and administer the central registry: members, services, contracts, CA, OCSP.",
    lazy_commands={
        # "name": "module:click_command",  one line per concern
        "ca": "registry.ca_cli:ca",
        "ocsp": "registry.ca_cli:ocsp",
        "init": "registry.node_cli:init",
        "serve": "registry.node_cli:serve",
        "node": "registry.node_cli:node",
        "member": "registry.admin_cli:member",
        "subsystem": "registry.admin_cli:subsystem",
        "server": "registry.admin_cli:server",
        "service": "registry.admin_cli:service",
        "contract": "registry.admin_cli:contract",
        "audit": "registry.admin_cli:audit",
        "certificate": "registry.admin_cli:certificate",
    },
)
