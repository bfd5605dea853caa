"""``make demo`` (``python -m sandbox.demo``): the once-only principle on a whole Ruta instance.

Starts a sandbox (``ruta sandbox up``) in a temporary directory, then plays the social-benefits
agency deciding housing-benefit applications: instead of asking each applicant for four
certificates, its backend asks the population register, the tax agency, the business register
and the land registry, each call going through its own security server and the provider's. It
prints the facts, where each came from and the decision; shows a call without a contract being
refused with its fault code; reads what both sides logged through the audit API; exports the
evidence from both sides, verifies it offline and reconciles it (``ruta audit``); stops the
sandbox. Exits 0 when every step did what it should, 1 otherwise.
"""

from __future__ import annotations

import asyncio
import math
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import aiohttp
import grpc
import grpc.aio

from ruta.ids import ServiceId, SubsystemId
from ruta.pki.tls import channel_credentials
from ruta.v1 import audit_pb2, audit_pb2_grpc
from sandbox.citizen_demo import citizen_record
from sandbox.client import BusClient, CallResult
from sandbox.layout import (
    PURPOSE,
    REST_SERVICES,
    SERVICES,
    SOC,
    TAX,
    ServiceSpec,
    examples_dir,
)
from sandbox.processes import ManagedProcess, SandboxError, ruta_command
from sandbox.protos import MethodCodec, compile_descriptor_set, method_codec

__all__ = ["main"]

#: How long the sandbox may take to come up (a cold start on a busy machine).
SANDBOX_TIMEOUT_S: Final = 240.0
#: How long to wait for the witness to cosign the demo's records.
COSIGN_TIMEOUT_S: Final = 30.0
#: Longest a ``ruta audit`` command may run.
AUDIT_TIMEOUT_S: Final = 120.0
#: The fiscal year whose income is checked.
FISCAL_YEAR: Final = 2025
#: Housing benefit (an invented rule set): yearly income below this, in cents.
INCOME_LIMIT_CENTS: Final = 20_000_00
TOTAL_STEPS: Final = 9
#: Residents the case system confirms later in the morning (step 8), besides the applicants.
MORE_RESIDENTS: Final = ("4410000025", "4410000041", "4410000058")
#: Deadline of one HTTP call through a gateway.
GATEWAY_TIMEOUT_S: Final = 30.0
CLIENT: Final = SOC.subsystem("benefits")
CASEWORKER: Final = "caseworker-17"


@dataclass(frozen=True, slots=True)
class Applicant:
    national_id: str
    story: str


APPLICANTS: Final = (
    Applicant("4410000017", "a schoolteacher who rents out a room"),
    Applicant("4410000033", "a pensioner"),
)


class DemoError(Exception):
    """A step of the demo did not do what it should."""


def _say(text: str = "", indent: int = 0) -> None:
    print(textwrap.indent(text, " " * indent) if text else "", flush=True)  # noqa: T201


def _heading(step: int, total: int, text: str) -> None:
    _say()
    _say(f"[{step}/{total}] {text}")


def _money(cents: int | str) -> str:
    value = int(cents)
    return f"PEN {value // 100:,}.{value % 100:02d}"


# --- the sandbox ---------------------------------------------------------------------------------


def _sandbox_process(directory: Path) -> ManagedProcess:
    return ManagedProcess(
        name="sandbox",
        argv=ruta_command("sandbox", "up", "--dir", str(directory), "--quiet"),
        log_path=directory.parent / "sandbox.log",
        ready_path=directory / "sandbox.json",
        env={"PYTHONSAFEPATH": "1"},
    )


def _stop_sandbox(directory: Path, process: ManagedProcess) -> None:
    subprocess.run(  # noqa: S603 - fixed argv
        ruta_command("sandbox", "down", "--dir", str(directory)),
        capture_output=True,
        timeout=120,
        check=False,
    )
    process.stop()


# --- the exchange --------------------------------------------------------------------------------


