"""Security-server clusters on one PostgreSQL (docs/operator/clusters.md), as real processes.

- Two provider servers of one member (``ruta ss serve`` processes) share a fresh database; a
  consumer calls them under load and one is killed (SIGKILL): calls go on through the other,
  every call answered OK is in the consumer's log and in a provider's log, and both providers'
  trees export complete evidence that ``ruta audit verify`` accepts.
- One node with ``[server] workers = 2`` (PostgreSQL, and one SQLite file): both workers serve
  calls on the same ports, a message id claimed on one worker is refused on the other, metrics,
  refusals, reload and open-data counts work per node, the audit API exports complete, verified
  evidence of both workers' trees, and stopping the node under load keeps every answered call.
- A worker that dies stops its node; workers end with a supervisor that was killed.
- Two nodes of one server (``[server] node``): replays refused across nodes, a second process
  with a name in use refused at start, either node exports both trees.
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import urllib.request
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import pytest
import sqlalchemy as sa
import tomli_w
from click.testing import CliRunner

from ruta.evidence import VerificationReport, verify_bundle
from ruta.globalconf import ConfigurationAnchor
from ruta.months import Month
from ruta.pki.tls import channel_credentials
from ruta.readiness import read_ready_file
from ruta.v1 import audit_pb2, audit_pb2_grpc, transport_pb2
from security_server.refusals_cli import refusals
from security_server.settings import SecurityServerSettings
from security_server.settings_cli import signal_reload
from tests.integration.security_server.bed import (
    PERSON_REQUEST,
    POP,
    SOC,
    Bed,
    audit_cli,
    bed,
    call_metadata,
    fault_of,
    get_person,
    send_to_provider,
    signed_request,
)
from tests.integration.security_server.test_provider_servers import POP2, TwoProviderServers

pytestmark = pytest.mark.integration

#: Concurrent callers of the load.
CALLERS = 4
#: Calls answered OK before the kill, and after it.
OK_BEFORE = 12
OK_AFTER = 12


def _fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=30) as response:
        text: str = response.read().decode()
    return text


def _records_of(url: str, message_ids: list[str]) -> dict[str, int]:
    """How many records each message id has, over every tree in the database."""
    engine = _sync_url(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text(
                    "SELECT message_id, count(*) FROM log_leaves "
                    "WHERE message_id IN :ids GROUP BY message_id"
                ).bindparams(sa.bindparam("ids", expanding=True)),
                {"ids": message_ids},
            ).all()
    finally:
        engine.dispose()
    return {str(m): int(c) for m, c in rows}


def _sync_url(url: str) -> sa.Engine:
    sync = sa.make_url(url)
    if sync.get_backend_name() == "sqlite":
        sync = sync.set(drivername="sqlite")
    return sa.create_engine(sync, poolclass=sa.pool.NullPool)


def _log_sizes(url: str) -> dict[str, tuple[int, int]]:
    """Each origin's committed size and largest cosigned checkpoint size."""
    engine = _sync_url(url)
    try:
        with engine.connect() as conn:
            heads: dict[str, int] = dict(
                conn.execute(sa.text("SELECT origin, size FROM log_heads")).all()
            )
            cosigned: dict[str, int | None] = dict(
                conn.execute(
                    sa.text(
                        "SELECT origin, max(size) FROM log_checkpoints "
                        "WHERE cosignature IS NOT NULL GROUP BY origin"
                    )
                ).all()
            )
    finally:
        engine.dispose()
    return {o: (int(s), int(cosigned.get(o) or 0)) for o, s in heads.items()}


async def _wait_all_cosigned(url: str, origins: set[str]) -> dict[str, int]:
    """Wait until each of ``origins`` has a cosigned checkpoint of its whole tree."""
    sizes: dict[str, tuple[int, int]] = {}
    for _ in range(600):
        sizes = await asyncio.to_thread(_log_sizes, url)
        if origins <= set(sizes) and all(sizes[o][1] >= sizes[o][0] > 0 for o in origins):
            return {o: sizes[o][0] for o in origins}
        await asyncio.sleep(0.05)
    raise AssertionError(f"trees not cosigned: {sizes}")


