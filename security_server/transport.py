"""Server-to-server transport: mutual TLS with authentication certificates pinned to the global
configuration, a channel pool per peer, and the ``Transport`` service's wiring.

Consumer side: :class:`PeerChannels` keeps one gRPC channel per peer server (reused by every call,
never opened per call), and orders a member's servers for each call (round robin over those that
answer, back-off for those that failed: :mod:`security_server.balance`). Before a channel is handed
out the first time, the peer's certificate is fetched with a TLS handshake that presents this
server's auth certificate, checked to chain to a trust anchor, and its SHA-256 fingerprint compared
with the one the global configuration lists for that server; a mismatch refuses the exchange
(``server.consumer.network_error``). gRPC itself then checks the chain and the address name on every
connection. A channel whose call failed on the network is dropped, so the next call connects and
pins again (docs/adr/0006).

Provider side: the peer's client certificate is read from the call's auth context and its
fingerprint looked up in the global configuration (:func:`authenticate_peer`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import grpc
import grpc.aio
from cryptography import x509

from ruta.addresses import split_address
from ruta.globalconf import GlobalConf, SecurityServer
from ruta.memo import memo_by_identity2, remember
from ruta.pki.certs import certificate_pem, fingerprint, load_certificate
from ruta.pki.errors import PkiError
from ruta.pki.ocsp import CertStatus, OcspClient
from ruta.pki.tls import channel_credentials
from security_server.balance import ServerRotation
from security_server.errors import (
    Reason,
    TransportError,
)

__all__ = [
    "EXCHANGE_PATH",
    "LARGE_FRAME_BYTES",
    "LARGE_FRAME_SPARE_BYTES",
    "MAX_FRAME_BYTES",
    "MAX_PEER_RECEIVE_BYTES",
    "PIN_CHECK_TIMEOUT_SECONDS",
    "PeerChannels",
    "PeerStatus",
    "TransportError",
    "authenticate_peer",
    "grpc_message_options",
    "holds_large_frames",
    "keepalive_options",
    "ping_policy_options",
    "receive_limit",
]

EXCHANGE_PATH: Final = "/ruta.v1.Transport/Exchange"
#: How long the pinning handshake with a peer may take.
PIN_CHECK_TIMEOUT_SECONDS: Final = 10.0
#: How long calls still running on a retired channel may take before it is closed.
RETIRED_CHANNEL_GRACE_SECONDS: Final = 30.0
#: Peer authentication certificates kept parsed and fingerprinted, by their PEM text.
MAX_CACHED_PEER_CERTIFICATES: Final = 256
#: Peers whose channel key is kept made (:class:`PeerChannels`).
MAX_CACHED_CHANNEL_KEYS: Final = 256
#: Room for the header, signature, certificates and OCSP response around a body.
_ENVELOPE_SLACK_BYTES: Final = 256 * 1024
#: Largest frame of ``Transport.ExchangeFrames`` either side writes, messages included (a single
#: larger result goes alone). Under the envelope slack every server's gRPC limit includes, so a
#: frame never breaks on another server's size limit: a message too large for one is refused
#: alone, as over ``Exchange``.
MAX_FRAME_BYTES: Final = 192 * 1024
#: Largest frame written once the receiving side is known to take it (docs/adr/0050): a
#: consumer's request frames after the provider confirmed ``large-request-frames`` (it does when
#: its own gRPC limit, :func:`receive_limit`, holds such a frame), and every provider's result
#: frames (a consumer's channel to a provider receives up to :data:`MAX_PEER_RECEIVE_BYTES`; a
#: single larger result still goes alone). At 64 KiB bodies a 192 KiB frame carries two
#: messages; this one up to fifteen, so fewer gRPC writes and reads per exchange.
LARGE_FRAME_BYTES: Final = 1024 * 1024
#: What a consumer server's channel to a provider server may receive in one gRPC message: the
#: largest ``max_message_bytes`` any server may configure plus the envelope, so a framed result
#: is never refused by gRPC for the whole stream; each response is then held to this server's own
#: limit (``server.consumer.invalid_response_signature``).
MAX_PEER_RECEIVE_BYTES: Final = (64 << 20) + _ENVELOPE_SLACK_BYTES


def keepalive_options(
    *, time_seconds: float, timeout_seconds: float, permit_without_calls: bool
) -> list[tuple[str, Any]]:
    """gRPC options for HTTP/2 keepalive pings every ``time_seconds``, a connection whose ping
    is not answered within ``timeout_seconds`` closed as dead (its calls fail UNAVAILABLE and the
    next call connects anew), pinging also without open calls when ``permit_without_calls``."""
    return [
        ("grpc.keepalive_time_ms", int(time_seconds * 1000)),
        ("grpc.keepalive_timeout_ms", int(timeout_seconds * 1000)),
        # gRPC core waits for a ping's ack the shorter of this and the keepalive timeout
        # (default one minute): without it an unanswered keepalive ping waits a minute.
        ("grpc.http2.ping_timeout_ms", int(timeout_seconds * 1000)),
        ("grpc.keepalive_permit_without_calls", int(permit_without_calls)),
        # Unlimited pings while no data flows (gRPC's default stops after two).
        ("grpc.http2.max_pings_without_data", 0),
    ]


def ping_policy_options(min_ping_interval_seconds: float) -> list[tuple[str, Any]]:
    """A listener's enforcement of peers' keepalive pings: accepted without calls, and as often
    as every ``min_ping_interval_seconds`` while no data flows (gRPC's default, 5 min, would
    close a pinging peer's connection with GOAWAY "too_many_pings")."""
    return [
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", int(min_ping_interval_seconds * 1000)),
    ]


def receive_limit(max_message_bytes: int) -> int:
    """The largest gRPC message a server configured with ``max_message_bytes`` receives (the
    message plus its envelope: :func:`grpc_message_options`)."""
    return max_message_bytes + _ENVELOPE_SLACK_BYTES


#: Room a large frame keeps under a gRPC limit for what its bound does not count (a result
#: frame's durability notices: a varint tag each, at most
#: :data:`~security_server.frames.MAX_STREAM_IN_FLIGHT`).
LARGE_FRAME_SPARE_BYTES: Final = 64 * 1024


def holds_large_frames(max_message_bytes: int) -> bool:
    """Whether a server configured with ``max_message_bytes`` may write and read frames of
    :data:`LARGE_FRAME_BYTES` (docs/adr/0050): gRPC holds a server to its limit both ways
    (:func:`grpc_message_options`, on its port and on its channels), so a larger frame than
    its own limit takes would fail the whole stream, every exchange on it. True with the
    default ``max_message_bytes`` (4 MiB); false below 832 KiB."""
    return receive_limit(max_message_bytes) >= LARGE_FRAME_BYTES + LARGE_FRAME_SPARE_BYTES


def grpc_message_options(max_message_bytes: int) -> list[tuple[str, Any]]:
    """Channel/server options that let a message of ``max_message_bytes`` plus its envelope
    through, so Ruta (not gRPC) refuses oversized bodies with its own fault."""
    limit = receive_limit(max_message_bytes)
    return [
        ("grpc.max_receive_message_length", limit),
        ("grpc.max_send_message_length", limit),
    ]


def _anchor_issuing(
    cert: x509.Certificate, anchors: tuple[x509.Certificate, ...]
) -> x509.Certificate | None:
    # Asked on every call from a peer; names compared once per certificate and anchor set.
    return next((a for a in anchors if a.subject == cert.issuer), None)


# Per certificate object (parsed once per PEM) and anchor tuple (one per configuration).
_anchor_issuing_memo = memo_by_identity2(_anchor_issuing, maxsize=MAX_CACHED_PEER_CERTIFICATES)


@dataclass(frozen=True, slots=True)
class PeerStatus:
    """Checks a peer's authentication certificate against OCSP (cached by the client)."""

    ocsp: OcspClient

    async def status_of(
        self, cert: x509.Certificate, anchors: Sequence[x509.Certificate]
    ) -> CertStatus | None:
        """``cert``'s OCSP status (cached by the client), or None for a certificate not issued
        by one of ``anchors`` (an intermediate's: the TLS layer checked its chain, but its issuer
        is not at hand), which is not asked about. Raises :class:`~ruta.pki.errors.PkiError`
        when the status cannot be established."""
        issuer = _anchor_issuing_memo(cert, tuple(anchors))
        if issuer is None:
            return None
        cached = self.ocsp.cached_status(cert)
        if cached is not None:
            return cached.status
        return (await self.ocsp.status(cert, issuer)).status

    async def check(self, cert: x509.Certificate, anchors: Sequence[x509.Certificate]) -> None:
        """Raise :class:`TransportError` (``peer_revoked``) when ``cert`` is revoked or its
        status cannot be established (see :meth:`status_of` for the certificates not asked
        about)."""
        try:
            status = await self.status_of(cert, anchors)
        except PkiError as exc:
            raise TransportError(
                f"the revocation status of the peer's authentication certificate cannot be "
                f"established: {exc.message}",
                reason=Reason.PEER_REVOKED,
            ) from None
        if status is not None and status is not CertStatus.GOOD:
            raise TransportError(
                f"the peer's authentication certificate is {status} according to OCSP",
                reason=Reason.PEER_REVOKED,
            )


async def authenticate_peer(
    certificate_pem: bytes | None, conf: GlobalConf, status: PeerStatus
) -> SecurityServer:
    """The listed security server whose authentication certificate (``certificate_pem``, as
    the TLS layer handed it over) the calling peer presented.

    Raises :class:`TransportError`: ``peer_unknown`` for a peer that presented no certificate or
    one the configuration does not list, ``peer_revoked`` for one OCSP does not vouch for.
    """
    try:
        cert, cert_fingerprint = (
            _peer_certificate(certificate_pem) if certificate_pem else (None, "")
        )
    except PkiError:
        cert, cert_fingerprint = None, ""
    if cert is None:
        raise TransportError(
            "the calling peer presented no usable client certificate",
            reason=Reason.PEER_UNKNOWN,
        )
    server = conf.server_by_auth_cert(cert_fingerprint)
    if server is None:
        raise TransportError(
            "the calling peer's certificate is not the authentication certificate of any "
            "security server in the global configuration",
            reason=Reason.PEER_UNKNOWN,
        )
    await status.check(cert, conf.trust_anchors)
    return server


@functools.lru_cache(maxsize=MAX_CACHED_PEER_CERTIFICATES)
def _peer_certificate(pem: bytes) -> tuple[x509.Certificate, str]:
    """A peer's certificate (as gRPC hands it over) parsed and fingerprinted once, not per call.
    Raises :class:`~ruta.pki.errors.PkiError` (not cached) if it does not parse."""
    cert = load_certificate(pem)
    return cert, fingerprint(cert)


@dataclass(frozen=True, slots=True)
class _Key:
    server: str
    address: str
    fingerprint: str
    anchors: str


@dataclass
class PeerChannels:
    """One pinned mTLS channel per peer server, shared by every call to that peer.

    ``key_path``/``cert_path`` are this server's auth key and certificate (PEM files).
    """

    key_path: Path
    cert_path: Path
    max_message_bytes: int
    status: PeerStatus
    #: gRPC keepalive options for every peer channel (:func:`keepalive_options`).
    keepalive: tuple[tuple[str, Any], ...] = ()
    _channels: dict[_Key, grpc.aio.Channel] = field(default_factory=dict)
    _pending: dict[_Key, asyncio.Task[grpc.aio.Channel]] = field(default_factory=dict)
    #: The anchors of the configuration in force, their PEM and its digest.
    _anchor_digests: tuple[tuple[x509.Certificate, ...], bytes, str] | None = None
    _credentials: dict[str, grpc.ChannelCredentials] = field(default_factory=dict)
    _closing: set[asyncio.Task[None]] = field(default_factory=set)
    #: Each peer's channel key under the anchors in force, by the peer object (the
    #: configuration's; kept beside its key and checked with ``is``, so a reused id is never
    #: mistaken): made once, not on every call. At most :data:`MAX_CACHED_CHANNEL_KEYS`.
    _keys: dict[int, tuple[SecurityServer, str, _Key]] = field(default_factory=dict)
    #: Which server of a member the next call tries first (round robin, back-off on failure).
    rotation: ServerRotation = field(default_factory=ServerRotation)

    async def channel(
        self, peer: SecurityServer, anchors: Sequence[x509.Certificate]
    ) -> grpc.aio.Channel:
        """The channel to ``peer``, opened and pinned on first use.

        Raises :class:`TransportError` (``peer_unreachable``) when the peer cannot be reached
        or presents a certificate other than the listed one.
        """
        anchors = tuple(anchors)
        known = self._anchor_digests
        # The same tuple as last time (the configuration's), or equal: no certificate hashed.
        if known is None or (known[0] is not anchors and known[0] != anchors):
            anchors_pem = certificate_pem(*anchors)
            known = (anchors, anchors_pem, hashlib.sha256(anchors_pem).hexdigest())
            self._anchor_digests = known  # only the configuration in force
        _, anchors_pem, anchors_digest = known
        made = self._keys.get(id(peer))
        if made is not None and made[0] is peer and made[1] == anchors_digest:
            key = made[2]
        else:
            key = _Key(str(peer.id), peer.address, peer.auth_cert_sha256, anchors_digest)
            remember(
                self._keys, id(peer), (peer, anchors_digest, key), maxsize=MAX_CACHED_CHANNEL_KEYS
            )
        existing = self._channels.get(key)
        if existing is not None:
            return existing
        opening = self._pending.get(key)
        if opening is None:
            # Opened in its own task: a caller whose deadline expires does not cancel the
            # opening for the others waiting on it.
            opening = asyncio.create_task(self._open(peer, anchors, anchors_pem, key))
            self._pending[key] = opening
            opening.add_done_callback(lambda task: self._opened(peer, key, task))
        return await asyncio.shield(opening)

    def order(self, servers: Sequence[SecurityServer]) -> list[SecurityServer]:
        """One member's ``servers`` in the order to try them for the next call: round robin
        over those that answer, the ones that failed lately last
        (:mod:`security_server.balance`)."""
        return self.rotation.order(servers)

    def _opened(
        self, peer: SecurityServer, key: _Key, task: asyncio.Task[grpc.aio.Channel]
    ) -> None:
        self._pending.pop(key, None)
        if task.cancelled():
            return
        if task.exception() is None:
            self._channels[key] = task.result()
            self.rotation.reached(peer.id)
        else:
            self.rotation.failed(peer.id)

    async def _open(
        self,
        peer: SecurityServer,
        anchors: Sequence[x509.Certificate],
        anchors_pem: bytes,
        key: _Key,
    ) -> grpc.aio.Channel:
        await self._check_pin(peer, anchors_pem, anchors)
        # A peer's address, certificate or the anchors changed: its old channels are stale.
        for old in [k for k in self._channels if k.server == key.server]:
            self._retire(self._channels.pop(old))
        credentials = self._credentials.get(key.anchors)
        if credentials is None:
            try:
                credentials = channel_credentials(self.key_path, self.cert_path, anchors_pem)
            except PkiError as exc:
                raise TransportError(
                    f"this server's authentication credentials are unusable: {exc.message}",
                    reason=Reason.OWN_CREDENTIALS,
                ) from None
            self._credentials[key.anchors] = credentials
        options = [
            *grpc_message_options(self.max_message_bytes),
            ("grpc.max_receive_message_length", MAX_PEER_RECEIVE_BYTES),
            *self.keepalive,
        ]
        return grpc.aio.secure_channel(peer.address, credentials, options=options)

    async def _check_pin(
        self, peer: SecurityServer, anchors_pem: bytes, anchors: Sequence[x509.Certificate]
    ) -> None:
        host, port = split_address(peer.address)
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cadata=anchors_pem.decode())
        # The name is checked by gRPC on the real connection; here the fingerprint is the check.
        context.check_hostname = False
        context.load_cert_chain(self.cert_path, self.key_path)
        context.set_alpn_protocols(["h2"])
        try:
            async with asyncio.timeout(PIN_CHECK_TIMEOUT_SECONDS):
                _reader, writer = await asyncio.open_connection(host, port, ssl=context)
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            raise TransportError(
                f"security server {peer.id} at {peer.address} cannot be reached over TLS "
                f"({type(exc).__name__})"
            ) from None
        try:
            ssl_object = writer.get_extra_info("ssl_object")
            der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        finally:
            # A handshake-only probe: drop it without a TLS shutdown. (A graceful close waits for
            # the peer's close_notify, which a gRPC server never sends: under uvloop that hung
            # the first exchange for the whole deadline.)
            writer.transport.abort()
            with contextlib.suppress(OSError, ssl.SSLError):
                await writer.wait_closed()
        if der is None or hashlib.sha256(der).hexdigest() != peer.auth_cert_sha256:
            raise TransportError(
                f"security server {peer.id} at {peer.address} presented an authentication "
                "certificate other than the one the global configuration lists"
            )
        await self.status.check(x509.load_der_x509_certificate(der), anchors)

    def _retire(self, channel: grpc.aio.Channel) -> None:
        # Calls still running on it may finish; new calls get a fresh channel.
        task = asyncio.create_task(channel.close(grace=RETIRED_CHANNEL_GRACE_SECONDS))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    def discard(self, peer: SecurityServer) -> None:
        """Forget every channel to ``peer`` (after a network failure); the next call connects
        and pins again, and until then ``peer`` backs off (:meth:`order` puts it last). Calls in
        flight on the old channels may finish."""
        self.rotation.failed(peer.id)
        for key in [k for k in self._channels if k.server == str(peer.id)]:
            self._retire(self._channels.pop(key))

    async def close(self) -> None:
        """Close every channel (and stop any being opened)."""
        for task in list(self._pending.values()):
            task.cancel()
        await asyncio.gather(*self._pending.values(), return_exceptions=True)
        channels = list(self._channels.values())
        self._channels.clear()
        for channel in channels:
            await channel.close()
        await asyncio.gather(*self._closing, return_exceptions=True)
