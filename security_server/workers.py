"""A node's worker processes: ``[server] workers = N`` runs N ``ruta ss serve`` processes that
share the node's ports, so one node uses N cores (docs/adr/0030).

The supervisor (the process the operator starts) runs no server itself. It starts worker 0 with
the settings as they are and waits for its ready file; the others then get worker 0's bound
consumer, transport and audit addresses (the same ports, shared with ``SO_REUSEPORT``: the
kernel spreads new connections over the workers) and a metrics port each of their own. Each
worker keeps its own message-log tree (a node log of the server, :mod:`ruta.node_logs`) in the
shared database, its own ready file, configuration cache and refusals under
``DATA_DIR/workers/w<i>/``, and its own listener watchdog. Once all are ready the supervisor
writes ``DATA_DIR/ready.json`` (worker 0's addresses, its own pid, and a ``workers`` list).

SIGTERM or SIGINT stops every worker (each finishes its calls and writes its pending log
appends) and then the supervisor; SIGHUP is passed to every worker (settings reload). If a
worker ends by itself (a listener that could not be restarted: status 3; a crash), the
supervisor stops the others and exits with that worker's status, so systemd or Kubernetes
restarts the node whole. A worker whose supervisor dies is sent SIGTERM by the kernel (Linux).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from ruta.addresses import join_address, split_address
from ruta.readiness import read_ready_file, write_ready_file
from security_server.server import READY_FILE, SHUTDOWN_GRACE_SECONDS, worker_dir
from security_server.settings import SecurityServerSettings

__all__ = [
    "WORKER_START_SECONDS",
    "WORKER_STOP_SECONDS",
    "WorkerStartError",
    "supervise",
]

#: How long one worker may take from spawn to its ready file (database migration, first fetch
#: of the global configuration from a cold cache).
WORKER_START_SECONDS: Final = 120.0
#: How long the workers may take to stop after SIGTERM (calls in flight, then the log's pending
#: appends) before they are killed.
WORKER_STOP_SECONDS: Final = SHUTDOWN_GRACE_SECONDS + 25.0
#: Exit status when a worker could not start.
_START_FAILED_STATUS: Final = 1
_PR_SET_PDEATHSIG: Final = 1
_POLL_SECONDS: Final = 0.05

_log = logging.getLogger(__name__)


class WorkerStartError(RuntimeError):
    """A worker process ended or timed out before it was ready."""


@dataclass(slots=True)
class _Worker:
    index: int
    process: asyncio.subprocess.Process
    ready: dict[str, Any]


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """Ask Linux to send this process SIGTERM when its parent (the supervisor) dies."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class _Supervisor:
    def __init__(self, settings: SecurityServerSettings, config: Path, env: dict[str, str]):
        self._settings = settings
        self._config = config
        self._env = env
        self._workers: list[_Worker] = []

    async def _spawn(self, index: int, overrides: dict[str, str]) -> _Worker:
        ready_path = worker_dir(self._settings.data_dir, index) / READY_FILE
        ready_path.unlink(missing_ok=True)
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "ruta",
            "ss",
            "serve",
            "--config",
            str(self._config),
            "--worker",
            str(index),
            env={**self._env, **overrides},
            stdin=asyncio.subprocess.DEVNULL,
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WORKER_START_SECONDS
        while loop.time() < deadline:
            ready = read_ready_file(ready_path)
            if ready is not None and ready.get("pid") == process.pid:
                worker = _Worker(index=index, process=process, ready=ready)
                self._workers.append(worker)
                return worker
            if process.returncode is not None:
                raise WorkerStartError(
                    f"worker {index} exited with status {process.returncode} before it was ready"
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(process.wait(), _POLL_SECONDS)
        process.kill()
        await process.wait()
        raise WorkerStartError(f"worker {index} was not ready within {WORKER_START_SECONDS} s")

    def _shared_ports(self, first: _Worker) -> dict[str, str]:
        """Environment overrides that put a later worker on worker 0's ports (and a metrics
        port of its own on the same host)."""
        overrides = {
            "RUTA_SS_CONSUMER__LISTEN": str(first.ready["consumer"]),
            "RUTA_SS_TRANSPORT__LISTEN": str(first.ready["transport"]),
        }
        if "audit" in first.ready:
            overrides["RUTA_SS_AUDIT__LISTEN"] = str(first.ready["audit"])
        metrics_host, _ = split_address(self._settings.metrics.listen)
        overrides["RUTA_SS_METRICS__LISTEN"] = join_address(metrics_host, 0)
        return overrides

    async def start(self) -> None:
        first = await self._spawn(0, {})
        shared = self._shared_ports(first)
        for index in range(1, self._settings.server.workers):
            await self._spawn(index, shared)
        first_ready = first.ready
        write_ready_file(
            self._settings.data_dir / READY_FILE,
            {
                **{k: v for k, v in first_ready.items() if k != "pid"},
                "pid": os.getpid(),
                "workers": [
                    {
                        "pid": w.process.pid,
                        "origin": w.ready.get("origin", ""),
                        "metrics": w.ready.get("metrics", ""),
                    }
                    for w in self._workers
                ],
            },
        )

    @property
    def count(self) -> int:
        """Workers started."""
        return len(self._workers)

    def signal_all(self, signum: int) -> None:
        for worker in self._workers:
            if worker.process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    worker.process.send_signal(signum)

    async def wait_any_exit(self) -> _Worker:
        waits = {asyncio.ensure_future(w.process.wait()): w for w in self._workers}
        try:
            done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in waits:
                task.cancel()
        return waits[next(iter(done))]

    async def stop(self) -> None:
        """SIGTERM every worker and wait for all (killing those past the stop time)."""
        self.signal_all(signal.SIGTERM)
        waits = [w.process.wait() for w in self._workers]
        try:
            await asyncio.wait_for(asyncio.gather(*waits), WORKER_STOP_SECONDS)
        except TimeoutError:
            _log.error("workers did not stop within %s s; killing them", WORKER_STOP_SECONDS)
            self.signal_all(signal.SIGKILL)
            await asyncio.gather(*(w.process.wait() for w in self._workers))
        (self._settings.data_dir / READY_FILE).unlink(missing_ok=True)


async def supervise(
    settings: SecurityServerSettings, config: Path, *, env: dict[str, str] | None = None
) -> int:
    """Run ``settings.server.workers`` workers of the server in ``config`` until SIGTERM or
    SIGINT (then 0) or until a worker ends by itself (then its exit status, at least 1).

    ``env`` is the workers' environment (default: this process's). Every worker has stopped
    when this returns; ``DATA_DIR/ready.json`` is gone again."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    supervisor = _Supervisor(settings, config, dict(os.environ if env is None else env))
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    loop.add_signal_handler(signal.SIGHUP, supervisor.signal_all, signal.SIGHUP)
    try:
        try:
            await supervisor.start()
        except WorkerStartError as exc:
            _log.error("security server %s did not start: %s", settings.server_id, exc)
            await supervisor.stop()
            return _START_FAILED_STATUS
        except BaseException:
            await supervisor.stop()  # no worker outlives a start that failed otherwise
            raise
        _log.info(
            "security server %s serving with %d workers", settings.server_id, supervisor.count
        )
        stopping = asyncio.ensure_future(stop.wait())
        exited = asyncio.ensure_future(supervisor.wait_any_exit())
        await asyncio.wait({stopping, exited}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        status = 0
        if exited.done():
            worker = exited.result()
            code = worker.process.returncode
            # A worker's own failure status (3: a listener that could not be restarted), or 1
            # for a worker that was killed or ended cleanly by itself.
            status = code if code is not None and code > 0 else _START_FAILED_STATUS
            _log.error(
                "worker %d of %s exited with status %s; stopping the node",
                worker.index,
                settings.server_id,
                worker.process.returncode,
            )
        else:
            exited.cancel()
        await supervisor.stop()
        return status
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(signum)