async def _list_logs(instance: Bed, audit_address: str) -> dict[str, bool]:
    """The member's logs an audit API lists: origin -> exportable there."""
    auditor = instance.pki.role("auditor-supervisor")
    credentials = grpc.ssl_channel_credentials(
        root_certificates=instance.pki.trust_path.read_bytes(),
        private_key=auditor.key_path.read_bytes(),
        certificate_chain=auditor.cert_path.read_bytes(),
    )
    async with grpc.aio.secure_channel(audit_address, credentials) as channel:
        reply = await audit_pb2_grpc.AuditStub(channel).ListLogs(
            audit_pb2.ListLogsRequest(), timeout=30
        )
    return {log.origin: log.exportable for log in reply.logs}


async def _monthly_answered(instance: Bed, audit_address: str) -> int:
    """What the statistics role's MonthlyCounts says the server answered, this month and the
    last."""
    who = instance.pki.roles("statistics")
    month = Month.of(datetime.now(UTC))
    request = audit_pb2.MonthlyCountsRequest(first_month=str(month.plus(-1)), last_month=str(month))
    credentials = channel_credentials(who.key_path, who.cert_path, instance.pki.trust_path)
    async with grpc.aio.secure_channel(audit_address, credentials) as channel:
        reply = await audit_pb2_grpc.AuditStub(channel).MonthlyCounts(request, timeout=30)
    return sum(row.answered for row in reply.counts)


async def _export_and_verify(
    instance: Bed, audit_address: str, origin: str, out: Path
) -> VerificationReport:
    """Export the complete evidence of ``origin`` through an audit API and verify it with
    ``ruta audit verify`` (and in process, for the report)."""
    auditor = instance.pki.role("auditor-supervisor")
    args = [
        "export",
        "--address",
        audit_address,
        "--cert",
        str(auditor.cert_path),
        "--key",
        str(auditor.key_path),
        "--ca",
        str(instance.pki.trust_path),
        "--out",
        str(out),
        "--origin",
        origin,
    ]
    code, output = await asyncio.to_thread(audit_cli, *args)
    assert code == 0, output
    code, output = audit_cli("verify", str(out), "--anchor", str(instance.anchor_path))
    assert code == 0, output
    report = verify_bundle(
        await asyncio.to_thread(out.read_bytes),
        anchor=ConfigurationAnchor.from_file(instance.anchor_path),
    )
    assert report.ok
    assert report.origin == origin
    assert [r.seq for r in report.records] == list(range(report.tree_size))  # complete
    return report


def _provider_data(instance: Bed, server: Any, url: str, **server_section: Any) -> dict[str, Any]:
    data = instance.settings_dict(server)
    data["log"] = {"url": url}
    data["audit"] = {"listen": "127.0.0.1:0"}
    data["checkpoints"] = {"interval_seconds": 0.2}
    if server_section:
        data["server"] = server_section
    return data


@pytest.mark.postgres
async def test_a_provider_node_killed_under_load(tmp_path: Path, postgres_url: str) -> None:
    instance = TwoProviderServers(tmp_path)
    try:
        await instance.build()
        for server in (POP, POP2):
            await instance.spawn_server(server, data=_provider_data(instance, server, postgres_url))
        soc = await instance.start_server(SOC)
        await instance.wait_for_serial(instance.publish())

        answered: list[str] = []
        faults: list[str | None] = []
        killed = asyncio.Event()
        done = asyncio.Event()

        async with instance.consumer_channel(SOC) as channel:
            call = get_person(channel)

            async def caller() -> None:
                while not done.is_set():
                    message_id = str(uuid.uuid4())
                    metadata = call_metadata(extra=[("ruta-message-id", message_id)])
                    try:
                        await call(PERSON_REQUEST, metadata=metadata, timeout=30)
                    except grpc.aio.AioRpcError as exc:
                        faults.append(fault_of(exc))
                        continue
                    answered.append(message_id)
                    if len(answered) >= OK_BEFORE and not killed.is_set():
                        killed.set()
                        await instance.stop_process(POP, signal.SIGKILL)
                    if killed.is_set() and len(answered) >= OK_BEFORE + OK_AFTER + CALLERS:
                        done.set()

            await asyncio.wait_for(asyncio.gather(*(caller() for _ in range(CALLERS))), 120)

        # Calls went on through ss2: only calls already on their way to ss1 failed, and only
        # as a network error (nothing else was refused).
        assert set(faults) <= {"server.consumer.network_error"}, faults
        assert len(faults) <= 2 * CALLERS, faults

        # While ss1 is down, ss2's audit API answers for both of the member's trees (it can
        # export only its own: ss1's log key signs ss1's evidence).
        listed = await _list_logs(instance, instance.agencies[POP2].addresses["audit"])
        assert listed == {str(POP): False, str(POP2): True}

        # ss1 comes back (its tree restored from the database) and gets it cosigned.
        await instance.spawn_server(POP, data=_provider_data(instance, POP, postgres_url))
        await _wait_all_cosigned(postgres_url, {str(POP), str(POP2)})
        provided: collections.Counter[str] = collections.Counter()
        for server in (POP, POP2):
            report = await _export_and_verify(
                instance,
                instance.agencies[server].addresses["audit"],
                str(server),
                tmp_path / f"{server.code}.zip",
            )
            provided.update(r.message_id for r in report.records)

        # Nothing acknowledged is lost: each OK call is in the consumer's log (request and
        # response) and in one provider's verified evidence.
        assert soc.log is not None
        for message_id in answered:
            page = await soc.log.query(message_id=message_id)
            assert len(page.records) == 2, message_id
        assert all(provided[message_id] == 2 for message_id in answered)  # request, response
    finally:
        await instance.close()


