"""A small PNG of one scope's last 24 h, alert window shaded, that plots what the alert fired on.

Above, label shares per slice in percent: the negative share for a `sentiment_drop` and the
positive share for a `sentiment_surge` (the detector fires on those shares, and the notice says
"negative share 75.0% ... against 19.7%"), with that baseline share dashed where the notice carries
it. Below, posts per slice: a `volume_spike`'s own measure, with its baseline rate dashed; above it
a spike gets both shares, which tell whether the extra posts lean one way (a swing building) or
are more of the usual mix (news, a launch, a bot).

`chart_spec` (pure) decides what is drawn; `chart_figure` draws it. matplotlib is imported inside
`chart_figure`, so importing this module (and the worker) stays cheap and only a worker that
actually notifies pays for it. The object-oriented `Figure` API with an explicit Agg canvas is used
instead of pyplot: it keeps no global figure state, so rendering is safe from `asyncio.to_thread`
workers, and it never needs a display.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Iterable, Mapping, NamedTuple, Sequence

from stream.timefmt import epoch, format_duration
from stream.windows import SliceCol, per_post

if TYPE_CHECKING:
    from matplotlib.figure import Figure


class Point(NamedTuple):
    """One slice: its start (epoch s), its posts, and its negative and positive shares (0-1). The
    shares are None where the slice holds no posts: a gap in the line, not a share of 0, which at a
    quiet scope's volumes drew a dip to 0% in most slices."""

    t: int
    posts: int
    negative: float | None
    positive: float | None


@dataclass(frozen=True)
class Line:
    """One line of the share panel: percent per point, None a gap; its baseline (percent) where
    the notice compares that share against one."""

    label: str
    color: str
    values: list[float | None]
    baseline: float | None = None


@dataclass(frozen=True)
class ChartSpec:
    """What the chart draws, decided without matplotlib (see `chart_spec`)."""

    title: str
    times: list[int]  # slice starts, epoch s
    posts: list[int]
    bucket_s: int  # a slice's width
    lines: list[Line]  # the share panel
    share_label: str
    share_top: float  # the share axis runs from 0 to this (percent)
    posts_label: str
    posts_baseline: float | None  # posts per slice: the baseline rate a volume notice compares against
    window: tuple[float, float]  # the alert window, shaded (epoch s)
    span: tuple[float, float]  # the x axis (epoch s)


