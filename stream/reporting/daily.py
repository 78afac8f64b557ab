"""The daily report's rows (pure): per scope and UTC day, from the daily roll-up tables that
`WindowStore.days_many` returns, and the incidents opened each day.

A roll-up row is (n, positive, negative, neutral, score_sum, score_sq) for one scope and UTC day.
The sentiment index of a day is its mean score (score = p(positive) - p(negative), in [-1, 1]).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

if TYPE_CHECKING:
    import numpy as np  # the store's day tables; this module reads them as rows of numbers

DAY_S = 86400
LABELS = ("positive", "negative", "neutral")
ALL = "all"
ASSET_PREFIX = "asset:"


def day_start(ts: float) -> int:
    """The UTC midnight at or before `ts` (epoch seconds)."""
    return int(math.floor(ts / DAY_S)) * DAY_S


def day_label(day: int) -> str:
    """'2026-10-01' for a UTC day start."""
    return datetime.fromtimestamp(day, tz=timezone.utc).strftime("%Y-%m-%d")


def day_span(newest: float, since_s: int | None, oldest: float | None = None) -> tuple[int, int]:
    """(first day start, number of days) of a report ending on the day of `newest`.

    With `since_s`, every UTC day that overlaps [newest - since_s, newest]; the roll-ups are whole
    days, so the first day counts all of its posts, not only those after newest - since_s. Days
    before `oldest` (the first day with data) are left out: a week's report of three days' data
    listed four empty days first. Without `since_s`, from the day of `oldest` (all the data)."""
    last = day_start(newest)
    if since_s is not None:
        first = day_start(newest - since_s)
        if oldest is not None:
            first = max(first, day_start(oldest))
    else:
        first = day_start(oldest if oldest is not None else newest)
    first = min(first, last)
    return first, (last - first) // DAY_S + 1


def parse_day(text: str) -> int:
    """'2026-10-01' -> that UTC day's start (`sentinel report --day`); ValueError otherwise."""
    try:
        parsed = datetime.strptime(text.strip(), "%Y-%m-%d")
    except ValueError:
        raise ValueError(f"{text!r} is not a UTC day as YYYY-MM-DD") from None
    return int(parsed.replace(tzinfo=timezone.utc).timestamp())


def ticker(scope: str) -> str | None:
    """'asset:BTC' -> 'BTC'; None for other scopes."""
    return scope[len(ASSET_PREFIX):] if scope.startswith(ASSET_PREFIX) else None


def report_scopes(scopes: Iterable[str]) -> list[str]:
    """The scopes a report shows: `all` (the whole market) first, then each asset by ticker.
    Channels and sources are left out: the report is about assets."""
    assets = sorted({s for s in scopes if ticker(s)})
    return [ALL, *assets]


@dataclass(frozen=True)
class DayRow:
    scope: str
    day: int  # UTC day start, epoch s
    posts: int
    positive: int
    negative: int
    neutral: int
    score_sum: float
    score_sq: float

    @property
    def date(self) -> str:
        return day_label(self.day)

    def count(self, label: str) -> int:
        return int(getattr(self, label))

    def share(self, label: str) -> float | None:
        """The label's share of the day's posts; None on a day without posts (not 0: unknown)."""
        return self.count(label) / self.posts if self.posts else None

    @property
    def index(self) -> float | None:
        """The sentiment index: the day's mean score; None without posts."""
        return self.score_sum / self.posts if self.posts else None

    @property
    def score_sd(self) -> float | None:
        """Standard deviation of the day's scores (population), from the sums of scores and squares."""
        if not self.posts:
            return None
        mean = self.score_sum / self.posts
        return math.sqrt(max(self.score_sq / self.posts - mean * mean, 0.0))


def rows_from_table(scope: str, first_day: int, table: Sequence[Sequence[float]] | np.ndarray) -> list[DayRow]:
    """One DayRow per roll-up table row (row i is the day first_day + i days)."""
    rows = []
    for i, values in enumerate(table):
        n, pos, neg, neu, ssum, ssq = (float(v) for v in values[:6])
        # Counts are integers in Redis (HINCRBY); the table carries them as floats.
        rows.append(DayRow(scope, first_day + i * DAY_S, round(n), round(pos), round(neg), round(neu), ssum, ssq))
    return rows


@dataclass(frozen=True)
class IncidentRow:
    """What the report shows of one incident (from `list_incidents`' summaries)."""

    incident_id: str
    root_scope: str
    opened: int  # event time, epoch s
    severity: str
    state: str
    market: bool
    kinds: tuple[str, ...]  # the kinds that fired on the root scope
    scopes: tuple[str, ...]  # every member scope, root included
    acked: str | None = None
    verdict: str | None = None  # the team's latest: real | false-alarm (stream/alerts/verdicts.py)
    ended: int | None = None  # event time it was declared over; None while open

    def open_at(self, ts: int) -> bool:
        """Opened before `ts` and not declared over before it."""
        return self.opened < ts and (self.ended is None or self.ended >= ts)

    @property
    def day(self) -> int:
        return day_start(self.opened)

    def involves(self, scope: str) -> bool:
        """An incident counts on a scope's row when rooted there or when the scope moved with it;
        on `all` every incident counts (it is the whole market's row)."""
        return scope == ALL or scope == self.root_scope or scope in self.scopes


