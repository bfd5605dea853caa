"""The shipped example adapters load, and the population example serves the sandbox's contract."""

from __future__ import annotations

from pathlib import Path

import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor

from adapters.descriptors import load_service
from adapters.server import Adapter

ROOT = Path(__file__).resolve().parents[3]
EXAMPLES = ROOT / "adapters" / "examples"


@pytest.mark.parametrize(
    ("name", "service", "methods"),
    [
        ("population", "population.v1.PopulationRegister", {"GetPerson"}),
        ("tax", "tax.v1.TaxAgency", {"GetIncome"}),
        ("business", "business.v1.BusinessRegister", {"ListCompaniesByOwner"}),
        ("land", "land.v1.LandRegistry", {"GetHoldings"}),
    ],
)
async def test_example_loads_without_touching_its_legacy_system(
    name: str, service: str, methods: set[str]
) -> None:
    adapter = Adapter.load(EXAMPLES / name / "adapter.toml")
    try:
        assert adapter.service.name == service
        assert set(adapter.methods) == methods
    finally:
        await adapter.aclose()


def _shape(descriptor: Descriptor) -> list[tuple[str, int, int, bool]]:
    return [(f.name, f.number, f.type, f.is_repeated) for f in descriptor.fields]


def test_population_example_matches_the_shared_contract() -> None:
    shared = ROOT / "proto" / "examples" / "population" / "v1" / "population.proto"
    if not shared.exists():
        pytest.skip("the shared population contract is not in this checkout")
    ours = load_service(
        "population.v1.PopulationRegister", proto=EXAMPLES / "population" / "population.proto"
    )
    theirs = load_service("population.v1.PopulationRegister", proto=shared)
    assert set(ours.methods) == set(theirs.methods)
    for name, method in ours.methods.items():
        other = theirs.methods[name]
        assert method.path == other.path
        assert _shape(method.input) == _shape(other.input)
        assert _shape(method.output) == _shape(other.output)


@pytest.mark.parametrize("name", ["population", "tax", "business", "land"])
async def test_every_example_checks_the_format_of_each_text_parameter(name: str) -> None:
    """Examples are what agencies copy: each text a request carries to the legacy system has a
    pattern, so a padded or disguised identifier is refused before it can match a record."""
    adapter = Adapter.load(EXAMPLES / name / "adapter.toml")
    try:
        for method in adapter.methods.values():
            plan = method.request_plan
            checked = {field.label for field, _ in plan.patterns}
            texts = {
                field.label
                for _, field in plan.params
                if field.path[-1].type == FieldDescriptor.TYPE_STRING
            }
            assert texts, f"{name}.{method.name} carries no text parameter"
            assert texts <= checked, f"{name}.{method.name}: no pattern for {texts - checked}"
            for _, pattern in plan.patterns:
                for padded in (" 4410000033", "4410000033\n", "4410000033 "):
                    assert pattern.fullmatch(padded) is None
    finally:
        await adapter.aclose()
