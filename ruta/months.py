"""Calendar months in UTC, written ``YYYY-MM``: the unit of the open-data counts
(docs/adr/0028-open-data.md), shared by the security servers that count and the gateway that
publishes."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final, Self

from ruta.faults import Fault, RutaError

__all__ = ["Month", "MonthError"]

_TEXT: Final = re.compile(r"([0-9]{4})-([0-9]{2})")


class MonthError(RutaError):
    """A month that is not written ``YYYY-MM`` with a year 1..9999."""

    default_fault = Fault.CLIENT_INVALID_REQUEST


@dataclass(frozen=True, slots=True, order=True)
class Month:
    """One UTC calendar month."""

    year: int
    month: int

    def __post_init__(self) -> None:
        if not (1 <= self.year <= 9999 and 1 <= self.month <= 12):
            raise MonthError(f"no such month: {self.year:04d}-{self.month:02d}")

    @classmethod
    def parse(cls, text: str) -> Self:
        """The month ``text`` writes (``2026-12``); raises :class:`MonthError` otherwise."""
        found = _TEXT.fullmatch(text[:16])
        if found is None or len(text) != 7:
            raise MonthError("a month is written YYYY-MM, e.g. 2026-12")
        return cls(int(found.group(1)), int(found.group(2)))

    @classmethod
    def of(cls, moment: datetime) -> Self:
        """The UTC month ``moment`` (aware) falls in."""
        at = moment.astimezone(UTC)
        return cls(at.year, at.month)

    def __str__(self) -> str:
        return f"{self.year:04d}-{self.month:02d}"

    @property
    def index(self) -> int:
        """Months since the start of year 0 (for spans and arithmetic)."""
        return self.year * 12 + self.month - 1

    @classmethod
    def from_index(cls, index: int) -> Self:
        return cls(index // 12, index % 12 + 1)

    def plus(self, months: int) -> Month:
        """The month ``months`` later (earlier when negative)."""
        return Month.from_index(self.index + months)

    @property
    def start(self) -> datetime:
        """The first instant of the month (UTC)."""
        return datetime(self.year, self.month, 1, tzinfo=UTC)

    @property
    def end(self) -> datetime:
        """The first instant of the next month (UTC); for December 9999, the year's end."""
        if self.year == 9999 and self.month == 12:
            return datetime.max.replace(tzinfo=UTC)
        return self.plus(1).start

    def through(self, last: Month) -> Iterator[Month]:
        """This month, each following one, up to ``last`` included (none when ``last`` is
        earlier)."""
        for index in range(self.index, last.index + 1):
            yield Month.from_index(index)
