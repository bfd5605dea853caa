"""Geometry of the open-data charts: bars and a line, computed here and drawn as inline SVG by
the templates (no script, no style attributes: the page's policy allows neither). Every chart
has a table with the same figures beside it, which is what assistive technology reads."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

__all__ = [
    "CHART_HEIGHT",
    "CHART_WIDTH",
    "Bar",
    "Chart",
    "Point",
    "Tick",
    "bar_chart",
    "line_chart",
    "scale_top",
]

CHART_WIDTH: Final = 640
CHART_HEIGHT: Final = 220
_LEFT: Final = 56
_RIGHT: Final = 12
_TOP: Final = 16
_BOTTOM: Final = 40
#: Height of the stub drawn for a suppressed count (it shows where the month is, not a value).
_STUB: Final = 4


@dataclass(frozen=True, slots=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    label: str
    value: str
    suppressed: bool


@dataclass(frozen=True, slots=True)
class Point:
    x: float
    y: float
    label: str
    value: str


@dataclass(frozen=True, slots=True)
class Tick:
    y: float
    value: str


@dataclass(frozen=True, slots=True)
class Chart:
    width: int
    height: int
    left: int
    right: float
    baseline: float
    ticks: tuple[Tick, ...]
    bars: tuple[Bar, ...]
    points: tuple[Point, ...]

    @property
    def polyline(self) -> str:
        """The line's points as an SVG ``points`` attribute."""
        return " ".join(f"{p.x:.1f},{p.y:.1f}" for p in self.points)


def _scale_top(largest: float) -> float:
    """A round number at or above ``largest`` (1, 2 or 5 times a power of ten)."""
    if largest <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(largest))
    for step in (1, 2, 5, 10):
        if step * power >= largest:
            return float(step * power)
    return float(10 * power)  # pragma: no cover - the loop always returns


def _ticks(texts: Sequence[str], plot: float) -> tuple[Tick, ...]:
    """Ticks evenly up the axis, labelled ``texts`` from the bottom."""
    steps = max(len(texts) - 1, 1)
    return tuple(Tick(y=_TOP + plot - plot * i / steps, value=text) for i, text in enumerate(texts))


def _frame(values: Sequence[float | None]) -> tuple[float, float]:
    top = _scale_top(max((v for v in values if v is not None), default=0.0))
    return top, float(CHART_HEIGHT - _TOP - _BOTTOM)


def scale_top(values: Sequence[float | None]) -> float:
    """The top of the value axis a chart of ``values`` uses (for the tick labels' texts)."""
    return _scale_top(max((v for v in values if v is not None), default=0.0))


def bar_chart(
    values: Sequence[float | None],
    labels: Sequence[str],
    texts: Sequence[str],
    tick_texts: Sequence[str],
) -> Chart:
    """Bars of ``values`` (``None``: suppressed, drawn as a stub) with month ``labels`` and
    value ``texts``; ``tick_texts`` are the axis labels at 0, 1/4, ... of :func:`scale_top`."""
    top, plot = _frame(values)
    slot = (CHART_WIDTH - _LEFT - _RIGHT) / max(len(values), 1)
    bars = []
    for index, value in enumerate(values):
        height = _STUB if value is None else plot * value / top
        bars.append(
            Bar(
                x=_LEFT + index * slot + slot * 0.15,
                y=_TOP + plot - height,
                width=slot * 0.7,
                height=height,
                label=labels[index],
                value=texts[index],
                suppressed=value is None,
            )
        )
    return Chart(
        width=CHART_WIDTH,
        height=CHART_HEIGHT,
        left=_LEFT,
        right=CHART_WIDTH - _RIGHT,
        baseline=_TOP + plot,
        ticks=_ticks(tick_texts, plot),
        bars=tuple(bars),
        points=(),
    )


def line_chart(
    values: Sequence[float], labels: Sequence[str], texts: Sequence[str], tick_texts: Sequence[str]
) -> Chart:
    """A line through ``values`` (one per month), as :func:`bar_chart` lays out its axes."""
    top, plot = _frame(values)
    slot = (CHART_WIDTH - _LEFT - _RIGHT) / max(len(values), 1)
    points = tuple(
        Point(
            x=_LEFT + index * slot + slot / 2,
            y=_TOP + plot - plot * value / top,
            label=labels[index],
            value=texts[index],
        )
        for index, value in enumerate(values)
    )
    return Chart(
        width=CHART_WIDTH,
        height=CHART_HEIGHT,
        left=_LEFT,
        right=CHART_WIDTH - _RIGHT,
        baseline=_TOP + plot,
        ticks=_ticks(tick_texts, plot),
        bars=(),
        points=points,
    )
