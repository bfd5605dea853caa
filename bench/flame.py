"""Summarise py-spy's collapsed stacks (``python -m bench --profile DIR`` writes them).

    python -m bench.flame DIR/provider_ss-512-c64.txt [--top 25]

Prints where the samples fall: by thread, by the innermost frame (self time) and by frame
anywhere on the stack (inclusive time), with line numbers dropped so one function is one row.
For a picture, feed the same file to flamegraph.pl or speedscope.
"""

from __future__ import annotations

import argparse
import collections
import re
from pathlib import Path
from typing import Final

__all__ = ["summarise"]

_LINE: Final = re.compile(r":\d+\)")


def summarise(path: Path, top: int = 25) -> str:
    """The three tables for one collapsed-stacks file."""
    threads: collections.Counter[str] = collections.Counter()
    leaf: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = [_LINE.sub(")", f) for f in stack.split(";")]
        threads[frames[0]] += count
        leaf[frames[-1]] += count
        for frame in set(frames[1:]):
            inclusive[frame] += count
    out = [f"{path.name}: {total} samples"]
    for title, counter in (("thread", threads), ("self", leaf), ("inclusive", inclusive)):
        out.append(f"-- {title}")
        out.extend(
            f"{n:7d} {100 * n / max(total, 1):5.1f}%  {name}"
            for name, n in counter.most_common(top)
        )
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("files", type=Path, nargs="+")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    for path in args.files:
        print(summarise(path, args.top))


if __name__ == "__main__":
    main()
