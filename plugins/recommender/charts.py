"""Plain inline SVG line charts over days: no library and no fetch, so the page works offline
and in the UI's sandboxed frame. Every drawn point is a ``circle`` carrying its series, day and
value (``data-series``, ``data-day``, ``data-value``) and a ``<title>`` tooltip; a marked point
(an anomaly, a failed verdict) is drawn larger and red, with ``data-marked``."""

from __future__ import annotations

import datetime as dt
from html import escape
from typing import NamedTuple

WIDTH, HEIGHT = 900, 200
LEFT, RIGHT, TOP, BOTTOM = 56, 16, 28, 30
COLORS = ("#1f77b4", "#7f7f7f", "#2ca02c", "#9467bd", "#ff7f0e")


class Point(NamedTuple):
    day: str  # ISO date
    value: float | None
    marked: bool = False
    note: str = ""


class Series(NamedTuple):
    name: str
    points: list[Point]
    dashed: bool = False


class Marker(NamedTuple):
    """A vertical line on a day: a publication (a rollback is drawn orange)."""

    day: str
    label: str
    rollback: bool = False


def _fmt(value: float, percent: bool) -> str:
    return f"{value:.1%}" if percent else (f"{value:,.0f}" if abs(value) >= 100 else f"{value:.4f}")


def line_chart(title: str, series: list[Series], start: dt.date, end: dt.date, *,
               percent: bool = False, markers: list[Marker] | None = None, chart_id: str = "") -> str:
    """One chart of ``series`` over the days ``start..end``; an empty chart says so."""
    days = max(1, (end - start).days)
    inner_w, inner_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    values = [p.value for s in series for p in s.points if p.value is not None]
    top = max(values) * 1.1 if values and max(values) > 0 else 1.0

    def x(day: str) -> float:
        return LEFT + inner_w * (dt.date.fromisoformat(day[:10]) - start).days / days

    def y(value: float) -> float:
        return TOP + inner_h * (1 - value / top)

    out = [f'<svg class="chart" id="{escape(chart_id)}" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
           f'aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">',
           f'<text x="{LEFT}" y="16" class="title">{escape(title)}</text>']
    for frac in (0, 0.5, 1):
        gy = TOP + inner_h * (1 - frac)
        out.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{gy:.1f}" y2="{gy:.1f}" class="grid"/>'
                   f'<text x="{LEFT - 6}" y="{gy + 4:.1f}" class="axis" text-anchor="end">'
                   f'{escape(_fmt(top * frac, percent))}</text>')
    for day, anchor in ((start, "start"), (start + (end - start) / 2, "middle"), (end, "end")):
        out.append(f'<text x="{x(day.isoformat()):.1f}" y="{HEIGHT - 8}" class="axis" '
                   f'text-anchor="{anchor}">{day.isoformat()}</text>')
    for m in markers or []:
        if start.isoformat() <= m.day[:10] <= end.isoformat():
            mx = x(m.day)
            out.append(f'<line x1="{mx:.1f}" x2="{mx:.1f}" y1="{TOP}" y2="{TOP + inner_h}" '
                       f'class="marker{" rollback" if m.rollback else ""}" data-marker="{escape(m.label)}">'
                       f'<title>{escape(m.label)}</title></line>')
    if not values:
        out.append(f'<text x="{LEFT + inner_w / 2}" y="{TOP + inner_h / 2}" class="empty" '
                   'text-anchor="middle">no data in these days</text>')
    # The legend sits at the top right, clear of the title on the left.
    legend_x = WIDTH - RIGHT - sum(24 + 7 * len(s.name) for s in series)
    for index, s in enumerate(series):
        color = COLORS[index % len(COLORS)]
        drawn = [p for p in s.points if p.value is not None]
        if drawn:
            path = " ".join(f"{x(p.day):.1f},{y(p.value):.1f}" for p in drawn)
            dash = ' stroke-dasharray="5 4"' if s.dashed else ""
            out.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2"{dash}/>')
        for p in drawn:
            mark = ' data-marked="true"' if p.marked else ""
            tip = f"{s.name} {p.day[:10]}: {_fmt(p.value, percent)}{' - ' + p.note if p.note else ''}"
            out.append(f'<circle cx="{x(p.day):.1f}" cy="{y(p.value):.1f}" r="{6 if p.marked else 3.5}" '
                       f'fill="{"#d62728" if p.marked else color}" class="point" '
                       f'data-series="{escape(s.name)}" data-day="{escape(p.day[:10])}" '
                       f'data-value="{p.value!r}"{mark}>'
                       f'<title>{escape(tip)}</title></circle>')
        out.append(f'<rect x="{legend_x}" y="8" width="12" height="4" fill="{color}"/>'
                   f'<text x="{legend_x + 16}" y="14" class="legend">{escape(s.name)}</text>')
        legend_x += 24 + 7 * len(s.name)
    out.append("</svg>")
    return "".join(out)
