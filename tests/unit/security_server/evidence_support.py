"""A consumer's and a provider's message logs holding real signed exchanges, witnessed
checkpoints and a signed global configuration: what the evidence tests export and verify."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from google.protobuf import timestamp_pb2
from sqlalchemy.ext.asyncio import AsyncEngine

from registry.witness import MemoryWitnessStateStore, Witness
from ruta.checkpoint import Checkpoint, sign_note
from ruta.globalconf import ConfigurationAnchor, sign_configuration
from ruta.ids import MemberId, ServerId, ServiceId, SubsystemId
from ruta.pki.certs import certificate_der
from ruta.pki.keys import generate_ed25519_key
from ruta.pki.signature import MessageSigner, sign_message
from ruta.pki.testing import Credential, TestPki
from ruta.v1 import globalconf_pb2, transport_pb2
from security_server.checkpointer import log_verifier
from security_server.database import open_database
from security_server.evidence import EvidenceFilter, build_bundle
from security_server.log import BodyKey, Direction, LogEntry, MessageLog

INSTANCE = "DEV"
SOC = MemberId.parse("DEV/GOV/SOC")
POP = MemberId.parse("DEV/GOV/POP")
REG = MemberId.parse("DEV/GOV/REG")
CLIENT = SubsystemId(SOC, "benefits")
PROVIDER = SubsystemId(POP, "registry")
SERVICE = ServiceId(PROVIDER, "population.v1.PopulationRegister")
SOC_SS = ServerId(SOC, "ss1")
POP_SS = ServerId(POP, "ss1")


def _ts(at: datetime) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(at)
    return ts


def _header(
    message_id: str,
    subject: str,
    body: bytes,
    now: datetime,
    *,
    request: bool,
    request_hash: bytes = b"",
    status_code: int = 0,
    fault: str = "",
    backend_fault: str = "",
    backend_fault_id: str = "",
) -> bytes:
    return transport_pb2.MessageHeader(
        message_id=message_id,
        kind=transport_pb2.MESSAGE_KIND_REQUEST if request else transport_pb2.MESSAGE_KIND_RESPONSE,
        client=CLIENT.to_proto(),
        service=SERVICE.to_proto(),
        method="GetPerson",
        purpose="benefit-eligibility",
        subject=subject,
        created_at=_ts(now),
        body_sha256=hashlib.sha256(body).digest(),
        sender=(SOC_SS if request else POP_SS).to_proto(),
        receiver=(POP_SS if request else SOC_SS).to_proto(),
        request_hash=request_hash,
        status_code=status_code,
        fault=fault,
        backend_fault=backend_fault,
        backend_fault_id=backend_fault_id,
    ).SerializeToString(deterministic=True)


@dataclass
class Side:
    """One security server's log, its log key and body key."""

    server: ServerId
    engine: AsyncEngine
    log: MessageLog
    key: Ed25519PrivateKey
    body_key: BodyKey
    db_path: Path

    async def close(self) -> None:
        await self.log.close()
        await self.engine.dispose()


