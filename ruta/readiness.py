"""Ready files: how a started process tells its supervisor (the sandbox, a test) where it listens.

The process writes one small JSON object, ``{"address": "HOST:PORT", "pid": ..., ...}``, once
every listener is bound, so it can be started on port 0. The registry, adapters and the example
services write theirs through :func:`write_ready_file`.
"""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["write_ready_file"]


def write_ready_file(path: Path, content: dict[str, object]) -> None:
    """Write ``content`` as JSON to ``path`` atomically (a reader never sees half a file).

    Raises :class:`OSError` when the folder is not writable; ``path`` is then left as it was.
    """
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(content), encoding="utf-8")
    tmp.replace(path)
