"""``python -m bench``'s exchange configuration: where the trust floor runs."""

from __future__ import annotations

from bench.__main__ import FULL_RUN_TRUST_FLOOR_CASES, _config, _parse


def test_a_full_run_measures_the_trust_floor_at_512_bytes_and_concurrency_1_only() -> None:
    config = _config(_parse([]), full=True)
    assert config.trust_floor
    assert tuple(config.trust_floor_cases) == FULL_RUN_TRUST_FLOOR_CASES == ((512, 1),)


def test_asked_for_the_trust_floor_runs_in_every_case() -> None:
    config = _config(_parse(["--exchange", "--trust-floor"]))
    assert config.trust_floor
    assert tuple(config.trust_floor_cases) == ()
    assert _config(_parse(["--trust-floor"]), full=True).trust_floor_cases == ()


def test_no_trust_floor_unless_asked_or_full_or_with_the_relay_floor() -> None:
    assert not _config(_parse(["--exchange"])).trust_floor
    assert not _config(_parse(["--no-relay"]), full=True).trust_floor
