"""Port claims: below the ephemeral range, never shared between claimants, stale claims reused."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from sandbox.ports import LOWEST_PORT, PortClaims, _ephemeral_low


def test_claims_of_two_sandboxes_never_overlap(tmp_path: Path) -> None:
    a, b = PortClaims(tmp_path), PortClaims(tmp_path)
    first, second = a.take(40), b.take(40)
    assert len(set(first)) == 40
    assert not set(first) & set(second)
    assert all(LOWEST_PORT <= p < max(LOWEST_PORT + 1001, _ephemeral_low()) for p in first)
    assert {int(p.name) for p in tmp_path.iterdir()} == set(first) | set(second)
    a.release()
    assert {int(p.name) for p in tmp_path.iterdir()} == set(second)
    b.release()
    assert not list(tmp_path.iterdir())


def test_a_port_held_by_a_live_process_is_skipped(tmp_path: Path) -> None:
    claims = PortClaims(tmp_path)
    taken = claims.take(1)[0]
    claims.ports.clear()  # forget it without releasing: the file still names a live pid (ours)
    assert taken not in PortClaims(tmp_path).take(30)


def test_a_stale_claim_is_taken_over(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    dead = int(done.stdout)
    claims = PortClaims(tmp_path)
    port = claims.take(1)[0]
    claims.release()
    (tmp_path / str(port)).write_text(f"{dead}\n")
    assert claims._claim(port)
    assert (tmp_path / str(port)).read_text().strip() == str(os.getpid())


def test_a_bound_port_is_not_handed_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        monkeypatch.setattr("sandbox.ports.random.randint", lambda _a, _b: port)
        claims = PortClaims(tmp_path)
        with pytest.raises(Exception, match="no free loopback port"):
            claims.take(1)
        assert not (tmp_path / str(port)).exists()
