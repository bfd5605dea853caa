"""``ruta sandbox up|down|restart`` as real processes: two sandboxes at once, calls through them, a
server restarted by hand from its own config file (reaped and noticed by the sandbox), then
restarted in place by ``ruta sandbox restart``, and everything stopped by ``down``."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives.serialization import pkcs12
from jsonschema import Draft202012Validator

from ruta.ids import SubsystemId
from sandbox.client import BusClient, CallResult
from sandbox.layout import PURPOSE, SERVICES, examples_dir
from sandbox.processes import ManagedProcess, process_alive, ruta_command
from sandbox.protos import MethodCodec, compile_descriptor_set, method_codec
from tests.markdown import code_blocks, run_commands, section
from tests.processes import ready_file

pytestmark = [pytest.mark.integration, pytest.mark.slow]

UP_TIMEOUT_S = 240.0
POPULATION = SERVICES[0]
BENEFITS = SubsystemId.parse("DEV/GOV/SOC/benefits")
INCOME = SubsystemId.parse("DEV/GOV/TAX/income")
PERSON = "4410000017"


@dataclass
class Running:
    directory: Path
    process: subprocess.Popen[bytes]
    log: Path
    description: dict[str, Any]


def _sandbox(directory: Path) -> ManagedProcess:
    """``ruta sandbox up`` in ``directory``, as the sandbox supervises its own children."""
    return ManagedProcess(
        name=f"sandbox {directory.parent.name}",
        argv=ruta_command("sandbox", "up", "--dir", str(directory), "--quiet"),
        log_path=directory.parent / f"{directory.name}.log",
        ready_path=directory / "sandbox.json",
        env={"PYTHONSAFEPATH": "1"},
    )


def _down(directory: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ruta_command("sandbox", "down", "--dir", str(directory)),
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


@pytest.fixture(scope="module")
def sandboxes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Running]]:
    """Two sandboxes started at the same time, each in its own directory."""
    directories = [tmp_path_factory.mktemp(name) / "sandbox" for name in ("a", "b")]
    started = [(d, _sandbox(d)) for d in directories]
    for _, process in started:
        process.start()
    try:
        running = []
        for directory, process in started:
            description = process.wait_ready(timeout=UP_TIMEOUT_S)
            assert process.popen is not None
            running.append(Running(directory, process.popen, process.log_path, description))
        yield running
    finally:
        for directory, process in started:
            _down(directory)
            process.stop()


@pytest.fixture(scope="module")
def codec() -> MethodCodec:
    proto = examples_dir() / POPULATION.example / POPULATION.proto
    return method_codec(
        compile_descriptor_set(proto), POPULATION.service.service_name, POPULATION.method
    )


async def _get_person(
    description: dict[str, Any], subsystem: SubsystemId, codec: MethodCodec
) -> CallResult:
    async with BusClient.for_sandbox(description, subsystem) as client:
        return await client.call(
            POPULATION.service, codec, {"national_id": PERSON}, purpose=PURPOSE, subject=PERSON
        )


def _is_absolute_file(text: Any) -> bool:
    return isinstance(text, str) and Path(text).is_absolute() and Path(text).is_file()


def _host_port(text: Any) -> bool:
    if not isinstance(text, str):
        return False
    host, _, port = text.rpartition(":")
    return host == "127.0.0.1" and port.isdigit() and int(port) > 0


def test_sandbox_json_matches_the_schema(sandboxes: list[Running]) -> None:
    data = sandboxes[0].description
    assert set(data) == {
        "instance",
        "registry",
        "servers",
        "subsystems",
        "gateways",
        "administrator",
        "auditor",
        "citizen",
    }
    assert data["instance"] == "DEV"
    assert set(data["registry"]) == {"address", "globalconf_url", "console"}
    assert data["registry"]["console"].startswith("https://127.0.0.1:")
    assert set(data["administrator"]) == {"p12", "p12_passphrase_file", "cert", "key", "ca"}
    assert all(_is_absolute_file(path) for path in data["administrator"].values())
    assert _host_port(data["registry"]["address"])
    assert data["registry"]["globalconf_url"].startswith("http://127.0.0.1:")
    ids = {s["id"] for s in data["servers"]}
    assert {"DEV/GOV/POP/ss1", "DEV/GOV/TAX/ss1", "DEV/GOV/SOC/ss1"} <= ids
    for server in data["servers"]:
        assert set(server) == {
            "id",
            "consumer",
            "transport",
            "audit",
            "console",
            "metrics",
            "data_dir",
            "config",
            "pid",
        }
        for key in ("consumer", "transport", "audit"):
            assert _host_port(server[key]), (key, server[key])
        assert server["console"].startswith("https://127.0.0.1:")
        assert server["metrics"].startswith("http://127.0.0.1:")
        assert Path(server["data_dir"]).is_absolute()
        assert Path(server["data_dir"]).is_dir()
        assert _is_absolute_file(server["config"])
        assert isinstance(server["pid"], int)
        assert process_alive(server["pid"])
    subsystems = {s["id"]: s for s in data["subsystems"]}
    assert {"DEV/GOV/POP/registry", "DEV/GOV/TAX/income", "DEV/GOV/SOC/benefits"} <= set(subsystems)
    for entry in subsystems.values():
        assert set(entry) == {"id", "server", "cert", "key", "ca"}
        assert entry["server"] in ids
        for key in ("cert", "key", "ca"):
            assert entry[key] is None or _is_absolute_file(entry[key])
        if entry["key"] is not None:
            assert Path(entry["key"]).stat().st_mode & 0o077 == 0
    assert set(data["auditor"]) == {"cert", "key", "ca", "p12", "p12_passphrase_file"}
    assert all(_is_absolute_file(path) for path in data["auditor"].values())
    assert set(data["citizen"]) == {"url", "issuer", "gateway"}
    assert data["citizen"]["url"].startswith("http://localhost:")
    assert data["citizen"]["url"].endswith("/citizen")
    assert data["citizen"]["issuer"].startswith("http://localhost:")
    gateways = {g["member"]: g for g in data["gateways"]}
    assert set(gateways) == {"DEV/GOV/POP", "DEV/GOV/TAX", "DEV/GOV/SOC", "DEV/GOV/REG"}
    for gateway in gateways.values():
        assert set(gateway) == {
            "id",
            "member",
            "url",
            "backend",
            "public",
            "subsystems",
            "config",
            "open_data",
        }
        assert gateway["url"].startswith("http://127.0.0.1:")
        # The public pages have a port of their own: the callers' port trusts loopback callers.
        assert gateway["public"].startswith("http://127.0.0.1:")
        assert gateway["public"] != gateway["url"]
        assert _is_absolute_file(gateway["config"])
    assert _host_port(gateways["DEV/GOV/TAX"]["backend"])  # serves the legacy REST API
    # SOC's gateway publishes the instance's open data; no other does.
    assert gateways["DEV/GOV/SOC"]["open_data"] == gateways["DEV/GOV/SOC"]["public"] + "/open-data"
    assert [m for m, g in gateways.items() if g["open_data"]] == ["DEV/GOV/SOC"]


def test_two_sandboxes_share_no_port(sandboxes: list[Running]) -> None:
    def ports(data: dict[str, Any]) -> set[str]:
        found = {data["registry"]["address"], data["registry"]["globalconf_url"]}
        for server in data["servers"]:
            found |= {server[k] for k in ("consumer", "transport", "audit", "console", "metrics")}
        for gateway in data["gateways"]:
            found |= {gateway["url"], gateway["backend"], gateway["public"]} - {""}
        return found

    a, b = (s.description for s in sandboxes)
    assert not ports(a) & ports(b)


def test_the_auditor_opens_each_servers_console_with_the_printed_certificate(
    sandboxes: list[Running],
) -> None:
    data = sandboxes[0].description
    auditor = data["auditor"]
    key, certificate, _ = pkcs12.load_key_and_certificates(
        Path(auditor["p12"]).read_bytes(),
        Path(auditor["p12_passphrase_file"]).read_text().strip().encode(),
    )
    assert key is not None
    assert certificate is not None
    assert Path(auditor["p12_passphrase_file"]).stat().st_mode & 0o077 == 0
    with_cert = ssl.create_default_context(cafile=auditor["ca"])
    with_cert.check_hostname = False  # the console presents the server's auth certificate
    with_cert.load_cert_chain(auditor["cert"], auditor["key"])
    without = ssl.create_default_context(cafile=auditor["ca"])
    without.check_hostname = False
    for server in data["servers"]:
        with urllib.request.urlopen(server["console"], context=with_cert, timeout=30) as page:
            assert "Message log" in page.read().decode()
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(server["console"], context=without, timeout=30)
        assert refused.value.code == 401
        refused.value.close()


@pytest.mark.parametrize("which", [0, 1])
async def test_benefits_gets_a_person_through_both_servers(
    sandboxes: list[Running], codec: MethodCodec, which: int
) -> None:
    result = await _get_person(sandboxes[which].description, BENEFITS, codec)
    assert result.ok, result
    assert result.response is not None
    assert result.response["national_id"] == PERSON
    assert result.response["family_name"] == "Quispe Mamani"
    assert len(result.message_id) == 36
    assert len(result.request_hash) == 64


async def test_tax_without_a_contract_is_refused(
    sandboxes: list[Running], codec: MethodCodec
) -> None:
    result = await _get_person(sandboxes[0].description, INCOME, codec)
    assert not result.ok
    assert result.status == "PERMISSION_DENIED"
    assert result.fault in {"server.consumer.access_denied", "server.provider.access_denied"}
    assert result.fault_id


REPOSITORY = Path(__file__).resolve().parents[2]


#: How long the restarted server gets to write its ready file.
_RESTART_READY_SECONDS = 120.0


def test_the_docs_plain_grpc_example_runs_as_written(
    sandboxes: list[Running], tmp_path: Path
) -> None:
    """docs/sandbox.md, "Calling through it": generate the stubs and run the client, as shown."""
    text = section(
        (REPOSITORY / "docs" / "sandbox.md").read_text("utf-8"),
        "### Calling through it",
        until="The evidence of a sandbox",
    )
    (tmp_path / "adapters").symlink_to(REPOSITORY / "adapters")
    outputs = []
    for block in code_blocks(text):
        if block.file is not None:
            (tmp_path / block.file).write_text(block.text)
        elif block.language == "sh":
            commands = re.sub(r"\bDIR\b", str(sandboxes[1].directory), block.text)
            outputs.append(run_commands(replace(block, text=commands), cwd=tmp_path).stdout)
    assert len(outputs) == 2
    assert (tmp_path / "population_pb2_grpc.py").is_file()
    name, message = outputs[-1].splitlines()
    assert name == "Ana Lucía Quispe Mamani 1985-03-12"
    assert re.fullmatch(r"message id [0-9a-f-]{36}", message)


async def test_a_server_restarts_from_its_config_file(
    sandboxes: list[Running], codec: MethodCodec
) -> None:
    running = sandboxes[0]
    server = next(s for s in running.description["servers"] if s["id"] == "DEV/GOV/POP/ss1")
    ready = Path(server["data_dir"]) / "ready.json"
    os.kill(server["pid"], signal.SIGTERM)
    deadline = time.monotonic() + 60
    while ready.exists():
        assert time.monotonic() < deadline, "the server did not stop"
        await asyncio.sleep(0.05)
    assert not ready.exists()
    refused = await _get_person(running.description, BENEFITS, codec)
    assert not refused.ok

    log = running.directory / "restarted-pop.log"
    with log.open("wb") as sink:
        restarted = subprocess.Popen(  # noqa: ASYNC220 - a long-lived child, polled below
            ruta_command("ss", "serve", "--config", server["config"]),
            stdout=sink,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONSAFEPATH": "1"},
            start_new_session=True,
        )
    try:
        addresses = await ready_file(ready, restarted, seconds=_RESTART_READY_SECONDS, log=log)
        assert addresses["transport"] == server["transport"]
        assert addresses["consumer"] == server["consumer"]
        result = await _get_person(running.description, BENEFITS, codec)
        assert result.ok, result
        # The sandbox reaped the process it had started and names the new one in sandbox.json.
        while (
            not _gone(server["pid"])
            or _server_entry(running, "DEV/GOV/POP/ss1")["pid"] != restarted.pid
        ):
            assert time.monotonic() < deadline + 90, "the sandbox did not notice the restart"
            await asyncio.sleep(0.1)
    finally:
        _RESTARTED.append(restarted)


_RESTARTED: list[subprocess.Popen[bytes]] = []


def _gateway_get(url: str, client: str | None = None) -> tuple[int, Any]:
    request = urllib.request.Request(url, headers={"X-Road-Client": client} if client else {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_directory_services_of_the_sandbox(sandboxes: list[Running]) -> None:
    """Directory answers validate against the GovStack IM spec, for the sandbox's members and
    contracts, for a caller with contracts (SOC's benefits) and one without (TAX's income)."""
    spec = yaml.safe_load(
        (
            Path(__file__).parents[1] / "testdata" / "govstack-im" / "directory-services.yaml"
        ).read_text()
    )

    def valid(body: Any, name: str) -> None:
        schema = {"$ref": f"#/components/schemas/{name}", "components": spec["components"]}
        Draft202012Validator(schema).validate(body)

    gateways = {g["member"]: g["url"] for g in sandboxes[0].description["gateways"]}
    soc, tax = gateways["DEV/GOV/SOC"], gateways["DEV/GOV/TAX"]
    status, clients = _gateway_get(f"{soc}/listClients")
    assert status == 200
    valid(clients, "restClientDetailsListType")
    assert len(clients["member"]) == 4 + 5  # members, then subsystems
    for provider, code in (
        ("DEV/GOV/POP/registry", POPULATION.service.service_name),
        ("DEV/GOV/TAX/income", "tax-rest"),
    ):
        status, methods = _gateway_get(f"{soc}/r1/{provider}/listMethods")
        assert status == 200
        valid(methods, "restServiceDetailsListType")
        assert code in {s["serviceCode"] for s in methods["member"]}
        status, allowed = _gateway_get(f"{soc}/r1/{provider}/allowedMethods", str(BENEFITS))
        assert status == 200
        valid(allowed, "restServiceDetailsListType")
        assert code in {s["serviceCode"] for s in allowed["member"]}
        status, none = _gateway_get(f"{tax}/r1/{provider}/allowedMethods", str(INCOME))
        assert (status, none) == (200, {"member": []})
    status, described = _gateway_get(f"{soc}/r1/DEV/GOV/TAX/income/getOpenAPI?serviceCode=tax-rest")
    assert status == 200
    assert "/api/v2/taxpayers/{tin}/income" in described["paths"]


def test_a_rest_call_and_a_json_call_through_the_gateway(sandboxes: list[Running]) -> None:
    soc = next(g for g in sandboxes[0].description["gateways"] if g["member"] == "DEV/GOV/SOC")
    headers = {"X-Road-Client": str(BENEFITS), "Ruta-Purpose": PURPOSE}
    rest = urllib.request.Request(
        f"{soc['url']}/r1/DEV/GOV/TAX/income/tax-rest/api/v2/taxpayers/{PERSON}/income?year=2025",
        headers=headers,
    )
    with urllib.request.urlopen(rest, timeout=30) as response:
        assert response.status == 200
        assert len(response.headers["X-Road-Id"]) == 36
        assert json.loads(response.read())["taxpayer"]["tin"] == PERSON
    # The public pages' port serves no service access, whatever the caller header says.
    public = urllib.request.Request(
        rest.full_url.replace(soc["url"], soc["public"]), headers=headers
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(public, timeout=30)
    assert refused.value.code == 404
    assert json.loads(refused.value.read())["type"] == "client.unknown_service"
    refused.value.close()
    grpc_json = urllib.request.Request(
        f"{soc['url']}/r1/{POPULATION.service}/{POPULATION.method}",
        data=json.dumps({"nationalId": PERSON}).encode(),
        headers={**headers, "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(grpc_json, timeout=30) as response:
        assert response.status == 200
        assert json.loads(response.read())["nationalId"] == PERSON


def _gone(pid: int) -> bool:
    """Neither running nor a zombie waiting to be reaped."""
    return not Path(f"/proc/{pid}").exists()


def _server_entry(running: Running, server_id: str) -> dict[str, Any]:
    description = json.loads((running.directory / "sandbox.json").read_text())
    return next(s for s in description["servers"] if s["id"] == server_id)


def _parent(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rpartition(")")[2].split()[1])


def _restart(running: Running, server: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ruta_command("sandbox", "restart", "--dir", str(running.directory), server),
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


async def test_sandbox_restart_restarts_a_server_in_place(
    sandboxes: list[Running], codec: MethodCodec
) -> None:
    """After the hand restart above: ``ruta sandbox restart`` stops that copy and starts the
    server again as the sandbox's child, same log file and level, sandbox.json updated."""
    running = sandboxes[0]
    by_hand = _RESTARTED[-1]
    log = running.directory / "logs" / "ss-pop.log"
    before = log.read_text()

    result = _restart(running, "DEV/GOV/POP/ss1")
    assert result.returncode == 0, result.stderr
    entry = _server_entry(running, "DEV/GOV/POP/ss1")
    assert f"DEV/GOV/POP/ss1 restarted (pid {entry['pid']})" in result.stdout
    assert by_hand.wait(timeout=30) is not None
    assert entry["pid"] != by_hand.pid
    assert _parent(entry["pid"]) == running.process.pid
    processes = json.loads((running.directory / "processes.json").read_text())
    assert processes["ss-pop"] == entry["pid"]
    after = log.read_text()
    assert after.startswith(before)
    restarted_part = after[len(before) :]
    assert "sandbox: restarting DEV/GOV/POP/ss1" in restarted_part
    # The sandbox's level (info): the start line is there, as it was the first time.
    assert "security server DEV/GOV/POP/ss1 serving" in restarted_part
    assert (await _get_person(running.description, BENEFITS, codec)).ok

    # By its folder name too; the old child is reaped, not left a zombie.
    result = _restart(running, "pop")
    assert result.returncode == 0, result.stderr
    assert _gone(entry["pid"])
    assert _server_entry(running, "DEV/GOV/POP/ss1")["pid"] != entry["pid"]
    assert (await _get_person(running.description, BENEFITS, codec)).ok

    refused = _restart(running, "DEV/GOV/XYZ/ss1")
    assert refused.returncode == 1
    assert "no server 'DEV/GOV/XYZ/ss1'" in refused.stderr
    assert "DEV/GOV/POP/ss1 (pop)" in refused.stderr


def test_down_stops_every_process(sandboxes: list[Running]) -> None:
    for running in sandboxes:
        pids = [s["pid"] for s in running.description["servers"]]
        processes = json.loads((running.directory / "processes.json").read_text())
        pids += list(processes.values())
        current = [
            s["pid"]
            for s in json.loads((running.directory / "sandbox.json").read_text())["servers"]
        ]
        result = _down(running.directory)
        assert result.returncode == 0, result.stderr
        assert "stopped" in result.stdout
        assert running.process.wait(timeout=60) == 0
        pids += current
        assert all(not process_alive(pid) for pid in pids), [p for p in pids if process_alive(p)]
        assert not (running.directory / "sandbox.json").exists()
    for popen in _RESTARTED:
        popen.wait(timeout=30)
