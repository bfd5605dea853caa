"""The gateway's own OpenAPI 3 description (served at ``/openapi.json``): the directory services
of the GovStack specification and the ``/r1/...`` service access, with Ruta's fault body."""

from __future__ import annotations

from typing import Any, Final

__all__ = ["FAULT_RESPONSE", "FAULT_SCHEMA", "gateway_openapi"]

#: The JSON Schema of a refusal's body (gateway/http_faults.py writes it), for every OpenAPI
#: document the gateway serves (as ``#/components/schemas/Fault``).
FAULT_SCHEMA: Final[dict[str, Any]] = {
    "type": "object",
    "required": ["type", "message", "detail"],
    "properties": {
        "type": {"type": "string"},
        "message": {"type": "string"},
        "detail": {"type": "string"},
    },
}
#: A refusal as an OpenAPI response object.
FAULT_RESPONSE: Final[dict[str, Any]] = {
    "description": "A refusal",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Fault"}}},
}

_FAULT: Final = {"$ref": "#/components/responses/Fault"}


def _path_parameters() -> list[dict[str, Any]]:
    names = ("instanceId", "memberClass", "memberCode", "applicationCode")
    return [
        {"name": n, "in": "path", "required": True, "schema": {"type": "string"}} for n in names
    ]


def _client_header(required: bool) -> dict[str, Any]:
    return {
        "name": "X-Road-Client",
        "in": "header",
        "required": required,
        "description": "The caller: INSTANCE/CLASS/MEMBER/SUBSYSTEM",
        "schema": {"type": "string"},
    }


def _service_list() -> dict[str, Any]:
    return {
        "description": "Services and their endpoints",
        "content": {
            "application/json": {
                "schema": {"$ref": "#/components/schemas/restServiceDetailsListType"}
            }
        },
    }


def _errors(*codes: str) -> dict[str, Any]:
    return dict.fromkeys(codes, _FAULT)


def gateway_openapi() -> dict[str, Any]:
    """The description, as a fresh dict."""
    r1 = "/r1/{instanceId}/{memberClass}/{memberCode}/{applicationCode}"
    service_params = [
        *_path_parameters(),
        {"name": "serviceCode", "in": "path", "required": True, "schema": {"type": "string"}},
        {"name": "path", "in": "path", "required": True, "schema": {"type": "string"}},
        _client_header(True),
        {"name": "Ruta-Purpose", "in": "header", "schema": {"type": "string"}},
    ]
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "Ruta gateway",
            "version": "1",
            "description": "REST/JSON service access (X-Road r1 shape) and GovStack IM "
            "directory services. Refusals are {type, message, detail} with the Ruta fault code.",
        },
        "paths": {
            "/listClients": {
                "get": {
                    "operationId": "listClients",
                    "parameters": [
                        {"name": "instanceId", "in": "query", "schema": {"type": "string"}}
                    ],
                    "responses": {
                        "200": {
                            "description": "Members and subsystems of the instance",
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "$ref": "#/components/schemas/restClientDetailsListType"
                                    }
                                }
                            },
                        },
                        **_errors("503"),
                    },
                }
            },
            f"{r1}/listMethods": {
                "get": {
                    "operationId": "listMethods",
                    "parameters": [
                        *_path_parameters(),
                        {"name": "serviceId", "in": "query", "schema": {"type": "string"}},
                    ],
                    "responses": {"200": _service_list(), **_errors("400", "503")},
                }
            },
            f"{r1}/allowedMethods": {
                "get": {
                    "operationId": "allowedMethods",
                    "parameters": [
                        *_path_parameters(),
                        _client_header(True),
                        {"name": "serviceId", "in": "query", "schema": {"type": "string"}},
                    ],
                    "responses": {
                        "200": _service_list(),
                        **_errors("400", "401", "403", "503"),
                    },
                }
            },
            f"{r1}/getOpenAPI": {
                "get": {
                    "operationId": "getOpenAPI",
                    "parameters": [
                        *_path_parameters(),
                        {
                            "name": "serviceCode",
                            "in": "query",
                            "required": True,
                            "schema": {"type": "string"},
                        },
                    ],
                    "responses": {
                        "200": {
                            "description": "The service's OpenAPI description",
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        },
                        **_errors("400", "404", "503"),
                    },
                }
            },
            f"{r1}/{{serviceCode}}/{{path}}": {
                "post": {
                    "operationId": "callService",
                    "description": "Call a REST service (any path below it), or a gRPC "
                    "service's method with a JSON body (path = the method name).",
                    "parameters": service_params,
                    "requestBody": {
                        "content": {"application/json": {"schema": {"type": "object"}}}
                    },
                    "responses": {
                        "200": {"description": "The provider's answer"},
                        **_errors("400", "401", "403", "404", "413", "502", "503", "504"),
                    },
                }
            },
        },
        "components": {
            "responses": {"Fault": FAULT_RESPONSE},
            "schemas": {
                "Fault": FAULT_SCHEMA,
                "restClientDetailsListType": {"type": "object"},
                "restServiceDetailsListType": {"type": "object"},
            },
        },
    }
