"""Code blocks of the project's Markdown documents, for tests that run the docs as written.

A fenced block's first word after the fence is its language. A line ``<!-- file: NAME -->`` just
before a block says the block is the content of the file ``NAME`` (a reader saves it under that
name); other blocks are commands (``sh``) or output and configuration shown for reading.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Final

__all__ = ["CodeBlock", "code_blocks", "run_commands", "section"]

_FENCE: Final = re.compile(r"^(```+|~~~+)\s*([\w+-]*)")
_FILE: Final = re.compile(r"^<!--\s*file:\s*(\S+)\s*-->\s*$")


@dataclass(frozen=True, slots=True)
class CodeBlock:
    language: str
    text: str
    #: The file the block is the content of (``<!-- file: NAME -->``), or ``None``.
    file: str | None
    #: 1-based line of the opening fence, for messages.
    line: int


def section(text: str, heading: str, until: str | None = None) -> str:
    """The part of ``text`` from the line ``heading`` up to the next heading of the same or a
    higher level (or up to the first line starting with ``until``)."""
    lines = text.splitlines(keepends=True)
    start = next(i for i, line in enumerate(lines) if line.rstrip() == heading)
    level = len(heading) - len(heading.lstrip("#"))
    end = len(lines)
    for i in range(start + 1, len(lines)):
        line = lines[i]
        if until is not None and line.startswith(until):
            end = i
            break
        stripped = line.lstrip("#")
        hashes = len(line) - len(stripped)
        if until is None and 0 < hashes <= level and stripped.startswith(" "):
            end = i
            break
    return "".join(lines[start:end])


def code_blocks(text: str) -> list[CodeBlock]:
    """Every fenced code block of ``text``, in order."""
    blocks: list[CodeBlock] = []
    lines = text.splitlines()
    i = 0
    pending_file: str | None = None
    while i < len(lines):
        file_match = _FILE.match(lines[i])
        if file_match:
            pending_file = file_match.group(1)
            i += 1
            continue
        fence = _FENCE.match(lines[i])
        if not fence:
            if lines[i].strip():
                pending_file = None
            i += 1
            continue
        marker, language = fence.group(1), fence.group(2)
        body: list[str] = []
        opening = i + 1
        i += 1
        while i < len(lines) and not lines[i].startswith(marker):
            body.append(lines[i])
            i += 1
        i += 1
        blocks.append(CodeBlock(language, "\n".join(body) + "\n", pending_file, opening))
        pending_file = None
    return blocks


def run_commands(
    block: CodeBlock, *, cwd: Path, env: dict[str, str] | None = None, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    """Run a ``sh`` block with ``bash -euo pipefail`` (line continuations and all) in ``cwd``, the
    virtualenv's ``bin`` first on ``PATH`` (``python`` and ``ruta`` are the project's); raise
    naming the block's line and its output when it fails."""
    bin_dir = str(Path(sys.executable).parent)
    environment = {**os.environ, **(env or {})}
    environment["PATH"] = f"{bin_dir}{os.pathsep}{environment.get('PATH', '')}"
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", block.text],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if result.returncode != 0:
        raise AssertionError(
            f"the block at line {block.line} failed (status {result.returncode}):\n"
            f"{block.text}\n--- stdout:\n{result.stdout[-3000:]}\n--- stderr:\n"
            f"{result.stderr[-3000:]}"
        )
    return result
