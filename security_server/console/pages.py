"""The auditor console's pages (docs/adr/0027): search the message log, a record's signed
header and its proof, export an evidence bundle, verify an uploaded bundle, reconcile two.

Every log of the server is covered (docs/adr/0030): a server run as several nodes or workers
keeps one tree per node and worker, and the audit API lists them (``ListLogs``,
:meth:`AuditServicer.list_logs`). The search picks one by its origin (``log``, this process's
own by default), the record page proves inclusion against that log's own cosigned checkpoint,
and export covers it when this server's key signs it. A ``log`` a link or form names is
accepted only if it is one the listing returns.

Every page needs a browser certificate whose roles read this server's log, checked by the same
service layer as the audit gRPC API (:class:`security_server.audit.AuditServicer`): without a
certificate a page says how to get one (401); with one that lacks the role, a 403 page names
it. Every POST form carries a CSRF token bound to the certificate's fingerprint. Uploads are
bounded (:data:`MAX_UPLOAD_BYTES`) and verified off the event loop, a few at a time.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from aiohttp import BodyPartReader, web

from ruta.checkpoint import CheckpointError, Verifier
from ruta.evidence import ReconcileReport, reconcile, verify_bundle
from ruta.faults import RutaError
from ruta.globalconf import ConfigurationAnchor, GlobalConf
from ruta.ids import ServerId
from ruta.node_logs import node_log_verifier
from ruta.timestamps import to_timestamp
from ruta.v1 import audit_pb2
from ruta.web import CSRF_FIELD, ClientCertificate, CsrfTokens, Pages, add_static_routes
from ruta.web import client_certificate as certificate_of
from security_server.audit import MAX_FILTER_TEXT, AuditError, AuditGrant, AuditServicer
from security_server.callers import CallerIssuerError
from security_server.cluster import MemberLog, log_server
from security_server.console.records import check_inclusion, decode_record

__all__ = [
    "CONSOLE_PAGE_SIZE",
    "LOG_FIELD",
    "MAX_CONCURRENT_VERIFICATIONS",
    "MAX_LOG_ORIGIN_CHARS",
    "MAX_UPLOAD_BYTES",
    "PAGES",
    "AuditConsole",
    "ChosenLog",
    "UnknownLogError",
    "console_app",
]

_HERE: Final = Path(__file__).parent
PAGES: Final = Pages(templates=_HERE / "templates", locale=_HERE / "locale")

#: Records on one page of search results.
CONSOLE_PAGE_SIZE: Final = 50
#: Largest evidence bundle one upload may carry (a bundle of 10,000 records without bodies is a
#: few MiB; with bodies, export fewer records per bundle).
MAX_UPLOAD_BYTES: Final = 64 << 20
#: Largest whole request body (two bundles and the form's small fields).
MAX_REQUEST_BYTES: Final = 2 * MAX_UPLOAD_BYTES + 64 * 1024
#: Largest form without files (the export form: filters and the CSRF token).
MAX_FORM_BYTES: Final = 64 * 1024
#: Most fields and files one multipart form may carry.
MAX_FORM_PARTS: Final = 16
#: Longest small form field read (filters, the CSRF token).
MAX_FORM_FIELD_CHARS: Final = 1024
#: Uploaded bundles verified at once (each on a worker thread); more wait their turn.
MAX_CONCURRENT_VERIFICATIONS: Final = 2
#: The search filters a form or link may carry.
FILTER_FIELDS: Final = ("message_id", "client", "service", "method", "subject", "since", "until")
#: The field (query parameter or form field) naming the log, by origin.
LOG_FIELD: Final = "log"
#: Longest log origin a link or form may name (a server identifier and a node log name).
MAX_LOG_ORIGIN_CHARS: Final = 512
_READ_CHUNK: Final = 64 * 1024
_UNSAFE_FILENAME: Final = re.compile(r"[^A-Za-z0-9._-]+")


class UploadTooLargeError(AuditError):
    """An uploaded bundle over :data:`MAX_UPLOAD_BYTES`."""


class UnknownLogError(AuditError):
    """A ``log`` that is not one of the logs the audit API lists for this server."""


@dataclass(frozen=True, slots=True)
class ChosenLog:
    """The log a page reads (``chosen``) among the server's logs (``logs``, own first)."""

    chosen: MemberLog
    logs: tuple[MemberLog, ...]

    @property
    def origin(self) -> str:
        """The chosen log's origin."""
        return self.chosen.origin


@dataclass(frozen=True, slots=True)
class Auditor:
    """The browser's verified certificate and what it may read on this server."""

    certificate: ClientCertificate
    grant: AuditGrant


