"""OpenAPI descriptions of REST services: read, validated and stored in one canonical form.

A REST service is registered with an OpenAPI 3 description (docs/adr/0021-gateway.md), checked by
a maintained validator (``openapi-spec-validator``) and carried in the global configuration as
compact JSON within :data:`ruta.globalconf.limits.MAX_OPENAPI_BYTES`, so every gateway reads the
same bytes. YAML is accepted on the way in (the CLI reads files in either form).
"""

from __future__ import annotations

import json
from typing import Any, Final

import yaml
from openapi_spec_validator import validate
from openapi_spec_validator.validation.exceptions import OpenAPIValidationError

from registry.errors import InvalidRequestError
from ruta.globalconf.limits import MAX_OPENAPI_BYTES

__all__ = ["MAX_OPENAPI_DEPTH", "REST_METHOD", "canonical_openapi", "parse_openapi"]

#: The fixed bus method of every REST service.
REST_METHOD: Final = "Call"
#: Deepest nesting accepted in a description (bounds the parser and the validator).
MAX_OPENAPI_DEPTH: Final = 64


def _depth(value: Any, level: int = 0) -> int:
    if level > MAX_OPENAPI_DEPTH:
        return level
    if isinstance(value, dict):
        return max((_depth(v, level + 1) for v in value.values()), default=level + 1)
    if isinstance(value, list):
        return max((_depth(v, level + 1) for v in value), default=level + 1)
    return level


def parse_openapi(data: bytes) -> dict[str, Any]:
    """The description in ``data`` (JSON or YAML), validated as OpenAPI 3.x.

    Raises :class:`InvalidRequestError` when it is over :data:`MAX_OPENAPI_BYTES`, does not
    parse, nests deeper than :data:`MAX_OPENAPI_DEPTH`, is not OpenAPI 3, or does not validate
    (the message names the first problem the validator found).
    """
    if len(data) > MAX_OPENAPI_BYTES:
        raise InvalidRequestError(
            f"the OpenAPI description is {len(data)} bytes; the limit is {MAX_OPENAPI_BYTES}"
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidRequestError("the OpenAPI description is not UTF-8 text") from None
    try:
        document = yaml.safe_load(text)
    except (yaml.YAMLError, RecursionError):
        raise InvalidRequestError("the OpenAPI description is neither JSON nor YAML") from None
    if not isinstance(document, dict):
        raise InvalidRequestError("the OpenAPI description is not an object")
    if _depth(document) > MAX_OPENAPI_DEPTH:
        raise InvalidRequestError(
            f"the OpenAPI description nests deeper than {MAX_OPENAPI_DEPTH} levels"
        )
    version = document.get("openapi")
    if not isinstance(version, str) or not version.startswith("3."):
        raise InvalidRequestError("the description must be OpenAPI 3 (an 'openapi: 3.x' field)")
    try:
        validate(document)
    except OpenAPIValidationError as exc:
        where = "/".join(str(p) for p in exc.path) or "(top level)"
        raise InvalidRequestError(
            f"the OpenAPI description is invalid at {where}: {exc.message[:300]}"
        ) from None
    except (RecursionError, ValueError, TypeError, KeyError) as exc:
        raise InvalidRequestError(
            f"the OpenAPI description cannot be validated ({type(exc).__name__})"
        ) from None
    return document


def canonical_openapi(data: bytes) -> bytes:
    """:func:`parse_openapi`, then compact JSON with sorted keys (what the configuration
    carries). Raises what :func:`parse_openapi` raises, and :class:`InvalidRequestError` when the
    JSON form is over the bound."""
    document = parse_openapi(data)
    try:
        canonical = json.dumps(
            document, separators=(",", ":"), sort_keys=True, ensure_ascii=False, default=str
        ).encode("utf-8")
    except (TypeError, ValueError):
        raise InvalidRequestError("the OpenAPI description has values JSON cannot carry") from None
    if len(canonical) > MAX_OPENAPI_BYTES:
        raise InvalidRequestError(
            f"the OpenAPI description is {len(canonical)} bytes as JSON; the limit is "
            f"{MAX_OPENAPI_BYTES}"
        )
    return canonical
