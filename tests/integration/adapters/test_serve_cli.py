"""``ruta adapter serve`` and ``ruta adapter check`` as real subprocesses."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import grpc.aio
import pytest
from google.protobuf import json_format
from grpc_health.v1 import health_pb2, health_pb2_grpc  # type: ignore[import-untyped]

from adapters.descriptors import load_service
from adapters.examples.population.make_db import create_population_db
from tests.conftest import free_port
from tests.integration.adapters.support import EXAMPLES
from tests.processes import ready_file

pytestmark = pytest.mark.integration

RUTA = Path(sys.executable).parent / "ruta"


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(RUTA), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
        check=False,
    )


async def test_serve_answers_grpc_and_health_then_stops_on_sigterm(tmp_path: Path) -> None:
    database = tmp_path / "population.db"
    create_population_db(database)
    process = await asyncio.create_subprocess_exec(
        str(RUTA),
        "adapter",
        "serve",
        str(EXAMPLES / "population" / "adapter.toml"),
        "--listen",
        "127.0.0.1:0",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "RUTA_POPULATION_DB": str(database)},
    )
    try:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), 120)).decode()
        match = re.fullmatch(
            r"serving population\.v1\.PopulationRegister on 127\.0\.0\.1:(\d+)\n", line
        )
        assert match, line
        target = f"127.0.0.1:{match.group(1)}"
        # A client that knows the service only from its .proto, built at run time.
        service = load_service(
            "population.v1.PopulationRegister", proto=EXAMPLES / "population" / "population.proto"
        )
        method = service.methods["GetPerson"]
        async with grpc.aio.insecure_channel(target) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            for name in ("", "population.v1.PopulationRegister"):
                status = await health.Check(health_pb2.HealthCheckRequest(service=name), timeout=10)
                assert status.status == health_pb2.HealthCheckResponse.SERVING
            get_person: grpc.aio.UnaryUnaryMultiCallable[Any, Any] = channel.unary_unary(
                method.path,
                request_serializer=lambda m: m.SerializeToString(),
                response_deserializer=method.output_class.FromString,
            )
            person = await get_person(
                method.input_class(national_id="4410000025"),
                metadata=(("ruta-message-id", "0f8c7a57-3c55-4c8a-9f43-2b8e53c1a0aa"),),
                timeout=10,
            )
            assert json_format.MessageToDict(person, preserving_proto_field_name=True) == {
                "national_id": "4410000025",
                "given_name": "Mateo",
                "family_name": "Fernández Rojas",
                "birth_date": "1990-07-04",
                "address": "Av. Central 455, dpto. 3, 15002 Villa Ruta",
            }
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await get_person(method.input_class(national_id="4410009999"), timeout=10)
            assert refused.value.code() is grpc.StatusCode.NOT_FOUND
            assert ("ruta-fault", "client.not_found") in tuple(
                refused.value.trailing_metadata() or ()
            )
            fault_id = dict(refused.value.trailing_metadata() or ())["ruta-fault-id"]
        process.send_signal(signal.SIGTERM)
        _out, err = await asyncio.wait_for(process.communicate(), 60)
        assert process.returncode == 0, err.decode()
        assert b"Traceback" not in err
        # At the default level, one line per call: method, status, fault, fault id, duration.
        log = err.decode()
        assert (
            "INFO adapters.server call /population.v1.PopulationRegister/GetPerson status=OK "
            "fault=none fault_id=- message_id=0f8c7a57-3c55-4c8a-9f43-2b8e53c1a0aa ms="
        ) in log
        assert (
            "call /population.v1.PopulationRegister/GetPerson status=NOT_FOUND "
            f"fault=client.not_found fault_id={fault_id} message_id=- ms="
        ) in log
        assert "Mateo" not in log
    finally:
        if process.returncode is None:
            process.kill()
            await process.communicate()


async def _serve_two_calls(tmp_path: Path, *options: str) -> tuple[str, str]:
    """Run ``ruta OPTIONS adapter serve`` on the population example, answer one call and refuse
    one; return the standard error after SIGTERM and the refusal's fault id."""
    database = tmp_path / "population.db"
    create_population_db(database)
    ready = tmp_path / "ready.json"
    process = await asyncio.create_subprocess_exec(
        str(RUTA),
        *options,
        "adapter",
        "serve",
        str(EXAMPLES / "population" / "adapter.toml"),
        "--listen",
        "127.0.0.1:0",
        "--ready-file",
        str(ready),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "RUTA_POPULATION_DB": str(database)},
    )
    try:
        address = (await ready_file(ready, process))["address"]
        method = load_service(
            "population.v1.PopulationRegister", proto=EXAMPLES / "population" / "population.proto"
        ).methods["GetPerson"]
        async with grpc.aio.insecure_channel(address) as channel:
            get_person: grpc.aio.UnaryUnaryMultiCallable[Any, Any] = channel.unary_unary(
                method.path, request_serializer=lambda m: m.SerializeToString()
            )
            await get_person(method.input_class(national_id="4410000025"), timeout=10)
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await get_person(method.input_class(national_id=" 4410000025"), timeout=10)
        fault_id = dict(refused.value.trailing_metadata() or ())["ruta-fault-id"]
        err = await _stop(process)
        assert process.returncode == 0, err.decode()
        return err.decode(), str(fault_id)
    finally:
        if process.returncode is None:
            process.kill()
            await process.communicate()


