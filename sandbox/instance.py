"""Build and run a whole Ruta instance on loopback: ``ruta sandbox up --dir DIR``.

Every part runs as its own process, started through the ``ruta`` command line exactly as an
operator would (``ruta registry init|serve``, ``ruta ss init|serve``, ``ruta adapter serve``),
plus the example legacy systems the adapters front. The registry is administered over its admin
API (mutual TLS, the ``RegistryAdmin`` wire contract) with the credential ``registry init``
made. Nothing of a part is imported.

Ports: the registry's HTTP port (named in every certificate's OCSP URL), the legacy services'
and each server's listeners are claimed up front (:mod:`sandbox.ports`: below the ephemeral
range, one claim file per port, so concurrent sandboxes never pick the same one) and written into
the self-contained settings files, so ``ruta ss serve --config FILE`` restarts a server on the
same addresses; everything else binds port 0 and reports its address.

Layout of DIR::

    sandbox.json          what the sandbox runs (the schema in docs/sandbox.md)
    sandbox.pid           the supervising process (``ruta sandbox down`` signals it)
    processes.json        every child's pid (for ``down`` if the supervisor is gone)
    registry/             ``ruta registry init`` directory
    servers/<agency>/     ``ruta ss init`` directory: ss.toml, keys/, data/ (message log ...),
                          gateway/ (``ruta gateway serve``: gateway.toml, its certificate, data/)
    clients/<subsystem>/  each backend's client certificate and key; auditor/ and
                          citizen-service/ likewise; administrator/admin.p12 the registry
                          console's browser certificate
    legacy/               the population database and the land registry's CSV export
    logs/<process>.log    every child's output
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, Final

import grpc
import grpc.aio
import tomli_w
from cryptography.hazmat.primitives import serialization

from ruta.admin_rpc import admin_call
from ruta.faults import RutaError
from ruta.files import FileReadError, read_bounded, write_atomically
from ruta.ids import SubsystemId
from ruta.pki.certs import certificate_pem, load_certificate, make_csr
from ruta.pki.keys import generate_ec_key, save_private_key
from ruta.pki.tls import channel_credentials
from ruta.readiness import read_ready_file
from ruta.v1 import globalconf_pb2, registry_pb2, registry_pb2_grpc
from sandbox.control import CONTROL_DIR, answer_restart, take_restart_requests
from sandbox.layout import (
    AGENCIES,
    CONTRACTS,
    INSTANCE,
    LEGAL_BASIS,
    MAX_SANDBOX_FILE_BYTES,
    OPEN_DATA_AGENCY,
    PURPOSE,
    REST_SERVICES,
    SANDBOX_FILE,
    SERVICES,
    Agency,
    ServiceSpec,
    examples_dir,
)
from sandbox.ports import PortClaims
from sandbox.processes import (
    READY_TIMEOUT_S,
    STOP_TIMEOUT_S,
    ManagedProcess,
    SandboxError,
    process_alive,
    ruta_command,
    stop_pid,
)
from sandbox.protos import compile_descriptor_set

__all__ = [
    "PID_FILE",
    "PROCESSES_FILE",
    "SANDBOX_FILE",
    "Sandbox",
    "stop_sandbox",
]

PID_FILE: Final = "sandbox.pid"
#: Largest sandbox.pid read (one process id).
_MAX_PID_FILE_BYTES: Final = 64
PROCESSES_FILE: Final = "processes.json"
#: How often servers fetch the global configuration (short: changes show up quickly).
FETCH_INTERVAL_S: Final = 2.0
#: How long the open-data gateway serves gathered counts (short: the demo reads them at once).
OPEN_DATA_REFRESH_S: Final = 2.0
#: How long ``down`` waits for the supervisor to stop everything.
DOWN_TIMEOUT_S: Final = 90.0


#: Where the registry console listens (loopback, a free port).
CONSOLE_LISTEN: Final = "127.0.0.1:0"

#: The security servers' log level (``ruta --log-level``): info shows every exchange's outcome.
SERVER_LOG_LEVEL: Final = "info"
#: The client id of the citizen's record of access at the development issuer.
CITIZEN_CLIENT_ID: Final = "ruta-citizen"
#: How often the supervisor reaps exited children, rereads the servers' ready files and looks
#: for ``ruta sandbox restart`` requests.
SUPERVISE_INTERVAL_S: Final = 0.5

#: Children flush their output at once and never import from their working directory (the
#: sandbox's ``registry/`` folder would shadow the ``registry`` package).
_CHILD_ENV: Final = {"PYTHONUNBUFFERED": "1", "PYTHONSAFEPATH": "1"}


class _Stop(BaseException):
    """Raised in the main thread by SIGTERM/SIGINT while the sandbox is being built."""


def _python_module(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


@dataclass
class _Server:
    agency: Agency
    directory: Path
    transport: str
    consumer: str
    metrics: str
    audit: str
    gateway_http: str = ""
    gateway_backend: str = ""
    #: The gateway's public pages (catalogue, open data, citizen), apart from its callers' port.
    gateway_public: str = ""
    process: ManagedProcess | None = None
    ready: dict[str, Any] = field(default_factory=dict)
    gateway_ready: dict[str, Any] = field(default_factory=dict)

    @property
    def config(self) -> Path:
        return self.directory / "ss.toml"

    @property
    def data_dir(self) -> Path:
        return self.directory / "data"


@dataclass(frozen=True, slots=True)
class _ClientCredential:
    cert: Path
    key: Path
    ca: Path


class Sandbox:
    """One sandbox in ``directory``: :meth:`build` starts everything, :meth:`stop` ends it."""

    def __init__(self, directory: Path, *, echo: Any = None) -> None:
        self.directory = directory.resolve()
        self.logs = self.directory / "logs"
        self.processes: list[ManagedProcess] = []
        self.servers: dict[str, _Server] = {}
        self.clients: dict[SubsystemId, _ClientCredential] = {}
        self.auditor: _ClientCredential | None = None
        #: The open-data gateway's ``statistics`` role certificate (docs/adr/0028-open-data.md).
        self.statistics: _ClientCredential | None = None
        #: The registry console's administrator certificate as a browser imports it.
        self.administrator: dict[str, str] = {}
        self.citizen_service: _ClientCredential | None = None
        #: The development OpenID Connect issuer's URL and the gateway serving /citizen.
        self.citizen: dict[str, str] = {}
        #: The auditor certificate as a browser imports it (the auditor consoles').
        self.auditor_p12: dict[str, str] = {}
        self.registry_ready: dict[str, Any] = {}
        self.backend_addresses: dict[str, str] = {}
        self.gateway_credentials: dict[str, _ClientCredential] = {}
        self.legacy_urls: dict[str, str] = {}
        self._echo = echo or (lambda _text: None)
        self.ports = PortClaims()
        #: Short-lived commands running right now (stopped too if the sandbox stops meanwhile).
        self._transient: list[subprocess.Popen[bytes]] = []

    # --- helpers ----------------------------------------------------------------------------

    def _say(self, text: str) -> None:
        self._echo(text)

    def _process(
        self, name: str, argv: list[str], *, ready: Path | None = None, env: dict[str, str] | None
    ) -> ManagedProcess:
        process = ManagedProcess(
            name=name,
            argv=argv,
            log_path=self.logs / f"{name}.log",
            ready_path=ready,
            env={**_CHILD_ENV, **(env or {})},
            cwd=self.directory,
        )
        process.start()
        self.processes.append(process)
        self._write_processes()
        return process

    def _server_process(self, server: _Server) -> ManagedProcess:
        """The (not yet started) ``ruta ss serve`` process of ``server``: the same argv, log file
        and level every time, so a restart in place is indistinguishable from the first start."""
        return ManagedProcess(
            name=f"ss-{server.agency.key}",
            argv=ruta_command(
                "--log-level", SERVER_LOG_LEVEL, "ss", "serve", "--config", str(server.config)
            ),
            log_path=self.logs / f"ss-{server.agency.key}.log",
            ready_path=server.data_dir / "ready.json",
            env=dict(_CHILD_ENV),
            cwd=self.directory,
        )

    def _write_processes(self) -> None:
        pids = {p.name: p.pid for p in self.processes if p.popen is not None}
        _write_json(self.directory / PROCESSES_FILE, pids)

    def _run(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> str:
        """Run a command to completion; return its stdout; raise naming it on failure."""
        result = subprocess.run(  # noqa: S603 - argv built here
            argv,
            capture_output=True,
            env={**os.environ, **_CHILD_ENV, **(env or {})},
            cwd=self.directory,
            timeout=READY_TIMEOUT_S,
            check=False,
        )
        (self.logs / f"{name}.log").write_bytes(result.stdout + result.stderr)
        if result.returncode != 0:
            tail = (result.stderr or result.stdout).decode("utf-8", "replace")[-2000:]
            raise SandboxError(f"{name} failed (status {result.returncode}):\n{tail}")
        return result.stdout.decode("utf-8", "replace")

    @staticmethod
    def _wait_line(process: ManagedProcess, marker: str, timeout: float = READY_TIMEOUT_S) -> str:
        """Wait until ``process``'s log holds a line containing ``marker``; return that line."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.popen is not None and process.popen.poll() is not None:
                raise SandboxError(
                    f"{process.name} exited with status {process.popen.returncode}; its log "
                    f"ends:\n{process.log_tail()}"
                )
            with contextlib.suppress(FileNotFoundError):
                for line in process.log_path.read_text("utf-8", "replace").splitlines():
                    if marker in line:
                        return line
            time.sleep(0.05)
        raise SandboxError(f"{process.name} did not start; its log ends:\n{process.log_tail()}")

    # --- building -----------------------------------------------------------------------------

    def build(self) -> dict[str, Any]:
        """Start the whole instance; return the sandbox description (also in sandbox.json).

        Raises :class:`SandboxError` naming the step that failed (everything started so far
        keeps running: call :meth:`stop`).
        """
        self.directory.mkdir(parents=True, exist_ok=True)
        if (self.directory / SANDBOX_FILE).exists():
            raise SandboxError(f"{self.directory} holds a sandbox already (ruta sandbox down)")
        if (self.directory / "registry").exists():
            raise SandboxError(f"{self.directory} is not empty; give a fresh directory")
        self.logs.mkdir(exist_ok=True)
        write_atomically(self.directory / PID_FILE, f"{os.getpid()}\n".encode())
        examples = examples_dir()
        # Per agency: transport, consumer, metrics, audit, gateway HTTP, gateway back end,
        # gateway public pages.
        ports = iter(self.ports.take(1 + 7 * len(AGENCIES)))

        self._say("registry: init")
        registry_dir = self.directory / "registry"
        http = f"127.0.0.1:{next(ports)}"
        self._run(
            "registry-init",
            ruta_command(
                "registry",
                "init",
                "--dir",
                str(registry_dir),
                "--instance",
                INSTANCE,
                "--admin-listen",
                "127.0.0.1:0",
                "--http-listen",
                http,
            ),
        )
        registry = self._process(
            "registry",
            ruta_command("registry", "serve", "--dir", str(registry_dir)),
            ready=registry_dir / "registry.ready.json",
            # The registry console on a free loopback port (its URL is in the ready file).
            env={"RUTA_REGISTRY_CONSOLE__LISTEN": CONSOLE_LISTEN},
        )
        legacy = self._start_legacy(examples)
        self.registry_ready = registry.wait_ready()
        self._say(f"registry: serving admin API on {self.registry_ready['admin']}")
        self._administrator_p12(registry_dir)

        descriptor_sets = {
            s.key: compile_descriptor_set(examples / s.example / s.proto) for s in SERVICES
        }
        asyncio.run(self._administer(descriptor_sets))
        self._auditor_p12()
        adapters = self._start_adapters(examples, legacy)

        for agency in AGENCIES:
            self.servers[agency.key] = _Server(
                agency=agency,
                directory=self.directory / "servers" / agency.key,
                transport=f"127.0.0.1:{next(ports)}",
                consumer=f"127.0.0.1:{next(ports)}",
                metrics=f"127.0.0.1:{next(ports)}",
                audit=f"127.0.0.1:{next(ports)}",
                gateway_http=f"127.0.0.1:{next(ports)}",
                gateway_backend=f"127.0.0.1:{next(ports)}",
                gateway_public=f"127.0.0.1:{next(ports)}",
            )
        for spec, process in adapters.items():
            line = self._wait_line(process, "serving ")
            self.backend_addresses[spec.key] = line.rsplit(" ", 1)[-1].strip()
        self._init_servers()
        started: list[tuple[_Server, ManagedProcess]] = []
        for server in self.servers.values():
            server.process = process = self._server_process(server)
            process.start()
            self.processes.append(process)
            self._write_processes()
            started.append((server, process))
        for server, process in started:
            server.ready = process.wait_ready()
            self._say(f"{server.agency.server}: up (consumer port {server.ready['consumer']})")
        for server in self.servers.values():
            self._say(f"{server.agency.server} auditor console: {server.ready.get('console', '')}")
        if self.auditor_p12:
            self._say(
                f"auditor certificate for the browser: {self.auditor_p12['p12']}, its passphrase "
                f"in {self.auditor_p12['p12_passphrase_file']}"
            )
        self._start_gateways()
        description = self.description()
        _write_json(self.directory / SANDBOX_FILE, description)
        return description

    def _start_legacy(self, examples: Path) -> dict[str, str]:
        """The legacy systems: the population database, the land registry's CSV export, and the
        tax and business services (started; waited for by :meth:`_start_adapters`)."""
        legacy = self.directory / "legacy"
        legacy.mkdir(exist_ok=True)
        self._say("legacy systems: population database, tax HTTP API, business SOAP service")
        tax_port, business_port = self.ports.take(2)
        self._legacy_processes = [
            self._process(
                "legacy-tax",
                _python_module("adapters.examples.legacy_tax", "--listen", f"127.0.0.1:{tax_port}"),
                env=None,
            ),
            self._process(
                "legacy-business",
                _python_module(
                    "adapters.examples.legacy_business", "--listen", f"127.0.0.1:{business_port}"
                ),
                env=None,
            ),
        ]
        database = legacy / "population.db"
        self._run(
            "population-db",
            _python_module("adapters.examples.population.make_db", str(database)),
        )
        csv = legacy / "parcels.csv"
        shutil.copyfile(examples / "land" / "parcels.csv", csv)
        self.legacy_urls = {"tax": f"http://127.0.0.1:{tax_port}"}
        return {
            "RUTA_POPULATION_DB": str(database),
            "RUTA_TAX_URL": f"http://127.0.0.1:{tax_port}",
            "RUTA_BUSINESS_WSDL": f"http://127.0.0.1:{business_port}/business?wsdl",
            "RUTA_LAND_CSV": str(csv),
        }

    def _start_adapters(
        self, examples: Path, env: dict[str, str]
    ) -> dict[ServiceSpec, ManagedProcess]:
        for process in self._legacy_processes:
            self._wait_line(process, "listening on")
        self._say("adapters: sql (population), rest (tax), soap (business), csv (land)")
        return {
            spec: self._process(
                f"adapter-{spec.key}",
                ruta_command(
                    "adapter",
                    "serve",
                    str(examples / spec.example / "adapter.toml"),
                    "--listen",
                    "127.0.0.1:0",
                ),
                env=env,
            )
            for spec in SERVICES
        }

    def _administrator_p12(self, registry_dir: Path) -> None:
        """The registry-admin credential ``registry init`` made, as a PKCS#12 file a browser
        imports (``ruta registry ca p12``), under a random passphrase kept in a 0600 file."""
        folder = self.directory / "clients" / "administrator"
        folder.mkdir(parents=True, exist_ok=True)
        passphrase = folder / "admin.p12.passphrase"
        write_atomically(passphrase, secrets.token_urlsafe(18).encode() + b"\n", mode=0o600)
        p12 = folder / "admin.p12"
        self._run(
            "administrator-p12",
            ruta_command(
                "registry",
                "ca",
                "p12",
                "--key",
                str(registry_dir / "admin" / "admin.key"),
                "--cert",
                str(registry_dir / "admin" / "admin.pem"),
                "--chain",
                str(registry_dir / "ca" / "anchor.pem"),
                "--p12-passphrase-file",
                str(passphrase),
                "--name",
                "Ruta sandbox administrator",
                "--out",
                str(p12),
            ),
        )
        self.administrator = {
            "p12": str(p12),
            "p12_passphrase_file": str(passphrase),
            "cert": str(registry_dir / "admin" / "admin.pem"),
            "key": str(registry_dir / "admin" / "admin.key"),
            "ca": str(registry_dir / "ca" / "anchor.pem"),
        }
        self._say(
            f"registry console: {self.registry_ready.get('console', '')} (administrator "
            f"certificate for the browser: {p12}, its passphrase in {passphrase})"
        )

    def _auditor_p12(self) -> None:
        """The auditor's credential as a PKCS#12 file a browser imports (``ruta registry ca
        p12``, as for the administrator), under a random passphrase kept in a 0600 file."""
        if self.auditor is None:
            raise SandboxError("the sandbox has no auditor certificate yet")
        folder = self.auditor.cert.parent
        passphrase = folder / "auditor.p12.passphrase"
        write_atomically(passphrase, secrets.token_urlsafe(18).encode() + b"\n", mode=0o600)
        p12 = folder / "auditor.p12"
        self._run(
            "auditor-p12",
            ruta_command(
                "registry",
                "ca",
                "p12",
                "--key",
                str(self.auditor.key),
                "--cert",
                str(self.auditor.cert),
                "--chain",
                str(self.auditor.ca),
                "--p12-passphrase-file",
                str(passphrase),
                "--name",
                "Ruta sandbox auditor",
                "--out",
                str(p12),
            ),
        )
        self.auditor_p12 = {"p12": str(p12), "p12_passphrase_file": str(passphrase)}

    # --- the registry's admin API -------------------------------------------------------------

    def _admin_credentials(self) -> tuple[grpc.ChannelCredentials, Path]:
        registry_dir = self.directory / "registry"
        trust = registry_dir / "ca" / "anchor.pem"
        return (
            channel_credentials(
                registry_dir / "admin" / "admin.key", registry_dir / "admin" / "admin.pem", trust
            ),
            trust,
        )

    async def _administer(self, descriptor_sets: dict[str, bytes]) -> None:
        """Members, subsystems, services, contracts, and the backends' and auditor's
        certificates, through the registry's admin API."""
        credentials, trust = self._admin_credentials()
        async with grpc.aio.secure_channel(self.registry_ready["admin"], credentials) as channel:
            stub = registry_pb2_grpc.RegistryAdminStub(channel)
            self._say("registry: members, subsystems, services, contracts")
            for agency in AGENCIES:
                await admin_call(
                    stub.AddMember(
                        registry_pb2.AddMemberRequest(id=agency.member.to_proto(), name=agency.name)
                    )
                )
                for code in agency.subsystems:
                    await admin_call(
                        stub.AddSubsystem(
                            registry_pb2.AddSubsystemRequest(id=agency.subsystem(code).to_proto())
                        )
                    )
            for spec in SERVICES:
                await admin_call(
                    stub.AddService(
                        registry_pb2.AddServiceRequest(
                            id=spec.service.to_proto(),
                            methods=[spec.method],
                            file_descriptor_set=descriptor_sets[spec.key],
                            description=spec.description,
                            savings=globalconf_pb2.Savings(
                                citizen_minutes=spec.citizen_minutes,
                                paper_forms=spec.paper_forms,
                                cost=spec.cost,
                            ),
                        )
                    )
                )
            for rest in REST_SERVICES:
                await admin_call(
                    stub.AddService(
                        registry_pb2.AddServiceRequest(
                            id=rest.service.to_proto(),
                            openapi=json.dumps(rest.openapi).encode("utf-8"),
                            description=rest.description,
                        )
                    )
                )
            for contract in CONTRACTS:
                record = await admin_call(
                    stub.RequestContract(
                        registry_pb2.RequestContractRequest(
                            consumer=contract.consumer.to_proto(),
                            service=contract.service.to_proto(),
                            purpose=PURPOSE,
                            legal_basis=LEGAL_BASIS,
                        )
                    )
                )
                ref = registry_pb2.ContractRef(contract_id=record.contract_id)
                await admin_call(stub.ApproveContract(ref))  # requested -> approved (provider)
                await admin_call(stub.ApproveContract(ref))  # approved -> active (registry)
            self._say("registry: certificates for the backends and the auditor")
            clients = self.directory / "clients"
            for agency in AGENCIES:
                for code in agency.subsystems:
                    subsystem = agency.subsystem(code)
                    self.clients[subsystem] = await _issue(
                        stub,
                        clients / f"{agency.key}-{code}",
                        trust,
                        registry_pb2.IssueCertificateRequest(
                            profile=registry_pb2.CERTIFICATE_PROFILE_SUBSYSTEM,
                            subsystem=subsystem.to_proto(),
                        ),
                        common_name=str(subsystem),
                    )
            for agency in AGENCIES:
                self.gateway_credentials[agency.key] = await _issue(
                    stub,
                    self.directory / "servers" / agency.key / "gateway" / "cert",
                    trust,
                    registry_pb2.IssueCertificateRequest(
                        profile=registry_pb2.CERTIFICATE_PROFILE_GATEWAY,
                        member=agency.member.to_proto(),
                    ),
                    common_name=f"{agency.member} gateway",
                )
            self.auditor = await _issue(
                stub,
                clients / "auditor",
                trust,
                registry_pb2.IssueCertificateRequest(
                    # The sandbox's one auditor supervises every agency, bodies included
                    # (docs/adr/0012); a real instance scopes auditors to members.
                    profile=registry_pb2.CERTIFICATE_PROFILE_ROLE,
                    roles=["auditor-supervisor", "auditor-bodies"],
                ),
                common_name="sandbox auditor",
            )
            self.statistics = await _issue(
                stub,
                clients / "statistics",
                trust,
                registry_pb2.IssueCertificateRequest(
                    profile=registry_pb2.CERTIFICATE_PROFILE_ROLE, roles=["statistics"]
                ),
                common_name=f"{OPEN_DATA_AGENCY.member} gateway, open data",
            )
            # The citizen's record of access (docs/adr/0027): the gateway reads each server's
            # audit API with this role, one subject at a time, never bodies.
            self.citizen_service = await _issue(
                stub,
                clients / "citizen-service",
                trust,
                registry_pb2.IssueCertificateRequest(
                    profile=registry_pb2.CERTIFICATE_PROFILE_ROLE, roles=["citizen-service"]
                ),
                common_name="sandbox citizen service",
            )

    # --- security servers ---------------------------------------------------------------------

    def _init_servers(self) -> None:
        """``ruta ss init`` for every server, concurrently (each enrols itself)."""
        self._say("security servers: ruta ss init (keys, CSRs, enrolment)")
        registry_dir = self.directory / "registry"
        running: list[tuple[str, subprocess.Popen[bytes]]] = []
        self._transient = []
        for server in self.servers.values():
            argv = ruta_command(
                "ss",
                "init",
                "--dir",
                str(server.directory),
                "--server-id",
                str(server.agency.server),
                "--registry-dir",
                str(registry_dir),
                "--transport-listen",
                server.transport,
                "--consumer-listen",
                server.consumer,
                "--metrics-listen",
                server.metrics,
                "--audit-listen",
                server.audit,
                "--console-listen",
                "127.0.0.1:0",
                "--fetch-interval",
                str(FETCH_INTERVAL_S),
            )
            for spec in SERVICES:
                if spec.service.member == server.agency.member:
                    argv += ["--backend", f"{spec.service}={self.backend_addresses[spec.key]}"]
            for rest in REST_SERVICES:
                if rest.service.member == server.agency.member:
                    # A REST service's backend is its member's gateway back end.
                    argv += ["--backend", f"{rest.service}={server.gateway_backend}"]
            name = f"ss-init-{server.agency.key}"
            log = (self.logs / f"{name}.log").open("wb")
            try:
                running.append(
                    (
                        name,
                        subprocess.Popen(  # noqa: S603 - argv built here
                            argv,
                            stdout=log,
                            stderr=subprocess.STDOUT,
                            cwd=self.directory,
                            env={**os.environ, **_CHILD_ENV},
                        ),
                    )
                )
            finally:
                log.close()
            self._transient.append(running[-1][1])
        failed = []
        for name, popen in running:
            try:
                status = popen.wait(timeout=READY_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                popen.kill()
                popen.wait()
                status = -1
            if status != 0:
                tail = (self.logs / f"{name}.log").read_text("utf-8", "replace")[-1500:]
                failed.append(f"{name} failed (status {status}):\n{tail}")
        if failed:
            raise SandboxError("\n".join(failed))

    # --- gateways -------------------------------------------------------------------------------

    def _start_gateways(self) -> None:
        """One ``ruta gateway serve`` per agency, in front of its server's consumer port (its
        subsystems call over plain loopback HTTP); the tax agency's also serves its legacy REST
        API to the bus (the back end). The public pages (catalogue, open data, the citizen's
        record) have a port of their own: the callers' port trusts plain loopback callers."""
        self._say("gateways: one per agency (REST/JSON on the bus, directory services)")
        started: list[tuple[_Server, ManagedProcess]] = []
        trust = self.directory / "registry" / "ca" / "anchor.pem"
        citizen_gateway = next(iter(self.servers.values()))
        citizen = self._start_citizen_issuer(citizen_gateway, trust)
        for server in self.servers.values():
            agency = server.agency
            folder = server.directory / "gateway"
            cred = self.gateway_credentials[agency.key]
            settings: dict[str, Any] = {
                "member": str(agency.member),
                "data_dir": "data",
                "http": {
                    "listen": server.gateway_http,
                    "plain_loopback_subsystems": [
                        str(agency.subsystem(code)) for code in agency.subsystems
                    ],
                },
                "consumer": {
                    "address": server.ready.get("consumer", server.consumer),
                    "ca": str(trust),
                    "cert": str(cred.cert),
                    "key": str(cred.key),
                },
                "globalconf": {
                    "anchor": str(server.directory / "anchor.toml"),
                    "fetch_interval_seconds": FETCH_INTERVAL_S,
                },
                "public": {"listen": server.gateway_public},
            }
            if server is citizen_gateway:
                settings["citizen"] = citizen
            rest = [r for r in REST_SERVICES if r.service.member == agency.member]
            if rest:
                settings["backend"] = {
                    "listen": server.gateway_backend,
                    "rest": [
                        {"service": str(r.service), "base_url": self.legacy_urls[r.legacy]}
                        for r in rest
                    ],
                }
            if agency == OPEN_DATA_AGENCY and self.statistics is not None:
                # Reads every server's monthly counts (statistics role) and publishes them.
                settings["open_data"] = {
                    "cert": str(self.statistics.cert),
                    "key": str(self.statistics.key),
                    "ca": str(trust),
                    "refresh_seconds": OPEN_DATA_REFRESH_S,
                    # The demo shows this month's own exchanges (production: closed months).
                    "current_month": True,
                }
            config = folder / "gateway.toml"
            write_atomically(config, tomli_w.dumps(settings).encode("utf-8"))
            process = self._process(
                f"gateway-{agency.key}",
                ruta_command("--log-level", "info", "gateway", "serve", "--config", str(config)),
                ready=folder / "data" / "ready.json",
                env=None,
            )
            started.append((server, process))
        for server, process in started:
            server.gateway_ready = process.wait_ready()
            url, public = server.gateway_ready["http"], server.gateway_ready["public"]
            self._say(
                f"{server.agency.member} gateway: {url} (service catalogue: {public}/catalogue)"
            )
            if server.agency == OPEN_DATA_AGENCY:
                self._say(f"open data: {public}/open-data (CSV, JSON and DCAT-AP beside it)")
        self.citizen["url"] = f"{citizen['public_url']}/citizen"
        self._say(
            f"citizen's record of access: {self.citizen['url']} (sign in as a test citizen at "
            f"the development issuer {self.citizen['issuer']})"
        )

    def _start_citizen_issuer(self, server: _Server, trust: Path) -> dict[str, Any]:
        """Start the development OpenID Connect issuer (sandbox/oidc.py) for ``server``'s
        gateway; return that gateway's ``[citizen]`` settings."""
        if self.citizen_service is None:
            raise SandboxError("the sandbox has no citizen-service certificate yet")
        folder = server.directory / "gateway" / "citizen"
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        secret = folder / "client-secret"
        write_atomically(secret, (secrets.token_urlsafe(32) + "\n").encode())
        secret.chmod(0o600)
        public_url = "http://localhost:" + server.gateway_public.rpartition(":")[2]
        [port] = self.ports.take(1)
        process = self._process(
            "oidc-issuer",
            _python_module(
                "sandbox.oidc",
                "--listen",
                f"127.0.0.1:{port}",
                "--issuer",
                f"http://localhost:{port}",
                "--client-id",
                CITIZEN_CLIENT_ID,
                "--client-secret-file",
                str(secret),
                "--redirect-uri",
                f"{public_url}/citizen/callback",
            ),
            env=None,
        )
        issuer = self._wait_line(process, "serving ").rsplit(" ", 1)[-1].strip()
        self.citizen = {"issuer": issuer, "gateway": str(server.agency.member)}
        return {
            "issuer": issuer,
            "client_id": CITIZEN_CLIENT_ID,
            "client_secret_file": str(secret),
            "public_url": public_url,
            "cert": str(self.citizen_service.cert),
            "key": str(self.citizen_service.key),
            "ca": str(trust),
        }

    # --- description ----------------------------------------------------------------------------

    def description(self) -> dict[str, Any]:
        """The content of sandbox.json."""
        if self.auditor is None:
            raise SandboxError("the sandbox has no auditor yet: describe it once it is up")
        return {
            "instance": INSTANCE,
            "registry": {
                "address": self.registry_ready["admin"],
                "globalconf_url": self.registry_ready["globalconf_url"],
                "console": self.registry_ready.get("console", ""),
            },
            "servers": [
                {
                    "id": str(server.agency.server),
                    "consumer": server.ready.get("consumer", server.consumer),
                    "transport": server.ready.get("transport", server.transport),
                    "audit": server.ready.get("audit", server.audit),
                    "console": server.ready.get("console", ""),
                    "metrics": server.ready.get("metrics", f"http://{server.metrics}/metrics"),
                    "data_dir": str(server.data_dir),
                    "config": str(server.config),
                    "pid": server.ready.get("pid", server.process.pid if server.process else 0),
                }
                for server in self.servers.values()
            ],
            "subsystems": [
                {
                    "id": str(subsystem),
                    "server": str(self.servers[_agency_of(subsystem).key].agency.server),
                    "cert": str(credential.cert),
                    "key": str(credential.key),
                    "ca": str(credential.ca),
                }
                for subsystem, credential in self.clients.items()
            ],
            "gateways": [
                {
                    "id": f"{server.agency.member}/gateway",
                    "member": str(server.agency.member),
                    "url": server.gateway_ready.get("http", f"http://{server.gateway_http}"),
                    "backend": server.gateway_ready.get("backend", ""),
                    "public": server.gateway_ready.get("public", f"http://{server.gateway_public}"),
                    "subsystems": [
                        str(server.agency.subsystem(code)) for code in server.agency.subsystems
                    ],
                    "config": str(server.directory / "gateway" / "gateway.toml"),
                    "open_data": (
                        server.gateway_ready.get("public", f"http://{server.gateway_public}")
                        + "/open-data"
                        if server.agency == OPEN_DATA_AGENCY
                        else ""
                    ),
                }
                for server in self.servers.values()
            ],
            "administrator": self.administrator,
            "citizen": dict(self.citizen),
            "auditor": {
                "cert": str(self.auditor.cert),
                "key": str(self.auditor.key),
                "ca": str(self.auditor.ca),
                **self.auditor_p12,
            },
        }

    # --- supervising --------------------------------------------------------------------------

    def supervise(self) -> None:
        """One round of looking after a running sandbox: reap children that exited (saying so
        once), notice a server restarted by hand (its ready file names a new live pid) and carry
        out ``ruta sandbox restart`` requests; rewrite processes.json and sandbox.json when a
        pid changed."""
        changed = False
        for process in self.processes:
            popen = process.popen
            if popen is not None and popen.returncode is None and popen.poll() is not None:
                self._say(
                    f"warning: {process.name} (pid {popen.pid}) exited with status "
                    f"{popen.returncode}"
                    + (
                        f"; ruta sandbox restart --dir {self.directory} {process.name[3:]} "
                        "starts it again"
                        if process.name.startswith("ss-")
                        else ""
                    )
                )
        for server in self.servers.values():
            ready = server.data_dir / "ready.json"
            pid = _ready_pid(ready)
            if pid is not None and pid != server.ready.get("pid") and process_alive(pid):
                with contextlib.suppress(FileReadError, ValueError):
                    content = _read_json(ready)
                    if isinstance(content, dict):
                        server.ready = content
                        changed = True
                        self._say(f"warning: {server.agency.server} now runs as pid {pid}")
        for request in take_restart_requests(self.directory):
            try:
                server = self._server_named(request.server)
                self.restart(server)
            except SandboxError as error:
                answer_restart(self.directory, request, error=error.message)
            else:
                answer_restart(
                    self.directory,
                    request,
                    server=str(server.agency.server),
                    pid=int(server.ready.get("pid", 0)),
                )
                changed = True
        if changed:
            self._write_processes()
            _write_json(self.directory / SANDBOX_FILE, self.description())

    def _server_named(self, name: str) -> _Server:
        for server in self.servers.values():
            if name in (server.agency.key, str(server.agency.server)):
                return server
        known = ", ".join(
            f"{server.agency.server} ({server.agency.key})" for server in self.servers.values()
        )
        raise SandboxError(f"this sandbox has no server {name!r}; it has {known}")

    def restart(self, server: _Server) -> None:
        """Stop ``server`` (the process the sandbox started, or one restarted by hand from its
        settings file) and start it again as the sandbox's child, with the same settings file,
        log file (appended to) and log level; wait until it is ready.

        Raises :class:`SandboxError` with the tail of its log if it does not come back; the
        sandbox then runs without it (``ruta sandbox restart`` can try again).
        """
        by_hand = _ready_pid(server.data_dir / "ready.json")
        if server.process is not None:
            server.process.stop()
        if by_hand is not None and process_alive(by_hand):
            stop_pid(by_hand, timeout=STOP_TIMEOUT_S)
        process = self._server_process(server)
        with process.log_path.open("a", encoding="utf-8") as log:
            log.write(f"--- sandbox: restarting {server.agency.server} (ruta sandbox restart)\n")
        process.start()
        if server.process in self.processes:
            self.processes[self.processes.index(server.process)] = process
        else:
            self.processes.append(process)
        server.process = process
        self._write_processes()
        self._say(f"{server.agency.server}: restarting (pid {process.pid})")
        server.ready = process.wait_ready()
        self._say(f"{server.agency.server}: up again (pid {server.ready.get('pid')})")

    # --- stopping -----------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop every child (servers first, the registry last) and any server restarted from
        its config file by hand; remove sandbox.json and the pid files."""
        for server in self.servers.values():
            pid = _ready_pid(server.data_dir / "ready.json")
            if pid is not None and (server.process is None or pid != server.process.pid):
                stop_pid(pid, timeout=STOP_TIMEOUT_S)
        for popen in self._transient:
            if popen.poll() is None:
                popen.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                popen.wait(timeout=STOP_TIMEOUT_S)
            if popen.poll() is None:
                popen.kill()
                popen.wait()
        for process in reversed(self.processes):
            process.stop()
        for name in (SANDBOX_FILE, PID_FILE, PROCESSES_FILE):
            (self.directory / name).unlink(missing_ok=True)
        shutil.rmtree(self.directory / CONTROL_DIR, ignore_errors=True)
        self.ports.release()

    def run(self) -> int:
        """Build, then stay up until SIGTERM or SIGINT; stop everything; return the exit status."""
        stopping = threading.Event()

        def on_signal(_signum: int, _frame: FrameType | None) -> None:
            if stopping.is_set():
                return
            stopping.set()
            raise _Stop

        previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        status = 0
        try:
            try:
                self.build()
                self._say(f"sandbox {INSTANCE} is up: {self.directory / SANDBOX_FILE}")
                while not stopping.is_set():
                    self.supervise()
                    stopping.wait(SUPERVISE_INTERVAL_S)
            except _Stop:
                pass
            except RutaError as error:
                self._say(f"error: {error}")
                status = 1
            except OSError as error:
                self._say(f"error: {error.strerror or error}")
                status = 1
            finally:
                stopping.set()
                for sig in previous:
                    signal.signal(sig, signal.SIG_IGN)
                self._say("stopping the sandbox")
                self.stop()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return status


def _agency_of(subsystem: SubsystemId) -> Agency:
    for agency in AGENCIES:
        if agency.member == subsystem.member:
            return agency
    raise SandboxError(f"no agency for {subsystem}")  # pragma: no cover - layout is fixed


async def _issue(
    stub: Any,
    folder: Path,
    trust: Path,
    request: registry_pb2.IssueCertificateRequest,
    *,
    common_name: str,
) -> _ClientCredential:
    """A key made here (0600), certified by the registry's CA from its CSR."""
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)  # noqa: ASYNC240 - small local files
    key = generate_ec_key()
    key_path = folder / "client.key"
    save_private_key(key_path, key)
    request.csr = make_csr(key, common_name).public_bytes(serialization.Encoding.DER)
    answer = await admin_call(stub.IssueCertificate(request))
    chain = [load_certificate(der) for der in answer.chain]
    intermediates = [c for c in chain if c.issuer != c.subject]
    cert_path = folder / "client.pem"
    write_atomically(
        cert_path, certificate_pem(load_certificate(answer.certificate), *intermediates)
    )
    return _ClientCredential(cert=cert_path, key=key_path, ca=trust)


