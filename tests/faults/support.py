"""What the fault scenarios share: a load of retried calls, a backend process that counts what
it was asked to do, and an auditor's reading of a stopped server's message log.

Scenarios never trust counters: what was acknowledged is what a caller saw answered, and what
was kept is what the log holds when read back after the fact (the tree recomputed from the
stored leaves, every stored checkpoint verified against it, consistency with the last checkpoint
taken before the fault).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import os
import random
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import grpc
import grpc.aio
import psycopg
import sqlalchemy as sa

from ruta.checkpoint import Verifier, open_checkpoint, verify_cosignature
from ruta.ids import ServerId
from ruta.merkle import root_from_leaf_hashes, verify_consistency
from sandbox.examples.population import decode_person, encode_get_person
from security_server.checkpointer import log_verifier
from security_server.database import open_database
from security_server.log import MessageLog, StoredRecord, load_or_create_body_key
from security_server.log.schema import log_checkpoints
from tests.conftest import free_port
from tests.integration.security_server.bed import Bed, call_metadata, fault_of, get_person

REPO_ROOT: Final = Path(__file__).resolve().parents[2]
#: Bound of one call attempt, end to end (a hung call fails the scenario by this deadline).
CALL_DEADLINE_SECONDS: Final = 10.0
#: How long a caller keeps retrying one logical call (same message id) before it gives up.
RETRY_WINDOW_SECONDS: Final = 20.0
#: Refusals saying an earlier attempt with the message id got through (docs/adr/0017).
ID_TAKEN: Final = frozenset({"client.reused_message_id", "server.provider.replayed_message"})
#: Pause between two attempts of one logical call.
RETRY_PAUSE_SECONDS: Final = 0.5

# --- load -----------------------------------------------------------------------------------------


@dataclass
class Outcome:
    """What the callers saw: message ids answered, and the fault of every refused attempt."""

    acknowledged: list[str] = field(default_factory=list)
    faults: collections.Counter[str] = field(default_factory=collections.Counter)
    abandoned: list[str] = field(default_factory=list)


async def call_once(
    channel: grpc.aio.Channel, message_id: str, *, deadline: float = CALL_DEADLINE_SECONDS
) -> None:
    """One GetPerson attempt carrying ``message_id``; raises the call's error."""
    metadata = call_metadata(extra=(("ruta-message-id", message_id),))
    raw = await get_person(channel)(
        encode_get_person("38001010001"), metadata=metadata, timeout=deadline
    )
    if decode_person(raw)["given_name"] != "Ana":
        raise AssertionError("answered with another person")


async def logical_call(
    channel: grpc.aio.Channel, outcome: Outcome, *, retry_window: float = RETRY_WINDOW_SECONDS
) -> None:
    """Call with a fresh message id, retrying the *same* id for ``retry_window`` seconds as a
    careful client does after a failure it cannot judge (so a retry is where a backend could act
    twice)."""
    message_id = str(uuid.uuid4())
    loop = asyncio.get_running_loop()
    give_up = loop.time() + retry_window
    while True:
        try:
            await call_once(channel, message_id)
        except grpc.aio.AioRpcError as error:
            fault = fault_of(error) or f"grpc.{error.code().name.lower()}"
            outcome.faults[fault] += 1
            # The id is taken already (an earlier attempt was logged by the consumer, or reached
            # the provider): retrying it cannot help.
            if fault in ID_TAKEN or loop.time() >= give_up:
                break
            await asyncio.sleep(RETRY_PAUSE_SECONDS)
            continue
        outcome.acknowledged.append(message_id)
        return
    outcome.abandoned.append(message_id)


async def run_load(
    channel: grpc.aio.Channel,
    *,
    calls: int,
    concurrency: int,
    outcome: Outcome,
    retry_window: float = RETRY_WINDOW_SECONDS,
) -> None:
    """``calls`` logical calls from ``concurrency`` workers."""
    queue = iter(range(calls))

    async def worker() -> None:
        for _ in queue:
            await logical_call(channel, outcome, retry_window=retry_window)

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def wait_until(outcome: Outcome, acknowledged: int, *, seconds: float = 120.0) -> None:
    """Wait until callers saw ``acknowledged`` answers (bounded)."""
    for _ in range(int(seconds / 0.02)):
        if len(outcome.acknowledged) >= acknowledged:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"only {len(outcome.acknowledged)} answers within {seconds} s")


