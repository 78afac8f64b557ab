"""Two runs' alert records side by side (pure): which incidents both raised, which only one did, and
how much earlier or later the candidate's fired. For trying new thresholds on a recorded stretch
before deploying them (`sentinel compare-alerts`); with the team's verdicts on the baseline's
incidents it says whether the alerts a change would lose were real ones or false alarms.

An incident is what the team is told about: the records sharing an `incident_id` (with
`SENTINEL_ALERT_GROUPING=none`, one (scope, kind) alert). Two incidents of the two runs are the
same event when their spans of event time overlap and they share a (scope, kind) alert: a change
of thresholds can change which scope roots an event, not that it happened. A production topic
keeps 90 days and a replay covers a stretch: `start` and `end` keep the incidents that reach into
the stretch both runs judged (a run's records begin with its first alert, so they cannot say where
its judging began).

"Fired" is the first firing record of any of the incident's alerts; the team is told a group wait
later (`SENTINEL_ALERT_GROUP_WAIT`), the same in both runs unless that is what changed. A replay's
records are never notified (no notification services), so notification times are not compared.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import median
from typing import Any, Iterable, Mapping, Sequence

from stream.alerts.precision import VERDICTS
from stream.timefmt import epoch


@dataclass(frozen=True)
class Episode:
    """One incident of a run: from its first firing to its last record (event time), or to the
    run's end while one of its alerts still fires."""

    incident_id: str
    root_scope: str
    alerts: frozenset[tuple[str, str]]  # (scope, kind) of every record
    kinds: tuple[str, ...]  # what fired on the root
    first: float  # epoch seconds
    last: float

    def overlaps(self, other: "Episode") -> bool:
        return self.first <= other.last and other.first <= self.last and bool(self.alerts & other.alerts)


@dataclass(frozen=True)
class Run:
    """One run's incidents and the span of event time its records cover."""

    episodes: list[Episode]
    start: float
    end: float
    grouped: bool  # some incident_id differs from its alert_id (SENTINEL_ALERT_GROUPING=incidents)


def episodes(records: Sequence[Mapping[str, Any]]) -> Run:
    """The incidents of one run's records (any order), by their first firing."""
    times = [epoch(r["window_end"]) for r in records]
    if not records:
        return Run([], 0.0, 0.0, False)
    end = max(times)
    # An alert keeps its alert_id when a member still firing splits off into an incident of its
    # own: its first firing is under the earlier id.
    first_fired: dict[str, float] = {}
    for r, t in zip(records, times):
        if r["state"] == "firing":
            first_fired[r["alert_id"]] = min(t, first_fired.get(r["alert_id"], t))
    grouped: dict[str, list[tuple[float, Mapping[str, Any]]]] = {}
    for r, t in zip(records, times):
        grouped.setdefault(str(r.get("incident_id") or r["alert_id"]), []).append((t, r))
    found = []
    for ident, items in grouped.items():
        items.sort(key=lambda item: item[0])
        fired = [first_fired[r["alert_id"]] for _, r in items if r["alert_id"] in first_fired]
        if not fired:
            continue  # only the resolution of something that fired before the records begin
        root = str(items[-1][1].get("root_scope") or items[-1][1]["scope"])
        latest: dict[str, str] = {}
        for _, r in items:
            latest[r["alert_id"]] = r["state"]
        root_kinds = {str(r["kind"]) for _, r in items if r["scope"] == root and r["state"] == "firing"}
        found.append(Episode(
            incident_id=ident, root_scope=root, alerts=frozenset((str(r["scope"]), str(r["kind"])) for _, r in items),
            kinds=tuple(sorted(root_kinds or {str(r["kind"]) for _, r in items if r["state"] == "firing"} or {str(items[0][1]["kind"])})),
            first=min(fired), last=end if "firing" in latest.values() else items[-1][0]))
    found.sort(key=lambda e: (e.first, e.incident_id))
    return Run(found, min(times), end, any(str(r.get("incident_id") or r["alert_id"]) != r["alert_id"] for r in records))


