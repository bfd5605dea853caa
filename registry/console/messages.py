"""The registry console's messages made in code (English; translated in its catalogues).

``N_`` marks a message for extraction without translating it here: pages translate it in the
request's language when they show it.
"""

from __future__ import annotations

from typing import Final

from ruta.web.messages import N_

__all__ = ["DONE", "REVOKED", "REVOKED_EXPLANATION", "TOO_LARGE", "TOO_LARGE_EXPLANATION"]


#: What a page says after an action succeeded (``?done=KEY`` after the redirect).
DONE: Final = {
    "member": N_("The member was added."),
    "subsystem": N_("The subsystem was added."),
    "server": N_("The security server was added."),
    "service": N_("The service was registered."),
    "requested": N_("The contract was requested."),
    "approved": N_("The contract moved one step forward."),
    "revoked": N_("The contract was revoked."),
    "issued": N_("The certificate was issued."),
    "cert-revoked": N_("The certificate was revoked; the OCSP responder reports it at once."),
}
TOO_LARGE: Final = N_("The upload is too large")
TOO_LARGE_EXPLANATION: Final = N_(
    "A form sent to this console may carry at most %(limit)s bytes. Nothing was changed."
)
REVOKED: Final = N_("Your certificate has been revoked")
REVOKED_EXPLANATION: Final = N_(
    "The certificate your browser presented (%(subject)s) has been revoked. Ask your "
    "administrator for a new one."
)
REFUSED: Final = N_("The registry refused the request:")
NOT_SHOWN: Final = N_("The page could not be shown")
NOT_SHOWN_EXPLANATION: Final = N_("The registry refused the request: %(reason)s")
