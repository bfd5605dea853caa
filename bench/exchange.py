"""The price of trust: the echo service called directly, then through a consumer and a provider
security server, by the same load generator, on this machine.

Set-up (every part real, as in the security-server integration tests, whose test bed this
reuses: ``tests/integration/security_server/bed.py``): a throwaway CA with a real OCSP responder,
a registry publisher serving a signed global configuration, a witness, the echo backend
(:mod:`bench.echo`, its own process) and two ``ruta ss serve`` processes, ``DEV/GOV/SOC/ss1``
(consumer) and ``DEV/GOV/POP/ss1`` (provider of ``bench.v1.Echo``), each signing, verifying and
logging every message durably (SQLite, WAL, ``synchronous=FULL``), with witness-cosigned
checkpoints. The CA, OCSP responder, registry and witness run in this harness process.

The relay floor: two bare pass-through relays (:mod:`bench.relay`, each its own process, no
signing, no logging, no checks) chained like the two servers, load generator -> relay 1
(plaintext loopback) -> mutual TLS -> relay 2 -> echo backend (plaintext loopback), with
throwaway certificates of their own. What the bus costs beyond them is the price of trust; what
they cost beyond direct is the price of the two extra hops.

Each case (payload, concurrency) runs the load generator (:mod:`bench.loadgen`, its own process)
three times, against the echo backend (direct), against relay 1 (relay; skipped with
``BenchConfig.relay`` false) and against the consumer server's port (bus), and records
throughput, latency percentiles, CPU seconds per exchange of every process (from
``/proc/PID/stat`` around the measured calls only) and each server's and relay's peak memory
(``VmHWM``).
At the end the servers are stopped and their message logs counted: every answered bus call must
be in both logs, twice (request and response).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import os
import platform
import re
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any, Final

import aiohttp

from bench.echo import ECHO_PATH, METHOD, SERVICE_NAME, file_descriptor_set
from bench.log_storage import exchange_log_storage
from ruta.ids import ServerId
from ruta.pki.testing import TestPki
from ruta.v1 import globalconf_pb2
from security_server.server import READY_FILE
from security_server.settings import DEFAULT_MAX_MESSAGE_BYTES
from tests.integration.security_server.bed import BENEFITS, POP, REGISTRY_SUBSYSTEM, SOC, Bed

__all__ = [
    "DEFAULT_CONCURRENCY",
    "DEFAULT_PAYLOADS",
    "BenchConfig",
    "run_exchange_bench",
]

REPO_ROOT: Final = Path(__file__).resolve().parent.parent
DEFAULT_PAYLOADS: Final = (512, 64 * 1024)
DEFAULT_CONCURRENCY: Final = (1, 16, 64)
ECHO_SERVICE: Final = REGISTRY_SUBSYSTEM.service(SERVICE_NAME)
PURPOSE: Final = "benchmark"
#: How long a process may take to write its ready file.
READY_TIMEOUT_SECONDS: Final = 60.0
#: How long one load-generator run may take before the harness gives up on it.
RUN_TIMEOUT_SECONDS: Final = 300.0
_CLK_TCK: Final = os.sysconf("SC_CLK_TCK")
#: Load-generator connections per consumer worker when the servers run several workers
#: (SO_REUSEPORT spreads connections, not calls, over the workers).
CHANNELS_PER_WORKER: Final = 4
#: The scale figure's callers in flight (issue 17: p99 at 1,000 concurrent callers).
SCALE_CONCURRENCY: Final = (1000,)
#: Calls of one scale case (as many again to warm up).
SCALE_CALLS: Final = 4000
#: Payload of the scale cases.
SCALE_PAYLOAD: Final = 512
#: The instruction count's fixed small run: 512 B, one caller, these calls after a warm-up.
INSTRUCTIONS_CALLS: Final = 200
INSTRUCTIONS_WARMUP: Final = 50
#: Checkpoints of the instruction count's run: once a minute (the most the setting allows),
#: so that work done per second of a slow run under callgrind is not counted per exchange.
INSTRUCTIONS_CHECKPOINT_INTERVAL_SECONDS: Final = 60.0
#: Servers under callgrind start ~30x slower.
INSTRUCTIONS_READY_TIMEOUT_SECONDS: Final = 600.0
#: Metrics of the server-to-server frames (per role: frames written, messages they carried).
_FRAMES: Final = re.compile(
    r'^ruta_transport_(frames|framed_messages)_total\{role="(consumer|provider)"\} (\S+)$',
    re.MULTILINE,
)


@dataclass(frozen=True)
class BenchConfig:
    """What to run. ``calls``/``warmup`` map a concurrency to a call count for 512 B payloads;
    larger payloads run ``large_fraction`` of them."""

    payloads: Sequence[int] = DEFAULT_PAYLOADS
    concurrency: Sequence[int] = DEFAULT_CONCURRENCY
    calls: Mapping[int, int] = field(default_factory=lambda: {1: 1000, 16: 4000, 64: 8000})
    warmup: Mapping[int, int] = field(default_factory=lambda: {1: 100, 16: 400, 64: 1000})
    large_fraction: float = 0.5
    workdir: Path | None = None
    #: Sample both security servers with py-spy during each measured bus run and write the
    #: collapsed stacks here (``consumer_ss-512-c64.txt`` ...; ``python -m bench.flame``); with
    #: the trust floor, its two relays too during its runs (``trust1-512-c1.txt`` ...).
    profile_dir: Path | None = None
    #: Also run every case through two bare relays (the relay floor; ``bench/relay.py``).
    relay: bool = True
    #: Also run every case through two trust relays (the trust floor: the relay floor plus only
    #: the signatures, verifications and durable commits the design requires;
    #: ``bench/trust_relay.py``). Needs ``relay``.
    trust_floor: bool = False
    #: The trust floor's link between its relays: ``unary`` (one call per exchange; the
    #: provider's response committed after it answers, nobody waits for it) or ``stream`` (one
    #: bidirectional stream, a durability notice per exchange that the consumer waits for
    #: before it answers, as the bus does).
    trust_floor_link: str = "unary"
    #: With ``trust_floor``: only these ``(payload, concurrency)`` cases run it (none given:
    #: every case). A full run (``make bench``) measures it at 512 B and concurrency 1 only, the
    #: case issue 17's c1 targets are read against; at c64 it is no floor (it does not batch).
    trust_floor_cases: Sequence[tuple[int, int]] = ()
    #: Worker processes per security server (``[server] workers``); above 1 the load generator
    #: opens :data:`CHANNELS_PER_WORKER` connections per worker, so the kernel spreads them.
    workers: int = 1
    #: Concurrencies of the scale cases (512 B, bus and direct): p99 with many callers.
    scale_concurrency: Sequence[int] = ()
    #: Calls (and warm-up calls) of each scale case.
    scale_calls: int = SCALE_CALLS

    def count(self, table: Mapping[int, int], payload: int, concurrency: int) -> int:
        base = table.get(concurrency, max(table.values()))
        if payload > 4096:
            base = int(base * self.large_fraction)
        return max(1, base)


# --- /proc readings ------------------------------------------------------------------------


def cpu_times(pid: int) -> tuple[float, float]:
    """User and system CPU seconds ``pid`` has used (all threads), from ``/proc/PID/stat``."""
    text = Path(f"/proc/{pid}/stat").read_text()
    # The command name (field 2) may contain spaces: split after its closing parenthesis.
    fields = text[text.rindex(")") + 2 :].split()
    return int(fields[11]) / _CLK_TCK, int(fields[12]) / _CLK_TCK


def machine_cpu_ticks() -> tuple[int, int]:
    """All CPUs' idle ticks (idle plus iowait) and total ticks so far, from ``/proc/stat``."""
    with open("/proc/stat") as stat:
        fields = [int(value) for value in stat.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal (guest time is counted in user already)
    return fields[3] + fields[4], sum(fields[:8])


def idle_share(before: tuple[int, int], after: tuple[int, int]) -> float:
    """The share of the machine's CPU time left idle between two :func:`machine_cpu_ticks`."""
    total = after[1] - before[1]
    return (after[0] - before[0]) / total if total > 0 else 0.0


def cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds ``pid`` has used (all threads)."""
    return sum(cpu_times(pid))


def peak_rss_mib(pid: int) -> float:
    """Peak resident memory of ``pid`` (``VmHWM``) in MiB; 0.0 if unknown."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def fsync_latency_ms(directory: Path, rounds: int = 50) -> float:
    """Median time of one 4 KiB write + fsync in ``directory`` (what a durable commit waits on)."""
    times = []
    fd, name = tempfile.mkstemp(dir=directory)
    try:
        for _ in range(rounds):
            os.write(fd, b"\0" * 4096)
            start = time.perf_counter()
            os.fsync(fd)
            times.append(time.perf_counter() - start)
    finally:
        os.close(fd)
        os.unlink(name)
    times.sort()
    return times[len(times) // 2] * 1e3


def machine_info(directory: Path) -> dict[str, Any]:
    """CPU model, cores, load, versions: what a reader needs to judge the numbers.

    A VM's model name alone can hide CPUs twice as fast as each other (two "AMD EPYC" VMs
    differed ~2.3x in every absolute figure, bench/README.md "Thirteenth session"): the CPU's
    family and model numbers are recorded with it."""
    cpu: dict[str, str] = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key in {"model name", "cpu family", "model"} and key not in cpu:
                cpu[key] = value.strip()
            elif not line.strip() and cpu:
                break  # the first processor's block is enough
    model = cpu.get("model name", "")

    def version(name: str) -> str:
        try:
            return importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            return ""

    return {
        "cpu_model": model,
        "cpu_family": cpu.get("cpu family", ""),
        "cpu_model_number": cpu.get("model", ""),
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "grpcio": version("grpcio"),
        "protobuf": version("protobuf"),
        "cryptography": version("cryptography"),
        "sqlalchemy": version("sqlalchemy"),
        "aiosqlite": version("aiosqlite"),
        "uvloop": version("uvloop"),
        "sqlite": sqlite3.sqlite_version,
        "load_average_at_start": list(os.getloadavg()),
        "fsync_p50_ms": round(fsync_latency_ms(directory), 3),
    }


# --- the instance --------------------------------------------------------------------------


class BenchBed(Bed):
    """The security-server test bed with the echo service published and mapped, production
    defaults for sizes and configuration fetches, and the consumer port on plaintext loopback
    (like the direct baseline's; server-to-server stays mutual TLS)."""

    echo_address = ""
    #: Worker processes per security server (``[server] workers``).
    workers = 1
    #: Run each server under this command (``valgrind ...`` for the instruction count).
    wrapper: tuple[str, ...] = ()
    #: How long a server may take to write its ready file.
    ready_timeout: float = READY_TIMEOUT_SECONDS
    #: ``[checkpoints] interval_seconds`` (None: the default, every second while the log grows).
    checkpoint_interval: float | None = None

    def configuration(self) -> globalconf_pb2.GlobalConfiguration:
        conf = super().configuration()
        conf.services.add(
            id=ECHO_SERVICE.to_proto(),
            methods=[METHOD],
            file_descriptor_set=file_descriptor_set(),
            description="Benchmark echo: answers with the request's bytes",
        )
        valid_from = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=1)
        contract = conf.contracts.add(
            contract_id="C-BENCH",
            consumer=BENEFITS.to_proto(),
            service=ECHO_SERVICE.to_proto(),
            methods=[METHOD],
            purpose=PURPOSE,
            legal_basis="Benchmark",
        )
        contract.valid_from.FromDatetime(valid_from)
        return conf

    def settings_dict(self, server: ServerId, **limits: Any) -> dict[str, Any]:
        data = super().settings_dict(
            server, **{"max_message_bytes": DEFAULT_MAX_MESSAGE_BYTES, **limits}
        )
        data["globalconf"]["fetch_interval_seconds"] = 60.0
        if self.workers > 1:
            data["server"] = {"workers": self.workers}
        if self.checkpoint_interval is not None:
            data["checkpoints"] = {
                **data.get("checkpoints", {}),
                "interval_seconds": self.checkpoint_interval,
            }
        if server == SOC:
            data["consumer"] = {
                "listen": "127.0.0.1:0",
                "allow_plain_loopback": True,
                "plain_loopback_subsystems": [str(BENEFITS)],
            }
        if server == POP:
            data["backends"] = [
                *data.get("backends", []),
                {"service": str(ECHO_SERVICE), "address": self.echo_address},
            ]
        return data

    async def spawn(self, server: ServerId) -> dict[str, Any]:
        """Run ``server`` as ``ruta ss serve``; wait until it is ready."""
        agency = self.agencies[server]
        config = self.write_settings(server)
        ready = agency.data_dir / READY_FILE
        ready.unlink(missing_ok=True)
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with open(agency.directory / "stderr.log", "ab") as stderr:  # noqa: ASYNC230 - setup
            agency.process = subprocess.Popen(  # noqa: ASYNC220 - a long-lived child
                [
                    *self.wrapper,
                    sys.executable,
                    "-m",
                    "ruta",
                    "--log-level",
                    "warning",
                    "ss",
                    "serve",
                    "--config",
                    str(config),
                ],
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                env=env,
                cwd=REPO_ROOT,
            )
        await _wait_ready(
            ready, agency.process, agency.directory / "stderr.log", within=self.ready_timeout
        )
        agency.addresses = json.loads(ready.read_text())
        return agency.addresses


def _server_pids(name: str, ready: Mapping[str, Any]) -> dict[str, int]:
    """The processes of one server to watch: the server itself, or its supervisor and each
    worker (``NAME/w<i>``; :func:`_run_load` adds them up under ``NAME``)."""
    workers = ready.get("workers")
    if not workers:
        return {name: int(ready["pid"])}
    return {
        f"{name}/supervisor": int(ready["pid"]),
        **{f"{name}/w{i}": int(w["pid"]) for i, w in enumerate(workers)},
    }


def _with_totals(per_process: dict[str, float]) -> dict[str, float]:
    """``per_process`` plus, for each server run as workers (``NAME/...``), their sum as
    ``NAME``: CPU per exchange of the node as a whole."""
    out = dict(per_process)
    for name, value in per_process.items():
        if "/" in name:
            server = name.split("/", 1)[0]
            out[server] = out.get(server, 0.0) + value
    return out


def _tail(path: Path) -> str:
    return path.read_text(errors="replace")[-3000:] if path.exists() else ""


async def _wait_ready(
    ready: Path,
    process: subprocess.Popen[bytes],
    stderr: Path,
    *,
    within: float = READY_TIMEOUT_SECONDS,
) -> None:
    deadline = time.monotonic() + within
    while not os.path.exists(ready):  # noqa: ASYNC240 - a stat while polling a child
        if process.poll() is not None:
            tail = _tail(stderr)
            raise RuntimeError(f"process {process.args!r} exited early:\n{tail}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"process {process.args!r} did not become ready")
        await asyncio.sleep(0.05)


@contextlib.contextmanager
def _process_group(argv: Sequence[str], *, stderr: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Start ``argv`` in its own process group; on exit SIGTERM the group, then SIGKILL it."""
    with open(stderr, "ab") as err:
        process = subprocess.Popen(
            list(argv), stdout=subprocess.DEVNULL, stderr=err, start_new_session=True, cwd=REPO_ROOT
        )
    try:
        yield process
    finally:
        _stop_group(process)


def _stop_group(process: subprocess.Popen[Any]) -> None:
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()


# --- one run of the load generator ---------------------------------------------------------


@dataclass(frozen=True)
class RunResult:
    load: dict[str, Any]
    cpu_per_call_ms: dict[str, float]
    sys_per_call_ms: dict[str, float]
    #: The share of the whole machine's CPU left idle during the measured calls (all cores;
    #: other processes on the machine count as busy).
    idle_share: float = 0.0


async def _run_load(
    *,
    target: str,
    metadata: Sequence[tuple[str, str]],
    payload: int,
    concurrency: int,
    calls: int,
    warmup: int,
    watched: Mapping[str, int],
    stderr: Path,
    sample: Mapping[str, Path] | None = None,
    channels: int = 1,
    count_instructions: Sequence[int] = (),
    on_warm: Callable[[], Awaitable[object]] | None = None,
) -> RunResult:
    """One load-generator process against ``target``; CPU of ``watched`` processes (and of the
    generator itself) is read right before and right after the measured calls. Processes running
    under callgrind whose pids are in ``count_instructions`` count instructions only during the
    measured calls. ``on_warm`` is awaited after the warm-up, before the CPU is first read."""
    argv = [
        sys.executable,
        "-m",
        "bench.loadgen",
        "--target",
        target,
        "--path",
        ECHO_PATH,
        "--payload",
        str(payload),
        "--concurrency",
        str(concurrency),
        "--calls",
        str(calls),
        "--warmup",
        str(warmup),
        "--channels",
        str(channels),
    ]
    for key, value in metadata:
        argv += ["--metadata", f"{key}={value}"]
    with open(stderr, "ab") as err:  # noqa: ASYNC230 - opening a log file for a child
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=err,
            cwd=REPO_ROOT,
            start_new_session=True,
        )
    samplers: list[asyncio.subprocess.Process] = []
    try:
        assert process.stdin is not None
        assert process.stdout is not None
        async with asyncio.timeout(RUN_TIMEOUT_SECONDS):
            warm = json.loads(await _line(process.stdout))
            if warm.get("event") != "warm":
                raise RuntimeError(f"load generator said {warm!r}")
            pids = dict(watched)
            if on_warm is not None:
                await on_warm()
            samplers += await _start_samplers(watched, sample or {}, stderr)
            await _callgrind("--instr=on", count_instructions)
            before = {name: cpu_times(pid) for name, pid in pids.items()}
            ticks_before = machine_cpu_ticks()
            process.stdin.write(b"go\n")
            await process.stdin.drain()
            done = json.loads(await _line(process.stdout))
            ticks_after = machine_cpu_ticks()
            after = {name: cpu_times(pid) for name, pid in pids.items()}
            await _callgrind("--instr=off", count_instructions)
            await process.wait()
    finally:
        await _stop_samplers(samplers)
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
    ok = max(1, int(done["ok"]))
    # The load generator reports its own CPU: it may have exited before /proc could be read.
    before["loadgen"] = (0.0, 0.0)
    after["loadgen"] = (float(done["cpu_user_s"]), float(done["cpu_sys_s"]))
    names = [*pids, "loadgen"]
    cpu = _with_totals({name: (sum(after[name]) - sum(before[name])) / ok * 1e3 for name in names})
    kernel = _with_totals({name: (after[name][1] - before[name][1]) / ok * 1e3 for name in names})
    done["warmup_ok"] = warm["ok"]
    done["warmup_errors"] = warm["errors"]
    done["error_samples"] = [*warm["error_samples"], *done["error_samples"]]
    return RunResult(
        load=done,
        cpu_per_call_ms=cpu,
        sys_per_call_ms=kernel,
        idle_share=idle_share(ticks_before, ticks_after),
    )


async def _callgrind(option: str, pids: Sequence[int]) -> None:
    """``callgrind_control OPTION PID`` for each of ``pids`` (processes under callgrind)."""
    for pid in pids:
        control = await asyncio.create_subprocess_exec(
            "callgrind_control",
            option,
            str(pid),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        if await control.wait() != 0:
            raise RuntimeError(f"callgrind_control {option} {pid} failed")


async def _start_samplers(
    watched: Mapping[str, int], sample: Mapping[str, Path], stderr: Path
) -> list[asyncio.subprocess.Process]:
    """One ``py-spy record`` per process named in ``sample``, attached before the measured calls
    (a SIGINT makes each write its collapsed stacks)."""
    if not sample:
        return []
    py_spy = Path(sys.executable).with_name("py-spy")
    samplers = []
    for name, path in sample.items():
        with open(stderr, "ab") as err:  # noqa: ASYNC230 - opening a log file for a child
            samplers.append(
                await asyncio.create_subprocess_exec(
                    str(py_spy),
                    "record",
                    "--pid",
                    str(watched[name]),
                    "--rate",
                    "250",
                    "--format",
                    "raw",
                    "--threads",
                    "--nonblocking",
                    "--output",
                    str(path),
                    stdout=asyncio.subprocess.DEVNULL,
                    stderr=err,
                    start_new_session=True,
                )
            )
    await asyncio.sleep(1.0)  # py-spy needs a moment to attach
    return samplers


async def _stop_samplers(samplers: Sequence[asyncio.subprocess.Process]) -> None:
    for sampler in samplers:
        if sampler.returncode is None:
            sampler.send_signal(signal.SIGINT)
    for sampler in samplers:
        try:
            async with asyncio.timeout(30):
                await sampler.wait()
        except TimeoutError:
            sampler.kill()
            await sampler.wait()


async def _line(stream: asyncio.StreamReader) -> str:
    line = await stream.readline()
    if not line:
        raise RuntimeError("the load generator exited without a result (see loadgen.log)")
    return line.decode()


# --- the whole benchmark -------------------------------------------------------------------


@contextlib.asynccontextmanager
async def _relays(directory: Path, echo_address: str) -> AsyncIterator[tuple[str, dict[str, int]]]:
    """Relay 2 (mutual TLS server, forwarding to the echo backend in plaintext) and relay 1
    (plaintext loopback server, calling relay 2 with a client certificate), each in its own
    process group; yields relay 1's address and both pids. Stops both, whatever happens."""
    pki = TestPki(directory / "relay-pki")
    first = pki.auth("DEV/GOV/SOC/relay1")
    second = pki.auth("DEV/GOV/POP/relay2")
    log = directory / "relay.log"
    pids: dict[str, int] = {}
    with contextlib.ExitStack() as stack:
        address = echo_address
        for name, tls in (
            (
                "relay2",
                [
                    *("--tls-cert", str(second.cert_path), "--tls-key", str(second.key_path)),
                    *("--tls-client-ca", str(pki.trust_path)),
                ],
            ),
            (
                "relay1",
                [
                    *("--target-ca", str(pki.trust_path), "--target-cert", str(first.cert_path)),
                    *("--target-key", str(first.key_path)),
                ],
            ),
        ):
            ready = directory / f"{name}.ready.json"
            ready.unlink(missing_ok=True)
            argv = [sys.executable, "-m", "bench.relay", "--listen", "127.0.0.1:0"]
            argv += ["--target", address, "--ready-file", str(ready), *tls]
            process = stack.enter_context(_process_group(argv, stderr=log))
            await _wait_ready(ready, process, log)
            address = json.loads(ready.read_text())["address"]
            pids[name] = process.pid
        yield address, pids


@dataclass(frozen=True)
class TrustFloor:
    """The two trust relays :func:`_trust_relays` started: trust relay 1's address, each
    relay's pid, stages file and log file (by ``trust1``, ``trust2``)."""

    address: str
    pids: dict[str, int]
    stages_files: dict[str, Path]
    logs: dict[str, Path]

    async def drain_stages(self) -> dict[str, dict[str, dict[str, float]]]:
        """Each relay's stage medians since the last drain (SIGUSR1; see
        :mod:`bench.trust_relay`)."""
        for name, pid in self.pids.items():
            self.stages_files[name].unlink(missing_ok=True)
            os.kill(pid, signal.SIGUSR1)
        found: dict[str, dict[str, dict[str, float]]] = {}
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        for name, path in self.stages_files.items():
            while not os.path.exists(path):  # noqa: ASYNC240 - a stat while polling a child
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{name} wrote no stages file")
                await asyncio.sleep(0.01)
            found[name] = json.loads(path.read_text())
        return found

    def logged(self) -> dict[str, int]:
        """Records in each relay's log and replay claims in trust relay 2's (read once the
        relays have stopped)."""
        counts: dict[str, int] = {}
        for name, db in self.logs.items():
            with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
                counts[name] = int(conn.execute("SELECT count(*) FROM records").fetchone()[0])
                if name == "trust2":
                    claims = conn.execute("SELECT count(*) FROM claims").fetchone()[0]
                    counts["trust2_claims"] = int(claims)
        return counts


@contextlib.asynccontextmanager
async def _trust_relays(
    directory: Path, echo_address: str, link: str = "unary"
) -> AsyncIterator[TrustFloor]:
    """Trust relay 2 (``provider``: mutual TLS server, calling the echo backend in plaintext)
    and trust relay 1 (``consumer``: plaintext loopback server, calling relay 2 with a client
    certificate), each in its own process group, with throwaway TLS and signing certificates
    (``trust-pki/``) and their logs in ``directory``. Stops both, whatever happens."""
    pki = TestPki(directory / "trust-pki")
    first, second = pki.auth("DEV/GOV/SOC/trust1"), pki.auth("DEV/GOV/POP/trust2")
    signers = {"trust1": pki.sign("DEV/GOV/SOC"), "trust2": pki.sign("DEV/GOV/POP")}
    log = directory / "trust-relay.log"
    pids: dict[str, int] = {}
    stages = {name: directory / f"{name}.stages.json" for name in signers}
    logs = {name: directory / f"{name}.db" for name in signers}
    with contextlib.ExitStack() as stack:
        address = echo_address
        for name, role, peer, tls in (
            (
                "trust2",
                "provider",
                "trust1",
                [
                    *("--tls-cert", str(second.cert_path), "--tls-key", str(second.key_path)),
                    *("--tls-client-ca", str(pki.trust_path)),
                ],
            ),
            (
                "trust1",
                "consumer",
                "trust2",
                [
                    *("--target-ca", str(pki.trust_path), "--target-cert", str(first.cert_path)),
                    *("--target-key", str(first.key_path)),
                ],
            ),
        ):
            ready = directory / f"{name}.ready.json"
            ready.unlink(missing_ok=True)
            logs[name].unlink(missing_ok=True)
            argv = [sys.executable, "-m", "bench.trust_relay", "--role", role, "--link", link]
            argv += ["--listen", "127.0.0.1:0", "--target", address, "--ready-file", str(ready)]
            argv += ["--sign-key", str(signers[name].key_path)]
            argv += ["--peer-cert", str(signers[peer].cert_path)]
            argv += ["--log", str(logs[name]), "--stages-file", str(stages[name]), *tls]
            process = stack.enter_context(_process_group(argv, stderr=log))
            await _wait_ready(ready, process, log)
            address = json.loads(ready.read_text())["address"]
            pids[name] = process.pid
        yield TrustFloor(address=address, pids=pids, stages_files=stages, logs=logs)


@dataclass(frozen=True)
class Running:
    """What :func:`_instance` started: the bed (with both servers), the echo backend's pid,
    relay 1's address and both relays' pids (empty without the relay floor), and the trust
    floor's relays (None without it)."""

    bed: BenchBed
    echo_pid: int
    relay_address: str
    relay_pids: dict[str, int]
    trust: TrustFloor | None = None


@contextlib.asynccontextmanager
async def _instance(
    directory: Path, config: BenchConfig, *, wrapper: Sequence[str] = ()
) -> AsyncIterator[Running]:
    """The bed with the echo backend, the two relays (unless ``config.relay`` is false) and both
    servers running (each under ``wrapper``, if any). Stops every process it started, whatever
    happens."""
    instance = BenchBed(directory)
    instance.workers = config.workers
    if wrapper:
        instance.wrapper = tuple(wrapper)
        instance.ready_timeout = INSTRUCTIONS_READY_TIMEOUT_SECONDS
        # Work done per second, not per exchange, would be counted by how slow the run was.
        instance.checkpoint_interval = INSTRUCTIONS_CHECKPOINT_INTERVAL_SECONDS
    try:
        await instance.build()
        ready = directory / "echo.ready.json"
        with _process_group(
            [sys.executable, "-m", "bench.echo", "--ready-file", str(ready)],
            stderr=directory / "echo.log",
        ) as echo:
            await _wait_ready(ready, echo, directory / "echo.log")
            instance.echo_address = json.loads(ready.read_text())["address"]
            async with contextlib.AsyncExitStack() as relays:
                relay_address, relay_pids = (
                    await relays.enter_async_context(_relays(directory, instance.echo_address))
                    if config.relay
                    else ("", {})
                )
                trust = (
                    await relays.enter_async_context(
                        _trust_relays(directory, instance.echo_address, config.trust_floor_link)
                    )
                    if config.trust_floor
                    else None
                )
                instance.publish()
                for server in (POP, SOC):
                    await instance.spawn(server)
                yield Running(instance, echo.pid, relay_address, relay_pids, trust)
    finally:
        await instance.close()


def _relay_fields(direct: RunResult, relay: RunResult, bus: RunResult) -> dict[str, Any]:
    """The relay floor's columns of a case row: the hops' price (relay vs direct) and trust's
    price (bus vs relay)."""
    d, r, b = direct.load, relay.load, bus.load
    return {
        "relay_rps": round(r["rps"], 1),
        "relay_ratio": round(r["rps"] / d["rps"], 3) if d["rps"] else 0.0,
        "relay_p50_ms": round(r["p50_ms"], 3),
        "relay_added_p50_ms": round(r["p50_ms"] - d["p50_ms"], 3),
        "relay_p99_ms": round(r["p99_ms"], 3),
        "relay_errors": r["errors"],
        "relay_warmup_errors": r["warmup_errors"],
        "relay_error_samples": r["error_samples"],
        "trust_ratio": round(b["rps"] / r["rps"], 3) if r["rps"] else 0.0,
        "trust_added_p50_ms": round(b["p50_ms"] - r["p50_ms"], 3),
    }


def _trust_floor_fields(
    relay: RunResult,
    trust: RunResult,
    bus: RunResult,
    stages: Mapping[str, Mapping[str, Mapping[str, float]]],
) -> dict[str, Any]:
    """The trust floor's columns of a case row: what the irreducible trust work costs on top
    of the relay floor, and how far the bus is above it."""
    r, t, b = relay.load, trust.load, bus.load
    return {
        "trust_floor_rps": round(t["rps"], 1),
        "trust_floor_p50_ms": round(t["p50_ms"], 3),
        "trust_floor_p99_ms": round(t["p99_ms"], 3),
        "trust_floor_added_p50_ms": round(t["p50_ms"] - r["p50_ms"], 3),
        "trust_floor_ratio": round(t["rps"] / r["rps"], 3) if r["rps"] else 0.0,
        "bus_above_trust_floor_p50_ms": round(b["p50_ms"] - t["p50_ms"], 3),
        "bus_trust_floor_ratio": round(b["rps"] / t["rps"], 3) if t["rps"] else 0.0,
        "trust_floor_errors": t["errors"],
        "trust_floor_warmup_errors": t["warmup_errors"],
        "trust_floor_error_samples": t["error_samples"],
        "trust_floor_stages_us": {name: dict(found) for name, found in stages.items()},
    }


def _case_row(
    payload: int,
    concurrency: int,
    direct: RunResult,
    bus: RunResult,
    memory: dict[str, float],
    relay: RunResult | None = None,
) -> dict[str, Any]:
    d, b = direct.load, bus.load
    row = {
        "payload": payload,
        "concurrency": concurrency,
        "calls": b["calls"],
        "direct_rps": round(d["rps"], 1),
        "bus_rps": round(b["rps"], 1),
        "ratio": round(b["rps"] / d["rps"], 3) if d["rps"] else 0.0,
        "direct_p50_ms": round(d["p50_ms"], 3),
        "bus_p50_ms": round(b["p50_ms"], 3),
        "added_p50_ms": round(b["p50_ms"] - d["p50_ms"], 3),
        "direct_p99_ms": round(d["p99_ms"], 3),
        "bus_p99_ms": round(b["p99_ms"], 3),
        "added_p99_ms": round(b["p99_ms"] - d["p99_ms"], 3),
        "direct_errors": d["errors"],
        "bus_errors": b["errors"],
        "warmup_errors": d["warmup_errors"] + b["warmup_errors"],
        "error_samples": [*d["error_samples"], *b["error_samples"]],
        "cpu_ms_per_exchange": {
            # Each security server under a stable name (issue 17), as in "bus".
            "consumer_ss": round(bus.cpu_per_call_ms["consumer_ss"], 4),
            "provider_ss": round(bus.cpu_per_call_ms["provider_ss"], 4),
            "direct": {k: round(v, 4) for k, v in direct.cpu_per_call_ms.items()},
            "bus": {k: round(v, 4) for k, v in bus.cpu_per_call_ms.items()},
        },
        "of_which_kernel_ms": {
            "direct": {k: round(v, 4) for k, v in direct.sys_per_call_ms.items()},
            "bus": {k: round(v, 4) for k, v in bus.sys_per_call_ms.items()},
        },
        "peak_rss_mib": {k: round(v, 1) for k, v in memory.items()},
        # How much of the machine stayed idle while each ran (a CPU-bound run leaves ~0).
        "idle_share": {"direct": round(direct.idle_share, 3), "bus": round(bus.idle_share, 3)},
    }
    if relay is not None:
        row.update(_relay_fields(direct, relay, bus))
        row["cpu_ms_per_exchange"]["relay"] = {
            k: round(v, 4) for k, v in relay.cpu_per_call_ms.items()
        }
        row["of_which_kernel_ms"]["relay"] = {
            k: round(v, 4) for k, v in relay.sys_per_call_ms.items()
        }
        row["idle_share"]["relay"] = round(relay.idle_share, 3)
    return row


def _add_trust_floor(
    row: dict[str, Any],
    relay: RunResult,
    trust: RunResult,
    bus: RunResult,
    stages: Mapping[str, Mapping[str, Mapping[str, float]]],
) -> None:
    """The trust floor's fields (:func:`_trust_floor_fields`, its CPU per exchange and idle
    share) added to a case row."""
    row.update(_trust_floor_fields(relay, trust, bus, stages))
    row["cpu_ms_per_exchange"]["trust_floor"] = {
        k: round(v, 4) for k, v in trust.cpu_per_call_ms.items()
    }
    row["of_which_kernel_ms"]["trust_floor"] = {
        k: round(v, 4) for k, v in trust.sys_per_call_ms.items()
    }
    row["idle_share"]["trust_floor"] = round(trust.idle_share, 3)


def _count_logged(db: Path) -> int:
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        row = conn.execute("SELECT count(*) FROM log_leaves").fetchone()
        return int(row[0])


async def _frames(metrics_url: str) -> dict[str, float]:
    """The frames counters a server's ``/metrics`` shows, by ``ROLE_frames`` and
    ``ROLE_messages`` (requests or results carried)."""
    try:
        async with aiohttp.ClientSession() as session, session.get(metrics_url) as reply:
            text = await reply.text()
    except (aiohttp.ClientError, OSError):
        return {}  # a figure missing from the row, not a failed run
    found: dict[str, float] = {}
    for kind, role, value in _FRAMES.findall(text):
        found[f"{role}_{'frames' if kind == 'frames' else 'messages'}"] = float(value)
    return found


async def _frames_of(*servers: Mapping[str, Any]) -> dict[str, float]:
    """:func:`_frames` of each server that serves metrics (its ready file's ``metrics``)."""
    found: dict[str, float] = {}
    for server in servers:
        if "metrics" in server:
            found.update(await _frames(server["metrics"]))
    return found


def _per_frame(before: Mapping[str, float], after: Mapping[str, float], role: str) -> float:
    frames = after.get(f"{role}_frames", 0.0) - before.get(f"{role}_frames", 0.0)
    messages = after.get(f"{role}_messages", 0.0) - before.get(f"{role}_messages", 0.0)
    return round(messages / frames, 2) if frames else 0.0


async def run_exchange_bench(config: BenchConfig, *, progress: Any = print) -> dict[str, Any]:
    """Run every case, then the scale cases; return ``{"machine", "setup", "cases", "scale",
    "logged"}`` (see the README)."""
    with contextlib.ExitStack() as stack:
        if config.workdir is None:
            directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ruta-bench-")))
        else:
            directory = config.workdir
            directory.mkdir(parents=True, exist_ok=True)
        machine = machine_info(directory)
        cases: list[dict[str, Any]] = []
        scale: list[dict[str, Any]] = []
        bus_calls = 0
        started = time.monotonic()
        async with _instance(directory, config) as running:
            instance, echo_pid = running.bed, running.echo_pid
            relay_address, relay_pids = running.relay_address, running.relay_pids
            watched_relay = {"backend": echo_pid, **relay_pids}
            trust_floor = running.trust
            trust_calls = 0
            consumer = instance.agencies[SOC].addresses
            provider = instance.agencies[POP].addresses
            watched_direct = {"backend": echo_pid}
            watched_bus = {
                "backend": echo_pid,
                **_server_pids("consumer_ss", consumer),
                **_server_pids("provider_ss", provider),
                "harness": os.getpid(),
            }
            metadata = (
                ("ruta-client", str(BENEFITS)),
                ("ruta-service", str(REGISTRY_SUBSYSTEM)),
                ("ruta-purpose", PURPOSE),
            )
            # The cases, then the scale cases (direct and bus only, many callers).
            runs = [
                (
                    cases,
                    payload,
                    concurrency,
                    config.count(config.calls, payload, concurrency),
                    config.count(config.warmup, payload, concurrency),
                    config.relay,
                )
                for payload in config.payloads
                for concurrency in config.concurrency
            ] + [
                (scale, SCALE_PAYLOAD, concurrency, config.scale_calls, config.scale_calls, False)
                for concurrency in config.scale_concurrency
            ]
            for rows, payload, concurrency, calls, warmup, relayed in runs:
                log = directory / "loadgen.log"
                direct = await _run_load(
                    target=instance.echo_address,
                    metadata=(),
                    watched=watched_direct,
                    payload=payload,
                    concurrency=concurrency,
                    calls=calls,
                    warmup=warmup,
                    stderr=log,
                )
                relay = (
                    await _run_load(
                        target=relay_address,
                        metadata=(),
                        watched=watched_relay,
                        payload=payload,
                        concurrency=concurrency,
                        calls=calls,
                        warmup=warmup,
                        stderr=log,
                    )
                    if relayed
                    else None
                )
                trust: RunResult | None = None
                stages: dict[str, dict[str, dict[str, float]]] = {}
                if (
                    relayed
                    and trust_floor is not None
                    and (
                        not config.trust_floor_cases
                        or (payload, concurrency) in config.trust_floor_cases
                    )
                ):
                    trust = await _run_load(
                        target=trust_floor.address,
                        metadata=(),
                        watched={"backend": echo_pid, **trust_floor.pids},
                        sample=(
                            {
                                name: config.profile_dir / f"{name}-{payload}-c{concurrency}.txt"
                                for name in trust_floor.pids
                            }
                            if config.profile_dir is not None
                            else None
                        ),
                        payload=payload,
                        concurrency=concurrency,
                        calls=calls,
                        warmup=warmup,
                        stderr=log,
                        on_warm=trust_floor.drain_stages,  # the warm-up's stages dropped
                    )
                    stages = await trust_floor.drain_stages()
                    trust_calls += trust.load["ok"] + trust.load["warmup_ok"]
                sample = (
                    {
                        name: config.profile_dir
                        / f"{name.replace('/', '-')}-{payload}-c{concurrency}.txt"
                        for name in watched_bus
                        if name.split("/")[0] in ("consumer_ss", "provider_ss")
                        and not name.endswith("/supervisor")
                    }
                    if config.profile_dir is not None
                    else None
                )
                frames_before = await _frames_of(consumer, provider)
                bus = await _run_load(
                    channels=CHANNELS_PER_WORKER * config.workers if config.workers > 1 else 1,
                    target=consumer["consumer"],
                    metadata=metadata,
                    watched=watched_bus,
                    sample=sample,
                    payload=payload,
                    concurrency=concurrency,
                    calls=calls,
                    warmup=warmup,
                    stderr=log,
                )
                frames_after = await _frames_of(consumer, provider)
                bus_calls += bus.load["ok"] + bus.load["warmup_ok"]
                trust_pids = trust_floor.pids if trust_floor is not None else {}
                memory = _with_totals(
                    {
                        name: peak_rss_mib(pid)
                        for name, pid in {**watched_bus, **relay_pids, **trust_pids}.items()
                        if name != "harness"
                    }
                )
                row = _case_row(payload, concurrency, direct, bus, memory, relay)
                if relay is not None and trust is not None:
                    _add_trust_floor(row, relay, trust, bus, stages)
                # How full the server-to-server frames ran (warm-up included): requests per
                # frame written by the consumer, results per frame written by the provider.
                row["messages_per_frame"] = {
                    role: _per_frame(frames_before, frames_after, role)
                    for role in ("consumer", "provider")
                }
                rows.append(row)
                errors = [
                    *row["error_samples"],
                    *row.get("relay_error_samples", []),
                    *row.get("trust_floor_error_samples", []),
                ]
                progress(
                    f"payload {payload:>6} B  concurrency {concurrency:>3}: "
                    f"direct {row['direct_rps']:>8.1f}/s p50 {row['direct_p50_ms']:.2f} ms   "
                    + (
                        f"relay {row['relay_rps']:>8.1f}/s p50 {row['relay_p50_ms']:.2f} ms   "
                        if relay is not None
                        else ""
                    )
                    + (
                        f"trust floor {row['trust_floor_rps']:>8.1f}/s "
                        f"p50 {row['trust_floor_p50_ms']:.2f} ms "
                        f"(+{row['trust_floor_added_p50_ms']:.2f})   "
                        if trust is not None
                        else ""
                    )
                    + f"bus {row['bus_rps']:>8.1f}/s p50 {row['bus_p50_ms']:.2f} ms "
                    f"p99 {row['bus_p99_ms']:.2f} ms   "
                    f"ratio {row['ratio']:.2f}  added p50 {row['added_p50_ms']:.2f} ms"
                    + (
                        f"  relay ratio {row['relay_ratio']:.2f}  bus/relay "
                        f"{row['trust_ratio']:.2f}"
                        if relay is not None
                        else ""
                    )
                    + f"  cpu ms consumer_ss {row['cpu_ms_per_exchange']['consumer_ss']:.3f} "
                    f"provider_ss {row['cpu_ms_per_exchange']['provider_ss']:.3f}"
                    + (f"  ERRORS {errors}" if errors else "")
                )
        # The servers are stopped now (logs flushed): every bus call must be in both logs.
        logged = {
            str(server): _count_logged(instance.agencies[server].data_dir / "messagelog.db")
            for server in (SOC, POP)
        }
        # What each log costs per record and per million exchanges, bodies excluded.
        log_storage = {
            name: exchange_log_storage(instance.agencies[server].data_dir / "messagelog.db")
            for name, server in (("consumer_ss", SOC), ("provider_ss", POP))
        }
        machine["load_average_at_end"] = list(os.getloadavg())
        extra: dict[str, Any] = {}
        if trust_floor is not None:
            # Stopped too: every answered call's two records in each trust relay's log, and one
            # replay claim per call in relay 2's.
            extra["trust_floor_logged"] = {
                "expected_per_log": 2 * trust_calls,
                "expected_claims": trust_calls,
                **trust_floor.logged(),
            }
        return {
            "machine": machine,
            "setup": {
                "recorded_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
                "duration_s": round(time.monotonic() - started, 1),
                "backend": f"bench.echo ({SERVICE_NAME}), its own process, plaintext loopback",
                "load_generator": "bench.loadgen, its own process, grpc.aio, one channel",
                "bus": (
                    "consumer ss (plaintext loopback port) -> mTLS -> provider ss -> backend; "
                    "ECDSA P-256 signatures with stapled OCSP, full verification, SQLite WAL "
                    "synchronous=FULL message logs with group commit, witness cosigned checkpoints"
                ),
                "relay": (
                    "relay floor: relay1 (plaintext loopback port) -> mTLS -> relay2 -> "
                    "backend; bench.relay, bare grpc.aio pass-through of raw bytes on uvloop, "
                    "no signing, no logging, no checks"
                    if config.relay
                    else "not run (--no-relay)"
                ),
                "trust_floor": (
                    "trust floor: the relay floor plus only the required trust work "
                    "(bench.trust_relay): relay1 signs the request (ECDSA P-256), verifies the "
                    "response and commits both records in one SQLite transaction (WAL, "
                    "synchronous=FULL) before answering; relay2 verifies, commits the replay "
                    "claim with the request record before the backend, signs the response, "
                    f"commits its record after answering; link: {config.trust_floor_link}"
                    if config.trust_floor
                    else "not run (--trust-floor to run it)"
                ),
                "ss_log_level": "warning (the CLI default; info adds a line per exchange)",
                "workers": config.workers,
                "calls": dict(config.calls),
                "warmup": dict(config.warmup),
            },
            "cases": cases,
            "scale": scale,
            "logged": {
                "expected_per_log": 2 * bus_calls,
                **logged,
            },
            "log_storage": log_storage,
            **extra,
        }


def _callgrind_total(path: Path) -> int:
    """The instructions (``Ir``) a callgrind dump counted (its ``totals:`` line)."""
    for line in path.read_text().splitlines():
        if line.startswith("totals:"):
            return int(line.split()[1])
    raise RuntimeError(f"no totals in the callgrind dump {path.name}")


async def run_instruction_count(
    *,
    calls: int = INSTRUCTIONS_CALLS,
    warmup: int = INSTRUCTIONS_WARMUP,
    payload: int = 512,
    concurrency: int = 1,
    workdir: Path | None = None,
) -> dict[str, Any]:
    """Instructions per exchange of each security server on a fixed small run: both servers
    under ``valgrind --tool=callgrind`` (instrumentation off until the warm-up is done, off
    again after the measured calls), ``calls`` bus calls of ``payload`` bytes with
    ``concurrency`` in flight. Counts instructions, not time: the same code gives the same figure
    (within ~1%) whatever else runs on the machine."""
    with contextlib.ExitStack() as stack:
        if workdir is None:
            directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ruta-bench-")))
        else:
            directory = workdir
            directory.mkdir(parents=True, exist_ok=True)
        out = directory / "callgrind"
        out.mkdir(exist_ok=True)
        wrapper = (
            "valgrind",
            "--tool=callgrind",
            "--instr-atstart=no",
            f"--callgrind-out-file={out}/callgrind.%p",
        )
        config = BenchConfig(relay=False)
        started = time.monotonic()
        async with _instance(directory, config, wrapper=wrapper) as running:
            instance = running.bed
            consumer = instance.agencies[SOC].addresses
            pids = {
                "consumer_ss": int(consumer["pid"]),
                "provider_ss": int(instance.agencies[POP].addresses["pid"]),
            }
            bus = await _run_load(
                target=consumer["consumer"],
                metadata=(
                    ("ruta-client", str(BENEFITS)),
                    ("ruta-service", str(REGISTRY_SUBSYSTEM)),
                    ("ruta-purpose", PURPOSE),
                ),
                watched=pids,
                payload=payload,
                concurrency=concurrency,
                calls=calls,
                warmup=warmup,
                stderr=directory / "loadgen.log",
                count_instructions=tuple(pids.values()),
            )
            await _callgrind("--dump", tuple(pids.values()))
        ok = max(1, int(bus.load["ok"]))
        per_exchange = {
            name: round(_callgrind_total(out / f"callgrind.{pid}.1") / ok)
            for name, pid in pids.items()
        }
        return {
            "tool": _valgrind_version(),
            "payload": payload,
            "concurrency": concurrency,
            "calls": calls,
            "ok": bus.load["ok"],
            "errors": bus.load["errors"],
            "error_samples": bus.load["error_samples"],
            "instructions_per_exchange": per_exchange,
            "duration_s": round(time.monotonic() - started, 1),
        }


def _valgrind_version() -> str:
    try:
        return subprocess.run(
            ["valgrind", "--version"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "valgrind"
