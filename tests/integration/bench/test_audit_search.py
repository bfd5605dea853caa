"""The audit-search benchmark runs end to end on a small log: filled through the log's append
API, every kind of search timed with and without planner statistics, merged into an existing
``latest.json`` without touching its other fields. Asserts shape, never a time."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.__main__ import main

pytestmark = pytest.mark.integration


def test_audit_search_is_merged_into_latest_json(tmp_path: Path) -> None:
    out = tmp_path / "results"
    out.mkdir()
    (out / "latest.json").write_text(json.dumps({"cases": ["kept"]}))
    code = main(
        [
            "--audit-search",
            "--quick",
            "--records",
            "2000",
            "--out",
            str(out),
            "--workdir",
            str(tmp_path / "work"),
        ]
    )
    assert code == 0
    result = json.loads((out / "latest.json").read_text())
    assert result["cases"] == ["kept"]
    search = result["audit_search"]
    assert search["records"] == 2000
    assert search["measured_at"]
    for searches in (search["searches"], search["without_statistics"]["searches"]):
        assert {"subject", "message id", "client", "service"} <= set(searches)
        for entry in searches.values():
            assert entry["query"]["median_ms"] > 0
            assert entry["page"]["median_ms"] > 0
    assert search["searches"]["subject"]["found"] == "10-10 per page"
    assert search["searches"]["message id"]["found"] == "1-1 per page"
