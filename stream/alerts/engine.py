"""The early warning's engine: after each batch, judge the touched scopes (and those with an open
incident) and commit their transitions to the outbox (Redis). Delivery is stream/alerts/delivery.py.

Every key lives in the `{alerts}` hash slot (stream/keys.py), so one Lua script can move an incident
and append its records to the outbox atomically (and stays valid on Redis Cluster).

Exactly one record per transition, however many workers judge a scope: the commit is a
compare-and-set on `until`, so of two workers judging the same boundaries only the first writes
(the judgement is a pure function of the windows, so the loser would have written the same).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, replace
from typing import Any, Callable, Iterable, Mapping

import numpy as np
import orjson

from stream.alerts.correlator import Correlator
from stream.alerts.epochs import label_since, parse, warm_until
from stream.alerts.incidents import AlertRecord, Incident, last_notified_through, told_through
from stream.alerts.judging import (
    AlertConfig,
    BinAt,
    boundaries,
    frontier,
    judge_sequential,
    judge_series,
    kept_lines,
    read_span,
    scope_history_start,
    sequential_reads,
    silent,
    table_bins,
)
from stream.alerts.sequential import SeqState
from stream.redis_client import run_scripts
from stream.store import WindowStore, parse_stats
from stream.keys import (
    ALERT_STATS_KEY, ASSETS_KEY, CORRELATION_KEY, DIRTY_KEY, JUDGED_KEY, MODEL_EPOCHS_KEY, OPEN_KEY, OUTBOX_KEY, STAGING_KEY, STATS_KEY,
    incident_key, index_key,
)
from stream.timefmt import epoch, iso
from stream.windows import Kept, distinct_samples, ended_kept, is_pair_scope, trim_horizon

log = logging.getLogger(__name__)

# A dirty scope not touched by a batch is judged once its newest post is judgeable, or when it has
# fallen this many steps behind: so grouping, which waits for the slowest, lags by a few minutes at
# most, and a scope with posts is not re-judged every batch while it waits for the grace to pass.
DIRTY_LAG_STEPS = 5
MAX_BOUNDARIES = 2880  # per scope and call; a scope far behind catches up over a few batches


# Scopes per read or commit script: each runs in one go on the `{alerts}` node, so a few hundred at
# a time keeps every call short however many scopes a round judges.
CHUNK = 256

# KEYS: the scopes' state keys. Returns each one's {until, incidents, seq, since, told_severities}
# (nil where unset).
_READ = """
local out = {}
for i, key in ipairs(KEYS) do out[i] = redis.call('HMGET', key, 'until', 'incidents', 'seq', 'since', 'told_severities') end
return out
"""

# KEYS: open set, outbox, stats, dirty set, staging, judged, then the scopes' state keys. ARGV: '1' to
# stage the records for grouping (else they go to the outbox as they are), the keys' idle TTL, then
# per scope: expected until ('' = never judged), new until, scope, incidents JSON, sequential
# detector state JSON ('' = none), where the scope's history begins ('' = leave it: set once, at
# its first judgement), the severities its alerts were told at (JSON, `incidents.told_through`;
# '' = leave it, '{}' = none left), its transition count, and per transition its boundary (the
# staging score), its record JSON, the severities a resolution is routed for (JSON, '' = its
# own) and a resolution's alert's latest firing notice's time ('' = none:
# `incidents.last_notified_through`). Each scope is a compare-and-set of its own: returns 1 per
# scope committed, 0 per scope another worker had moved on.
_COMMIT = """
local stage, ttl, at, done, any = ARGV[1], ARGV[2], 3, {}, false
for k = 7, #KEYS do
  local key, expected, upto, scope = KEYS[k], ARGV[at], ARGV[at + 1], ARGV[at + 2]
  local incidents, seq, since, told, count = ARGV[at + 3], ARGV[at + 4], ARGV[at + 5], ARGV[at + 6], tonumber(ARGV[at + 7])
  local first = at + 8
  at = first + 4 * count
  local current = redis.call('HGET', key, 'until') or ''
  if current ~= expected then
    done[#done + 1] = 0
  else
    any = true
    redis.call('HSET', key, 'until', upto, 'incidents', incidents)
    if seq ~= '' then redis.call('HSET', key, 'seq', seq) end
    if since ~= '' then redis.call('HSET', key, 'since', since) end
    if told == '{}' then redis.call('HDEL', key, 'told_severities') elseif told ~= '' then redis.call('HSET', key, 'told_severities', told) end
    if incidents == '{}' then redis.call('SREM', KEYS[1], scope) else redis.call('SADD', KEYS[1], scope) end
    redis.call('ZADD', KEYS[6], upto, scope)
    -- Judged past its newest post: no longer dirty (a newer post raises the score again, never lowers it).
    local newest = tonumber(redis.call('ZSCORE', KEYS[4], scope) or '')
    if newest ~= nil and newest < tonumber(upto) then redis.call('ZREM', KEYS[4], scope) end
    for i = first, at - 1, 4 do
      if stage == '1' then
        redis.call('ZADD', KEYS[5], ARGV[i], ARGV[i + 1])
      else
        local entry = {'record', ARGV[i + 1]}
        if ARGV[i + 2] ~= '' then entry[#entry + 1] = 'route_severities'; entry[#entry + 1] = ARGV[i + 2] end
        if ARGV[i + 3] ~= '' then entry[#entry + 1] = 'last_notified'; entry[#entry + 1] = ARGV[i + 3] end
        redis.call('XADD', KEYS[2], '*', unpack(entry))
      end
      redis.call('HINCRBY', KEYS[3], 'transitions', 1)
    end
    -- A scope that stops posting is forgotten after its buckets are (an open one is judged every
    -- round, so its state lives while the incident does).
    redis.call('EXPIRE', key, ttl)
    done[#done + 1] = 1
  end
end
-- The shared keys live while judging goes on.
if any then for i = 1, 6 do redis.call('EXPIRE', KEYS[i], ttl) end end
return done
"""

# KEYS: dirty set, judged. ARGV: until, lag limit, the last boundary at or before until, the forget
# line, the count of touched scopes, the touched scopes, then the scopes with an open incident.
# Scopes judged last before the forget line (a retention ago) and not dirty leave `judged`, so it
# holds the live scopes, not every scope ever seen (their state keys expire too). Returns {due,
# waiting}. Due: the open scopes; the touched scopes not yet judged through the last boundary (a
# batch that crosses no boundary judges nothing); the dirty scopes whose newest post is before
# `until` (one judgement takes all their posts) or that were judged no further than the lag limit.
# Waiting: the dirty scope judged least far short of `until` among the rest, and that boundary (or
# nothing): incident grouping goes no further. Scopes never judged have no post before `until` and
# hold nothing back. Range reads only, so a round costs what is due, not every scope with posts.
_PLAN = """
local upto, limit, last, touched = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[5])
for _, scope in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[4])) do
  if not redis.call('ZSCORE', KEYS[1], scope) then redis.call('ZREM', KEYS[2], scope) end
end
local due, seen = {}, {}
local function add(scope)
  if not seen[scope] then
    seen[scope] = true
    table.insert(due, scope)
  end
end
for i = 6, 5 + touched do
  local done = tonumber(redis.call('ZSCORE', KEYS[2], ARGV[i]) or '')
  if done == nil or done < last then add(ARGV[i]) end
end
for i = 6 + touched, #ARGV do add(ARGV[i]) end
for _, scope in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1])) do add(scope) end
for _, scope in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[2])) do
  if redis.call('ZSCORE', KEYS[1], scope) then add(scope) end
