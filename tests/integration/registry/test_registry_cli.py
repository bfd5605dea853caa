"""Acceptance: a real ``ruta registry serve`` process administered through the real CLI.

Each test runs on SQLite and on PostgreSQL (``postgres`` marker). Changes made with the CLI must
appear in the next configuration served at ``/globalconf`` (verified with the configuration
anchor ``init`` wrote), a member's administrator must be refused everything but its own side of
a contract, and the audit trail must record each change.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from google.protobuf import json_format

from registry.log_keys import parse_vkey
from ruta.checkpoint import (
    Checkpoint,
    SignatureType,
    Verifier,
    sign_note,
    verify_cosignature,
)
from ruta.globalconf import ConfigurationAnchor, GlobalConf, verify_configuration
from ruta.ids import MemberId, ServerId, ServiceId, SubsystemId
from ruta.merkle import leaf_hash
from ruta.pki.certs import fingerprint, gateway_member_of, load_certificate
from ruta.v1 import registry_pb2
from tests.conftest import free_port

pytestmark = pytest.mark.integration

RUTA = str(Path(sys.executable).with_name("ruta"))
PEOPLE = ServiceId.parse("LAC/GOV/POP/registry/population.v1.People")
TAX_APP = SubsystemId.parse("LAC/GOV/TAX/app")
POP_SS1 = ServerId.parse("LAC/GOV/POP/ss1")

PEOPLE_PROTO = """\
syntax = "proto3";
package population.v1;
import "google/protobuf/timestamp.proto";
message PersonQuery { string person_id = 1; }
message Person { string person_id = 1; string name = 2; google.protobuf.Timestamp born = 3; }
service People {
  rpc GetPerson(PersonQuery) returns (Person);
  rpc FindPeople(PersonQuery) returns (Person);
}
"""

#: Longest wait for the registry to start listening (a slow, shared CI machine).
_READY_TIMEOUT_SECONDS = 60.0


@dataclass
class Registry:
    directory: Path
    process: subprocess.Popen[bytes]
    ready: dict[str, Any]

    def ruta(
        self, *args: str, identity: tuple[Path, Path] | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run ``ruta registry ARGS`` as the local operator (or ``identity`` = (cert, key))."""
        extra: list[str] = []
        if identity is not None:
            extra = ["--cert", str(identity[0]), "--key", str(identity[1])]
        command, *rest = args
        argv = [RUTA, "registry", command, *rest, "--dir", str(self.directory), *extra]
        result = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
        if check and result.returncode != 0:
            pytest.fail(f"{' '.join(args)} failed ({result.returncode}): {result.stderr}")
        return result

    def json(self, *args: str, identity: tuple[Path, Path] | None = None) -> Any:
        return json.loads(self.ruta(*args, "--json", identity=identity).stdout)

    def globalconf(self) -> GlobalConf:
        """Fetch /globalconf and verify it against the anchor ``init`` wrote."""
        with urllib.request.urlopen(self.ready["globalconf_url"], timeout=30) as response:
            signed = response.read()
        anchor = ConfigurationAnchor.from_file(self.directory / "globalconf" / "anchor.toml")
        return verify_configuration(signed, anchor, now=datetime.now(UTC))

    def member_admin(self, member: str, tmp: Path) -> tuple[Path, Path]:
        """A member-admin client credential issued through the admin API."""
        name = member.replace("/", "_")
        cert, key = tmp / f"{name}.pem", tmp / f"{name}.key"
        self.ruta(
            "certificate", "issue", "--profile", "role", "--role", f"member-admin:{member}",
            "--new-key", str(key), "--name", f"admin of {member}", "--out", str(cert),
        )  # fmt: skip
        return cert, key


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database(request: pytest.FixtureRequest) -> str | None:
    if request.param == "sqlite":
        return None
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
def registry(tmp_path: Path, database: str | None) -> Iterator[Registry]:
    directory = tmp_path / "registry"
    init = [
        RUTA, "registry", "init", "--dir", str(directory), "--instance", "LAC",
        "--admin-listen", "127.0.0.1:0", "--http-listen", f"127.0.0.1:{free_port()}",
    ]  # fmt: skip
    if database is not None:
        init += ["--db", database]
    subprocess.run(init, check=True, capture_output=True, timeout=120)
    log = (tmp_path / "serve.log").open("wb")
    process = subprocess.Popen(
        [RUTA, "--log-level", "info", "registry", "serve", "--dir", str(directory)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        ready_file = directory / "registry.ready.json"
        deadline = time.monotonic() + _READY_TIMEOUT_SECONDS
        while not ready_file.exists():
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"registry did not start:\n{(tmp_path / 'serve.log').read_text()}")
            time.sleep(0.05)
        ready = json.loads(ready_file.read_text())
        assert ready["pid"] == process.pid
        yield Registry(directory=directory, process=process, ready=ready)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise
        finally:
            log.close()
    assert code == 0, (tmp_path / "serve.log").read_text()
    assert not (directory / "registry.ready.json").exists()


def _populate(registry: Registry, tmp: Path) -> None:
    registry.ruta("member", "add", "LAC/GOV/POP", "--name", "Population Registry")
    registry.ruta("member", "add", "LAC/GOV/TAX", "--name", "Tax Office")
    registry.ruta("subsystem", "add", "LAC/GOV/POP/registry")
    registry.ruta("subsystem", "add", "LAC/GOV/TAX/app")
    proto = tmp / "people.proto"
    proto.write_text(PEOPLE_PROTO)
    registry.ruta(
        "service", "add", str(PEOPLE), "--proto", str(proto), "--description", "People by id",
        "--citizen-minutes", "25", "--paper-forms", "1",
    )  # fmt: skip


def test_cli_changes_appear_in_the_next_served_configuration(
    registry: Registry, tmp_path: Path
) -> None:
    empty = registry.globalconf()
    assert empty.members == ()
    _populate(registry, tmp_path)

    # A security server enrols: its key stays here, the registry's CA certifies it.
    auth_cert, auth_key = tmp_path / "ss1.pem", tmp_path / "ss1.key"
    registry.ruta(
        "certificate", "issue", "--profile", "auth", "--server", str(POP_SS1),
        "--dns", "localhost", "--new-key", str(auth_key), "--out", str(auth_cert),
    )  # fmt: skip
    assert auth_key.stat().st_mode & 0o777 == 0o600
    server = registry.json(
        "server", "add", str(POP_SS1), "--address", "pop.example:8443", "--auth-cert",
        str(auth_cert),
    )  # fmt: skip
    sha256 = fingerprint(load_certificate(auth_cert.read_bytes()))
    assert server["auth_cert_sha256"] == sha256
    # --json is the API's record in protobuf's JSON mapping: it parses back into the record.
    record = json_format.ParseDict(server, registry_pb2.ServerRecord())
    assert ServerId.from_proto(record.id) == POP_SS1

    before_contract = registry.globalconf()
    assert before_contract.serial > empty.serial
    assert [str(m.id) for m in before_contract.members] == ["LAC/GOV/POP", "LAC/GOV/TAX"]
    published_server = before_contract.server(POP_SS1)
    assert published_server is not None
    assert published_server.address == "pop.example:8443"
    assert published_server.auth_cert_sha256 == sha256
    service = before_contract.service(PEOPLE)
    assert service is not None
    assert service.methods == frozenset({"GetPerson", "FindPeople"})
    assert service.savings.citizen_minutes == 25
    assert before_contract.allows(TAX_APP, PEOPLE, "GetPerson", "tax", datetime.now(UTC)) is None

    contract = registry.json(
        "contract", "request", "--consumer", str(TAX_APP), "--service", str(PEOPLE),
        "--method", "GetPerson", "--purpose", "tax", "--legal-basis", "Tax Act s. 12",
        "--rate-limit", "5/s",
    )  # fmt: skip
    assert contract["state"] == "requested"
    assert contract["rate_limit_per_minute"] == 300
    # The provider grants less than asked: what it approves is what the contract carries.
    approved = registry.json(
        "contract", "approve", contract["contract_id"], "--rate-limit", "120/min"
    )
    assert approved["state"] == "approved"
    assert approved["rate_limit_per_minute"] == 120
    assert (
        registry.globalconf().allows(TAX_APP, PEOPLE, "GetPerson", "tax", datetime.now(UTC)) is None
    )
    assert registry.json("contract", "approve", contract["contract_id"])["state"] == "active"

    active = registry.globalconf()
    now = datetime.now(UTC)
    allowed = active.allows(TAX_APP, PEOPLE, "GetPerson", "tax", now)
    assert allowed is not None
    assert allowed.contract_id == contract["contract_id"]
    assert allowed.rate_limit_per_minute == 120
    assert active.allows(TAX_APP, PEOPLE, "FindPeople", "tax", now) is None
    assert active.witness_url.endswith("/witness")
    # The verification parameters every verifier applies travel in the signed document.
    assert (active.ocsp_freshness_seconds, active.ocsp_clock_skew_seconds) == (3600, 300)

    registry.ruta("contract", "revoke", contract["contract_id"])
    assert registry.globalconf().allows(TAX_APP, PEOPLE, "GetPerson", "tax", now) is None


def test_service_add_and_list_print_the_same_labelled_columns(
    registry: Registry, tmp_path: Path
) -> None:
    _populate(registry, tmp_path)
    proto = tmp_path / "people.proto"
    registry.ruta("subsystem", "add", "LAC/GOV/POP/other")
    other = "LAC/GOV/POP/other/population.v1.People"
    added = registry.ruta(
        "service", "add", other, "--proto", str(proto),
        "--method", "GetPerson", "--description", "One\tmethod\nonly",
    ).stdout.splitlines()  # fmt: skip
    listed = registry.ruta("service", "list").stdout.splitlines()
    for table in (added, listed):
        assert table[0].split() == ["ID", "METHODS", "DESCRIPTOR_SHA256", "DESCRIPTION"]
    assert len(added) == 2
    assert len(listed) == 3
    # Columns line up under their labels; the description's tab and line break stay in its cell.
    for header, *lines in (added, listed):
        for line in lines:
            assert line.index(line.split()[1]) == header.index("METHODS")
            assert line.index(line.split()[2]) == header.index("DESCRIPTOR_SHA256")
    by_id = {line.split()[0]: line for line in listed[1:]}
    sha256 = registry.json("service", "list")[0]["descriptor_sha256"]
    assert by_id[str(PEOPLE)].split(maxsplit=3)[1:] == [
        "FindPeople,GetPerson",
        sha256,
        "People by id",
    ]
    assert by_id[other].split()[1:3] == added[1].split()[1:3] == ["GetPerson", sha256]
    assert added[1].endswith("  One method only")


def test_a_rest_service_and_a_gateway_certificate(registry: Registry, tmp_path: Path) -> None:
    _populate(registry, tmp_path)
    openapi = tmp_path / "persons.yaml"
    openapi.write_text(
        "openapi: 3.0.3\ninfo: {title: persons, version: '1'}\n"
        "paths:\n  /persons:\n    get:\n      responses: {'200': {description: all}}\n"
    )
    rest = "LAC/GOV/POP/registry/persons"
    added = registry.json("service", "add", rest, "--openapi", str(openapi))
    assert added["methods"] == ["Call"]
    published = registry.globalconf().service(ServiceId.parse(rest))
    assert published is not None
    assert published.is_rest
    assert json.loads(published.openapi)["paths"]["/persons"]["get"]
    bad = tmp_path / "bad.yaml"
    bad.write_text("openapi: 3.0.3\npaths: {}\n")
    refused = registry.ruta("service", "add", f"{rest}2", "--openapi", str(bad), check=False)
    assert refused.returncode != 0
    assert "invalid" in refused.stderr
    cert, key = tmp_path / "gateway.pem", tmp_path / "gateway.key"
    registry.ruta(
        "certificate", "issue", "--profile", "gateway", "--member", "LAC/GOV/POP",
        "--new-key", str(key), "--out", str(cert),
    )  # fmt: skip
    assert gateway_member_of(load_certificate(cert.read_bytes())) == MemberId.parse("LAC/GOV/POP")


def test_a_certificate_is_revoked_through_the_admin_api(registry: Registry, tmp_path: Path) -> None:
    _populate(registry, tmp_path)
    cert, key = tmp_path / "gateway.pem", tmp_path / "gateway.key"
    issued = registry.json(
        "certificate", "issue", "--profile", "gateway", "--member", "LAC/GOV/POP",
        "--new-key", str(key), "--out", str(cert),
    )  # fmt: skip
    revoked = registry.json(
        "certificate", "revoke", "--serial", issued["serial"], "--reason", "keyCompromise"
    )
    assert revoked["serial"] == issued["serial"]
    trail = registry.json("audit", "list")
    assert trail[-1]["action"] == "certificate.revoke"
    assert trail[-1]["object_id"] == issued["serial"]
    again = registry.ruta("certificate", "revoke", "--serial", issued["serial"], check=False)
    assert again.returncode != 0
    assert "client.already_exists" in again.stderr
    unknown = registry.ruta("certificate", "revoke", "--serial", "abc123", check=False)
    assert "client.not_found" in unknown.stderr


def test_dir_help_names_its_environment_variable() -> None:
    for command in (("service", "list"), ("serve",)):
        result = subprocess.run(
            [RUTA, "registry", *command, "--help"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        assert "RUTA_REGISTRY_DIR" in " ".join(result.stdout.split()), command


def test_member_admin_cannot_touch_other_members_objects(
    registry: Registry, tmp_path: Path
) -> None:
    _populate(registry, tmp_path)
    tax = registry.member_admin("LAC/GOV/TAX", tmp_path)
    pop = registry.member_admin("LAC/GOV/POP", tmp_path)
    before = registry.json("audit", "list")

    refused = [
        ("member", "add", "LAC/GOV/EVIL", "--name", "Evil"),
        ("subsystem", "add", "LAC/GOV/POP/other"),
        ("contract", "request", "--consumer", "LAC/GOV/POP/registry", "--service", str(PEOPLE),
         "--purpose", "p", "--legal-basis", "l"),
        ("contract", "list", "--member", "LAC/GOV/POP"),
        ("audit", "list"),
    ]  # fmt: skip
    for args in refused:
        result = registry.ruta(*args, identity=tax, check=False)
        assert result.returncode != 0, args
        assert "client.permission_denied" in result.stderr, (args, result.stderr)

    contract = registry.json(
        "contract", "request", "--consumer", str(TAX_APP), "--service", str(PEOPLE),
        "--purpose", "tax", "--legal-basis", "Tax Act", identity=tax,
    )  # fmt: skip
    # The consumer's administrator may not approve on the provider's behalf ...
    result = registry.ruta(
        "contract", "approve", contract["contract_id"], identity=tax, check=False
    )
    assert "client.permission_denied" in result.stderr
    # ... the provider's may, but activation is the registry's step.
    approved = registry.json("contract", "approve", contract["contract_id"], identity=pop)
    assert approved["state"] == "approved"
    assert approved["approved_by"].startswith("admin of LAC/GOV/POP (sha256:")
    result = registry.ruta(
        "contract", "approve", contract["contract_id"], identity=pop, check=False
    )
    assert "client.permission_denied" in result.stderr
    result = registry.ruta("contract", "revoke", contract["contract_id"], identity=pop, check=False)
    assert "client.permission_denied" in result.stderr

    listed = registry.json("contract", "list", identity=tax)
    assert [c["contract_id"] for c in listed] == [contract["contract_id"]]
    after = registry.json("audit", "list")
    assert [e["action"] for e in after[len(before) :]] == [
        "contract.request",
        "contract.approve",
    ]


def test_audit_trail_records_each_change(registry: Registry, tmp_path: Path) -> None:
    _populate(registry, tmp_path)
    contract = registry.json(
        "contract", "request", "--consumer", str(TAX_APP), "--service", str(PEOPLE),
        "--purpose", "tax", "--legal-basis", "Tax Act",
    )  # fmt: skip
    registry.ruta("contract", "approve", contract["contract_id"])
    entries = registry.json("audit", "list")
    assert [(e["action"], e["object_id"]) for e in entries] == [
        ("administrator.add", "local operator"),
        ("member.add", "LAC/GOV/POP"),
        ("member.add", "LAC/GOV/TAX"),
        ("subsystem.add", "LAC/GOV/POP/registry"),
        ("subsystem.add", "LAC/GOV/TAX/app"),
        ("service.add", str(PEOPLE)),
        ("contract.request", contract["contract_id"]),
        ("contract.approve", contract["contract_id"]),
    ]
    # --json prints the API's records through protobuf's JSON mapping: uint64 as text.
    seqs = [int(e["seq"]) for e in entries]
    assert seqs == sorted(seqs)
    assert all(e["actor"].startswith("local operator (sha256:") for e in entries[1:])
    member = entries[1]
    assert member["before_json"] == ""
    assert json.loads(member["after_json"])["name"] == "Population Registry"
    approval = entries[-1]
    assert json.loads(approval["before_json"])["state"] == "requested"
    after = json.loads(approval["after_json"])
    assert after["state"] == "approved"
    assert after["approved_by"] == approval["actor"]
    stamps = [datetime.fromisoformat(e["at"]) for e in entries]
    assert stamps == sorted(stamps)
    page = registry.json("audit", "list", "--after", str(entries[3]["seq"]), "--limit", "2")
    assert [e["seq"] for e in page] == [entries[4]["seq"], entries[5]["seq"]]


def _add_checkpoint(registry: Registry, body: bytes) -> tuple[int, str]:
    request = urllib.request.Request(
        registry.ready["http"] + "/witness/add-checkpoint", data=body, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.read().decode()


def test_witness_cosigns_checkpoints_of_registered_log_keys(
    registry: Registry, tmp_path: Path
) -> None:
    registry.ruta("member", "add", "LAC/GOV/POP", "--name", "Population Registry")
    auth_cert, auth_key = tmp_path / "ss1.pem", tmp_path / "ss1.key"
    registry.ruta(
        "certificate", "issue", "--profile", "auth", "--server", str(POP_SS1),
        "--new-key", str(auth_key), "--out", str(auth_cert),
    )  # fmt: skip
    registry.ruta(
        "server", "add", str(POP_SS1), "--address", "pop.example:8443", "--auth-cert",
        str(auth_cert),
    )  # fmt: skip
    origin = str(POP_SS1)
    log_key = Ed25519PrivateKey.generate()
    checkpoint = Checkpoint(origin, 1, leaf_hash(b"first message")).body()
    body = b"old 0\n\n" + sign_note(checkpoint, origin, log_key).encode()
    status, _ = _add_checkpoint(registry, body)
    assert status == 404  # no log key registered for that origin yet

    vkey = Verifier.for_key(origin, SignatureType.ED25519, log_key).vkey()
    updated = registry.json("server", "update", str(POP_SS1), "--log-key", vkey)
    assert updated["log_public_key"] == vkey
    conf = registry.globalconf()
    published = conf.server(POP_SS1)
    assert published is not None
    assert published.log_public_key == vkey

    status, lines = _add_checkpoint(registry, body)
    assert status == 200, lines
    witness = parse_vkey(conf.witness_public_key.decode(), kind=SignatureType.COSIGNATURE_V1)
    assert verify_cosignature(checkpoint, lines, witness) > 0
    bad = registry.ruta("server", "update", str(POP_SS1), "--log-key", "not-a-key", check=False)
    assert "client.invalid_request" in bad.stderr
