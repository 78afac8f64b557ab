"""Two runs' alert records side by side (pure): which incidents both raised, which only one did, and
how much earlier or later the candidate's fired. For trying new thresholds on a recorded stretch
before deploying them (`sentinel compare-alerts`); with the team's verdicts on the baseline's
incidents it says whether the alerts a change would lose were real ones or false alarms.

An incident is what the team is told about: the records sharing an `incident_id` (with
`SENTINEL_ALERT_GROUPING=none`, one (scope, kind) alert). Two incidents of the two runs are the
same event when their spans of event time overlap, they share a (scope, kind) alert and they first
fired at most `max_shift_s` (2 h) apart: a change of thresholds can change which scope roots an
event, not that it happened, and moves its first firing by minutes, not days. Of the incidents in
both it says how their highest severity and first critical firing, their (scope, kind) members
and their resolution (of the incident and of each member) moved. A production topic
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

from stream.alerts.grouping import SEVERITY_RANK
from stream.alerts.precision import VERDICTS
from stream.timefmt import epoch, iso


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
    severity: str = "warning"  # the highest of its firing records
    critical_at: float | None = None  # its first critical firing record
    resolved: float | None = None  # its last record, when every alert had resolved by then; None: still firing at the run's end
    # (scope, kind, time of its last record when that resolved it, else None) for every member
    ends: tuple[tuple[str, str, float | None], ...] = ()

    def overlaps(self, other: "Episode") -> bool:
        return self.first <= other.last and other.first <= self.last and bool(self.alerts & other.alerts)


@dataclass(frozen=True)
class Run:
    """One run's incidents and the span of event time its records cover."""

    episodes: list[Episode]
    start: float
    end: float
    grouped: bool  # some incident_id differs from its alert_id (SENTINEL_ALERT_GROUPING=incidents)
    records: int = 0  # alert records read


def grouping_differs(baseline: Run, candidate: Run) -> bool:
    """Did one run group transitions into incidents and the other not? A run without records says
    nothing about its grouping."""
    return bool(baseline.records and candidate.records) and baseline.grouped != candidate.grouped


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
        member_last: dict[tuple[str, str], tuple[float, str]] = {}
        for t, r in items:
            member_last[(str(r["scope"]), str(r["kind"]))] = (t, r["state"])
        firing = [(t, str(r.get("severity") or "warning")) for t, r in items if r["state"] == "firing"]
        critical = [t for t, sev in firing if sev == "critical"]
        still = "firing" in latest.values()
        found.append(Episode(
            incident_id=ident, root_scope=root, alerts=frozenset((str(r["scope"]), str(r["kind"])) for _, r in items),
            kinds=tuple(sorted(root_kinds or {str(r["kind"]) for _, r in items if r["state"] == "firing"} or {str(items[0][1]["kind"])})),
            first=min(fired), last=end if still else items[-1][0],
            severity=max((sev for _, sev in firing), key=lambda sev: SEVERITY_RANK.get(sev, 0), default="warning"),
            critical_at=min(critical, default=None), resolved=None if still else items[-1][0],
            ends=tuple(sorted((scope, kind, t if state == "resolved" else None) for (scope, kind), (t, state) in member_last.items()))))
    found.sort(key=lambda e: (e.first, e.incident_id))
    return Run(found, min(times), end, any(str(r.get("incident_id") or r["alert_id"]) != r["alert_id"] for r in records), len(records))


@dataclass(frozen=True)
class Comparison:
    matched: list[tuple[Episode, Episode]]  # (baseline, candidate)
    lost: list[Episode]  # only in the baseline
    new: list[Episode]  # only in the candidate


MAX_SHIFT_S = 2 * 3600


def compare(baseline: Run, candidate: Run, start: float = -math.inf, end: float = math.inf, max_shift_s: float = MAX_SHIFT_S) -> Comparison:
    """Pair the incidents that reach into [start, end] (event time): as many pairs as the events
    allow, each incident preferring, in order, the other run's incident with the same root, then
    the one that fired closest in time. Two incidents pair only when they overlap in time, share a
    (scope, kind) alert and first fired at most `max_shift_s` apart: an incident still firing days
    on (a production topic's) overlaps a replay's new one without being its event."""
    base = [e for e in baseline.episodes if e.first <= end and e.last >= start]
    cand = [e for e in candidate.episodes if e.first <= end and e.last >= start]
    pairs = _max_matching(base, cand, max_shift_s)
    paired = set(pairs.values())
    matched = [(b, cand[pairs[i]]) for i, b in enumerate(base) if i in pairs]
    return Comparison(matched, [b for i, b in enumerate(base) if i not in pairs], [c for j, c in enumerate(cand) if j not in paired])