@dataclass
class Scenario:
    """Two servers that exchanged messages, a witness, a PKI and the configuration in force."""

    pki: TestPki
    consumer: Side
    provider: Side
    witness: Witness
    signed_globalconf: bytes
    anchor: ConfigurationAnchor
    soc_signer: Credential
    pop_signer: Credential
    #: The registry's configuration signer and the witness's key (to build forgeries).
    registry_signer: Credential
    witness_key: Ed25519PrivateKey
    message_ids: list[str] = field(default_factory=list)

    async def exchange(
        self,
        subject: str = "person-1",
        *,
        status_code: int = 0,
        fault: str = "",
        backend_fault: str = "",
        backend_fault_id: str = "",
    ) -> str:
        """One signed request and response, logged on both sides as the proxies do; the
        response carries ``status_code`` and ``fault`` (the provider server's refusal, say), or
        ``backend_fault`` and ``backend_fault_id`` (its backend's, docs/adr/0024)."""
        return (
            await self.exchanges(
                [subject],
                status_code=status_code,
                fault=fault,
                backend_fault=backend_fault,
                backend_fault_id=backend_fault_id,
            )
        )[0]

    async def exchanges(
        self,
        subjects: Sequence[str],
        *,
        batched: bool = False,
        status_code: int = 0,
        fault: str = "",
        backend_fault: str = "",
        backend_fault_id: str = "",
    ) -> list[str]:
        """One exchange per subject, logged in order; ``batched``: the requests signed as one
        batch and the responses as another (docs/adr/0010), else each signed alone."""
        now = datetime.now(UTC).replace(microsecond=0)
        message_ids = [str(uuid.uuid4()) for _ in subjects]
        bodies = [f"GetPerson({subject})".encode() for subject in subjects]
        requests = [
            _header(message_id, subject, body, now, request=True)
            for message_id, subject, body in zip(message_ids, subjects, bodies, strict=True)
        ]
        request_sigs = self._sign_all(requests, self.soc_signer, batched=batched)
        answers = [f"Person({subject})".encode() for subject in subjects]
        responses = [
            _header(
                message_id,
                subject,
                answer,
                now,
                request=False,
                request_hash=hashlib.sha256(request + sig.value).digest(),
                status_code=status_code,
                fault=fault,
                backend_fault=backend_fault,
                backend_fault_id=backend_fault_id,
            )
            for message_id, subject, answer, request, sig in zip(
                message_ids, subjects, answers, requests, request_sigs, strict=True
            )
        ]
        response_sigs = self._sign_all(responses, self.pop_signer, batched=batched)
        for i, message_id in enumerate(message_ids):
            req = (requests[i], request_sigs[i], self.soc_signer, bodies[i])
            resp = (responses[i], response_sigs[i], self.pop_signer, answers[i])
            await self._log(self.consumer, Direction.SENT, *req)
            await self._log(self.provider, Direction.RECEIVED, *req)
            await self._log(self.provider, Direction.SENT, *resp)
            await self._log(self.consumer, Direction.RECEIVED, *resp)
            self.message_ids.append(message_id)
        return message_ids

    async def provider_only_exchange(
        self,
        *,
        request_signer: Credential | None = None,
        ocsp_this_update: datetime | None = None,
        fingerprint: str | None = None,
        request_hash: bytes | None = None,
    ) -> str:
        """One exchange logged on the provider's side only, deviating from an honest one as
        asked: the request signed by ``request_signer``, stapled OCSP responses issued at
        ``ocsp_this_update``, the request logged with certificate ``fingerprint``, or the
        response bound to ``request_hash``. What a verifier must catch (or, for an OCSP time
        within the configuration's bounds, accept)."""
        now = datetime.now(UTC).replace(microsecond=0)
        message_id = str(uuid.uuid4())
        body, answer = b"GetPerson(odd)", b"Person(odd)"
        signer = request_signer or self.soc_signer
        request = _header(message_id, "odd", body, now, request=True)
        request_sig = sign_message(
            request,
            signer=signer.signer(),
            certificate=signer.certificate,
            ocsp_response=self.pki.ocsp_response(signer.certificate, this_update=ocsp_this_update),
        )
        bound = request_hash or hashlib.sha256(request + request_sig.value).digest()
        response = _header(message_id, "odd", answer, now, request=False, request_hash=bound)
        response_sig = sign_message(
            response,
            signer=self.pop_signer.signer(),
            certificate=self.pop_signer.certificate,
            ocsp_response=self.pki.ocsp_response(
                self.pop_signer.certificate, this_update=ocsp_this_update
            ),
        )
        await self._log(
            self.provider,
            Direction.RECEIVED,
            request,
            request_sig,
            signer,
            body,
            fingerprint=fingerprint,
        )
        await self._log(
            self.provider, Direction.SENT, response, response_sig, self.pop_signer, answer
        )
        return message_id

    async def repeated_request(self, message_id: str, subject: str = "person-1") -> None:
        """A second request under a message id already used, signed and logged by the consumer
        alone (the provider refused it as a replay): what a consumer did before it refused
        reused ids itself."""
        now = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=1)
        body = f"GetPerson({subject})".encode()
        header = _header(message_id, subject, body, now, request=True)
        signature = self._sign(header, self.soc_signer)
        await self._log(self.consumer, Direction.SENT, header, signature, self.soc_signer, body)

    def _sign_all(
        self, headers: list[bytes], credential: Credential, *, batched: bool
    ) -> list[transport_pb2.Signature]:
        if not batched:
            return [self._sign(h, credential) for h in headers]
        signer = MessageSigner(signer=credential.signer(), certificate=credential.certificate)
        return signer.sign_batch(
            headers, ocsp_response=self.pki.ocsp_response(credential.certificate)
        )

    def _sign(self, header: bytes, credential: Credential) -> transport_pb2.Signature:
        return sign_message(
            header,
            signer=credential.signer(),
            certificate=credential.certificate,
            ocsp_response=self.pki.ocsp_response(credential.certificate),
        )

    @staticmethod
    async def _log(
        side: Side,
        direction: Direction,
        header: bytes,
        signature: transport_pb2.Signature,
        credential: Credential,
        body: bytes,
        *,
        fingerprint: str | None = None,
    ) -> None:
        entry = LogEntry.from_signed(
            direction=direction,
            header=header,
            signature=signature.SerializeToString(deterministic=True),
            certificate_fingerprint=fingerprint or hashlib.sha256(credential.der).hexdigest(),
            body=body,
        )
        await side.log.append([entry])

    async def checkpoint(self) -> None:
        """Checkpoint both logs and have the witness cosign them (in-process witness)."""
        for side in (self.consumer, self.provider):
            await cosign_head(side, self.witness)

    async def export(self, side: Side, query: EvidenceFilter | None = None) -> bytes:
        return await build_bundle(
            log=side.log,
            engine=side.engine,
            server=str(side.server),
            key=side.key,
            globalconf=self.signed_globalconf,
            query=query or EvidenceFilter(),
            bodies_permitted=lambda _record: True,
        )

    async def close(self) -> None:
        await self.consumer.close()
        await self.provider.close()


