"""Verdicts: the risk team's word on an incident, `real` or `false-alarm`, so the alerts' precision
is measured in production rather than assumed from the benchmarks.

An incident's latest verdict is kept beside it (`keys.VERDICTS_KEY`, pruned with it, shown by
`sentinel incidents`, the console and the daily report). Every verdict is also an audit entry
(`audit`) carrying the incident's root scope and kinds, so `tally` can count them long after the
incidents themselves have left the history.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from stream.alerts import audit
from stream.alerts.grouping import root_kinds
from stream.keys import ALERT_STATS_KEY, AUDIT_KEY, INCIDENTS_KEY, VERDICTS_KEY
from stream.timefmt import iso

VERDICTS = ("real", "false-alarm")
EVERY_KIND = "every kind"

# KEYS: incidents, verdicts, the alert stats (`verdicts` counts them), the audit stream (whose newest
# entry the console's pages refresh on). ARGV: incident id, the verdict JSON, AUDIT_ENTRIES, then the audit entry's
# fields. Nothing is written for an incident the history no longer holds.
_GIVE = """
if not redis.call('HGET', KEYS[1], ARGV[1]) then return 0 end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('HINCRBY', KEYS[3], 'verdicts', 1)
redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[3], '*', unpack(ARGV, 4))
-- Kept as long as the incidents.
local ttl = redis.call('PTTL', KEYS[1])
if ttl > 0 then redis.call('PEXPIRE', KEYS[2], ttl) end
return 1
"""


async def give_verdict(client: Any, ident: str, verdict: str, reason: str, *, by: str = "", via: str = "",
                       clock: Callable[[], float] = time.time) -> bool:
    """Record the team's verdict on an incident, open or resolved (a later one replaces it; the audit
    log keeps each). False if the history holds no such incident; ValueError for an unknown verdict."""
    if verdict not in VERDICTS:
        raise ValueError(f"verdict: one of {', '.join(VERDICTS)}")
    raw = await client.hget(INCIDENTS_KEY, ident)
    if raw is None:
        return False
    incident = json.loads(raw)
    kinds = ",".join(root_kinds(incident.get("root_scope", ""), incident.get("members", [])))
    stored = {"verdict": verdict, "by": by, "via": via, "reason": reason, "at": iso(int(clock()))}
    logged = audit.entry("verdict", by=by, via=via, target=ident, scope=incident.get("root_scope", ""), kind=kinds,
                         reason=reason, verdict=verdict)
    return bool(await client.register_script(_GIVE)(
        keys=[INCIDENTS_KEY, VERDICTS_KEY, ALERT_STATS_KEY, AUDIT_KEY],
        args=[ident, json.dumps(stored, ensure_ascii=False), audit.AUDIT_ENTRIES, *audit.flat(logged)]))


@dataclass(frozen=True)
class Tally:
    """Verdicts counted per root kind (EVERY_KIND for every incident): the latest verdict of each incident."""

    real: dict[str, int]
    false_alarm: dict[str, int]

    def precision(self, kind: str = EVERY_KIND) -> float | None:
        judged = self.real.get(kind, 0) + self.false_alarm.get(kind, 0)
        return self.real.get(kind, 0) / judged if judged else None

    def rows(self) -> list[dict[str, Any]]:
        kinds = sorted(set(self.real) | set(self.false_alarm), key=lambda k: (k != EVERY_KIND, k))
        return [{"kind": k, "real": self.real.get(k, 0), "false_alarm": self.false_alarm.get(k, 0), "precision": self.precision(k)}
                for k in kinds]


def tally(entries: Iterable[dict[str, Any]]) -> Tally:
    """Count audit entries newest first (as `audit.read` gives them): only each incident's latest
    verdict counts, and an incident counts once under each of its root kinds."""
    seen: set[str] = set()
    real: dict[str, int] = defaultdict(int)
    false_alarm: dict[str, int] = defaultdict(int)
    for e in entries:
        if e.get("action") != "verdict" or e["target"] in seen or e.get("verdict") not in VERDICTS:
            continue
        seen.add(e["target"])
        counts = real if e["verdict"] == "real" else false_alarm
        for kind in [EVERY_KIND, *filter(None, e.get("kind", "").split(","))]:
            counts[kind] += 1
    return Tally(dict(real), dict(false_alarm))
