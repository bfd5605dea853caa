"""The consoles' languages: negotiation from Accept-Language and the page's choice, bounded
input, and catalogues that translate every message the templates and code use."""

from __future__ import annotations

import pytest

from ruta.web.i18n import (
    LANGUAGES,
    MAX_ACCEPT_LANGUAGE_CHARS,
    choose_language,
    language_name,
    translations,
)
from tests.catalogues import ROOT, extracted, untranslated


@pytest.mark.parametrize(
    ("chosen", "header", "expected"),
    [
        (None, None, "en"),
        (None, "pt-BR,pt;q=0.9,en;q=0.8", "pt"),
        (None, "es-419, en;q=0.5", "es"),
        (None, "fr-FR, de;q=0.9", "en"),
        (None, "fr;q=1, en;q=0.2, es;q=0.7", "es"),
        (None, "es;q=0, pt;q=0.1", "pt"),
        (None, "es;q=abc, pt;q=0.1", "pt"),
        ("pt", "es", "pt"),
        ("xx", "es", "es"),
        ("<script>", None, "en"),
    ],
)
def test_the_language_is_the_choice_then_accept_language_then_english(
    chosen: str | None, header: str | None, expected: str
) -> None:
    assert choose_language(chosen, header) == expected


def test_a_huge_accept_language_is_read_only_up_to_its_bound() -> None:
    header = "fr," * MAX_ACCEPT_LANGUAGE_CHARS + "es"
    assert choose_language(None, header) == "en"


def test_languages_name_themselves() -> None:
    assert [language_name(code) for code in LANGUAGES] == ["Español", "Português", "English"]


@pytest.mark.parametrize(
    "part", ["ruta/web", "gateway/console", "registry/console", "security_server/console"]
)
@pytest.mark.parametrize("language", [code for code in LANGUAGES if code != "en"])
def test_every_message_is_translated(part: str, language: str) -> None:
    assert len(extracted(part)) > 5
    assert untranslated(part, language) == []


def test_catalogues_merge_the_kit_and_the_part() -> None:
    merged = translations("es", ROOT / "gateway" / "console" / "locale")
    assert merged.gettext("Service catalogue") == "Catálogo de servicios"
    assert merged.gettext("Language") == "Idioma"
    assert translations("en").gettext("Language") == "Language"