def _codecs() -> dict[str, MethodCodec]:
    examples = examples_dir()
    return {
        spec.key: method_codec(
            compile_descriptor_set(examples / spec.example / spec.proto),
            spec.service.service_name,
            spec.method,
        )
        for spec in SERVICES
    }


def _request(spec: ServiceSpec, national_id: str) -> dict[str, Any]:
    if spec.key == "tax":
        return {"national_id": national_id, "year": FISCAL_YEAR}
    return {"national_id": national_id}


async def _ask_everyone(
    sandbox: dict[str, Any], codecs: dict[str, MethodCodec]
) -> dict[str, dict[str, CallResult]]:
    answers: dict[str, dict[str, CallResult]] = {}
    async with BusClient.for_sandbox(sandbox, CLIENT) as client:
        for applicant in APPLICANTS:
            calls = [
                client.call(
                    spec.service,
                    codecs[spec.key],
                    _request(spec, applicant.national_id),
                    purpose=PURPOSE,
                    subject=applicant.national_id,
                    user=CASEWORKER,
                )
                for spec in SERVICES
            ]
            results = await asyncio.gather(*calls)
            answers[applicant.national_id] = {
                spec.key: result for spec, result in zip(SERVICES, results, strict=True)
            }
    return answers


def _source(spec: ServiceSpec, result: CallResult) -> str:
    kind = {"population": "sql", "tax": "rest", "business": "soap", "land": "csv"}[spec.key]
    return f"{spec.service.subsystem} ({kind} adapter), message {result.message_id[:8]}"


def _decide(applicant: Applicant, results: dict[str, CallResult]) -> bool:
    """Print the facts and their sources, then the decision; return whether eligible."""
    specs = {spec.key: spec for spec in SERVICES}
    person = results["population"].response or {}
    income = results["tax"].response or {}
    companies = (results["business"].response or {}).get("companies", [])
    parcels = (results["land"].response or {}).get("parcels", [])
    name = f"{person.get('given_name', '?')} {person.get('family_name', '?')}"
    _say(f"{name}, national id {applicant.national_id}, {applicant.story}", 6)
    rows = [
        ("born", person.get("birth_date", "?"), "population"),
        ("address", person.get("address", "?"), "population"),
        (
            f"income {FISCAL_YEAR}",
            f"{_money(income.get('total_cents', 0))}"
            f" ({'assessed' if income.get('assessed') else 'not assessed'}; "
            + ", ".join(
                f"{item.get('source', '?')} {_money(item.get('amount_cents', 0))}"
                for item in income.get("items", [])
            )
            + ")",
            "tax",
        ),
        (
            "companies",
            "; ".join(
                f"{c.get('name') or c.get('registry_code')} {c.get('status', '').lower()}"
                + (f" ({c['role'].lower()})" if c.get("role") else "")
                for c in companies
            )
            or "none",
            "business",
        ),
        (
            "land",
            "; ".join(
                f"{p.get('parcel_id')} {p.get('land_use')} {p.get('area_m2')} m2"
                f" ({p.get('share_percent', 100)} %)"
                for p in parcels
            )
            or "none",
            "land",
        ),
    ]
    for label, value, key in rows:
        _say(f"{label:<12} {value}", 8)
        _say(f"{'':<12}   from {_source(specs[key], results[key])}", 8)
    reasons = []
    if int(income.get("total_cents", 0)) >= INCOME_LIMIT_CENTS:
        reasons.append(f"income is not below {_money(INCOME_LIMIT_CENTS)}")
    active = [c for c in companies if c.get("status") == "ACTIVE"]
    if active:
        reasons.append(f"holds a role in {len(active)} active company")
    other_land = [p for p in parcels if p.get("land_use") != "residential"]
    if other_land or len(parcels) > 1:
        reasons.append("owns land beyond a home")
    if reasons:
        _say(f"=> NOT ELIGIBLE: {'; '.join(reasons)}", 8)
        return False
    _say(
        f"=> ELIGIBLE: income below {_money(INCOME_LIMIT_CENTS)}, no active company, "
        "owns at most her home",
        8,
    )
    return True


# --- what the logs hold --------------------------------------------------------------------------


