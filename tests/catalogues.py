"""Checks every console's message catalogues against what its templates and code use: each part
(``ruta/web``, ``gateway/console``, ...) has a ``babel.cfg`` and ``locale/<lang>/.../messages.po``;
every message extracted from the part must be translated, not fuzzy, in every language."""

from __future__ import annotations

from pathlib import Path

from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po

from ruta.web.i18n import LANGUAGES

__all__ = ["ROOT", "extracted", "untranslated"]

ROOT = Path(__file__).resolve().parents[1]
Message = str | tuple[str, ...]


def extracted(part: str) -> set[Message]:
    """Every message in ``part``'s Python code and templates (``part``: ``"gateway/console"``)."""
    config = (ROOT / part / "babel.cfg").read_text(encoding="utf-8")
    assert f"[python: {part}/**.py]" in config
    assert f"[jinja2: {part}/templates/**.html]" in config
    method_map = [(f"{part}/**.py", "python"), (f"{part}/templates/**.html", "jinja2")]
    messages: set[Message] = set()
    for _file, _line, message, _comments, _context in extract_from_dir(
        str(ROOT),
        method_map=method_map,
        keywords={"_": None, "gettext": None, "ngettext": (1, 2), "N_": None},
    ):
        messages.add(message if isinstance(message, str) else tuple(message[:2]))
    return messages


def untranslated(part: str, language: str) -> list[str]:
    """The messages of ``part`` that its ``language`` catalogue does not translate."""
    assert language in LANGUAGES
    with (ROOT / part / "locale" / language / "LC_MESSAGES" / "messages.po").open("rb") as po:
        catalog = read_po(po, locale=language)
    translated: dict[Message, object] = {
        (m.id if isinstance(m.id, str) else tuple(m.id[:2])): m.string
        for m in catalog
        if m.id and not m.fuzzy
    }
    missing = []
    for message in extracted(part):
        strings = translated.get(message)
        complete = all(strings) if isinstance(strings, tuple | list) else bool(strings)
        if not complete:
            missing.append(str(message))
    return sorted(missing)
