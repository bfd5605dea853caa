"""Directory services answer per the GovStack IM spec (tests/testdata/govstack-im), validated with
jsonschema against the spec's schemas, for a caller with contracts and one without."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Final

import pytest
import yaml
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate as validate_openapi

from tests.integration.gateway.gwbed import PERSONS_OPENAPI, REST_SERVICE, gateway_bed, gateway_url
from tests.integration.gateway.test_service_access import _call
from tests.integration.security_server.bed import BENEFITS, REGISTRY_SUBSYSTEM, SERVICE, SOC

pytestmark = pytest.mark.integration

SPEC: Final = yaml.safe_load(
    (Path(__file__).parents[2] / "testdata" / "govstack-im" / "directory-services.yaml").read_text()
)
#: A subsystem of SOC with no contract, allowed on the gateway's plain loopback port.
NO_CONTRACTS: Final = "DEV/GOV/SOC/other"


def _validate(body: Any, schema_name: str) -> None:
    schema = {"$ref": f"#/components/schemas/{schema_name}", "components": SPEC["components"]}
    Draft202012Validator(schema).validate(body)


async def _get(url: str, client: str | None = None) -> tuple[int, Any, Any]:
    headers = {"X-Road-Client": client} if client else {}
    return await _call(url, method="GET", headers=headers)


async def test_directory_services_validate_against_the_spec(tmp_path: Path) -> None:
    async with gateway_bed(tmp_path) as instance:
        await instance.gateways.pop(str(SOC)).stop()
        await instance.start_gateway(
            SOC, http={"plain_loopback_subsystems": [str(BENEFITS), NO_CONTRACTS]}
        )
        base = gateway_url(instance)
        provider = f"{base}/r1/{REGISTRY_SUBSYSTEM}"

        status, headers, clients = await _get(f"{base}/listClients")
        assert status == 200
        assert headers["Content-Type"].startswith("application/json")
        _validate(clients, "restClientDetailsListType")
        ids = [c["id"] for c in clients["member"]]
        assert {
            "objectType": "MEMBER",
            "instanceId": "DEV",
            "memberClass": "GOV",
            "memberCode": "POP",
        } in ids
        assert any(
            i["objectType"] == "APPLICATION" and i.get("applicationCode") == "benefits" for i in ids
        )
        status, _, same = await _get(f"{base}/listClients?instanceId=DEV")
        assert (status, same) == (200, clients)
        status, _, other = await _get(f"{base}/listClients?instanceId=ELSEWHERE")
        assert (status, other) == (200, {"member": []})

        status, headers, methods = await _get(f"{provider}/listMethods")
        assert status == 200
        assert headers["Content-Type"].startswith("application/json")
        _validate(methods, "restServiceDetailsListType")
        by_code = {s["serviceCode"]: s for s in methods["member"]}
        assert set(by_code) == {SERVICE.service_name, REST_SERVICE.service_name}
        assert by_code["persons"]["serviceType"] == "OPENAPI"
        assert {"method": "GET", "path": "/persons/{id}"} in by_code["persons"]["endpointList"][
            "member"
        ]
        assert by_code[SERVICE.service_name]["endpointList"]["member"] == [
            {"method": "POST", "path": "/GetPerson"}
        ]
        status, _, one = await _get(f"{provider}/listMethods?serviceId=persons")
        assert [s["serviceCode"] for s in one["member"]] == ["persons"]

        # A caller with contracts for both services sees both; one without sees none.
        status, _, allowed = await _get(f"{provider}/allowedMethods", str(BENEFITS))
        assert status == 200
        _validate(allowed, "restServiceDetailsListType")
        assert {s["serviceCode"] for s in allowed["member"]} == set(by_code)
        status, _, allowed = await _get(f"{provider}/allowedMethods", NO_CONTRACTS)
        assert status == 200
        _validate(allowed, "restServiceDetailsListType")
        assert allowed == {"member": []}
        status, _, refused = await _get(f"{provider}/allowedMethods")
        assert (status, refused["type"]) == (400, "client.missing_header")

        status, headers, described = await _get(f"{provider}/getOpenAPI?serviceCode=persons")
        assert status == 200
        assert headers["Content-Type"].startswith("application/json")
        assert described == PERSONS_OPENAPI
        status, _, generated = await _get(
            f"{provider}/getOpenAPI?serviceCode={SERVICE.service_name}"
        )
        assert status == 200
        validate_openapi(generated)
        request_schema = generated["paths"]["/GetPerson"]["post"]["requestBody"]["content"][
            "application/json"
        ]["schema"]
        assert request_schema == {"$ref": "#/components/schemas/population.v1.GetPersonRequest"}
        assert "nationalId" in json.dumps(generated["components"]["schemas"])
        status, _, missing = await _get(f"{provider}/getOpenAPI?serviceCode=nothing")
        assert (status, missing["type"]) == (404, "client.unknown_service")
        status, _, missing = await _get(f"{provider}/getOpenAPI")
        assert (status, missing["type"]) == (400, "client.invalid_request")
