"""The messages of the shared error pages (English; translated in this kit's catalogues).

``N_`` marks a message for extraction (``pybabel extract -F ruta/web/babel.cfg``) without
translating it here: pages translate it in the request's language when they show it.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "FORBIDDEN",
    "FORBIDDEN_EXPLANATION",
    "FORM_EXPIRED",
    "FORM_EXPIRED_EXPLANATION",
    "NOT_FOUND",
    "NOT_FOUND_EXPLANATION",
    "NO_CERTIFICATE",
    "NO_CERTIFICATE_EXPLANATION",
    "N_",
    "REVOKED",
    "REVOKED_EXPLANATION",
    "SESSION_EXPIRED",
    "SESSION_EXPIRED_EXPLANATION",
]


def N_(message: str) -> str:  # noqa: N802 - the name gettext tools look for
    """``message`` itself, marked for extraction (every part's code uses this one)."""
    return message


NO_CERTIFICATE: Final = N_("A client certificate is needed")
NO_CERTIFICATE_EXPLANATION: Final = N_(
    "This console is only for people with a certificate issued by this instance's certificate "
    "authority, and your browser presented none. Ask your administrator for one, load it into "
    "your browser (the operator guide says how), then open this page again."
)
FORBIDDEN: Final = N_("You may not open this page")
FORBIDDEN_EXPLANATION: Final = N_(
    "This page needs the role %(role)s, and your certificate (%(subject)s) does not carry it. "
    "Ask your administrator for a certificate with that role."
)
REVOKED: Final = N_("Your certificate has been revoked")
REVOKED_EXPLANATION: Final = N_(
    "The certificate your browser presented (%(subject)s) has been revoked. Ask your "
    "administrator for a new one."
)
FORM_EXPIRED: Final = N_("The form could not be accepted")
FORM_EXPIRED_EXPLANATION: Final = N_(
    "The form was not sent from this console's own page, or your session has ended. Go back, "
    "reload the page and try again."
)
SESSION_EXPIRED: Final = N_("Your session has ended")
SESSION_EXPIRED_EXPLANATION: Final = N_(
    "You were signed out after a while without activity. Sign in again to go on."
)
NOT_FOUND: Final = N_("Page not found")
NOT_FOUND_EXPLANATION: Final = N_("There is nothing at this address.")
