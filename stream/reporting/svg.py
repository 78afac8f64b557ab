"""Inline SVG charts for the daily report (pure): plain strings, no JavaScript, no fonts or images
fetched, so the report reads offline and in mail clients that show inline SVG.

Every text that came from data (scopes, incident ids) goes through `html.escape`.
"""

from __future__ import annotations

import html
from typing import Callable, Sequence

from stream.reporting.daily import DayRow, IncidentRow
from stream.reporting.prices import LagResult, noise_level

COLOURS = {"positive": "#2e7d32", "neutral": "#9e9e9e", "negative": "#c62828", "index": "#1565c0", "incident": "#e65100"}
FONT = 'font-family="sans-serif" font-size="11"'


def _esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def _svg(width: int, height: int, label: str, body: list[str]) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
            f'role="img" aria-label="{_esc(label)}">' + "".join(body) + "</svg>")


def day_chart(scope: str, rows: Sequence[DayRow], incidents_by_day: Sequence[Sequence[IncidentRow]], width: int = 640, height: int = 230,
              name: Callable[[str], str] = str) -> str:
    """Posts per day as bars stacked by label (left axis), the sentiment index as a line (right
    axis, -1..+1), and a marker over each day that opened an incident. `name` shows the scope and
    the incidents' ids and root scopes (the report's `shown`: defanged)."""
    left, right, top, bottom = 44, 44, 24, 36
    plot_w, plot_h = width - left - right, height - top - bottom
    days = max(len(rows), 1)
    slot = plot_w / days
    peak = max([r.posts for r in rows] + [1])
    body = [f'<rect x="0" y="0" width="{width}" height="{height}" fill="#ffffff"/>',
            f'<text x="{left}" y="14" {FONT} font-weight="bold">{_esc(name(scope))}: posts per day by label, sentiment index</text>']
    body += _axes(left, top, plot_w, plot_h, peak)
    every = max(1, round(days / 10))  # at most ~10 date labels
    for i, row in enumerate(rows):
        x = left + i * slot
        body += _stacked_bar(row, x + slot * 0.15, slot * 0.7, top, plot_h, peak)
        if i % every == 0:
            body.append(f'<text x="{x + slot / 2:.1f}" y="{top + plot_h + 14}" {FONT} text-anchor="middle">{_esc(row.date[5:])}</text>')
        found = incidents_by_day[i] if i < len(incidents_by_day) else ()
        if found:
            tip = "; ".join(f"{name(inc.incident_id)} {name(inc.root_scope)} {inc.severity} {inc.state}" for inc in found)
            cx = x + slot / 2
            body.append(f'<path d="M{cx - 5:.1f},{top - 9} L{cx + 5:.1f},{top - 9} L{cx:.1f},{top - 1} Z" fill="{COLOURS["incident"]}">'
                        f'<title>{_esc(f"{len(found)} incident(s): {tip}")}</title></path>')
    body.append(_index_line(rows, left, top, slot, plot_h))
    body.append(_legend(left, height - 6))
    return _svg(width, height, f"{name(scope)} daily chart", body)


def _axes(left: int, top: int, plot_w: float, plot_h: float, peak: int) -> list[str]:
    mid = top + plot_h / 2
    return [
        f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w:.1f}" y2="{top + plot_h}" stroke="#333"/>',
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + plot_h}" stroke="#333"/>',
        f'<line x1="{left}" y1="{mid:.1f}" x2="{left + plot_w:.1f}" y2="{mid:.1f}" stroke="#bbb" stroke-dasharray="3,3"/>',
        f'<text x="{left - 4}" y="{top + 4}" {FONT} text-anchor="end">{peak}</text>',
        f'<text x="{left - 4}" y="{top + plot_h}" {FONT} text-anchor="end">0</text>',
        f'<text x="{left + plot_w + 4:.1f}" y="{top + 4}" {FONT}>+1</text>',
        f'<text x="{left + plot_w + 4:.1f}" y="{mid + 4:.1f}" {FONT}>0</text>',
        f'<text x="{left + plot_w + 4:.1f}" y="{top + plot_h}" {FONT}>-1</text>',
    ]


