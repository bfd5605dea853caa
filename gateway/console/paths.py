"""Where the console pages are on the gateway's HTTP port."""

from __future__ import annotations

from typing import Final

from ruta.web import STATIC_PREFIX

__all__ = ["CATALOGUE_PATH", "STATIC_PREFIX"]

CATALOGUE_PATH: Final = "/catalogue"