def seeded(name: str) -> random.Random:
    """A random source for a scenario: the seed is ``RUTA_FAULT_SEED`` (printed on failure
    through the test's id) or a fixed one per scenario, so a failing run can be replayed."""
    seed = os.environ.get("RUTA_FAULT_SEED", name)
    return random.Random(f"{seed}:{name}")


# --- a backend process that counts ----------------------------------------------------------------


@dataclass
class CountingBackend:
    """The example population backend as a child process on a fixed port; each call it receives
    appends its ``ruta-message-id`` to :attr:`acted_file` before answering (an O_APPEND write,
    kept across a SIGKILL of the process)."""

    directory: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def acted_file(self) -> Path:
        return self.directory / "acted.txt"

    async def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        ready = self.directory / "ready.json"
        ready.unlink(missing_ok=True)
        self.process = subprocess.Popen(  # noqa: ASYNC220 - long-lived child, polled below
            [
                sys.executable,
                "-m",
                "tests.faults.backend_child",
                self.address,
                str(self.acted_file),
                str(ready),
            ],
            cwd=REPO_ROOT,
            stdout=subprocess.DEVNULL,
        )
        for _ in range(600):
            if ready.exists():
                return
            if self.process.poll() is not None:
                raise AssertionError("the counting backend exited")
            await asyncio.sleep(0.05)
        raise AssertionError("the counting backend did not become ready")

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def acted(self) -> collections.Counter[str]:
        """How many times the backend received each message id."""
        if not self.acted_file.exists():
            return collections.Counter()
        return collections.Counter(self.acted_file.read_text().split())


# --- reading a log after the fact -----------------------------------------------------------------


@dataclass(frozen=True)
class PriorCheckpoint:
    """The latest checkpoint a server had stored before a fault."""

    size: int
    root: bytes


@dataclass
class LogReading:
    """A server's log as read back and verified."""

    records: list[StoredRecord]
    checkpoints: int
    cosigned: int

    def count(self) -> collections.Counter[tuple[str, str, str]]:
        """(message id, direction, kind) -> records."""
        return collections.Counter(
            (r.message_id, r.direction.name, str(r.kind)) for r in self.records
        )


def sqlite_url(instance: Bed, server: ServerId) -> str:
    return f"sqlite+aiosqlite:///{instance.agencies[server].data_dir / 'messagelog.db'}"


async def latest_checkpoint(url: str, origin: str) -> PriorCheckpoint | None:
    """The latest stored checkpoint, read beside a running server (a separate connection)."""
    engine = await open_database(url)
    try:
        async with engine.connect() as conn:
            row = (
                await conn.execute(
                    sa.select(log_checkpoints.c.size, log_checkpoints.c.root)
                    .where(log_checkpoints.c.origin == origin)
                    .order_by(log_checkpoints.c.size.desc())
                    .limit(1)
                )
            ).first()
    finally:
        await engine.dispose()
    return None if row is None else PriorCheckpoint(size=row.size, root=bytes(row.root))


