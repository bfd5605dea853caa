"""Every fault code is provoked by some test (issue 13, item 4).

A test that provokes a refusal names the code it expects (``"server.provider.stale_message"`` or
``Fault.SERVER_PROVIDER_STALE_MESSAGE``); this test enumerates :class:`ruta.faults.Fault` and
fails for a code no test names outside the fault tables themselves. A new code comes with the
test that provokes it, and a code that cannot happen is removed from ``ruta.faults`` instead.
"""

from __future__ import annotations

from pathlib import Path

from ruta.faults import Fault

_TESTS = Path(__file__).resolve().parents[2]
#: Files that list every code by construction (tables, not provocations).
_TABLES = {Path(__file__).resolve(), _TESTS / "unit" / "ruta" / "test_faults.py"}


def _test_sources() -> str:
    return "\n".join(
        path.read_text(encoding="utf-8")
        for path in sorted(_TESTS.rglob("*.py"))
        if path.resolve() not in _TABLES
    )


def test_every_fault_code_is_provoked_by_a_test() -> None:
    sources = _test_sources()
    unprovoked = [
        fault.value
        for fault in Fault
        if f'"{fault.value}"' not in sources and f"Fault.{fault.name}" not in sources
    ]
    assert not unprovoked, f"no test provokes {unprovoked}: add one, or remove the code"
