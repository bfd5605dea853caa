"""Identifiers of members, subsystems, services and security servers.

Text forms follow X-Road (DESIGN.md "Identifiers"): parts separated by ``/``, each part 1-64
characters of ``A-Z a-z 0-9 . _ -`` starting with a letter or digit. Parsing is strict and total:
any string either parses or raises :class:`IdentifierError` naming the offending part; nothing else
escapes. ``format(parse(x)) == x`` for every valid ``x`` (the text form is canonical).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Protocol, Self, cast

from ruta.faults import Fault, RutaError
from ruta.memo import memo_by_identity
from ruta.v1 import ids_pb2

__all__ = [
    "MAX_IDENTIFIER_LENGTH",
    "MAX_PART_LENGTH",
    "MAX_REMEMBERED_TEXTS",
    "IdentifierError",
    "MemberId",
    "ServerId",
    "ServiceId",
    "SubsystemId",
    "id_text",
]

#: Longest identifier part.
MAX_PART_LENGTH: Final = 64
#: Longest text form of any identifier (five parts and their separators); longer input is refused
#: before it is split, so a hostile string costs nothing to reject.
MAX_IDENTIFIER_LENGTH: Final = 5 * MAX_PART_LENGTH + 4

_MEMBER_PARTS: Final = ("instance", "member class", "member code")
_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


class IdentifierError(RutaError):
    """A text or wire identifier does not follow the grammar; the message names the part."""

    default_fault = Fault.CLIENT_INVALID_IDENTIFIER


def _show(text: str) -> str:
    shown = text if len(text) <= 80 else text[:77] + "..."
    return repr(shown)


def _check_part(kind: str, name: str, value: str, whole: str) -> str:
    if _PART.fullmatch(value):
        return value
    if not value:
        why = "is empty"
    elif len(value) > MAX_PART_LENGTH:
        why = f"is longer than {MAX_PART_LENGTH} characters"
    elif not value[0].isascii() or not value[0].isalnum():
        why = "must start with a letter or digit"
    else:
        why = "may only contain A-Z a-z 0-9 . _ -"
    raise IdentifierError(f"{name} {_show(value)} of {kind} {_show(whole)} {why}")


def _split(kind: str, text: str, names: tuple[str, ...]) -> list[str]:
    if not isinstance(text, str):
        raise IdentifierError(f"{kind} identifier must be text, not {type(text).__name__}")
    if len(text) > MAX_IDENTIFIER_LENGTH:
        raise IdentifierError(
            f"{kind} identifier is longer than {MAX_IDENTIFIER_LENGTH} characters"
        )
    parts = text.split("/")
    if len(parts) != len(names):
        shape = "/".join(n.upper().replace(" ", "_") for n in names)
        raise IdentifierError(
            f"{kind} {_show(text)} has {len(parts)} part(s); expected {len(names)}: {shape}"
        )
    return [_check_part(kind, n, p, text) for n, p in zip(names, parts, strict=True)]


@dataclass(frozen=True, slots=True, order=True)
class MemberId:
    """A member of an instance: ``INSTANCE/CLASS/CODE``, e.g. ``LAC/GOV/POP``."""

    instance: str
    member_class: str
    member_code: str

    def __post_init__(self) -> None:
        # Valid parts (nearly always): no error text is built. Identifiers are made per message.
        if (
            _PART.fullmatch(self.instance)
            and _PART.fullmatch(self.member_class)
            and _PART.fullmatch(self.member_code)
        ):
            return
        whole = f"{self.instance}/{self.member_class}/{self.member_code}"
        for name, value in zip(
            _MEMBER_PARTS, (self.instance, self.member_class, self.member_code), strict=True
        ):
            _check_part("member", name, value, whole)

    @classmethod
    def parse(cls, text: str) -> Self:
        """Parse ``INSTANCE/CLASS/CODE``; raise :class:`IdentifierError` naming the bad part."""
        instance, member_class, member_code = _split("member", text, _MEMBER_PARTS)
        return cls(instance, member_class, member_code)

    def __str__(self) -> str:
        return f"{self.instance}/{self.member_class}/{self.member_code}"

    def subsystem(self, code: str) -> SubsystemId:
        return SubsystemId(self, code)

    def server(self, code: str) -> ServerId:
        return ServerId(self, code)

    def to_proto(self) -> ids_pb2.MemberId:
        return ids_pb2.MemberId(
            instance=self.instance, member_class=self.member_class, member_code=self.member_code
        )

    @classmethod
    def from_proto(cls, msg: ids_pb2.MemberId) -> Self:
        return cls(msg.instance, msg.member_class, msg.member_code)


class _MemberAndCode(Protocol):
    """A subsystem's or a server's identifier: a member and a code."""

    @property
    def member(self) -> MemberId: ...
    @property
    def code(self) -> str: ...


def _member_and_code_eq(self: _MemberAndCode, other: object) -> bool:
    """Equal to an identifier of the same class with an equal member and code."""
    if other.__class__ is not self.__class__:
        # (a bare NotImplemented is typed as such only in a method named __eq__)
        return cast("bool", NotImplemented)
    a, b = self.member, other.member
    return self.code == other.code and (
        a is b
        or (
            a.member_code == b.member_code
            and a.member_class == b.member_class
            and a.instance == b.instance
        )
    )


def _member_and_code_hash(self: _MemberAndCode) -> int:
    m = self.member
    return hash((m.instance, m.member_class, m.member_code, self.code))


@dataclass(frozen=True, slots=True, order=True)
class SubsystemId:
    """A subsystem of a member: ``INSTANCE/CLASS/CODE/SUBSYSTEM``.

    Every caller and every provider is one.
    """

    member: MemberId
    code: str

    def __post_init__(self) -> None:
        if not _PART.fullmatch(self.code):
            _check_part("subsystem", "subsystem code", self.code, f"{self.member}/{self.code}")

    @classmethod
    def parse(cls, text: str) -> Self:
        """Parse ``INSTANCE/CLASS/CODE/SUBSYSTEM``; raise :class:`IdentifierError` on any flaw."""
        *member, code = _split("subsystem", text, (*_MEMBER_PARTS, "subsystem code"))
        return cls(MemberId(*member), code)

    def __str__(self) -> str:
        return f"{self.member}/{self.code}"

    # Equality and hash in one call each, not one per level of nesting (what the dataclass
    # would make): the global configuration's dictionaries are keyed by identifiers, looked up
    # several times per exchange with equal objects that are not the keys themselves. The same
    # relation as the fields' (every field compared; equal identifiers hash alike).
    __eq__ = _member_and_code_eq
    __hash__ = _member_and_code_hash

    def service(self, service_name: str) -> ServiceId:
        return ServiceId(self, service_name)

    def to_proto(self) -> ids_pb2.SubsystemId:
        return ids_pb2.SubsystemId(member=self.member.to_proto(), subsystem_code=self.code)

    @classmethod
    def from_proto(cls, msg: ids_pb2.SubsystemId) -> Self:
        return cls(MemberId.from_proto(msg.member), msg.subsystem_code)


@dataclass(frozen=True, slots=True, order=True)
class ServiceId:
    """A gRPC service offered by a subsystem: subsystem + ``/`` + fully-qualified service name,
    e.g. ``LAC/GOV/POP/registry/population.v1.PersonRegistry``."""

    subsystem: SubsystemId
    service_name: str

    def __post_init__(self) -> None:
        if not _PART.fullmatch(self.service_name):
            _check_part(
                "service",
                "service name",
                self.service_name,
                f"{self.subsystem}/{self.service_name}",
            )

    @classmethod
    def parse(cls, text: str) -> Self:
        """Parse ``INSTANCE/CLASS/CODE/SUBSYSTEM/SERVICE``; raise :class:`IdentifierError`."""
        *member, code, name = _split(
            "service", text, (*_MEMBER_PARTS, "subsystem code", "service name")
        )
        return cls(SubsystemId(MemberId(*member), code), name)

    @property
    def member(self) -> MemberId:
        return self.subsystem.member

    def __str__(self) -> str:
        return f"{self.subsystem}/{self.service_name}"

    # In one call each (see SubsystemId.__eq__).
    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        that = other
        s, t = self.subsystem, that.subsystem
        if self.service_name != that.service_name:
            return False
        if s is t:
            return True
        a, b = s.member, t.member
        return s.code == t.code and (
            a is b
            or (
                a.member_code == b.member_code
                and a.member_class == b.member_class
                and a.instance == b.instance
            )
        )

    def __hash__(self) -> int:
        s = self.subsystem
        m = s.member
        return hash((m.instance, m.member_class, m.member_code, s.code, self.service_name))

    def to_proto(self) -> ids_pb2.ServiceId:
        return ids_pb2.ServiceId(
            subsystem=self.subsystem.to_proto(), service_name=self.service_name
        )

    @classmethod
    def from_proto(cls, msg: ids_pb2.ServiceId) -> Self:
        return cls(SubsystemId.from_proto(msg.subsystem), msg.service_name)


@dataclass(frozen=True, slots=True, order=True)
class ServerId:
    """A security server: its owner member plus a server code. Typed separately from subsystems;
    its text form ``INSTANCE/CLASS/CODE/SERVER`` is only read where a server id is expected."""

    member: MemberId
    code: str

    def __post_init__(self) -> None:
        if not _PART.fullmatch(self.code):
            _check_part("server", "server code", self.code, f"{self.member}/{self.code}")

    @classmethod
    def parse(cls, text: str) -> Self:
        """Parse ``INSTANCE/CLASS/CODE/SERVER``; raise :class:`IdentifierError` on any flaw."""
        *member, code = _split("server", text, (*_MEMBER_PARTS, "server code"))
        return cls(MemberId(*member), code)

    def __str__(self) -> str:
        return f"{self.member}/{self.code}"

    # In one call each (see SubsystemId).
    __eq__ = _member_and_code_eq
    __hash__ = _member_and_code_hash

    def to_proto(self) -> ids_pb2.ServerId:
        return ids_pb2.ServerId(member=self.member.to_proto(), server_code=self.code)

    @classmethod
    def from_proto(cls, msg: ids_pb2.ServerId) -> Self:
        return cls(MemberId.from_proto(msg.member), msg.server_code)


#: Identifier objects whose text :func:`id_text` remembers.
MAX_REMEMBERED_TEXTS: Final = 4096

#: ``str(identifier)``, made once per identifier object (event loop only): the text form is built
#: from nested f-strings on every ``str``, several times per exchange (the headers' checks, the
#: log's query columns), while the exchange path hands the same few objects, remembered by the
#: header reader, from one message to the next.
id_text: Callable[[SubsystemId | ServiceId | ServerId], str] = memo_by_identity(
    str, maxsize=MAX_REMEMBERED_TEXTS
)
