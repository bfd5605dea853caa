"""What a sandbox holds: the instance, its members, servers, services, contracts and backends.

The once-only scenario (issue 7): the social-benefits agency decides an application by asking,
through the bus, the population register (SQL adapter), the tax agency (REST adapter over a legacy
HTTP service), the business register (SOAP adapter over a legacy SOAP service) and the land
registry (CSV adapter). The business and land registers are two subsystems of one member, the
public registries agency, with its own security server.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Final

import adapters.examples
from ruta.evidence.cli import MAX_SANDBOX_FILE_BYTES, SANDBOX_FILE
from ruta.ids import MemberId, ServerId, ServiceId, SubsystemId

__all__ = [
    "AGENCIES",
    "CONTRACTS",
    "INSTANCE",
    "LEGAL_BASIS",
    "MAX_SANDBOX_FILE_BYTES",
    "OPEN_DATA_AGENCY",
    "PURPOSE",
    "REST_SERVICES",
    "SANDBOX_FILE",
    "SERVER_CODE",
    "SERVICES",
    "TAX_REST_OPENAPI",
    "Agency",
    "ContractSpec",
    "RestServiceSpec",
    "ServiceSpec",
    "examples_dir",
]

# SANDBOX_FILE (sandbox.json) and its bound belong to its production reader, `ruta audit export
# --sandbox`; re-exported here for the kit.

INSTANCE: Final = "DEV"
SERVER_CODE: Final = "ss1"
PURPOSE: Final = "benefit-eligibility"
LEGAL_BASIS: Final = "Social Benefits Act, s.12 (eligibility checks with the applicant's consent)"


@dataclass(frozen=True, slots=True)
class Agency:
    """A member with one security server (``ss1``) and its subsystems."""

    key: str
    member: MemberId
    name: str
    subsystems: tuple[str, ...]

    @property
    def server(self) -> ServerId:
        return self.member.server(SERVER_CODE)

    def subsystem(self, code: str) -> SubsystemId:
        return self.member.subsystem(code)


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    """A service on the bus, the adapter that serves it and the legacy system behind it."""

    key: str
    service: ServiceId
    #: Folder under the adapters' examples holding ``adapter.toml`` and the ``.proto``.
    example: str
    proto: str
    description: str
    method: str
    #: Savings per call recorded in the registry (citizen minutes, paper forms, agency cost).
    citizen_minutes: float
    paper_forms: int
    cost: float = 0.0

    @property
    def method_path(self) -> str:
        return f"/{self.service.service_name}/{self.method}"


@dataclass(frozen=True, slots=True)
class ContractSpec:
    consumer: SubsystemId
    service: ServiceId


def _member(code: str) -> MemberId:
    return MemberId(INSTANCE, "GOV", code)


POP: Final = Agency("pop", _member("POP"), "Population Register", ("registry",))
TAX: Final = Agency("tax", _member("TAX"), "Tax Agency", ("income",))
SOC: Final = Agency("soc", _member("SOC"), "Social Benefits Agency", ("benefits",))
REG: Final = Agency("reg", _member("REG"), "Public Registries Agency", ("business", "land"))
AGENCIES: Final = (POP, TAX, SOC, REG)
#: The agency whose gateway publishes the instance's open data (docs/adr/0028-open-data.md).
OPEN_DATA_AGENCY: Final = SOC

SERVICES: Final = (
    ServiceSpec(
        "population",
        POP.subsystem("registry").service("population.v1.PopulationRegister"),
        "population",
        "population.proto",
        "Population register: a person by national id (SQL adapter over the register's database)",
        "GetPerson",
        20.0,
        1,
        cost=4.0,
    ),
    ServiceSpec(
        "tax",
        TAX.subsystem("income").service("tax.v1.TaxAgency"),
        "tax",
        "tax.proto",
        "Assessed income of a taxpayer for a fiscal year (REST adapter over the legacy tax API)",
        "GetIncome",
        45.0,
        1,
        cost=9.5,
    ),
    ServiceSpec(
        "business",
        REG.subsystem("business").service("business.v1.BusinessRegister"),
        "business",
        "business.proto",
        "Companies in which a person holds a role (SOAP adapter over the business register)",
        "ListCompaniesByOwner",
        30.0,
        1,
        cost=6.0,
    ),
    ServiceSpec(
        "land",
        REG.subsystem("land").service("land.v1.LandRegistry"),
        "land",
        "land.proto",
        "Parcels registered to a person (CSV adapter over the land registry's export)",
        "GetHoldings",
        30.0,
        1,
        cost=6.0,
    ),
)


@dataclass(frozen=True, slots=True)
class RestServiceSpec:
    """A legacy REST system offered on the bus as a REST service, through its member's gateway
    (docs/guides/rest.md): no adapter, the HTTP request itself is the signed message."""

    key: str
    service: ServiceId
    description: str
    #: The OpenAPI 3 description registered for it.
    openapi: dict[str, object]
    #: Which legacy system serves it (a key of the sandbox's legacy URLs).
    legacy: str


#: The legacy tax API (adapters/examples/legacy_tax.py) as its own OpenAPI description.
TAX_REST_OPENAPI: Final[dict[str, object]] = {
    "openapi": "3.0.3",
    "info": {"title": "Tax agency legacy API", "version": "2"},
    "paths": {
        "/api/v2/taxpayers/{tin}/income": {
            "get": {
                "operationId": "getIncome",
                "parameters": [
                    {"name": "tin", "in": "path", "required": True, "schema": {"type": "string"}},
                    {
                        "name": "year",
                        "in": "query",
                        "required": True,
                        "schema": {"type": "integer"},
                    },
                ],
                "responses": {
                    "200": {"description": "The taxpayer's assessed income for the year"},
                    "400": {"description": "A malformed year"},
                    "404": {"description": "Unknown taxpayer or no assessment"},
                },
            }
        }
    },
}

REST_SERVICES: Final = (
    RestServiceSpec(
        "tax-rest",
        TAX.subsystem("income").service("tax-rest"),
        "The legacy tax API itself, offered as a REST service through the tax agency's gateway",
        TAX_REST_OPENAPI,
        "tax",
    ),
)

#: SOC's benefits subsystem may call every service for PURPOSE; nobody else has a contract.
CONTRACTS: Final = tuple(
    ContractSpec(SOC.subsystem("benefits"), s.service) for s in (*SERVICES, *REST_SERVICES)
)


def examples_dir() -> Path:
    """The adapters' examples folder: the package :mod:`adapters.examples` (adapter files,
    ``.proto`` files, the legacy systems they front), imported, so wherever it is installed.

    Raises :class:`FileNotFoundError` when it is not a folder on disk or lacks its data files.
    """
    folder = resources.files(adapters.examples)
    if not isinstance(folder, Path):
        raise FileNotFoundError("the adapters' examples are not a folder on disk")
    if not (folder / "population" / "adapter.toml").is_file():
        raise FileNotFoundError("the adapters' examples are installed without their data files")
    return folder
