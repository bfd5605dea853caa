"""Micro-benchmarks of the parts on an exchange's hot path, each alone in this process.

- ``sign``: :func:`ruta.pki.signature.sign_message` over a real request header (ECDSA P-256), and
  the bare key operation for comparison;
- ``verify``: :class:`ruta.pki.signature.MessageVerifier` with its chain and OCSP caches warm (what
  a server does for every message after the first from a signer);
- batch signatures (docs/adr/0010): ``MessageSigner.sign_batch`` over 16 headers, and verifying
  their messages with the batch's root cached, or with one ECDSA check per batch, per message;
- ``log append``: durable appends to a SQLite message log (WAL, ``synchronous=FULL``) at
  concurrency 1, 16 and 64: group commit turns many callers into few transactions
  (the record is ``bench/log_append.py``'s); each row also gives one append's p50 (``p50_ms``;
  at concurrency 1, one durable commit);
- ``inclusion proof``: proofs served from a log of ``PROOF_LEAVES`` leaves;
- ``GlobalConf.allows``: contract lookups in a verified configuration (``bench/globalconf.py``'s
  document at a tenth of issue 4's size).

Results are rates; nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import random
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from bench import globalconf as globalconf_bench
from bench.log_append import _entry as log_entry
from bench.log_append import append_for, entry_pool, quiet_inline
from ruta.ids import MemberId, ServerId, ServiceId, SubsystemId
from ruta.pki.signature import MessageSigner, MessageVerifier, sign_message
from ruta.pki.testing import Credential, TestPki
from ruta.v1 import transport_pb2
from security_server.database import open_database
from security_server.log import BodyKey, MessageLog

__all__ = ["run_micro"]

#: Leaves in the log proofs are served from.
PROOF_LEAVES: Final = 10_000
#: Headers per batch in the batch-signature rows.
BATCH: Final = 16
_MEMBER: Final = MemberId.parse("DEV/GOV/SOC")


def _rate(ops: int, seconds: float, note: str = "") -> dict[str, Any]:
    entry: dict[str, Any] = {
        "ops": ops,
        "seconds": round(seconds, 3),
        "per_second": round(ops / seconds, 1) if seconds > 0 else 0.0,
        "us_per_op": round(seconds / ops * 1e6, 2) if ops else 0.0,
    }
    if note:
        entry["note"] = note
    return entry


def _loop(fn: Callable[[], object], seconds: float) -> dict[str, Any]:
    """Call ``fn`` repeatedly for about ``seconds``; the rate."""
    ops = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(50):
            fn()
        ops += 50
        now = time.perf_counter()
        if now >= deadline:
            return _rate(ops, now - start)


def _header() -> bytes:
    header = transport_pb2.MessageHeader(
        message_id=str(uuid.uuid4()),
        kind=transport_pb2.MESSAGE_KIND_REQUEST,
        client=SubsystemId.parse("DEV/GOV/SOC/benefits").to_proto(),
        service=ServiceId.parse("DEV/GOV/POP/registry/population.v1.PopulationRegister").to_proto(),
        method="GetPerson",
        purpose="benefit-eligibility",
        body_sha256=bytes(32),
        sender=ServerId.parse("DEV/GOV/SOC/ss1").to_proto(),
        receiver=ServerId.parse("DEV/GOV/POP/ss1").to_proto(),
    )
    header.created_at.FromDatetime(datetime.datetime.now(datetime.UTC))
    return header.SerializeToString(deterministic=True)


def _crypto(directory: Path, seconds: float) -> dict[str, Any]:
    pki = TestPki(directory)
    credential = pki.sign(_MEMBER)
    signer = credential.signer()
    staple = pki.ocsp_response(credential.certificate)
    header = _header()
    signature = sign_message(
        header, signer=signer, certificate=credential.certificate, ocsp_response=staple
    )
    verifier = MessageVerifier(pki.trust_anchors)
    now = datetime.datetime.now(datetime.UTC)
    verifier.verify(header, signature, claimed_member=_MEMBER, signed_at=now)  # warms the caches
    results = {
        "sign (sign_message)": _loop(
            lambda: sign_message(
                header, signer=signer, certificate=credential.certificate, ocsp_response=staple
            ),
            seconds,
        ),
        "sign (bare ECDSA P-256)": _loop(lambda: signer.sign(header), seconds),
        "verify (chain and OCSP cached)": _loop(
            lambda: verifier.verify(header, signature, claimed_member=_MEMBER, signed_at=now),
            seconds,
        ),
    }
    cold = MessageVerifier(pki.trust_anchors, cache_size=1)
    other = pki.sign(MemberId.parse("DEV/GOV/TAX"))
    other_sig = sign_message(
        header,
        signer=other.signer(),
        certificate=other.certificate,
        ocsp_response=pki.ocsp_response(other.certificate),
    )
    tax = MemberId.parse("DEV/GOV/TAX")
    flip = [(signature, _MEMBER), (other_sig, tax)]
    count = 0

    def uncached() -> None:
        nonlocal count
        sig, member = flip[count % 2]
        count += 1
        cold.verify(header, sig, claimed_member=member, signed_at=now)

    results["verify (uncached: chain + OCSP checked each time)"] = _loop(uncached, seconds / 2)
    results.update(_batches(pki, credential, staple, now, seconds))
    return results


def _per_message(entry: dict[str, Any], per_op: int) -> dict[str, Any]:
    return _rate(entry["ops"] * per_op, entry["seconds"])


def _batches(
    pki: TestPki, credential: Credential, staple: bytes, now: datetime.datetime, seconds: float
) -> dict[str, Any]:
    """Batch signatures of :data:`BATCH` headers, per message."""
    signer = MessageSigner(signer=credential.signer(), certificate=credential.certificate)
    headers = [_header() for _ in range(BATCH)]
    signed = signer.sign_batch(headers, ocsp_response=staple)
    pairs = list(zip(headers, signed, strict=True))
    warm = MessageVerifier(pki.trust_anchors)
    count = 0

    def cached() -> None:
        nonlocal count
        header, signature = pairs[count % BATCH]
        count += 1
        warm.verify(header, signature, claimed_member=_MEMBER, signed_at=now)

    # Many batches and a verifier remembering one root: each batch's first message pays the
    # ECDSA check, the other 15 hit the cache (chain and OCSP stay cached: one signer, one staple).
    many: list[tuple[bytes, transport_pb2.Signature]] = []
    for _ in range(64):
        batch = [_header() for _ in range(BATCH)]
        many.extend(zip(batch, signer.sign_batch(batch, ocsp_response=staple), strict=True))
    one_root = MessageVerifier(pki.trust_anchors, cache_size=1)
    turn = 0

    def per_batch() -> None:
        nonlocal turn
        header, signature = many[turn % len(many)]
        turn += 1
        one_root.verify(header, signature, claimed_member=_MEMBER, signed_at=now)

    return {
        f"sign (batch of {BATCH}, per message)": _per_message(
            _loop(lambda: signer.sign_batch(headers, ocsp_response=staple), seconds / 2), BATCH
        ),
        f"verify (batch of {BATCH}, per message, root cached)": _loop(cached, seconds / 2),
        f"verify (batch of {BATCH}, per message, one ECDSA per batch)": _loop(
            per_batch, seconds / 2
        ),
    }


async def _appends(url: str, concurrency: int, seconds: float) -> dict[str, Any]:
    engine = await open_database(url)
    try:
        log = await MessageLog.open(
            engine, origin=f"bench/c{concurrency}", body_key=BodyKey.generate()
        )
        in_flight = quiet_inline(log)
        # A message id of its own per append, as the server makes them (bench/log_append.py).
        entries = entry_pool(int(seconds * 30_000) + 1000, bases=500)
        before = log.stats.transactions
        latencies, elapsed = await append_for(log, entries, in_flight, concurrency, seconds)
        done = len(latencies)
        transactions = log.stats.transactions - before
        await log.close()
    finally:
        await engine.dispose()
    # The p50 of one append (at concurrency 1, one durable commit: issue 17's target is a p50;
    # the rate's per-op figure is the mean, which the slow tail pulls up).
    p50_ms = statistics.median(latencies) * 1e3 if latencies else 0.0
    entry = _rate(
        done,
        elapsed,
        f"{done / max(transactions, 1):.1f} appends per transaction, p50 {p50_ms:.3f} ms",
    )
    entry["p50_ms"] = round(p50_ms, 3)
    return entry


async def _proofs(url: str, leaves: int, seconds: float) -> dict[str, Any]:
    engine = await open_database(url)
    try:
        log = await MessageLog.open(
            engine, origin="bench/proofs", body_key=BodyKey.generate(), max_group_records=4096
        )
        entries = [log_entry() for _ in range(64)]
        while log.size() < leaves:
            missing = leaves - log.size()
            batches = [
                entries[: min(64, missing - i * 64)] for i in range(min(64, -(-missing // 64)))
            ]
            await asyncio.gather(*(log.append(b) for b in batches if b))
        size = log.size()
        rng = random.Random(6962)
        served = 0
        start = time.perf_counter()
        deadline = start + seconds
        while time.perf_counter() < deadline:
            await log.inclusion_proof(rng.randrange(size), size)
            served += 1
        elapsed = time.perf_counter() - start
        await log.close()
    finally:
        await engine.dispose()
    return _rate(served, elapsed, f"tree of {size} leaves, one reader")


def _lookups(quick: bool) -> dict[str, Any]:
    scale = 100 if quick else 10
    args = argparse.Namespace(
        members=10_000 // scale,
        servers=1_000 // scale,
        services=20_000 // scale,
        contracts=100_000 // scale,
        lookups=20_000 if quick else 200_000,
    )
    result = globalconf_bench.run(args)
    note = (
        f"{args.contracts} contracts, {args.services} services; "
        f"{result['allows_over_dict_ratio']}x a bare dict lookup"
    )
    per_hit = result["allows_per_second_hit"]
    per_miss = result["allows_per_second_denied"]
    return {
        "GlobalConf.allows (permitted)": {
            "per_second": per_hit,
            "us_per_op": round(1e6 / per_hit, 2),
            "note": note,
        },
        "GlobalConf.allows (denied)": {
            "per_second": per_miss,
            "us_per_op": round(1e6 / per_miss, 2),
        },
    }


async def run_micro(*, quick: bool = False) -> dict[str, Any]:
    """Run every micro-benchmark (``quick``: a fraction of a second each); the rates by name."""
    seconds = 0.2 if quick else 2.0
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="ruta-micro-") as tmp:
        directory = Path(tmp)
        results.update(_crypto(directory / "pki", seconds))
        url = f"sqlite+aiosqlite:///{directory / 'log.db'}"
        for concurrency in (1, 16, 64):
            results[f"log append, concurrency {concurrency}"] = await _appends(
                url, concurrency, seconds
            )
        results["inclusion proof"] = await _proofs(url, 500 if quick else PROOF_LEAVES, seconds)
    results.update(_lookups(quick))
    for name, entry in results.items():
        print(f"{name:55s} {entry['per_second']:>12,.0f}/s  {entry['us_per_op']:>10,.1f} µs")
    return results
