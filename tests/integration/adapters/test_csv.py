"""The csv backend against real CSV files, through gRPC."""

from __future__ import annotations

import os
from pathlib import Path

import grpc
import pytest

from ruta.faults import Fault
from tests.integration.adapters.support import example, serving

HEADER = "parcel_id,owner_id,district,area_m2,land_use,registered_on,share\n"


def _replace(path: Path, text: str | bytes) -> None:
    """Write a new file beside ``path`` and rename it over it (what an export job should do)."""
    fresh = path.with_suffix(".new")
    if isinstance(text, str):
        fresh.write_text(text, encoding="utf-8")
    else:
        fresh.write_bytes(text)
    os.replace(fresh, path)


def _land(tmp_path: Path, *, max_file_bytes: int = 16_000_000, method: str = "") -> Path:
    path = example(tmp_path, "land")
    text = path.read_text(encoding="utf-8")
    text = text.replace("max_file_bytes = 16_000_000", f"max_file_bytes = {max_file_bytes}")
    text = text.replace('expect = "many"', f'expect = "many"\n{method}')
    path.write_text(text, encoding="utf-8")
    return path


async def test_example_maps_holdings_with_dates_and_defaults(tmp_path: Path) -> None:
    async with serving(_land(tmp_path)) as served:
        holdings = await served.call("GetHoldings", {"national_id": "4410000033"})
        assert holdings == {
            "parcels": [
                {
                    "parcel_id": "LR-0001-2011",
                    "district": "Puerto Ejemplo",
                    "area_m2": 5200.5,
                    "land_use": "agricultural",
                    "registered_on": "2011-05-12",
                    "share_percent": 100,
                },
                {
                    "parcel_id": "LR-0002-2015",
                    "district": "Puerto Ejemplo",
                    "area_m2": 310.0,
                    "land_use": "residential",
                    "registered_on": "2015-09-03",
                    "share_percent": 50,
                },
            ]
        }
        # An empty cell is a missing value: the default applies.
        other = await served.call("GetHoldings", {"national_id": "4410000058"})
        assert other["parcels"][0]["share_percent"] == 100
        assert await served.call("GetHoldings", {"national_id": "4410000041"}) == {}
        injected = await served.refuse("GetHoldings", {"national_id": "4410000033' OR '1'='1"})
        assert injected.fault is Fault.CLIENT_INVALID_REQUEST


async def test_not_found_when_one_record_is_expected(tmp_path: Path) -> None:
    path = _land(tmp_path, method="not_found_when_empty = true")
    async with serving(path) as served:
        refusal = await served.refuse("GetHoldings", {"national_id": "4410000041"})
        assert refusal.code is grpc.StatusCode.NOT_FOUND
        assert refusal.fault is Fault.CLIENT_NOT_FOUND


async def test_file_is_reloaded_when_it_changes(tmp_path: Path) -> None:
    path = _land(tmp_path)
    csv = path.parent / "parcels.csv"
    async with serving(path) as served:
        assert await served.call("GetHoldings", {"national_id": "4410000041"}) == {}
        _replace(csv, HEADER + "LR-0009-2026,4410000041,Villa Ruta,75.25,garden,01/02/2026,100\n")
        holdings = await served.call("GetHoldings", {"national_id": "4410000041"})
        assert [p["parcel_id"] for p in holdings["parcels"]] == ["LR-0009-2026"]
        assert await served.call("GetHoldings", {"national_id": "4410000033"}) == {}


@pytest.mark.parametrize(
    ("content", "code", "fault", "text"),
    [
        (
            None,
            grpc.StatusCode.UNAVAILABLE,
            Fault.SERVER_PROVIDER_LEGACY_UNAVAILABLE,
            "the file cannot be read",
        ),
        (
            HEADER + ("x" * 200 + "\n") * 10,
            grpc.StatusCode.UNAVAILABLE,
            Fault.SERVER_PROVIDER_LEGACY_UNAVAILABLE,
            "over its size bound of 1000 bytes",
        ),
        (
            "parcel,owner\n1,4410000033\n",
            grpc.StatusCode.INTERNAL,
            Fault.SERVER_PROVIDER_INVALID_LEGACY_ANSWER,
            "no key column 'owner_id'",
        ),
        (
            HEADER + "a,4410000033,b,1,c,01/01/2000,1,extra\n",
            grpc.StatusCode.INTERNAL,
            Fault.SERVER_PROVIDER_INVALID_LEGACY_ANSWER,
            "line 2 has more cells",
        ),
        (
            HEADER.encode() + b"a,4410000033,\xff\xfe,1,c,01/01/2000,1\n",
            grpc.StatusCode.INTERNAL,
            Fault.SERVER_PROVIDER_INVALID_LEGACY_ANSWER,
            "not utf-8 text",
        ),
        (
            HEADER + 'a,4410000033,"unterminated,1,c,01/01/2000,1\n',
            grpc.StatusCode.INTERNAL,
            Fault.SERVER_PROVIDER_INVALID_LEGACY_ANSWER,
            "is not valid CSV",
        ),
        (
            HEADER + "a,4410000033,b,big,c,01/01/2000,1\n",
            grpc.StatusCode.INTERNAL,
            Fault.SERVER_PROVIDER_INVALID_LEGACY_ANSWER,
            "parcels.0.area_m2 does not fit",
        ),
        (
            HEADER + "a,4410000033,b,1,c,2000-01-01,1\n",
            grpc.StatusCode.INTERNAL,
            Fault.SERVER_PROVIDER_INVALID_LEGACY_ANSWER,
            "parcels.0.registered_on does not fit",
        ),
    ],
)
async def test_missing_large_and_malformed_files_are_refused(
    tmp_path: Path, content: str | bytes | None, code: grpc.StatusCode, fault: Fault, text: str
) -> None:
    path = _land(tmp_path, max_file_bytes=1000)
    csv = path.parent / "parcels.csv"
    if content is None:
        csv.unlink()
    else:
        _replace(csv, content)
    async with serving(path) as served:
        refusal = await served.refuse("GetHoldings", {"national_id": "4410000033"})
    assert refusal.code is code
    assert refusal.fault is fault
    assert text in refusal.details
    assert str(tmp_path) not in refusal.details
