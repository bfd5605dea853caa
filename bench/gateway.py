"""REST and JSON through the bus (issue 14): what the gateway costs.

Four measurements per concurrency (512 B payloads), each by a load generator of its own process:

- **REST direct**: ``POST /echo`` straight to the REST echo backend (:mod:`bench.rest_echo`);
- **REST bus**: the same call as ``POST /r1/.../echo-rest/echo`` through the consumer member's
  gateway, both security servers and the provider member's gateway back end;
- **gRPC bus**: ``bench.v1.Echo/Echo`` through both security servers (the exchange benchmark's
  bus case), the yardstick;
- **JSON bus**: the same method called with JSON through the consumer member's gateway
  (``{"data": base64}``, transcoded to and from protobuf).

Targets (docs/guides/rest.md, issue 14): JSON-to-gRPC at least 0.8 of the gRPC bus throughput at
c=64, and a REST call through the bus at least 0.8 of the gRPC bus throughput. Timing is reported,
never asserted. Every part runs as in :mod:`bench.exchange` (its bed, real processes: two
``ruta ss serve``, two ``ruta gateway serve``, the echo backends).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import json
import os
import signal
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import tomli_w

from bench.echo import ECHO_PATH
from bench.exchange import (
    ECHO_SERVICE,
    PURPOSE,
    REPO_ROOT,
    RUN_TIMEOUT_SECONDS,
    BenchBed,
    _line,
    _process_group,
    _wait_ready,
    cpu_times,
    machine_info,
)
from bench.rest_echo import OPENAPI
from ruta.ids import ServerId
from ruta.v1 import globalconf_pb2
from tests.conftest import free_port
from tests.integration.security_server.bed import BENEFITS, POP, REGISTRY_SUBSYSTEM, SOC

__all__ = ["DEFAULT_CALLS", "run_gateway_bench"]

REST_SERVICE: Final = REGISTRY_SUBSYSTEM.service("echo-rest")
PAYLOAD: Final = 512
#: Calls (and warm-up calls) per concurrency.
DEFAULT_CALLS: Final = {1: 300, 16: 1500, 64: 3000}
DEFAULT_WARMUP: Final = {1: 30, 16: 160, 64: 320}
QUICK_CALLS: Final = {1: 20, 16: 64, 64: 128}
QUICK_WARMUP: Final = {1: 5, 16: 16, 64: 64}


class GatewayBenchBed(BenchBed):
    """The exchange benchmark's bed plus the REST echo service, its contract, and POP routing it
    to its gateway's back end."""

    back_end_port = 0

    def configuration(self) -> globalconf_pb2.GlobalConfiguration:
        conf = super().configuration()
        conf.services.add(
            id=REST_SERVICE.to_proto(),
            methods=["Call"],
            openapi=json.dumps(OPENAPI).encode(),
            description="Benchmark REST echo",
        )
        contract = conf.contracts.add(
            contract_id="C-BENCH-REST",
            consumer=BENEFITS.to_proto(),
            service=REST_SERVICE.to_proto(),
            methods=["Call"],
            purpose=PURPOSE,
            legal_basis="Benchmark",
        )
        contract.valid_from.FromDatetime(
            datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=1)
        )
        return conf

    def settings_dict(self, server: ServerId, **limits: Any) -> dict[str, Any]:
        data = super().settings_dict(server, **limits)
        if server == POP:
            data["backends"] = [
                *data.get("backends", []),
                {"service": str(REST_SERVICE), "address": f"127.0.0.1:{self.back_end_port}"},
            ]
        return data

    def gateway_config(self, server: ServerId, rest_url: str) -> Path:
        agency = self.agencies[server]
        folder = agency.directory / "gateway"
        folder.mkdir(parents=True, exist_ok=True)
        data: dict[str, Any] = {
            "member": str(server.member),
            "data_dir": str(folder / "data"),
            "http": {"listen": "127.0.0.1:0", "plain_loopback_subsystems": [str(BENEFITS)]}
            if server == SOC
            else {"listen": "127.0.0.1:0"},
            "globalconf": {"anchor": str(self.anchor_path), "fetch_interval_seconds": 60.0},
        }
        if server == SOC:
            data["consumer"] = {"address": agency.addresses["consumer"], "plaintext": True}
        else:
            cred = self._issue(self.pki.gateway(server.member))
            data["consumer"] = {
                "address": agency.addresses["consumer"],
                "ca": str(self.pki.trust_path),
                "cert": str(cred.cert_path),
                "key": str(cred.key_path),
            }
            data["backend"] = {
                "listen": f"127.0.0.1:{self.back_end_port}",
                "rest": [{"service": str(REST_SERVICE), "base_url": rest_url}],
            }
        path = folder / "gateway.toml"
        path.write_text(tomli_w.dumps(data))
        return path


