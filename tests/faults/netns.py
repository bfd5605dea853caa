"""Two hosts on one machine: network namespaces joined by a veth pair, for the network faults.

Each namespace gets a private address of the test's own on its end of the pair
(``10.231.N.1`` and ``10.231.N.2``); no traffic leaves the machine. The parts of the bed that stay
in the test's process (registry with witness, OCSP responder, backend) are reached from inside a
namespace through forwarders: a listener on the namespace's own 127.0.0.1 (a child process run
with ``ip netns exec``) passes each connection over a Unix socket (namespaces do not separate the
filesystem) to the test's process, which connects to the real port. The consumer port is reached
the other way round.

Run as a child: ``python -m tests.faults.netns RULE...`` where a rule is ``tcp:PORT=unix:PATH``
(listen on 127.0.0.1:PORT, forward to PATH), ``unix:PATH=tcp:PORT``, or
``shaped:HOST:PORT=tcp:PORT2@CONTROL`` (listen on HOST:PORT, forward to 127.0.0.1:PORT2, shaping
each chunk as the CONTROL file says: ``DELAY_SECONDS STALL_PROBABILITY STALL_SECONDS``, read
again whenever it changes; a userspace stand-in for ``tc netem`` where the kernel has none).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import random
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

REPO_ROOT: Final = Path(__file__).resolve().parents[2]
#: Private addresses of the test's own veth pairs: 10.231.N.1 and 10.231.N.2.
SUBNET_PREFIX: Final = "10.231"
_CHUNK: Final = 65536
_counter = itertools.count()

Connect = Callable[[], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]


def _ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30, check=False)


def netns_problem() -> str | None:
    """Why network namespaces cannot be made here (None when they can)."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    name = f"ruta-probe-{os.getpid()}"
    made = _ip("netns", "add", name)
    if made.returncode != 0:
        return f"`ip netns add` failed: {made.stderr.strip()[:200]}"
    _ip("netns", "del", name)
    return None


