"""The auditor console (issue 15, docs/adr/0027): web pages served by the security server on a
listener of their own (``[console] listen``), for auditors with a browser certificate whose
roles read this server's log. Every action calls the audit API's service layer
(:class:`security_server.audit.AuditServicer`) with the browser certificate's roles."""

from security_server.console.listener import CLIENT_CA_FILE, ConsoleListener
from security_server.console.pages import (
    CONSOLE_PAGE_SIZE,
    MAX_UPLOAD_BYTES,
    AuditConsole,
    console_app,
)
from security_server.console.settings import ConsoleSettings

__all__ = [
    "CLIENT_CA_FILE",
    "CONSOLE_PAGE_SIZE",
    "MAX_UPLOAD_BYTES",
    "AuditConsole",
    "ConsoleListener",
    "ConsoleSettings",
    "console_app",
]
