"""``make demo`` on this checkout: ``python -m sandbox.demo`` runs the once-only scenario through a
fresh sandbox and exits 0."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_demo_runs_the_once_only_scenario_and_exits_0() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "sandbox.demo"],
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
        env={**os.environ, "PYTHONSAFEPATH": "1"},
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    out = result.stdout
    assert "=> ELIGIBLE" in out
    assert "=> NOT ELIGIBLE" in out
    assert "server.consumer.access_denied" in out
    assert out.count("RESULT: VERIFIED") == 2
    assert out.count("RESULT: RECONCILED") == 4
    assert "This month's open data" in out
    open_data = out[out.index("This month's open data") :]
    assert "population.v1.PopulationRegister" in open_data
    assert "not reached" not in open_data
    # The last step: the first applicant's record of access, her four facts, each answered.
    record = out.split("What citizen 4410000017 sees", 1)[1]
    assert record.count("Social Benefits Agency: ") == 4
    assert record.count("for benefit-eligibility") == 4
    assert "Demo finished" in out