def incident_from_summary(summary: Mapping[str, Any]) -> IncidentRow:
    members = summary.get("members") or []
    root = str(summary.get("root_scope", ""))
    # A resolved summary's `at` is when it was declared over (event time); an open one's, its last change.
    at = summary.get("at")
    ended = int(at) if summary.get("state") == "resolved" and isinstance(at, (int, float)) else None
    kinds = sorted({str(m["kind"]) for m in members if m.get("scope") == root})
    scopes = sorted({str(m["scope"]) for m in members} | {root})
    return IncidentRow(
        incident_id=str(summary["incident_id"]), root_scope=root, opened=int(summary["opened"]),
        severity=str(summary.get("severity", "")), state=str(summary.get("state", "")), market=bool(summary.get("market", False)),
        kinds=tuple(kinds), scopes=tuple(scopes), acked=summary.get("acked") or None,
        verdict=(summary.get("verdict") or {}).get("verdict") or None, ended=ended,
    )


@dataclass(frozen=True)
class Report:
    """Everything a rendering needs; built by `build_report`, read by stream/reporting/render.py."""

    first_day: int
    days: int
    scopes: tuple[str, ...]  # `all` first, then asset scopes
    rows: Mapping[str, Sequence[DayRow]]  # per scope, one row per day
    incidents: tuple[IncidentRow, ...]  # opened within the report's days, oldest first
    watermark: float | None  # the newest post's event time (None: no data)
    generated_at: float  # wall clock
    since: str | None = None  # the --since the report was asked for (None: all days in the data)
    data_from: int | None = None  # the first day with data, where --since reaches further back (those days are not shown)
    prices: Mapping[str, Any] | None = field(default=None)  # ticker -> prices.AssetPrices, with --prices
    # Opened before the first day and still open when it began, oldest first. The day rows count an
    # incident on the day it opened only, so without these a day that began inside one (an incident
    # across midnight, as the daily CronJob's report of the day after sees it) read as quiet.
    carried: tuple[IncidentRow, ...] = ()
    day_asked: bool = False  # `--day`: one UTC day named, not counted back from the newest post
    # Incidents opened before this event time are no longer kept (SENTINEL_RETENTION), where the report's
    # days reach back before it: its lists are short of them, said, not read as a quiet day.
    incidents_from: int | None = None

    @property
    def day_starts(self) -> list[int]:
        return [self.first_day + i * DAY_S for i in range(self.days)]

    @property
    def last_day(self) -> int:
        return self.first_day + (self.days - 1) * DAY_S

    def judged(self) -> str:
        """One sentence on the verdicts of the incidents listed ("" when none is)."""
        listed = len(self.incidents)
        if not listed:
            return ""
        real = sum(i.verdict == "real" for i in self.incidents)
        false_alarms = sum(i.verdict == "false-alarm" for i in self.incidents)
        incidents = f"{listed} incident{'' if listed == 1 else 's'}"
        if not real + false_alarms:
            return f"Verdicts: none yet on the {incidents} below (`sentinel verdict INCIDENT real|false-alarm`, or the console)."
        return f"Verdicts on the {incidents} below: {real} real, {false_alarms} false alarm{'' if false_alarms == 1 else 's'}, " \
               f"{listed - real - false_alarms} not judged."

    def incidents_on(self, scope: str, day: int) -> list[IncidentRow]:
        return [i for i in self.incidents if i.day == day and i.involves(scope)]

    def index_by_day(self, scope: str) -> dict[int, float]:
        """The scope's sentiment index on the days it has posts."""
        return {r.day: r.index for r in self.rows.get(scope, ()) if r.index is not None}

    def total_posts(self, scope: str) -> int:
        return sum(r.posts for r in self.rows.get(scope, ()))

    @property
    def quiet(self) -> list[str]:
        """The assets shown without a post in the report's days (the configured table's, listed all)."""
        return [s for s in self.scopes if s != ALL and not self.total_posts(s)]


def build_report(
    first_day: int, days: int, tables: Mapping[str, Sequence[Sequence[float]] | np.ndarray], incidents: Iterable[Mapping[str, Any]],
    *, watermark: float | None, generated_at: float, since: str | None = None, data_from: int | None = None,
    day_asked: bool = False, incidents_from: int | None = None, expected: Iterable[str] = (),
) -> Report:
    """A Report from roll-up tables (scope -> days rows) and incident summaries. Incidents opened
    outside the report's days are dropped, save those still open when the first day began (`carried`);
    scopes are ordered `all` first, then the assets with posts in those days and the `expected`
    tickers (the configured asset table's), those with 0 posts too."""
    empty = [[0.0] * 6] * days
    wanted = {f"{ASSET_PREFIX}{t}" for t in expected}
    rows = {s: rows_from_table(s, first_day, tables.get(s, empty)) for s in report_scopes([*tables, ALL, *wanted])}
    # An asset the table names is a row whether or not it was talked of: missing, a quiet BTC read as
    # a report short of data (until session 56). Another asset (a cashtag's) quiet all period is none.
    scopes = [s for s in rows if s == ALL or s in wanted or any(r.posts for r in rows[s])]
    rows = {s: rows[s] for s in scopes}
    end = first_day + days * DAY_S
    found = sorted((incident_from_summary(i) for i in incidents), key=lambda i: (i.opened, i.incident_id))
    return Report(first_day, days, tuple(scopes), rows, tuple(i for i in found if first_day <= i.opened < end),
                  watermark, generated_at, since, data_from, carried=tuple(i for i in found if i.open_at(first_day)),
                  day_asked=day_asked, incidents_from=incidents_from if incidents_from is not None and incidents_from > first_day else None)
