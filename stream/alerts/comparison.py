"""Two runs' alert records side by side (pure): which incidents both raised, which only one did, and
how much earlier or later the candidate told them. For trying new thresholds on a recorded stretch
before deploying them (`sentinel compare-alerts`); with the team's verdicts on the baseline's
incidents it says whether the alerts a change would lose were real ones or false alarms.

An incident is what the team is told about: the records sharing an `incident_id` (with
`SENTINEL_ALERT_GROUPING=none`, one (scope, kind) alert). Two incidents of the two runs are the
same event when their spans of event time overlap and they share a scope: a change of thresholds
can change which scope roots an event, not that it happened.
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import median
from typing import Any, Iterable, Mapping, Sequence

from stream.timefmt import epoch


@dataclass(frozen=True)
class Episode:
    """One incident of a run: from its first firing record to its last record (event time)."""

    incident_id: str
    root_scope: str
    scopes: frozenset[str]
    kinds: tuple[str, ...]  # what fired on the root
    first: float  # the first firing record's window_end, epoch seconds
    last: float  # its last record's window_end
    resolved: bool  # its root's last record resolves it
    notified: bool  # some record of it was notified

    def overlaps(self, other: "Episode") -> bool:
        return self.first <= other.last and other.first <= self.last and bool(self.scopes & other.scopes)


def episodes(records: Iterable[Mapping[str, Any]]) -> list[Episode]:
    """The incidents of one run's records (any order), by their first firing."""
    grouped: dict[str, list[Mapping[str, Any]]] = {}
    for record in records:
        grouped.setdefault(str(record.get("incident_id") or record["alert_id"]), []).append(record)
    found = []
    for ident, items in grouped.items():
        items = sorted(items, key=lambda r: epoch(r["window_end"]))
        firing = [r for r in items if r["state"] == "firing"]
        if not firing:
            continue  # only the resolution of something that fired before the recording began
        root = str(items[-1].get("root_scope") or items[-1]["scope"])
        on_root = [r for r in items if r["scope"] == root]
        found.append(Episode(
            incident_id=ident, root_scope=root, scopes=frozenset(str(r["scope"]) for r in items),
            kinds=tuple(sorted({str(r["kind"]) for r in firing if r["scope"] == root} or {str(r["kind"]) for r in firing})),
            first=epoch(firing[0]["window_end"]), last=epoch(items[-1]["window_end"]),
            resolved=bool(on_root) and on_root[-1]["state"] == "resolved", notified=any(bool(r.get("notified")) for r in items)))
    return sorted(found, key=lambda e: (e.first, e.incident_id))


@dataclass(frozen=True)
class Comparison:
    matched: list[tuple[Episode, Episode]]  # (baseline, candidate)
    lost: list[Episode]  # only in the baseline
    new: list[Episode]  # only in the candidate


def compare(baseline: Sequence[Episode], candidate: Sequence[Episode]) -> Comparison:
    """Pair each baseline incident, earliest first, with the unpaired candidate incident of the same
    event that fired closest to it."""
    free = list(candidate)
    matched, lost = [], []
    for b in baseline:
        same = [c for c in free if b.overlaps(c)]
        if not same:
            lost.append(b)
            continue
        c = min(same, key=lambda c: (abs(c.first - b.first), c.first))
        free.remove(c)
        matched.append((b, c))
    return Comparison(matched, lost, free)


def summary(result: Comparison, verdicts: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The figures a reviewer reads first. `verdicts`: baseline incident id -> real | false-alarm."""
    verdicts = verdicts or {}
    shifts = [(c.first - b.first) / 60 for b, c in result.matched]

    def judged(items: Iterable[Episode]) -> dict[str, int]:
        counts = {"real": 0, "false-alarm": 0, "unjudged": 0}
        for e in items:
            said = verdicts.get(e.incident_id)
            counts[said if said in ("real", "false-alarm") else "unjudged"] += 1
        return counts

    return {
        "baseline": len(result.matched) + len(result.lost), "candidate": len(result.matched) + len(result.new),
        "both": len(result.matched), "only_baseline": len(result.lost), "only_candidate": len(result.new),
        # Minutes the candidate told an event after (+) or before (-) the baseline did.
        "told_later_min": {"median": median(shifts), "min": min(shifts), "max": max(shifts)} if shifts else None,
        "earlier": sum(s < 0 for s in shifts), "later": sum(s > 0 for s in shifts),
        "verdicts": {"both": judged(b for b, _ in result.matched), "only_baseline": judged(result.lost)} if verdicts else None,
    }
