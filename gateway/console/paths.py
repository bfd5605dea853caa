"""Where the console pages are on the gateway's HTTP port."""

from __future__ import annotations

from typing import Final

from ruta.web import STATIC_PREFIX

__all__ = [
    "CATALOGUE_PATH",
    "OPEN_DATA_CATALOG_PATH",
    "OPEN_DATA_CSV_PATH",
    "OPEN_DATA_JSON_PATH",
    "OPEN_DATA_PATH",
    "STATIC_PREFIX",
]

CATALOGUE_PATH: Final = "/catalogue"
OPEN_DATA_PATH: Final = "/open-data"
OPEN_DATA_CSV_PATH: Final = "/open-data/exchanges.csv"
OPEN_DATA_JSON_PATH: Final = "/open-data/exchanges.json"
OPEN_DATA_CATALOG_PATH: Final = "/open-data/catalog.jsonld"
