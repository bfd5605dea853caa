"""The ``ruta-*`` call metadata names: what a backend (or the gateway) sends its security server,
and what the servers hand back and on to the provider's backend (DESIGN.md "How one request
travels"). Part of the wire protocol, defined once here for every part; the fault names
(``ruta-fault``, ``ruta-fault-id``) are in :mod:`ruta.faults`.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "CLIENT_HEADER",
    "MESSAGE_ID_HEADER",
    "PURPOSE_HEADER",
    "REQUEST_HASH_HEADER",
    "SERVICE_HEADER",
    "SUBJECT_HEADER",
    "USER_ID_HEADER",
]

#: The calling subsystem (required).
CLIENT_HEADER: Final = "ruta-client"
#: The provider subsystem (required).
SERVICE_HEADER: Final = "ruta-service"
#: The contract's purpose code.
PURPOSE_HEADER: Final = "ruta-purpose"
#: The official acting (optional).
USER_ID_HEADER: Final = "ruta-user-id"
#: The person the data is about (optional).
SUBJECT_HEADER: Final = "ruta-subject"
#: The exchange's message id: optional on the way in, in the trailing metadata on the way back.
MESSAGE_ID_HEADER: Final = "ruta-message-id"
#: In the trailing metadata: SHA-256 of the signed request the response is bound to.
REQUEST_HASH_HEADER: Final = "ruta-request-hash"
