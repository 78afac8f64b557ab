"""The alerts' precision as the risk team judged them (pure): each incident's latest verdict,
counted per root kind (`tally`, for `sentinel verdicts` and the console), and the track record a
notification carries (`track_record`: how often earlier incidents like it were real). Both read
the audit log's verdict entries (`audit.read`, newest first), which outlive the incidents.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Iterable, Iterator

VERDICTS = ("real", "false-alarm")
ALL_INCIDENTS = "all incidents"  # the total row
FEW_JUDGED = 10  # under this many verdicts a precision is read as its counts, not as a rate


@dataclass(frozen=True)
class Tally:
    """Verdicts counted per root kind, or per root scope (ALL_INCIDENTS for every incident): the latest
    verdict of each incident."""

    real: dict[str, int]
    false_alarm: dict[str, int]
    per: str = "kind"

    def precision(self, kind: str = ALL_INCIDENTS) -> float | None:
        judged = self.real.get(kind, 0) + self.false_alarm.get(kind, 0)
        return self.real.get(kind, 0) / judged if judged else None

    def rows(self) -> list[dict[str, Any]]:
        kinds = sorted(set(self.real) | set(self.false_alarm), key=lambda k: (k != ALL_INCIDENTS, k))
        return [{self.per: k, "real": self.real.get(k, 0), "false_alarm": self.false_alarm.get(k, 0), "precision": self.precision(k)}
                for k in kinds]


def interval_95(real: int, judged: int) -> tuple[float, float] | None:
    """The Wilson score 95% interval of a precision real/judged; None when nothing was judged.
    Honest at a handful of verdicts, where "precision 0.00" on one false alarm says little: (0, 0.79)."""
    if judged <= 0:
        return None
    z = 1.96
    p = real / judged
    centre = (p + z * z / (2 * judged)) / (1 + z * z / judged)
    half = z * math.sqrt(p * (1 - p) / judged + z * z / (4 * judged * judged)) / (1 + z * z / judged)
    return max(0.0, centre - half), min(1.0, centre + half)


def with_interval(row: dict[str, Any]) -> dict[str, Any]:
    """A tally row with `judged` (real + false alarms) and `interval_95` ([low, high], None when none
    judged) added, as the console shows them: its page showed a bare "0.00" on one false alarm."""
    judged = row["real"] + row["false_alarm"]
    interval = interval_95(row["real"], judged)
    return {**row, "judged": judged, "interval_95": list(interval) if interval is not None else None}


def latest_verdicts(entries: Iterable[dict[str, Any]], exclude: str = "") -> Iterator[dict[str, Any]]:
    """Each incident's latest verdict entry, from audit entries newest first; other actions,
    malformed entries and the incident `exclude` passed over."""
    seen: set[str] = {exclude}
    for e in entries:
        if e.get("action") != "verdict" or e.get("target") in seen or e.get("verdict") not in VERDICTS:
            continue
        seen.add(str(e.get("target")))
        yield e


def tally(entries: Iterable[dict[str, Any]], per: str = "kind") -> Tally:
    """Count audit entries newest first (as `audit.read` gives them): only each incident's latest
    verdict counts, once under each of its root kinds (`per="kind"`) or under its root scope
    (`per="scope"`: which scopes raise the false alarms)."""
    if per not in ("kind", "scope"):
        raise ValueError("per: kind or scope")
    real: dict[str, int] = defaultdict(int)
    false_alarm: dict[str, int] = defaultdict(int)
    for e in latest_verdicts(entries):
        counts = real if e["verdict"] == "real" else false_alarm
        groups = filter(None, e.get("kind", "").split(",")) if per == "kind" else filter(None, [e.get("scope", "")])
        for group in [ALL_INCIDENTS, *groups]:
            counts[group] += 1
    return Tally(dict(real), dict(false_alarm), per)


@dataclass(frozen=True)
class TrackRecord:
    """How the team judged earlier incidents of these kinds (each incident's latest verdict): on
    this root scope, and anywhere. A notification carries it, so whoever reads an alert knows how
    often alerts like it were real."""

    kinds: tuple[str, ...]
    scope: str
    here: tuple[int, int]  # (real, false alarms) rooted at `scope`
    anywhere: tuple[int, int]


def track_record(entries: Iterable[dict[str, Any]], root_scope: str, kinds: Iterable[str], exclude: str = "") -> TrackRecord | None:
    """From audit entries newest first; None when no incident of these kinds was judged.
    `exclude`: the incident being told about (its own verdict is not its track record)."""
    wanted = set(kinds)
    here, anywhere = [0, 0], [0, 0]
    for e in latest_verdicts(entries, exclude):
        if not wanted & set(filter(None, e.get("kind", "").split(","))):
            continue
        slot = 0 if e["verdict"] == "real" else 1
        anywhere[slot] += 1
        if e.get("scope") == root_scope:
            here[slot] += 1
    if not any(anywhere):
        return None
    return TrackRecord(tuple(sorted(wanted)), root_scope, (here[0], here[1]), (anywhere[0], anywhere[1]))

