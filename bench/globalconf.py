"""Global-configuration benchmark: build, sign, verify and index a large instance's document,
then look contracts up. Prints results and appends them to ``bench/results/globalconf.json``;
asserts nothing.

    python bench/globalconf.py [--members 10000] [--servers 1000] [--services 20000]
                               [--contracts 100000] [--lookups 200000] [--no-record]

Issue 4 asks for 10,000 members, 1,000 servers, 20,000 services and 100,000 contracts (the
defaults). Every service carries a real ``FileDescriptorSet`` (one service, two methods, two
messages). Baselines measured in the same run give the ratios: verification+indexing against a
bare protobuf parse, and ``GlobalConf.allows`` against a bare dictionary lookup.
"""

from __future__ import annotations

import argparse
import gzip
import json
import platform
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from google.protobuf import descriptor_pb2, timestamp_pb2

from ruta.globalconf import (
    ConfigurationAnchor,
    open_configuration,
    sign_configuration,
    verify_configuration,
)
from ruta.ids import MemberId, ServerId, ServiceId, SubsystemId
from ruta.pki.testing import TestPki
from ruta.v1 import globalconf_pb2

_RESULTS = Path(__file__).parent / "results" / "globalconf.json"
_T = TypeVar("_T")


def _timed(fn: Callable[[], _T]) -> tuple[_T, float]:
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def _ts(at: datetime) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(at)
    return ts


def _descriptor_set(package: str) -> bytes:
    fds = descriptor_pb2.FileDescriptorSet()
    f = fds.file.add(name=f"{package.replace('.', '/')}/service.proto", package=package)
    f.syntax = "proto3"
    req = f.message_type.add(name="LookupRequest")
    req.field.add(name="subject", number=1, type=9, label=1)
    req.field.add(name="as_of", number=2, type=9, label=1)
    rsp = f.message_type.add(name="LookupResponse")
    rsp.field.add(name="found", number=1, type=8, label=1)
    rsp.field.add(name="value", number=2, type=9, label=1)
    rsp.field.add(name="source", number=3, type=9, label=1)
    svc = f.service.add(name="Registry")
    for method in ("Lookup", "List"):
        svc.method.add(
            name=method,
            input_type=f".{package}.LookupRequest",
            output_type=f".{package}.LookupResponse",
        )
    return fds.SerializeToString(deterministic=True)


def build(
    *, members: int, servers: int, services: int, contracts: int, now: datetime, rng: random.Random
) -> tuple[globalconf_pb2.GlobalConfiguration, list[tuple[SubsystemId, ServiceId, str, str]]]:
    """A canonical document of the given size, and the (client, service, method, purpose) of
    each contract for the lookup benchmark."""
    conf = globalconf_pb2.GlobalConfiguration(
        instance="LAC",
        serial=1,
        generated_at=_ts(now),
        expires_at=_ts(now + timedelta(seconds=600)),
        witness_public_key=b"registry+0a1b2c3d+" + b"A" * 44,
        witness_url="https://registry.lac.example/witness",
    )
    member_ids = [MemberId("LAC", "GOV", f"M{i:06d}") for i in range(members)]
    subsystem_ids = [m.subsystem("main") for m in member_ids]
    for m in member_ids:
        conf.members.add(id=m.to_proto(), name=f"Agency {m.member_code} of the Republic")
    for s in subsystem_ids:
        conf.subsystems.add(id=s.to_proto())
    for i in range(servers):
        server_id = ServerId(member_ids[i % members], f"ss{i // members + 1}")
        conf.servers.add(
            id=server_id.to_proto(),
            address=f"ss{i}.agencies.lac.example:5500",
            auth_cert_sha256=f"{rng.getrandbits(256):064x}",
            audit_address=f"ss{i}.agencies.lac.example:5600",
        )
    service_ids: list[ServiceId] = []
    for i in range(services):
        sub = subsystem_ids[i % members]
        package = f"lac.r{i:05d}.v1"
        sid = sub.service(f"{package}.Registry")
        service_ids.append(sid)
        conf.services.add(
            id=sid.to_proto(),
            methods=["List", "Lookup"],
            file_descriptor_set=_descriptor_set(package),
            description=f"Register {i}: authoritative records kept by {sub.member.member_code}",
            savings=globalconf_pb2.Savings(citizen_minutes=15.0, paper_forms=1, cost=2.5),
        )
    conf.services.sort(key=lambda s: (s.id.subsystem.member.member_code, s.id.service_name))
    calls: list[tuple[SubsystemId, ServiceId, str, str]] = []
    for i in range(contracts):
        consumer = subsystem_ids[rng.randrange(members)]
        service = service_ids[rng.randrange(services)]
        purpose = f"purpose-{i % 500}"
        conf.contracts.add(
            contract_id=f"C{i:07d}",
            consumer=consumer.to_proto(),
            service=service.to_proto(),
            methods=["Lookup"],
            purpose=purpose,
            legal_basis=f"Act {i % 300} article {i % 17}",
            valid_from=_ts(now - timedelta(days=30)),
            valid_until=_ts(now + timedelta(days=365)),
        )
        calls.append((consumer, service, "Lookup", purpose))
    return conf, calls