async def _audit_records(
    address: str, auditor: dict[str, str], client: SubsystemId
) -> list[audit_pb2.AuditLogRecord]:
    """The records ``client``'s exchanges left in one server's log (audit API, auditor role),
    once the witness has cosigned a checkpoint that holds them all."""
    credentials = channel_credentials(auditor["key"], auditor["cert"], auditor["ca"])
    async with grpc.aio.secure_channel(address, credentials) as channel:
        stub = audit_pb2_grpc.AuditStub(channel)
        records: list[audit_pb2.AuditLogRecord] = []
        token = ""
        while True:
            page = await stub.Query(
                audit_pb2.QueryRequest(
                    filter=audit_pb2.AuditFilter(client=str(client)),
                    page_size=100,
                    page_token=token,
                ),
                timeout=20,
            )
            records.extend(page.records)
            token = page.next_page_token
            if not token:
                break
        needed = 1 + max((r.sequence for r in records), default=-1)
        deadline = time.monotonic() + COSIGN_TIMEOUT_S
        while True:
            try:
                latest = await stub.GetLatestCheckpoint(
                    audit_pb2.LatestCheckpointRequest(), timeout=20
                )
            except grpc.aio.AioRpcError as error:
                if error.code() is not grpc.StatusCode.NOT_FOUND:  # NOT_FOUND: none cosigned yet
                    raise
            else:
                if latest.size >= needed:
                    return records
            if time.monotonic() > deadline:
                raise DemoError(f"the witness did not cosign {needed} records of {address} in time")
            await asyncio.sleep(0.2)


async def _read_logs(
    sandbox: dict[str, Any], servers: Sequence[str]
) -> dict[str, list[audit_pb2.AuditLogRecord]]:
    by_id = {s["id"]: s for s in sandbox["servers"]}
    found = await asyncio.gather(
        *(_audit_records(by_id[s]["audit"], sandbox["auditor"], CLIENT) for s in servers)
    )
    return dict(zip(servers, found, strict=True))


def _show_log(server: str, records: Sequence[audit_pb2.AuditLogRecord]) -> None:
    _say(f"{server}: {len(records)} records", 6)
    for record in records:
        service = ServiceId.parse(record.service).service_name if record.service else "?"
        _say(
            f"#{record.sequence:<3} {record.kind:<8} {record.message_id[:8]}  "
            f"{record.client} -> {service}/{record.method}  subject {record.subject}  "
            f"body {record.body_state}",
            8,
        )


# --- evidence ------------------------------------------------------------------------------------


def _ruta(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - fixed argv
        ruta_command(*args), capture_output=True, text=True, timeout=AUDIT_TIMEOUT_S, check=False
    )


