"""The browser harness itself (tests/browser.py): Debian's chromium starts headless under
Playwright, and the axe-core check finds a serious violation where there is one and none on a
plain accessible page (so a console test's "no serious violation" is not vacuous)."""

from __future__ import annotations

import pytest
from playwright.async_api import Browser

from tests.browser import axe_violations, serious_violations

pytestmark = pytest.mark.browser

_ACCESSIBLE = """<!doctype html><html lang="en"><head><title>Fine</title></head>
<body><main><h1>Fine</h1><p>Nothing to see.</p></main></body></html>"""
_INACCESSIBLE = """<!doctype html><html><head><title>Broken</title></head>
<body><main><h1>Broken</h1><img src="data:image/gif;base64,R0lGODlhAQABAAAAACw=">
<input type="text"></main></body></html>"""


async def test_axe_finds_serious_violations_only_where_there_are_some(browser: Browser) -> None:
    page = await browser.new_page()
    await page.set_content(_ACCESSIBLE)
    assert serious_violations(await axe_violations(page)) == []
    await page.set_content(_INACCESSIBLE)
    found = serious_violations(await axe_violations(page))
    assert any(v.startswith("image-alt:") for v in found), found
    assert any(v.startswith("label:") for v in found), found
    assert any(v.startswith("html-has-lang:") for v in found), found