@dataclass
class AuditConsole:
    """The console of one server: its audit service layer, the configuration in force (for the
    published log and witness keys), and the anchor bundles are pinned to."""

    servicer: AuditServicer
    server: ServerId
    conf: Callable[[], GlobalConf | None]
    anchor: ConfigurationAnchor | None = None
    csrf: CsrfTokens = field(default_factory=CsrfTokens)
    verifications: asyncio.Semaphore = field(
        default_factory=lambda: asyncio.Semaphore(MAX_CONCURRENT_VERIFICATIONS)
    )

    # --- keys ------------------------------------------------------------------------------

    def keys(self, origin: str = "") -> tuple[Verifier | None, Verifier | None]:
        """The checkpoint key of log ``origin`` (empty: this server's own) as the configuration
        in force publishes it, and the configuration's witness key.

        A server's log is verified with the key the registry publishes for the server; a node
        or worker log (``<server>/<name>``, :mod:`ruta.node_logs`) with that same key under the
        log's own name, as the witness and ``ruta audit verify`` derive it. No key (None) for
        an origin that names no published server."""
        view = self.conf()
        if view is None:
            return None, None
        origin = origin or self.servicer.origin
        server = log_server(origin)
        entry = view.server(server) if server is not None else None
        published = _verifier(entry.log_public_key) if entry is not None else None
        log_key = node_log_verifier(published, origin) if published is not None else None
        witness = _verifier(view.witness_public_key.decode("utf-8", "replace"))
        return log_key, witness

    async def choose_log(self, asked: str) -> ChosenLog:
        """The log named ``asked`` (empty: this process's own) among the logs the audit API
        lists. Raises :class:`UnknownLogError` for any other name."""
        own = self.servicer.origin
        listed = await self.servicer.list_logs()
        first = [m for m in listed if m.origin == own] or [MemberLog(own, 0, exportable=True)]
        logs = (*first, *(m for m in listed if m.origin != own))
        wanted = asked or own
        if len(wanted) <= MAX_LOG_ORIGIN_CHARS:
            for log in logs:
                if log.origin == wanted:
                    return ChosenLog(log, logs)
        raise UnknownLogError(
            f"log {wanted[:80]!r} is not one of this server's logs; choose one from the search "
            "form's list"
        )


def _verifier(vkey: str) -> Verifier | None:
    """The signed-note verifier of ``vkey`` text; None when there is none or it does not parse
    (the record page then says the key is missing: nothing is verified against it)."""
    if not vkey:
        return None
    try:
        return Verifier.from_vkey(vkey)
    except CheckpointError:
        return None


def _asked_log(values: Mapping[str, str]) -> str:
    """The ``log`` a link or form names, cut to one character over its bound (so an overlong
    name is refused, not truncated into another)."""
    return values.get(LOG_FIELD, "")[: MAX_LOG_ORIGIN_CHARS + 1]


def _context(auditor: Auditor, console: AuditConsole) -> dict[str, Any]:
    return {
        "csrf_field": CSRF_FIELD,
        "csrf_token": console.csrf.issue(auditor.certificate.fingerprint),
        "who": auditor.certificate.subject,
        "server": str(console.server),
        "bodies": auditor.grant.bodies,
    }


def _refused(request: web.Request, error: RutaError, *, status: int = 400) -> web.Response:
    return PAGES.respond(request, "refused.html", status=status, reason=error.message)


def _filter_of(values: dict[str, str]) -> audit_pb2.AuditFilter:
    """The audit filter of a form's values; ``since``/``until`` are ISO times, UTC unless they
    say otherwise. Raises :class:`AuditError` for a value over its bound or a bad time."""
    filt = audit_pb2.AuditFilter()
    for name in ("message_id", "client", "service", "method", "subject"):
        text = values.get(name, "").strip()
        if len(text) > MAX_FILTER_TEXT:
            raise AuditError(f"the {name} filter is longer than {MAX_FILTER_TEXT} characters")
        setattr(filt, name, text)
    for name in ("since", "until"):
        text = values.get(name, "").strip()
        if not text:
            continue
        try:
            moment = datetime.fromisoformat(text[:MAX_FILTER_TEXT])
        except ValueError:
            raise AuditError(f"the {name} filter is not a date and time") from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        getattr(filt, name).CopyFrom(to_timestamp(moment))
    return filt


def _query_values(request: web.Request) -> dict[str, str]:
    return {name: request.query.get(name, "")[:MAX_FORM_FIELD_CHARS] for name in FILTER_FIELDS}