@pytest.fixture(params=[pytest.param("postgres", marks=pytest.mark.postgres), "sqlite"])
def shared_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The node's log database: a fresh PostgreSQL database, or one SQLite file that both
    workers write (docs/adr/0030)."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'messagelog.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


async def test_two_workers_on_one_node(tmp_path: Path, shared_url: str) -> None:
    async with bed(tmp_path) as instance:
        agency = await instance.spawn_server(
            POP, data=_provider_data(instance, POP, shared_url, workers=2)
        )
        ready: dict[str, Any] = read_ready_file(agency.data_dir / "ready.json") or {}
        workers: list[dict[str, Any]] = ready["workers"]
        assert [w["origin"] for w in workers] == [str(POP), f"{POP}/w1"]
        assert len({w["pid"] for w in workers}) == 2
        origins = {w["origin"] for w in workers}

        # Each new connection lands on either worker (SO_REUSEPORT): call until both served.
        sizes: dict[str, tuple[int, int]] = {}
        answered_here = 0
        for _ in range(40):
            _, message = signed_request(instance)
            await send_to_provider(instance, message)
            answered_here += 1
            sizes = await asyncio.to_thread(_log_sizes, shared_url)
            if origins <= set(sizes) and all(sizes[o][0] > 0 for o in origins):
                break
        else:
            raise AssertionError(f"one worker served every connection: {sizes}")

        # Each worker serves its own metrics, counting its own tree.
        for worker in workers:
            text = await asyncio.to_thread(_fetch, worker["metrics"])
            size = re.search(r"^ruta_log_size (\S+)$", text, re.MULTILINE)
            assert size is not None
            assert float(size.group(1)) >= 1

        # A message id claimed on one worker is refused on every other (shared claims).
        _, message = signed_request(instance)
        await send_to_provider(instance, message)
        answered_here += 1
        for _ in range(6):
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await send_to_provider(instance, message)
            assert fault_of(info.value) == "server.provider.replayed_message"
        # Each worker keeps its refusals; `ruta ss refusals` reads the node's together.
        result = await asyncio.to_thread(
            CliRunner().invoke,
            refusals,
            ["--config", str(agency.config_path), "--count", "--json"],
        )
        assert result.exit_code == 0, result.output
        counts = {row["fault"]: row["count"] for row in json.loads(result.output)}
        assert counts["server.provider.replayed_message"] == 6

        # The consumer path works too, through whichever worker its connection reached.
        soc = await instance.start_server(SOC)
        await instance.wait_for_serial(instance.publish())
        async with instance.consumer_channel(SOC) as channel:
            for _ in range(3):
                await get_person(channel)(PERSON_REQUEST, metadata=call_metadata(), timeout=30)
                answered_here += 1
        assert soc.log is not None

        # Open data counts what the node answered, over both workers' trees, whichever answers.
        assert await _monthly_answered(instance, ready["audit"]) == answered_here

        # Evidence of both trees, exported through the one audit port (either worker answers).
        final = await _wait_all_cosigned(shared_url, origins)
        assert await _list_logs(instance, ready["audit"]) == dict.fromkeys(origins, True)
        for origin in origins:
            report = await _export_and_verify(
                instance, ready["audit"], origin, tmp_path / f"{origin.replace('/', '_')}.zip"
            )
            assert report.tree_size >= final[origin]

        # `ruta ss reload` signals the supervisor, which passes it on; each worker reports.
        settings = SecurityServerSettings.from_file(agency.config_path)
        status = await asyncio.to_thread(signal_reload, settings, timeout=30)
        assert status["outcome"] == "applied"
        assert status["pid"] in {w["pid"] for w in workers}

        # Stopping the node under load stops both workers, their pending appends written:
        # every call answered OK has its request and response in a worker's tree.
        process = agency.process
        assert process is not None
        answered: list[str] = []
        stopping = asyncio.Event()
        under_load = asyncio.Event()

        async def sender() -> None:
            while not stopping.is_set():
                header, message = signed_request(instance)
                try:
                    await send_to_provider(instance, message)
                except grpc.aio.AioRpcError:
                    await asyncio.sleep(0.05)
                    continue
                answered.append(header.message_id)
                if len(answered) >= 2 * CALLERS:
                    under_load.set()

        senders = [asyncio.create_task(sender()) for _ in range(CALLERS)]
        await asyncio.wait_for(under_load.wait(), 60)
        await instance.stop_process(POP)
        stopping.set()
        await asyncio.gather(*senders)
        assert process.returncode == 0
        counts = await asyncio.to_thread(_records_of, shared_url, answered)
        assert all(counts.get(m) == 2 for m in answered), counts
        for worker in workers:
            with pytest.raises(ProcessLookupError):
                os.kill(worker["pid"], 0)
        assert not (agency.data_dir / "ready.json").exists()


