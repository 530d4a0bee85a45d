"""Inline SVG charts for the HTML report, built as strings in pure Python.

Every number in the markup is formatted here and every text label goes through
`html.escape`, so the returned strings are safe to insert into the page unescaped. Missing,
non-finite or degenerate data (no eigenvalues, an all-zero spectrum, a one-point curve)
yields a chart that states what is missing instead of raising.
"""

from __future__ import annotations

import enum
import html
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

WIDTH = 720
HEIGHT = 300
MARGIN_LEFT = 72
MARGIN_RIGHT = 24
MARGIN_TOP = 24
MARGIN_BOTTOM = 48
MAX_TICKS = 8

COLOR_AXIS = "#555"
COLOR_GRID = "#e3e3e3"
COLOR_TOP_K = "#c0392b"
COLOR_REST = "#9aa5b1"
COLOR_CURVE = "#1f4e8c"
COLOR_TAU = "#d35400"
COLOR_COLLAPSE = "#c0392b"
COLOR_PLANNED = "#27ae60"
COLOR_HORIZON = "#7f8c8d"


class Scale(enum.Enum):
    """Mapping of an axis from data values to pixel positions."""

    LINEAR = "linear"
    """Equal distances for equal differences."""
    LOG = "log"
    """Equal distances for equal ratios; positive values only."""
    SYMLOG = "symlog"
    """sign(v) * log10(1 + |v| / threshold): linear near zero, logarithmic beyond, both signs."""


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _coordinate(value: float) -> str:
    return f"{value:.2f}".rstrip("0").rstrip(".")


def _tick_label(value: float) -> str:
    if value == 0:
        return "0"
    if float(value).is_integer() and abs(value) < 1e6:
        return f"{int(value):,}"
    return f"{value:.3g}"


def _text(x: float, y: float, label: str, anchor: str = "start", size: int = 11, color: str = COLOR_AXIS) -> str:
    return (
        f'<text x="{_coordinate(x)}" y="{_coordinate(y)}" font-size="{size}" fill="{color}"'
        f' text-anchor="{anchor}">{html.escape(label)}</text>'
    )


def _line(x1: float, y1: float, x2: float, y2: float, color: str, dash: str | None = None, width: float = 1) -> str:
    dash_attribute = f' stroke-dasharray="{dash}"' if dash else ""
    return (
        f'<line x1="{_coordinate(x1)}" y1="{_coordinate(y1)}" x2="{_coordinate(x2)}" y2="{_coordinate(y2)}"'
        f' stroke="{color}" stroke-width="{_coordinate(width)}"{dash_attribute}/>'
    )


def _open_svg(title: str, height: int = HEIGHT) -> str:
    label = html.escape(title)
    return (
        f'<svg class="chart" viewBox="0 0 {WIDTH} {height}" width="{WIDTH}" height="{height}"'
        f' role="img" aria-label="{label}" font-family="sans-serif"><title>{label}</title>'
    )


def message_chart(title: str, message: str) -> str:
    """Return a small chart that shows only a message, for data that cannot be drawn."""
    return (
        _open_svg(title, height=60)
        + f'<rect x="0.5" y="0.5" width="{WIDTH - 1}" height="59" fill="none" stroke="{COLOR_GRID}"/>'
        + _text(WIDTH / 2, 34, message, anchor="middle", size=13)
        + "</svg>"
    )


@dataclass(frozen=True)
class Axis:
    """A mapping from data values in [low, high] to pixel positions in [pixel_low, pixel_high]."""

    low: float
    high: float
    pixel_low: float
    pixel_high: float
    scale: Scale = Scale.LINEAR
    threshold: float = 1.0
    """Width of the linear part of a SYMLOG axis."""
    integer: bool = False
    """Whether ticks of a LINEAR axis fall on whole numbers only (indices, steps)."""

    def _transform(self, value: float) -> float:
        if self.scale is Scale.LOG:
            return math.log10(value)
        if self.scale is Scale.SYMLOG:
            return math.copysign(math.log10(1.0 + abs(value) / self.threshold), value)
        return value

    def position(self, value: float) -> float:
        """Pixel position of `value`, clamped to the axis range."""
        clamped = min(max(value, self.low), self.high)
        start = self._transform(self.low)
        span = self._transform(self.high) - start
        fraction = (self._transform(clamped) - start) / span if span else 0.5
        return self.pixel_low + fraction * (self.pixel_high - self.pixel_low)

    def ticks(self) -> list[float]:
        """Tick values inside the range: 1-2-5 steps, decades, or signed decades and zero."""
        if self.scale is Scale.LINEAR:
            return _linear_ticks(self.low, self.high, min_step=1.0 if self.integer else 0.0)
        if self.scale is Scale.LOG:
            return [10.0**exponent for exponent in _decades(self.low, self.high)]
        # Each sign gets half the ticks, so that a range across zero stays readable.
        ticks = [0.0] if self.low <= 0.0 <= self.high else []
        half = MAX_TICKS // 2
        if self.high > 0:
            ticks += [10.0**e for e in _decades(max(self.threshold, self.low), self.high, half)]
        if self.low < 0:
            ticks += [-(10.0**e) for e in _decades(max(self.threshold, -self.high), -self.low, half)]
        return sorted(tick for tick in ticks if self.low <= tick <= self.high)


