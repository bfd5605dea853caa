"""The Markdown form of a benchmark result (``bench/results/latest.md``)."""

from __future__ import annotations

from typing import Any

__all__ = ["markdown"]


def _size(payload: int) -> str:
    return f"{payload // 1024} KiB" if payload >= 1024 and payload % 1024 == 0 else f"{payload} B"


def _cpu(row: dict[str, Any], mode: str, name: str) -> str:
    value = row["cpu_ms_per_exchange"][mode].get(name)
    if value is None:
        return ""
    kernel = row.get("of_which_kernel_ms", {}).get(mode, {}).get(name)
    return f"{value:.2f}" if kernel is None else f"{value:.2f} ({kernel:.2f})"


def _relay_cpu(row: dict[str, Any]) -> str:
    if "relay" not in row["cpu_ms_per_exchange"]:
        return ""
    return f"{_cpu(row, 'relay', 'relay1')} / {_cpu(row, 'relay', 'relay2')}"


def _hops_vs_trust(cases: list[dict[str, Any]]) -> list[str]:
    """The relay floor: what two bare hops cost (relay vs direct) and what trust costs on top
    (bus vs relay). Empty when the run had no relay (``--no-relay``)."""
    rows = [row for row in cases if "relay_rps" in row]
    if not rows:
        return []
    lines = [
        "",
        "The price of the hops vs the price of trust: the relay floor is two bare grpc.aio "
        "pass-through relays in place of the two servers (plaintext loopback in and out, mutual "
        "TLS between them; no signing, no logging, no checks):",
        "",
        "| payload | conc. | direct rps | relay rps | bus rps | relay / direct | bus / relay "
        "| relay added p50 ms | bus added p50 ms | trust added p50 ms (bus - relay) "
        "| relay p99 ms | relay errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    lines.extend(
        f"| {_size(row['payload'])} | {row['concurrency']} | {row['direct_rps']:.0f} "
        f"| {row['relay_rps']:.0f} | {row['bus_rps']:.0f} | {row['relay_ratio']:.2f} "
        f"| {row['trust_ratio']:.2f} | {row['relay_added_p50_ms']:.2f} "
        f"| {row['added_p50_ms']:.2f} | {row['trust_added_p50_ms']:.2f} "
        f"| {row['relay_p99_ms']:.2f} | {row['relay_errors']} |"
        for row in rows
    )
    return lines


def _trust_floor(cases: list[dict[str, Any]]) -> list[str]:
    """The trust floor (``--trust-floor``): the relay floor plus only the trust work the
    design requires, its CPU per exchange and its stages. Empty when the run had none."""
    rows = [row for row in cases if "trust_floor_rps" in row]
    if not rows:
        return []
    lines = [
        "",
        "The trust floor: the relay floor plus only the trust work the design requires (sign, "
        "verify, the durable commits; `bench/trust_relay.py`). CPU ms per exchange of each trust "
        "relay; stage medians in µs measured inside them (trust1: the consumer side, trust2: "
        "the provider side):",
        "",
        "| payload | conc. | relay rps | trust floor rps | bus rps | relay p50 ms "
        "| trust floor p50 ms | trust floor added p50 ms | bus above trust floor p50 ms "
        "| trust floor p99 ms | cpu trust1 / trust2 | trust1 stages µs | trust2 stages µs "
        "| errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---|---:|",
    ]
    for row in rows:
        cpu = row["cpu_ms_per_exchange"]["trust_floor"]
        stages = row.get("trust_floor_stages_us", {})

        def split(name: str, stages: dict[str, Any] = stages) -> str:
            return ", ".join(
                f"{stage} {found['median_us']:.0f}" for stage, found in stages.get(name, {}).items()
            )

        lines.append(
            f"| {_size(row['payload'])} | {row['concurrency']} | {row['relay_rps']:.0f} "
            f"| {row['trust_floor_rps']:.0f} | {row['bus_rps']:.0f} | {row['relay_p50_ms']:.2f} "
            f"| {row['trust_floor_p50_ms']:.2f} | {row['trust_floor_added_p50_ms']:.2f} "
            f"| {row['bus_above_trust_floor_p50_ms']:.2f} | {row['trust_floor_p99_ms']:.2f} "
            f"| {cpu.get('trust1', 0):.2f} / {cpu.get('trust2', 0):.2f} "
            f"| {split('trust1')} | {split('trust2')} | {row['trust_floor_errors']} |"
        )
    return lines


def _processor(machine: dict[str, Any]) -> str:
    """The CPU's model name, and its family and model numbers where recorded (results before
    they were have the name alone)."""
    family, number = machine.get("cpu_family"), machine.get("cpu_model_number")
    if family and number:
        return f"{machine['cpu_model']} (family {family}, model {number})"
    return str(machine["cpu_model"])


