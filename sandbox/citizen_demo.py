"""The demo's last word: a citizen's record of access, as the citizen's page shows it.

Signs in at the sandbox's gateway (``/citizen``) through the development OpenID Connect issuer
exactly as a browser does (sign-in link, the issuer's page, the callback, the page), then reads
the table of the record page. Nothing here reaches past the HTTP pages.
"""

from __future__ import annotations

from collections.abc import Callable
from html.parser import HTMLParser
from typing import Any, Final
from urllib.parse import parse_qsl, urlsplit

import aiohttp

__all__ = ["citizen_record"]

#: Deadline of the whole sign-in and page read.
CITIZEN_TIMEOUT_S: Final = 60.0


class _Table(HTMLParser):
    """The body rows of the page's table, each as its cells' text; and the notices."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self.notices: list[str] = []
        self._cell: list[str] | None = None
        self._in_body = False
        self._notice: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "tbody":
            self._in_body = True
        elif tag == "tr" and self._in_body:
            self.rows.append([])
        elif tag in ("td", "th") and self._in_body:
            self._cell = []
        elif tag == "p" and ("role", "status") in attrs:
            self._notice = []
        elif tag == "span" and ("class", "basis") in attrs and self._cell is not None:
            self._cell.append(" · ")

    def handle_endtag(self, tag: str) -> None:
        if tag == "tbody":
            self._in_body = False
        elif tag in ("td", "th") and self._cell is not None:
            self.rows[-1].append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "p" and self._notice is not None:
            self.notices.append(" ".join("".join(self._notice).split()))
            self._notice = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)
        if self._notice is not None:
            self._notice.append(data)


async def citizen_record(
    sandbox: dict[str, Any], citizen: str, say: Callable[[str, int], None]
) -> list[list[str]] | None:
    """Sign in as ``citizen`` at the sandbox's citizen page and return the rows of their record
    of access (when, agency, what, why, result); ``None`` (having said why) when it failed."""
    page = sandbox["citizen"]["url"]
    jar = aiohttp.CookieJar(unsafe=True, treat_as_secure_origin=[page])
    timeout = aiohttp.ClientTimeout(total=CITIZEN_TIMEOUT_S)
    async with aiohttp.ClientSession(cookie_jar=jar, timeout=timeout) as session:
        # The sign-in link sends the browser to the issuer, whose page posts the chosen citizen.
        async with session.get(page + "/sign-in?lang=en") as authorize:
            if authorize.status != 200:
                say(f"the issuer's sign-in page answered HTTP {authorize.status}", 6)
                return None
            form = dict(parse_qsl(urlsplit(str(authorize.url)).query))
            target = str(authorize.url).split("?", 1)[0]
        form["citizen"] = citizen
        async with session.post(target, data=form) as signed_in:
            if signed_in.status != 200:
                say(f"the sign-in ended with HTTP {signed_in.status}", 6)
                return None
        async with session.get(page + "?lang=en") as record:
            text = await record.text()
    table = _Table()
    table.feed(text)
    if "Sign out" not in text:
        say("the citizen's page did not show a signed-in record", 6)
        return None
    for notice in table.notices:
        say(notice, 6)
    return table.rows