def _decades(low: float, high: float, max_ticks: int = MAX_TICKS) -> list[int]:
    """Integer exponents e with low <= 10**e <= high, thinned to at most `max_ticks`."""
    first = math.ceil(math.log10(low) - 1e-9)
    last = math.floor(math.log10(high) + 1e-9)
    exponents = list(range(first, last + 1))
    stride = max(1, math.ceil(len(exponents) / max_ticks))
    return exponents[::stride]


def _linear_ticks(low: float, high: float, min_step: float = 0.0) -> list[float]:
    span = high - low
    if span <= 0:
        return [low]
    raw_step = max(span / 5, min_step)
    magnitude = 10.0 ** math.floor(math.log10(raw_step))
    step = next(factor * magnitude for factor in (1, 2, 5, 10) if factor * magnitude >= raw_step)
    first = math.ceil(low / step - 1e-9)
    last = math.floor(high / step + 1e-9)
    return [index * step for index in range(first, last + 1)]


def _decade_range(values: Sequence[float]) -> tuple[float, float]:
    """Smallest range of whole decades that contains the positive `values`, at least one decade wide."""
    low = 10.0 ** math.floor(math.log10(min(values)))
    high = 10.0 ** math.ceil(math.log10(max(values)))
    if high <= low:
        high = low * 10.0
    return low, high


def _axes_frame(x_axis: Axis, y_axis: Axis, x_title: str, y_title: str) -> list[str]:
    """Grid lines, tick labels, axis lines and axis titles."""
    parts = []
    bottom, top = y_axis.pixel_low, y_axis.pixel_high
    left, right = x_axis.pixel_low, x_axis.pixel_high
    for tick in y_axis.ticks():
        y = y_axis.position(tick)
        parts.append(_line(left, y, right, y, COLOR_GRID))
        parts.append(_text(left - 6, y + 4, _tick_label(tick), anchor="end", size=10))
    for tick in x_axis.ticks():
        x = x_axis.position(tick)
        parts.append(_line(x, bottom, x, bottom + 4, COLOR_AXIS))
        parts.append(_text(x, bottom + 16, _tick_label(tick), anchor="middle", size=10))
    parts.append(_line(left, bottom, right, bottom, COLOR_AXIS))
    parts.append(_line(left, bottom, left, top, COLOR_AXIS))
    parts.append(_text((left + right) / 2, HEIGHT - 8, x_title, anchor="middle"))
    parts.append(
        f'<text transform="translate(14,{_coordinate((top + bottom) / 2)}) rotate(-90)" font-size="11"'
        f' fill="{COLOR_AXIS}" text-anchor="middle">{html.escape(y_title)}</text>'
    )
    return parts


