"""The benchmark harness runs end to end with tiny call counts: real echo backend, real
``ruta ss serve`` processes, the two bare relays of the relay floor, a separate load generator,
the gateway benchmark (two ``ruta gateway serve`` processes, the REST echo backend), results
written. Asserts shape and completeness (every call answered, every bus call in both
message logs, no relay left running), never a time."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from bench.__main__ import main

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_quick_run_writes_complete_results(tmp_path: Path) -> None:
    out = tmp_path / "results"
    work = tmp_path / "work"
    code = main(
        [
            "--quick",
            "--payload",
            "512",
            "--concurrency",
            "1",
            "4",
            "--out",
            str(out),
            "--workdir",
            str(work),
        ]
    )
    assert code == 0
    relay_pids = [
        json.loads((work / f"{name}.ready.json").read_text())["pid"]
        for name in ("relay1", "relay2")
    ]
    assert not [pid for pid in relay_pids if _running(pid)]
    result = json.loads((out / "latest.json").read_text())
    assert {"cpu_model", "cores", "python", "grpcio"} <= set(result["machine"])
    cases = result["cases"]
    assert [(c["payload"], c["concurrency"]) for c in cases] == [(512, 1), (512, 4)]
    for case in cases:
        assert case["direct_errors"] == 0
        assert case["bus_errors"] == 0
        assert case["direct_rps"] > 0
        assert case["bus_rps"] > 0
        for key in ("ratio", "direct_p50_ms", "bus_p50_ms", "added_p50_ms", "bus_p99_ms"):
            assert key in case
        assert {"consumer_ss", "provider_ss", "backend", "loadgen"} <= set(
            case["cpu_ms_per_exchange"]["bus"]
        )
        # Each security server's CPU per exchange under a stable name (issue 17).
        assert case["cpu_ms_per_exchange"]["consumer_ss"] > 0
        assert case["cpu_ms_per_exchange"]["provider_ss"] > 0
        assert set(case["messages_per_frame"]) == {"consumer", "provider"}
        assert case["peak_rss_mib"]["consumer_ss"] > 0
        assert set(case["idle_share"]) == {"direct", "relay", "bus"}
        assert all(0.0 <= share <= 1.0 for share in case["idle_share"].values())
        assert case["relay_errors"] == 0
        assert case["relay_rps"] > 0
        for key in (
            "relay_ratio",
            "relay_p50_ms",
            "relay_added_p50_ms",
            "relay_p99_ms",
            "trust_ratio",
            "trust_added_p50_ms",
        ):
            assert key in case
        assert {"relay1", "relay2", "backend", "loadgen"} <= set(
            case["cpu_ms_per_exchange"]["relay"]
        )
        assert case["peak_rss_mib"]["relay1"] > 0
    assert result["scale"] == []  # not run with --quick
    logged = result["logged"]
    assert logged["DEV/GOV/SOC/ss1"] == logged["expected_per_log"]
    assert logged["DEV/GOV/POP/ss1"] == logged["expected_per_log"]
    assert "log append, concurrency 64" in result["micro"]
    assert "GlobalConf.allows (permitted)" in result["micro"]
    gateway = result["gateway"]["cases"]
    assert [c["concurrency"] for c in gateway] == [1, 4]
    for case in gateway:
        for name in ("rest_direct", "rest_bus", "grpc_bus", "json_bus"):
            assert case[f"{name}_errors"] == 0, case
            assert case[f"{name}_rps"] > 0
        assert {"consumer_gw", "provider_gw", "consumer_ss", "provider_ss"} <= set(
            case["rest_bus_cpu_ms"]
        )
    table = (out / "latest.md").read_text()
    assert "| 512 B | 4 |" in table
    assert "relay / direct" in table
    assert "JSON bus / gRPC bus" in table


@pytest.mark.parametrize("link", ["unary", "stream"])
def test_quick_trust_floor_run_measures_the_trust_relays(tmp_path: Path, link: str) -> None:
    out = tmp_path / "results"
    work = tmp_path / "work"
    code = main(
        [
            "--exchange",
            "--quick",
            "--trust-floor",
            "--trust-floor-link",
            link,
            "--payload",
            "512",
            "--concurrency",
            "1",
            "--out",
            str(out),
            "--workdir",
            str(work),
        ]
    )
    assert code == 0
    trust_pids = [
        json.loads((work / f"{name}.ready.json").read_text())["pid"]
        for name in ("trust1", "trust2")
    ]
    assert not [pid for pid in trust_pids if _running(pid)]
    result = json.loads((out / "latest.json").read_text())
    (case,) = result["cases"]
    assert case["bus_errors"] == 0
    assert case["relay_errors"] == 0
    assert case["trust_floor_errors"] == 0
    assert case["trust_floor_warmup_errors"] == 0
    assert case["trust_floor_rps"] > 0
    for key in (
        "trust_floor_p50_ms",
        "trust_floor_p99_ms",
        "trust_floor_added_p50_ms",
        "trust_floor_ratio",
        "bus_above_trust_floor_p50_ms",
        "bus_trust_floor_ratio",
    ):
        assert key in case
    assert {"trust1", "trust2", "backend", "loadgen"} <= set(
        case["cpu_ms_per_exchange"]["trust_floor"]
    )
    assert set(case["idle_share"]) == {"direct", "relay", "trust_floor", "bus"}
    assert case["peak_rss_mib"]["trust1"] > 0
    # The stage split counts the measured calls only (the warm-up's were drained).
    stages = case["trust_floor_stages_us"]
    # The stream link's consumer waits for the provider's durability notice before it answers.
    expected = {"sign", "upstream", "verify", "commit"} | (
        {"notice_wait"} if link == "stream" else set()
    )
    assert set(stages["trust1"]) == expected
    assert {"verify", "commit_request", "backend", "sign"} <= set(stages["trust2"])
    calls = case["calls"]
    for name in ("trust1", "trust2"):
        assert stages[name]["sign"]["count"] == calls
        assert stages[name]["verify"]["count"] == calls
    # Every answered call's request and response in both trust logs, one claim per call.
    logged = result["trust_floor_logged"]
    assert logged["trust1"] == logged["expected_per_log"]
    assert logged["trust2"] == logged["expected_per_log"]
    assert logged["trust2_claims"] == logged["expected_claims"] > 0
    assert "The trust floor" in (out / "latest.md").read_text()
    assert result["setup"]["trust_floor"].endswith(f"link: {link}")
