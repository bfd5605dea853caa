"""The ``ruta-*`` call metadata a backend sends, and the :class:`MessageHeader` built from it.

A consumer backend calls the provider's real method path (``/pkg.Service/Method``) on its own
security server with ``ruta-*`` metadata (DESIGN.md "How one request travels", step 1). This
module reads that metadata with named bounds into a :class:`CallMetadata`, builds the request
:class:`~ruta.v1.transport_pb2.MessageHeader` and serialises it **once** (the bytes that are signed
are the bytes that travel), parses received header bytes back with bounds, and writes the
``ruta-*`` metadata the provider hands its backend.

Every refusal is a :class:`HeaderError` carrying a stable fault code: a missing ``ruta-client``,
``ruta-service`` or ``ruta-purpose`` is ``client.missing_header``, an identifier that does not
parse is ``client.invalid_identifier``, anything else malformed is ``client.invalid_header``.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final, TypeVar

from google.protobuf.message import DecodeError, Message

from ruta.call_metadata import (
    CLIENT_HEADER,
    MESSAGE_ID_HEADER,
    PURPOSE_HEADER,
    REQUEST_HASH_HEADER,
    SERVICE_HEADER,
    SUBJECT_HEADER,
    USER_ID_HEADER,
)
from ruta.faults import Fault
from ruta.ids import (
    MAX_IDENTIFIER_LENGTH,
    IdentifierError,
    ServerId,
    ServiceId,
    SubsystemId,
    id_text,
)
from ruta.memo import memo_by_identity, remember
from ruta.timestamps import from_timestamp, timestamp_parts
from ruta.v1 import transport_pb2
from security_server.errors import HeaderError, MalformedMessageError

__all__ = [
    "CLIENT_HEADER",
    "DEFAULT_MAX_METADATA_BYTES",
    "DEFAULT_MAX_METADATA_ENTRIES",
    "MAX_HEADER_BYTES",
    "MAX_METHOD_LENGTH",
    "MAX_PATH_LENGTH",
    "MAX_PURPOSE_LENGTH",
    "MAX_SUBJECT_LENGTH",
    "MAX_USER_ID_LENGTH",
    "MESSAGE_ID_HEADER",
    "PURPOSE_HEADER",
    "REQUEST_HASH_HEADER",
    "SERVICE_HEADER",
    "SUBJECT_HEADER",
    "USER_ID_HEADER",
    "CallMetadata",
    "HeaderError",
    "MetadataBounds",
    "MethodPath",
    "ReadHeader",
    "build_request_header",
    "build_response_header",
    "canonical_uuid",
    "id_text",
    "metadata_for_backend",
    "new_message_id",
    "parse_call_metadata",
    "parse_method_path",
    "read_header",
    "request_hash",
]

_RUTA_PREFIX: Final = "ruta-"
_KNOWN: Final = frozenset(
    {
        CLIENT_HEADER,
        SERVICE_HEADER,
        PURPOSE_HEADER,
        USER_ID_HEADER,
        SUBJECT_HEADER,
        MESSAGE_ID_HEADER,
    }
)

#: Default bound on the number of metadata entries of one call (settings may change it).
DEFAULT_MAX_METADATA_ENTRIES: Final = 64
#: Default bound on the summed size of metadata keys and values of one call.
DEFAULT_MAX_METADATA_BYTES: Final = 16 * 1024
#: Longest purpose code (``ruta-purpose``).
MAX_PURPOSE_LENGTH: Final = 128
#: Longest acting-official identifier (``ruta-user-id``).
MAX_USER_ID_LENGTH: Final = 256
#: Longest data-subject identifier (``ruta-subject``).
MAX_SUBJECT_LENGTH: Final = 256
#: Longest gRPC method name.
MAX_METHOD_LENGTH: Final = 128
#: Longest method path ``/pkg.Service/Method`` read at all.
MAX_PATH_LENGTH: Final = 256
_UUID_LENGTH: Final = 36
#: Largest serialised MessageHeader accepted from a peer (a real one is well under 2 KiB).
MAX_HEADER_BYTES: Final = 8 * 1024

_M = TypeVar("_M", bound=Message)

_METHOD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# A UUID in its canonical lower-case form (every such string is a UUID).
_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
# Printable ASCII without controls; what gRPC ASCII metadata may carry anyway.
_TEXT = re.compile(r"[\x20-\x7e]*")


@dataclass(frozen=True, slots=True)
class MetadataBounds:
    """Bounds on the metadata of one call (from settings)."""

    max_entries: int = DEFAULT_MAX_METADATA_ENTRIES
    max_bytes: int = DEFAULT_MAX_METADATA_BYTES


@dataclass(frozen=True, slots=True)
class MethodPath:
    """A gRPC method path ``/pkg.Service/Method`` split into its two names."""

    service_name: str
    method: str

    def __str__(self) -> str:
        return f"/{self.service_name}/{self.method}"


@dataclass(slots=True)
class CallMetadata:
    """What a consumer backend asked for, read from its method path and ``ruta-*`` metadata.

    Not frozen, though nothing changes one once read: one is made per call, and a frozen
    dataclass's ``__init__`` sets each of these eight fields through ``object.__setattr__``
    (about twice a plain one's time)."""

    client: SubsystemId
    service: ServiceId
    method: str
    purpose: str
    user_id: str
    subject: str
    message_id: str
    #: Whether the caller named the message id (``ruta-message-id``); otherwise this server
    #: made it (:func:`new_message_id`), a UUID with 74 random bits that no earlier request
    #: can carry.
    message_id_from_caller: bool = False

    @property
    def path(self) -> str:
        return f"/{self.service.service_name}/{self.method}"


#: Method paths remembered once checked (a server sees few distinct ones).
MAX_CACHED_METHOD_PATHS: Final = 1024


@functools.lru_cache(maxsize=MAX_CACHED_METHOD_PATHS)
def parse_method_path(path: str) -> MethodPath:
    """Split ``/pkg.Service/Method``; raise :class:`HeaderError` (``client.invalid_header``)."""
    if len(path) > MAX_PATH_LENGTH:
        raise HeaderError(f"method path is longer than {MAX_PATH_LENGTH} characters")
    parts = path.split("/")
    if len(parts) != 3 or parts[0]:
        raise HeaderError("method path must have the form /package.Service/Method")
    _, service_name, method = parts
    try:
        # The service name follows the identifier part grammar (it is part of a ServiceId).
        SubsystemId.parse("X/X/X/X").service(service_name)
    except IdentifierError:
        raise HeaderError(
            f"service name {service_name[:80]!r} in the method path is not a valid service name"
        ) from None
    if len(method) > MAX_METHOD_LENGTH or not _METHOD.fullmatch(method):
        raise HeaderError(f"method name {method[:80]!r} is not a valid gRPC method name")
    return MethodPath(service_name=service_name, method=method)


def _text(name: str, value: str | bytes, limit: int) -> str:
    if isinstance(value, bytes):
        raise HeaderError(f"{name} must be text metadata, not binary")
    if len(value) > limit:
        raise HeaderError(f"{name} is longer than {limit} characters")
    if not _TEXT.fullmatch(value):
        raise HeaderError(f"{name} may only contain printable ASCII characters")
    return value


def canonical_uuid(text: str) -> str | None:
    """``text`` as a UUID in its canonical 36-character form (lower case), or None when it is
    not one in that form (any case)."""
    if len(text) != _UUID_LENGTH:
        return None
    try:
        parsed = str(uuid.UUID(text))
    except ValueError:
        return None
    return parsed if parsed == text.lower() else None


def new_message_id() -> str:
    """A new message id: a version 7 UUID (RFC 9562), the Unix time in milliseconds then 74
    random bits, in its canonical form, without building a :class:`uuid.UUID`. As unguessable
    and as unlikely to repeat as a random (version 4) one among the ids of one millisecond,
    and ordered by time, so the message-id index of the log that records it grows at its end
    instead of at a random page: at concurrency 64 the random one's inserts were half the
    log's write-ahead-log pages (ADR 0044; bench/README.md, "Seventh round (branch
    perf-keys)"). The time it shows is the header's ``created_at`` anyway."""
    raw = bytearray((time.time_ns() // 1_000_000).to_bytes(6, "big") + os.urandom(10))
    raw[6] = (raw[6] & 0x0F) | 0x70  # version 7
    raw[8] = (raw[8] & 0x3F) | 0x80  # the RFC 9562 variant
    text = raw.hex()
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


def _message_id(value: str | bytes | None) -> str:
    if value is None:
        return new_message_id()
    text = _text(MESSAGE_ID_HEADER, value, _UUID_LENGTH)
    try:
        uuid.UUID(text)
    except ValueError:
        raise HeaderError(
            f"{MESSAGE_ID_HEADER} must be a UUID such as {uuid.UUID(int=0)}"
        ) from None
    parsed = canonical_uuid(text)
    if parsed is None:
        raise HeaderError(f"{MESSAGE_ID_HEADER} must be a UUID in its canonical 36-character form")
    return parsed


def _purpose(value: str | bytes | None) -> str:
    """Every contract names a purpose (the registry refuses one without), so a call without one
    could only be refused by the contract check: say what is missing instead."""
    if value is None or value == "":
        raise HeaderError(
            f"{PURPOSE_HEADER} is required: name the contract's purpose (or its contract id)",
            fault=Fault.CLIENT_MISSING_HEADER,
        )
    return _text(PURPOSE_HEADER, value, MAX_PURPOSE_LENGTH)


#: Identifiers remembered once read, by their text or wire form (a server sees few distinct
#: ones; the oldest goes first when full). Identifiers are immutable, and only ones that parsed
#: are kept, so a lookup returns what parsing again would.
MAX_CACHED_IDENTIFIERS: Final = 4096

_K = TypeVar("_K")
_I = TypeVar("_I")


def _remember(cache: dict[_K, _I], key: _K, value: _I) -> _I:
    return remember(cache, key, value, maxsize=MAX_CACHED_IDENTIFIERS)


_SUBSYSTEMS: dict[str, SubsystemId] = {}
_SERVICES: dict[str, ServiceId] = {}
# By ``ruta-service`` naming the subsystem and the service name of the method path.
_SUBSYSTEM_SERVICES: dict[tuple[str, str], ServiceId] = {}


def _parse_subsystem(text: str) -> SubsystemId:
    """``SubsystemId.parse(text)``, remembered."""
    found = _SUBSYSTEMS.get(text)
    return found if found is not None else _remember(_SUBSYSTEMS, text, SubsystemId.parse(text))


def _parse_service(text: str) -> ServiceId:
    """``ServiceId.parse(text)``, remembered."""
    found = _SERVICES.get(text)
    return found if found is not None else _remember(_SERVICES, text, ServiceId.parse(text))


def _subsystem_service(text: str, service_name: str) -> ServiceId:
    """``SubsystemId.parse(text).service(service_name)``, remembered."""
    key = (text, service_name)
    found = _SUBSYSTEM_SERVICES.get(key)
    if found is None:
        found = _remember(_SUBSYSTEM_SERVICES, key, _parse_subsystem(text).service(service_name))
    return found


def _client(value: str | bytes | None) -> SubsystemId:
    if value is None:
        raise HeaderError(
            f"the {CLIENT_HEADER} metadata entry is required", fault=Fault.CLIENT_MISSING_HEADER
        )
    text = _text(CLIENT_HEADER, value, MAX_IDENTIFIER_LENGTH)
    try:
        return _parse_subsystem(text)
    except IdentifierError as exc:
        raise IdentifierError(f"{CLIENT_HEADER}: {exc.message}") from None


def _service(value: str | bytes | None, path: MethodPath) -> ServiceId:
    """``ruta-service`` names the provider subsystem (the service name comes from the path); a
    full service identifier is accepted too when its service name equals the path's."""
    if value is None:
        raise HeaderError(
            f"the {SERVICE_HEADER} metadata entry is required", fault=Fault.CLIENT_MISSING_HEADER
        )
    text = _text(SERVICE_HEADER, value, MAX_IDENTIFIER_LENGTH)
    try:
        if text.count("/") == 4:
            service = _parse_service(text)
            if service.service_name != path.service_name:
                raise HeaderError(
                    f"{SERVICE_HEADER} names service {service.service_name!r} but the call is "
                    f"for {path.service_name!r}"
                )
            return service
        return _subsystem_service(text, path.service_name)
    except IdentifierError as exc:
        raise IdentifierError(f"{SERVICE_HEADER}: {exc.message}") from None


#: Calls read before, by method path, bounds and metadata entries (what a backend sends is
#: mostly the same from one call to the next): only calls that named no message id, data subject
#: or user id (those differ from call to call, and are not kept in memory), so only the fresh
#: message id differs. Each entry keeps its metadata (at most ``max_metadata_bytes``), so only
#: calls whose every entry is a ``ruta-*`` one or gRPC's ``user-agent`` are kept: whatever else a
#: backend sends (a bearer token, a cookie, a ``-bin`` entry) is never held past its call.
MAX_CACHED_CALLS: Final = 256
#: Entries other than ``ruta-*`` that a remembered call may carry.
_REMEMBERED_FOREIGN: Final = frozenset({"user-agent"})
_CALLS: dict[
    tuple[str, int, int, tuple[tuple[str, str | bytes], ...]],
    tuple[SubsystemId, ServiceId, str, str],
] = {}


def parse_call_metadata(
    path: str,
    metadata: Iterable[tuple[str, str | bytes]],
    *,
    bounds: MetadataBounds = MetadataBounds(),
) -> CallMetadata:
    """Read the method path and the ``ruta-*`` metadata of one consumer call.

    Unknown ``ruta-*`` keys and repeated ``ruta-*`` keys are refused (``client.invalid_header``);
    other metadata is counted against the bounds and otherwise ignored. A missing
    ``ruta-message-id`` gets a fresh UUID. Raises :class:`HeaderError` or
    :class:`~ruta.ids.IdentifierError`; nothing else.

    A call whose path and metadata (a tuple, as the gRPC layer gives it) equal those of an earlier
    call that parsed and named no message id, subject or user id, and carried no entry but
    ``ruta-*`` ones and ``user-agent``, is answered from :data:`_CALLS` with a fresh message id:
    the same result, without reading every entry again. Refused calls are never kept.
    """
    key = None
    if type(metadata) is tuple:
        key = (path, bounds.max_entries, bounds.max_bytes, metadata)
        try:
            known = _CALLS.get(key)
        except TypeError:  # an entry that cannot be a key: read it the long way
            known = key = None
        if known is not None:
            client, service, method, purpose = known
            return CallMetadata(
                client=client,
                service=service,
                method=method,
                purpose=purpose,
                user_id="",
                subject="",
                message_id=new_message_id(),
            )
    call = _parse_call_metadata(path, metadata, bounds)
    if (
        key is not None
        and not call.message_id_from_caller
        and not call.subject
        and not call.user_id
        and all(k.startswith(_RUTA_PREFIX) or k in _REMEMBERED_FOREIGN for k, _ in metadata)
    ):
        remember(
            _CALLS,
            key,
            (call.client, call.service, call.method, call.purpose),
            maxsize=MAX_CACHED_CALLS,
        )
    return call


def _parse_call_metadata(
    path: str, metadata: Iterable[tuple[str, str | bytes]], bounds: MetadataBounds
) -> CallMetadata:
    method_path = parse_method_path(path)
    found: dict[str, str | bytes] = {}
    entries = 0
    size = 0
    for key, value in metadata:
        entries += 1
        size += len(key) + len(value)
        if entries > bounds.max_entries:
            raise HeaderError(f"the call carries more than {bounds.max_entries} metadata entries")
        if size > bounds.max_bytes:
            raise HeaderError(f"the call's metadata is larger than {bounds.max_bytes} bytes")
        if not key.startswith(_RUTA_PREFIX):
            continue
        if key not in _KNOWN:
            raise HeaderError(f"unknown metadata entry {key[:64]!r}; known: {sorted(_KNOWN)}")
        if key in found:
            raise HeaderError(f"metadata entry {key} appears more than once")
        found[key] = value
    client = _client(found.get(CLIENT_HEADER))
    service = _service(found.get(SERVICE_HEADER), method_path)
    return CallMetadata(
        client=client,
        service=service,
        method=method_path.method,
        purpose=_purpose(found.get(PURPOSE_HEADER)),
        user_id=_text(USER_ID_HEADER, found.get(USER_ID_HEADER, ""), MAX_USER_ID_LENGTH),
        subject=_text(SUBJECT_HEADER, found.get(SUBJECT_HEADER, ""), MAX_SUBJECT_LENGTH),
        message_id=_message_id(found.get(MESSAGE_ID_HEADER)),
        message_id_from_caller=MESSAGE_ID_HEADER in found,
    )


# The wire form of an identifier, made once per identifier object (the identifiers of a call are
# the remembered ones above, this server's and the configuration's). Never mutated: a message
# constructor copies a sub-message it is given.
_subsystem_proto = memo_by_identity(SubsystemId.to_proto, maxsize=MAX_CACHED_IDENTIFIERS)
_service_proto = memo_by_identity(ServiceId.to_proto, maxsize=MAX_CACHED_IDENTIFIERS)
_server_proto = memo_by_identity(ServerId.to_proto, maxsize=MAX_CACHED_IDENTIFIERS)


#: Request headers' fixed fields (kind, client, service, method, purpose, sender, receiver)
#: set once per such set, by the identifier objects (checked with ``is``, so an id is never
#: mistaken) and the method and purpose: what a backend asks for is mostly the same from one
#: call to the next. Never mutated (copied into each header); never holds a message id, user
#: id, data subject or body digest (set per call). The oldest goes first when full.
MAX_REQUEST_TEMPLATES: Final = 256
_REQUEST_TEMPLATES: dict[
    tuple[int, int, str, str, int, int],
    tuple[SubsystemId, ServiceId, ServerId, ServerId, transport_pb2.MessageHeader],
] = {}


def _held_template(
    entry: tuple[SubsystemId, ServiceId, ServerId, ServerId, transport_pb2.MessageHeader] | None,
    client: SubsystemId,
    service: ServiceId,
    sender: ServerId,
    receiver: ServerId,
) -> transport_pb2.MessageHeader | None:
    """The template of a request or response template ``entry`` made for exactly these
    identifier objects (checked with ``is``: keys are their ``id``s), else ``None``."""
    if (
        entry is not None
        and entry[0] is client
        and entry[1] is service
        and entry[2] is sender
        and entry[3] is receiver
    ):
        return entry[4]
    return None


def _request_template(
    call: CallMetadata, sender: ServerId, receiver: ServerId
) -> transport_pb2.MessageHeader:
    client, service = call.client, call.service
    key = (id(client), id(service), call.method, call.purpose, id(sender), id(receiver))
    found = _held_template(_REQUEST_TEMPLATES.get(key), client, service, sender, receiver)
    if found is not None:
        return found
    template = transport_pb2.MessageHeader(
        kind=transport_pb2.MESSAGE_KIND_REQUEST,
        client=_subsystem_proto(client),
        service=_service_proto(service),
        method=call.method,
        purpose=call.purpose,
        sender=_server_proto(sender),
        receiver=_server_proto(receiver),
    )
    remember(
        _REQUEST_TEMPLATES,
        key,
        (client, service, sender, receiver, template),
        maxsize=MAX_REQUEST_TEMPLATES,
    )
    return template


def build_request_header(
    call: CallMetadata,
    *,
    body: bytes,
    sender: ServerId,
    receiver: ServerId,
    created_at: datetime,
) -> tuple[transport_pb2.MessageHeader, bytes]:
    """Build the request header and serialise it once; the returned bytes are what is signed,
    sent and logged (never re-serialised). Its fixed fields are copied from a remembered
    template (one C-level copy instead of four identifier sub-messages and their fields set
    from Python); the serialisation is deterministic, so the bytes do not depend on how the
    fields were set."""
    header = transport_pb2.MessageHeader()
    header.CopyFrom(_request_template(call, sender, receiver))
    header.message_id = call.message_id
    if call.user_id:
        header.user_id = call.user_id
    if call.subject:
        header.subject = call.subject
    header.body_sha256 = hashlib.sha256(body).digest()
    # timestamp_parts counts from the epoch in any time zone: no conversion to UTC first.
    stamp = header.created_at
    stamp.seconds, stamp.nanos = timestamp_parts(created_at)
    return header, header.SerializeToString(deterministic=True)


#: Response headers' fixed fields (kind, client, service, method, purpose, sender, receiver)
#: set once per request identifiers, method and purpose (as :data:`_REQUEST_TEMPLATES`), by the
#: identifier objects :func:`read_header` gave (checked with ``is``); the identifiers' sub-messages
#: are parsed from the exact bytes each identifier was read from, so unknown fields in them are
#: echoed as a copy of the request's would. Never holds a per-call field. The oldest goes first.
#: Like every memo of this module, used from the event loop's thread only (not thread-safe).
MAX_RESPONSE_TEMPLATES: Final = 256
_RESPONSE_TEMPLATES: dict[
    tuple[int, int, int, int, str, str],
    tuple[SubsystemId, ServiceId, ServerId, ServerId, transport_pb2.MessageHeader],
] = {}


def _response_template(read: ReadHeader) -> transport_pb2.MessageHeader | None:
    """The fixed fields of the response to ``read``; ``None`` when one of its identifiers was
    not made by :func:`read_header` (its bytes are not known)."""
    request = read.header
    client, service, sender, receiver = read.client, read.service, read.sender, read.receiver
    method, purpose = request.method, request.purpose
    key = (id(client), id(service), id(sender), id(receiver), method, purpose)
    found = _held_template(_RESPONSE_TEMPLATES.get(key), client, service, sender, receiver)
    if found is not None:
        return found
    wires = [_read_wire(identifier) for identifier in (client, service, sender, receiver)]
    if not all(wires):
        return None
    template = transport_pb2.MessageHeader(
        kind=transport_pb2.MESSAGE_KIND_RESPONSE, method=method, purpose=purpose
    )
    template.client.ParseFromString(wires[0])
    template.service.ParseFromString(wires[1])
    template.sender.ParseFromString(wires[3])  # the request's receiver answers
    template.receiver.ParseFromString(wires[2])
    remember(
        _RESPONSE_TEMPLATES,
        key,
        (client, service, sender, receiver, template),
        maxsize=MAX_RESPONSE_TEMPLATES,
    )
    return template


def build_response_header(
    request: transport_pb2.MessageHeader | ReadHeader,
    *,
    request_digest: bytes,
    body: bytes,
    status_code: int,
    fault: Fault | None,
    created_at: datetime,
    backend_fault: str = "",
    backend_fault_id: str = "",
) -> tuple[transport_pb2.MessageHeader, bytes]:
    """Build the response header bound to ``request`` by ``request_digest`` (see
    :func:`request_hash`); sender and receiver are the request's, swapped. ``backend_fault``
    and ``backend_fault_id`` are a backend's checked fault code and id (docs/adr/0024).
    ``request`` is the request's header, or what :func:`read_header` read from it: then the
    fixed fields are copied from a remembered template (one C-level copy; the same bytes)."""
    if isinstance(request, ReadHeader):
        read, request = request, request.header
        template = _response_template(read)
        if template is not None:
            header = transport_pb2.MessageHeader()
            header.CopyFrom(template)
            header.message_id = request.message_id
            # Empty text and a zero status are the fields' defaults (not on the wire either
            # way): set only when there is something to set, the same bytes.
            user_id, subject = request.user_id, request.subject
            if user_id:
                header.user_id = user_id
            if subject:
                header.subject = subject
            header.body_sha256 = hashlib.sha256(body).digest()
            header.request_hash = request_digest
            if status_code:
                header.status_code = status_code
            if fault is not None:
                header.fault = str(fault)
            if backend_fault:
                header.backend_fault = backend_fault
            if backend_fault_id:
                header.backend_fault_id = backend_fault_id
            stamp = header.created_at
            stamp.seconds, stamp.nanos = timestamp_parts(created_at)
            return header, header.SerializeToString(deterministic=True)
    header = transport_pb2.MessageHeader(
        message_id=request.message_id,
        kind=transport_pb2.MESSAGE_KIND_RESPONSE,
        client=request.client,
        service=request.service,
        method=request.method,
        purpose=request.purpose,
        user_id=request.user_id,
        subject=request.subject,
        body_sha256=hashlib.sha256(body).digest(),
        sender=request.receiver,
        receiver=request.sender,
        request_hash=request_digest,
        status_code=status_code,
        fault=str(fault) if fault is not None else "",
        backend_fault=backend_fault,
        backend_fault_id=backend_fault_id,
    )
    header.created_at.seconds, header.created_at.nanos = timestamp_parts(created_at)
    return header, header.SerializeToString(deterministic=True)


def request_hash(header_bytes: bytes, signature_value: bytes) -> bytes:
    """SHA-256 of a signed request: its header bytes followed by its signature value."""
    return hashlib.sha256(header_bytes + signature_value).digest()


@dataclass(slots=True)
class ReadHeader:
    """Received header bytes parsed and checked once, with the identifiers and the creation time
    read out of them (so no later step parses them again).

    Not frozen, though nothing changes one once made: two or three are made per exchange on
    each side, and a frozen dataclass's ``__init__`` sets each field through
    ``object.__setattr__`` (~1.0 us for these six fields against ~0.4 us); its ``header`` is a
    mutable message anyway."""

    header: transport_pb2.MessageHeader
    client: SubsystemId
    service: ServiceId
    sender: ServerId
    receiver: ServerId
    created_at: datetime


# Identifiers read from headers, by the wire bytes of their sub-message (serialising one is far
# cheaper than building and checking the identifier again).
_SUBSYSTEMS_BY_WIRE: dict[bytes, SubsystemId] = {}
_SERVICES_BY_WIRE: dict[bytes, ServiceId] = {}
_SERVERS_BY_WIRE: dict[bytes, ServerId] = {}


# The wire bytes each identifier above was made from, by the identifier object (checked with
# ``is``): an identifier object stands for exactly those bytes (response templates rely on it).
_READ_WIRES: dict[int, tuple[object, bytes]] = {}


def _read_id(cache: dict[bytes, _I], from_proto: Callable[[_M], _I], message: _M) -> _I:
    """``from_proto(message)``, remembered by the message's wire bytes."""
    wire = message.SerializeToString()
    found = cache.get(wire)
    if found is not None:
        return found
    made = _remember(cache, wire, from_proto(message))
    remember(_READ_WIRES, id(made), (made, wire), maxsize=3 * MAX_CACHED_IDENTIFIERS)
    return made


def _read_wire(identifier: object) -> bytes:
    """The wire bytes ``identifier`` was read from (empty: not one :func:`read_header` made)."""
    found = _READ_WIRES.get(id(identifier))
    return found[1] if found is not None and found[0] is identifier else b""


#: The four identifiers of headers read before, by the wire bytes of their sub-messages together
#: (client, service, sender, receiver): one lookup per header instead of one per identifier, and
#: each identifier the one object :func:`_read_id` made from those exact bytes.
_IDS_BY_WIRES: dict[
    tuple[bytes, bytes, bytes, bytes], tuple[SubsystemId, ServiceId, ServerId, ServerId]
] = {}


def _read_ids(
    header: transport_pb2.MessageHeader, wires: tuple[bytes, bytes, bytes, bytes]
) -> tuple[SubsystemId, ServiceId, ServerId, ServerId]:
    """The identifiers of ``header`` (whose sub-messages serialise to ``wires``), read one by one
    and remembered together; raises :class:`~ruta.ids.IdentifierError` (nothing kept then)."""
    ids = (
        _read_id(_SUBSYSTEMS_BY_WIRE, SubsystemId.from_proto, header.client),
        _read_id(_SERVICES_BY_WIRE, ServiceId.from_proto, header.service),
        _read_id(_SERVERS_BY_WIRE, ServerId.from_proto, header.sender),
        _read_id(_SERVERS_BY_WIRE, ServerId.from_proto, header.receiver),
    )
    return _remember(_IDS_BY_WIRES, wires, ids)


def read_header(header_bytes: bytes) -> ReadHeader:
    """Parse received header bytes with a size bound and check that every identifier in it is
    well formed; raise :class:`~security_server.errors.MalformedMessageError` (side-neutral:
    the receiving proxy names the fault) otherwise."""
    if len(header_bytes) > MAX_HEADER_BYTES:
        raise MalformedMessageError(f"message header is larger than {MAX_HEADER_BYTES} bytes")
    header = transport_pb2.MessageHeader()
    try:
        header.ParseFromString(header_bytes)
    except DecodeError:
        raise MalformedMessageError("message header is not a valid MessageHeader") from None
    wires = (
        header.client.SerializeToString(),
        header.service.SerializeToString(),
        header.sender.SerializeToString(),
        header.receiver.SerializeToString(),
    )
    ids = _IDS_BY_WIRES.get(wires)
    if ids is None:
        try:
            ids = _read_ids(header, wires)
        except IdentifierError as exc:
            raise MalformedMessageError(f"message header: {exc.message}") from None
    client, service, sender, receiver = ids
    if not header.HasField("created_at"):
        raise MalformedMessageError("message header has no created_at")
    method = header.method
    if len(method) > MAX_METHOD_LENGTH or not _METHOD.fullmatch(method):
        raise MalformedMessageError("message header names no valid method")
    message_id = header.message_id
    # A server writes its ids in the canonical form: the regex settles those (uuid.UUID takes
    # several forms, and ~10x as long).
    if not _CANONICAL_UUID.fullmatch(message_id):
        try:
            uuid.UUID(message_id)
        except ValueError:
            raise MalformedMessageError("message header has no valid message id") from None
    try:
        created_at = from_timestamp(header.created_at)
    except ValueError:
        raise MalformedMessageError("message header's created_at is out of range") from None
    return ReadHeader(
        header=header,
        client=client,
        service=service,
        sender=sender,
        receiver=receiver,
        created_at=created_at,
    )


def metadata_for_backend(read: ReadHeader) -> Sequence[tuple[str, str]]:
    """The ``ruta-*`` metadata a provider hands its backend, taken from the verified header (so a
    backend sees exactly what was signed)."""
    header = read.header
    entries = [
        (CLIENT_HEADER, id_text(read.client)),
        (SERVICE_HEADER, id_text(read.service.subsystem)),
        (MESSAGE_ID_HEADER, header.message_id),
    ]
    if header.purpose:
        entries.append((PURPOSE_HEADER, header.purpose))
    if header.user_id:
        entries.append((USER_ID_HEADER, header.user_id))
    if header.subject:
        entries.append((SUBJECT_HEADER, header.subject))
    return tuple(entries)
