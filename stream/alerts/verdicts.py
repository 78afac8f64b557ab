"""Verdicts: the risk team's word on an incident, `real` or `false-alarm`, so the alerts' precision
is measured in production rather than assumed from the benchmarks.

An incident's latest verdict is kept beside it (`keys.VERDICTS_KEY`, pruned with it, shown by
`sentinel incidents`, the console and the daily report). Every verdict is also an audit entry
(`audit`) carrying the incident's root scope and kinds, so `precision.tally` can count them long
after the incidents themselves have left the history.
"""

from __future__ import annotations

import json
import time
from typing import Any, Callable

from stream.alerts import audit
from stream.alerts.grouping import root_kinds
from stream.alerts.precision import VERDICTS
from stream.keys import ALERT_STATS_KEY, AUDIT_KEY, INCIDENTS_KEY, VERDICTS_KEY
from stream.timefmt import iso


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
    log keeps each). False if the history holds no such incident; ValueError for an unknown verdict or a reason
    `audit.reason_text` refuses."""
    if verdict not in VERDICTS:
        raise ValueError(f"verdict: one of {', '.join(VERDICTS)}")
    reason = audit.reason_text(reason)
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
