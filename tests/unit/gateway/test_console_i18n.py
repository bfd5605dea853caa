"""The consoles' languages: negotiation from Accept-Language and the page's choice, bounded
input, and catalogues that translate every message the templates and code use."""

from __future__ import annotations

from pathlib import Path

import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po

from gateway.console.i18n import (
    LANGUAGES,
    LOCALE_DIR,
    MAX_ACCEPT_LANGUAGE_CHARS,
    choose_language,
    language_name,
    translations,
)

CONSOLE = LOCALE_DIR.parent
CONFIG = CONSOLE / "babel.cfg"


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


def _extracted() -> set[str | tuple[str, str]]:
    messages: set[str | tuple[str, str]] = set()
    method_map = [
        ("gateway/console/**.py", "python"),
        ("gateway/console/templates/**.html", "jinja2"),
    ]
    root = Path(__file__).resolve().parents[3]
    for _file, _line, message, _comments, _context in extract_from_dir(
        str(root), method_map=method_map, keywords={"_": None, "gettext": None, "ngettext": (1, 2)}
    ):
        messages.add(message if isinstance(message, str) else (message[0], message[1]))
    return messages


def test_babel_cfg_names_what_the_test_extracts() -> None:
    text = CONFIG.read_text(encoding="utf-8")
    assert "[python: gateway/console/**.py]" in text
    assert "[jinja2: gateway/console/templates/**.html]" in text


@pytest.mark.parametrize("language", [code for code in LANGUAGES if code != "en"])
def test_every_message_is_translated(language: str) -> None:
    extracted = _extracted()
    assert len(extracted) > 10
    with (LOCALE_DIR / language / "LC_MESSAGES" / "messages.po").open("rb") as po:
        catalog = read_po(po, locale=language)
    translated = {
        (m.id if isinstance(m.id, str) else (m.id[0], m.id[1])): m.string
        for m in catalog
        if m.id and not m.fuzzy
    }
    missing = extracted - translated.keys()
    assert not missing, f"{language}: no translation for {sorted(map(str, missing))}"
    for message in extracted:
        strings = translated[message]
        assert all(strings) if isinstance(strings, tuple) else strings, message
    # The compiled catalogue answers in the language.
    assert translations(language).gettext("Service catalogue") != "Service catalogue"