SPAN_S = 24 * 3600
_DEFAULT_BUCKET_S = 60
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Which share each sentiment kind fires on (its record's `metric`); other kinds draw both shares.
SHARE_OF = {"sentiment_drop": "negative", "sentiment_surge": "positive"}
_COLOR = {"negative": "tab:red", "positive": "tab:green"}


def chart_points(slices: Sequence[Sequence[float]], first: int, step_s: int) -> list[Point]:
    """The chart's points from a slice table whose rows are `step_s` seconds from `first`."""
    negative, positive = per_post(slices, SliceCol.NEGATIVE), per_post(slices, SliceCol.POSITIVE)
    return [Point(first + i * step_s, int(row[SliceCol.N]), negative[i], positive[i]) for i, row in enumerate(slices)]


def baselines_of(members: Iterable[Mapping[str, Any]], scope: str) -> dict[str, float]:
    """What the notice compares `scope`'s measures against, by metric (`negative_share`, `posts`
    ...), from its alert records or incident members (their `metric` and `baseline`). Those
    written before the fields existed give none."""
    return {m["metric"]: float(m["baseline"]) for m in members
            if m.get("scope") == scope and m.get("metric") and m.get("baseline") is not None}


def chart_spec(
    points: Sequence[Point],
    window_start: float | str,
    window_end: float | str,
    scope: str,
    kind: str,
    *,
    baselines: Mapping[str, float] | None = None,
    window_s: int = 0,
) -> ChartSpec:
    """What to draw for an alert of `kind` on `scope`. `baselines` (`baselines_of`) are drawn
    where a panel plots their metric; a volume's is posts per `window_s`, drawn per slice."""
    baselines = baselines or {}
    start, end = _epoch(window_start), _epoch(window_end)
    ordered = sorted((Point._make(p) for p in points), key=lambda p: p.t)  # plain tuples too
    bucket_s = _bucket_width(ordered)
    fired = SHARE_OF.get(kind)
    lines = [Line(f"{label} share", _COLOR[label], [_percent(getattr(p, label)) for p in ordered], _percent(baselines.get(f"{label}_share")))
             for label in ([fired] if fired else ["negative", "positive"])]
    posts_baseline = baselines["posts"] * bucket_s / window_s if "posts" in baselines and window_s > 0 else None
    drawn = [v for line in lines for v in [*line.values, line.baseline] if v is not None]
    return ChartSpec(
        title=f"{scope} - {kind}",
        times=[p.t for p in ordered],
        posts=[p.posts for p in ordered],
        bucket_s=bucket_s,
        lines=lines,
        share_label=f"{fired} share (%)" if fired else "share of posts (%)",
        # Room above the highest point, but never past 100%; a quiet share keeps a readable scale.
        share_top=min(100.0, max(5.0, 1.15 * max(drawn))) if drawn else 100.0,
        posts_label=f"posts per {format_duration(bucket_s)}",
        posts_baseline=posts_baseline,
        window=(start, end),
        # Always the 24 h before the window's end, so charts of different alerts compare at a glance.
        span=(end - SPAN_S, end + bucket_s),
    )


def chart_figure(spec: ChartSpec) -> Figure:
    """The figure (8x4 in at 100 dpi) that draws `spec`. Works for empty and single-point input."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 4), dpi=100)
    FigureCanvasAgg(fig)
    share_ax, volume_ax = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": (3, 2)})
    # The title names a forum's channel or source: `$` in it is a dollar sign, never mathtext.
    fig.suptitle(spec.title, fontsize=10, parse_math=False)

    times = [_dt(t) for t in spec.times]
    if times:
        for line in spec.lines:
            values = [math.nan if v is None else v for v in line.values]  # NaN breaks the line
            # Dots as well as the line: a slice between two empty ones has no neighbour to draw a line to.
            share_ax.plot(times, values, color=line.color, linewidth=1.2, marker="o", markersize=2.5, label=line.label)
        # Bars start at the bucket start; matplotlib's date unit is days.
        volume_ax.bar(times, spec.posts, width=spec.bucket_s / 86400, align="edge", color="tab:gray")
    else:
        share_ax.text(0.5, 0.5, "no data", transform=share_ax.transAxes, ha="center", va="center", color="gray")
    alone = len(spec.lines) == 1  # beside another share, a baseline says whose it is, and takes its colour
    for line in (line for line in spec.lines if line.baseline is not None):
        share_ax.axhline(line.baseline, color="black" if alone else line.color, linestyle="--", linewidth=0.9, alpha=0.7,
                         label=f"{'' if alone else line.label + ' '}baseline {line.baseline:.1f}%")
    if spec.posts_baseline is not None:
        volume_ax.axhline(spec.posts_baseline, color="black", linestyle="--", linewidth=0.9, alpha=0.7,
                          label=f"baseline {spec.posts_baseline:.1f}")
        volume_ax.legend(fontsize=7, loc="upper left")
    if share_ax.get_legend_handles_labels()[0]:
        share_ax.legend(fontsize=7, loc="upper left")

    for ax in (share_ax, volume_ax):
        ax.axvspan(_dt(spec.window[0]), _dt(spec.window[1]), color="tab:orange", alpha=0.15, linewidth=0)
        ax.grid(True, alpha=0.3)
        ax.tick_params(labelsize=7)
    share_ax.set_xlim(_dt(spec.span[0]), _dt(spec.span[1]))
    share_ax.set_ylim(0, spec.share_top)
    volume_ax.set_ylim(bottom=0)
    share_ax.set_ylabel(spec.share_label, fontsize=8)
    volume_ax.set_ylabel(spec.posts_label, fontsize=8)
    volume_ax.set_xlabel("UTC", fontsize=7)
    locator = AutoDateLocator()
    volume_ax.xaxis.set_major_locator(locator)
    volume_ax.xaxis.set_major_formatter(ConciseDateFormatter(locator))
    fig.tight_layout()
    return fig


def render_chart(points: Sequence[Point], window_start: float | str, window_end: float | str, scope: str, kind: str, **options: Any) -> bytes:
    """PNG bytes of the chart `chart_spec` decides from the same arguments."""
    fig = chart_figure(chart_spec(points, window_start, window_end, scope, kind, **options))
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _percent(share: float | None) -> float | None:
    return None if share is None else 100 * share


def _bucket_width(points: Sequence[Point]) -> int:
    """The smallest gap between buckets (the bucket width when no bucket is missing)."""
    gaps = [b.t - a.t for a, b in zip(points, points[1:]) if b.t > a.t]
    return min(gaps) if gaps else _DEFAULT_BUCKET_S


def _epoch(value: float | str) -> float:
    """Epoch seconds from a number or an ISO-8601 string (the record carries ISO strings)."""
    return epoch(value) if isinstance(value, str) else float(value)


def _dt(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=timezone.utc)
