"""The adapter's gRPC server: bounds, undecodable requests, unmapped methods, mutual TLS."""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from adapters.errors import AdapterConfigError
from adapters.server import Adapter, start_server
from ruta.faults import Fault, fault_from_rpc_error
from tests.integration.adapters.support import serving

PROTO = """
syntax = "proto3";
package people.v1;
service People {
  rpc Get(Key) returns (Person);
  rpc Forget(Key) returns (Person);
  rpc Watch(Key) returns (stream Person);
}
message Key { string id = 1; }
message Person { string id = 1; string name = 2; }
"""


def _adapter(tmp_path: Path, *, server: str = "", methods: str = "") -> Path:
    (tmp_path / "people.proto").write_text(PROTO, encoding="utf-8")
    (tmp_path / "people.csv").write_text("id,name\n1,Ana\n2," + "x" * 500 + "\n", encoding="utf-8")
    path = tmp_path / "adapter.toml"
    path.write_text(
        f"""
[adapter]
service = "people.v1.People"
proto = "people.proto"

[server]
{server}

[backends.file]
kind = "csv"
path = "people.csv"
key = "id"

[methods.Get]
backend = "file"
{methods}
""",
        encoding="utf-8",
    )
    return path


async def _raw(channel: grpc.aio.Channel, path: str, body: bytes) -> grpc.aio.AioRpcError:
    call: grpc.aio.UnaryUnaryMultiCallable[Any, Any] = channel.unary_unary(path)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call(body, timeout=10)
    return caught.value


async def test_bounds_undecodable_requests_and_unmapped_methods(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="adapters")
    path = _adapter(tmp_path, server="max_request_bytes = 64\nmax_response_bytes = 200")
    async with serving(path) as served:
        assert await served.call("Get", {"id": "1"}) == {"id": "1", "name": "Ana"}
        method = served.adapter.methods["Get"].model
        call: grpc.aio.UnaryUnaryMultiCallable[Any, Any] = served.channel.unary_unary(
            method.path, request_serializer=lambda m: m.SerializeToString()
        )
        message_id = "6d1f0e52-9a43-4c7e-8f57-0d0c3b7f2a11"
        await call(method.input_class(id="1"), metadata=(("ruta-message-id", message_id),))
        lines = [r.getMessage() for r in caplog.records if r.name == "adapters.server"]
        assert lines[-1].startswith(
            f"call /people.v1.People/Get status=OK fault=none fault_id=- message_id={message_id} "
        )
        assert "Ana" not in "".join(lines)
        big = await served.refuse("Get", {"id": "2"})
        assert big.code is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert big.fault is Fault.SERVER_PROVIDER_RESULT_TOO_LARGE
        # The refusal's line names the status, fault and the fault id the caller received.
        calls = [r for r in caplog.records if r.getMessage().startswith("call ")]
        last = calls[-1].getMessage()
        assert last.startswith(
            "call /people.v1.People/Get status=RESOURCE_EXHAUSTED "
            f"fault=server.provider.result_too_large fault_id={big.fault_id} message_id=- "
        )
        assert calls[-1].__dict__["fault_id"] == big.fault_id
        assert calls[-1].__dict__["duration_ms"] >= 0
        too_long = await served.refuse("Get", {"id": "9" * 100})
        assert too_long.code is grpc.StatusCode.RESOURCE_EXHAUSTED
        garbage = await _raw(served.channel, "/people.v1.People/Get", b"\xff\xff\xff")
        assert garbage.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert fault_from_rpc_error(garbage)[0] is Fault.CLIENT_INVALID_REQUEST
        unmapped = await _raw(served.channel, "/people.v1.People/Forget", b"")
        assert unmapped.code() is grpc.StatusCode.UNIMPLEMENTED


def test_streaming_and_unknown_methods_are_refused_at_load(tmp_path: Path) -> None:
    path = _adapter(tmp_path)
    text = path.read_text(encoding="utf-8")
    path.write_text(
        text + '\n[methods.Watch]\nbackend = "file"\n\n[methods.Nope]\nbackend = "file"\n'
    )
    with pytest.raises(AdapterConfigError, match="streaming methods are not supported") as caught:
        Adapter.load(path)
    assert "people.v1.People has no method Nope (methods: Forget, Get, Watch)" in str(caught.value)


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _cert(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[str, ec.EllipticCurvePrivateKey] | None,
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    issuer_name = (
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer[0])]) if issuer else name
    )
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
    )
    if issuer is None:
        builder = builder.add_extension(
            x509.BasicConstraints(ca=True, path_length=None), critical=True
        )
    else:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    return builder.sign(issuer[1] if issuer else key, hashes.SHA256())


async def test_mutual_tls(tmp_path: Path) -> None:
    ca_key = _key()
    ca = _cert("test CA", ca_key, None)
    server_key, client_key = _key(), _key()
    server = _cert("adapter", server_key, ("test CA", ca_key))
    client = _cert("security server", client_key, ("test CA", ca_key))
    pem = serialization.Encoding.PEM
    (tmp_path / "ca.crt").write_bytes(ca.public_bytes(pem))
    (tmp_path / "adapter.crt").write_bytes(server.public_bytes(pem))
    (tmp_path / "adapter.key").write_bytes(_pem_key(server_key))
    (tmp_path / "adapter.key").chmod(0o600)
    path = _adapter(
        tmp_path,
        server='tls_cert = "adapter.crt"\ntls_key = "adapter.key"\ntls_client_ca = "ca.crt"',
    )
    adapter = Adapter.load(path)
    running = await start_server(adapter, "127.0.0.1:0")
    try:
        method = adapter.methods["Get"].model
        trusted = grpc.ssl_channel_credentials(
            root_certificates=ca.public_bytes(pem),
            private_key=_pem_key(client_key),
            certificate_chain=client.public_bytes(pem),
        )
        async with grpc.aio.secure_channel(f"127.0.0.1:{running.port}", trusted) as channel:
            call: grpc.aio.UnaryUnaryMultiCallable[Any, Any] = channel.unary_unary(
                method.path,
                request_serializer=lambda m: m.SerializeToString(),
                response_deserializer=method.output_class.FromString,
            )
            person = await call(method.input_class(id="1"), timeout=10)
            assert person.name == "Ana"
        anonymous = grpc.ssl_channel_credentials(root_certificates=ca.public_bytes(pem))
        async with grpc.aio.secure_channel(f"127.0.0.1:{running.port}", anonymous) as channel:
            call = channel.unary_unary(method.path)
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await call(b"", timeout=10)
            assert refused.value.code() is grpc.StatusCode.UNAVAILABLE
        # Its expiry is a metric.
        expiry = running.listeners.registry.get_sample_value(
            "ruta_certificate_expires_timestamp_seconds", {"kind": "tls"}
        )
        assert expiry == server.not_valid_after_utc.timestamp()
    finally:
        await running.stop(None)
        await adapter.aclose()