end
local waiting = {}
local behind = redis.call('ZRANGEBYSCORE', KEYS[2], '(' .. ARGV[2], '(' .. ARGV[1], 'WITHSCORES')
for i = 1, #behind, 2 do
  if not seen[behind[i]] and redis.call('ZSCORE', KEYS[1], behind[i]) then
    waiting = {behind[i], behind[i + 1]}
    break
  end
end
return {due, waiting}
"""

# KEYS: dirty set. ARGV: (scope, until)*: scopes already judged past their newest post leave the set.
_CLEAN = """
for i = 1, #ARGV, 2 do
  local newest = tonumber(redis.call('ZSCORE', KEYS[1], ARGV[i]) or '')
  if newest ~= nil and newest < tonumber(ARGV[i + 1]) then redis.call('ZREM', KEYS[1], ARGV[i]) end
end
return 1
"""


class AlertEngine:
    """Judges scopes after each batch's window update and commits transitions to the outbox."""

    def __init__(self, store: WindowStore, config: AlertConfig, *, partitions: int, samples: int = 3, clock: Callable[[], float] = time.time,
                 correlator: Correlator | None = None):
        self.store = store
        self.correlator = correlator
        self.redis = store.redis
        self.config = config
        self.partitions = partitions
        self.samples = samples
        self.clock = clock
        self._read = self.redis.register_script(_READ)
        self._commit = self.redis.register_script(_COMMIT)
        self._clean = self.redis.register_script(_CLEAN)
        self._plan = self.redis.register_script(_PLAN)

    async def judge(self, touched: Iterable[str] | Mapping[str, float], *, ended: bool = False) -> list[AlertRecord]:
        """Judge every pending boundary of the touched scopes, of scopes with open incidents and of
        scopes with posts not yet judged (`touched` as scope -> newest post time marks them so: a
        scope whose newest posts were written before every partition had passed them is judged on
        the next round, not when its next post happens to come). `ended`: the input has ended, so
        every partition counts as through its newest post (`judging.frontier`). A scope goes at most
        MAX_BOUNDARIES boundaries a round."""
        return (await self._round(touched, ended=ended))[0]

    async def _round(self, touched: Iterable[str] | Mapping[str, float], *, ended: bool) -> tuple[list[AlertRecord], float | None]:
        """`judge`, and where the scope left furthest behind stopped (None: every due scope got
        through)."""
        # One round trip: mark the touched scopes dirty, read the stats and the open scopes.
        async with self.redis.pipeline(transaction=False) as pipe:
            if isinstance(touched, Mapping) and touched:
                pipe.zadd(DIRTY_KEY, dict(touched), gt=True)
                pipe.expire(DIRTY_KEY, self.store.idle_ttl_s)
                assets = {s: t for s, t in touched.items() if s.startswith("asset:")}
                if assets and self.correlator is not None:
                    pipe.zadd(ASSETS_KEY, assets, gt=True)
                    pipe.zremrangebyscore(ASSETS_KEY, "-inf", f"({max(assets.values()) - self.correlator.history_s}")
                    pipe.expire(ASSETS_KEY, self.store.idle_ttl_s)
            pipe.hgetall(STATS_KEY)
            pipe.smembers(OPEN_KEY)
            pipe.lindex(MODEL_EPOCHS_KEY, -1)
            *_, raw_stats, open_, newest_epoch = await pipe.execute()
        stats = parse_stats(raw_stats)
        # The sentiment kinds are judged against the current classifier's buckets alone (epochs.py).
        labels_from = label_since(parse([newest_epoch] if newest_epoch else []))
        now = self.clock()
        until = frontier(stats, self.partitions, now, self.config.idle_s, ended, self.config.lagging_idle_s) - self.config.grace_s
        if until == float("-inf"):
            return [], None
        # Where the stream's history begins, and how far buckets were trimmed: each scope's own
        # history begins at its first post (judging.scope_history_start).
        history = (stats.get("first_event", until), stats.get("trimmed", float("-inf")))
        last = int(until // self.config.step_s) * self.config.step_s
        touched = list(touched)
        due, waiting = await self._plan(keys=[DIRTY_KEY, JUDGED_KEY], args=[
            repr(until), repr(until - DIRTY_LAG_STEPS * self.config.step_s), str(last), repr(until - self.store.retention_s),
            str(len(touched)), *touched, *open_])
        scopes = sorted(due)
        # Grouping goes as far as every scope's transitions are known: until, or the least boundary a
        # dirty scope this round leaves alone was judged through.
        least = float(waiting[1]) if waiting else until
        committed: list[AlertRecord] = []
        lost: list[str] = []
        short: list[float] = []  # where scopes too far behind to catch up in one call stopped
        for _ in range(3):  # a lost compare-and-set means another worker moved on: re-read and continue
            lost = await self._judge_once(scopes, until, history, iso(now), committed, short, labels_from)
            if not lost:
                break
            scopes = lost
        if self.correlator is not None and not lost:
            # Every scope that could have a transition at or before this boundary is judged through it.
            await self.correlator.run(min(until, float(least), *short))
        if short:
            return committed, min(short)
        return committed, float("-inf") if lost else None  # lost three times over: not through either

    def warm_until(self, since: float) -> float:
        """The first boundary (event time) at which the sentiment kinds are judged again after a
        classifier switch at `since` (epochs.warm_until, at the default coverage: a scope with its
        own min_baseline_coverage waits by that instead)."""
        bin_s = self.config.step_s if self.config.detector == "sequential" else self.config.window_s
        return warm_until(since, self.config.window_s, self.config.baseline_s, self.config.thresholds.min_baseline_coverage, bin_s)

    async def kept(self, scopes: Iterable[str]) -> Kept:
        """How far back judging and grouping will still read these scopes (windows.Kept), for the
        batch's write to trim no further: each scope from the first bin its next judgement reads
        (its last boundary judged, less the window and baseline), and with grouping every scope
        from a retention before the correlation cursor, the pair scopes from a pair retention
        before it (the correlator reads no further back: grouping.readable). One round trip; a
        value another worker moves on meanwhile only makes the write keep more."""
        names = sorted(set(scopes))
        async with self.redis.pipeline(transaction=False) as pipe:
            if names:
                pipe.zmscore(JUDGED_KEY, names)
            if self.correlator is not None:
                pipe.hget(CORRELATION_KEY, "until")
            replies = await pipe.execute() if names or self.correlator is not None else []
        judged = dict(zip(names, replies.pop(0))) if names else {}
        cursor = replies.pop(0) if self.correlator is not None else None
        # A scope silent for a retention leaves `judged` (_PLAN), but its state still holds the
        # bins its baseline took in, which its next judgement takes out: its own `until` says
        # from where (a second round trip, only for a batch with such a scope or a new one).
        missing = [name for name in names if judged[name] is None]
        if missing:
            async with self.redis.pipeline(transaction=False) as pipe:
                for name in missing:
                    pipe.hget(incident_key(name), "until")
                judged.update(zip(missing, await pipe.execute()))
        return kept_lines(judged, cursor, self.config.lookback_s, self.store.retention_s, self.store.pair_retention_s)

    async def settle(self, *, ended: bool = False) -> int:
        """The input has paused, or `ended` (a replay, whose partitions end at different event
        times: each is through its last post, so judging goes to the newest post of any): judge
        every scope with posts not yet judged, group every transition up to the frontier, and
        announce the incidents still in their group wait. `ended` also trims every scope's windows
        as a write at the end would (`trim_ended`). Returns the transitions and outbox entries this
        wrote."""
        written, behind = 0, None
        while True:
            # Round after round until every scope is through: a scope goes MAX_BOUNDARIES a round,
            # and a replay of sparse chatter ends with judging days or months behind its posts
            # (one round judged two days more of the Discord export's ten months, and the records
            # stopped where the batches happened to have brought judging).
            records, stopped = await self._round(list(await self.redis.zrange(DIRTY_KEY, 0, -1)), ended=ended)
            written += len(records)
            if stopped is None or stopped == behind:  # through, or no scope moved on
                break
            behind = stopped
        if self.correlator is not None:
            written += await self.correlator.flush()
        if ended:
            await self.trim_ended()
        return written

    async def trim_ended(self) -> None:
        """The input has ended and judging is through it: trim every scope as a write with every
        partition through its newest post would, so what a replay leaves does not depend on the
        wall clock. While it ran, a partition whose posts ended first stopped holding the trim back
        only once it had gone unwritten for SENTINEL_ALERT_IDLE_PARTITION of wall time, and the
        partitions' later writes trimmed the scopes they touched a retention behind the slowest
        live one: how far depended on when that was (and on where judging had got to, where
        `Kept` held them). Every one of those lines is at or before this one: a retention behind
        the newest post, held back by what judging and grouping would still read
        (`windows.ended_kept`). Every scope's buckets, roll-ups, post ids and cap cells, the scope
        registry and the channel registry, in one write (`WindowStore.apply`) after a SCAN of the
        index keys and two round trips for the lines."""
        stats = await self.store.stats()
        watermark = stats.get("watermark", float("-inf"))
        if watermark == float("-inf"):
            return
        floor = frontier(stats, self.partitions, self.clock(), self.config.idle_s, ended=True)
        scopes = await self.store.indexed_scopes()
        judged = [scope for scope in scopes if not is_pair_scope(scope)]
        keep = ended_kept(await self.kept(judged), await self.store.newest_buckets(judged), self.config.lookback_s,
                          self.store.bucket_s)
        await self.store.apply([], {}, watermark, low=floor, horizon=trim_horizon(watermark, floor, self.store.retention_s),
                               keep=keep, trim=scopes)

    async def settle_if_silent(self, quiet_s: float) -> int:
        """A live stream that has paused (no batch on any partition for `quiet_s`, wall clock) is
        settled like the end of a replay, so an incident in its group wait is announced now rather
        than with the next post, however long that takes. Safe on every worker at once (both
        steps are compare-and-sets). Returns the transitions and outbox entries it wrote."""
        if not silent(await self.store.stats(), self.clock(), quiet_s):
            return 0
        return await self.settle()

    async def _judge_once(
        self, scopes: list[str], until: float, history: tuple[float, float], now_iso: str, committed: list[AlertRecord],
        short: list[float], labels_from: float = float("-inf"),
    ) -> list[str]:
        replies = await self._states(scopes)
        # The earliest bucket of scopes never judged (where judging starts), and of scopes whose own
        # history start is not known yet (it is set at their first judgement).
        earliest = await self._earliest([scope for scope, (done, _, seq, since, _) in zip(scopes, replies)
                                         if done is None or (since is None and not seq)])
        stream_start, trimmed = history
        plans, caught_up = [], []
        commits: list[tuple[Any, ...]] = []  # _commit_call's rows
        for scope, (done, raw, seq, since, told) in zip(scopes, replies):
            judged_to = int(done) if done is not None else self._start(earliest.get(scope, []))
            if judged_to is None:
                continue
            todo = boundaries(judged_to, until, self.config.step_s, limit=MAX_BOUNDARIES)
            if len(todo) == MAX_BOUNDARIES and todo[-1] + self.config.step_s <= until:
                short.append(todo[-1])
            if not todo and done is not None:
                caught_up += [scope, done]
            if not todo and done is None:
                # A new scope with no boundary to judge yet: record where it starts (what a judgement
                # would assume), so the plan leaves it alone until a boundary passes instead of
                # re-reading it every batch.
                commits.append((scope, "", judged_to, {}, None, [], None, "", [], []))
            if todo:
                incidents = {k: Incident.from_json(v) for k, v in orjson.loads(raw or "{}").items()}
                state = SeqState.from_json(orjson.loads(seq)) if seq and done is not None else None
                # The scope's own history start: kept from its first judgement; read now for a
                # scope judged for the first time (todo starts after its earliest bucket, so every
                # post before that bucket would be written by now: the value is final); a scope
                # whose detector state predates the field keeps the stream's, which its state holds.
                if since is not None:
                    start, new_since = float(since), None
                elif state is not None:
                    start, new_since = stream_start, None
                else:
                    found = earliest.get(scope, [])
                    start = scope_history_start(float(found[0]) if found else None, stream_start, trimmed)
                    new_since = start
                plans.append((scope, done or "", todo, incidents, state, self._reads(todo, state), start, new_since, told))
        if caught_up:
            await self._clean(keys=[DIRTY_KEY], args=caught_up)
        if not plans and not commits:
            return []
        step = self.config.step_s
        series = iter(await self.store.slices_many([(scope, first, step, count) for scope, *_, reads, _, _, _ in plans for first, count in reads]))
        for scope, expected, todo, incidents, state, reads, start, new_since, told in plans:
            tables = [(first, next(series)) for first, _ in reads]
            open_before = [incident for incident in incidents.values() if incident.alert_id and not incident.pending]
            held = {incident.alert_id: incident.severity for incident in open_before}
            notified = {incident.alert_id: incident.last_notified for incident in open_before}
            if self.config.detector == "sequential":
                after, state, records = judge_sequential(scope, incidents, state, _bins_from(tables, step, start),
                                                         todo, self.config, now_iso, labels_from)
            else:
                (first, slices), = tables
                after, records = judge_series(scope, incidents, slices, first, todo, start, self.config, now_iso, labels_from)
            records = [await self._with_samples(r) for r in records]
            commits.append((scope, expected, todo[-1], after, state, records, new_since, *self._told(told, records, after, held),
                            self._last_notified(records, notified)))
        calls = [self._commit_call(commits[i:i + CHUNK]) for i in range(0, len(commits), CHUNK)]
        results = [ok for reply in await run_scripts(self.redis, calls) for ok in reply]
        lost = []
        for (scope, _, _, _, _, records, *_), ok in zip(commits, results):
            if ok:
                committed.extend(records)
                for r in records:
                    log.info("alert transition", extra={"alert_id": r.alert_id, "scope": r.scope, "kind": r.kind, "state": r.state,
                                                        "severity": r.severity, "window_end": r.window_end, "zscore": r.zscore})
            else:
                lost.append(scope)
        return lost

    def _told(self, stored: str | None, records: list[AlertRecord], after: Mapping[str, Incident],
              held: Mapping[str, str]) -> tuple[str | bytes, list[list[str]]]:
        """Without grouping, the scope's `told_severities` after `records` ('' = unchanged) and the
        severities each record's notification is routed for (`incidents.told_through`; `held`: each
        alert open before them and its stored severity). A hash field of its own, which a worker
        before it leaves alone: one in its `incidents` would be refused."""
        if self.correlator is not None or (not records and not stored):
            return "", [[] for _ in records]
        before = orjson.loads(stored) if stored else {}
        told, routes = told_through(before, records, {incident.alert_id for incident in after.values()}, held)
        return ("" if told == before else _encode(told)), routes

    def _last_notified(self, records: list[AlertRecord], notified: Mapping[str, int]) -> list[str]:
        """Without grouping, per record a resolution's alert's latest firing notice's time
        (`incidents.last_notified_through`; `notified`: each alert open before them and its stored
        `last_notified`); with grouping none (the correlator's entries carry their own)."""
        return [""] * len(records) if self.correlator is not None else last_notified_through(notified, records)

    def _commit_call(self, commits: list[tuple]) -> tuple:
        """One _COMMIT call for these scopes' (scope, expected until, new until, incidents, state, records,
        history start to record or None, told severities ('' = leave them), each record's routes, each
        record's latest firing notice's time)."""
        keys = [OPEN_KEY, OUTBOX_KEY, ALERT_STATS_KEY, DIRTY_KEY, STAGING_KEY, JUDGED_KEY]
        args: list[str | bytes] = ["1" if self.correlator is not None else "0", str(self.store.idle_ttl_s)]  # _encode gives bytes
        for scope, expected, last, after, state, records, since, told, routes, lasts in commits:
            keys.append(incident_key(scope))
            args += [expected, str(last), scope, _encode({k: v.to_json() for k, v in after.items()}),
                     _encode(state.to_json()) if state is not None else "", repr(float(since)) if since is not None else "",
                     told, str(len(records))]
            args += [item for r, route, notified in zip(records, routes, lasts)
                     for item in (str(int(epoch(r.window_end))), json.dumps(asdict(r), ensure_ascii=False), json.dumps(route) if route else "",
                                  notified)]
        return self._commit, keys, args

    async def _states(self, scopes: list[str]) -> list[tuple[str | None, str | None, str | None, str | None, str | None]]:
        """Each scope's (until, incidents, seq, since, told_severities) as stored, a few hundred scopes a script."""
        calls: list[tuple[Any, list[str], list[str]]] = [(self._read, [incident_key(scope) for scope in scopes[i:i + CHUNK]], [])
                                                         for i in range(0, len(scopes), CHUNK)]
        return [tuple(found) for reply in await run_scripts(self.redis, calls) for found in reply]

    async def _earliest(self, scopes: list[str]) -> dict[str, list[str]]:
        """The earliest bucket of each scope never judged (where it starts) or not yet judged with
        its own history start (one round trip; none when every scope has both, as almost all have)."""
        if not scopes:
            return {}
        async with self.redis.pipeline(transaction=False) as pipe:
            for scope in scopes:
                pipe.zrange(index_key(scope), 0, 0)
            return dict(zip(scopes, await pipe.execute()))

    def _reads(self, todo: list[int], state: SeqState | None) -> list[tuple[int, int]]:
        """The slices judging `todo` needs: the whole lookback for the window detector (and for a
        scope the sequential one has no state for yet), else three short runs (sequential_reads)."""
        if self.config.detector == "sequential" and state is not None:
            return sequential_reads(todo, self.config)
        return [read_span(todo, self.config)]

    def _start(self, earliest: list[str]) -> int | None:
        """A scope never judged starts just before its earliest bucket: earlier windows are empty,
        and an empty window can neither fire nor move an incident that does not exist."""
        if not earliest:
            return None
        return (int(earliest[0]) // self.config.step_s) * self.config.step_s

    async def _with_samples(self, record: AlertRecord) -> AlertRecord:
        if self.samples <= 0 or record.state != "firing":
            return record
        end = int(epoch(record.window_end))
        found = await self.store.extremes(record.scope, end - self.config.window_s, end)
        # Posts of the direction that fired, each text once (`distinct_samples`): when copies fill
        # the most negative places, the next different negative post takes one, never a neutral one.
        if record.kind == "sentiment_drop":
            ranked = [s for s in found if s.label == "negative"]
        elif record.kind == "sentiment_surge":
            ranked = [s for s in reversed(found) if s.label == "positive"]
        else:
            ranked = sorted(found, key=lambda s: (-abs(s.score), s.id))
        chosen = distinct_samples(ranked, self.samples)
        return replace(record, samples=chosen, sample_post_ids=[s.id for s in chosen])


def _encode(value: object) -> bytes:
    # A numpy scalar from a slice table must not stop a commit (the standard library's encoder took them).
    return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY)


def _bins_from(tables: list[tuple[int, np.ndarray]], step_s: int, history_start: float) -> BinAt:
    """One bin lookup over several runs of slices (each from its own first start)."""
    lookups = [table_bins(slices, first, step_s, history_start) for first, slices in tables]

    def bin_at(start: int) -> np.ndarray | None:
        for lookup in lookups:
            found = lookup(start)
            if found is not None:
                return found
        return None

    return bin_at
