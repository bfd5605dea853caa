"""The benchmark harness's small parts: percentiles, /proc readings, the Markdown table, the
py-spy summary."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from bench.__main__ import carry_over
from bench.exchange import cpu_times, idle_share, machine_cpu_ticks, machine_info, peak_rss_mib
from bench.flame import summarise
from bench.loadgen import percentile
from bench.report import markdown


@pytest.mark.parametrize(
    ("values", "fraction", "expected"),
    [
        ([], 0.5, 0.0),
        ([1.0], 0.99, 1.0),
        ([1.0, 2.0, 3.0, 4.0], 0.5, 2.0),
        ([float(i) for i in range(1, 101)], 0.99, 99.0),
        ([float(i) for i in range(1, 101)], 1.0, 100.0),
        ([float(i) for i in range(1, 101)], 0.0, 1.0),
    ],
)
def test_percentile_is_nearest_rank(values: list[float], fraction: float, expected: float) -> None:
    assert percentile(values, fraction) == expected


def test_proc_readings_of_this_process() -> None:
    user, system = cpu_times(os.getpid())
    assert user >= 0
    assert system >= 0
    assert peak_rss_mib(os.getpid()) > 1


def test_machine_idle_share_between_two_readings() -> None:
    idle, total = machine_cpu_ticks()
    assert 0 <= idle <= total
    assert idle_share((idle, total), machine_cpu_ticks()) <= 1.0
    # Idle ticks over all ticks between the readings; no ticks at all reads as none idle.
    assert idle_share((100, 1000), (130, 1100)) == pytest.approx(0.30)
    assert idle_share((100, 1000), (100, 1000)) == 0.0


def _case(**overrides: Any) -> dict[str, Any]:
    case: dict[str, Any] = {
        "payload": 65536,
        "concurrency": 64,
        "calls": 10,
        "direct_rps": 1000.0,
        "bus_rps": 250.0,
        "ratio": 0.25,
        "direct_p50_ms": 1.0,
        "bus_p50_ms": 3.0,
        "added_p50_ms": 2.0,
        "direct_p99_ms": 2.0,
        "bus_p99_ms": 6.0,
        "direct_errors": 0,
        "bus_errors": 1,
        "cpu_ms_per_exchange": {
            "direct": {"backend": 0.2, "loadgen": 0.1},
            "bus": {"backend": 0.2, "consumer_ss": 1.5, "provider_ss": 1.6, "loadgen": 0.1},
        },
        "of_which_kernel_ms": {"direct": {}, "bus": {"consumer_ss": 0.3}},
        "peak_rss_mib": {"consumer_ss": 120.0, "provider_ss": 121.0, "backend": 40.0},
    }
    case.update(overrides)
    return case


def _machine(cpu_model: str = "Test CPU") -> dict[str, Any]:
    return {
        "cpu_model": cpu_model,
        "cores": 2,
        "python": "3.11",
        "grpcio": "1.0",
        "sqlite": "3",
        "load_average_at_start": [0.5, 0.5, 0.5],
        "fsync_p50_ms": 0.1,
    }


def test_markdown_has_a_row_per_case() -> None:
    result = {
        "machine": _machine(),
        "setup": {"recorded_at": "2026-01-01T00:00:00+00:00", "duration_s": 1.0},
        "cases": [_case(), _case(payload=512, concurrency=1)],
        "logged": {"expected_per_log": 4, "A": 4, "B": 4},
        "micro": {"sign": {"per_second": 1000.0, "us_per_op": 1000.0, "note": "n"}},
    }
    text = markdown(result)
    assert "| 64 KiB | 64 | 1000 | 250 | 0.25 |" in text
    assert "| 512 B | 1 |" in text
    assert "1.50 (0.30)" in text
    assert "| sign (n) | 1,000/s |" in text


def test_markdown_names_the_cpu_family_and_model_where_recorded() -> None:
    machine = _machine("AMD EPYC")
    result: dict[str, Any] = {
        "machine": machine,
        "setup": {"recorded_at": "2026-01-01T00:00:00+00:00", "duration_s": 1.0},
        "cases": [_case()],
        "logged": {"expected_per_log": 4, "A": 4, "B": 4},
    }
    assert "on AMD EPYC x 2 cores" in markdown(result)  # results recorded before the numbers
    machine.update(cpu_family="26", cpu_model_number="2")
    assert "on AMD EPYC (family 26, model 2) x 2 cores" in markdown(result)


def test_machine_info_reads_the_cpu_family_and_model(tmp_path: Path) -> None:
    info = machine_info(tmp_path)
    cpuinfo = Path("/proc/cpuinfo").read_text()
    if "cpu family" not in cpuinfo:  # not x86: its /proc/cpuinfo names no family
        assert info["cpu_family"] == ""
        return
    first = cpuinfo.split("\n\n")[0]
    fields = {
        key.strip(): value.strip()
        for key, _, value in (line.partition(":") for line in first.splitlines())
    }
    assert info["cpu_family"] == fields["cpu family"]
    assert info["cpu_model_number"] == fields["model"]
    assert info["cpu_model"] == fields["model name"]


def test_flame_summary_counts_threads_and_frames(tmp_path: Path) -> None:
    stacks = tmp_path / "stacks.txt"
    stacks.write_text(
        "thread (1): Main;run (a.py:1);work (b.py:2) 3\n"
        "thread (1): Main;run (a.py:1);work (b.py:7) 1\n"
        "thread (2): Writer;commit (c.py:9) 4\n"
    )
    text = summarise(stacks)
    assert "8 samples" in text
    assert "      4  50.0%  work (b.py)" in text
    assert "      4  50.0%  thread (2): Writer" in text


def test_stand_alone_fields_survive_a_new_run(tmp_path: Path) -> None:
    previous = tmp_path / "latest.json"
    previous.write_text(json.dumps({"cases": ["old"], "proof_serving_at_scale": {"leaves": 7}}))
    result: dict[str, Any] = {"cases": ["new"]}
    carry_over(result, previous)
    assert result == {"cases": ["new"], "proof_serving_at_scale": {"leaves": 7}}
    fresh: dict[str, Any] = {"cases": []}
    carry_over(fresh, tmp_path / "absent.json")
    assert fresh == {"cases": []}