async def test_serve_logs_json_lines_for_log_shippers(tmp_path: Path) -> None:
    err, fault_id = await _serve_two_calls(tmp_path, "--log-format", "json")
    entries = [json.loads(line) for line in err.splitlines()]
    calls = [e for e in entries if e["message"].startswith("call ")]
    assert [(e["status"], e["fault"], e["fault_id"]) for e in calls] == [
        ("OK", None, None),
        ("INVALID_ARGUMENT", "client.invalid_request", fault_id),
    ]
    for entry in calls:
        assert entry["level"] == "info"
        assert entry["logger"] == "adapters.server"
        assert entry["method"] == "/population.v1.PopulationRegister/GetPerson"
        assert isinstance(entry["duration_ms"], int)
        assert entry["time"].endswith("+00:00")
    assert "4410000025" not in err


@pytest.mark.parametrize(
    ("options", "env"),
    [(("--log-level", "warning"), {}), ((), {"RUTA_LOG_LEVEL": "warning"})],
)
async def test_a_chosen_log_level_is_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, options: tuple[str, ...], env: dict[str, str]
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    err, _fault_id = await _serve_two_calls(tmp_path, *options)
    assert "call /population" not in err
    assert "INFO" not in err


def test_serve_refuses_a_bad_file_with_its_line(tmp_path: Path) -> None:
    broken = tmp_path / "adapter.toml"
    broken.write_text(
        '[adapter]\nservice = "x.v1.S"\nproto = "x.proto"\n\n[backends.db]\nkind = "sql"\n'
        'url = "sqlite+aiosqlite:///x.db"\ntimeout_seconds = 0\n\n[methods.Get]\nbackend = "db"\n'
        'query = "SELECT 1"\n',
        encoding="utf-8",
    )
    done = _run("adapter", "serve", str(broken), "--listen", f"127.0.0.1:{free_port()}")
    assert done.returncode == 2
    assert "client.invalid_config" in done.stderr
    assert "line 8: backends.db.sql.timeout_seconds" in done.stderr
    assert "Traceback" not in done.stderr


def test_check_reports_ok_problems_and_unreachable_systems(tmp_path: Path) -> None:
    ok = _run("adapter", "check", str(EXAMPLES / "land" / "adapter.toml"))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "methods.GetHoldings (csv backend parcels): reachable" in ok.stdout
    assert ok.stdout.strip().endswith("ok")

    down = _run(
        "adapter",
        "check",
        str(EXAMPLES / "tax" / "adapter.toml"),
        env={"RUTA_TAX_URL": f"http://127.0.0.1:{free_port()}", "TAX_API_TOKEN": "secret-token"},
    )
    assert down.returncode == 1
    assert (
        "problem: methods.GetIncome (rest backend tax_api): REST backend tax_api cannot be reached"
        in down.stdout
    )

    offline = _run("adapter", "check", "--offline", str(EXAMPLES / "tax" / "adapter.toml"))
    assert offline.returncode == 0

    # A mapping that names a column the CSV file does not have is found before serving.
    folder = tmp_path / "land"
    folder.mkdir()
    for name in ("land.proto", "parcels.csv"):
        (folder / name).write_bytes((EXAMPLES / "land" / name).read_bytes())
    text = (EXAMPLES / "land" / "adapter.toml").read_text(encoding="utf-8")
    (folder / "adapter.toml").write_text(
        text.replace("each = { registered_on", 'each = { district = "county", registered_on'),
        encoding="utf-8",
    )
    wrong = _run("adapter", "check", str(folder / "adapter.toml"))
    assert wrong.returncode == 1
    assert "the legacy system has no field county" in wrong.stdout

    (folder / "adapter.toml").write_text(
        text.replace('lookup = "national_id"', 'lookup = "nobody"'), encoding="utf-8"
    )
    unfit = _run("adapter", "check", str(folder / "adapter.toml"))
    assert unfit.returncode == 1
    assert "methods.GetHoldings.lookup: no request parameter 'nobody'" in unfit.stdout


