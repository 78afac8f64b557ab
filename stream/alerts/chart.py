"""A small PNG of one scope's last 24 h (mean score above, post volume below), alert window shaded.

matplotlib is imported inside `render_chart`, so importing this module (and the worker) stays
cheap and only a worker that actually notifies pays for it. The object-oriented `Figure` API with
an explicit Agg canvas is used instead of pyplot: it keeps no global figure state, so rendering
is safe from `asyncio.to_thread` workers, and it never needs a display.
"""

from __future__ import annotations

import io
import math
from datetime import datetime, timezone
from typing import Sequence

from stream.timefmt import epoch
from stream.windows import SliceCol

# (slice start epoch s, posts, mean score; None where the slice holds no posts: a gap in the line,
# not a score of 0, which at a quiet scope's volumes drew a neutral dip in most slices)
Point = tuple[int, int, float | None]

SPAN_S = 24 * 3600
_DEFAULT_BUCKET_S = 60
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def render_chart(
    points: Sequence[Point],
    window_start: float | str,
    window_end: float | str,
    scope: str,
    kind: str,
) -> bytes:
    """PNG bytes (8x4 in at 100 dpi). Works for empty and single-point input."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
    from matplotlib.figure import Figure

    start, end = _epoch(window_start), _epoch(window_end)
    ordered = sorted(points, key=lambda p: p[0])
    bucket_s = _bucket_width(ordered)

    fig = Figure(figsize=(8, 4), dpi=100)
    FigureCanvasAgg(fig)
    score_ax, volume_ax = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": (3, 2)})
    fig.suptitle(f"{scope} - {kind}", fontsize=10)

    if ordered:
        times = [_dt(p[0]) for p in ordered]
        posts = [p[1] for p in ordered]
        scores = [math.nan if p[2] is None else p[2] for p in ordered]  # NaN breaks the line
        # Dots as well as the line: a slice between two empty ones has no neighbour to draw a line to.
        score_ax.plot(times, scores, color="tab:blue", linewidth=1.2, marker="o", markersize=2.5)
        # Bars start at the bucket start; matplotlib's date unit is days.
        volume_ax.bar(times, posts, width=bucket_s / 86400, align="edge", color="tab:gray")
    else:
        score_ax.text(0.5, 0.5, "no data", transform=score_ax.transAxes, ha="center", va="center", color="gray")

    for ax in (score_ax, volume_ax):
        ax.axvspan(_dt(start), _dt(end), color="tab:red", alpha=0.15, linewidth=0)
        ax.grid(True, alpha=0.3)
    # Always the 24 h before the window's end, so charts of different alerts compare at a glance.
    score_ax.set_xlim(_dt(end - SPAN_S), _dt(end + bucket_s))
    score_ax.set_ylabel("mean score", fontsize=8)
    volume_ax.set_ylabel("posts", fontsize=8)
    volume_ax.set_xlabel("UTC", fontsize=7)
    locator = AutoDateLocator()
    volume_ax.xaxis.set_major_locator(locator)
    volume_ax.xaxis.set_major_formatter(ConciseDateFormatter(locator))
    for ax in (score_ax, volume_ax):
        ax.tick_params(labelsize=7)
    fig.tight_layout()

    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def chart_points(slices: Sequence[Sequence[float]], first: int, step_s: int) -> list[Point]:
    """The chart's points from a slice table whose rows are `step_s` seconds from `first`."""
    return [(first + i * step_s, int(row[SliceCol.N]), row[SliceCol.SCORE_SUM] / row[SliceCol.N] if row[SliceCol.N] else None)
            for i, row in enumerate(slices)]


def _bucket_width(points: Sequence[Point]) -> int:
    """The smallest gap between buckets (the bucket width when no bucket is missing)."""
    gaps = [b[0] - a[0] for a, b in zip(points, points[1:]) if b[0] > a[0]]
    return min(gaps) if gaps else _DEFAULT_BUCKET_S


def _epoch(value: float | str) -> float:
    """Epoch seconds from a number or an ISO-8601 string (the record carries ISO strings)."""
    return epoch(value) if isinstance(value, str) else float(value)


def _dt(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=timezone.utc)