async def test_a_worker_that_dies_stops_its_node(tmp_path: Path) -> None:
    """A worker ending by itself (here: killed) takes the node down as a whole, so systemd or
    Kubernetes restarts it whole; the supervisor's status says it failed."""
    async with bed(tmp_path) as instance:
        data = instance.settings_dict(POP)
        data["server"] = {"workers": 2}
        agency = await instance.spawn_server(POP, data=data)
        ready = read_ready_file(agency.data_dir / "ready.json") or {}
        workers: list[dict[str, Any]] = ready["workers"]
        os.kill(workers[1]["pid"], signal.SIGKILL)
        process = agency.process
        assert process is not None
        for _ in range(600):
            if process.poll() is not None:
                break
            await asyncio.sleep(0.05)
        assert process.returncode not in (None, 0)
        with pytest.raises(ProcessLookupError):
            os.kill(workers[0]["pid"], 0)
        assert not (agency.data_dir / "ready.json").exists()


async def test_workers_end_with_their_supervisor(tmp_path: Path) -> None:
    """A supervisor killed outright (no chance to stop its workers) still leaves no worker
    serving: the kernel sends each SIGTERM (Linux), and each stops cleanly."""
    async with bed(tmp_path) as instance:
        data = instance.settings_dict(POP)
        data["server"] = {"workers": 2}
        agency = await instance.spawn_server(POP, data=data)
        ready = read_ready_file(agency.data_dir / "ready.json") or {}
        pids = [int(w["pid"]) for w in ready["workers"]]
        await instance.stop_process(POP, signal.SIGKILL)
        for _ in range(600):
            alive = [pid for pid in pids if _alive(pid)]
            if not alive:
                break
            await asyncio.sleep(0.05)
        assert not alive
        for index in range(2):
            assert not (agency.data_dir / "workers" / f"w{index}" / "ready.json").exists()


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, ended but not yet reaped by init, counts as ended)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()[0] != "Z"
    except FileNotFoundError:
        return False


