"""Redis adapter of the incident grouping (stream/alerts/grouping.py), on when
`SENTINEL_ALERT_GROUPING=incidents`.

The engine stages each scope's transitions (a sorted set by boundary) instead of writing them to
the outbox. After a judging round in which every scope with new posts was judged through `until`,
the worker that holds the correlation cursor groups the staged transitions boundary by boundary up
to `until` and moves the resulting entries to the outbox, in one compare-and-set on the cursor: of
two workers grouping the same boundaries only the first writes, and since grouping is a pure
function of the staged transitions and the windows, the loser would have written the same.

The explanations grouping asks for (is channel:trading's drop ETH's?) are read from the windows:
for the parent and each candidate's share of it (an asset's: a hidden pair scope,
windows.pair_scopes_for; a channel's or source's, when no asset explains: its own scope, a source's
channel only while the channel registry says its posts are that source's alone), the posts of the
kind's label in the reference span before the parent's onset and since it.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any, Callable, Sequence

from stream.alerts import audit
from stream.alerts.grouping import (
    LABEL_OF_KIND,
    Counts,
    Entry,
    Explanation,
    GroupConfig,
    GroupState,
    Incident,
    Question,
    advance,
    explanations,
    flush,
    history_status,
    is_asset,
    judged_fields,
    next_boundary,
    pair_scope,
    parts_readable,
    questions,
    readable,
    registry_span,
)
from stream.alerts.incidents import incident_by_prefix, record_from_json
from stream.keys import ACK_LOG_KEY, ACKS_KEY, ALERT_STATS_KEY, ASSETS_KEY, AUDIT_KEY, CHANNELS_KEY, CORRELATION_KEY, INCIDENTS_INDEX_KEY, INCIDENTS_KEY, OUTBOX_KEY, STAGING_KEY, VERDICTS_KEY
from stream.store import WindowStore
from stream.timefmt import iso
from stream.windows import SliceCol

log = logging.getLogger(__name__)

COLUMN = {"negative": SliceCol.NEGATIVE, "positive": SliceCol.POSITIVE, "n": SliceCol.N}

# KEYS: correlation, staging, outbox, incidents, incidents index, stats, acknowledgements, their log, verdicts. ARGV: expected until ('' =
# never), new until, state JSON, staged members done (JSON list), outbox entries (JSON list of JSON
# strings), incident summaries (JSON list of [id, opened, summary JSON or '' to drop it]), history cut-off (event time),
# the keys' idle TTL.
_COMMIT = """
local current = redis.call('HGET', KEYS[1], 'until') or ''
if current ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'until', ARGV[2], 'state', ARGV[3])
for _, member in ipairs(cjson.decode(ARGV[4])) do redis.call('ZREM', KEYS[2], member) end
for _, entry in ipairs(cjson.decode(ARGV[5])) do
  redis.call('XADD', KEYS[3], '*', 'entry', entry)
  redis.call('HINCRBY', KEYS[6], 'entries', 1)
end
for _, item in ipairs(cjson.decode(ARGV[6])) do
  if item[3] == '' then
    redis.call('HDEL', KEYS[4], item[1])
    redis.call('ZREM', KEYS[5], item[1])
    redis.call('HDEL', KEYS[7], item[1])
    redis.call('HDEL', KEYS[8], item[1])
    redis.call('HDEL', KEYS[9], item[1])
  else
    redis.call('HSET', KEYS[4], item[1], item[3])
    redis.call('ZADD', KEYS[5], item[2], item[1])
  end
end
-- Incidents older than the history go, and their acknowledgements and verdicts with them.
for _, old in ipairs(redis.call('ZRANGEBYSCORE', KEYS[5], '-inf', '(' .. ARGV[7])) do
  redis.call('HDEL', KEYS[4], old)
  redis.call('HDEL', KEYS[7], old)
  redis.call('HDEL', KEYS[8], old)
  redis.call('HDEL', KEYS[9], old)