async def _spawn_gateway(config: Path, stack: contextlib.ExitStack) -> dict[str, Any]:
    folder = config.parent
    ready = folder / "data" / "ready.json"
    ready.unlink(missing_ok=True)
    process = stack.enter_context(
        _process_group(
            [
                sys.executable,
                "-m",
                "ruta",
                "--log-level",
                "warning",
                "gateway",
                "serve",
                "--config",
                str(config),
            ],
            stderr=folder / "stderr.log",
        )
    )
    await _wait_ready(ready, process, folder / "stderr.log")
    return {**json.loads(ready.read_text()), "pid": process.pid}


async def _measure(
    argv: Sequence[str], *, watched: Mapping[str, int], stderr: Path
) -> dict[str, Any]:
    """One load-generator process (``bench.loadgen`` or ``bench.httpload``); CPU seconds per
    call of ``watched`` read around the measured calls."""
    with open(stderr, "ab") as err:  # noqa: ASYNC230 - opening a log file for a child
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=err,
            cwd=REPO_ROOT,
            start_new_session=True,
        )
    try:
        assert process.stdin is not None
        assert process.stdout is not None
        async with asyncio.timeout(RUN_TIMEOUT_SECONDS):
            warm = json.loads(await _line(process.stdout))
            if warm.get("event") != "warm":
                raise RuntimeError(f"load generator said {warm!r}")
            before = {name: sum(cpu_times(pid)) for name, pid in watched.items()}
            process.stdin.write(b"go\n")
            await process.stdin.drain()
            done: dict[str, Any] = json.loads(await _line(process.stdout))
            after = {name: sum(cpu_times(pid)) for name, pid in watched.items()}
            await process.wait()
    finally:
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
    ok = max(1, int(done["ok"]))
    done["cpu_ms_per_call"] = {n: round((after[n] - before[n]) / ok * 1e3, 4) for n in watched}
    done["warmup_errors"] = warm["errors"]
    return done


@contextlib.asynccontextmanager
async def _instance(directory: Path) -> AsyncIterator[tuple[GatewayBenchBed, dict[str, Any]]]:
    instance = GatewayBenchBed(directory)
    instance.back_end_port = free_port()
    try:
        with contextlib.ExitStack() as stack:
            await instance.build()
            echo_ready = directory / "echo.ready.json"
            echo = stack.enter_context(
                _process_group(
                    [sys.executable, "-m", "bench.echo", "--ready-file", str(echo_ready)],
                    stderr=directory / "echo.log",
                )
            )
            await _wait_ready(echo_ready, echo, directory / "echo.log")
            instance.echo_address = json.loads(echo_ready.read_text())["address"]
            rest_ready = directory / "rest.ready.json"
            rest = stack.enter_context(
                _process_group(
                    [sys.executable, "-m", "bench.rest_echo", "--ready-file", str(rest_ready)],
                    stderr=directory / "rest.log",
                )
            )
            await _wait_ready(rest_ready, rest, directory / "rest.log")
            rest_url = json.loads(rest_ready.read_text())["url"]
            instance.publish()
            for server in (POP, SOC):
                await instance.spawn(server)
            gateways = {
                str(server): await _spawn_gateway(instance.gateway_config(server, rest_url), stack)
                for server in (POP, SOC)
            }
            yield (
                instance,
                {
                    "echo_pid": echo.pid,
                    "rest_pid": rest.pid,
                    "rest_url": rest_url,
                    "gateways": gateways,
                },
            )
    finally:
        await instance.close()