async def _read_form(
    request: web.Request, console: AuditConsole, auditor: Auditor
) -> tuple[dict[str, str], dict[str, tuple[str, bytes]]] | web.Response:
    """The fields and uploaded files of a POST form, once its CSRF token (which every form
    sends first) matches the certificate's; a refusal page otherwise. Raises
    :class:`UploadTooLargeError` for a file over :data:`MAX_UPLOAD_BYTES`."""
    multipart = request.content_type == "multipart/form-data"
    # Browsers send the length of every form; a body without one is not read at all.
    limit = MAX_REQUEST_BYTES if multipart else MAX_FORM_BYTES
    if request.content_length is None or request.content_length > limit:
        raise UploadTooLargeError(f"an upload is at most {MAX_UPLOAD_BYTES // (1 << 20)} MiB")
    values: dict[str, str] = {}
    files: dict[str, tuple[str, bytes]] = {}
    checked = False
    if multipart:
        reader = await request.multipart()
        parts = 0
        while (part := await reader.next()) is not None:
            parts += 1
            if not isinstance(part, BodyPartReader) or part.name is None or parts > MAX_FORM_PARTS:
                return PAGES.form_expired(request)
            if not checked and part.name != CSRF_FIELD:
                return PAGES.form_expired(request)
            if part.filename is not None:
                files[part.name] = (part.filename, await _read_file(part))
                continue
            text = (await part.read_chunk(MAX_FORM_FIELD_CHARS + 1)).decode("utf-8", "replace")
            values[part.name] = text[:MAX_FORM_FIELD_CHARS]
            if part.name == CSRF_FIELD:
                if not console.csrf.check(auditor.certificate.fingerprint, text):
                    return PAGES.form_expired(request)
                checked = True
    else:
        posted = await request.post()
        values = {k: str(v)[:MAX_FORM_FIELD_CHARS] for k, v in posted.items() if isinstance(v, str)}
        checked = console.csrf.check(auditor.certificate.fingerprint, values.get(CSRF_FIELD))
    if not checked:
        return PAGES.form_expired(request)
    return values, files


async def _read_file(part: BodyPartReader) -> bytes:
    data = bytearray()
    while chunk := await part.read_chunk(_READ_CHUNK):
        data += chunk
        if len(data) > MAX_UPLOAD_BYTES:
            raise UploadTooLargeError(f"an upload is at most {MAX_UPLOAD_BYTES // (1 << 20)} MiB")
    return bytes(data)


Handler = Callable[[web.Request, AuditConsole, Auditor], Awaitable[web.StreamResponse]]


async def _caller_refused(
    request: web.Request, console: AuditConsole, certificate: ClientCertificate
) -> web.Response | None:
    """The refusal page when the service layer does not honour ``certificate``'s roles (not
    the role CA's: forbidden; revoked or its status unknown: revoked), else None."""
    try:
        await console.servicer.check_caller(certificate.certificate)
    except CallerIssuerError:
        # Roles from a CA other than the instance's role CA are no roles at all.
        return PAGES.forbidden(
            request, role=console.servicer.roles_needed, subject=certificate.subject
        )
    except RutaError:
        return PAGES.revoked(request, subject=certificate.subject)
    return None


def _as_auditor(
    console: AuditConsole, handler: Handler
) -> Callable[..., Awaitable[web.StreamResponse]]:
    """``handler`` behind the console's authentication: a certificate, a role that reads this
    log and a certificate not revoked (the audit service layer's own checks), and refusal pages
    otherwise."""

    async def authenticated(request: web.Request) -> web.StreamResponse:
        certificate = certificate_of(request)
        if certificate is None:
            return PAGES.no_certificate(request)
        try:
            grant = console.servicer.grant_for(certificate.roles)
        except AuditError:
            return PAGES.forbidden(
                request, role=console.servicer.roles_needed, subject=certificate.subject
            )
        refused = await _caller_refused(request, console, certificate)
        if refused is not None:
            return refused
        try:
            return await handler(request, console, Auditor(certificate, grant))
        except UploadTooLargeError as exc:
            return _refused(request, exc, status=413)
        except RutaError as exc:
            return _refused(request, exc)

    return authenticated


# --- pages ---------------------------------------------------------------------------------


async def _search(request: web.Request, console: AuditConsole, auditor: Auditor) -> web.Response:
    values = _query_values(request)
    log = await console.choose_log(_asked_log(request.query))
    after = request.query.get("after", "")[:MAX_FORM_FIELD_CHARS]
    searched = any(values.values()) or "search" in request.query
    records: list[audit_pb2.AuditLogRecord] = []
    next_token = ""
    if searched:
        page = await console.servicer.query(
            auditor.grant,
            _filter_of(values),
            page_size=CONSOLE_PAGE_SIZE,
            page_token=after,
            origin=log.origin,
        )
        records = list(page.records)
        next_token = page.next_page_token
    next_query = {
        **{k: v for k, v in values.items() if v},
        LOG_FIELD: log.origin,
        "search": "1",
        "after": next_token,
    }
    return PAGES.respond(
        request,
        "search.html",
        **_context(auditor, console),
        values=values,
        searched=searched,
        records=[(r, r.logged_at.ToDatetime(tzinfo=UTC)) for r in records],
        next_query=next_query if next_token else None,
        page_size=CONSOLE_PAGE_SIZE,
        log=log,
        log_field=LOG_FIELD,
    )