@pytest.mark.parametrize("offline", [False, True])
def test_check_refuses_rows_without_expect_many(tmp_path: Path, offline: bool) -> None:
    """A repeated field mapped from 'rows' while one record is expected cannot work (it answered
    INTERNAL for an owner with two parcels, an empty list for an owner with one): check and serve
    refuse it, naming the key."""
    folder = tmp_path / "land"
    folder.mkdir()
    for name in ("land.proto", "parcels.csv"):
        (folder / name).write_bytes((EXAMPLES / "land" / name).read_bytes())
    text = (EXAMPLES / "land" / "adapter.toml").read_text(encoding="utf-8")
    assert 'expect = "many"\n' in text
    (folder / "adapter.toml").write_text(text.replace('expect = "many"\n', ""), encoding="utf-8")
    found = _run(
        "adapter", "check", *(["--offline"] if offline else []), str(folder / "adapter.toml")
    )
    assert found.returncode == 1, found.stdout
    assert (
        "methods.GetHoldings.fields.parcels: 'rows' is offered only with expect = \"many\""
        in found.stdout
    )
    assert found.stdout.strip().endswith("1 problem(s)")
    refused = _run("adapter", "serve", str(folder / "adapter.toml"), "--listen", "127.0.0.1:0")
    assert refused.returncode == 2
    assert "methods.GetHoldings.fields.parcels" in refused.stderr
    assert "Traceback" not in refused.stderr


async def _stop(process: asyncio.subprocess.Process) -> bytes:
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
    _out, err = await asyncio.wait_for(process.communicate(), 60)
    return err


@pytest.mark.parametrize(
    ("module", "probe"),
    [
        ("adapters.examples.legacy_tax", "/api/v2/taxpayers/4410000017/income?year=2025"),
        ("adapters.examples.legacy_business", "/business?wsdl"),
    ],
)
async def test_legacy_services_and_adapters_report_ready_on_port_zero(
    tmp_path: Path, module: str, probe: str
) -> None:
    """The example legacy services and ``ruta adapter serve`` start on port 0 and write where
    they listen to a ready file, as the sandbox expects."""
    legacy_ready = tmp_path / "legacy.json"
    legacy = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        module,
        "--listen",
        "127.0.0.1:0",
        "--ready-file",
        str(legacy_ready),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        ready = await ready_file(legacy_ready, legacy)
        assert ready["pid"] == legacy.pid
        base = ready["url"].removesuffix("/business")
        async with aiohttp.ClientSession() as session, session.get(base + probe) as response:
            assert response.status == 200
        kind, env = (
            ("tax", {"RUTA_TAX_URL": ready["url"]})
            if module.endswith("tax")
            else ("business", {"RUTA_BUSINESS_WSDL": ready["wsdl"]})
        )
        adapter_ready = tmp_path / "adapter.json"
        adapter = await asyncio.create_subprocess_exec(
            str(RUTA),
            "adapter",
            "serve",
            str(EXAMPLES / kind / "adapter.toml"),
            "--listen",
            "127.0.0.1:0",
            "--ready-file",
            str(adapter_ready),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, **env},
        )
        try:
            served = await ready_file(adapter_ready, adapter)
            assert served["service"] in {"tax.v1.TaxAgency", "business.v1.BusinessRegister"}
            assert served["address"].startswith("127.0.0.1:")
        finally:
            err = await _stop(adapter)
            assert adapter.returncode == 0, err.decode()
    finally:
        err = await _stop(legacy)
        assert legacy.returncode == 0, err.decode()
