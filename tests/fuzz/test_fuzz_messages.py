"""Fuzzing what a security server reads off the wire: call metadata (consumer port), signed
messages with their headers and signatures, batch inclusion paths and frames (transport port).

Each parser returns or raises its typed Ruta error; nothing else escapes.
"""

from __future__ import annotations

import contextlib
import datetime
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding
from hypothesis import given
from hypothesis import strategies as st

from ruta.faults import RutaError
from ruta.ids import ServerId
from ruta.pki.signature import MessageSigner, MessageVerifier
from ruta.pki.testing import Credential, TestPki
from ruta.v1 import transport_pb2
from security_server.headers import (
    CLIENT_HEADER,
    MESSAGE_ID_HEADER,
    build_request_header,
    parse_call_metadata,
    read_header,
)
from security_server.rpc import _parse
from tests.fuzz.support import bytes_or_mutation, fuzz_settings, mutated, text_or_mutation

pytestmark = pytest.mark.fuzz

SOC = ServerId.parse("DEV/GOV/SOC/ss1")
POP = ServerId.parse("DEV/GOV/POP/ss1")
PATH = "/population.v1.PopulationRegister/GetPerson"
METADATA = (
    (CLIENT_HEADER, "DEV/GOV/SOC/benefits"),
    ("ruta-service", "DEV/GOV/POP/registry"),
    ("ruta-purpose", "benefit-eligibility"),
    (MESSAGE_ID_HEADER, "0b428962-6a89-427d-b441-bbf1011aff5a"),
)
KEYS = [k for k, _ in METADATA] + ["ruta-user-id", "ruta-subject", "ruta-other", "x-other", ""]


@dataclass
class World:
    pki: TestPki
    signing: Credential
    verifier: MessageVerifier
    header: bytes
    single: transport_pb2.SignedMessage
    batched: transport_pb2.SignedMessage
    now: datetime.datetime


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    pki = TestPki(Path(tmp_path_factory.mktemp("pki")))
    signing = pki.sign(SOC.member)
    now = datetime.datetime.now(datetime.UTC)
    call = parse_call_metadata(PATH, METADATA)
    headers = []
    for n in range(3):
        _, raw = build_request_header(
            call, body=b"body %d" % n, sender=SOC, receiver=POP, created_at=now
        )
        headers.append(raw)
    signer = MessageSigner(
        signer=signing.signer(), certificate=signing.certificate, chain=pki.chain
    )
    staple = pki.ocsp_response(signing.certificate)
    single = transport_pb2.SignedMessage(
        header=headers[0], body=b"body 0", signature=signer.sign(headers[0], ocsp_response=staple)
    )
    batch = signer.sign_batch(headers, ocsp_response=staple)
    batched = transport_pb2.SignedMessage(header=headers[1], body=b"body 1", signature=batch[1])
    verifier = MessageVerifier(pki.trust_anchors)
    return World(pki, signing, verifier, headers[0], single, batched, now)


@st.composite
def _metadata(draw: st.DrawFn) -> list[tuple[str, str | bytes]]:
    entries: list[tuple[str, str | bytes]] = list(METADATA)
    for _ in range(draw(st.integers(0, 6))):
        action = draw(st.sampled_from(["drop", "add", "change"]))
        if action == "drop" and entries:
            entries.pop(draw(st.integers(0, len(entries) - 1)))
        elif action == "add":
            key = draw(st.one_of(st.sampled_from(KEYS), st.text(max_size=40)))
            value = draw(st.one_of(st.text(max_size=300), st.binary(max_size=300)))
            entries.append((key, value))
        elif entries:
            at = draw(st.integers(0, len(entries) - 1))
            key, value = entries[at]
            raw = value.encode() if isinstance(value, str) else value
            changed = draw(mutated(raw))
            as_text: bool = draw(st.booleans())
            entries[at] = (key, changed.decode("latin-1") if as_text else changed)
    return entries


@fuzz_settings
@given(path=text_or_mutation(PATH), metadata=_metadata())
def test_call_metadata(path: str, metadata: list[tuple[str, str | bytes]]) -> None:
    with contextlib.suppress(RutaError):
        parse_call_metadata(path, metadata)


@fuzz_settings
@given(data=st.data())
def test_received_header(world: World, data: st.DataObject) -> None:
    raw = data.draw(bytes_or_mutation(world.header))
    with contextlib.suppress(RutaError):
        read_header(raw)


def _receive(world: World, raw: bytes) -> None:
    """What the provider does with the bytes of an Exchange call, up to the contract."""
    message = _parse(transport_pb2.SignedMessage, raw, "SignedMessage")
    read = read_header(message.header)
    world.verifier.verify(
        message.header,
        message.signature,
        claimed_member=read.client.member,
        signed_at=read.created_at,
    )


@fuzz_settings
@given(data=st.data(), batched=st.booleans())
def test_signed_message_and_batch_path(world: World, data: st.DataObject, batched: bool) -> None:
    seed = (world.batched if batched else world.single).SerializeToString()
    raw = data.draw(bytes_or_mutation(seed, max_size=8192))
    with contextlib.suppress(RutaError):
        _receive(world, raw)


@fuzz_settings
@given(data=st.data())
def test_signature_fields(world: World, data: st.DataObject) -> None:
    """A well-formed message whose signature fields (value, certificate, chain, OCSP staple,
    batch size/index/path) are mutated one at a time."""
    message = transport_pb2.SignedMessage()
    message.CopyFrom(data.draw(st.sampled_from([world.single, world.batched])))
    signature = message.signature
    name = data.draw(st.sampled_from(["value", "certificate", "ocsp_response", "chain", "batch"]))
    if name == "chain":
        signature.chain.append(
            data.draw(mutated(world.signing.certificate.public_bytes(Encoding.DER)))
        )
    elif name == "batch":
        batch = signature.batch
        batch.size = data.draw(st.integers(0, 2**32 - 1))
        batch.index = data.draw(st.integers(0, 2**32 - 1))
        path = list(batch.proof)
        replace_one: bool = data.draw(st.booleans())
        if path and replace_one:
            path[data.draw(st.integers(0, len(path) - 1))] = data.draw(st.binary(max_size=40))
        else:
            path.extend(data.draw(st.lists(st.binary(max_size=40), max_size=70)))
        del batch.proof[:]
        batch.proof.extend(path)
    else:
        setattr(signature, name, data.draw(mutated(getattr(signature, name))))
    with contextlib.suppress(RutaError):
        _receive(world, message.SerializeToString())


@fuzz_settings
@given(data=st.data())
def test_frames(world: World, data: st.DataObject) -> None:
    """A request frame (the provider's side of a frames stream) and each message in it, as the
    provider handles them; a result frame as the consumer reads it."""
    frame = transport_pb2.RequestFrame()
    frame.requests.add(tag=1, message=world.single, timeout_ms=3000)
    frame.requests.add(tag=2, message=world.batched)
    raw = data.draw(bytes_or_mutation(frame.SerializeToString(), max_size=8192))
    try:
        parsed = _parse(transport_pb2.RequestFrame, raw, "RequestFrame")
    except RutaError:
        parsed = None
    for request in parsed.requests if parsed is not None else ():
        with contextlib.suppress(RutaError):
            _receive(world, request.message.SerializeToString())
    with contextlib.suppress(RutaError):
        _parse(transport_pb2.ResultFrame, raw, "ResultFrame")