def spectrum_chart(spectrum: Sequence[Any], k: Any, rho: Any) -> str:
    """Bar chart of the Fisher eigenvalues (descending) on a log axis, the top k highlighted.

    A dashed line after bar k marks the rho cut. Eigenvalues that are zero, negative or not
    finite get no bar, because a log axis cannot show them.
    """
    title = "Safety Fisher spectrum"
    values = [_finite(value) for value in spectrum]
    if not values:
        return message_chart(title, "No eigenvalues in the report.")
    positive = [value for value in values if value is not None and value > 0]
    if not positive:
        return message_chart(title, "Every eigenvalue is zero or not finite: nothing to draw on a log axis.")

    # The axis spans at most twelve decades below the largest eigenvalue; smaller ones sit on the baseline.
    low, high = _decade_range([max(min(positive), max(positive) * 1e-12), max(positive)])
    bottom, top = HEIGHT - MARGIN_BOTTOM, MARGIN_TOP
    left, right = MARGIN_LEFT, WIDTH - MARGIN_RIGHT
    count = len(values)
    x_axis = Axis(0.5, count + 0.5, left, right, integer=True)
    y_axis = Axis(low, high, bottom, top, Scale.LOG)
    rank = int(k) if _finite(k) is not None else 0

    parts = [_open_svg(title)]
    parts += _axes_frame(x_axis, y_axis, "eigenvalue index j", "lambda_j (log scale)")
    slot = (right - left) / count
    bar_width = slot * 0.8 if slot > 3 else slot
    for index, value in enumerate(values, start=1):
        if value is None or value <= 0:
            continue
        x = x_axis.position(index) - bar_width / 2
        y = y_axis.position(value)
        color = COLOR_TOP_K if index <= rank else COLOR_REST
        parts.append(
            f'<rect x="{_coordinate(x)}" y="{_coordinate(y)}" width="{_coordinate(bar_width)}"'
            f' height="{_coordinate(max(bottom - y, 0.5))}" fill="{color}"/>'
        )

    if 0 < rank <= count:
        cut = x_axis.position(rank + 0.5)
        parts.append(_line(cut, bottom, cut, top, COLOR_AXIS, dash="4 3"))
        rho_text = _tick_label(float(rho)) if _finite(rho) is not None else "n/a"
        anchor = "end" if cut > (left + right) / 2 else "start"
        offset = -4 if anchor == "end" else 4
        parts.append(_text(cut + offset, top + 12, f"rho cut: k = {rank}, rho = {rho_text}", anchor=anchor))
    parts.append("</svg>")
    return "".join(parts)


def _shorten(name: str, limit: int = 44) -> str:
    """Keep the start and end of a long tensor name, which carry the layer and the module."""
    if len(name) <= limit:
        return name
    head = limit // 2 - 2
    return name[:head] + "\u2026" + name[-(limit - head - 1) :]


def sensitivity_chart(sensitivity: Sequence[dict[str, Any]], max_rows: int = 20) -> str:
    """Horizontal bars of each tensor's share of the sensitive subspace, in report order.

    The first `max_rows` tensors get a bar each; the shares of the rest are summed into one
    "other" bar. Hovering a bar shows the full tensor name.
    """
    title = "Sensitivity by tensor"
    entries = [entry for entry in sensitivity if isinstance(entry, dict)]
    if not entries:
        return message_chart(title, "No sensitivity map in the report.")

    rows = [(str(entry.get("tensor")), _finite(entry.get("share")) or 0.0) for entry in entries[:max_rows]]
    rest = entries[max_rows:]
    if rest:
        other_share = sum(_finite(entry.get("share")) or 0.0 for entry in rest)
        rows.append((f"other ({len(rest)} tensors)", other_share))

    row_height = 18
    label_width = 300
    top = 12
    height = top + row_height * len(rows) + 12
    bar_left = label_width + 8
    bar_span = WIDTH - bar_left - 64
    largest = max((share for _, share in rows), default=0.0)
    scale = bar_span / largest if largest > 0 else 0.0

    parts = [_open_svg(title, height=height)]
    for position, (name, share) in enumerate(rows):
        y = top + position * row_height
        bar_length = max(share, 0.0) * scale
        parts.append(f"<g><title>{html.escape(name)}: {html.escape(_percent(share))}</title>")
        parts.append(_text(label_width, y + 12, _shorten(name), anchor="end"))
        parts.append(
            f'<rect x="{bar_left}" y="{_coordinate(y + 2)}" width="{_coordinate(bar_length)}"'
            f' height="{row_height - 4}" fill="{COLOR_TOP_K if position < max_rows else COLOR_REST}"/>'
        )
        parts.append(_text(bar_left + bar_length + 4, y + 12, _percent(share)))
        parts.append("</g>")
    parts.append("</svg>")
    return "".join(parts)


def _percent(share: float) -> str:
    return f"{100.0 * share:.1f}%"


def _forecast_y_axis(values: Sequence[float], tau: float | None, bottom: float, top: float) -> tuple[Axis, str]:
    """Log axis when every value and tau are positive, otherwise a symmetric log axis."""
    candidates = list(values) + ([tau] if tau is not None else [])
    if all(value > 0 for value in candidates):
        low, high = _decade_range(candidates)
        return Axis(low, high, bottom, top, Scale.LOG), "delta_u, nats per token (log scale)"

    magnitudes = [abs(value) for value in candidates if value != 0]
    largest = max(magnitudes, default=1.0)
    threshold = tau / 10 if tau is not None and tau > 0 else largest / 1000
    low = min(min(candidates), 0.0)
    high = max(max(candidates), 0.0)
    if high <= low:
        low, high = low - 1.0, high + 1.0
    title = f"delta_u, nats per token (linear within +-{_tick_label(threshold)}, log beyond)"
    return Axis(low, high, bottom, top, Scale.SYMLOG, threshold), title


