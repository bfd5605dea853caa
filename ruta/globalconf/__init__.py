"""The signed global configuration: its view, signing and verification, anchor and client.

Every security server and the gateway use this package; the registry uses it to sign what it
publishes (``registry/publisher.py``). See ``docs/operator/global-configuration.md``.
"""

from __future__ import annotations

from ruta.globalconf.anchor import ConfigurationAnchor
from ruta.globalconf.client import (
    CONTENT_TYPE,
    GlobalConfClient,
    GlobalConfSettings,
    etag_of,
)
from ruta.globalconf.errors import (
    ConfigurationSignatureError,
    ConfigurationTooLargeError,
    GlobalConfError,
    GlobalConfFetchError,
    InvalidConfigurationError,
    OutdatedGlobalConfError,
    SerialRegressionError,
)
from ruta.globalconf.limits import (
    MAX_DESCRIPTOR_SET_BYTES,
    MAX_DOCUMENT_BYTES,
    MAX_ENTRIES_PER_KIND,
    MAX_METHODS_PER_ENTRY,
    MAX_TEXT_LENGTH,
)
from ruta.globalconf.signing import (
    canonicalise,
    open_configuration,
    sign_configuration,
    verify_configuration,
)
from ruta.globalconf.view import Contract, GlobalConf, Member, Savings, SecurityServer, Service

__all__ = [
    "CONTENT_TYPE",
    "MAX_DESCRIPTOR_SET_BYTES",
    "MAX_DOCUMENT_BYTES",
    "MAX_ENTRIES_PER_KIND",
    "MAX_METHODS_PER_ENTRY",
    "MAX_TEXT_LENGTH",
    "ConfigurationAnchor",
    "ConfigurationSignatureError",
    "ConfigurationTooLargeError",
    "Contract",
    "GlobalConf",
    "GlobalConfClient",
    "GlobalConfError",
    "GlobalConfFetchError",
    "GlobalConfSettings",
    "InvalidConfigurationError",
    "Member",
    "OutdatedGlobalConfError",
    "Savings",
    "SecurityServer",
    "SerialRegressionError",
    "Service",
    "canonicalise",
    "etag_of",
    "open_configuration",
    "sign_configuration",
    "verify_configuration",
]