end
redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', '(' .. ARGV[7])
for i = 1, #KEYS do redis.call('EXPIRE', KEYS[i], ARGV[8]) end
return 1
"""


def entry_json(entry: Entry) -> str:
    data: dict[str, Any] = {"records": list(entry.records), "notice": entry.notice.to_json() if entry.notice else None}
    if entry.route_severities:
        data["route_severities"] = list(entry.route_severities)
    if entry.told_at:
        data["told_at"] = dict(entry.told_at)
    if entry.last_notified:
        data["last_notified"] = entry.last_notified
    if entry.firing_notices is not None:
        data["firing_notices"] = entry.firing_notices
    if entry.since_last is not None:
        data["since_last"] = entry.since_last
    return json.dumps(data, ensure_ascii=False)


def summary(incident: Incident, state: str, at: int) -> dict[str, Any]:
    """What `sentinel incidents` shows of one incident. A resolved one's `at` is when the team was
    told it was over, which its tail's later records do not move."""
    told_over = state == "resolved" and incident.over_told is not None
    return {
        "incident_id": incident.id, "root_scope": incident.root, "state": state, "opened": incident.opened,
        "at": incident.over_told if told_over else at,
        # Resolved: the severity its resolution went out with (the peak), not a clearing tail's.
        "market": incident.market, "severity": incident.peak_severity() if state == "resolved" else incident.severity(),
        "acked": incident.acked,
        # Resolved: when the root did, as the resolution says it beside `at` (the console's page said
        # "last change" at the declaration alone). Summaries written since session 48.
        **({"root_resolved": incident.root_resolved} if state == "resolved" and incident.root_resolved is not None else {}),
        # `judged` and `posts`: when and on how many posts each member's level was judged, as the
        # notices say; the console showed "330 posts per 1h against 10" an hour on, judged on 11 posts.
        "members": [{"scope": m.scope, "kind": m.kind, "firing": m.firing, "severity": m.severity, "onset": m.onset,
                     "metric": m.metric, "value": m.value, "baseline": m.baseline, **judged_fields(incident, m)}
                    for m in incident.members.values()],
    }


class Correlator:
    """Groups staged transitions into incidents (see the module docstring)."""

    def __init__(self, store: WindowStore, config: GroupConfig, *, step_s: int, history_s: int):
        self.store = store
        self.redis = store.redis
        self.config = config
        self.step_s = step_s
        self.history_s = history_s
        self._commit = self.redis.register_script(_COMMIT)

    async def run(self, until: float, *, flush_waiting: bool = False) -> int:
        """Group every staged transition and due timer up to `until` (a boundary every scope was
        judged through). `flush_waiting`: the input has ended (a replay), so incidents still in
        their group wait are announced now. Returns the entries written (0 if another worker won)."""
        until = int(until // self.step_s) * self.step_s
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hmget(CORRELATION_KEY, "until", "state")
            pipe.zrangebyscore(STAGING_KEY, "-inf", until, withscores=True)
            raw, staged_raw = await pipe.execute()
        expected = raw[0] or ""
        staged = [(int(score), member) for member, score in staged_raw]
        if expected:
            after = int(expected)
        elif staged:
            after = min(b for b, _ in staged) - self.step_s
        else:
            after = until
        # The first round with nothing to group still sets the cursor: the writes keep what grouping
        # will read from a retention before it (windows.Kept), which needs a cursor to stand on.
        if after > until or (after == until and not flush_waiting and not staged and expected):
            return 0
        state = GroupState.from_json(json.loads(raw[1]) if raw[1] else None)
        acks = await self.redis.hgetall(ACKS_KEY)
        # Assets with posts since the reference span before this round's first boundary began:
        # candidates for explaining a parent's move, firing or not. Every post up to `until` is
        # written by now, so an asset with posts in the span of any boundary of the round is here;
        # one here only for later posts has no excess in it and changes nothing. (Read from `until`
        # instead, a round that spans days, as a replay's do, asked its first boundaries without
        # the assets active then: the answers depended on where rounds were cut.) Only questions
        # read them, and there are none without a transition or an open incident: with thousands
        # of assets this read was most of a quiet round's cost.
        active = await self.redis.zrangebyscore(ASSETS_KEY, after - self.config.reference_s, "+inf") if staged or state.incidents else []
        entries: list[Entry] = []
        changed: dict[str, tuple[Incident, str, int]] = {}
        pending = sorted(staged)
        boundary = next_boundary(state, [b for b, _ in pending], after, until, self.step_s, self.config)
        while boundary is not None:
            now = [record_from_json(json.loads(member)) for b, member in pending if b <= boundary]
            pending = [(b, m) for b, m in pending if b > boundary]
            answers = await self.answers(questions(state, boundary, now, self.config, active))
            state, out, touched = advance(state, boundary, now, answers, self.config, acks)
            entries += out
            for incident in touched:
                changed[incident.id] = (incident, history_status(state, incident), boundary)
            after = boundary
            boundary = next_boundary(state, [b for b, _ in pending], after, until, self.step_s, self.config)
        if flush_waiting:
            state, out, touched = flush(state, until)
            entries += out
            for incident in touched:
                changed[incident.id] = (incident, "open", until)
        # A merged incident was never told to anyone nor published under its id: its summary goes ('').
        items = [[i.id, i.opened, json.dumps(summary(i, st, at), ensure_ascii=False) if st != "merged" else ""]
                 for i, st, at in changed.values()]
        ok = await self._commit(
            keys=[CORRELATION_KEY, STAGING_KEY, OUTBOX_KEY, INCIDENTS_KEY, INCIDENTS_INDEX_KEY, ALERT_STATS_KEY, ACKS_KEY, ACK_LOG_KEY,
                  VERDICTS_KEY],
            args=[expected, str(until), json.dumps(state.to_json(), ensure_ascii=False), json.dumps([m for _, m in staged]),
                  json.dumps([entry_json(e) for e in entries]), json.dumps(items), str(until - self.history_s),
                  str(self.store.idle_ttl_s)],
        )
        if not ok:
            return 0
        for entry in entries:
            if entry.notice is not None:
                n = entry.notice
                log.info("incident notice", extra={"incident_id": n.incident_id, "root_scope": n.root_scope, "reason": n.reason,
                                                   "severity": n.severity, "members": len(n.members), "at": n.at})
        return len(entries)

    async def flush(self) -> int:
        """The input has ended: announce the incidents still in their group wait (see `run`)."""
        done = await self.redis.hget(CORRELATION_KEY, "until")
        return await self.run(int(done), flush_waiting=True) if done is not None else 0

    async def answers(self, asked: Sequence[Question]) -> dict[tuple[str, str], Explanation]:
        """Read the counts each question needs (two slices per scope) and run the explain-away test."""
        if not asked:
            return {}
        # Each read reaches no further back than the writes keep behind the cursor (grouping.readable).
        clamped = [readable(q, self.store.retention_s, self.store.pair_retention_s, self.config) for q in asked]
        for q, c in zip(asked, clamped):
            if c != q:
                log.info("explanation read from a later onset: grouping reads a retention back (SENTINEL_PAIR_RETENTION for pair scopes)",
                         extra={"parent": q.parent, "kind": q.kind, "onset": q.onset, "read_from": c.onset, "since": c.since})
        asked = await self._parts_readable(clamped)
        requests = []
        for q in asked:
            start, end = q.span()
            for scope in read_scopes(q):
                requests.append((scope, q.onset - self.config.reference_s, self.config.reference_s, 1))
                requests.append((scope, start, max(end - start, 1), 1))
        tables = iter(await self.store.slices_many(requests))
        read: dict[tuple[int, str], Counts] = {}
        for i, q in enumerate(asked):
            column = COLUMN[LABEL_OF_KIND.get(q.kind, "n")]
            for scope in read_scopes(q):
                before, since = next(tables), next(tables)
                read[(i, scope)] = Counts(float(before[0][column]) if len(before) else 0.0, float(since[0][column]) if len(since) else 0.0)
        index = {id(q): i for i, q in enumerate(asked)}
        found = explanations(asked, lambda q, scope: read[(index[id(q)], scope)], self.config)
        for q in asked:
            e = found.get((q.parent, q.kind))
            if e is not None:  # why scopes were grouped or not: what an operator asks of an incident
                log.info("explanation", extra={"parent": q.parent, "kind": q.kind, "onset": q.onset, "boundary": q.boundary,
                                               "candidates": len(q.candidates), "asset": e.asset, "market": list(e.market),
                                               "excess": e.excess, "top": e.top, "share": e.share, "rest_z": e.rest_z})
        return found

    async def _parts_readable(self, asked: list[Question]) -> list[Question]:
        """Each question about a source without the channels whose posts in its span are not that
        source's alone (grouping.parts_readable), from the channel registry: one read per such
        question, in one round trip."""
        spans = [registry_span(q, self.config) for q in asked]
        if not any(spans):
            return asked
        async with self.redis.pipeline(transaction=False) as pipe:
            for span in spans:
                if span is not None:
                    pipe.zrangebyscore(CHANNELS_KEY, f"({span[0]}", f"({span[1]}")
            found = iter(await pipe.execute())
        return [parts_readable(q, next(found)) if span is not None else q for q, span in zip(asked, spans)]


def read_scopes(q: Question) -> tuple[str, ...]:
    """The scopes a question reads: the parent and, unless it is a tail check, each candidate's
    share of it: an asset's pair scope (`all`'s: the asset's own), a channel's or source's own scope."""
    if q.since is not None:
        return (q.parent,)
    return (q.parent, *(pair_scope(q.parent, c) if is_asset(c) else c for c in q.candidates))


async def list_incidents(client: Any, *, since: float | None = None, open_only: bool = False) -> list[dict[str, Any]]:
    """Incident summaries, newest first: those opened at or after `since` (event time), or only the open ones."""
    ids = await client.zrevrangebyscore(INCIDENTS_INDEX_KEY, "+inf", since if since is not None else "-inf")
    found = await _summaries(client, ids)
    return [i for i in found if i["state"] == "open"] if open_only else found


async def incident_id(client: Any, given: str) -> str:
    """The id of the incident `given` names in the history: `incident_by_prefix` over every incident
    kept (ValueError when `given` is too short or ambiguous; itself when nothing starts with it).
    A whole id is answered without reading every id: a page and its polls ask by the whole id."""
    if await client.hexists(INCIDENTS_KEY, given):
        return given
    return incident_by_prefix(given, await client.hkeys(INCIDENTS_KEY))


async def incident_summary(client: Any, ident: str) -> dict[str, Any] | None:
    found = await _summaries(client, [ident])
    return found[0] if found else None


async def _summaries(client: Any, ids: Sequence[str]) -> list[dict[str, Any]]:
    """Summaries with their latest acknowledgement (a correlator round that read the
    acknowledgements before one was given writes its summaries without it) and their verdict
    (`verdicts`: {verdict, by, via, reason, at}, or None)."""
    if not ids:
        return []
    async with client.pipeline(transaction=False) as pipe:
        pipe.hmget(INCIDENTS_KEY, ids)
        pipe.hmget(ACKS_KEY, ids)
        pipe.hmget(VERDICTS_KEY, ids)
        raw, acks, verdicts = await pipe.execute()
    return [json.loads(r) | ({"acked": a} if a else {}) | {"verdict": json.loads(v) if v else None}
            for r, a, v in zip(raw, acks, verdicts) if r]


ACK_LOG_ENTRIES = 50  # an incident's acknowledgements kept: the latest; each is one short line

# KEYS: incidents, acknowledgements, their log, the alert stats (`acks` counts them: the console's
# pages refresh on it), the audit stream. ARGV: incident id, its summary as read, the summary
# acknowledged, the reason, the log line, ACK_LOG_ENTRIES, AUDIT_ENTRIES, then the audit entry's
# fields. Written only if the summary is still the one read: a correlator round may have rewritten
# it since (resolved it, added a member), and writing the old one back would undo that.
_ACKNOWLEDGE = """
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[4])
local lines = redis.call('HGET', KEYS[3], ARGV[1])
lines = lines and (lines .. '\\n' .. ARGV[5]) or ARGV[5]
local count = select(2, string.gsub(lines, '\\n', '')) + 1
while count > tonumber(ARGV[6]) do
  lines = string.sub(lines, string.find(lines, '\\n', 1, true) + 1)
  count = count - 1
end
redis.call('HSET', KEYS[3], ARGV[1], lines)
redis.call('HINCRBY', KEYS[4], 'acks', 1)
redis.call('XADD', KEYS[5], 'MAXLEN', '~', ARGV[7], '*', unpack(ARGV, 8))
-- The acknowledgements live as long as the incidents they belong to.
local ttl = redis.call('PTTL', KEYS[1])
if ttl > 0 then
  redis.call('PEXPIRE', KEYS[2], ttl)
  redis.call('PEXPIRE', KEYS[3], ttl)
end
return 1
"""


async def acknowledge(client: Any, ident: str, reason: str, *, by: str = "", via: str = "", note: str | None = None,
                      clock: Callable[[], float] = time.time) -> bool:
    """Stop the repeats of an open incident (the correlator reads the acknowledgement at its next
    round; the summary shows it at once), and add it to the incident's acknowledgement log with
    the wall-clock time, who (`by`), through what (`via`: console, cli) and `note` (default: the
    reason). False if no such open incident."""
    script = client.register_script(_ACKNOWLEDGE)
    acked = reason or "acknowledged"
    logged = acked if note is None else (note or "acknowledged")
    line = json.dumps({"at": iso(int(clock())), "by": by, "via": via, "reason": logged}, ensure_ascii=False)
    while True:
        raw = await client.hget(INCIDENTS_KEY, ident)
        if raw is None or json.loads(raw)["state"] != "open":
            return False
        data = json.loads(raw) | {"acked": acked}
        audited = audit.entry("acknowledge", by=by, via=via, target=ident, scope=data.get("root_scope", ""), reason=logged)
        if await script(keys=[INCIDENTS_KEY, ACKS_KEY, ACK_LOG_KEY, ALERT_STATS_KEY, AUDIT_KEY],
                        args=[ident, raw, json.dumps(data, ensure_ascii=False), acked, line, ACK_LOG_ENTRIES,
                              audit.AUDIT_ENTRIES, *audit.flat(audited)]):
            return True
        # The correlator rewrote the summary in between: read it again.


async def acknowledgements(client: Any, ident: str) -> list[dict[str, Any]]:
    """An incident's acknowledgements, oldest first: {at (ISO, wall clock), by, via, reason}."""
    lines = await client.hget(ACK_LOG_KEY, ident)
    return [json.loads(line) for line in lines.split("\n")] if lines else []
