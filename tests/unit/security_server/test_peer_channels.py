"""PeerChannels: one channel per peer, its key made once per peer object and anchors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc.aio
import pytest

from ruta.globalconf import SecurityServer
from ruta.ids import ServerId
from ruta.pki.testing import TestPki
from security_server.errors import TransportError
from security_server.links import GrpcPeerLinks
from security_server.transport import MAX_CACHED_CHANNEL_KEYS, PeerChannels, PeerStatus


class _Channel:
    async def close(self, grace: float | None = None) -> None:
        return None


def _peer(code: str = "ss1") -> SecurityServer:
    return SecurityServer(
        id=ServerId.parse(f"LAC/GOV/POP/{code}"),
        address="127.0.0.1:5500",
        auth_cert_sha256="0" * 64,
    )


@pytest.fixture
def channels(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> PeerChannels:
    opened: list[str] = []

    async def fake_open(self: PeerChannels, peer: SecurityServer, *_: Any) -> grpc.aio.Channel:
        opened.append(str(peer.id))
        return _Channel()  # type: ignore[return-value]

    monkeypatch.setattr(PeerChannels, "_open", fake_open)
    made = PeerChannels(
        key_path=tmp_path / "key.pem",
        cert_path=tmp_path / "cert.pem",
        max_message_bytes=1 << 20,
        status=PeerStatus(ocsp=None),  # type: ignore[arg-type]
    )
    made.opened = opened  # type: ignore[attr-defined]
    return made


async def test_a_peers_channel_is_found_again_and_replaced_once_discarded(
    channels: PeerChannels, tmp_path: Path
) -> None:
    anchors = (TestPki(tmp_path / "pki").root.certificate,)
    peer = _peer()
    first = await channels.channel(peer, anchors)
    assert await channels.channel(peer, anchors) is first
    # An equal peer of another configuration (another object) finds the same channel.
    assert await channels.channel(_peer(), anchors) is first
    channels.discard(peer)
    second = await channels.channel(peer, anchors)
    assert second is not first
    assert channels.opened == ["LAC/GOV/POP/ss1", "LAC/GOV/POP/ss1"]  # type: ignore[attr-defined]


async def test_channel_keys_are_bounded(channels: PeerChannels, tmp_path: Path) -> None:
    anchors = (TestPki(tmp_path / "pki").root.certificate,)
    for i in range(MAX_CACHED_CHANNEL_KEYS + 10):
        await channels.channel(_peer(f"ss{i}"), anchors)
    assert len(channels._keys) <= MAX_CACHED_CHANNEL_KEYS


async def test_links_to_no_server_or_only_unreachable_ones_fail(
    channels: PeerChannels, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GrpcPeerLinks.connect: no server listed, or each one unusable, is a TransportError (the
    last server's own, when one was tried); a usable one is linked."""
    links = GrpcPeerLinks(channels, frames=False)
    anchors = (TestPki(tmp_path / "pki").root.certificate,)
    with pytest.raises(TransportError, match="lists no security server"):
        await links.connect((), anchors)

    async def unusable(self: PeerChannels, peer: SecurityServer, *_: Any) -> grpc.aio.Channel:
        raise TransportError(f"{peer.id} is down")

    usable = PeerChannels.channel
    monkeypatch.setattr(PeerChannels, "channel", unusable)
    with pytest.raises(TransportError, match=r"LAC/GOV/POP/ss[12] is down"):
        await links.connect((_peer("ss1"), _peer("ss2")), anchors)
    monkeypatch.setattr(PeerChannels, "channel", usable)
    link = await links.connect((_peer("ss1"),), anchors)
    assert str(link.server.id) == "LAC/GOV/POP/ss1"