def netem_problem(namespace: str, device: str) -> str | None:
    """Why ``tc netem`` cannot shape ``device`` (None when it can; the probe is undone)."""
    added = subprocess.run(
        ["ip", "netns", "exec", namespace, "tc", "qdisc", "add", "dev", device, "root", "netem"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if added.returncode != 0:
        return f"tc netem is not available here ({added.stderr.strip()[:120]})"
    subprocess.run(
        ["ip", "netns", "exec", namespace, "tc", "qdisc", "del", "dev", device, "root"],
        capture_output=True,
        timeout=30,
        check=False,
    )
    return None


@dataclass
class Link:
    """Two namespaces and the veth pair between them."""

    consumer_ns: str
    provider_ns: str
    consumer_dev: str
    provider_dev: str
    consumer_ip: str
    provider_ip: str

    def exec_prefix(self, namespace: str) -> list[str]:
        return ["ip", "netns", "exec", namespace]

    def _run(self, namespace: str, *args: str) -> None:
        done = subprocess.run(
            [*self.exec_prefix(namespace), *args],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if done.returncode != 0:
            raise AssertionError(f"{' '.join(args)} failed: {done.stderr.strip()}")

    def partition(self) -> None:
        """Cut the link (both ends down: packets are dropped silently, nothing is refused)."""
        self._run(self.consumer_ns, "ip", "link", "set", self.consumer_dev, "down")
        self._run(self.provider_ns, "ip", "link", "set", self.provider_dev, "down")

    def heal(self) -> None:
        self._run(self.consumer_ns, "ip", "link", "set", self.consumer_dev, "up")
        self._run(self.provider_ns, "ip", "link", "set", self.provider_dev, "up")

    def shape(self, *netem: str) -> None:
        """``tc netem`` on both ends (e.g. ``delay 200ms`` or ``loss 20%``)."""
        for namespace, device in (
            (self.consumer_ns, self.consumer_dev),
            (self.provider_ns, self.provider_dev),
        ):
            self._run(namespace, "tc", "qdisc", "replace", "dev", device, "root", "netem", *netem)

    def unshape(self) -> None:
        for namespace, device in (
            (self.consumer_ns, self.consumer_dev),
            (self.provider_ns, self.provider_dev),
        ):
            with contextlib.suppress(AssertionError):
                self._run(namespace, "tc", "qdisc", "del", "dev", device, "root")


@contextlib.contextmanager
def link() -> Iterator[Link]:
    """Make two namespaces joined by a veth pair; delete them after, always."""
    n = (os.getpid() * 7 + next(_counter)) % 250 + 1
    tag = f"{os.getpid() % 100000}x{n}"
    made = Link(
        consumer_ns=f"ruta-c-{tag}",
        provider_ns=f"ruta-p-{tag}",
        consumer_dev=f"rc{tag}"[:15],
        provider_dev=f"rp{tag}"[:15],
        consumer_ip=f"{SUBNET_PREFIX}.{n}.1",
        provider_ip=f"{SUBNET_PREFIX}.{n}.2",
    )
    try:
        for namespace in (made.consumer_ns, made.provider_ns):
            _check(_ip("netns", "add", namespace))
            made._run(namespace, "ip", "link", "set", "lo", "up")
        _check(
            _ip(
                "link",
                "add",
                made.consumer_dev,
                "netns",
                made.consumer_ns,
                "type",
                "veth",
                "peer",
                "name",
                made.provider_dev,
                "netns",
                made.provider_ns,
            )
        )
        for namespace, device, address in (
            (made.consumer_ns, made.consumer_dev, made.consumer_ip),
            (made.provider_ns, made.provider_dev, made.provider_ip),
        ):
            made._run(namespace, "ip", "addr", "add", f"{address}/30", "dev", device)
            made._run(namespace, "ip", "link", "set", device, "up")
        yield made
    finally:
        for namespace in (made.consumer_ns, made.provider_ns):
            _ip("netns", "del", namespace)  # takes its end of the pair with it


def _check(done: subprocess.CompletedProcess[str]) -> None:
    if done.returncode != 0:
        raise AssertionError(f"ip {' '.join(done.args[1:])} failed: {done.stderr.strip()}")


# --- forwarding ----------------------------------------------------------------------------------


@dataclass
class Shaping:
    """Delay and stalls applied to each chunk, as a control file says (see the docstring)."""

    control: Path
    _seen: float = -1.0
    _now: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def current(self) -> tuple[float, float, float]:
        with contextlib.suppress(OSError, ValueError):
            changed = self.control.stat().st_mtime
            if changed != self._seen:
                delay, probability, stall = (float(x) for x in self.control.read_text().split())
                self._seen, self._now = changed, (delay, probability, stall)
        return self._now

    async def apply(self) -> None:
        delay, probability, stall = self.current()
        if probability and random.random() < probability:
            delay += stall
        if delay:
            await asyncio.sleep(delay)


async def _pipe(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, shaping: Shaping | None = None
) -> None:
    try:
        while data := await reader.read(_CHUNK):
            if shaping is not None:
                await shaping.apply()
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        writer.close()


async def _forward(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    connect: Connect,
    shaping: Shaping | None = None,
) -> None:
    try:
        far_reader, far_writer = await connect()
    except OSError:
        writer.close()
        return
    await asyncio.gather(_pipe(reader, far_writer, shaping), _pipe(far_reader, writer, shaping))


def _tcp(port: int) -> Connect:
    return lambda: asyncio.open_connection("127.0.0.1", port)


def _unix(path: str) -> Connect:
    return lambda: asyncio.open_unix_connection(path)


async def serve_rule(rule: str) -> asyncio.Server:
    """Start forwarding for one rule (see the module's docstring)."""
    source, target = rule.split("=", 1)
    target, _, control = target.partition("@")
    kind, where = target.split(":", 1)
    connect = _tcp(int(where)) if kind == "tcp" else _unix(where)
    shaping = Shaping(Path(control)) if control else None

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _forward(reader, writer, connect, shaping)

    kind, where = source.split(":", 1)
    if kind == "shaped":
        host, port = where.rsplit(":", 1)
        return await asyncio.start_server(handle, host, int(port))
    if kind == "tcp":
        return await asyncio.start_server(handle, "127.0.0.1", int(where))
    return await asyncio.start_unix_server(handle, where)


@dataclass
class Forwarders:
    """Forwarders of one test: Unix sockets in a short temporary folder, listeners in this
    process and ``ip netns exec`` children."""

    directory: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="rf-")))
    servers: list[asyncio.Server] = field(default_factory=list)
    children: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def socket(self, name: str) -> str:
        return str(self.directory / f"{name}.sock")

    async def here(self, rule: str) -> None:
        self.servers.append(await serve_rule(rule))

    async def inside(self, prefix: Sequence[str], rules: Sequence[str]) -> None:
        """Run ``rules`` in a child under ``prefix`` (``ip netns exec NS``); waits until each
        Unix socket it listens on exists, or a bounded time for TCP listeners."""
        child = subprocess.Popen(  # noqa: ASYNC220 - a long-lived child
            [*prefix, sys.executable, "-m", "tests.faults.netns", *rules],
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
        )
        self.children.append(child)
        assert child.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(child.stdout.readline), 60)
        assert line == b"ready\n", "a forwarder did not start"

    async def close(self) -> None:
        for server in self.servers:
            server.close()
        for child in self.children:
            child.kill()
            child.wait()
            if child.stdout is not None:
                child.stdout.close()
        for path in self.directory.iterdir():
            path.unlink()
        self.directory.rmdir()


@contextlib.asynccontextmanager
async def forwarders() -> AsyncIterator[Forwarders]:
    made = Forwarders()
    try:
        yield made
    finally:
        await made.close()


async def _main(rules: Sequence[str]) -> None:
    for rule in rules:
        await serve_rule(rule)
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(_main(sys.argv[1:]))
