"""The registry console's pages and actions (see the package's description).

Each request is authenticated by the client certificate of its TLS connection
(:func:`ruta.web.client_certificate`), then :meth:`RegistryAdmin.authenticate` turns it into the
same :class:`~registry.admin_api.Caller` the gRPC API would see. No certificate: the kit's
"certificate needed" page (401). A role the operation refuses: the kit's 403 page naming the
role. Every form carries a CSRF token bound to the certificate's fingerprint, checked before
anything else is done with the form; a refused request re-shows the page with the reason (nothing
changed), a done one redirects to the page (POST-redirect-GET).
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Final

from aiohttp import web
from cryptography import x509
from google.protobuf import timestamp_pb2
from multidict import MultiDictProxy

from registry import limits
from registry.admin_api import READER_ROLES, REGISTRY_ADMIN, Caller, RegistryAdmin
from registry.console import messages
from registry.errors import InvalidRequestError, PermissionDeniedError
from ruta.faults import Fault, RutaError
from ruta.globalconf.limits import MAX_OPENAPI_BYTES
from ruta.ids import MemberId, ServerId, ServiceId, SubsystemId
from ruta.pki.certs import certificate_pem
from ruta.timestamps import from_timestamp
from ruta.v1 import globalconf_pb2, registry_pb2
from ruta.web import (
    CSRF_FIELD,
    SECURITY_HEADERS,
    ClientCertificate,
    CsrfTokens,
    Pages,
    add_static_routes,
    client_certificate,
    language_of,
)

__all__ = [
    "MAX_CSR_BYTES",
    "MAX_FORM_BYTES",
    "MAX_UPLOAD_BYTES",
    "PAGES",
    "ConfigurationInForce",
    "console_app",
]

_HERE: Final = Path(__file__).parent
PAGES: Final = Pages(templates=_HERE / "templates", locale=_HERE / "locale")

#: Largest file one form may upload: a descriptor set at the registry's own bound (an OpenAPI
#: description, a CSR and a certificate are bounded lower, below).
MAX_UPLOAD_BYTES: Final = max(limits.MAX_DESCRIPTOR_SET_BYTES, MAX_OPENAPI_BYTES)
#: Largest POST body read (one upload plus the form's text fields); larger is refused with 413
#: before the body is parsed.
MAX_FORM_BYTES: Final = MAX_UPLOAD_BYTES + 64 * 1024
#: Largest certificate signing request uploaded.
MAX_CSR_BYTES: Final = 64 * 1024
#: Longest text field read from a form (the service bounds each further).
MAX_FIELD_CHARS: Final = limits.MAX_TEXT_LENGTH
#: Rows on one page of a list (the admin API's largest page).
PAGE_SIZE: Final = limits.MAX_PAGE_SIZE
#: Longest identifier read from a form or query (member, subsystem, server), and longest page
#: token (the API's own tokens are far shorter; a longer one is cut and then refused by it).
MAX_IDENTIFIER_CHARS: Final = 256
MAX_PAGE_TOKEN_CHARS: Final = 256

_PROFILES: Final = {
    "auth": registry_pb2.CERTIFICATE_PROFILE_AUTH,
    "sign": registry_pb2.CERTIFICATE_PROFILE_SIGN,
    "subsystem": registry_pb2.CERTIFICATE_PROFILE_SUBSYSTEM,
    "role": registry_pb2.CERTIFICATE_PROFILE_ROLE,
    "gateway": registry_pb2.CERTIFICATE_PROFILE_GATEWAY,
}
_REASONS: Final = tuple(
    flag.value for flag in x509.ReasonFlags if flag is not x509.ReasonFlags.remove_from_crl
)


@dataclass(frozen=True, slots=True)
class ConfigurationInForce:
    """What the configuration page shows: the configuration this node serves now, and the
    registry nodes security servers fetch it from (the configuration anchor's URLs)."""

    serial: int
    generated_at: datetime
    expires_at: datetime
    size: int
    sha256: str
    nodes: tuple[str, ...]
    this_node: str
    #: SHA-256 fingerprints (hex) of the trust anchors whose certificates carry roles on the
    #: security servers (the configuration's ``role_issuers``, docs/adr/0039); empty: none.
    role_issuers: tuple[str, ...] = ()


class _UploadTooLargeError(RutaError):
    default_fault = Fault.CLIENT_MESSAGE_TOO_LARGE


@dataclass(frozen=True, slots=True)
class _Visitor:
    """The person on the page: their certificate, the caller it makes, their forms' token."""

    certificate: ClientCertificate
    caller: Caller
    csrf_token: str


_Show = Callable[..., Awaitable[web.Response]]
_Act = Callable[[web.Request, _Visitor, MultiDictProxy[Any]], Awaitable[str]]


# --- reading forms ----------------------------------------------------------------------------


def _text(form: MultiDictProxy[Any], name: str, *, limit: int = MAX_FIELD_CHARS) -> str:
    value = form.get(name, "")
    if not isinstance(value, str):
        raise InvalidRequestError(f"{name} must be text")
    if len(value) > limit:
        raise InvalidRequestError(f"{name} is longer than {limit} characters")
    return value.strip()


def _file(form: MultiDictProxy[Any], name: str, *, limit: int) -> bytes:
    value = form.get(name)
    if not isinstance(value, web.FileField):
        raise InvalidRequestError(f"choose a file for {name}")
    data: bytes = value.file.read(limit + 1)
    if len(data) > limit:
        raise _UploadTooLargeError(f"{name} is larger than {limit} bytes")
    if not data:
        raise InvalidRequestError(f"the file for {name} is empty")
    return data


def _names(form: MultiDictProxy[Any], name: str) -> list[str]:
    """A comma- or space-separated list field."""
    return [part for part in _text(form, name).replace(",", " ").split() if part]


def _number(form: MultiDictProxy[Any], name: str) -> float:
    text = _text(form, name, limit=32)
    if not text:
        return 0.0
    try:
        value = float(text.replace(",", "."))
    except ValueError:
        raise InvalidRequestError(f"{name} must be a number") from None
    if not math.isfinite(value):
        raise InvalidRequestError(f"{name} must be a number")
    return value


def _whole(form: MultiDictProxy[Any], name: str, *, limit: int) -> int:
    value = _number(form, name)
    if value != int(value) or not 0 <= value <= limit:
        raise InvalidRequestError(f"{name} must be a whole number from 0 to {limit}")
    return int(value)


def _day(form: MultiDictProxy[Any], name: str) -> timestamp_pb2.Timestamp | None:
    text = _text(form, name, limit=32)
    if not text:
        return None
    try:
        day = date.fromisoformat(text)
    except ValueError:
        raise InvalidRequestError(f"{name} must be a date (YYYY-MM-DD)") from None
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(datetime(day.year, day.month, day.day, tzinfo=UTC))
    return stamp


# --- what the pages show --------------------------------------------------------------------


def _at(stamp: timestamp_pb2.Timestamp, present: bool = True) -> datetime | None:
    return from_timestamp(stamp) if present else None


def _member_row(record: registry_pb2.MemberRecord) -> dict[str, Any]:
    return {
        "id": str(MemberId.from_proto(record.id)),
        "name": record.name,
        "created_at": _at(record.created_at),
    }


def _subsystem_row(record: registry_pb2.SubsystemRecord) -> dict[str, Any]:
    return {"id": str(SubsystemId.from_proto(record.id)), "created_at": _at(record.created_at)}


def _server_row(record: registry_pb2.ServerRecord) -> dict[str, Any]:
    return {
        "id": str(ServerId.from_proto(record.id)),
        "address": record.address,
        "audit_address": record.audit_address,
        "auth_cert_sha256": record.auth_cert_sha256,
        "log_key": bool(record.log_public_key),
        "created_at": _at(record.created_at),
    }


def _service_row(record: registry_pb2.ServiceRecord) -> dict[str, Any]:
    return {
        "id": str(ServiceId.from_proto(record.id)),
        "kind": "REST" if record.openapi_size else "gRPC",
        "methods": list(record.methods),
        "description": record.description,
        "citizen_minutes": record.savings.citizen_minutes,
        "paper_forms": record.savings.paper_forms,
    }


def _contract_row(record: registry_pb2.ContractRecord) -> dict[str, Any]:
    return {
        "id": record.contract_id,
        "consumer": str(SubsystemId.from_proto(record.consumer)),
        "service": str(ServiceId.from_proto(record.service)),
        "methods": list(record.methods),
        "purpose": record.purpose,
        "legal_basis": record.legal_basis,
        "valid_from": _at(record.valid_from, record.HasField("valid_from")),
        "valid_until": _at(record.valid_until, record.HasField("valid_until")),
        "state": record.state,
        "rate_limit": record.rate_limit_per_minute,
    }


def _audit_row(record: registry_pb2.AuditRecord) -> dict[str, Any]:
    return {
        "seq": record.seq,
        "at": _at(record.at),
        "actor": record.actor,
        "action": record.action,
        "object_id": record.object_id,
        "after": record.after_json,
    }


# --- the application ------------------------------------------------------------------------


class _Console:
    def __init__(
        self,
        *,
        admin: RegistryAdmin,
        configuration: Callable[[], ConfigurationInForce | None],
        csrf: CsrfTokens,
    ) -> None:
        self._admin = admin
        self._configuration = configuration
        self._csrf = csrf
        self._pages: dict[str, _Show] = {
            "/members": self._members,
            "/subsystems": self._subsystems,
            "/servers": self._servers,
            "/services": self._services,
            "/contracts": self._contracts,
            "/certificates": self._certificates,
            "/audit": self._audit,
            "/configuration": self._configuration_page,
        }

    # -- who is asking ------------------------------------------------------------------------

    async def _visitor(self, request: web.Request) -> _Visitor | web.Response:
        """The request's visitor, or the page that refuses it (no, revoked or roleless
        certificate)."""
        presented = client_certificate(request)
        if presented is None:
            return PAGES.no_certificate(request)
        try:
            caller = await self._admin.authenticate(presented.certificate)
        except PermissionDeniedError as error:
            return PAGES.forbidden(
                request, role=error.role or READER_ROLES, subject=presented.subject
            )
        except RutaError:
            return PAGES.error(
                request,
                status=403,
                heading=messages.REVOKED,
                explanation=messages.REVOKED_EXPLANATION,
                subject=presented.subject,
            )
        return _Visitor(presented, caller, self._csrf.issue(presented.fingerprint))

    def _render(
        self,
        request: web.Request,
        visitor: _Visitor,
        template: str,
        *,
        error: str | None = None,
        status: int = 200,
        **context: Any,
    ) -> web.Response:
        language = language_of(request)
        done = messages.DONE.get(request.query.get("done", ""))
        return PAGES.respond(
            request,
            template,
            status=status,
            who=visitor.caller.name,
            csrf_field=CSRF_FIELD,
            csrf_token=visitor.csrf_token,
            notice=PAGES.gettext(language, done) if done else None,
            error=error,
            refused=PAGES.gettext(language, messages.REFUSED),
            lang=language,
            **context,
        )

    # -- handlers -----------------------------------------------------------------------------

    async def _refused(
        self, request: web.Request, visitor: _Visitor, show: _Show, error: RutaError
    ) -> web.Response:
        """The answer to a refused action: 413 for an upload over its bound, the 403 page
        naming the role for a role refusal, else the page again with the reason."""
        if isinstance(error, _UploadTooLargeError):
            return _too_large(request)
        try:
            if isinstance(error, PermissionDeniedError):
                raise error
            return await show(request, visitor, error=error.message, status=_status(error))
        except PermissionDeniedError as refusal:
            return PAGES.forbidden(
                request, role=refusal.role or READER_ROLES, subject=visitor.certificate.subject
            )
        except RutaError:
            return _not_shown(request, error)

    def page(self, path: str) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        show = self._pages[path]

        async def handle(request: web.Request) -> web.StreamResponse:
            visitor = await self._visitor(request)
            if isinstance(visitor, web.Response):
                return visitor
            try:
                return await show(request, visitor)
            except PermissionDeniedError as error:
                return PAGES.forbidden(
                    request, role=error.role or READER_ROLES, subject=visitor.certificate.subject
                )
            except RutaError as error:
                return _not_shown(request, error)

        return handle

    def action(
        self, path: str, act: _Act
    ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        """A form's handler: refuse without certificate or token, run ``act`` (which returns the
        ``done`` key), redirect to ``path``; on a refusal show ``path``'s page with the reason."""
        show = self._pages[path]

        async def handle(request: web.Request) -> web.StreamResponse:
            visitor = await self._visitor(request)
            if isinstance(visitor, web.Response):
                return visitor
            try:
                form = await request.post()
            except web.HTTPRequestEntityTooLarge:
                return _too_large(request)
            token = form.get(CSRF_FIELD)
            if not self._csrf.check(
                visitor.certificate.fingerprint, token if isinstance(token, str) else None
            ):
                return PAGES.form_expired(request)
            try:
                done = await act(request, visitor, form)
            except RutaError as error:
                return await self._refused(request, visitor, show, error)
            raise web.HTTPSeeOther(f"{path}?done={done}&lang={language_of(request)}")

        return handle

    def add_actions(self, app: web.Application) -> None:
        """The forms' POST routes, each redirecting to (or re-showing) its page."""
        actions: Mapping[str, tuple[str, _Act]] = {
            "/members": ("/members", self._add_member),
            "/subsystems": ("/subsystems", self._add_subsystem),
            "/servers": ("/servers", self._add_server),
            "/services": ("/services", self._add_service),
            "/contracts": ("/contracts", self._request_contract),
            "/contracts/approve": ("/contracts", self._approve_contract),
            "/contracts/revoke": ("/contracts", self._revoke_contract),
            "/certificates": ("/certificates", self._issue_certificate),
            "/certificates/revoke": ("/certificates", self._revoke_certificate),
        }
        for route, (page_path, act) in actions.items():
            app.router.add_post(route, self.action(page_path, act))

    # -- members, subsystems, servers, services --------------------------------------------------

    async def _members(self, request: web.Request, visitor: _Visitor, **shown: Any) -> web.Response:
        listed = await self._admin.ListMembers(
            _list_request(request),
            visitor.caller,
        )
        return self._render(
            request,
            visitor,
            "members.html",
            members=[_member_row(m) for m in listed.members],
            next_page=listed.next_page_token,
            may_add=visitor.caller.is_registry_admin,
            instance=self._admin.instance,
            **shown,
        )

    async def _add_member(
        self, _request: web.Request, visitor: _Visitor, form: MultiDictProxy[Any]
    ) -> str:
        await self._admin.AddMember(
            registry_pb2.AddMemberRequest(
                id=MemberId.parse(_text(form, "id", limit=MAX_IDENTIFIER_CHARS)).to_proto(),
                name=_text(form, "name"),
            ),
            visitor.caller,
        )
        return "member"

    async def _subsystems(
        self, request: web.Request, visitor: _Visitor, **shown: Any
    ) -> web.Response:
        listed = await self._admin.ListSubsystems(
            _list_request(request),
            visitor.caller,
        )
        return self._render(
            request,
            visitor,
            "subsystems.html",
            subsystems=[_subsystem_row(s) for s in listed.subsystems],
            next_page=listed.next_page_token,
            may_add=visitor.caller.is_registry_admin,
            **shown,
        )

    async def _add_subsystem(
        self, _request: web.Request, visitor: _Visitor, form: MultiDictProxy[Any]
    ) -> str:
        await self._admin.AddSubsystem(
            registry_pb2.AddSubsystemRequest(
                id=SubsystemId.parse(_text(form, "id", limit=MAX_IDENTIFIER_CHARS)).to_proto()
            ),
            visitor.caller,
        )
        return "subsystem"

    async def _servers(self, request: web.Request, visitor: _Visitor, **shown: Any) -> web.Response:
        listed = await self._admin.ListServers(
            _list_request(request),
            visitor.caller,
        )
        return self._render(
            request,
            visitor,
            "servers.html",
            servers=[_server_row(s) for s in listed.servers],
            next_page=listed.next_page_token,
            may_add=visitor.caller.is_registry_admin,
            **shown,
        )

    async def _add_server(
        self, _request: web.Request, visitor: _Visitor, form: MultiDictProxy[Any]
    ) -> str:
        await self._admin.AddServer(
            registry_pb2.AddServerRequest(
                id=ServerId.parse(_text(form, "id", limit=MAX_IDENTIFIER_CHARS)).to_proto(),
                address=_text(form, "address", limit=limits.MAX_ADDRESS_LENGTH),
                audit_address=_text(form, "audit_address", limit=limits.MAX_ADDRESS_LENGTH),
                auth_certificate=_file(
                    form, "auth_certificate", limit=limits.MAX_CERTIFICATE_BYTES
                ),
            ),
            visitor.caller,
        )
        return "server"

    async def _services(
        self, request: web.Request, visitor: _Visitor, **shown: Any
    ) -> web.Response:
        listed = await self._admin.ListServices(
            _list_request(request),
            visitor.caller,
        )
        return self._render(
            request,
            visitor,
            "services.html",
            services=[_service_row(s) for s in listed.services],
            next_page=listed.next_page_token,
            may_add=visitor.caller.is_registry_admin,
            max_upload=MAX_UPLOAD_BYTES,
            **shown,
        )

    async def _add_service(
        self, _request: web.Request, visitor: _Visitor, form: MultiDictProxy[Any]
    ) -> str:
        service = ServiceId.parse(_text(form, "id", limit=512))
        savings = globalconf_pb2.Savings(
            citizen_minutes=_number(form, "citizen_minutes"),
            paper_forms=_whole(form, "paper_forms", limit=1_000_000),
        )
        request = registry_pb2.AddServiceRequest(
            id=service.to_proto(), description=_text(form, "description"), savings=savings
        )
        if _text(form, "kind", limit=16) == "openapi":
            request.openapi = _file(form, "description_file", limit=MAX_OPENAPI_BYTES)
        else:
            request.file_descriptor_set = _file(
                form, "description_file", limit=limits.MAX_DESCRIPTOR_SET_BYTES
            )
            request.methods.extend(_names(form, "methods"))
        await self._admin.AddService(request, visitor.caller)
        return "service"

    # -- contracts ----------------------------------------------------------------------------

    async def _contracts(
        self, request: web.Request, visitor: _Visitor, **shown: Any
    ) -> web.Response:
        query = registry_pb2.ListContractsRequest(
            page_size=PAGE_SIZE, page_token=_page_token(request)
        )
        caller = visitor.caller
        # Whose contracts a member's administrator or auditor sees (the service lists one
        # member's at a time for them): the asked one, else the first they may read.
        own = sorted(str(m) for m in caller.read_members)
        member = request.query.get("member", "")[:MAX_IDENTIFIER_CHARS]
        if not member and own and not (caller.is_registry_admin or caller.is_auditor):
            member = own[0]
        if member:
            query.member.CopyFrom(MemberId.parse(member).to_proto())
        listed = await self._admin.ListContracts(query, caller)
        return self._render(
            request,
            visitor,
            "contracts.html",
            contracts=[_contract_row(c) for c in listed.contracts],
            next_page=listed.next_page_token,
            member=member,
            own_members=own if len(own) > 1 else [],
            may_request=caller.is_registry_admin or bool(caller.administered_members),
            may_revoke=caller.is_registry_admin,
            **shown,
        )

    async def _request_contract(
        self, _request: web.Request, visitor: _Visitor, form: MultiDictProxy[Any]
    ) -> str:
        request = registry_pb2.RequestContractRequest(
            consumer=SubsystemId.parse(
                _text(form, "consumer", limit=MAX_IDENTIFIER_CHARS)
            ).to_proto(),
            service=ServiceId.parse(_text(form, "service", limit=512)).to_proto(),
            methods=_names(form, "methods"),
            purpose=_text(form, "purpose"),
            legal_basis=_text(form, "legal_basis"),
            rate_limit_per_minute=_whole(
                form, "rate_limit", limit=limits.MAX_RATE_LIMIT_PER_MINUTE
            ),
        )
        valid_from, valid_until = _day(form, "valid_from"), _day(form, "valid_until")
        if valid_from is not None:
            request.valid_from.CopyFrom(valid_from)
        if valid_until is not None:
            request.valid_until.CopyFrom(valid_until)
        await self._admin.RequestContract(request, visitor.caller)
        return "requested"

    async def _approve_contract(
        self, _request: web.Request, visitor: _Visitor, form: MultiDictProxy[Any]
    ) -> str:
        await self._admin.ApproveContract(
            registry_pb2.ContractRef(contract_id=_text(form, "contract_id", limit=64)),
            visitor.caller,
        )
        return "approved"

    async def _revoke_contract(
        self, _request: web.Request, visitor: _Visitor, form: MultiDictProxy[Any]
    ) -> str:
        await self._admin.RevokeContract(
            registry_pb2.ContractRef(contract_id=_text(form, "contract_id", limit=64)),
            visitor.caller,
        )
        return "revoked"

    # -- certificates, audit trail, configuration ------------------------------------------

    async def _certificates(
        self, request: web.Request, visitor: _Visitor, **shown: Any
    ) -> web.Response:
        if not visitor.caller.is_registry_admin:
            raise PermissionDeniedError(
                "only a registry administrator may issue or revoke certificates",
                role=REGISTRY_ADMIN,
            )
        issued = request.query.get("serial", "")[:64]
        if issued and not all(ch in "0123456789abcdef" for ch in issued):
            issued = ""
        return self._render(
            request,
            visitor,
            "certificates.html",
            profiles=list(_PROFILES),
            reasons=_REASONS,
            issued=issued,
            max_csr=MAX_CSR_BYTES,
            **shown,
        )

    async def _issue_certificate(
        self, request: web.Request, visitor: _Visitor, form: MultiDictProxy[Any]
    ) -> str:
        profile_name = _text(form, "profile", limit=16)
        profile = _PROFILES.get(profile_name)
        if profile is None:
            raise InvalidRequestError("choose a certificate profile")
        issue = registry_pb2.IssueCertificateRequest(
            csr=_file(form, "csr", limit=MAX_CSR_BYTES),
            profile=profile,
            roles=_names(form, "roles"),
            dns_names=_names(form, "dns_names"),
            ip_addresses=_names(form, "ip_addresses"),
        )
        subject = _text(form, "subject", limit=512)
        if profile_name == "auth":
            issue.server.CopyFrom(ServerId.parse(subject).to_proto())
        elif profile_name in ("sign", "gateway"):
            issue.member.CopyFrom(MemberId.parse(subject).to_proto())
        elif profile_name == "subsystem":
            issue.subsystem.CopyFrom(SubsystemId.parse(subject).to_proto())
        elif subject:
            raise InvalidRequestError("a role certificate names roles, not an identifier")
        response = await self._admin.IssueCertificate(issue, visitor.caller)
        serial = format(x509.load_der_x509_certificate(response.certificate).serial_number, "x")
        raise web.HTTPSeeOther(
            f"/certificates?done=issued&serial={serial}&lang={language_of(request)}"
        )

    async def _revoke_certificate(
        self, _request: web.Request, visitor: _Visitor, form: MultiDictProxy[Any]
    ) -> str:
        await self._admin.RevokeCertificate(
            registry_pb2.RevokeCertificateRequest(
                serial=_text(form, "serial", limit=64), reason=_text(form, "reason", limit=64)
            ),
            visitor.caller,
        )
        return "cert-revoked"

    async def download_certificate(self, request: web.Request) -> web.StreamResponse:
        visitor = await self._visitor(request)
        if isinstance(visitor, web.Response):
            return visitor
        try:
            certificate = await self._admin.issued_certificate(
                request.match_info["serial"], visitor.caller
            )
        except PermissionDeniedError as error:
            return PAGES.forbidden(
                request, role=error.role or READER_ROLES, subject=visitor.certificate.subject
            )
        except RutaError as error:
            return _not_shown(request, error)
        serial = format(certificate.serial_number, "x")
        return web.Response(
            body=certificate_pem(certificate),
            content_type="application/x-pem-file",
            headers={
                **SECURITY_HEADERS,
                "Content-Disposition": f'attachment; filename="{serial}.pem"',
                "Cache-Control": "no-store",
            },
        )

    async def _audit(self, request: web.Request, visitor: _Visitor, **shown: Any) -> web.Response:
        after = request.query.get("after", "0")[:20]
        listed = await self._admin.ListAuditTrail(
            registry_pb2.ListAuditRequest(
                page_size=PAGE_SIZE, after_seq=int(after) if after.isdigit() else 0
            ),
            visitor.caller,
        )
        return self._render(
            request,
            visitor,
            "audit.html",
            entries=[_audit_row(e) for e in listed.entries],
            next_page=listed.next_after_seq,
            **shown,
        )

    async def _configuration_page(
        self, request: web.Request, visitor: _Visitor, **shown: Any
    ) -> web.Response:
        # The configuration is public; reading it here still needs a role that reads the
        # registry, as every other page does.
        await self._admin.ListMembers(registry_pb2.ListRequest(page_size=1), visitor.caller)
        return self._render(
            request, visitor, "configuration.html", configuration=self._configuration(), **shown
        )


def _status(error: RutaError) -> int:
    return {
        Fault.CLIENT_NOT_FOUND: 404,
        Fault.CLIENT_ALREADY_EXISTS: 409,
        Fault.CLIENT_MESSAGE_TOO_LARGE: 413,
    }.get(error.fault, 400 if str(error.fault).startswith("client.") else 500)


def _not_shown(request: web.Request, error: RutaError) -> web.Response:
    """The kit's error page with the registry's reason (a page's own query was refused)."""
    return PAGES.error(
        request,
        status=_status(error),
        heading=messages.NOT_SHOWN,
        explanation=messages.NOT_SHOWN_EXPLANATION,
        reason=error.message,
    )


def _too_large(request: web.Request) -> web.Response:
    return PAGES.error(
        request,
        status=413,
        heading=messages.TOO_LARGE,
        explanation=messages.TOO_LARGE_EXPLANATION,
        limit=f"{MAX_FORM_BYTES:,}",
    )


async def _home(request: web.Request) -> web.StreamResponse:
    raise web.HTTPSeeOther(
        "/members" + (f"?{request.query_string}" if request.query_string else "")
    )


def console_app(
    *,
    admin: RegistryAdmin,
    configuration: Callable[[], ConfigurationInForce | None],
    csrf: CsrfTokens | None = None,
) -> web.Application:
    """The console's aiohttp application over ``admin`` (the service the gRPC admin API uses);
    ``configuration`` tells what the node serves now (None before its first publication).
    Request bodies over :data:`MAX_FORM_BYTES` are refused with 413. Serve it over TLS with
    :func:`ruta.web.console_tls_context`, else every page says a certificate is needed."""
    console = _Console(admin=admin, configuration=configuration, csrf=csrf or CsrfTokens())
    app = web.Application(client_max_size=MAX_FORM_BYTES)
    app.router.add_get("/", _home)
    for path in (
        "/members",
        "/subsystems",
        "/servers",
        "/services",
        "/contracts",
        "/certificates",
        "/audit",
        "/configuration",
    ):
        app.router.add_get(path, console.page(path))
    console.add_actions(app)
    app.router.add_get(
        r"/certificates/{serial:[0-9a-fA-F]{1,40}}.pem", console.download_certificate
    )
    add_static_routes(app)
    return app


def _page_token(request: web.Request) -> str:
    """The page a list page asks for (``?after=``), bounded."""
    return request.query.get("after", "")[:MAX_PAGE_TOKEN_CHARS]


def _list_request(request: web.Request) -> registry_pb2.ListRequest:
    """The admin API's list request for one page of a console list."""
    return registry_pb2.ListRequest(page_size=PAGE_SIZE, page_token=_page_token(request))
