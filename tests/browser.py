"""Browser tests: Playwright driving Debian's chromium (``make install`` installs the ``chromium``
package; Playwright downloads no browser), headless, and the axe-core accessibility check.

Tests take the ``browser`` fixture (tests/conftest.py) and carry the ``browser`` marker. Where
chromium or axe-core cannot be found they skip with the reason, except under CI (``CI`` set),
where that is an error: CI must run them.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Final

import pytest
from playwright.async_api import Browser, Page, async_playwright

__all__ = ["AXE_JS", "CHROMIUM", "axe_violations", "chromium", "serious_violations"]

#: Debian's chromium (the ``chromium`` package); ``RUTA_TEST_CHROMIUM`` names another binary.
CHROMIUM: Final = Path(os.environ.get("RUTA_TEST_CHROMIUM", "/usr/bin/chromium"))
#: axe-core as ``make install`` fetches it from npm (``BROWSER_NODE_PACKAGES`` in the Makefile).
AXE_JS: Final = (
    Path(__file__).resolve().parents[1]
    / ".venv"
    / "browser-js"
    / "node_modules"
    / "axe-core"
    / "axe.min.js"
)
#: Bound on one page action or navigation, in milliseconds.
ACTION_TIMEOUT_MS: Final = 15_000
#: The axe impacts a page must not have.
BLOCKING_IMPACTS: Final = frozenset({"serious", "critical"})


def _missing() -> str | None:
    if not CHROMIUM.exists() and shutil.which("chromium") is None:
        return f"no chromium at {CHROMIUM} (make install installs Debian's chromium package)"
    if not AXE_JS.exists():
        return f"no axe-core at {AXE_JS} (make install fetches it from npm)"
    return None


def require_browser() -> None:
    """Skip (or, under CI, fail) when chromium or axe-core is missing."""
    problem = _missing()
    if problem is not None:
        if os.environ.get("CI"):
            pytest.fail(f"{problem}; CI must run the browser tests")
        pytest.skip(problem)


@asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    """Headless chromium under Playwright, closed on exit."""
    require_browser()
    executable = CHROMIUM if CHROMIUM.exists() else Path(str(shutil.which("chromium")))
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=executable, headless=True, timeout=ACTION_TIMEOUT_MS
        )
        try:
            yield browser
        finally:
            await browser.close()


async def axe_violations(page: Page) -> list[dict[str, Any]]:
    """axe-core's violations on the page as loaded (WCAG 2 A and AA rules and best practices).

    axe is evaluated through the DevTools protocol, which the page's Content-Security-Policy
    does not govern: the page under test keeps its strict policy."""
    await page.evaluate(AXE_JS.read_text(encoding="utf-8"))
    result: dict[str, Any] = await page.evaluate(
        "async () => await axe.run(document, {resultTypes: ['violations']})"
    )
    violations: list[dict[str, Any]] = result["violations"]
    return violations


def serious_violations(violations: list[dict[str, Any]]) -> list[str]:
    """``id: help (selectors)`` of each serious or critical violation, for an assertion message."""
    return [
        f"{v['id']}: {v['help']} ({', '.join(str(n['target']) for n in v['nodes'])})"
        for v in violations
        if v.get("impact") in BLOCKING_IMPACTS
    ]