async def cosign_head(side: Side, witness: Witness) -> None:
    """What the checkpointer does, in-process: sign the head, store, cosign, store."""
    head = side.log.head()
    origin = side.log.origin
    note = sign_note(Checkpoint(origin, head.size, head.root).body(), origin, side.key)
    await side.log.save_checkpoint(size=head.size, root=head.root, note=note)
    last = await side.log.latest_checkpoint(cosigned=True)
    old = last.size if last is not None else 0
    proof = await side.log.consistency_proof(old, head.size) if old else []
    lines = await witness.add_checkpoint(old, proof, note)
    await side.log.save_cosignature(head.size, "".join(lines), datetime.now(UTC))


async def _side(tmp_path: Path, server: ServerId, url: str | None) -> Side:
    db = tmp_path / f"{server.code}-{server.member.member_code}.db"
    engine = await open_database(url or f"sqlite+aiosqlite:///{db}")
    body_key = BodyKey.generate()
    log = await MessageLog.open(engine, origin=str(server), body_key=body_key)
    return Side(server, engine, log, generate_ed25519_key(), body_key, db)


@asynccontextmanager
async def scenario(
    tmp_path: Path, *, exchanges: int = 3, url: str | None = None
) -> AsyncIterator[Scenario]:
    """Two servers with ``exchanges`` exchanges, checkpointed after the first and at the end.

    Each side has its own SQLite file, or with ``url`` both share that database (one tree per
    origin, as nodes sharing PostgreSQL do)."""
    pki = TestPki(tmp_path / "pki")
    consumer = await _side(tmp_path, SOC_SS, url)
    provider = await _side(tmp_path, POP_SS, url)
    witness_key = generate_ed25519_key()
    witness = Witness(
        name="registry.dev/witness",
        key=witness_key,
        logs={
            side.log.origin: [log_verifier(side.log.origin, side.key)]
            for side in (consumer, provider)
        },
        store=MemoryWitnessStateStore(),
    )
    registry = pki.sign(REG)
    now = datetime.now(UTC).replace(microsecond=0)
    conf = globalconf_pb2.GlobalConfiguration(
        instance=INSTANCE,
        serial=1,
        generated_at=_ts(now),
        expires_at=_ts(now + timedelta(hours=1)),
        trust_anchors=[certificate_der(c) for c in pki.trust_anchors],
        witness_public_key=witness.verifier.vkey().encode(),
        witness_url="http://127.0.0.1:9/witness",
    )
    for member, name in ((SOC, "Social"), (POP, "Population"), (REG, "Registry")):
        conf.members.add(id=member.to_proto(), name=name)
    conf.subsystems.add(id=CLIENT.to_proto())
    conf.subsystems.add(id=PROVIDER.to_proto())
    for side in (consumer, provider):
        conf.servers.add(
            id=side.server.to_proto(),
            address="127.0.0.1:1",
            auth_cert_sha256=hashlib.sha256(str(side.server).encode()).hexdigest(),
            log_public_key=log_verifier(side.log.origin, side.key).vkey(),
        )
    signed = sign_configuration(conf, signer=registry.signer(), certificate=registry.certificate)
    anchor = ConfigurationAnchor(
        instance=INSTANCE,
        globalconf_url="http://127.0.0.1:9/globalconf",
        certificates=(registry.certificate,),
    )
    built = Scenario(
        pki=pki,
        consumer=consumer,
        provider=provider,
        witness=witness,
        signed_globalconf=signed,
        anchor=anchor,
        soc_signer=pki.sign(SOC),
        pop_signer=pki.sign(POP),
        registry_signer=registry,
        witness_key=witness_key,
    )
    try:
        if exchanges:
            await built.exchange("person-0")
            await built.checkpoint()
            for i in range(1, exchanges):
                await built.exchange(f"person-{i}")
            await built.checkpoint()
        yield built
    finally:
        await built.close()
