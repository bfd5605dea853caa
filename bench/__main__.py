"""``python -m bench`` (``make bench``): the exchange benchmark, then the micro-benchmarks.

    python -m bench                 # everything; writes bench/results/latest.json and latest.md
    python -m bench --micro         # only the micro-benchmarks (sign, verify, log, proof, lookup)
    python -m bench --exchange      # only direct vs bus
    python -m bench --gateway       # only REST/JSON through the gateway vs gRPC through the bus
    python -m bench --audit-search  # audit searches over a 1M-record log (latest.json's
                                    # audit_search; not part of a full run: the fill takes minutes)
    python -m bench --quick         # tiny call counts: proves the harness works
    python -m bench --profile DIR   # also sample both security servers with py-spy into DIR
    python -m bench --no-relay      # skip the relay floor (two bare relays, no trust)
    python -m bench --exchange --trust-floor  # also the trust floor (the relay floor plus only
                                    # the required signatures, verifications, durable commits)
    python -m bench --no-scale-case # skip the scale case (512 B with 1,000 callers in flight)
    python -m bench --instructions  # only the instruction count (both servers under callgrind)

The older stand-alone scripts stay where they were: ``bench/globalconf.py`` (issue 4's full size),
``bench/log_append.py`` and ``bench/log_proofs.py`` (the message log at 1M leaves), and
``bench/log_proofs_scale.py`` (proofs at 10M leaves; its field of ``latest.json`` is kept here).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

from bench.audit_search import DEFAULT_RECORDS, run_audit_search
from bench.exchange import (
    DEFAULT_CONCURRENCY,
    DEFAULT_PAYLOADS,
    SCALE_CONCURRENCY,
    BenchConfig,
    run_exchange_bench,
    run_instruction_count,
)
from bench.gateway import gateway_markdown, run_gateway_bench
from bench.micro import run_micro
from bench.report import markdown

RESULTS: Final = Path(__file__).resolve().parent / "results"
#: Call counts of ``--quick`` (per concurrency, 512 B; 64 KiB runs half).
QUICK_CALLS: Final = {1: 20, 16: 64, 64: 128}
QUICK_WARMUP: Final = {1: 5, 16: 16, 64: 64}
#: Fields of ``latest.json`` measured by stand-alone scripts (too long for ``make bench``),
#: carried over from the previous file when a run rewrites it.
CARRIED: Final = (
    "audit_search",  # python -m bench --audit-search
    "proof_serving_at_scale",  # bench/log_proofs_scale.py
)


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    what = parser.add_mutually_exclusive_group()
    what.add_argument("--micro", action="store_true", help="only the micro-benchmarks")
    what.add_argument("--exchange", action="store_true", help="only the exchange benchmark")
    what.add_argument("--gateway", action="store_true", help="only the gateway benchmark")
    what.add_argument(
        "--audit-search",
        action="store_true",
        help="only the audit searches over a large log (merged into latest.json)",
    )
    what.add_argument(
        "--instructions",
        action="store_true",
        help="only the instruction count per exchange (both servers under callgrind)",
    )
    parser.add_argument(
        "--records", type=int, default=DEFAULT_RECORDS, help="records in the audit-search log"
    )
    parser.add_argument("--quick", action="store_true", help="tiny counts (a smoke run)")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every call count")
    parser.add_argument("--payload", type=int, nargs="+", default=list(DEFAULT_PAYLOADS))
    parser.add_argument("--concurrency", type=int, nargs="+", default=list(DEFAULT_CONCURRENCY))
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder")
    parser.add_argument("--workdir", type=Path, default=None, help="keep data files here")
    parser.add_argument("--profile", type=Path, default=None, help="py-spy the servers into DIR")
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="worker processes per security server ([server] workers; see bench/README.md)",
    )
    parser.add_argument(
        "--no-relay",
        dest="relay",
        action="store_false",
        help="skip the relay floor (two bare relays in place of the two servers)",
    )
    parser.add_argument(
        "--trust-floor",
        action="store_true",
        help="also run the trust floor (two relays doing only the trust work the design "
        "requires; bench/trust_relay.py); off by default",
    )
    parser.add_argument(
        "--trust-floor-link",
        choices=("unary", "stream"),
        default="unary",
        help="the trust floor's link: one unary call per exchange (default), or one stream "
        "with a durability notice per exchange that the consumer waits for (the bus's shape)",
    )
    parser.add_argument(
        "--no-scale-case",
        dest="scale_case",
        action="store_false",
        help="skip the scale case (512 B, 1,000 callers in flight; never run with --quick)",
    )
    args = parser.parse_args(argv)
    if args.trust_floor and not args.relay:
        parser.error("--trust-floor is measured against the relay floor: drop --no-relay")
    return args


#: The case a full run (``make bench``) measures the trust floor in: issue 17's c1 targets.
FULL_RUN_TRUST_FLOOR_CASES: Final = ((512, 1),)


def _config(args: argparse.Namespace, *, full: bool = False) -> BenchConfig:
    """The exchange benchmark's configuration; ``full`` (``make bench``: everything, not
    ``--quick``) adds the trust floor at :data:`FULL_RUN_TRUST_FLOOR_CASES`."""
    base = BenchConfig()
    floor_by_default = full and args.relay and not args.trust_floor
    calls = dict(QUICK_CALLS if args.quick else base.calls)
    warmup = dict(QUICK_WARMUP if args.quick else base.warmup)
    scale: float = args.scale
    return BenchConfig(
        payloads=tuple(args.payload),
        concurrency=tuple(args.concurrency),
        calls={c: max(1, int(n * scale)) for c, n in calls.items()},
        warmup={c: max(1, int(n * scale)) for c, n in warmup.items()},
        workdir=args.workdir,
        profile_dir=args.profile,
        relay=args.relay,
        trust_floor=args.trust_floor or floor_by_default,
        trust_floor_cases=FULL_RUN_TRUST_FLOOR_CASES if floor_by_default else (),
        trust_floor_link=args.trust_floor_link,
        workers=args.workers,
        scale_concurrency=SCALE_CONCURRENCY if args.scale_case and not args.quick else (),
    )


async def _main(args: argparse.Namespace) -> dict[str, Any]:
    task = asyncio.current_task()
    assert task is not None
    # Ctrl-C and SIGTERM (make killed, CI cancelled) unwind the run: every child is stopped.
    # Installed here, not left to asyncio.run: a shell may start us with SIGINT ignored.
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, task.cancel)
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {}
    everything = not (
        args.micro or args.exchange or args.gateway or args.audit_search or args.instructions
    )
    if everything or args.exchange:
        result = await run_exchange_bench(_config(args, full=everything and not args.quick))
    if everything or args.gateway:
        result["gateway"] = await run_gateway_bench(
            quick=args.quick, concurrency=tuple(args.concurrency)
        )
    if everything or args.micro:
        result["micro"] = await run_micro(quick=args.quick)
    if args.audit_search:  # minutes to fill a 1M-record log: only when asked
        result["audit_search"] = await run_audit_search(
            records=args.records, workdir=args.workdir, quick=args.quick
        )
    # Under callgrind the servers run ~30x slower: not part of a --quick run.
    if args.instructions or (everything and not args.quick):
        result["instructions"] = await run_instruction_count()
        print(f"instructions per exchange: {result['instructions']['instructions_per_exchange']}")
    return result


def carry_over(result: dict[str, Any], previous: Path) -> None:
    """Copy the :data:`CARRIED` fields of the ``previous`` results file (if any) into
    ``result`` where this run did not measure them: fields measured on their own keep their
    last result, which says when it was measured."""
    if not previous.exists():
        return
    kept = json.loads(previous.read_text())
    result.update({k: kept[k] for k in CARRIED if k in kept and k not in result})


def main(argv: Sequence[str] | None = None) -> int:
    """Run, print, and write ``latest.json`` and ``latest.md`` to ``--out``."""
    args = _parse(argv)
    try:
        result = asyncio.run(_main(args))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("interrupted; every process the benchmark started was stopped", file=sys.stderr)
        return 130
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    if args.audit_search:
        # One field of the last full run's results, replaced in place.
        latest = out / "latest.json"
        recorded = json.loads(latest.read_text()) if latest.exists() else {}
        recorded["audit_search"] = result["audit_search"]
        latest.write_text(json.dumps(recorded, indent=2) + "\n")
        return 0
    name = (
        "micro"
        if args.micro
        else "gateway"
        if args.gateway
        else "instructions"
        if args.instructions
        else "latest"
    )
    if name == "latest":
        carry_over(result, out / "latest.json")
    (out / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    table = "" if args.gateway else markdown(result)
    if "gateway" in result:
        table += "\n" + gateway_markdown(result["gateway"])
    (out / f"{name}.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
