"""The registry console (docs/adr/0027-consoles-served-where-the-data-is.md): HTML pages served by
the registry process on a listener of its own (HTTPS, a browser client certificate from the
instance's CA), where administrators see and change members, subsystems, servers, services,
contracts and certificates, read the admin audit trail and the configuration in force.

Every action calls :class:`registry.admin_api.RegistryAdmin`, the service the gRPC admin API
calls, with the caller the browser's verified certificate describes: same roles, same bounds,
same audit trail. :func:`console_app` builds the application; ``registry/serve.py`` serves it.
"""

from registry.console.app import (
    MAX_FORM_BYTES,
    MAX_UPLOAD_BYTES,
    ConfigurationInForce,
    console_app,
)

__all__ = ["MAX_FORM_BYTES", "MAX_UPLOAD_BYTES", "ConfigurationInForce", "console_app"]