def _max_matching(base: Sequence[Episode], cand: Sequence[Episode], max_shift_s: float) -> dict[int, int]:
    """A maximum matching between the incidents of the same event (Kuhn's augmenting paths), each
    baseline incident trying its preferred candidates first: a greedy pairing could give an event's
    only partner to a neighbour that had another."""
    prefer = {i: sorted((j for j, c in enumerate(cand) if b.overlaps(c) and abs(c.first - b.first) <= max_shift_s),
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


@dataclass(frozen=True)
class PairChange:
    """What the change did to one incident both runs raised (times in seconds, candidate minus baseline)."""

    baseline: Episode
    candidate: Episode
    fired_shift: float
    severity: tuple[str, str]  # the highest severity in the baseline's, in the candidate's
    # critical: "newly" | "no longer" | "earlier" | "later" | "same" | None (critical in neither)
    critical: str | None
    critical_shift: float | None  # when critical in both
    gained: tuple[tuple[str, str], ...]  # (scope, kind) members only the candidate's has
    lost: tuple[tuple[str, str], ...]  # only the baseline's
    # resolution: "earlier" | "later" | "same" | "never" (the candidate's still fires at its run's end)
    # | "newly" (the candidate's resolved, the baseline's still fires) | "neither" (both still fire)
    resolution: str
    resolution_shift: float | None  # when both resolved
    # members in both whose resolution moved: (scope, kind, baseline's, candidate's: time or None if still firing)
    member_ends: tuple[tuple[str, str, float | None, float | None], ...]


def _moved(before: float | None, after: float | None, *, gone: str, come: str, idle: str) -> tuple[str | None, float | None]:
    if before is None and after is None:
        return idle, None
    if before is None:
        return come, None
    if after is None:
        return gone, None
    shift = after - before
    return ("earlier" if shift < 0 else "later" if shift > 0 else "same"), shift


def pair_change(b: Episode, c: Episode) -> PairChange:
    critical, critical_shift = _moved(b.critical_at, c.critical_at, gone="no longer", come="newly", idle="")
    resolution, resolution_shift = _moved(b.resolved, c.resolved, gone="never", come="newly", idle="neither")
    b_ends, c_ends = {(s, k): t for s, k, t in b.ends}, {(s, k): t for s, k, t in c.ends}
    return PairChange(
        b, c, c.first - b.first, (b.severity, c.severity), critical or None, critical_shift,
        tuple(sorted(c.alerts - b.alerts)), tuple(sorted(b.alerts - c.alerts)), resolution or "neither", resolution_shift,
        tuple((s, k, b_ends[(s, k)], c_ends[(s, k)]) for s, k in sorted(b_ends.keys() & c_ends.keys()) if b_ends[(s, k)] != c_ends[(s, k)]))


def changed(pc: PairChange) -> bool:
    """Did the change do anything to this incident that a reviewer would want listed?"""
    return bool(pc.fired_shift or pc.severity[0] != pc.severity[1] or pc.critical not in (None, "same") or pc.gained or pc.lost
                or pc.resolution not in ("same", "neither") or pc.member_ends or pc.baseline.root_scope != pc.candidate.root_scope)


def change_row(pc: PairChange) -> dict[str, Any]:
    """One incident in both, for `--json` and the table: times ISO 8601 (None: never critical, still
    firing), shifts in minutes (candidate minus baseline)."""
    def at(t: float | None) -> str | None:
        return None if t is None else iso(t)

    def minutes(s: float | None) -> float | None:
        return None if s is None else s / 60

    return {
        "baseline_incident": pc.baseline.incident_id, "candidate_incident": pc.candidate.incident_id,
        "baseline_root": pc.baseline.root_scope, "candidate_root": pc.candidate.root_scope,
        "fired_later_min": minutes(pc.fired_shift),
        "severity": {"baseline": pc.severity[0], "candidate": pc.severity[1]},
        "critical": pc.critical, "critical_later_min": minutes(pc.critical_shift),
        "critical_at": {"baseline": at(pc.baseline.critical_at), "candidate": at(pc.candidate.critical_at)},
        "members_gained": [list(m) for m in pc.gained], "members_lost": [list(m) for m in pc.lost],
        "resolution": pc.resolution, "resolved_later_min": minutes(pc.resolution_shift),
        "resolved": {"baseline": at(pc.baseline.resolved), "candidate": at(pc.candidate.resolved)},
        "member_resolutions": [{"scope": sc, "kind": k, "baseline": at(a), "candidate": at(b),
                                "later_min": None if a is None or b is None else (b - a) / 60} for sc, k, a, b in pc.member_ends],
    }


def spans_differ(baseline: Run, candidate: Run, slack_s: float = 86400) -> bool:
    """Do the runs' records cover clearly different stretches (a production topic against a
    replayed day)? Then the comparison wants the replayed stretch as its span."""
    if not baseline.episodes or not candidate.episodes:
        return False
    return abs(baseline.start - candidate.start) > slack_s or abs(baseline.end - candidate.end) > slack_s


def summary(result: Comparison, verdicts: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The figures a reviewer reads first. `verdicts`: baseline incident id -> real | false-alarm."""
    shifts = [(c.first - b.first) / 60 for b, c in result.matched]
    changes = [pair_change(b, c) for b, c in result.matched]

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
        # Of the incidents in both: how their highest severity and their first critical firing moved...
        "severity": {"raised": sum(SEVERITY_RANK.get(c.severity[1], 0) > SEVERITY_RANK.get(c.severity[0], 0) for c in changes),
                     "lowered": sum(SEVERITY_RANK.get(c.severity[1], 0) < SEVERITY_RANK.get(c.severity[0], 0) for c in changes),
                     **{f"critical_{name.replace(' ', '_')}": sum(c.critical == name for c in changes)
                        for name in ("newly", "no longer", "earlier", "later", "same")}},
        # ... which (scope, kind) members they gained and lost...
        "members": {"gained": sum(len(c.gained) for c in changes), "lost": sum(len(c.lost) for c in changes),
                    "incidents_changed": sum(bool(c.gained or c.lost) for c in changes),
                    "resolution_moved": sum(len(c.member_ends) for c in changes),
                    "resolution_moved_max_min": max((abs(b - a) / 60 for c in changes for _, _, a, b in c.member_ends
                                                     if a is not None and b is not None), default=None)},
        # ... and when they resolved (never: the candidate's still fires at its run's end; newly: the baseline's does).
        "resolution": {name: sum(c.resolution == name for c in changes) for name in ("earlier", "later", "same", "never", "newly", "neither")},
    }
