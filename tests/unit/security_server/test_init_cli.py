"""``ruta ss init --offline``: keys made here (0600), CSRs, then settings once the certificates
issued out of band sit beside them. (Enrolment over the registry's admin API is exercised end to
end by tests/e2e/test_sandbox.py.)"""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography import x509
from cryptography.x509.oid import NameOID

from ruta.globalconf import ConfigurationAnchor
from ruta.ids import MemberId, ServerId
from ruta.pki.certs import CertificateKind
from ruta.pki.keys import load_private_key
from ruta.pki.testing import TestPki
from security_server.init_cli import init
from security_server.settings import SecurityServerSettings

SERVER = ServerId.parse("DEV/GOV/POP/ss1")
SERVICE = "DEV/GOV/POP/registry/population.v1.PopulationRegister"


def _anchor(tmp_path: Path, pki: TestPki) -> Path:
    signer = pki.issue(CertificateKind.OCSP, name="config-signer")
    path = tmp_path / "anchor.toml"
    path.write_text(
        ConfigurationAnchor(
            instance="DEV",
            globalconf_url="http://127.0.0.1:1/globalconf",
            certificates=(signer.certificate,),
        ).to_toml()
    )
    return path


def _run(args: list[str]) -> str:
    result = CliRunner().invoke(init, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture
def pki(tmp_path: Path) -> TestPki:
    return TestPki(tmp_path / "pki", ocsp_url="http://127.0.0.1:1/ocsp")


def test_offline_makes_keys_and_csrs_then_settings(tmp_path: Path, pki: TestPki) -> None:
    directory = tmp_path / "ss"
    args = [
        "--dir",
        str(directory),
        "--server-id",
        str(SERVER),
        "--transport-listen",
        "127.0.0.1:5500",
        "--audit-listen",
        "127.0.0.1:5501",
        "--anchor",
        str(_anchor(tmp_path, pki)),
        "--backend",
        f"{SERVICE}=127.0.0.1:50051",
        "--offline",
    ]
    assert "auth.csr" in _run(args)
    keys = directory / "keys"
    for key in (
        keys / "auth.key",
        keys / "sign.key",
        directory / "data" / "keys" / "log-ed25519.key",
        directory / "data" / "keys" / "log-body.key",
    ):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600, key
    csr = x509.load_pem_x509_csr((keys / "auth.csr").read_bytes())
    assert csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == str(SERVER)
    assert csr.is_signature_valid
    assert (directory / "log.vkey").read_text().startswith(f"{SERVER}+")
    assert not (directory / "ss.toml").exists()

    # Certified out of band, for the keys init made.
    auth = pki.issue(CertificateKind.AUTH, server=SERVER, key=load_private_key(keys / "auth.key"))
    sign = pki.issue(
        CertificateKind.SIGN,
        member=MemberId.parse("DEV/GOV/POP"),
        key=load_private_key(keys / "sign.key"),
    )
    (keys / "auth.pem").write_bytes(auth.pem)
    (keys / "sign.pem").write_bytes(sign.pem)
    (directory / "ca.pem").write_bytes(pki.trust_path.read_bytes())
    before = (keys / "auth.key").read_bytes()

    settings_path = Path(_run(args).strip())
    assert settings_path == directory / "ss.toml"
    assert (keys / "auth.key").read_bytes() == before  # keys are kept
    settings = SecurityServerSettings.from_file(settings_path)
    assert settings.server_identifier == SERVER
    assert settings.transport.listen == "127.0.0.1:5500"
    assert settings.audit.listen == "127.0.0.1:5501"
    assert [b.service for b in settings.backends] == [SERVICE]
    text = settings_path.read_text()
    for path in (settings.keys.auth_key, settings.globalconf.anchor, settings.data_dir):
        assert path.is_absolute()
        assert str(path) in text  # written absolute: the file is self-contained
    # Backends as [[backends]] tables (the documented form): one appended by hand fits in.
    assert "\n[[backends]]\nservice = " in text
    settings_path.write_text(
        text + '\n[[backends]]\nservice = "DEV/GOV/POP/registry/a.v1.B"\naddress = "127.0.0.1:9"\n'
    )
    assert len(SecurityServerSettings.from_file(settings_path).backends) == 2


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--server-id", "DEV/GOV/POP"], "server"),
        (["--server-id", str(SERVER), "--transport-listen", "nope"], "host:port"),
    ],
)
def test_bad_arguments_are_refused(tmp_path: Path, extra: list[str], message: str) -> None:
    args = ["--dir", str(tmp_path / "ss"), "--transport-listen", "127.0.0.1:5500", "--offline"]
    result = CliRunner().invoke(init, [*args, *extra])
    assert result.exit_code != 0
    assert message in result.output.lower()


def test_without_registry_or_offline_it_asks_for_the_registry(tmp_path: Path, pki: TestPki) -> None:
    result = CliRunner().invoke(
        init,
        [
            "--dir",
            str(tmp_path / "ss"),
            "--server-id",
            str(SERVER),
            "--transport-listen",
            "127.0.0.1:5500",
            "--anchor",
            str(_anchor(tmp_path, pki)),
        ],
    )
    assert result.exit_code != 0
    assert "--registry" in result.output
