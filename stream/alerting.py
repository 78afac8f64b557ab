"""Redis adapter for the early warning: incident state, the notification outbox, silences, delivery.

Every key lives in the `{alerts}` hash slot, so one Lua script can move an incident and append its
records to the outbox atomically (and stays valid on Redis Cluster):

- `sentinel:{alerts}:scope:<scope>`: hash `until` (the last boundary judged) and `incidents` (JSON);
- `sentinel:{alerts}:open`: scopes with a firing or pending incident (judged even when untouched);
- `sentinel:{alerts}:outbox`: a Redis stream of transition records, read by the consumer group
  `notifiers` (one consumer per worker; a dead worker's entries are claimed by another);
- `sentinel:{alerts}:silences`: hash id -> silence JSON;
- `sentinel:{alerts}:stats`: counters (transitions, notified, silenced, delivery_failed, published).

Exactly one record per transition, however many workers judge a scope: the commit is a
compare-and-set on `until`, so of two workers judging the same boundaries only the first writes
(the judgement is a pure function of the windows, so the loser would have written the same).
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from dataclasses import asdict, replace
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Iterable

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from stream.evaluation import AlertConfig, boundaries, frontier, judge_series, read_span
from stream.contracts import epoch, iso
from stream.incidents import AlertRecord, Incident, Sample, Silence, silenced_by
from stream.store import WindowStore
from stream.windows import index_key

if TYPE_CHECKING:
    from stream.metrics import WorkerMetrics

log = logging.getLogger(__name__)

PREFIX = "sentinel:{alerts}"
OPEN_KEY = f"{PREFIX}:open"
OUTBOX_KEY = f"{PREFIX}:outbox"
SILENCES_KEY = f"{PREFIX}:silences"
ALERT_STATS_KEY = f"{PREFIX}:stats"
GROUP = "notifiers"
MAX_BOUNDARIES = 2880  # per scope and call; a scope far behind catches up over a few batches
CHART_SPAN_S, CHART_STEP_S = 86400, 900


def scope_key(scope: str) -> str:
    return f"{PREFIX}:scope:{scope}"


# KEYS: scope state, open set, outbox, stats. ARGV: expected until ('' = never judged), new until,
# scope, incidents JSON, then one record JSON per transition.
_COMMIT = """
local current = redis.call('HGET', KEYS[1], 'until') or ''
if current ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'until', ARGV[2], 'incidents', ARGV[4])
if ARGV[4] == '{}' then redis.call('SREM', KEYS[2], ARGV[3]) else redis.call('SADD', KEYS[2], ARGV[3]) end
for i = 5, #ARGV do
  redis.call('XADD', KEYS[3], '*', 'record', ARGV[i])
  redis.call('HINCRBY', KEYS[4], 'transitions', 1)
