"""A small SVG writer for the validation plots: scatter plots and line plots, pure Python.

Labels go through `html.escape`. Axes are linear, or symmetric-log (sign(v) log10(1 + |v|/c))
for values that span decades and both signs.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass

WIDTH, HEIGHT = 800, 400
LEFT, RIGHT, TOP, BOTTOM = 70, 290, 30, 50
PALETTE = ("#1f4e8c", "#c0392b", "#27ae60", "#8e44ad", "#d35400", "#16a085", "#7f8c8d", "#2c3e50", "#b7950b")


@dataclass(frozen=True)
class Series:
    """One named set of points; `dashed` draws a dashed line, `line` False draws markers only."""

    name: str
    points: tuple[tuple[float, float], ...]
    line: bool = True
    dashed: bool = False


def symlog(value: float, threshold: float) -> float:
    """Return sign(value) * log10(1 + |value| / threshold)."""
    return math.copysign(math.log10(1 + abs(value) / threshold), value)


def _inverse_symlog(value: float, threshold: float) -> float:
    return math.copysign((10 ** abs(value) - 1) * threshold, value)


def _number(value: float) -> str:
    return f"{value:.1f}"


def _label(value: float) -> str:
    return "0" if value == 0 else f"{value:.3g}"


def plot(title: str, x_label: str, y_label: str, series: Sequence[Series], *,
         y_symlog: float | None = None, x_symlog: float | None = None) -> str:
    """Return an SVG document with one line or scatter per series and a legend on the right.

    `x_symlog`/`y_symlog` set the linear threshold c of a symmetric-log axis; None keeps it linear.
    """
    def tx(v: float) -> float:
        return symlog(v, x_symlog) if x_symlog else v

    def ty(v: float) -> float:
        return symlog(v, y_symlog) if y_symlog else v

    finite = [(tx(x), ty(y)) for s in series for x, y in s.points if math.isfinite(x) and math.isfinite(y)]
    xs = [x for x, _ in finite] or [0.0, 1.0]
    ys = [y for _, y in finite] or [0.0, 1.0]
    x_low, x_high = min(xs), max(xs)
    y_low, y_high = min(min(ys), 0.0), max(max(ys), 0.0)
    x_high = x_high if x_high > x_low else x_low + 1
    y_high = y_high if y_high > y_low else y_low + 1
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def px(v: float) -> float:
        return LEFT + (v - x_low) / (x_high - x_low) * plot_w

    def py(v: float) -> float:
        return TOP + plot_h - (v - y_low) / (y_high - y_low) * plot_h

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}"'
        ' font-family="sans-serif">',
        f'<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>',
        f'<text x="{WIDTH / 2:.0f}" y="18" font-size="13" text-anchor="middle">{html.escape(title)}</text>',
    ]

    # Axes with five ticks each; symlog ticks are labelled with the original values.
    for i in range(5):
        xv = x_low + (x_high - x_low) * i / 4
        yv = y_low + (y_high - y_low) * i / 4
        x_text = _label(_inverse_symlog(xv, x_symlog) if x_symlog else xv)
        y_text = _label(_inverse_symlog(yv, y_symlog) if y_symlog else yv)
        parts.append(f'<line x1="{_number(px(xv))}" y1="{TOP}" x2="{_number(px(xv))}" y2="{TOP + plot_h}" stroke="#eee"/>')
        parts.append(f'<line x1="{LEFT}" y1="{_number(py(yv))}" x2="{LEFT + plot_w}" y2="{_number(py(yv))}" stroke="#eee"/>')
        parts.append(f'<text x="{_number(px(xv))}" y="{TOP + plot_h + 16}" font-size="10" text-anchor="middle">'
                     f'{html.escape(x_text)}</text>')
        parts.append(f'<text x="{LEFT - 6}" y="{_number(py(yv) + 3)}" font-size="10" text-anchor="end">'
                     f'{html.escape(y_text)}</text>')
    parts.append(f'<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#555"/>')
    if y_low < 0 < y_high:
        parts.append(f'<line x1="{LEFT}" y1="{_number(py(0))}" x2="{LEFT + plot_w}" y2="{_number(py(0))}" stroke="#999"/>')
    parts.append(f'<text x="{LEFT + plot_w / 2:.0f}" y="{HEIGHT - 12}" font-size="11" text-anchor="middle">'
                 f'{html.escape(x_label)}</text>')
    parts.append(f'<text x="14" y="{TOP + plot_h / 2:.0f}" font-size="11" text-anchor="middle" '
                 f'transform="rotate(-90 14 {TOP + plot_h / 2:.0f})">{html.escape(y_label)}</text>')

    # Series and legend.
    for index, item in enumerate(series):
        color = PALETTE[index % len(PALETTE)]
        points = [(px(tx(x)), py(ty(y))) for x, y in item.points if math.isfinite(x) and math.isfinite(y)]
        if item.line and len(points) > 1:
            path = " ".join(f"{_number(x)},{_number(y)}" for x, y in points)
            dash = ' stroke-dasharray="5,3"' if item.dashed else ""
            parts.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="1.5"{dash}/>')
        if not item.line:
            parts.extend(f'<circle cx="{_number(x)}" cy="{_number(y)}" r="3.5" fill="{color}"/>' for x, y in points)
        legend_y = TOP + 14 * index + 8
        legend_dash = ' stroke-dasharray="5,3"' if item.dashed else ""
        parts.append(f'<line x1="{WIDTH - RIGHT + 10}" y1="{legend_y}" x2="{WIDTH - RIGHT + 28}" y2="{legend_y}" '
                     f'stroke="{color}" stroke-width="3"{legend_dash}/>')
        parts.append(f'<text x="{WIDTH - RIGHT + 32}" y="{legend_y + 4}" font-size="10">{html.escape(item.name)}</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"
