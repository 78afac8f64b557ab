"""What the console shows, computed from slice tables and incident summaries (pure, no I/O).

A slice table is `WindowStore.slices`' form: one row per consecutive slice of event time, columns
`windows.SLICE_FIELDS` (n, positive, negative, neutral, score_sum, score_sq).

"How abnormal" a scope is, for the overview's order: the largest |z| of its current window's
negative or positive share against the baseline share (a binomial standard error on the current
window's posts), and of its volume against the baseline's rate (Poisson). It is a ranking, not the
detector's verdict: the detector's own evidence is shown beside it (`evidence`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np

from stream.alerts.message import escape_post_text
from stream.alerts.sequential import SeqConfig, SeqState, verdicts
from stream.windows import Sample, SliceCol

SAMPLE_CHARS = 280  # a sample post on the scope page: longer than in a chat message


@dataclass(frozen=True)
class ScopeRow:
    """One line of the overview."""

    scope: str
    posts: int  # in the current window
    baseline_posts_per_window: float
    negative: float  # shares in the current window
    positive: float
    baseline_negative: float
    baseline_positive: float
    mean_score: float
    baseline_mean_score: float
    abnormality: float  # max |z| (see the module docstring)
    spark: list[float]  # negative share per slice, oldest first (None-free: empty slices give 0)
    spark_posts: list[int]
    incident: str | None = None  # the open incident this scope is part of
    incident_severity: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


def _share(hits: float, n: float) -> float:
    return hits / n if n else 0.0


def _z_share(p: float, p0: float, n: float) -> float:
    if n <= 0 or p0 <= 0.0 or p0 >= 1.0:
        return 0.0
    return (p - p0) / math.sqrt(p0 * (1 - p0) / n)


def overview_row(scope: str, table: np.ndarray, *, window_slices: int = 1) -> ScopeRow:
    """The last `window_slices` rows are the current window, the rows before it the baseline."""
    now, base = table[-window_slices:].sum(axis=0), table[:-window_slices].sum(axis=0)
    n, nb = float(now[SliceCol.N]), float(base[SliceCol.N])
    base_windows = max((len(table) - window_slices) / window_slices, 1.0)
    neg, pos = _share(now[SliceCol.NEGATIVE], n), _share(now[SliceCol.POSITIVE], n)
    neg0, pos0 = _share(base[SliceCol.NEGATIVE], nb), _share(base[SliceCol.POSITIVE], nb)
    rate = nb / base_windows
    z_volume = (n - rate) / math.sqrt(rate) if rate > 0 else 0.0
    abnormality = max(abs(_z_share(neg, neg0, n)), abs(_z_share(pos, pos0, n)), abs(z_volume))
    counts = table[:, SliceCol.N]
    spark = [round(_share(row[SliceCol.NEGATIVE], row[SliceCol.N]), 4) for row in table]
    return ScopeRow(
        scope=scope, posts=int(n), baseline_posts_per_window=round(rate, 2), negative=round(neg, 4), positive=round(pos, 4),
        baseline_negative=round(neg0, 4), baseline_positive=round(pos0, 4),
        mean_score=round(_share(now[SliceCol.SCORE_SUM], n), 4), baseline_mean_score=round(_share(base[SliceCol.SCORE_SUM], nb), 4),
        abnormality=round(abnormality, 2), spark=spark, spark_posts=[int(c) for c in counts],
    )


def open_incident_of(incidents: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """scope -> the open incident it is the root or a member of."""
    found: dict[str, dict[str, Any]] = {}
    for incident in incidents:
        if incident.get("state") != "open":
            continue
        for scope in [incident["root_scope"], *(m["scope"] for m in incident["members"])]:
            found.setdefault(scope, incident)
    return found


def overview(rows: Sequence[ScopeRow], incidents: Iterable[dict[str, Any]]) -> list[ScopeRow]:
    """Rows with their open incident, scopes in an open incident first, then the most abnormal."""
    by_scope = open_incident_of(incidents)
    marked = [
        ScopeRow(**{**row.as_dict(), "incident": by_scope[row.scope]["incident_id"], "incident_severity": by_scope[row.scope]["severity"]})
        if row.scope in by_scope else row
        for row in rows
    ]
    return sorted(marked, key=lambda r: (r.incident is None, -r.abnormality, r.scope))


@dataclass(frozen=True)
class Series:
    """Columns for a chart: slice starts (epoch s) and per-slice values (None where no posts)."""

    t: list[int]
    posts: list[int]
    negative: list[float | None]
    positive: list[float | None]
    neutral: list[float | None]
    mean_score: list[float | None]

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


def series(table: np.ndarray, first: int, width: int) -> Series:
    def col(c: SliceCol) -> list[float | None]:
        return [round(float(row[c]) / row[SliceCol.N], 4) if row[SliceCol.N] else None for row in table]

    return Series(
        t=[first + i * width for i in range(len(table))], posts=[int(row[SliceCol.N]) for row in table],
        negative=col(SliceCol.NEGATIVE), positive=col(SliceCol.POSITIVE), neutral=col(SliceCol.NEUTRAL),
        mean_score=col(SliceCol.SCORE_SUM),
    )


@dataclass(frozen=True)
class Span:
    """An incident's time on a scope's chart, event time."""

    incident_id: str
    start: int
    end: int | None  # None: still open
    severity: str
    kinds: list[str] = field(default_factory=list)


def spans(incidents: Iterable[dict[str, Any]], scope: str) -> list[Span]:
    """Incidents that involve `scope`, from their opening to their last transition (open: no end)."""
    found = []
    for incident in incidents:
        kinds = sorted({m["kind"] for m in incident["members"] if m["scope"] == scope})
        if incident["root_scope"] != scope and not kinds:
            continue
        end = None if incident["state"] == "open" else int(incident["at"])
        found.append(Span(incident["incident_id"], int(incident["opened"]), end, incident["severity"], kinds))
    return sorted(found, key=lambda s: s.start)


@dataclass(frozen=True)
class Evidence:
    """The sequential detector's statistic for one kind against its threshold, now."""

    kind: str
    nats: float
    threshold: float
    firing: bool

    @property
    def ratio(self) -> float:
        return self.nats / self.threshold if self.threshold else 0.0


