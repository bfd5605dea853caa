"""Fuzzing the signed documents Ruta reads from others: checkpoints and cosignatures (C2SP signed
notes), the global configuration and its anchor, and adapter files.

Each parser returns or raises its typed Ruta error; nothing else escapes.
"""

from __future__ import annotations

import contextlib
import datetime
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.spec import parse_adapter_text
from ruta.checkpoint import (
    Checkpoint,
    NoteSignature,
    SignatureType,
    Verifier,
    cosign,
    open_checkpoint,
    parse_note,
    sign_note,
    verify_cosignature,
)
from ruta.faults import RutaError
from ruta.globalconf import ConfigurationAnchor, sign_configuration, verify_configuration
from ruta.pki.certs import CertificateKind
from ruta.pki.keys import generate_ed25519_key
from ruta.pki.testing import TestPki
from ruta.v1 import globalconf_pb2
from tests.fuzz.support import bytes_or_mutation, fuzz_settings, mutated, text_or_mutation

pytestmark = pytest.mark.fuzz

REPO_ROOT = Path(__file__).resolve().parents[2]
ORIGIN = "DEV/GOV/POP/ss1"
WITNESS = "witness.dev.example"


@dataclass
class Notes:
    log: Verifier
    witness: Verifier
    note: str
    body: str
    cosignature: str


@pytest.fixture(scope="module")
def notes() -> Notes:
    log_key, witness_key = generate_ed25519_key(), generate_ed25519_key()
    body = Checkpoint(ORIGIN, 42, b"\x01" * 32).body()
    return Notes(
        log=Verifier.for_key(ORIGIN, SignatureType.ED25519, log_key),
        witness=Verifier.for_key(WITNESS, SignatureType.COSIGNATURE_V1, witness_key),
        note=sign_note(body, ORIGIN, log_key),
        body=body,
        cosignature=cosign(body, WITNESS, witness_key, 1_700_000_000).line() + "\n",
    )


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", errors="surrogateescape")


@fuzz_settings
@given(data=st.data())
def test_checkpoint_note(notes: Notes, data: st.DataObject) -> None:
    raw = data.draw(bytes_or_mutation(notes.note.encode()))
    for value in (raw, _text(raw)):
        with contextlib.suppress(RutaError):
            parse_note(value)
        with contextlib.suppress(RutaError):
            open_checkpoint(value, notes.log)


@fuzz_settings
@given(body=text_or_mutation(Checkpoint(ORIGIN, 42, b"\x01" * 32).body()))
def test_checkpoint_body(body: str) -> None:
    with contextlib.suppress(RutaError):
        Checkpoint.from_body(body)


@fuzz_settings
@given(data=st.data())
def test_cosignature(notes: Notes, data: st.DataObject) -> None:
    lines = _text(data.draw(bytes_or_mutation(notes.cosignature.encode())))
    body = data.draw(st.one_of(st.just(notes.body), text_or_mutation(notes.body)))
    with contextlib.suppress(RutaError):
        verify_cosignature(body, lines, notes.witness)
    for line in lines.split("\n"):
        with contextlib.suppress(RutaError):
            NoteSignature.parse_line(line)


@dataclass
class Configuration:
    anchor: ConfigurationAnchor
    anchor_text: str
    signed: bytes


@pytest.fixture(scope="module")
def configuration(tmp_path_factory: pytest.TempPathFactory) -> Configuration:
    pki = TestPki(Path(tmp_path_factory.mktemp("pki")))
    signer = pki.issue(CertificateKind.OCSP, name="globalconf-signer")
    now = datetime.datetime.now(datetime.UTC)
    conf = globalconf_pb2.GlobalConfiguration(instance="DEV", serial=7)
    conf.generated_at.FromDatetime(now)
    conf.expires_at.FromDatetime(now + datetime.timedelta(hours=1))
    conf.members.add(id={"instance": "DEV", "member_class": "GOV", "member_code": "POP"})
    signed = sign_configuration(conf, signer=signer.signer(), certificate=signer.certificate)
    anchor = ConfigurationAnchor(
        instance="DEV",
        globalconf_url="http://127.0.0.1:9/globalconf",
        certificates=(signer.certificate,),
    )
    return Configuration(anchor, anchor.to_toml(), signed)


@fuzz_settings
@given(data=st.data())
def test_global_configuration(configuration: Configuration, data: st.DataObject) -> None:
    raw = data.draw(bytes_or_mutation(configuration.signed, max_size=8192))
    with contextlib.suppress(RutaError):
        verify_configuration(raw, configuration.anchor, now=datetime.datetime.now(datetime.UTC))


@fuzz_settings
@given(data=st.data())
def test_configuration_anchor(configuration: Configuration, data: st.DataObject) -> None:
    raw = data.draw(bytes_or_mutation(configuration.anchor_text.encode()))
    for json_format in (False, True):
        with contextlib.suppress(RutaError):
            ConfigurationAnchor.from_text(raw, json_format=json_format)


ADAPTER_FILES = sorted((REPO_ROOT / "adapters" / "examples").glob("*/adapter.toml"))


@fuzz_settings
@given(data=st.data())
def test_adapter_file(data: st.DataObject) -> None:
    seed = data.draw(st.sampled_from(ADAPTER_FILES)).read_bytes()
    raw = data.draw(st.one_of(mutated(seed, max_edits=4), st.binary(max_size=2048)))
    with contextlib.suppress(RutaError):
        parse_adapter_text(_text(raw))
