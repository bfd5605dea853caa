"""OpenAPI descriptions of REST services: JSON or YAML in, validated, canonical JSON out."""

from __future__ import annotations

import json

import pytest

from registry.errors import InvalidRequestError
from registry.openapi import canonical_openapi, parse_openapi

YAML = b"""
openapi: 3.0.3
info: {title: persons, version: '1'}
paths:
  /persons/{id}:
    get:
      parameters:
        - {name: id, in: path, required: true, schema: {type: string}}
      responses:
        '200': {description: a person}
"""


def test_yaml_and_json_give_the_same_canonical_bytes() -> None:
    from_yaml = canonical_openapi(YAML)
    from_json = canonical_openapi(json.dumps(parse_openapi(YAML), indent=4).encode())
    assert from_yaml == from_json
    assert json.loads(from_yaml)["paths"]["/persons/{id}"]["get"]["responses"]["200"]


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"\xff\xfe", "UTF-8"),
        (b"- a\n- b\n", "not an object"),
        (b"openapi: 2.0\n", "OpenAPI 3"),
        (b"openapi: 3.0.3\ninfo: {title: x, version: '1'}\npaths: {x: {}}\n", "invalid"),
        (b"a: !!python/object:os.system ls\n", "neither JSON nor YAML"),
    ],
)
def test_refusals_say_what_is_wrong(data: bytes, words: str) -> None:
    with pytest.raises(InvalidRequestError, match=words):
        parse_openapi(data)
