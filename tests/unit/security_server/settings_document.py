"""A security server's settings document as the unit tests write it to a file: the least a valid
one holds, relative paths throughout."""

from __future__ import annotations

from typing import Any

__all__ = ["settings_document"]


def settings_document(**changes: Any) -> dict[str, Any]:
    """The document, its top-level entries replaced or added by ``changes``."""
    document: dict[str, Any] = {
        "server_id": "DEV/GOV/POP/ss1",
        "data_dir": "data",
        "keys": {
            "auth_key": "keys/auth.key",
            "auth_cert": "keys/auth.pem",
            "signing_key": "keys/sign.key",
            "signing_cert": "keys/sign.pem",
        },
        "globalconf": {"anchor": "anchor.toml"},
        "consumer": {"listen": "127.0.0.1:0", "client_ca": "ca.pem"},
    }
    document.update(changes)
    return document