def forecast_chart(
    curve: Sequence[dict[str, Any]],
    tau: Any,
    collapse_step: Any,
    collapse_is_extrapolation: bool,
    planned_steps: Any,
    horizon_step: Any,
) -> str:
    """Line chart of the forecast delta_u against the training step.

    A horizontal line marks tau, vertical lines mark the collapse step and the planned
    steps, and the region past the horizon step (where the second-order expansion is
    doubtful) is shaded. The step axis is logarithmic when the curve spans two decades or
    more; the delta_u axis is logarithmic when every value is positive.
    """
    title = "Forecast of the safety-loss increase"
    points = sorted(
        (step, value)
        for step, value in ((_finite(point.get("step")), _finite(point.get("delta_u"))) for point in curve)
        if step is not None and value is not None
    )
    if not points:
        return message_chart(title, "No forecast curve in the report.")

    tau_value = _finite(tau)
    markers = [
        (step, label, color)
        for step, label, color in (
            (
                _finite(collapse_step),
                "collapse (extrapolation)" if collapse_is_extrapolation else "collapse",
                COLOR_COLLAPSE,
            ),
            (_finite(planned_steps), "planned steps", COLOR_PLANNED),
            (_finite(horizon_step), "horizon", COLOR_HORIZON),
        )
        if step is not None
    ]
    steps = [step for step, _ in points] + [step for step, _, _ in markers]
    bottom, top = HEIGHT - MARGIN_BOTTOM, MARGIN_TOP
    left, right = MARGIN_LEFT, WIDTH - MARGIN_RIGHT
    first, last = min(steps), max(steps)
    if first >= 1 and last / first >= 100:
        x_low, x_high = _decade_range([first, last])
        x_axis = Axis(x_low, x_high, left, right, Scale.LOG)
        x_title = "training step (log scale)"
    else:
        x_low, x_high = (first - 1, last + 1) if last <= first else (first, last)
        x_axis = Axis(x_low, x_high, left, right, integer=True)
        x_title = "training step"
    y_axis, y_title = _forecast_y_axis([value for _, value in points], tau_value, bottom, top)

    parts = [_open_svg(title)]
    horizon = _finite(horizon_step)
    if horizon is not None and horizon < x_high:
        shade_left = x_axis.position(max(horizon, x_low))
        parts.append(
            f'<rect x="{_coordinate(shade_left)}" y="{top}" width="{_coordinate(right - shade_left)}"'
            f' height="{_coordinate(bottom - top)}" fill="#f2f2f2"/>'
        )
    parts += _axes_frame(x_axis, y_axis, x_title, y_title)

    if tau_value is not None:
        y = y_axis.position(tau_value)
        parts.append(_line(left, y, right, y, COLOR_TAU, dash="6 3", width=1.5))
        parts.append(_text(right - 4, y - 4, f"tau = {_tick_label(tau_value)}", anchor="end", color=COLOR_TAU))

    for order, (step, label, color) in enumerate(markers):
        x = x_axis.position(step)
        parts.append(_line(x, bottom, x, top, color, dash="3 3", width=1.5))
        anchor = "end" if x > (left + right) / 2 else "start"
        offset = -4 if anchor == "end" else 4
        parts.append(_text(x + offset, top + 12 + 13 * order, f"{label}: {_tick_label(step)}", anchor=anchor, color=color))

    coordinates = " ".join(
        f"{_coordinate(x_axis.position(step))},{_coordinate(y_axis.position(value))}" for step, value in points
    )
    if len(points) > 1:
        parts.append(f'<polyline points="{coordinates}" fill="none" stroke="{COLOR_CURVE}" stroke-width="2"/>')
    for step, value in points if len(points) <= 30 else []:
        parts.append(
            f'<circle cx="{_coordinate(x_axis.position(step))}" cy="{_coordinate(y_axis.position(value))}"'
            f' r="2.5" fill="{COLOR_CURVE}"/>'
        )
    parts.append("</svg>")
    return "".join(parts)
