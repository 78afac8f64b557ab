"""What the console shows, computed from slice tables and incident summaries (pure, no I/O).

A slice table is `WindowStore.slices`' form: one row per consecutive slice of event time, columns
`windows.SLICE_FIELDS` (n, positive, negative, neutral, score_sum, score_sq).

"How abnormal" a scope is, for the overview's order: the largest |z| of its current window's
negative or positive share against the baseline share (a binomial standard error on the current
window's posts), and of its volume against the baseline's rate (Poisson). It is a ranking, not the
detector's verdict: the detector's own evidence is shown beside it (`evidence`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Iterable, Sequence

import numpy as np

from stream.alerts.judging import AlertConfig, BinAt, judge_sequential
from stream.alerts.message import LATE_S, escape_post_text, measure
from stream.alerts.message import _span as span_words  # the notices' words for how far behind, shared
from stream.alerts.sequential import SeqConfig, SeqState, verdicts
from stream.timefmt import epoch, shown
from stream.windows import Sample, SliceCol, distinct_samples, matches_scope, per_post

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
    spark_points: str  # the sparkline as SVG polyline points
    incident: str | None = None  # the open incident this scope is part of
    incident_severity: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


def _ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.divide(a, b, out=np.zeros_like(a, dtype=np.float64), where=b > 0)


def _z_share(p: np.ndarray, p0: np.ndarray, n: np.ndarray) -> np.ndarray:
    ok = (n > 0) & (p0 > 0.0) & (p0 < 1.0)
    se = np.sqrt(np.where(ok, p0 * (1 - p0) / np.where(n > 0, n, 1.0), 1.0))
    return np.where(ok, (p - p0) / se, 0.0)


def overview_rows(scopes: Sequence[str], tables: np.ndarray, *, window_slices: int = 1, covered: float = 1.0) -> list[ScopeRow]:
    """One row per scope from `tables` (scopes x slices x SLICE_FIELDS), all scopes at once (500
    scopes one by one cost more than reading them). The last `window_slices` slices of each are the
    current window, the slices before it the baseline. `covered`: the fraction of the current window
    that has happened (its last slice may be the hour in progress), so the expected volume is not
    that of a whole window."""
    if not len(scopes):
        return []
    now, base = tables[:, -window_slices:].sum(axis=1), tables[:, :-window_slices].sum(axis=1)
    n, nb = now[:, SliceCol.N], base[:, SliceCol.N]
    base_windows = max((tables.shape[1] - window_slices) / window_slices, 1.0) / max(min(covered, 1.0), 1e-3)
    neg, pos = _ratio(now[:, SliceCol.NEGATIVE], n), _ratio(now[:, SliceCol.POSITIVE], n)
    neg0, pos0 = _ratio(base[:, SliceCol.NEGATIVE], nb), _ratio(base[:, SliceCol.POSITIVE], nb)
    mean, mean0 = _ratio(now[:, SliceCol.SCORE_SUM], n), _ratio(base[:, SliceCol.SCORE_SUM], nb)
    rate = nb / base_windows
    z_volume = np.where(rate > 0, (n - rate) / np.sqrt(np.where(rate > 0, rate, 1.0)), 0.0)
    abnormality = np.max(np.abs([_z_share(neg, neg0, n), _z_share(pos, pos0, n), z_volume]), axis=0)
    shares = _ratio(tables[:, :, SliceCol.NEGATIVE], tables[:, :, SliceCol.N])
    spark, points = np.round(shares, 4).tolist(), spark_points(shares)
    counts = tables[:, :, SliceCol.N].astype(np.int64).tolist()
    cols = [np.round(c, digits).tolist() for c, digits in
            ((rate, 2), (neg, 4), (pos, 4), (neg0, 4), (pos0, 4), (mean, 4), (mean0, 4), (abnormality, 2))]
    return [
        ScopeRow(scope=scope, posts=int(n[i]), baseline_posts_per_window=cols[0][i], negative=cols[1][i], positive=cols[2][i],
                 baseline_negative=cols[3][i], baseline_positive=cols[4][i], mean_score=cols[5][i], baseline_mean_score=cols[6][i],
                 abnormality=cols[7][i], spark=spark[i], spark_posts=counts[i], spark_points=points[i])
        for i, scope in enumerate(scopes)
    ]


def overview_row(scope: str, table: np.ndarray, *, window_slices: int = 1, covered: float = 1.0) -> ScopeRow:
    return overview_rows([scope], table[np.newaxis], window_slices=window_slices, covered=covered)[0]


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
        replace(row, incident=by_scope[row.scope]["incident_id"], incident_severity=by_scope[row.scope]["severity"])
        if row.scope in by_scope else row
        for row in rows
    ]
    return sorted(marked, key=lambda r: (r.incident is None, -r.abnormality, r.scope))


def scope_matches(scope: str, query: str) -> bool:
    """The overview's filter: a glob such as `asset:*` (as silences take) when the query holds one,
    else a part of the scope's name; either in any case. A filter only narrows what is shown, so
    `*eth*` finds `asset:ETH` (a silence's pattern, which holds notifications back, matches with case)."""
    scope, query = scope.casefold(), query.casefold()
    if any(c in query for c in "*?["):
        return matches_scope(scope, query)
    return query in scope


def page_of(rows: Sequence[ScopeRow], query: str = "", offset: int = 0, limit: int | None = None) -> tuple[list[ScopeRow], int]:
    """The rows matching `query`, in their order, from `offset` for at most `limit` (None: all),
    and how many match in all."""
    found = [r for r in rows if scope_matches(r.scope, query)] if query else list(rows)
    end = None if limit is None else offset + limit
    return found[offset:end], len(found)


# The time one point of a scope's share, volume and score charts may cover, finest first: spans a
# reader can name ("per hour"), each a whole number of the store's buckets where the bucket divides it.
CHART_STEPS = (60, 5 * 60, 15 * 60, 3600, 3 * 3600, 6 * 3600, 12 * 3600, 86400)
# At most this many points a chart. On the demo stream asset:ETH has 1.4 posts a 5-minute point over
# its last day: its shares jumped between 0 and 100% from point to point, noise that hid the swing. An
# hour holds about 16, so a day's chart at 24 hourly points reads as a curve; an hour's span (60
# points) still keeps its minutes.
CHART_MAX_POINTS = 60


def chart_step(span_s: int, bucket_s: int) -> int:
    """The time one point covers on a chart over `span_s`: the finest of the store's bucket and
    CHART_STEPS (those a whole number of buckets) that draws the span in CHART_MAX_POINTS points or
    fewer. A span longer than CHART_MAX_POINTS days gets a whole number of days a point.
    Shorter spans keep finer points: an hour's chart stays per minute."""
    steps = [bucket_s, *(s for s in CHART_STEPS if s > bucket_s and s % bucket_s == 0)]
    for step in steps:
        if span_s <= step * CHART_MAX_POINTS:
            return step
    coarsest = steps[-1]
    return -(-span_s // (coarsest * CHART_MAX_POINTS)) * coarsest


def step_words(step_s: int) -> str:
    """What one point covers, for a chart's labels: `hour`, `5 minutes`, `day`, `90 seconds`."""
    for size, unit in ((86400, "day"), (3600, "hour"), (60, "minute")):
        if step_s % size == 0:
            return unit if step_s == size else f"{step_s // size} {unit}s"
    return "second" if step_s == 1 else f"{step_s} seconds"


@dataclass(frozen=True)
class Series:
    """Columns for a chart: slice starts (epoch s) and per-slice values (None where no posts), and
    what one slice covers (`step` seconds, `per` in words) for the chart to say."""

    t: list[int]
    posts: list[int]
    negative: list[float | None]
    positive: list[float | None]
    neutral: list[float | None]
    mean_score: list[float | None]
    step: int
    per: str

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


def series(table: np.ndarray, first: int, width: int) -> Series:
    """A chart's columns from a slice table whose rows are `width` seconds from `first`: each slice's
    shares and mean score per post (`windows.per_post`, as the notification's chart has them)."""
    def col(c: SliceCol) -> list[float | None]:
        return [None if v is None else round(v, 4) for v in per_post(table, c)]

    return Series(
        t=[first + i * width for i in range(len(table))], posts=[int(row[SliceCol.N]) for row in table],
        negative=col(SliceCol.NEGATIVE), positive=col(SliceCol.POSITIVE), neutral=col(SliceCol.NEUTRAL),
        mean_score=col(SliceCol.SCORE_SUM), step=width, per=step_words(width),
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
    return [] if state is None else evidence_of(state, at=at, step_s=step_s, per_window=per_window, config=config, fire_z=fire_z)


def evidence_of(state: SeqState, *, at: int, step_s: int, per_window: int, config: SeqConfig, fire_z: float) -> list[Evidence]:
    b = config.b
    out = []
    for kind, verdict in verdicts(state, at=at, step_s=step_s, per_window=per_window, config=config, fire_z=fire_z).items():
        nats = verdict.signal.strength / fire_z * b
        out.append(Evidence(kind, round(nats, 2), round(b, 2), nats >= b))
    return out


def evidence_series(scope: str, bin_at: BinAt, boundaries: Sequence[int], config: AlertConfig, points: int = 288) -> dict[str, Any]:
    """The sequential detector replayed over `boundaries` from the scope's step bins: its evidence
    per kind at about `points` of them, for the chart of the statistic against its threshold. It
    starts fresh at the first boundary with the baseline the bins hold, as a new scope would, so its
    first hours can differ from the live detector's, which has carried its state longer."""
    incidents: dict[str, Any] = {}
    state: SeqState | None = None
    per_window = config.window_s // config.step_s
    every = max(len(boundaries) // points, 1)  # the state moves every step; the chart needs fewer
    out: dict[str, Any] = {"t": [], "threshold": round(config.sequential.b, 2)}
    for i, boundary in enumerate(boundaries):
        incidents, state, _ = judge_sequential(scope, incidents, state, bin_at, [boundary], config, "")
        assert state is not None
        if (len(boundaries) - 1 - i) % every:
            continue
        out["t"].append(boundary)
        for e in evidence_of(state, at=boundary, step_s=config.step_s, per_window=per_window, config=config.sequential,
                             fire_z=config.thresholds.fire_z):
            out.setdefault(e.kind, []).append(e.nats)
    return out


def incident_posts_span(incident: dict[str, Any], window_s: int) -> tuple[int, int] | None:
    """Where to find the posts behind an incident: its root's posts over one alert window from the
    root's earliest onset (the posts that made it fire), or from any member's if the root has none.
    Without onsets (the zscore detector records none) the window that ended when it opened: the
    one that fired. None for a summary with neither."""
    members = incident.get("members") or []
    for chosen in ([m for m in members if m.get("scope") == incident.get("root_scope")], members):
        onsets = []
        for m in chosen:
            try:
                onsets.append(int(epoch(m["onset"])))
            except (KeyError, TypeError, ValueError):
                continue
        if onsets:
            return min(onsets), min(onsets) + window_s
    opened = incident.get("opened")
    return (int(opened) - window_s, int(opened)) if isinstance(opened, (int, float)) else None


def samples(found: Sequence[Sample], count: int) -> dict[str, list[dict[str, Any]]]:
    """The most negative and most positive posts, their text made inert as in notifications; each
    text once, as notices show them (`distinct_samples`): copies of one raid text would fill the list."""
    def shown(s: Sample) -> dict[str, Any]:
        return {"id": escape_post_text(s.id, 80), "text": escape_post_text(s.text, SAMPLE_CHARS), "label": s.label, "score": round(s.score, 3)}

    ordered = sorted(found, key=lambda s: (s.score, s.id))
    negative = distinct_samples((s for s in ordered if s.score < 0), count)
    positive = distinct_samples((s for s in reversed(ordered) if s.score > 0), count)
    return {"negative": [shown(s) for s in negative], "positive": [shown(s) for s in positive]}


def timeline(entries: Iterable[dict[str, Any]], incident_id: str) -> list[dict[str, Any]]:
    """The transitions and notices of one incident, oldest first, from outbox entries
    (`{"records": [...], "notice": {...} | None}`)."""
    events: list[dict[str, Any]] = []
    for entry in entries:
        for record in entry.get("records") or []:
            if record.get("incident_id") == incident_id:
                events.append({"type": "transition", "at": record.get("window_end", ""), "scope": record.get("scope"),
                               "kind": record.get("kind"), "state": record.get("state"), "severity": record.get("severity"),
                               "zscore": record.get("zscore"), "posts": record.get("posts"), "measure": measure(record)})
        notice = entry.get("notice")
        if notice and notice.get("incident_id") == incident_id:
            events.append({"type": "notice", "at": notice.get("at", ""), "reason": notice.get("reason"), "state": notice.get("state"),
                           "severity": notice.get("severity")})
    return sorted(events, key=lambda e: e["at"])


SPARK_W, SPARK_H = 120, 24


def spark_points(shares: np.ndarray) -> list[str]:
    """Per row of `shares` (scopes x slices, each in [0, 1]), an SVG polyline's points for its
    sparkline. Drawn server-side (500 chart objects would be slow in the browser), one format call
    per scope: one per point cost more than reading the data."""
    if shares.size == 0:
        return [""] * len(shares)
    n = shares.shape[1]
    step = SPARK_W / max(n - 1, 1)
    row = " ".join(f"{round(i * step, 1)},{{}}" for i in range(n))
    ys = np.round(SPARK_H - np.clip(shares, 0.0, 1.0) * SPARK_H, 1).tolist()
    return [row.format(*y) for y in ys]


def behind(end: float | None, now: float) -> str:
    """What a page says when its figures (`end`: the end of the newest post's minute bucket) are well behind the wall clock, as a late notice does
    (message.late_lines, the same 15 minutes): the overview's "Now" and an incident's times are event
    time, and after a replay, a backlog or a stream gone quiet they read like the present. "" when
    the data is current or there is none."""
    if end is None or now - end <= LATE_S:
        return ""
    return (f"These figures run to {shown(end)} (event time), the end of the newest post's minute, {span_words(now - end)} before this page was "
            f"served at {shown(now)} (wall clock): these figures are that old (a replay, a backlog, or a stream gone quiet).")
