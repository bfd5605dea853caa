"""Named bounds on a global configuration, which every security server reads from the network.

A registry refuses to sign a document over these bounds and a client refuses to read one, so a
hostile or broken registry (or anything between it and a server) cannot make a server allocate
without limit. The defaults leave room for a large instance: the benchmark in
``bench/globalconf.py`` (10,000 members, 1,000 servers, 20,000 services, 100,000 contracts) fits.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "MAX_DESCRIPTOR_SET_BYTES",
    "MAX_DOCUMENT_BYTES",
    "MAX_ENTRIES_PER_KIND",
    "MAX_METHODS_PER_ENTRY",
    "MAX_OCSP_CLOCK_SKEW_SECONDS",
    "MAX_OCSP_FRESHNESS_SECONDS",
    "MAX_OPENAPI_BYTES",
    "MAX_ROLE_ISSUERS",
    "MAX_TEXT_LENGTH",
]

#: Largest signed document (``SignedGlobalConfiguration`` bytes) read from the network or disk.
MAX_DOCUMENT_BYTES: Final = 128 * 1024 * 1024
#: Most entries of one kind (members, subsystems, servers, services, contracts, certificates).
MAX_ENTRIES_PER_KIND: Final = 500_000
#: Largest ``FileDescriptorSet`` of one service.
MAX_DESCRIPTOR_SET_BYTES: Final = 1024 * 1024
#: Largest OpenAPI description (JSON) of one REST service.
MAX_OPENAPI_BYTES: Final = 512 * 1024
#: Most method names a service or a contract lists.
MAX_METHODS_PER_ENTRY: Final = 1024
#: Longest free-text field (names, descriptions, purposes, legal bases, addresses, URLs).
MAX_TEXT_LENGTH: Final = 4096
#: Longest OCSP freshness a configuration may set (``VerificationParameters``).
MAX_OCSP_FRESHNESS_SECONDS: Final = 7 * 24 * 3600
#: Largest OCSP clock skew a configuration may set.
MAX_OCSP_CLOCK_SKEW_SECONDS: Final = 3600
#: Most trust anchors a configuration may name as role issuers (``RoleIssuers``): an instance
#: has one role CA, or a few while one is rolled over.
MAX_ROLE_ISSUERS: Final = 16
