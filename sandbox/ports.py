"""Fixed ports for a sandbox that no other sandbox, and no port-0 socket, will take meanwhile.

Some of a sandbox's ports must be known before the process that binds them starts (the registry's
HTTP port is written into every certificate; a server's transport address into the global
configuration). Between choosing and binding, another process could take the port. Two defences:

- ports are chosen *below* the kernel's ephemeral range, where port-0 binds and outgoing
  connections never land;
- each chosen port is claimed with a file ``<tmp>/ruta-sandbox-ports/<port>`` created exclusively
  and holding the claiming process's pid, so concurrent sandboxes never choose the same port. A
  claim whose process is gone is stale and taken over.
"""

from __future__ import annotations

import contextlib
import os
import random
import socket
import tempfile
from pathlib import Path
from typing import Final

from ruta.files import FileReadError, read_bounded, write_atomically
from sandbox.processes import SandboxError, process_alive

__all__ = ["PortClaims"]

#: Lowest port handed out.
LOWEST_PORT: Final = 20000
#: Used when the ephemeral range cannot be read (Linux default lower bound).
DEFAULT_EPHEMERAL_LOW: Final = 32768
#: Most candidates tried per port before giving up.
MAX_ATTEMPTS: Final = 200
#: Largest claim file read (one process id).
_MAX_CLAIM_BYTES: Final = 64


def _ephemeral_low() -> int:
    try:
        text = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text()
        return int(text.split()[0])
    except (OSError, ValueError, IndexError):
        return DEFAULT_EPHEMERAL_LOW


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class PortClaims:
    """Ports claimed by this process; :meth:`release` gives them back."""

    def __init__(self, folder: Path | None = None) -> None:
        self.folder = folder or Path(tempfile.gettempdir()) / "ruta-sandbox-ports"
        self.ports: list[int] = []

    def _claim(self, port: int) -> bool:
        path = self.folder / str(port)
        # The claim appears by link(2), already holding its owner (the atomic writer's exclusive
        # mode): another sandbox never reads an empty claim (and takes it for a stale one).
        for _ in range(2):
            try:
                write_atomically(path, f"{os.getpid()}\n".encode(), exclusive=True)
            except FileExistsError:
                try:
                    owner = int(read_bounded(path, _MAX_CLAIM_BYTES).strip() or "0")
                except (FileReadError, ValueError):
                    owner = 0
                if owner > 0 and process_alive(owner):
                    return False
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()  # stale: its sandbox is gone
                continue
            return True
        return False

    def take(self, count: int) -> list[int]:
        """``count`` free loopback ports, claimed; raises :class:`SandboxError` if it cannot."""
        self.folder.mkdir(parents=True, exist_ok=True)
        high = max(LOWEST_PORT + 1000, _ephemeral_low() - 1)
        chosen: list[int] = []
        for _ in range(count):
            for _attempt in range(MAX_ATTEMPTS):
                port = random.randint(LOWEST_PORT, high)  # noqa: S311 - not security relevant
                if port in self.ports or not self._claim(port):
                    continue
                if _bindable(port):
                    self.ports.append(port)
                    chosen.append(port)
                    break
                (self.folder / str(port)).unlink(missing_ok=True)
            else:
                raise SandboxError("no free loopback port could be claimed")
        return chosen

    def release(self) -> None:
        """Remove this process's claims."""
        for port in self.ports:
            path = self.folder / str(port)
            with contextlib.suppress(FileReadError, OSError, ValueError):
                if int(read_bounded(path, _MAX_CLAIM_BYTES).strip()) == os.getpid():
                    path.unlink()
        self.ports.clear()
