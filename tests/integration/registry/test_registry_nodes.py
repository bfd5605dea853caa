"""Two registry nodes on one PostgreSQL database, as real ``ruta registry serve`` processes.

The second node is made by ``ruta registry node add``: a directory of its own with its own keys,
nothing shared with the first but the database. Both publish the same configuration, each signed
with its own key; a security server's configuration client, started from the anchor that lists
both, keeps fetching from one while the other is stopped.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ruta.globalconf import ConfigurationAnchor, GlobalConfClient, GlobalConfSettings
from ruta.globalconf.signing import content_digest, open_configuration
from ruta.ids import MemberId
from ruta.v1 import globalconf_pb2
from tests.conftest import free_port
from tests.integration.test_globalconf_registry_process import (
    RUTA,
    OffsetClock,
    RegistryProcess,
    _until,
    _usable,
)

pytestmark = [pytest.mark.integration, pytest.mark.postgres]

_FAST = GlobalConfSettings(
    fetch_interval_seconds=0.1, retry_initial_seconds=0.05, retry_max_seconds=0.2
)


@dataclass
class Nodes:
    first: RegistryProcess
    second: RegistryProcess
    urls: tuple[str, str]


def _run(*args: str) -> str:
    done = subprocess.run(
        [RUTA, "registry", *args], check=True, capture_output=True, text=True, timeout=120
    )
    return done.stdout


@pytest.fixture
async def nodes(
    tmp_path: Path, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Nodes]:
    # Re-sign every second and notice the other node's changes quickly (the processes inherit it).
    monkeypatch.setenv("RUTA_REGISTRY_GLOBALCONF_REPUBLISH_SECONDS", "1")
    monkeypatch.setenv("RUTA_REGISTRY_CHANGE_POLL_SECONDS", "0.2")
    first_dir, second_dir = tmp_path / "node1", tmp_path / "node2"
    http = (free_port(), free_port())
    await asyncio.to_thread(
        _run, "init", "--dir", str(first_dir), "--instance", "LAC", "--db", postgres_url,
        "--admin-listen", f"127.0.0.1:{free_port()}", "--http-listen", f"127.0.0.1:{http[0]}",
    )  # fmt: skip
    # On the new node's host: its keys and a request (public halves only).
    await asyncio.to_thread(
        _run, "node", "init", "--dir", str(second_dir), "--instance", "LAC",
        "--admin-listen", f"127.0.0.1:{free_port()}", "--http-listen", f"127.0.0.1:{http[1]}",
    )  # fmt: skip
    # Where the CA is: the grant; then copied into the new node's directory.
    grant = tmp_path / "grant"
    added = json.loads(
        await asyncio.to_thread(
            _run,
            "node",
            "add",
            "--dir",
            str(first_dir),
            "--request",
            str(second_dir / "node-request.json"),
            "--out",
            str(grant),
            "--json",
        )
    )
    assert not list(grant.rglob("*.key"))  # nothing secret travels
    shutil.copytree(grant, second_dir, dirs_exist_ok=True)
    urls = (f"http://127.0.0.1:{http[0]}/globalconf", f"http://127.0.0.1:{http[1]}/globalconf")
    assert added["globalconf_urls"] == list(urls)
    first = RegistryProcess(first_dir, tmp_path / "node1.log")
    second = RegistryProcess(second_dir, tmp_path / "node2.log")
    await first.start()
    await second.start()
    try:
        yield Nodes(first, second, urls)
    finally:
        await first.stop()
        await second.stop()


def _fetch(url: str) -> bytes | int:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            body: bytes = response.read()
            return body
    except urllib.error.HTTPError as exc:
        return exc.code


def test_node_add_refuses_a_registry_on_sqlite(tmp_path: Path) -> None:
    """(Needs no database: nodes share PostgreSQL, so a SQLite registry is refused.)"""
    source, node = tmp_path / "reg", tmp_path / "node"
    _run("init", "--dir", str(source), "--instance", "LAC", "--http-listen", "127.0.0.1:4999")
    _run("node", "init", "--dir", str(node), "--instance", "LAC")
    assert (node / "globalconf" / "signing.key").stat().st_mode & 0o077 == 0
    assert not (node / "registry.toml").exists()  # not a registry until the grant is in
    anchor_before = (source / "globalconf" / "anchor.toml").read_bytes()
    done = subprocess.run(
        [RUTA, "registry", "node", "add", "--dir", str(source),
         "--request", str(node / "node-request.json"), "--out", str(tmp_path / "grant")],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode != 0
    assert "PostgreSQL" in done.stderr
    assert not (tmp_path / "grant").exists()
    assert (source / "globalconf" / "anchor.toml").read_bytes() == anchor_before


async def test_two_nodes_serve_the_same_configuration_and_servers_fail_over(
    nodes: Nodes, tmp_path: Path
) -> None:
    first_dir, second_dir = nodes.first.directory, nodes.second.directory
    # Keys of its own; the CA's keys and records stay with the first node.
    assert (second_dir / "globalconf" / "signing.key").read_bytes() != (
        first_dir / "globalconf" / "signing.key"
    ).read_bytes()
    assert (second_dir / "tls" / "registry.key").exists()
    for secret in ("ca.key", "ocsp.key", "ca.json", "issued", "revoked"):
        assert not (second_dir / "ca" / secret).exists()
    assert not (second_dir / "witness" / "witness.key").exists()
    assert (second_dir / "globalconf" / "signing.key").stat().st_mode & 0o077 == 0
    # Both nodes hand out the same anchor: both URLs, both signing certificates.
    anchor = ConfigurationAnchor.from_file(second_dir / "globalconf" / "anchor.toml")
    assert anchor == ConfigurationAnchor.from_file(first_dir / "globalconf" / "anchor.toml")
    assert anchor.globalconf_urls == nodes.urls
    assert len(anchor.certificates) == 2

    # The same content from both, each verified against the anchor.
    first_doc = await asyncio.to_thread(_fetch, nodes.urls[0])
    second_doc = await asyncio.to_thread(_fetch, nodes.urls[1])
    assert isinstance(first_doc, bytes)
    assert isinstance(second_doc, bytes)
    now = datetime.now(UTC)
    views = [open_configuration(doc, anchor, now=now) for doc in (first_doc, second_doc)]
    digests = {
        content_digest(
            globalconf_pb2.GlobalConfiguration.FromString(
                globalconf_pb2.SignedGlobalConfiguration.FromString(doc).configuration
            )
        )
        for doc in (first_doc, second_doc)
    }
    assert len(digests) == 1
    assert views[0].witness_url == views[1].witness_url
    assert views[1].witness_url == nodes.urls[0].replace("/globalconf", "/witness")
    # The second node holds neither the CA nor the witness: no OCSP responder, no witness.
    second_base = nodes.urls[1].removesuffix("/globalconf")
    assert await asyncio.to_thread(_fetch, f"{second_base}/ocsp") == 404
    assert await asyncio.to_thread(_fetch, f"{second_base}/witness/add-checkpoint") == 404

    client = GlobalConfClient(
        anchor=anchor, cache_path=tmp_path / "ss" / "globalconf.bin", settings=_FAST,
        clock=OffsetClock(),
    )  # fmt: skip
    await client.start()
    try:
        assert client.source_url == nodes.urls[0]
        # A change made through the first node reaches the second through the database.
        await asyncio.to_thread(
            nodes.first.ruta, "member", "add", "LAC/GOV/POP", "--name", "Population Registry"
        )
        pop = MemberId.parse("LAC/GOV/POP")
        await _until(_usable(client, lambda conf: conf.member(pop) is not None))

        # First node stopped: the server goes on fetching newer documents from the second.
        await nodes.first.stop()
        held = client.current().serial
        await _until(_usable(client, lambda conf: conf.serial > held))
        assert client.source_url == nodes.urls[1]
        assert client.current().member(pop) is not None

        # And back: the first node returns, the second stops.
        await nodes.first.start()
        await nodes.second.stop()
        held = client.current().serial
        await _until(_usable(client, lambda conf: conf.serial > held))
        assert client.source_url == nodes.urls[0]
    finally:
        await client.stop()
