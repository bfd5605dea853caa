"""The gateway's small parts: settings, the REST back end's target URLs, JSON transcoding and the
OpenAPI it generates, endpoint listing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st
from openapi_spec_validator import validate as validate_openapi
from pydantic import ValidationError

from gateway.app import build_app
from gateway.backend import _target
from gateway.bus import BusClient
from gateway.directory import grpc_openapi, rest_endpoints
from gateway.http_headers import HeaderLimitError, carried_headers
from gateway.openapi import gateway_openapi
from gateway.settings import GatewaySettings
from gateway.transcode import MAX_JSON_DEPTH, ServiceCodecs, TranscodeError
from ruta.faults import Fault
from ruta.globalconf import Service
from ruta.ids import ServiceId
from ruta.v1 import http_pb2
from sandbox.examples.population import file_descriptor_set

SERVICE = Service(
    id=ServiceId.parse("DEV/GOV/POP/registry/population.v1.PopulationRegister"),
    methods=frozenset({"GetPerson"}),
    file_descriptor_set=file_descriptor_set(),
)


def _settings(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "member": "DEV/GOV/SOC",
        "consumer": {"address": "127.0.0.1:9001", "plaintext": True},
        "globalconf": {"anchor": "anchor.toml"},
        "http": {"plain_loopback_subsystems": ["DEV/GOV/SOC/benefits"]},
    }
    data.update(changes)
    return data


def test_settings_resolve_relative_paths(tmp_path: Path) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text(
        'member = "DEV/GOV/SOC"\n[consumer]\naddress = "127.0.0.1:1"\nplaintext = true\n'
        '[globalconf]\nanchor = "anchor.toml"\n'
    )
    settings = GatewaySettings.load(config)
    assert settings.globalconf.anchor == tmp_path / "anchor.toml"
    assert settings.data_dir == tmp_path / "data"


@pytest.mark.parametrize(
    "changes",
    [
        {"member": "DEV/GOV"},
        {"http": {"listen": "0.0.0.0:8080"}},  # plain HTTP off loopback
        {"http": {"plain_loopback_subsystems": ["DEV/GOV/TAX/income"]}},  # another member's
        {"consumer": {"address": "10.0.0.1:9001", "plaintext": True}},
        {"consumer": {"address": "127.0.0.1:9001"}},  # TLS without the gateway certificate
        {
            "backend": {
                "listen": "127.0.0.1:0",
                "rest": [{"service": "DEV/GOV/TAX/income/x", "base_url": "http://127.0.0.1:1"}],
            }
        },
        {
            "backend": {
                "listen": "127.0.0.1:0",
                "rest": [{"service": "DEV/GOV/SOC/benefits/x", "base_url": "ftp://host/x"}],
            }
        },
        {"http": {"tls_cert": "a.pem"}},  # a certificate without its key
    ],
)
def test_settings_refuse_what_cannot_be_safe(changes: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        GatewaySettings(**_settings(**changes))


_OPEN_DATA: dict[str, Any] = {"cert": "statistics.pem", "key": "statistics.key"}
_CITIZEN: dict[str, Any] = {
    "issuer": "https://id.example.gov",
    "client_id": "ruta-citizen",
    "client_secret_file": "secret",
    "public_url": "https://gw.example.gov",
    "cert": "citizen.pem",
    "key": "citizen.key",
    "ca": "ca.pem",
}


@pytest.mark.parametrize("pages", [{"open_data": _OPEN_DATA}, {"citizen": _CITIZEN}])
def test_public_pages_never_share_a_port_that_trusts_loopback_callers(
    pages: dict[str, Any],
) -> None:
    # Behind a reverse proxy on the same host, every request would come from loopback.
    with pytest.raises(ValidationError, match=r"\[public\] listen"):
        GatewaySettings(**_settings(**pages))
    # Their own port: accepted, and the callers' port stays as it was.
    settings = GatewaySettings(**_settings(**pages, public={"listen": "127.0.0.1:8443"}))
    assert settings.public is not None
    assert settings.http.plain_loopback_subsystems == ("DEV/GOV/SOC/benefits",)
    # A plain callers' port that trusts no loopback caller may serve them itself.
    assert GatewaySettings(**_settings(**pages, http={"plain_loopback_subsystems": []}))


@pytest.mark.parametrize(
    "public",
    [
        {"listen": "0.0.0.0:8443"},  # plain HTTP off loopback
        {"listen": "127.0.0.1:8443", "tls_cert": "a.pem"},  # a certificate without its key
        {"listen": "127.0.0.1:8080"},  # the callers' own port
    ],
)
def test_the_public_port_is_refused_where_it_cannot_be_safe(public: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        GatewaySettings(
            **_settings(
                http={"listen": "127.0.0.1:8080", "plain_loopback_subsystems": []},
                public=public,
            )
        )


@pytest.mark.parametrize(
    ("path", "query", "expected"),
    [
        ("/persons/1", "", "http://127.0.0.1:1/api/persons/1"),
        ("/persons/1", "lang=es&x=%20", "http://127.0.0.1:1/api/persons/1?lang=es&x=%20"),
        ("/", "", "http://127.0.0.1:1/api/"),
        ("/a/../../etc", "", None),
        ("/./x", "", None),
        ("persons", "", None),
        ("/x?y", "", None),
        ("/x#y", "", None),
        ("/x\\..\\y", "", None),
        ("/%2e%2e/admin", "", None),
        ("/a%2F..%2Fb", "", None),
        ("/a%5c..", "", None),
        ("/a%20b/c%3Fd", "", "http://127.0.0.1:1/api/a%20b/c%3Fd"),
    ],
)
def test_rest_targets_never_leave_the_base_url(path: str, query: str, expected: str | None) -> None:
    url = _target("http://127.0.0.1:1/api", http_pb2.HttpRequest(path=path, query=query))
    assert (str(url) if url is not None else None) == expected


@given(st.text(max_size=200))
def test_a_rest_target_is_under_the_base_or_refused(path: str) -> None:
    url = _target("http://127.0.0.1:1/api", http_pb2.HttpRequest(path="/" + path))
    if url is not None:
        assert str(url).startswith("http://127.0.0.1:1/api/")
        assert ".." not in url.path.split("/")


def test_json_round_trip_and_refusals() -> None:
    codec = ServiceCodecs().method(SERVICE, "GetPerson")
    wire = codec.request_from_json(b'{"nationalId": "38001010001"}')
    assert wire == codec.input(national_id="38001010001").SerializeToString()
    assert codec.request_from_json(b"") == b""
    for bad in (b'{"nationalIdx": "1"}', b"[1]", b"\xff", b'{"nationalId": 1}'):
        with pytest.raises(TranscodeError):
            codec.request_from_json(bad)
    deep = b'{"a":' * (MAX_JSON_DEPTH + 1) + b"1" + b"}" * (MAX_JSON_DEPTH + 1)
    with pytest.raises(TranscodeError, match="deeper"):
        codec.request_from_json(deep)
    with pytest.raises(TranscodeError) as info:
        ServiceCodecs().method(SERVICE, "Nope")
    assert info.value.fault == "client.unknown_service"


def test_generated_openapi_validates() -> None:
    document = grpc_openapi(SERVICE, ServiceCodecs())
    validate_openapi(document)
    assert "/GetPerson" in document["paths"]
    validate_openapi(gateway_openapi())


def test_rest_endpoints_from_an_openapi_description() -> None:
    document = {"openapi": "3.0.3", "paths": {"/a": {"get": {}, "post": {}, "x-ext": {}}}}
    assert rest_endpoints(json.dumps(document).encode()) == [
        {"method": "GET", "path": "/a"},
        {"method": "POST", "path": "/a"},
    ]
    assert rest_endpoints(b"not json") == []
    assert rest_endpoints(b"[]") == []


def test_headers_over_the_limits_are_refused_not_cut() -> None:
    limits = GatewaySettings(**_settings(limits={"max_headers": 2, "max_header_bytes": 40})).limits
    allowed = frozenset({"accept", "accept-language"})
    kept = carried_headers(
        [("Accept", "a/b"), ("X-Other", "y" * 100), ("Accept-Language", "es")],
        allowed,
        limits,
        whose="the request",
        fault=Fault.CLIENT_INVALID_HEADER,
    )
    # Names the policy does not list are not carried, nor counted.
    assert [(h.name, h.value) for h in kept] == [("accept", "a/b"), ("accept-language", "es")]
    with pytest.raises(HeaderLimitError, match="max_headers") as many:
        carried_headers(
            [("Accept", "a/b")] * 3,
            allowed,
            limits,
            whose="the request",
            fault=Fault.CLIENT_INVALID_HEADER,
        )
    assert many.value.fault is Fault.CLIENT_INVALID_HEADER
    with pytest.raises(HeaderLimitError, match="max_header_bytes") as large:
        carried_headers(
            [("Accept-Language", "é" * 16)],  # 15 + 32 bytes in UTF-8
            allowed,
            limits,
            whose="the answer",
            fault=Fault.SERVER_PROVIDER_RESULT_TOO_LARGE,
        )
    assert large.value.fault is Fault.SERVER_PROVIDER_RESULT_TOO_LARGE


@pytest.mark.parametrize("value", ["a\r\nInjected: yes", "a\x00b", "caf\udce9"])
def test_a_header_value_that_is_no_http_field_value_is_refused(value: str) -> None:
    limits = GatewaySettings(**_settings()).limits
    with pytest.raises(HeaderLimitError, match="not an HTTP field value") as refused:
        carried_headers(
            [("Accept-Language", value)],
            frozenset({"accept-language"}),
            limits,
            whose="the request",
            fault=Fault.CLIENT_INVALID_HEADER,
            invalid=Fault.SERVER_PROVIDER_SERVICE_FAILED,
        )
    assert refused.value.fault is Fault.SERVER_PROVIDER_SERVICE_FAILED


async def test_an_unexpected_failure_is_a_fault_not_a_bare_500() -> None:
    def broken() -> Any:
        raise RuntimeError("a bug")

    settings = GatewaySettings(**_settings())
    bus = BusClient(settings.consumer, max_message_bytes=settings.limits.max_body_bytes)
    runner = web.AppRunner(build_app(settings, conf=broken, bus=bus), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        async with aiohttp.ClientSession() as http, http.get(url + "/catalogue") as response:
            assert response.status == 500
            body = await response.json()
        assert body["type"] == "server.consumer.internal_error"
        assert "a bug" not in body["message"]  # nothing of the failure leaks
        assert len(body["detail"]) == 36
        async with aiohttp.ClientSession() as http, http.get(url + "/nothing") as response:
            assert (await response.json())["type"] == "client.unknown_service"
    finally:
        await runner.cleanup()
        await bus.close()
