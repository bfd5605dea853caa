"""What the fuzz tests share: how many examples, and mutations of valid inputs.

Each fuzz test feeds a parser of untrusted bytes both arbitrary input and *mutations of a valid
input* (bytes flipped, inserted, deleted, the input cut short or repeated), which reaches the
parser's deeper states sooner than random bytes alone. The property is always the same: the
parser returns, or raises its typed Ruta error (:class:`ruta.faults.RutaError` with a fault
code); never anything else.

The CI run is short (``max_examples`` = :data:`EXAMPLES`, 60 by default). A longer run::

    RUTA_FUZZ_EXAMPLES=20000 .venv/bin/python -m pytest -m fuzz tests/fuzz --timeout=0

Hypothesis keeps failing examples in ``.hypothesis/``; turn each into an ``@example`` in the
test (a regression test) along with the fix.
"""

from __future__ import annotations

import os
from typing import Final

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

#: Examples per fuzz test; ``RUTA_FUZZ_EXAMPLES`` raises it for a long run.
EXAMPLES: Final = int(os.environ.get("RUTA_FUZZ_EXAMPLES", "60"))

fuzz_settings: Final = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


@st.composite
def mutated(draw: st.DrawFn, seed: bytes, *, max_edits: int = 8) -> bytes:
    """``seed`` with up to ``max_edits`` random edits."""
    data = bytearray(seed)
    for _ in range(draw(st.integers(0, max_edits))):
        edit = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "repeat", "set"]))
        at = draw(st.integers(0, max(0, len(data) - 1)))
        if edit == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif edit == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif edit == "delete" and data:
            del data[at : at + draw(st.integers(1, 16))]
        elif edit == "truncate":
            del data[at:]
        elif edit == "repeat" and data:
            data[at:at] = data[at : at + draw(st.integers(1, 64))]
        elif edit == "set" and data:
            data[at] = draw(st.sampled_from([0, 0x7F, 0x80, 0xFF, 0x0A, 0x3A, 0x2F]))
    return bytes(data)


def bytes_or_mutation(seed: bytes, *, max_size: int = 4096) -> st.SearchStrategy[bytes]:
    """Arbitrary bytes, or ``seed`` mutated."""
    return st.one_of(st.binary(max_size=max_size), mutated(seed))


def text_or_mutation(seed: str) -> st.SearchStrategy[str]:
    """Arbitrary text, or ``seed`` mutated (decoded leniently back to text)."""
    return st.one_of(
        st.text(max_size=2048),
        mutated(seed.encode()).map(lambda b: b.decode("utf-8", errors="replace")),
    )