def _write_json(path: Path, data: Any) -> None:
    write_atomically(path, (json.dumps(data, indent=2) + "\n").encode("utf-8"))


def _read_json(path: Path) -> Any:
    """The JSON in ``path``: :class:`FileReadError` when it cannot be read or is over
    :data:`MAX_SANDBOX_FILE_BYTES`, :class:`ValueError` when it is not JSON."""
    return json.loads(read_bounded(path, MAX_SANDBOX_FILE_BYTES))


def _ready_pid(path: Path) -> int | None:
    pid = (read_ready_file(path) or {}).get("pid")
    return pid if isinstance(pid, int) and pid > 0 else None


def _pids(directory: Path) -> Iterator[int]:
    with contextlib.suppress(FileReadError, ValueError):
        data = _read_json(directory / PROCESSES_FILE)
        if isinstance(data, dict):
            yield from (pid for pid in data.values() if isinstance(pid, int) and pid > 0)
    for ready in sorted(directory.glob("servers/*/data/ready.json")):
        pid = _ready_pid(ready)
        if pid is not None:
            yield pid


def stop_sandbox(directory: Path, *, timeout: float = DOWN_TIMEOUT_S) -> bool:
    """Stop the sandbox running in ``directory``: signal its supervisor and wait until it has
    stopped every child; if the supervisor is gone, stop the children it recorded. Returns
    whether anything was running."""
    directory = directory.resolve()
    found = False
    supervisor: int | None = None
    with contextlib.suppress(FileReadError, ValueError):
        supervisor = int(read_bounded(directory / PID_FILE, _MAX_PID_FILE_BYTES).strip())
    if supervisor is not None and supervisor != os.getpid() and process_alive(supervisor):
        found = True
        stop_pid(supervisor, timeout=timeout)
    for pid in list(_pids(directory)):
        if process_alive(pid):
            found = True
            stop_pid(pid, timeout=STOP_TIMEOUT_S)
    for name in (SANDBOX_FILE, PID_FILE, PROCESSES_FILE):
        (directory / name).unlink(missing_ok=True)
    return found