async def _record(request: web.Request, console: AuditConsole, auditor: Auditor) -> web.Response:
    text = request.match_info["seq"]
    if not text.isascii() or not text.isdigit() or len(text) > 19:
        raise AuditError("a record is named by its sequence number")
    seq = int(text)
    log = await console.choose_log(_asked_log(request.query))
    response = await console.servicer.proven_records(
        auditor.grant, [seq], include_bodies=False, origin=log.origin
    )
    if not response.records:
        return PAGES.respond(
            request,
            "pending.html",
            status=404,
            **_context(auditor, console),
            sequence=seq,
            size=response.checkpoint.size,
            log=log,
        )
    proven = response.records[0]
    log_key, witness = console.keys(log.origin)
    check = check_inclusion(
        proven.record,
        list(proven.inclusion_proof),
        response.checkpoint,
        log_key=log_key,
        witness=witness,
    )
    return PAGES.respond(
        request,
        "record.html",
        **_context(auditor, console),
        record=proven.record,
        decoded=decode_record(proven.record.record),
        check=check,
        log=log,
    )


async def _export(
    request: web.Request, console: AuditConsole, auditor: Auditor
) -> web.StreamResponse:
    form = await _read_form(request, console, auditor)
    if isinstance(form, web.Response):
        return form
    values, _ = form
    log = await console.choose_log(_asked_log(values))
    if not log.chosen.exportable:
        raise AuditError(
            f"log {log.origin!r} is signed with another server's key; export it from that "
            "server's console"
        )
    export = audit_pb2.ExportEvidenceRequest(
        filter=_filter_of(values), include_bodies=auditor.grant.bodies, origin=log.origin
    )
    bundle = await console.servicer.export(auditor.grant, export)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    name = _UNSAFE_FILENAME.sub("-", f"evidence-{log.origin}-{stamp}.zip")
    response = web.Response(body=bundle, content_type="application/zip")
    response.headers["Content-Disposition"] = f'attachment; filename="{name}"'
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


async def _verify_form(
    request: web.Request, console: AuditConsole, auditor: Auditor
) -> web.Response:
    return PAGES.respond(request, "verify.html", **_context(auditor, console), report=None)


async def _verify(request: web.Request, console: AuditConsole, auditor: Auditor) -> web.Response:
    form = await _read_form(request, console, auditor)
    if isinstance(form, web.Response):
        return form
    _, files = form
    if "bundle" not in files or not files["bundle"][1]:
        raise AuditError("choose an evidence bundle to upload")
    name, data = files["bundle"]
    async with console.verifications:
        report = await asyncio.to_thread(
            verify_bundle, data, anchor=console.anchor, name=name[:MAX_FORM_FIELD_CHARS]
        )
    return PAGES.respond(
        request,
        "verify.html",
        status=200 if report.ok else 422,
        **_context(auditor, console),
        report=report,
        text=report.text(),
    )


async def _reconcile_form(
    request: web.Request, console: AuditConsole, auditor: Auditor
) -> web.Response:
    return PAGES.respond(request, "reconcile.html", **_context(auditor, console), result=None)


async def _reconcile(request: web.Request, console: AuditConsole, auditor: Auditor) -> web.Response:
    form = await _read_form(request, console, auditor)
    if isinstance(form, web.Response):
        return form
    _, files = form
    if any(not files.get(side, ("", b""))[1] for side in ("a", "b")):
        raise AuditError("choose both evidence bundles to upload")
    (name_a, a), (name_b, b) = files["a"], files["b"]

    def run() -> ReconcileReport:
        return reconcile(
            verify_bundle(a, anchor=console.anchor, name=name_a[:MAX_FORM_FIELD_CHARS]),
            verify_bundle(b, anchor=console.anchor, name=name_b[:MAX_FORM_FIELD_CHARS]),
        )

    async with console.verifications:
        result = await asyncio.to_thread(run)
    return PAGES.respond(
        request,
        "reconcile.html",
        status=200 if result.ok else 422,
        **_context(auditor, console),
        result=result,
        text=result.text(),
    )


def console_app(console: AuditConsole) -> web.Application:
    """The console's aiohttp application (serve it over TLS with
    :func:`ruta.web.console_tls_context`)."""
    app = web.Application(client_max_size=MAX_REQUEST_BYTES)
    routes = (
        ("GET", "/", _search),
        ("GET", "/records/{seq}", _record),
        ("POST", "/export", _export),
        ("GET", "/verify", _verify_form),
        ("POST", "/verify", _verify),
        ("GET", "/reconcile", _reconcile_form),
        ("POST", "/reconcile", _reconcile),
    )
    for method, path, handler in routes:
        app.router.add_route(method, path, _as_auditor(console, handler))
    add_static_routes(app)
    return app
