"""The consoles' languages: which one a request gets, and its message catalogues.

The language is the page's ``lang`` query parameter when it names a supported one (the switcher
on every page), else the best supported match of ``Accept-Language``, else English. Catalogues
are committed ``<locale dir>/<lang>/LC_MESSAGES/messages.po`` files: this kit's own (the shared
page frame and error pages, :data:`LOCALE_DIR`) and each part's (its pages), compiled in memory
with Babel when first used and merged: nothing generated is installed or committed, and a
catalogue cannot go stale against its ``.po``.
"""

from __future__ import annotations

import functools
import io
from pathlib import Path
from typing import Final

from babel import Locale
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import NullTranslations, Translations

__all__ = [
    "DEFAULT_LANGUAGE",
    "LANGUAGES",
    "LOCALE_DIR",
    "MAX_ACCEPT_LANGUAGE_CHARS",
    "MAX_ACCEPT_LANGUAGE_ENTRIES",
    "choose_language",
    "language_name",
    "translations",
]

#: The languages every page speaks; English is the source language of the messages.
LANGUAGES: Final = ("es", "pt", "en")
DEFAULT_LANGUAGE: Final = "en"
LOCALE_DIR: Final = Path(__file__).with_name("locale")
#: Longest ``Accept-Language`` header read (the rest is ignored), and most entries weighed.
MAX_ACCEPT_LANGUAGE_CHARS: Final = 512
MAX_ACCEPT_LANGUAGE_ENTRIES: Final = 16


def _weighted(header: str) -> list[tuple[float, int, str]]:
    ranges: list[tuple[float, int, str]] = []
    for index, entry in enumerate(header[:MAX_ACCEPT_LANGUAGE_CHARS].split(",")):
        if index >= MAX_ACCEPT_LANGUAGE_ENTRIES:
            break
        tag, _, parameters = entry.strip().partition(";")
        quality = 1.0
        name, _, value = parameters.strip().partition("=")
        if name.strip() == "q":
            try:
                quality = float(value)
            except ValueError:
                quality = 0.0
        if tag and 0.0 < quality <= 1.0:
            ranges.append((-quality, index, tag.strip().lower()))
    return sorted(ranges)


def choose_language(chosen: str | None, accept_language: str | None) -> str:
    """The language of one response (see the module's description)."""
    if chosen in LANGUAGES:
        return chosen
    for _quality, _index, tag in _weighted(accept_language or ""):
        primary = tag.split("-", 1)[0]
        if primary in LANGUAGES:
            return primary
    return DEFAULT_LANGUAGE


def _compiled(path: Path, language: str) -> Translations:
    with path.open("rb") as po:
        catalog = read_po(po, locale=language)
    compiled = io.BytesIO()
    write_mo(compiled, catalog)
    compiled.seek(0)
    return Translations(compiled)


@functools.cache
def translations(language: str, *locale_dirs: Path) -> NullTranslations:
    """The compiled catalogues of ``language``: this kit's, merged with those in ``locale_dirs``
    (a later one wins on a message both translate). English: the messages as written."""
    if language == DEFAULT_LANGUAGE:
        return NullTranslations()
    merged: Translations | None = None
    for directory in (LOCALE_DIR, *locale_dirs):
        path = directory / language / "LC_MESSAGES" / "messages.po"
        if not path.exists():
            continue
        catalogue = _compiled(path, language)
        merged = catalogue if merged is None else merged.merge(catalogue)
    return merged if merged is not None else NullTranslations()


def language_name(language: str) -> str:
    """The language's name in itself ("español", "português", "English"), for the switcher."""
    name = Locale.parse(language).get_display_name(language) or language
    return name[:1].upper() + name[1:]