@dataclass(frozen=True)
class Comparison:
    matched: list[tuple[Episode, Episode]]  # (baseline, candidate)
    lost: list[Episode]  # only in the baseline
    new: list[Episode]  # only in the candidate


def compare(baseline: Run, candidate: Run, start: float = -math.inf, end: float = math.inf) -> Comparison:
    """Pair the incidents that reach into [start, end] (event time): as many pairs as the events
    allow, each incident preferring, in order, the other run's incident with the same root, then
    the one that fired closest in time."""
    base = [e for e in baseline.episodes if e.first <= end and e.last >= start]
    cand = [e for e in candidate.episodes if e.first <= end and e.last >= start]
    pairs = _max_matching(base, cand)
    paired = set(pairs.values())
    matched = [(b, cand[pairs[i]]) for i, b in enumerate(base) if i in pairs]
    return Comparison(matched, [b for i, b in enumerate(base) if i not in pairs], [c for j, c in enumerate(cand) if j not in paired])


def _max_matching(base: Sequence[Episode], cand: Sequence[Episode]) -> dict[int, int]:
    """A maximum matching between the incidents of the same event (Kuhn's augmenting paths), each
    baseline incident trying its preferred candidates first: a greedy pairing could give an event's
    only partner to a neighbour that had another."""
    prefer = {i: sorted((j for j, c in enumerate(cand) if b.overlaps(c)),
                        key=lambda j: (cand[j].root_scope != b.root_scope, abs(cand[j].first - b.first), cand[j].first))
              for i, b in enumerate(base)}
    owner: dict[int, int] = {}  # candidate -> baseline

    def claim(i: int, seen: set[int]) -> bool:
        # A free partner first, in order of preference; only then move an owner to another of its own.
        free = next((j for j in prefer[i] if j not in owner and j not in seen), None)
        if free is not None:
            owner[free] = i
            return True
        for j in prefer[i]:
            if j not in seen:
                seen.add(j)
                if claim(owner[j], seen):
                    owner[j] = i
                    return True
        return False

    # The closest pairs claim first: of two incidents after one partner, the nearer gets it.
    def nearest(i: int) -> float:
        return min((abs(cand[j].first - base[i].first) for j in prefer[i]), default=0.0)

    for i in sorted(range(len(base)), key=nearest):
        claim(i, set())
    return {i: j for j, i in owner.items()}


def spans_differ(baseline: Run, candidate: Run, slack_s: float = 86400) -> bool:
    """Do the runs' records cover clearly different stretches (a production topic against a
    replayed day)? Then the comparison wants the replayed stretch as its span."""
    if not baseline.episodes or not candidate.episodes:
        return False
    return abs(baseline.start - candidate.start) > slack_s or abs(baseline.end - candidate.end) > slack_s


def summary(result: Comparison, verdicts: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The figures a reviewer reads first. `verdicts`: baseline incident id -> real | false-alarm."""
    shifts = [(c.first - b.first) / 60 for b, c in result.matched]

    def judged(items: Iterable[Episode]) -> dict[str, int]:
        counts = {"real": 0, "false-alarm": 0, "unjudged": 0}
        for e in items:
            said = (verdicts or {}).get(e.incident_id)
            counts[said if said in VERDICTS else "unjudged"] += 1
        return counts

    return {
        "baseline": len(result.matched) + len(result.lost), "candidate": len(result.matched) + len(result.new),
        "both": len(result.matched), "only_baseline": len(result.lost), "only_candidate": len(result.new),
        # Minutes the candidate's incident first fired after (+) or before (-) the baseline's.
        "fired_later_min": {"median": median(shifts), "min": min(shifts), "max": max(shifts)} if shifts else None,
        "earlier": sum(s < 0 for s in shifts), "later": sum(s > 0 for s in shifts),
        "verdicts": {"both": judged(b for b, _ in result.matched), "only_baseline": judged(result.lost)} if verdicts is not None else None,
    }
