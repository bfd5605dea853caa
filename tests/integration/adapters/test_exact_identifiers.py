"""Padded identifiers never reach someone's record (issue 12, finding 8).

Each shipped example adapter runs against its real legacy system (SQLite file, HTTP/JSON service,
SOAP service, CSV file): an identifier with whitespace around it, a newline after it or other
digits than ASCII is refused with ``client.invalid_request`` before the legacy system is asked,
and the exact identifier is answered. Without patterns, the csv backend still matches exactly.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest

from adapters.examples import legacy_business, legacy_tax
from adapters.examples.population.make_db import create_population_db
from ruta.faults import Fault
from tests.integration.adapters.support import Served, example, running_app, serving

#: What a hostile caller tried: a real record's id, padded or disguised.
PADDED = [
    " 4410000033",
    "4410000033 ",
    "4410000017\n",
    "\t4410000017",
    "4410000017\r\n",
    "\u00a04410000033",
    "\uff14\uff14\uff11\uff10\uff10\uff10\uff10\uff10\uff13\uff13",  # full-width digits
]

#: example -> (method, the request for an id, the id answered exactly)
CASES: dict[str, tuple[str, dict[str, Any], str]] = {
    "population": ("GetPerson", {}, "4410000017"),
    "tax": ("GetIncome", {"year": 2025}, "4410000017"),
    "business": ("ListCompaniesByOwner", {}, "4410000033"),
    "land": ("GetHoldings", {}, "4410000033"),
}


@asynccontextmanager
async def _example_served(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Served]:
    """The example adapter ``name`` serving in front of its real legacy system."""
    async with AsyncExitStack() as stack:
        if name == "population":
            database = tmp_path / "population.db"
            create_population_db(database)
            monkeypatch.setenv("RUTA_POPULATION_DB", str(database))
        elif name == "tax":
            url = await stack.enter_async_context(running_app(legacy_tax.make_app()))
            monkeypatch.setenv("RUTA_TAX_URL", url)
        elif name == "business":
            url = await stack.enter_async_context(running_app(legacy_business.make_app()))
            monkeypatch.setenv("RUTA_BUSINESS_WSDL", f"{url}/business?wsdl")
        yield await stack.enter_async_context(serving(example(tmp_path, name)))


@pytest.mark.parametrize("name", sorted(CASES))
async def test_example_refuses_padded_ids_and_answers_exact_ones(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    method, rest, exact = CASES[name]
    async with _example_served(name, tmp_path, monkeypatch) as served:
        answer = await served.call(method, {"national_id": exact, **rest})
        assert answer, f"{name}: the exact id {exact} is answered"
        for padded in PADDED:
            refusal = await served.refuse(method, {"national_id": padded, **rest})
            assert refusal.code is grpc.StatusCode.INVALID_ARGUMENT, (name, padded)
            assert refusal.fault is Fault.CLIENT_INVALID_REQUEST, (name, padded)
            assert refusal.details == "request field national_id has an invalid format"


def _land_without_patterns(tmp_path: Path, *, backend: str = "") -> Path:
    path = example(tmp_path, "land")
    text = path.read_text(encoding="utf-8")
    text = "\n".join(line for line in text.splitlines() if not line.startswith("patterns ="))
    text = text.replace('key = "owner_id"', f'key = "owner_id"\n{backend}')
    path.write_text(text, encoding="utf-8")
    return path


async def test_csv_lookup_is_exact_without_patterns(tmp_path: Path) -> None:
    async with serving(_land_without_patterns(tmp_path)) as served:
        found = await served.call("GetHoldings", {"national_id": "4410000033"})
        assert len(found["parcels"]) == 2
        for padded in PADDED:
            assert await served.call("GetHoldings", {"national_id": padded}) == {}, padded


async def test_csv_trim_keys_trims_the_file_never_the_request(tmp_path: Path) -> None:
    path = _land_without_patterns(tmp_path, backend="trim_keys = true")
    csv = path.parent / "parcels.csv"
    csv.write_text(
        "parcel_id,owner_id,district,area_m2,land_use,registered_on,share\n"
        "LR-0001-2011,  4410000033 ,Puerto Ejemplo,5200.5,agricultural,12/05/2011,100\n",
        encoding="utf-8",
    )
    async with serving(path) as served:
        found = await served.call("GetHoldings", {"national_id": "4410000033"})
        assert [p["parcel_id"] for p in found["parcels"]] == ["LR-0001-2011"]
        assert await served.call("GetHoldings", {"national_id": " 4410000033"}) == {}
        assert await served.call("GetHoldings", {"national_id": "  4410000033 "}) == {}

    # Without trim_keys the padded cell is a key of its own, matched only exactly.
    exact = _land_without_patterns(tmp_path / "exact")
    (exact.parent / "parcels.csv").write_text(csv.read_text(encoding="utf-8"), encoding="utf-8")
    async with serving(exact) as served:
        assert await served.call("GetHoldings", {"national_id": "4410000033"}) == {}