async def _spawn_node(
    directory: Path, data: dict[str, Any]
) -> tuple[subprocess.Popen[bytes], dict[str, Any]]:
    """Run one more node of a server from ``directory`` (its own settings file and data
    directory, keys copied there); return the process and its ready file, or raise with the
    process's error output if it ends first."""
    config = directory / "ss.toml"
    config.write_text(tomli_w.dumps(data))
    stderr_path = directory / "stderr.log"
    with open(stderr_path, "ab") as stderr:  # noqa: ASYNC230 - test setup
        process = subprocess.Popen(  # noqa: ASYNC220 - a long-lived child, polled below
            [sys.executable, "-m", "ruta", "ss", "serve", "--config", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    for _ in range(600):
        ready = read_ready_file(directory / "data" / "ready.json")
        if ready is not None:
            return process, ready
        if process.poll() is not None:
            raise NodeExitedError(stderr_path.read_text())
        await asyncio.sleep(0.05)
    process.kill()
    raise AssertionError("the node did not become ready")


class NodeExitedError(AssertionError):
    """A node process ended before it was ready (its error output is the message)."""


async def _send_to(instance: Bed, address: str, message: transport_pb2.SignedMessage) -> None:
    """``message`` to the transport port at ``address``, as SOC's server (mutual TLS)."""
    auth = instance.agencies[SOC].auth
    credentials = grpc.ssl_channel_credentials(
        root_certificates=instance.pki.trust_path.read_bytes(),
        private_key=auth.key_path.read_bytes(),
        certificate_chain=auth.cert_path.read_bytes(),
    )
    async with grpc.aio.secure_channel(address, credentials) as channel:
        exchange = channel.unary_unary(
            "/ruta.v1.Transport/Exchange",
            request_serializer=transport_pb2.SignedMessage.SerializeToString,
            response_deserializer=transport_pb2.SignedMessage.FromString,
        )
        await exchange(message, timeout=30)


@pytest.mark.postgres
async def test_two_nodes_of_one_server(tmp_path: Path, postgres_url: str) -> None:
    """Two nodes of POP's one server (``[server] node``) on one PostgreSQL: a message id taken on
    one is refused on the other, a third process with a name in use refuses to start, and
    either node exports verified evidence of both trees (one server key signs both)."""
    async with bed(tmp_path) as instance:
        node_a = await instance.spawn_server(
            POP, data=_provider_data(instance, POP, postgres_url, node="a")
        )
        nodes: list[subprocess.Popen[bytes]] = []
        try:
            # Node b: its own folder and ports, the server's keys (log key, body key) copied.
            b_dir = tmp_path / "pop-b"
            shutil.copytree(node_a.data_dir / "keys", b_dir / "data" / "keys")
            data_b = _provider_data(instance, POP, postgres_url, node="b")
            data_b["transport"] = {"listen": "127.0.0.1:0"}
            process_b, ready_b = await _spawn_node(b_dir, data_b)
            nodes.append(process_b)
            assert ready_b["origin"] == f"{POP}/b"

            # The same node name again: refused at start, the tree left alone.
            c_dir = tmp_path / "pop-c"
            shutil.copytree(node_a.data_dir / "keys", c_dir / "data" / "keys")
            data_c = _provider_data(instance, POP, postgres_url, node="a")
            data_c["transport"] = {"listen": "127.0.0.1:0"}
            with pytest.raises(NodeExitedError, match="already writes the log"):
                nodes.append((await _spawn_node(c_dir, data_c))[0])

            # A message taken on node a is a replay on node b.
            _, message = signed_request(instance)
            await _send_to(instance, node_a.addresses["transport"], message)
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await _send_to(instance, ready_b["transport"], message)
            assert fault_of(info.value) == "server.provider.replayed_message"
            for _ in range(3):
                await _send_to(instance, ready_b["transport"], signed_request(instance)[1])

            origins = {f"{POP}/a", f"{POP}/b"}
            await _wait_all_cosigned(postgres_url, origins)
            listed = await _list_logs(instance, node_a.addresses["audit"])
            assert listed == dict.fromkeys(origins, True)
            for origin in origins:
                report = await _export_and_verify(
                    instance,
                    node_a.addresses["audit"],
                    origin,
                    tmp_path / f"{origin.replace('/', '_')}.zip",
                )
                assert len(report.records) == (2 if origin.endswith("/a") else 6)
        finally:
            for process in nodes:
                if process.poll() is None:
                    process.send_signal(signal.SIGTERM)
                    await asyncio.to_thread(process.wait, 30)