async def read_log(
    instance: Bed,
    server: ServerId,
    *,
    url: str | None = None,
    prior: PriorCheckpoint | None = None,
) -> LogReading:
    """Open ``server``'s (stopped) log and verify it: opening checks the stored tree against the
    stored head; the root recomputed from every stored leaf must equal the head; every stored
    checkpoint must carry the log key's signature over the root of the leaves at its size (and a
    valid witness cosignature where it has one); and the tree must be consistent with ``prior``.
    """
    agency = instance.agencies[server]
    origin = str(server)
    engine = await open_database(url or sqlite_url(instance, server))
    try:
        log = await MessageLog.open(
            engine, origin=origin, body_key=load_or_create_body_key(agency.data_dir / "keys")
        )
        try:
            size = log.size()
            records: list[StoredRecord] = []
            for start in range(0, size, 1000):
                records.extend(await log.get_records(list(range(start, min(size, start + 1000)))))
            if [r.seq for r in records] != list(range(size)):
                raise AssertionError(f"{server}: the stored leaves are not contiguous")
            hashes = [r.leaf_hash for r in records]
            head = log.head()
            if head.root != root_from_leaf_hashes(hashes):
                raise AssertionError(f"{server}: the head is not the root of the stored leaves")
            async with engine.connect() as conn:
                rows = (
                    await conn.execute(
                        sa.select(log_checkpoints).where(log_checkpoints.c.origin == origin)
                    )
                ).all()
            verifier = log_verifier(origin, instance.log_keys[server])
            witness: Verifier = instance.witness.verifier
            cosigned = 0
            for row in rows:
                checkpoint, verified = open_checkpoint(row.note, verifier)
                if checkpoint.size > size:
                    raise AssertionError(f"{server}: a checkpoint is ahead of the stored tree")
                if checkpoint.root != root_from_leaf_hashes(hashes[: checkpoint.size]):
                    raise AssertionError(f"{server}: checkpoint {checkpoint.size} is not the tree")
                if row.cosignature:
                    verify_cosignature(verified.text, row.cosignature, witness)
                    cosigned += 1
            if prior is not None and prior.size > 0:
                proof = await log.consistency_proof(prior.size)
                verify_consistency(prior.size, size, proof, prior.root, head.root)
            return LogReading(records=records, checkpoints=len(rows), cosigned=cosigned)
        finally:
            await log.close()
    finally:
        await engine.dispose()


def assert_acknowledged_in_both(
    acknowledged: list[str], consumer: LogReading, provider: LogReading
) -> None:
    """Every answered call is in both logs (request and response, each side), and no message id
    reached the provider twice."""
    sent = consumer.count()
    received = provider.count()
    missing = [
        m
        for m in acknowledged
        if not (
            sent[(m, "SENT", "request")] >= 1
            and sent[(m, "RECEIVED", "response")] == 1
            and received[(m, "RECEIVED", "request")] == 1
            and received[(m, "SENT", "response")] == 1
        )
    ]
    assert not missing, f"{len(missing)} acknowledged exchanges lack records, e.g. {missing[:3]}"
    twice = [k for k, n in received.items() if k[1] == "RECEIVED" and n > 1]
    assert not twice, f"the provider accepted a message id twice: {twice[:3]}"


# --- evidence -------------------------------------------------------------------------------------


def with_audit_port(instance: Bed, server: ServerId) -> dict[str, object]:
    """``server``'s settings with an audit port (for exports)."""
    data = instance.settings_dict(server)
    data["audit"] = {"listen": "127.0.0.1:0"}
    data["checkpoints"] = {"interval_seconds": 0.5}
    return data


async def wait_cosigned_all(instance: Bed, server: ServerId, *, seconds: float = 60.0) -> int:
    """Wait until ``server``'s latest cosigned checkpoint covers its whole log (no traffic)."""
    url = sqlite_url(instance, server)
    engine = await open_database(url)
    try:
        for _ in range(int(seconds / 0.1)):
            async with engine.connect() as conn:
                size = (
                    await conn.execute(
                        sa.text("SELECT size FROM log_heads WHERE origin = :o"),
                        {"o": str(server)},
                    )
                ).scalar()
                cosigned = (
                    await conn.execute(
                        sa.select(sa.func.max(log_checkpoints.c.size)).where(
                            log_checkpoints.c.origin == str(server),
                            log_checkpoints.c.cosignature.is_not(None),
                        )
                    )
                ).scalar()
            if size and cosigned == size:
                return int(size)
            await asyncio.sleep(0.1)
    finally:
        await engine.dispose()
    raise AssertionError(f"{server}: no cosigned checkpoint covers the log")