def evidence(state_json: dict[str, Any] | None, *, at: int, step_s: int, per_window: int, config: SeqConfig, fire_z: float) -> list[Evidence]:
    """Per kind, the evidence (nats) the detector holds now and the threshold b it fires at."""
    state = SeqState.from_json(state_json)
    if state is None:
        return []
    b = config.b
    out = []
    for kind, verdict in verdicts(state, at=at, step_s=step_s, per_window=per_window, config=config, fire_z=fire_z).items():
        nats = verdict.signal.strength / fire_z * b
        out.append(Evidence(kind, round(nats, 2), round(b, 2), nats >= b))
    return out


def samples(found: Sequence[Sample], count: int) -> dict[str, list[dict[str, Any]]]:
    """The most negative and most positive posts, their text made inert as in notifications."""
    def shown(s: Sample) -> dict[str, Any]:
        return {"id": escape_post_text(s.id, 80), "text": escape_post_text(s.text, SAMPLE_CHARS), "label": s.label, "score": round(s.score, 3)}

    ordered = sorted(found, key=lambda s: (s.score, s.id))
    return {"negative": [shown(s) for s in ordered[:count] if s.score < 0],
            "positive": [shown(s) for s in reversed(ordered[-count:]) if s.score > 0]}


def timeline(entries: Iterable[dict[str, Any]], incident_id: str) -> list[dict[str, Any]]:
    """The transitions and notices of one incident, oldest first, from outbox entries
    (`{"records": [...], "notice": {...} | None}`)."""
    events: list[dict[str, Any]] = []
    for entry in entries:
        for record in entry.get("records") or []:
            if record.get("incident_id") == incident_id:
                events.append({"type": "transition", "at": record.get("window_end", ""), "scope": record.get("scope"),
                               "kind": record.get("kind"), "state": record.get("state"), "severity": record.get("severity"),
                               "zscore": record.get("zscore"), "posts": record.get("posts")})
        notice = entry.get("notice")
        if notice and notice.get("incident_id") == incident_id:
            events.append({"type": "notice", "at": notice.get("at", ""), "reason": notice.get("reason"), "state": notice.get("state"),
                           "severity": notice.get("severity")})
    return sorted(events, key=lambda e: e["at"])


def spark_points(values: Sequence[float], width: int = 120, height: int = 24) -> str:
    """An SVG polyline's points for a sparkline of shares in [0, 1] (drawn server-side: a table of
    500 scopes would be slow as 500 chart objects)."""
    if not values:
        return ""
    step = width / max(len(values) - 1, 1)
    return " ".join(f"{i * step:.1f},{height - min(max(v, 0.0), 1.0) * height:.1f}" for i, v in enumerate(values))