def _row(concurrency: int, runs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    grpc_rps = runs["grpc_bus"]["rps"]
    row: dict[str, Any] = {"payload": PAYLOAD, "concurrency": concurrency}
    for name, run in runs.items():
        row[f"{name}_rps"] = round(run["rps"], 1)
        row[f"{name}_p50_ms"] = round(run["p50_ms"], 3)
        row[f"{name}_p99_ms"] = round(run["p99_ms"], 3)
        row[f"{name}_errors"] = run["errors"] + run["warmup_errors"]
        row[f"{name}_cpu_ms"] = run["cpu_ms_per_call"]
    row["rest_bus_vs_direct"] = (
        round(runs["rest_bus"]["rps"] / runs["rest_direct"]["rps"], 3)
        if runs["rest_direct"]["rps"]
        else 0.0
    )
    row["rest_bus_vs_grpc_bus"] = round(runs["rest_bus"]["rps"] / grpc_rps, 3) if grpc_rps else 0.0
    row["json_bus_vs_grpc_bus"] = round(runs["json_bus"]["rps"] / grpc_rps, 3) if grpc_rps else 0.0
    return row


async def run_gateway_bench(
    *,
    quick: bool = False,
    concurrency: Sequence[int] = (1, 16, 64),
    workdir: Path | None = None,
    progress: Any = print,
) -> dict[str, Any]:
    """Run every case; return ``{"machine", "cases"}``."""
    calls_of = QUICK_CALLS if quick else DEFAULT_CALLS
    warmup_of = QUICK_WARMUP if quick else DEFAULT_WARMUP
    with contextlib.ExitStack() as stack:
        directory = workdir or Path(
            stack.enter_context(tempfile.TemporaryDirectory(prefix="ruta-bench-gw-"))
        )
        directory.mkdir(parents=True, exist_ok=True)
        machine = machine_info(directory)
        payload = os.urandom(PAYLOAD)
        rest_body = directory / "rest.body"
        rest_body.write_bytes(payload)
        json_body = directory / "json.body"
        json_body.write_text(json.dumps({"data": base64.b64encode(payload).decode()}))
        cases = []
        started = time.monotonic()
        async with _instance(directory) as (instance, parts):
            soc_gw = parts["gateways"][str(SOC)]
            pop_gw = parts["gateways"][str(POP)]
            consumer = instance.agencies[SOC].addresses
            provider = instance.agencies[POP].addresses
            servers = {
                "consumer_ss": int(consumer["pid"]),
                "provider_ss": int(provider["pid"]),
            }
            headers = [f"X-Road-Client: {BENEFITS}", f"Ruta-Purpose: {PURPOSE}"]
            log = directory / "loadgen.log"
            for c in concurrency:
                calls = max(1, calls_of.get(c, calls_of[64]))
                warmup = max(1, warmup_of.get(c, warmup_of[64]))
                counts = ["--concurrency", str(c), "--calls", str(calls), "--warmup", str(warmup)]
                http = [sys.executable, "-m", "bench.httpload", *counts]
                runs = {
                    "rest_direct": await _measure(
                        [
                            *http,
                            "--url",
                            f"{parts['rest_url']}/echo",
                            "--body-file",
                            str(rest_body),
                        ],
                        watched={"backend": parts["rest_pid"]},
                        stderr=log,
                    ),
                    "rest_bus": await _measure(
                        [
                            *http,
                            "--url",
                            f"{soc_gw['http']}/r1/{REST_SERVICE}/echo",
                            "--body-file",
                            str(rest_body),
                            *(a for h in headers for a in ("--header", h)),
                        ],
                        watched={
                            "backend": parts["rest_pid"],
                            "consumer_gw": soc_gw["pid"],
                            "provider_gw": pop_gw["pid"],
                            **servers,
                        },
                        stderr=log,
                    ),
                    "grpc_bus": await _measure(
                        [
                            sys.executable,
                            "-m",
                            "bench.loadgen",
                            "--target",
                            consumer["consumer"],
                            "--path",
                            ECHO_PATH,
                            "--payload",
                            str(PAYLOAD),
                            *counts,
                            "--metadata",
                            f"ruta-client={BENEFITS}",
                            "--metadata",
                            f"ruta-service={REGISTRY_SUBSYSTEM}",
                            "--metadata",
                            f"ruta-purpose={PURPOSE}",
                        ],
                        watched={"backend": parts["echo_pid"], **servers},
                        stderr=log,
                    ),
                    "json_bus": await _measure(
                        [
                            *http,
                            "--url",
                            f"{soc_gw['http']}/r1/{ECHO_SERVICE}/Echo",
                            "--body-file",
                            str(json_body),
                            *(a for h in headers for a in ("--header", h)),
                        ],
                        watched={
                            "backend": parts["echo_pid"],
                            "consumer_gw": soc_gw["pid"],
                            **servers,
                        },
                        stderr=log,
                    ),
                }
                row = _row(c, runs)
                cases.append(row)
                progress(
                    f"gateway c={c}: REST direct {row['rest_direct_rps']:.0f} rps, REST bus "
                    f"{row['rest_bus_rps']:.0f}, gRPC bus {row['grpc_bus_rps']:.0f}, JSON bus "
                    f"{row['json_bus_rps']:.0f} (REST/gRPC {row['rest_bus_vs_grpc_bus']:.2f}, "
                    f"JSON/gRPC {row['json_bus_vs_grpc_bus']:.2f})"
                )
        return {
            "machine": machine,
            "cases": cases,
            "seconds": round(time.monotonic() - started, 1),
        }


def gateway_markdown(result: Mapping[str, Any]) -> str:
    """The gateway table (the same shape as the exchange table: one row per case)."""
    lines = [
        "## REST and JSON through the bus (gateway) vs gRPC through the bus",
        "",
        "| payload | conc. | REST direct rps | REST bus rps | gRPC bus rps | JSON bus rps "
        "| REST bus / direct | REST bus / gRPC bus | JSON bus / gRPC bus | REST bus p50 ms "
        "| gRPC bus p50 ms | JSON bus p50 ms | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in result["cases"]:
        errors = sum(
            row[f"{n}_errors"] for n in ("rest_direct", "rest_bus", "grpc_bus", "json_bus")
        )
        lines.append(
            f"| {row['payload']} B | {row['concurrency']} | {row['rest_direct_rps']:.0f} "
            f"| {row['rest_bus_rps']:.0f} | {row['grpc_bus_rps']:.0f} | {row['json_bus_rps']:.0f} "
            f"| {row['rest_bus_vs_direct']:.2f} | {row['rest_bus_vs_grpc_bus']:.2f} "
            f"| {row['json_bus_vs_grpc_bus']:.2f} | {row['rest_bus_p50_ms']:.2f} "
            f"| {row['grpc_bus_p50_ms']:.2f} | {row['json_bus_p50_ms']:.2f} | {errors} |"
        )
    lines.append("")
    lines.append(
        "Targets: JSON bus / gRPC bus >= 0.8 at c=64; REST bus / gRPC bus >= 0.8 (reported, "
        "never asserted)."
    )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(prog="python -m bench.gateway", description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = parser.parse_args()
    outcome = asyncio.run(run_gateway_bench(quick=args.quick))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gateway.json").write_text(json.dumps(outcome, indent=2) + "\n")
    table = gateway_markdown(outcome)
    (args.out / "gateway.md").write_text(table)
    print(table)
