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
from typing import Callable, Iterable

import numpy as np

from stream.alerts.incidents import AlertRecord, Incident
from stream.alerts.judging import (
    AlertConfig,
    BinAt,
    boundaries,
    frontier,
    judge_sequential,
    judge_series,
    read_span,
    sequential_reads,
    table_bins,
)
from stream.alerts.sequential import SeqState
from stream.store import WindowStore
from stream.keys import ALERT_STATS_KEY, OPEN_KEY, OUTBOX_KEY, incident_key, index_key
from stream.timefmt import epoch, iso

log = logging.getLogger(__name__)

MAX_BOUNDARIES = 2880  # per scope and call; a scope far behind catches up over a few batches


# KEYS: scope state, open set, outbox, stats. ARGV: expected until ('' = never judged), new until,
# scope, incidents JSON, sequential detector state JSON ('' = none), then one record JSON per transition.
_COMMIT = """
local current = redis.call('HGET', KEYS[1], 'until') or ''
if current ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'until', ARGV[2], 'incidents', ARGV[4])
if ARGV[5] ~= '' then redis.call('HSET', KEYS[1], 'seq', ARGV[5]) end
if ARGV[4] == '{}' then redis.call('SREM', KEYS[2], ARGV[3]) else redis.call('SADD', KEYS[2], ARGV[3]) end
for i = 6, #ARGV do
  redis.call('XADD', KEYS[3], '*', 'record', ARGV[i])
  redis.call('HINCRBY', KEYS[4], 'transitions', 1)
end
return 1
"""


class AlertEngine:
    """Judges scopes after each batch's window update and commits transitions to the outbox."""

    def __init__(self, store: WindowStore, config: AlertConfig, *, partitions: int, samples: int = 3, clock: Callable[[], float] = time.time):
        self.store = store
        self.redis = store.redis
        self.config = config
        self.partitions = partitions
        self.samples = samples
        self.clock = clock
        self._commit = self.redis.register_script(_COMMIT)

    async def judge(self, touched: Iterable[str]) -> list[AlertRecord]:
        """Judge every pending boundary of the touched scopes (and of scopes with open incidents)."""
        stats = await self.store.stats()
        now = self.clock()
        until = frontier(stats, self.partitions, now, self.config.idle_s) - self.config.grace_s
        if until == float("-inf"):
            return []
        history_start = stats.get("first_event", until)
        scopes = sorted(set(touched) | set(await self.redis.smembers(OPEN_KEY)))
        committed: list[AlertRecord] = []
        for _ in range(3):  # a lost compare-and-set means another worker moved on: re-read and continue
            lost = await self._judge_once(scopes, until, history_start, iso(now), committed)
            if not lost:
                break
            scopes = lost
        return committed

    async def _judge_once(
        self, scopes: list[str], until: float, history_start: float, now_iso: str, committed: list[AlertRecord]
    ) -> list[str]:
        async with self.redis.pipeline(transaction=False) as pipe:
            for scope in scopes:
                pipe.hmget(incident_key(scope), "until", "incidents", "seq")
                pipe.zrange(index_key(scope), 0, 0)  # the earliest bucket, for a scope never judged
            replies = await pipe.execute()
        plans = []
        for scope, (done, raw, seq), earliest in zip(scopes, replies[::2], replies[1::2]):
            after = int(done) if done is not None else self._start(earliest)
            if after is None:
                continue
            todo = boundaries(after, until, self.config.step_s, limit=MAX_BOUNDARIES)
            if todo:
                incidents = {k: Incident.from_json(v) for k, v in json.loads(raw or "{}").items()}
                state = SeqState.from_json(json.loads(seq)) if seq and done is not None else None
                plans.append((scope, done or "", todo, incidents, state, self._reads(todo, state)))
        if not plans:
            return []
        step = self.config.step_s
        series = await self.store.slices_many([(scope, first, step, count) for scope, *_, reads in plans for first, count in reads])
        commits = []
        for scope, expected, todo, incidents, state, reads in plans:
            tables = [(first, series.pop(0)) for first, _ in reads]
            if self.config.detector == "sequential":
                after, state, records = judge_sequential(scope, incidents, state, _bins_from(tables, step, history_start),
                                                         todo, self.config, now_iso)
            else:
                (first, slices), = tables
                after, records = judge_series(scope, incidents, slices, first, todo, history_start, self.config, now_iso)
            records = [await self._with_samples(r) for r in records]
            commits.append((scope, expected, todo[-1], after, state, records))
        async with self.redis.pipeline(transaction=False) as pipe:
            for scope, expected, last, after, state, records in commits:
                await self._commit(
                    keys=[incident_key(scope), OPEN_KEY, OUTBOX_KEY, ALERT_STATS_KEY],
                    args=[expected, str(last), scope, json.dumps({k: v.to_json() for k, v in after.items()}),
                          json.dumps(state.to_json()) if state is not None else "",
                          *(json.dumps(asdict(r), ensure_ascii=False) for r in records)],
                    client=pipe,
                )
            results = await pipe.execute()
        lost = []
        for (scope, _, _, _, _, records), ok in zip(commits, results):
            if ok:
                committed.extend(records)
                for r in records:
                    log.info("alert transition", extra={"alert_id": r.alert_id, "scope": r.scope, "kind": r.kind, "state": r.state,
                                                        "severity": r.severity, "window_end": r.window_end, "zscore": r.zscore})
            else:
                lost.append(scope)
        return lost

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
        if record.kind == "sentiment_drop":
            chosen = found[: self.samples]
        elif record.kind == "sentiment_surge":
            chosen = list(reversed(found))[: self.samples]
        else:
            chosen = sorted(found, key=lambda s: (-abs(s.score), s.id))[: self.samples]
        return replace(record, samples=chosen, sample_post_ids=[s.id for s in chosen])


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