async def export_and_verify(instance: Bed, server: ServerId, out: Path) -> str:
    """Export ``server``'s whole log as an evidence bundle over its audit port (``ruta audit
    export``) and verify it offline, pinned to the anchor (``ruta audit verify``); returns the
    verifier's report. Raises AssertionError when either step fails. The commands run in a
    thread: the bed's OCSP responder, which the audit port asks about the auditor's
    certificate, answers on this event loop."""
    auditor = instance.pki.role("auditor-supervisor")
    address = instance.agencies[server].addresses["audit"]
    base = [sys.executable, "-c", "from ruta.cli import main; main()", "audit"]
    export = await asyncio.to_thread(
        subprocess.run,
        [
            *base,
            "export",
            "--address",
            address,
            "--cert",
            str(auditor.cert_path),
            "--key",
            str(auditor.key_path),
            "--ca",
            str(instance.pki.trust_path),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert export.returncode == 0, export.stdout + export.stderr
    verify = await asyncio.to_thread(
        subprocess.run,
        [*base, "verify", str(out), "--anchor", str(instance.anchor_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
    return verify.stdout


@contextlib.contextmanager
def reported(outcome: Outcome) -> Iterator[None]:
    """On failure, print what the callers saw (shown by pytest with the failure)."""
    try:
        yield
    except BaseException:
        print(
            json.dumps(
                {
                    "acknowledged": len(outcome.acknowledged),
                    "abandoned": len(outcome.abandoned),
                    "faults": dict(outcome.faults),
                }
            )
        )
        raise


# --- a private PostgreSQL cluster -----------------------------------------------------------------


def _postgres_bin() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    return found[-1].parent if found else None


def private_postgres_problem() -> str | None:
    """Why a private PostgreSQL cluster cannot be made here (None when it can)."""
    if _postgres_bin() is None:
        return "no PostgreSQL server binaries under /usr/lib/postgresql/*/bin"
    if os.geteuid() != 0:
        return "starting a private PostgreSQL cluster needs root (to run initdb as postgres)"
    return None


@dataclass
class PrivatePostgres:
    """A PostgreSQL cluster of the test's own (initdb into a temporary folder, run as the
    ``postgres`` user on a free loopback port), so restarting it touches no one else's tests."""

    directory: Path
    port: int = field(default_factory=free_port)

    def _run(self, *args: str, timeout: float = 120) -> None:
        done = subprocess.run(
            ["runuser", "-u", "postgres", "--", *args],
            check=False,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if done.returncode != 0:
            raise AssertionError(f"{Path(args[0]).name} failed: {done.stderr[-2000:]}")

    def _pg_ctl(self, *args: str) -> None:
        binary = _postgres_bin()
        assert binary is not None
        self._run(str(binary / "pg_ctl"), "-D", str(self.directory / "data"), *args)

    def init(self) -> None:
        binary = _postgres_bin()
        assert binary is not None
        self.directory.mkdir(parents=True)
        for folder in (self.directory.parent, self.directory):
            folder.chmod(0o755)  # the postgres user walks into it
        shutil.chown(self.directory, "postgres", "postgres")
        self._run(
            str(binary / "initdb"),
            "-D",
            str(self.directory / "data"),
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
        )
        self.start()

    def start(self) -> None:
        options = f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1"
        self._pg_ctl("-o", options, "-l", str(self.directory / "server.log"), "-w", "start")

    def stop(self, mode: str = "fast") -> None:
        self._pg_ctl("-m", mode, "-w", "stop")

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        with psycopg.connect(
            f"postgresql://postgres@127.0.0.1:{self.port}/postgres", autocommit=True
        ) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def destroy(self) -> None:
        with contextlib.suppress(subprocess.SubprocessError):
            self.stop("immediate")
        shutil.rmtree(self.directory, ignore_errors=True)


# --- a small filesystem ---------------------------------------------------------------------------


def small_filesystem_problem() -> str | None:
    """Why a small filesystem cannot be mounted here (None when it can)."""
    if os.geteuid() != 0:
        return "mounting a small filesystem needs root"
    return None


@contextlib.contextmanager
def small_filesystem(mountpoint: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` (e.g. ``8m``) mounted at ``mountpoint`` for the block; always
    unmounted after (lazily, should a process still hold a file there)."""
    mountpoint.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(mountpoint)],
        check=True,
        capture_output=True,
        timeout=30,
    )
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=False, timeout=30)


def fill(ballast: Path) -> int:
    """Write ``ballast`` until the filesystem is full; returns the bytes written."""
    written = 0
    chunk = b"\0" * 65536
    with open(ballast, "wb", buffering=0) as out:
        while True:
            try:
                written += out.write(chunk) or 0
            except OSError:
                break
    while True:  # the last bytes a whole chunk did not fit
        try:
            with open(ballast, "ab", buffering=0) as out:
                out.write(b"\0" * 512)
                written += 512
        except OSError:
            return written