end
return 1
"""


def record_from_json(data: dict[str, Any]) -> AlertRecord:
    samples = [Sample(**s) for s in data.pop("samples", [])]
    return AlertRecord(**data, samples=samples)


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

    async def evaluate(self, touched: Iterable[str]) -> list[AlertRecord]:
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
            lost = await self._evaluate_once(scopes, until, history_start, iso(now), committed)
            if not lost:
                break
            scopes = lost
        return committed

    async def _evaluate_once(
        self, scopes: list[str], until: float, history_start: float, now_iso: str, committed: list[AlertRecord]
    ) -> list[str]:
        async with self.redis.pipeline(transaction=False) as pipe:
            for scope in scopes:
                pipe.hmget(scope_key(scope), "until", "incidents")
                pipe.zrange(index_key(scope), 0, 0)  # the earliest bucket, for a scope never judged
            replies = await pipe.execute()
        plans = []
        for scope, (done, raw), earliest in zip(scopes, replies[::2], replies[1::2]):
            after = int(done) if done is not None else self._start(earliest)
            if after is None:
                continue
            todo = boundaries(after, until, self.config.step_s, limit=MAX_BOUNDARIES)
            if todo:
                incidents = {k: Incident.from_json(v) for k, v in json.loads(raw or "{}").items()}
                plans.append((scope, done or "", todo, incidents))
        if not plans:
            return []
        spans = [(scope, *read_span(todo, self.config)) for scope, _, todo, _ in plans]
        series = await self.store.slices_many([(scope, first, self.config.step_s, count) for scope, first, count in spans])
        commits = []
        for (scope, expected, todo, incidents), (_, first, _), slices in zip(plans, spans, series):
            after, records = judge_series(scope, incidents, slices, first, todo, history_start, self.config, now_iso)
            records = [await self._with_samples(r) for r in records]
            commits.append((scope, expected, todo[-1], after, records))
        async with self.redis.pipeline(transaction=False) as pipe:
            for scope, expected, last, after, records in commits:
                await self._commit(
                    keys=[scope_key(scope), OPEN_KEY, OUTBOX_KEY, ALERT_STATS_KEY],
                    args=[expected, str(last), scope, json.dumps({k: v.to_json() for k, v in after.items()}),
                          *(json.dumps(asdict(r), ensure_ascii=False) for r in records)],
                    client=pipe,
                )
            results = await pipe.execute()
        lost = []
        for (scope, _, _, _, records), ok in zip(commits, results):
            if ok:
                committed.extend(records)
                for r in records:
                    log.info("alert transition", extra={"alert_id": r.alert_id, "scope": r.scope, "kind": r.kind, "state": r.state,
                                                        "severity": r.severity, "window_end": r.window_end, "zscore": r.zscore})
            else:
                lost.append(scope)
        return lost

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


# --- silences -----------------------------------------------------------------------------------

async def add_silence(client: aioredis.Redis, scope: str, duration_s: int, kind: str | None, reason: str) -> Silence:
    now = time.time()
    silence = Silence(secrets.token_hex(4), scope, kind, now + duration_s, reason, now)
    await client.hset(SILENCES_KEY, silence.id, json.dumps(asdict(silence)))
    return silence


async def list_silences(client: aioredis.Redis, *, include_expired: bool = False) -> list[Silence]:
    now = time.time()
    found = [Silence(**json.loads(v)) for v in (await client.hgetall(SILENCES_KEY)).values()]
    expired = [s.id for s in found if s.until <= now]
    if expired and not include_expired:
        await client.hdel(SILENCES_KEY, *expired)
    return sorted((s for s in found if include_expired or s.until > now), key=lambda s: s.until)


async def remove_silence(client: aioredis.Redis, silence_id: str) -> bool:
    return bool(await client.hdel(SILENCES_KEY, silence_id))


# --- delivery -------------------------------------------------------------------------------------

Publish = Callable[[AlertRecord], Awaitable[Any]]


class AlertDelivery:
    """Drains the outbox off the stream's path: notify (unless silenced), publish the record to
    `sentiment-alerts` with `notified` set, then acknowledge. A worker that dies mid-delivery leaves
    its entries pending; another claims them after `claim_idle_s`."""

    def __init__(self, store: WindowStore, notifier: Any, publish: Publish, *, consumer: str, chart: bool = True, claim_idle_s: float = 60.0,
                 metrics: WorkerMetrics | None = None):
        self.store = store
        self.redis = store.redis
        self.notifier = notifier
        self.publish = publish
        self.consumer = consumer
        self.chart = chart
        self.claim_idle_ms = int(claim_idle_s * 1000)
        self.metrics = metrics

    async def ensure_group(self) -> None:
        try:
            await self.redis.xgroup_create(OUTBOX_KEY, GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def run(self) -> None:
        await self.ensure_group()
        self._stopping = asyncio.Event()
        while not self._stopping.is_set():
            try:
                self._current = asyncio.ensure_future(self.drain_once(block_ms=1000))
                await asyncio.shield(self._current)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - Redis or Kafka trouble: log, back off, keep the loop alive
                log.exception("alert delivery loop error; retrying")
                await asyncio.sleep(1.0)

    async def stop(self, timeout: float) -> bool:
        """Read nothing new, and let the notifications in progress finish (within `timeout`).
        Entries not finished stay pending in the group; another worker claims them."""
        stopping = getattr(self, "_stopping", None)
        if stopping is not None:
            stopping.set()
        current = getattr(self, "_current", None)
        if current is None or current.done():
            return True
        done, _ = await asyncio.wait({current}, timeout=max(timeout, 0.0))
        return bool(done)

    async def drain_once(self, block_ms: int = 0) -> int:
        try:
            claimed = await self.redis.xautoclaim(OUTBOX_KEY, GROUP, self.consumer, self.claim_idle_ms, start_id="0-0", count=20)
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            # Redis lost the group (restarted without persistence, or the outbox was deleted): without
            # it every read fails forever. Re-create it at the stream's start and read on next time.
            log.warning("outbox consumer group missing; re-creating it")
            await self.ensure_group()
            return 0
        entries = list(claimed[1]) if claimed else []
        read = await self.redis.xreadgroup(GROUP, self.consumer, {OUTBOX_KEY: ">"}, count=20, block=block_ms or None)
        for _, items in read or []:
            entries.extend(items)
        await asyncio.gather(*(self._deliver(entry_id, fields) for entry_id, fields in entries if fields))
        return len(entries)

    async def _deliver(self, entry_id: str, fields: dict[str, str]) -> None:
        record = record_from_json(json.loads(fields["record"]))
        silence = silenced_by(await list_silences(self.redis), record.scope, record.kind, time.time())
        notified = False
        if silence is not None:
            log.info("alert silenced", extra={"alert_id": record.alert_id, "scope": record.scope, "silence": silence.id})
            await self.redis.hincrby(ALERT_STATS_KEY, "silenced", 1)
            if self.metrics is not None:
                self.metrics.silenced()
        elif self.notifier is not None and self.notifier.targets_for(record):
            png = await self._chart(record) if self.chart else None
            delivery = await self.notifier.deliver(record, png)
            notified = delivery.notified
            await self.redis.hincrby(ALERT_STATS_KEY, "notified" if notified else "delivery_failed", 1)
            if self.metrics is not None:
                self.metrics.delivery(notified)
        await self.publish(record.with_delivery(notified))
        await self.redis.hincrby(ALERT_STATS_KEY, "published", 1)
        await self.redis.xack(OUTBOX_KEY, GROUP, entry_id)

    async def _chart(self, record: AlertRecord) -> bytes | None:
        from stream.chart import render_chart

        end = int(epoch(record.window_end))
        first = end - CHART_SPAN_S
        try:
            slices = await self.store.slices(record.scope, first, CHART_STEP_S, CHART_SPAN_S // CHART_STEP_S)
            points = [(first + i * CHART_STEP_S, int(n), s / n if n else 0.0) for i, (n, *_, s, _) in enumerate(slices.tolist())]
            return await asyncio.to_thread(render_chart, points, int(epoch(record.window_start)), end, record.scope, record.kind)
        except Exception:  # noqa: BLE001 - a chart is a nicety; the notification goes without it
            log.exception("chart failed; notifying without it", extra={"alert_id": record.alert_id})
            return None


async def outbox_drained(client: aioredis.Redis) -> bool:
    """Every transition record so far has been delivered (or given up on) and published."""
    try:
        info = await client.xinfo_stream(OUTBOX_KEY)
    except ResponseError:
        return True  # no stream: nothing was ever recorded
    groups = {g["name"]: g for g in await client.xinfo_groups(OUTBOX_KEY)}
    group = groups.get(GROUP)
    if group is None:
        return info["length"] == 0
    return group["pending"] == 0 and group["last-delivered-id"] == info["last-generated-id"]


def public_record(record: AlertRecord) -> bytes:
    return json.dumps(record.as_record(), ensure_ascii=False).encode()
