"""Errors of the global-configuration library; each carries a stable fault code."""

from __future__ import annotations

from ruta.faults import Fault, RutaError

__all__ = [
    "ConfigurationSignatureError",
    "ConfigurationTooLargeError",
    "GlobalConfError",
    "GlobalConfFetchError",
    "InvalidConfigurationError",
    "OutdatedGlobalConfError",
    "SerialRegressionError",
]


class GlobalConfError(RutaError):
    """A global configuration was refused or is not available."""

    default_fault = Fault.SERVER_CONSUMER_INVALID_GLOBALCONF


class ConfigurationTooLargeError(GlobalConfError):
    """A document, or one of its entries, is over a bound in :mod:`ruta.globalconf.limits`."""


class ConfigurationSignatureError(GlobalConfError):
    """The signature does not verify, or the signer is not the anchor's config-signing cert."""


class InvalidConfigurationError(GlobalConfError):
    """The document is signed but malformed: bad identifier, duplicate or dangling entry."""


class SerialRegressionError(GlobalConfError):
    """A document's serial is older than the one held, or equal with different content."""


class GlobalConfFetchError(GlobalConfError):
    """The registry could not be reached or answered with an unexpected status."""

    default_fault = Fault.SERVER_CONSUMER_NETWORK_ERROR


class OutdatedGlobalConfError(GlobalConfError):
    """No valid global configuration is held, or the one held has expired (fail closed).

    Carries ``server.consumer.outdated_globalconf``; a security server's proxy maps it to its
    own side's ``outdated_globalconf`` (``security_server.errors.fault_for``).
    """

    default_fault = Fault.SERVER_CONSUMER_OUTDATED_GLOBALCONF