def _parallel(commands: Sequence[Sequence[str]]) -> list[subprocess.CompletedProcess[str]]:
    running = [
        subprocess.Popen(  # noqa: S603 - fixed argv
            ruta_command(*argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for argv in commands
    ]
    done = []
    for argv, popen in zip(commands, running, strict=True):
        out, err = popen.communicate(timeout=AUDIT_TIMEOUT_S)
        done.append(subprocess.CompletedProcess(list(argv), popen.returncode, out, err))
    return done


def _evidence(directory: Path, out: Path) -> bool:
    """Export both sides' bundles per service, verify them offline, reconcile each pair."""
    anchor = str(directory / "registry" / "globalconf" / "anchor.toml")
    exports: list[list[str]] = []
    pairs = []
    for spec in SERVICES:
        consumer = out / f"soc-{spec.key}.zip"
        provider = out / f"{spec.key}.zip"
        for server, bundle in ((str(SOC.server), consumer), (_provider(spec), provider)):
            exports.append(
                [
                    "audit",
                    "export",
                    "--sandbox",
                    str(directory),
                    "--server",
                    server,
                    "--service",
                    str(spec.service),
                    "--out",
                    str(bundle),
                ]
            )
        pairs.append((spec, consumer, provider))
    _say("ruta audit export --sandbox DIR --server SERVER --service SERVICE --out FILE", 6)
    for result in _parallel(exports):
        if result.returncode != 0:
            _say(f"export failed: {result.stderr.strip()[-500:]}", 8)
            return False
    _say(f"{len(exports)} bundles written (each side, each service)", 8)

    ok = True
    first = pairs[0]
    for label, bundle in (("consumer side", first[1]), ("provider side", first[2])):
        _say(f"ruta audit verify --anchor ANCHOR {bundle.name}   ({label})", 6)
        result = _ruta("audit", "verify", "--anchor", anchor, str(bundle))
        _show_report(result.stdout)
        ok = ok and result.returncode == 0
    _say("ruta audit reconcile --anchor ANCHOR CONSUMER.zip PROVIDER.zip", 6)
    results = _parallel(
        [["audit", "reconcile", "--anchor", anchor, str(c), str(p)] for _, c, p in pairs]
    )
    for (spec, _consumer, _provider_bundle), result in zip(pairs, results, strict=True):
        last = (result.stdout.strip().splitlines() or ["(no output)"])[-1]
        matched = next(
            (line for line in result.stdout.splitlines() if line.startswith("exchanges on both")),
            "",
        )
        _say(f"{spec.service.service_name:<32} {matched}  {last}", 8)
        if result.returncode != 0:
            _say(result.stdout + result.stderr, 10)
            ok = False
    return ok


def _show_report(text: str) -> None:
    """A verify report, its per-record lines shortened, its warnings counted."""
    warnings = 0
    for raw in text.splitlines():
        line = raw
        stripped = raw.strip()
        if stripped.startswith("warning:"):
            warnings += 1
            continue
        if stripped.startswith(("ok ", "FAIL")):
            parts = stripped.split()
            # ok #N kind direction message-id client -> service/method logged ... body ...
            mark, seq, kind, direction, message_id = parts[:5]
            body = stripped.split(" body ", 1)[-1]
            line = f"  {mark:<4} {seq} {kind} {direction} message {message_id[:8]}, body {body}"
        _say(line, 8)
    if warnings:
        _say(f"({warnings} warnings; run ruta audit verify on the bundle to read them)", 8)


def _provider(spec: ServiceSpec) -> str:
    return str(spec.service.member.server("ss1"))


async def _citizen(sandbox: dict[str, Any]) -> bool:
    """Step 9: the first applicant signs in at the citizen's page and sees who read her data."""
    applicant = APPLICANTS[0].national_id
    _heading(9, TOTAL_STEPS, f"What citizen {applicant} sees: who read my data")
    _say(f"{sandbox['citizen']['url']}, signed in through the development issuer", 6)
    rows = await citizen_record(sandbox, applicant, _say)
    if rows is None:
        return False
    for when, agency, what, why, result in (row[:5] for row in rows):
        _say(f"{when}  {agency}: {what}", 6)
        _say(f"for {why}: {result}", 8)
    if len(rows) != len(SERVICES):  # the four facts asked about her in step 2, nothing else
        _say(f"expected {len(SERVICES)} accesses, the page shows {len(rows)}", 6)
        return False
    return True


# --- main ----------------------------------------------------------------------------------------


def _banner() -> None:
    _say("Ruta demo: the once-only principle")
    _say("==================================")
    _say(
        "Two people apply for a housing benefit. Instead of asking each of them for four\n"
        "certificates, the Social Benefits Agency's case system asks the agencies that already\n"
        "hold the facts, over Ruta: every call goes through its own security server and the\n"
        "provider's, is signed by both, checked against a contract and logged on both sides."
    )


async def _exchange(sandbox: dict[str, Any]) -> bool:
    total = TOTAL_STEPS
    codecs = _codecs()
    _heading(2, total, f"{CLIENT} asks, through its security server {SOC.server}:")
    started = time.monotonic()
    answers = await _ask_everyone(sandbox, codecs)
    ok = True
    for national_id, results in answers.items():
        for spec in SERVICES:
            result = results[spec.key]
            state = "OK" if result.ok else f"REFUSED {result.fault} {result.details}"
            path = f"{spec.service.service_name}/{spec.method}"
            _say(f"{national_id}  {path:<52} -> {spec.service.subsystem!s:<22} {state}", 6)
            ok = ok and result.ok
    _say(
        f"({2 * len(answers) * len(SERVICES)} signed messages, {time.monotonic() - started:.2f} s)",
        6,
    )
    if not ok:
        return False

    _heading(3, total, "The facts, where each came from, and the decisions")
    for applicant in APPLICANTS:
        _decide(applicant, answers[applicant.national_id])
        _say()

    _heading(4, total, "A call without a contract is refused")
    population = SERVICES[0]
    _say(
        f"{TAX.subsystem('income')} asks {population.service.subsystem} for a person "
        f"(it has no contract for {PURPOSE}):",
        6,
    )
    async with BusClient.for_sandbox(sandbox, TAX.subsystem("income")) as tax:
        refused = await tax.call(
            population.service,
            codecs[population.key],
            {"national_id": APPLICANTS[0].national_id},
            purpose=PURPOSE,
        )
    if refused.ok or refused.fault is None or "access_denied" not in refused.fault:
        _say(f"expected a refusal with access_denied, got {refused}", 8)
        return False
    _say(f"refused: gRPC {refused.status}, fault {refused.fault}, fault id {refused.fault_id}", 8)
    _say(f'"{refused.details}"', 8)

    _heading(5, total, f"The same bus over HTTP: {CLIENT} calls through its agency's gateway")
    over_http = await _through_gateway(sandbox)
    if over_http is None:
        return False

    _heading(6, total, "What both sides logged (read through the audit API, auditor role)")
    logs = await _read_logs(sandbox, [str(SOC.server), _provider(population), str(TAX.server)])
    for server, records in logs.items():
        _show_log(server, records)
    seen = {r.message_id for records in logs.values() for r in records}
    missing = [m for m in over_http if m not in seen]
    if missing:
        _say(f"the gateway's exchanges {missing} are not in the logs", 6)
        return False
    _say(f"the two calls over HTTP are the records with message ids {', '.join(over_http)}", 6)
    return True


async def _through_gateway(sandbox: dict[str, Any]) -> list[str] | None:
    """One REST call (the tax agency's legacy API, offered as a REST service) and one JSON call
    of a gRPC method (the population register) through SOC's gateway; their message ids, or
    ``None`` when either failed."""
    gateway = next(g for g in sandbox["gateways"] if g["member"] == str(SOC.member))
    headers = {"X-Road-Client": str(CLIENT), "Ruta-Purpose": PURPOSE}
    rest = REST_SERVICES[0]
    population = SERVICES[0]
    applicant = APPLICANTS[0].national_id
    calls = [
        (
            "GET",
            f"/r1/{rest.service}/api/v2/taxpayers/{applicant}/income?year={FISCAL_YEAR}",
            None,
        ),
        (
            "POST",
            f"/r1/{population.service}/{population.method}",
            {"nationalId": applicant},
        ),
    ]
    message_ids = []
    timeout = aiohttp.ClientTimeout(total=GATEWAY_TIMEOUT_S)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        for method, path, body in calls:
            _say(f"curl -X {method} {gateway['url']}{path}", 6)
            async with session.request(
                method, gateway["url"] + path, json=body, headers=headers
            ) as response:
                answer = await response.text()
                message_id = response.headers.get("X-Road-Id", "")
            _say(f"HTTP {response.status}, X-Road-Id {message_id}", 8)
            _say(textwrap.shorten(answer, 160), 8)
            if response.status != 200 or not message_id:
                return None
            message_ids.append(message_id)
    return message_ids


async def _more_residents(sandbox: dict[str, Any]) -> bool:
    """The rest of the morning's caseload: the case system confirms more residents with the
    population register, so its month's count passes the threshold below which open data
    publishes only "<5"."""
    population = SERVICES[0]
    _say(
        f"Later that morning {CLIENT} confirms {len(MORE_RESIDENTS)} more residents with "
        f"{population.service.service_name}:",
        6,
    )
    codec = _codecs()[population.key]
    async with BusClient.for_sandbox(sandbox, CLIENT) as client:
        results = await asyncio.gather(
            *(
                client.call(
                    population.service,
                    codec,
                    _request(population, national_id),
                    purpose=PURPOSE,
                    subject=national_id,
                )
                for national_id in MORE_RESIDENTS
            )
        )
    for national_id, result in zip(MORE_RESIDENTS, results, strict=True):
        state = "OK" if result.ok else f"REFUSED {result.fault} {result.details}"
        _say(f"{national_id}  {state}", 8)
    return all(result.ok for result in results)


async def _open_data(sandbox: dict[str, Any]) -> bool:
    """This month's open-data figures as the publishing gateway serves them (counted by each
    provider's server, small counts withheld); whether they could be read."""
    gateway = next((g for g in sandbox["gateways"] if g.get("open_data")), None)
    if gateway is None:
        _say("no gateway publishes open data", 6)
        return False
    if not await _more_residents(sandbox):
        return False
    page = gateway["open_data"]
    timeout = aiohttp.ClientTimeout(total=GATEWAY_TIMEOUT_S)
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.get(page + "/exchanges.json") as response,
    ):
        if response.status != 200:
            _say(f"HTTP {response.status} from {page}/exchanges.json", 6)
            return False
        document = await response.json()
    month = document["months"][-1]
    _say(f"{page}  (and exchanges.csv, exchanges.json, catalog.jsonld)", 6)
    _say(f"{month}: exchanges answered, citizen hours saved, paper forms avoided, agency cost", 6)
    for row in document["rows"]:
        if row["month"] != month:
            continue
        if row["suppressed"]:
            figures = "<5"
        else:
            figures = (
                f"{row['answered']}, {row['citizen_hours_saved']} h, "
                f"{row['paper_forms_avoided']} forms, "
                f"{row['agency_cost_saved']} {document['currency']}"
            )
        _say(f"{ServiceId.parse(row['service']).service_name:<36} {figures}", 8)
    _say("(a count below 5 is published as <5, and nothing derived from it)", 6)
    for server in document["servers_not_reached"]:
        _say(f"not reached: {server}", 8)
    return not document["servers_not_reached"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo; return the exit status (0: every step did what it should)."""
    del argv
    _banner()
    with tempfile.TemporaryDirectory(prefix="ruta-demo-") as tmp:
        directory = Path(tmp) / "sandbox"
        evidence = Path(tmp) / "evidence"
        evidence.mkdir()
        _heading(1, TOTAL_STEPS, f"Starting a sandbox in {directory}")
        started = time.monotonic()
        process = _sandbox_process(directory)
        ok = False
        try:
            process.start()
            sandbox = process.wait_ready(timeout=SANDBOX_TIMEOUT_S)
            _say(f"up in {math.ceil(time.monotonic() - started)} s:", 6)
            _say(
                f"registry          admin API {sandbox['registry']['address']}, "
                f"global configuration {sandbox['registry']['globalconf_url']}",
                8,
            )
            for server in sandbox["servers"]:
                _say(
                    f"{server['id']:<17} consumer {server['consumer']}, "
                    f"transport {server['transport']}, audit {server['audit']}",
                    8,
                )
            ok = asyncio.run(_exchange(sandbox))
            if ok:
                _heading(7, TOTAL_STEPS, "The evidence, exported from both sides, checked offline")
                ok = _evidence(directory, evidence)
            if ok:
                _heading(8, TOTAL_STEPS, "This month's open data, published by a gateway")
                ok = asyncio.run(_open_data(sandbox))
            if ok:
                ok = asyncio.run(_citizen(sandbox))
        except (SandboxError, DemoError, grpc.aio.AioRpcError) as error:
            _say(f"error: {error}")
            ok = False
        except KeyboardInterrupt:
            _say("interrupted")
            ok = False
        finally:
            _say()
            _say("Stopping the sandbox.")
            _stop_sandbox(directory, process)
    _say("Demo finished: every step did what it should." if ok else "Demo FAILED.")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