def run(args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(4)
    now = datetime.now(UTC)
    with tempfile.TemporaryDirectory() as tmp:
        pki = TestPki(Path(tmp))
        credential = pki.sign("LAC/GOV/REG")
    anchor = ConfigurationAnchor(
        instance="LAC",
        globalconf_url="http://registry/globalconf",
        certificates=(credential.certificate,),
    )
    signer = credential.signer()

    (conf, calls), t_build = _timed(
        lambda: build(
            members=args.members,
            servers=args.servers,
            services=args.services,
            contracts=args.contracts,
            now=now,
            rng=rng,
        )
    )
    signed, t_sign = _timed(
        lambda: sign_configuration(conf, signer=signer, certificate=credential.certificate)
    )
    view, t_verify = _timed(lambda: verify_configuration(signed, anchor, now=now))
    # The registry re-signs an unchanged store every interval: new serial and validity only.
    later = now + timedelta(seconds=60)
    restamped = globalconf_pb2.GlobalConfiguration()
    restamped.CopyFrom(conf)
    restamped.serial = 2
    restamped.generated_at.CopyFrom(_ts(later))
    restamped.expires_at.CopyFrom(_ts(later + timedelta(seconds=600)))
    resigned = sign_configuration(restamped, signer=signer, certificate=credential.certificate)
    reused, t_reverify = _timed(
        lambda: open_configuration(resigned, anchor, now=later, previous=view)
    )
    assert reused.contracts is view.contracts
    envelope = globalconf_pb2.SignedGlobalConfiguration.FromString(signed)
    _, t_parse = _timed(
        lambda: globalconf_pb2.GlobalConfiguration.FromString(envelope.configuration)
    )
    zipped, t_gzip = _timed(lambda: gzip.compress(signed, compresslevel=6))

    probes = [calls[rng.randrange(len(calls))] for _ in range(args.lookups)]
    misses = [(c, s, "List", p) for c, s, _, p in probes]
    at = now
    allows = view.allows

    def lookups(items: list[tuple[SubsystemId, ServiceId, str, str]]) -> int:
        return sum(allows(c, s, m, p, at) is not None for c, s, m, p in items)

    hits, t_hits = _timed(lambda: lookups(probes))
    denied, t_misses = _timed(lambda: lookups(misses))
    plain = {(c, s): p for c, s, _, p in calls}
    _, t_dict = _timed(lambda: sum((c, s) in plain for c, s, _, _ in probes))

    return {
        "recorded_at": now.isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus_note": "shared 2-core machine, other work running",
        "members": args.members,
        "servers": args.servers,
        "services": args.services,
        "contracts": args.contracts,
        "build_seconds": round(t_build, 3),
        "sign_seconds": round(t_sign, 3),
        "verify_and_index_seconds": round(t_verify, 3),
        "reverify_unchanged_content_seconds": round(t_reverify, 3),
        "protobuf_parse_seconds": round(t_parse, 3),
        "verify_over_parse_ratio": round(t_verify / t_parse, 1),
        "gzip_seconds": round(t_gzip, 3),
        "document_bytes": len(signed),
        "document_gzip_bytes": len(zipped),
        "gzip_ratio": round(len(zipped) / len(signed), 3),
        "lookups": args.lookups,
        "allows_hits": hits,
        "allows_denied": args.lookups - denied,
        "allows_per_second_hit": round(args.lookups / t_hits),
        "allows_per_second_denied": round(args.lookups / t_misses),
        "dict_lookups_per_second": round(args.lookups / t_dict),
        "allows_over_dict_ratio": round(statistics.fmean([t_hits, t_misses]) / t_dict, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=10_000)
    parser.add_argument("--servers", type=int, default=1_000)
    parser.add_argument("--services", type=int, default=20_000)
    parser.add_argument("--contracts", type=int, default=100_000)
    parser.add_argument("--lookups", type=int, default=200_000)
    parser.add_argument("--no-record", action="store_true", help="print only")
    args = parser.parse_args()
    result = run(args)
    print(json.dumps(result, indent=2))
    if not args.no_record:
        _RESULTS.parent.mkdir(parents=True, exist_ok=True)
        runs: list[Any] = json.loads(_RESULTS.read_text()) if _RESULTS.exists() else []
        runs.append(result)
        _RESULTS.write_text(json.dumps(runs, indent=2) + "\n")


if __name__ == "__main__":
    main()
