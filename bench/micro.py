"""Placeholder; replaced below."""

from __future__ import annotations

from typing import Any


async def run_micro(*, quick: bool = False) -> dict[str, Any]:
    return {}
