"""Registry store benchmark: read a large instance from the store and build its configuration.

Prints results and appends them to ``bench/results/registry_store.txt``; asserts nothing.

    python bench/registry_store.py [--members 10000] [--servers 1000] [--services 20000]
                                   [--contracts 100000] [--db URL] [--no-record]

Issue 4's scale by default. The rows are bulk-inserted into a migrated store (what the admin API
would have written one change at a time, audit entries aside), then timed: ``RegistryStore.
snapshot()`` (the consistent read the registry does before every publication) and
``build_configuration()`` (the deterministic document), against a baseline in the same run: a bare
``SELECT *`` of the same tables without building model objects.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from google.protobuf import descriptor_pb2
from sqlalchemy import insert, select

from registry.globalconf_build import build_configuration
from registry.store import RegistryStore, database_url
from registry.store import tables as t

_RESULTS = Path(__file__).parent / "results" / "registry_store.txt"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_BATCH = 5000


def _us(at: datetime) -> int:
    return (at - _EPOCH) // timedelta(microseconds=1)


def _descriptor_set(package: str) -> bytes:
    fds = descriptor_pb2.FileDescriptorSet()
    f = fds.file.add(name=f"{package.replace('.', '/')}/service.proto", package=package)
    f.syntax = "proto3"
    f.message_type.add(name="Query").field.add(
        name="id", number=1, type=descriptor_pb2.FieldDescriptorProto.TYPE_STRING
    )
    service = f.service.add(name="Service")
    for method in ("Get", "Find"):
        service.method.add(
            name=method, input_type=f".{package}.Query", output_type=f".{package}.Query"
        )
    return fds.SerializeToString()


def _rows(args: argparse.Namespace, now: datetime) -> dict[Any, list[dict[str, Any]]]:
    at = _us(now)
    members = [f"BENCH/GOV/M{i:05d}" for i in range(args.members)]
    subsystems = [f"{m}/app" for m in members]
    services = [
        f"{subsystems[i % len(subsystems)]}/bench.s{i:05d}.Service" for i in range(args.services)
    ]
    return {
        t.members: [{"member_id": m, "name": f"Member {m}", "created_at_us": at} for m in members],
        t.subsystems: [
            {"subsystem_id": s, "member_id": s.rsplit("/", 1)[0], "created_at_us": at}
            for s in subsystems
        ],
        t.servers: [
            {
                "server_id": f"{members[i]}/ss1",
                "member_id": members[i],
                "address": f"ss{i}.bench.example:8443",
                "audit_address": "",
                "auth_cert_der": i.to_bytes(4, "big") * 100,
                "auth_cert_sha256": f"{i:064x}",
                "log_public_key": "",
                "created_at_us": at,
            }
            for i in range(args.servers)
        ],
        t.services: [
            {
                "service_id": s,
                "subsystem_id": s.rsplit("/", 1)[0],
                "member_id": s.rsplit("/", 2)[0],
                "methods_json": '["Find","Get"]',
                "file_descriptor_set": _descriptor_set(f"bench.s{i:05d}"),
                "description": "a benchmark service",
                "savings_citizen_minutes": 10.0,
                "savings_paper_forms": 1,
                "savings_cost": 2.5,
                "created_at_us": at,
            }
            for i, s in enumerate(services)
        ],
        t.contracts: [
            {
                "contract_id": f"c{i:08d}",
                "consumer_id": subsystems[(i * 7) % len(subsystems)],
                "consumer_member_id": members[(i * 7) % len(members)],
                "service_id": services[i % len(services)],
                "provider_member_id": services[i % len(services)].rsplit("/", 2)[0],
                "methods_json": '["Get"]',
                "purpose": "bench",
                "legal_basis": "Benchmark Act s. 1",
                "valid_from_us": at - 10**9,
                "valid_until_us": None,
                "state": "active",
                "requested_by": "bench",
                "requested_at_us": at,
                "approved_by": "bench",
                "approved_at_us": at,
                "activated_by": "bench",
                "activated_at_us": at,
                "revoked_by": None,
                "revoked_at_us": None,
            }
            for i in range(args.contracts)
        ],
    }


async def _bench(args: argparse.Namespace, url: str) -> dict[str, Any]:
    store = await RegistryStore.open(url)
    try:
        now = datetime.now(UTC)
        start = time.perf_counter()
        async with store.engine.begin() as conn:
            for table, rows in _rows(args, now).items():
                for offset in range(0, len(rows), _BATCH):
                    await conn.execute(insert(table), rows[offset : offset + _BATCH])
        load = time.perf_counter() - start

        start = time.perf_counter()
        async with store.engine.connect() as conn:
            raw = 0
            for table in (t.members, t.subsystems, t.servers, t.services, t.contracts):
                raw += len((await conn.execute(select(table))).all())
        baseline = time.perf_counter() - start

        start = time.perf_counter()
        snapshot = await store.snapshot()
        read = time.perf_counter() - start

        start = time.perf_counter()
        conf = build_configuration(
            snapshot,
            instance="BENCH",
            serial=1,
            generated_at=now,
            expires_at=now + timedelta(minutes=10),
            trust_anchors=[b"anchor"],
        )
        built = time.perf_counter() - start
        size = len(conf.SerializeToString(deterministic=True))
        return {
            "rows": raw,
            "load_seconds": round(load, 2),
            "baseline_select_seconds": round(baseline, 3),
            "snapshot_seconds": round(read, 3),
            "snapshot_vs_select": round(read / baseline, 1),
            "build_seconds": round(built, 3),
            "document_bytes": size,
            "contracts_published": len(conf.contracts),
        }
    finally:
        await store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=10_000)
    parser.add_argument("--servers", type=int, default=1_000)
    parser.add_argument("--services", type=int, default=20_000)
    parser.add_argument("--contracts", type=int, default=100_000)
    parser.add_argument("--db", help="PostgreSQL URL of an empty database (default: SQLite)")
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = database_url(args.db, Path(tmp))
        result = asyncio.run(_bench(args, url))
    result = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "backend": "postgresql" if args.db else "sqlite",
        "scale": {k: getattr(args, k) for k in ("members", "servers", "services", "contracts")},
        **result,
    }
    print(json.dumps(result, indent=2))
    if not args.no_record:
        _RESULTS.parent.mkdir(exist_ok=True)
        with _RESULTS.open("a") as out:
            out.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