def _stacked_bar(row: DayRow, x: float, w: float, top: int, plot_h: float, peak: int) -> list[str]:
    out, base = [], top + plot_h
    for label in ("negative", "neutral", "positive"):
        h = plot_h * row.count(label) / peak
        if h > 0:
            base -= h
            out.append(f'<rect x="{x:.1f}" y="{base:.1f}" width="{w:.1f}" height="{h:.1f}" fill="{COLOURS[label]}">'
                       f'<title>{_esc(row.date)} {label}: {row.count(label)}</title></rect>')
    return out


def _index_line(rows: Sequence[DayRow], left: int, top: int, slot: float, plot_h: float) -> str:
    """The index as a polyline broken at days without posts (no line drawn through unknowns)."""
    segments: list[list[str]] = [[]]
    for i, row in enumerate(rows):
        if row.index is None:
            segments.append([])
            continue
        y = top + plot_h * (1 - row.index) / 2
        segments[-1].append(f"{left + (i + 0.5) * slot:.1f},{y:.1f}")
    out = []
    for seg in segments:
        if len(seg) > 1:
            out.append(f'<polyline points="{" ".join(seg)}" fill="none" stroke="{COLOURS["index"]}" stroke-width="2"/>')
        for point in seg:
            cx, cy = point.split(",")
            out.append(f'<circle cx="{cx}" cy="{cy}" r="2.5" fill="{COLOURS["index"]}"/>')
    return "".join(out)


def _legend(x: int, y: int) -> str:
    items = [("positive", "positive"), ("neutral", "neutral"), ("negative", "negative"), ("index", "sentiment index (right axis)"),
             ("incident", "incident opened")]
    out, pos = [], x
    for key, text in items:
        out.append(f'<rect x="{pos}" y="{y - 8}" width="9" height="9" fill="{COLOURS[key]}"/>'
                   f'<text x="{pos + 12}" y="{y}" {FONT}>{text}</text>')
        pos += 22 + 6 * len(text)
    return "".join(out)


def lag_chart(ticker: str, results: Sequence[LagResult], width: int = 360, height: int = 200) -> str:
    """Correlation by lag as bars (-1..+1) with their 95% intervals, over a grey band of what
    uncorrelated series reach at that n one time in twenty."""
    left, top, plot_h = 40, 24, height - 24 - 44
    plot_w = width - left - 10
    slot = plot_w / max(len(results), 1)

    def y(r: float) -> float:
        return top + plot_h * (1 - r) / 2

    body = [f'<rect x="0" y="0" width="{width}" height="{height}" fill="#ffffff"/>',
            f'<text x="{left}" y="14" {FONT} font-weight="bold">{_esc(ticker)}: index vs the return lag days later</text>',
            f'<text x="{left}" y="{height - 4}" {FONT} fill="#555">bar: r; line: 95% interval; grey: noise level</text>',
            f'<line x1="{left}" y1="{y(0):.1f}" x2="{left + plot_w:.1f}" y2="{y(0):.1f}" stroke="#333"/>',
            f'<text x="{left - 4}" y="{y(1) + 4:.1f}" {FONT} text-anchor="end">+1</text>',
            f'<text x="{left - 4}" y="{y(0) + 4:.1f}" {FONT} text-anchor="end">0</text>',
            f'<text x="{left - 4}" y="{y(-1):.1f}" {FONT} text-anchor="end">-1</text>']
    for i, res in enumerate(results):
        x = left + i * slot
        noise = noise_level(res.n)
        if noise is not None:
            body.append(f'<rect x="{x + 2:.1f}" y="{y(noise):.1f}" width="{slot - 4:.1f}" height="{y(-noise) - y(noise):.1f}" fill="#eeeeee"/>')
        if res.r is not None:
            top_y, bottom_y = sorted((y(res.r), y(0)))
            body.append(f'<rect x="{x + slot * 0.3:.1f}" y="{top_y:.1f}" width="{slot * 0.4:.1f}" height="{max(bottom_y - top_y, 0.5):.1f}" '
                        f'fill="{COLOURS["index"]}"><title>lag {res.lag}: r = {res.r:+.2f}, n = {res.n}</title></rect>')
        if res.low is not None and res.high is not None:
            cx = x + slot / 2
            body.append(f'<line x1="{cx:.1f}" y1="{y(res.high):.1f}" x2="{cx:.1f}" y2="{y(res.low):.1f}" stroke="#333"/>')
        body.append(f'<text x="{x + slot / 2:.1f}" y="{top + plot_h + 14}" {FONT} text-anchor="middle">lag {res.lag} (n={res.n})</text>')
    return _svg(width, height, f"{ticker} lead-lag chart", body)
