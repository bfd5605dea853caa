"""Named bounds on everything the registry accepts from a caller (admin API and CLI).

What ends up in the global configuration is bounded by :mod:`ruta.globalconf.limits` too (every
server refuses a document over them), so those bounds are taken from there, never set apart.
"""

from __future__ import annotations

from typing import Final

from ruta.globalconf import limits as _published

#: Most entries one list request returns (a page); callers page on with ``page_token``.
MAX_PAGE_SIZE: Final = 500
#: Page size when a request names none.
DEFAULT_PAGE_SIZE: Final = 100
#: Largest serialised FileDescriptorSet a service may carry.
MAX_DESCRIPTOR_SET_BYTES: Final = _published.MAX_DESCRIPTOR_SET_BYTES
#: Most methods one service (or one contract) may name.
MAX_METHODS: Final = 256
#: Longest method name.
MAX_METHOD_NAME_LENGTH: Final = 128
#: Longest free text (description, purpose, legal basis).
MAX_TEXT_LENGTH: Final = _published.MAX_TEXT_LENGTH
#: Longest member name.
MAX_NAME_LENGTH: Final = 256
#: Longest ``host:port`` address.
MAX_ADDRESS_LENGTH: Final = 262
#: Longest log verifier key text (C2SP vkey: name + key ID + base64 key).
MAX_LOG_KEY_LENGTH: Final = 512
#: Largest DER certificate or CSR accepted.
MAX_CERTIFICATE_BYTES: Final = 16 * 1024
#: Largest admin-API request message (the descriptor set plus some room).
MAX_REQUEST_BYTES: Final = MAX_DESCRIPTOR_SET_BYTES + 64 * 1024
#: Largest savings figure accepted (minutes or cost per call); keeps reports meaningful.
MAX_SAVINGS_VALUE: Final = 1e9
#: Highest rate limit a contract may carry (calls per minute; 0 means none): 100,000 a second.
MAX_RATE_LIMIT_PER_MINUTE: Final = 6_000_000
