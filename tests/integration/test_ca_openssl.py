"""Acceptance of the CA with the real ``openssl`` binary and the installed ``ruta`` command.

An OpenSSL-made CSR goes through ``ruta registry ca issue``; the certificate passes
``openssl verify``, shows its profile in ``openssl x509 -text``, and ``openssl ocsp`` against a
running ``ruta registry ocsp serve`` reports it good, then revoked after ``ruta registry ca revoke``
(run in another process than the responder).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import free_port

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl binary"),
]

RUTA = Path(sys.executable).parent / "ruta"


def _run(*args: str | Path, cwd: Path) -> str:
    done = subprocess.run(
        [str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, f"{args[0]} failed: {done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


def _ruta(*args: str | Path, cwd: Path) -> str:
    return _run(RUTA, *args, cwd=cwd)


def _openssl_csr(cwd: Path, name: str) -> Path:
    _run(
        "openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
        "-nodes", "-keyout", f"{name}.key", "-subj", f"/CN={name}/O=Made by OpenSSL",
        "-out", f"{name}.csr",
        cwd=cwd,
    )  # fmt: skip
    return cwd / f"{name}.csr"


def _wait_for_port(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.poll() is None, "the OCSP responder exited"
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    pytest.fail("the OCSP responder did not start listening")


@pytest.fixture
def responder_port() -> int:
    return free_port()


def _serve(directory: Path, port: int, cwd: Path) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        [
            str(RUTA),
            "registry",
            "ocsp",
            "serve",
            "--dir",
            str(directory),
            "--listen",
            f"127.0.0.1:{port}",
        ],
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    _wait_for_port(port, process)
    return process


@pytest.fixture
def stop() -> Iterator[list[subprocess.Popen[bytes]]]:
    processes: list[subprocess.Popen[bytes]] = []
    yield processes
    for process in processes:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stderr is not None:
            process.stderr.close()


def _ocsp(cwd: Path, issuer: Path, cert: Path, port: int, *extra: str) -> str:
    return _run(
        "openssl", "ocsp", "-issuer", issuer, "-cert", cert,
        "-url", f"http://127.0.0.1:{port}/ocsp", *extra,
        cwd=cwd,
    )  # fmt: skip


def test_openssl_csr_issue_verify_profile_ocsp_revoke(
    tmp_path: Path, responder_port: int, stop: list[subprocess.Popen[bytes]]
) -> None:
    url = f"http://127.0.0.1:{responder_port}/ocsp"
    _ruta(
        "registry",
        "ca",
        "init",
        "--dir",
        "ca",
        "--name",
        "Test Root",
        "--ocsp-url",
        url,
        cwd=tmp_path,
    )
    anchor = tmp_path / "ca" / "anchor.pem"
    issuer = tmp_path / "ca" / "ca.pem"

    # A member's signing certificate from an OpenSSL-made CSR.
    csr = _openssl_csr(tmp_path, "sign")
    serial = _ruta(
        "registry", "ca", "issue", "--dir", "ca", "--csr", csr, "--kind", "sign",
        "--member", "LAC/GOV/POP", "--out", "sign.pem",
        cwd=tmp_path,
    ).strip()  # fmt: skip
    assert "sign.pem: OK" in _run("openssl", "verify", "-CAfile", anchor, "sign.pem", cwd=tmp_path)
    text = _run("openssl", "x509", "-in", "sign.pem", "-noout", "-text", cwd=tmp_path)
    assert "Digital Signature, Non Repudiation" in text
    assert "1.3.6.1.5.5.7.3.36" in text or "Document Signing" in text
    assert "URI:urn:ruta:member:LAC/GOV/POP" in text
    assert f"OCSP - URI:{url}" in text
    assert "CA:FALSE" in text

    # A security server's authentication certificate, with its address.
    csr = _openssl_csr(tmp_path, "auth")
    _ruta(
        "registry", "ca", "issue", "--dir", "ca", "--csr", csr, "--kind", "auth",
        "--server", "LAC/GOV/POP/ss1", "--dns", "ss1.pop.example", "--ip", "127.0.0.1",
        "--out", "auth.pem",
        cwd=tmp_path,
    )  # fmt: skip
    for purpose in ("sslserver", "sslclient"):
        verified = _run(
            "openssl", "verify", "-purpose", purpose, "-CAfile", anchor, "auth.pem", cwd=tmp_path
        )
        assert "auth.pem: OK" in verified
    text = _run("openssl", "x509", "-in", "auth.pem", "-noout", "-text", cwd=tmp_path)
    assert "TLS Web Server Authentication, TLS Web Client Authentication" in text
    assert "URI:urn:ruta:server:LAC/GOV/POP/ss1" in text
    assert "DNS:ss1.pop.example" in text
    assert "IP Address:127.0.0.1" in text
    assert f"OCSP - URI:{url}" in text

    # The responder in its own process; revocations come from yet another process.
    stop.append(_serve(tmp_path / "ca", responder_port, tmp_path))
    answer = _ocsp(tmp_path, issuer, tmp_path / "sign.pem", responder_port, "-CAfile", str(anchor))
    assert "Response verify OK" in answer
    assert "sign.pem: good" in answer

    _ruta(
        "registry",
        "ca",
        "revoke",
        "--dir",
        "ca",
        "--serial",
        serial,
        "--reason",
        "keyCompromise",
        cwd=tmp_path,
    )
    answer = _ocsp(tmp_path, issuer, tmp_path / "sign.pem", responder_port, "-CAfile", str(anchor))
    assert "Response verify OK" in answer
    assert "sign.pem: revoked" in answer
    assert "Reason: keyCompromise" in answer
    # The other certificate is untouched.
    answer = _ocsp(tmp_path, issuer, tmp_path / "auth.pem", responder_port, "-CAfile", str(anchor))
    assert "auth.pem: good" in answer


def test_intermediate_ca_under_an_existing_root(
    tmp_path: Path, responder_port: int, stop: list[subprocess.Popen[bytes]]
) -> None:
    url = f"http://127.0.0.1:{responder_port}/ocsp"
    _ruta(
        "registry",
        "ca",
        "init",
        "--dir",
        "root",
        "--ocsp-url",
        "http://127.0.0.1:9/unused",
        cwd=tmp_path,
    )
    _ruta(
        "registry", "ca", "init", "--dir", "issuing", "--name", "Issuing CA", "--ocsp-url", url,
        "--parent-key", "root/ca.key", "--parent-cert", "root/ca.pem",
        cwd=tmp_path,
    )  # fmt: skip
    csr = _openssl_csr(tmp_path, "backend")
    _ruta(
        "registry", "ca", "issue", "--dir", "issuing", "--csr", csr, "--kind", "subsystem",
        "--subsystem", "LAC/GOV/POP/registry", "--out", "backend.pem", "--chain-out", "chain.pem",
        cwd=tmp_path,
    )  # fmt: skip
    verified = _run(
        "openssl", "verify", "-CAfile", "root/anchor.pem", "-untrusted", "issuing/ca.pem",
        "backend.pem",
        cwd=tmp_path,
    )  # fmt: skip
    assert "backend.pem: OK" in verified
    assert (tmp_path / "chain.pem").read_text().count("BEGIN CERTIFICATE") == 3

    stop.append(_serve(tmp_path / "issuing", responder_port, tmp_path))
    answer = _ocsp(
        tmp_path, tmp_path / "issuing" / "ca.pem", tmp_path / "backend.pem", responder_port,
        "-CAfile", "root/anchor.pem", "-verify_other", "issuing/ca.pem",
    )  # fmt: skip
    assert "Response verify OK" in answer
    assert "backend.pem: good" in answer


def test_cli_refusals_print_faults_not_tracebacks(tmp_path: Path) -> None:
    done = subprocess.run(
        [str(RUTA), "registry", "ca", "revoke", "--dir", "nowhere", "--serial", "ab"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    assert "client.not_found" in done.stderr
    assert "Traceback" not in done.stderr