def _exchange(result: dict[str, Any]) -> list[str]:
    machine = result["machine"]
    setup = result["setup"]
    lines = [
        "## Direct gRPC vs through the bus (consumer + provider security server)",
        "",
        f"Recorded {setup['recorded_at']} on {_processor(machine)} x {machine['cores']} cores, "
        f"Python {machine['python']}, grpcio {machine['grpcio']}, SQLite {machine['sqlite']}; "
        f"load average {machine['load_average_at_start'][0]:.2f} at start, "
        f"{machine.get('load_average_at_end', [0.0])[0]:.2f} at end; fsync p50 "
        f"{machine['fsync_p50_ms']} ms. Run took {setup['duration_s']} s.",
        "",
        "| payload | conc. | direct rps | bus rps | ratio | direct p50 ms | bus p50 ms "
        "| added p50 ms | direct p99 ms | bus p99 ms | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    lines.extend(
        f"| {_size(row['payload'])} | {row['concurrency']} | {row['direct_rps']:.0f} "
        f"| {row['bus_rps']:.0f} | {row['ratio']:.2f} | {row['direct_p50_ms']:.2f} "
        f"| {row['bus_p50_ms']:.2f} | {row['added_p50_ms']:.2f} | {row['direct_p99_ms']:.2f} "
        f"| {row['bus_p99_ms']:.2f} | {row['direct_errors'] + row['bus_errors']} |"
        for row in result["cases"]
    )
    lines += _hops_vs_trust(result["cases"])
    lines += _trust_floor(result["cases"])
    lines += [
        "",
        "CPU milliseconds per exchange, user + kernel (kernel in brackets), measured calls "
        "only; peak RSS in MiB since start:",
        "",
        "| payload | conc. | direct: backend | direct: loadgen | bus: consumer ss "
        "| bus: provider ss | bus: backend | bus: loadgen | bus: harness | relay: relay1 "
        "/ relay2 | peak MiB consumer / provider / backend |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in result["cases"]:
        mem = row["peak_rss_mib"]
        lines.append(
            f"| {_size(row['payload'])} | {row['concurrency']} "
            f"| {_cpu(row, 'direct', 'backend')} | {_cpu(row, 'direct', 'loadgen')} "
            f"| {_cpu(row, 'bus', 'consumer_ss')} | {_cpu(row, 'bus', 'provider_ss')} "
            f"| {_cpu(row, 'bus', 'backend')} | {_cpu(row, 'bus', 'loadgen')} "
            f"| {_cpu(row, 'bus', 'harness')} "
            f"| {_relay_cpu(row)} "
            f"| {mem.get('consumer_ss', 0):.0f} / {mem.get('provider_ss', 0):.0f} "
            f"/ {mem.get('backend', 0):.0f} |"
        )
    logged = result.get("logged", {})
    if logged:
        counts = ", ".join(f"{k}: {v}" for k, v in logged.items() if k != "expected_per_log")
        lines += [
            "",
            f"Message logs after the run: {counts} records "
            f"(expected {logged['expected_per_log']} in each: request and response of every "
            "answered bus call, warm-up included).",
        ]
    trust_logged = result.get("trust_floor_logged", {})
    if trust_logged:
        lines += [
            "",
            f"Trust floor logs after the run: trust1 {trust_logged.get('trust1', 0)}, trust2 "
            f"{trust_logged.get('trust2', 0)} records (expected {trust_logged['expected_per_log']}"
            f" in each), trust2 {trust_logged.get('trust2_claims', 0)} replay claims (expected "
            f"{trust_logged['expected_claims']}).",
        ]
    storage = result.get("log_storage", {})
    if storage:
        sizes = "; ".join(
            f"{name} {entry['bytes_per_record']:.0f} B per record "
            f"({entry.get('bytes_per_record_without_claims', 0):.0f} B without replay claims), "
            f"{entry['bytes_per_million_exchanges'] / 1e9:.2f} GB per million exchanges"
            for name, entry in storage.items()
        )
        lines += ["", f"Log storage, bodies excluded (file size minus body pages): {sizes}."]
    return lines


def _micro(micro: dict[str, Any]) -> list[str]:
    lines = [
        "## Micro-benchmarks (one process, hot-path parts)",
        "",
        "| what | rate | per op |",
        "|---|---:|---:|",
    ]
    for name, entry in micro.items():
        rate = entry.get("per_second", 0.0)
        per = entry.get("us_per_op", 0.0)
        note = f" ({entry['note']})" if entry.get("note") else ""
        lines.append(f"| {name}{note} | {rate:,.0f}/s | {per:,.1f} µs |")
    return lines


def _scale(rows: list[dict[str, Any]]) -> list[str]:
    """The scale cases: many callers in flight, direct and through the bus."""
    lines = [
        "Scale: many callers in flight (512 B; CPU milliseconds per exchange of each server):",
        "",
        "| callers | direct rps | bus rps | bus p50 ms | bus p99 ms | bus errors "
        "| consumer ss | provider ss |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    lines.extend(
        f"| {row['concurrency']} | {row['direct_rps']:.0f} | {row['bus_rps']:.0f} "
        f"| {row['bus_p50_ms']:.1f} | {row['bus_p99_ms']:.1f} | {row['bus_errors']} "
        f"| {row['cpu_ms_per_exchange']['consumer_ss']:.2f} "
        f"| {row['cpu_ms_per_exchange']['provider_ss']:.2f} |"
        for row in rows
    )
    return lines


def _instructions(count: dict[str, Any]) -> list[str]:
    """The noise-free figure: instructions per exchange of each server (callgrind)."""
    per = count["instructions_per_exchange"]
    return [
        f"Instructions per exchange ({count['tool']}, {count['calls']} calls of "
        f"{count['payload']} B at concurrency {count['concurrency']}, {count['errors']} errors): "
        f"consumer ss {per['consumer_ss']:,}, provider ss {per['provider_ss']:,}.",
    ]


def markdown(result: dict[str, Any]) -> str:
    """The tables of ``result`` (any part may be absent)."""
    lines = ["# Ruta benchmark results", ""]
    if "cases" in result:
        lines += [*_exchange(result), ""]
    if result.get("scale"):
        lines += [*_scale(result["scale"]), ""]
    if "instructions" in result:
        lines += [*_instructions(result["instructions"]), ""]
    if "micro" in result:
        lines += [*_micro(result["micro"]), ""]
    return "\n".join(lines)
