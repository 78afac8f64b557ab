"""Delivery of alert transitions, off the stream's path: the outbox (a Redis stream, consumer group
`keys.OUTBOX_GROUP`) is drained by every worker; each entry is notified unless silenced, published to
`sentiment-alerts` with `notified` set, then acknowledged. A worker that dies mid-delivery leaves its
entries pending; another claims them after `claim_idle_s`. A round that fails (Redis or Kafka away)
leaves its entries pending too, and this worker delivers them again in its next rounds.

An entry notified is marked so in Redis (`keys.NOTIFIED_KEY`) before it is published, so a delivery
after a failed publish or acknowledgement, or after a crash in those steps, publishes without
notifying again. The mark is retried while Redis is briefly away (a restart leaves the pool's
connections dead): the notification is out, and without the mark it would go out twice. At least
once: a worker killed between the notification and that mark notifies again when the entry is claimed.
A notification some services accepted and others refused after their retries is marked too, with
the ones that refused (since session 52): such a delivery sends it to those alone, never again to one
that accepted it.

Within a worker's round, entries of one incident (or, without grouping, of one scope and kind) are
delivered one after another in outbox order, and different incidents at once (`order_key`). Across
workers too: a chain whose incident has an earlier entry still pending elsewhere in the group
(another worker delivering it, or a dead worker's, until it is claimed) is held back
(`_held_back`) and checked again next round, so "resolved" never overtakes the notice it ends.

An entry acknowledged is recorded settled (`keys.SETTLED_KEY`, since session 54) until the trim drops
it: a group lost while the stream stayed (an `XGROUP DESTROY`) is re-created at the stream's start,
and an entry read again so is acknowledged without a second notification (`_skip_settled`).

The steps of one entry are named: `_notified_as`, `_silence_of`, `_notify`, `_settle`,
`_publish_and_ack`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import asdict, replace
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Protocol, Sequence

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from stream.alerts import audit
from stream.alerts.chart import baselines_of, chart_points, render_chart
from stream.alerts.correlator import acknowledgements
from stream.alerts.grouping import Notice
from stream.alerts.precision import TrackRecord, track_record
from stream.alerts.incidents import (TOLD_HEARD, TOLD_HELD, TOLD_LAST, TOLD_NOTICE, TOLD_SENT, TOLD_SERVICE, TOLD_UNHEARD_AT, AlertRecord,
                                     NotifiedMark, capped_field, heard_by, heard_later, heard_previous, marked_services, marks_behind, notified_mark,
                                     record_from_json, refused_field, told_fate, told_routes, told_services)
from stream.alerts.notify import Delivery, Notifier, describe, service_key
from stream.alerts.silences import Silence, list_silences, purge_expired, silence_of_incident, silenced_by
from stream.keys import ALERT_STATS_KEY, NOTIFIED_KEY, OUTBOX_GROUP, OUTBOX_KEY, SETTLED_KEY, VERDICTS_KEY, caps_key, told_key
from stream.redis_client import is_transient, retry_transient
from stream.store import WindowStore
from stream.timefmt import epoch, parse_duration

if TYPE_CHECKING:
    from apprise.plugins.base import NotifyBase

log = logging.getLogger(__name__)

CHART_SPAN_S, CHART_STEP_S = 86400, 900
TRIM_EVERY_S = 60.0  # how often a worker trims the delivered part of the outbox
READ_COUNT = 20  # outbox entries taken per round
PENDING_SCAN = 1000  # pending entries read a page while looking for an earlier one of the same incident
PublishRecord = Callable[[AlertRecord], Awaitable[Any]]

# The two steps after a notification or a publish, each safe to run twice: a retry after a reply
# lost with its connection must not count again. All their keys share the {alerts} slot.
# KEYS: notified marks, alert stats. ARGV: entry id, TTL (s), the services that accepted it (a JSON
# list of `service_key`, since session 51; a worker before wrote 1), the entry's refused field
# (`incidents.refused_field`), the services that refused it (a JSON list, since session 52; '' where
# none did), the entry's capped field (`incidents.capped_field`), how many services the daily cap held
# back from a partial one (since session 53; '' where none, or the mark is finished), and, for the
# delivery again of a partial one, `retry` ('' for a first delivery; `capped` where the finished
# notification counts `capped` too). A mark is written once, but a partial one (a refused field
# beside it) is rewritten by the delivery that sends the notification again to the services that
# refused it (a claim after its worker died, or its own worker's after a failed publish or
# acknowledgement): finished then (none refused again), it loses both fields and counts `notified`
# (and `capped`, where the retry says so), once, as a finished one does when first written. A
# retry that finds the mark no longer partial writes and counts nothing: another delivery of the
# entry (a claim racing its worker's redelivery) finished it first, or acknowledged it already.
_MARK_NOTIFIED = """
local partial = redis.call('HEXISTS', KEYS[1], ARGV[4]) == 1
local retry = ARGV[8] ~= ''
if partial or (not retry and redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[3]) == 1) then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
  if ARGV[5] ~= '' then
    redis.call('HSET', KEYS[1], ARGV[4], ARGV[5])
    if ARGV[7] ~= '' then
      redis.call('HSET', KEYS[1], ARGV[6], ARGV[7])
    end
  else
    redis.call('HDEL', KEYS[1], ARGV[4], ARGV[6])
    redis.call('HINCRBY', KEYS[2], 'notified', 1)
    if ARGV[8] == 'capped' then
      redis.call('HINCRBY', KEYS[2], 'capped', 1)
    end
  end
end
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('EXPIRE', KEYS[2], ARGV[2])
return 1
"""
# KEYS: outbox, notified marks, alert stats, settled entries (since session 54). ARGV: group, entry id,
# records published, TTL (s), the entry's refused field, its capped field, the entry id's milliseconds.
# The entry is recorded settled whether or not this XACK took it off the group's pending list: the
# mark goes here, and a group re-created at the stream's start (an XGROUP DESTROY) would read it as new.
_ACK_PUBLISHED = """
if redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]) == 1 then
  redis.call('HINCRBY', KEYS[3], 'published', ARGV[3])
  redis.call('EXPIRE', KEYS[3], ARGV[4])
end
redis.call('HDEL', KEYS[2], ARGV[2], ARGV[5], ARGV[6])
redis.call('ZADD', KEYS[4], ARGV[7], ARGV[2])
redis.call('EXPIRE', KEYS[4], ARGV[4])
return 1
"""

# A consumer of the group that has read nothing for `idle` ms and holds no entry, but this worker's
# own, is deleted; one script, so no read can give it an entry between the check and the delete
# (DELCONSUMER drops a consumer's pending entries, and nothing could claim them after).
# KEYS: outbox. ARGV: group, this worker's consumer, idle (ms). Returns the names deleted.
_FORGET_CONSUMERS = """
local gone = {}
for _, consumer in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])) do
  local f = {}
  for i = 1, #consumer, 2 do f[consumer[i]] = consumer[i + 1] end
  if f['name'] ~= ARGV[2] and tonumber(f['pending']) == 0 and tonumber(f['idle']) >= tonumber(ARGV[3]) then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], f['name'])
    gone[#gone + 1] = f['name']
  end
end
return gone
"""
# A live worker reads the outbox every round (about a second), and one stalled past 30 s fails its
# liveness probe and is restarted; a consumer idle this long is a dead worker's (a restarted pod's
# host-pid name is never used again). Were it alive, its next read would simply re-create it.
FORGET_CONSUMER_IDLE_S = 600.0


class DeliveryObserver(Protocol):
    """What delivery reports (ops/prometheus.WorkerMetrics implements it)."""

    def silenced(self) -> None: ...

    def delivery(self, notified: bool) -> None: ...

    def delivery_capped(self) -> None: ...


class _NoObserver:
    def silenced(self) -> None:
        pass

    def delivery(self, notified: bool) -> None:
        pass

    def delivery_capped(self) -> None:
        pass


def _outbox_gone(exc: ResponseError) -> bool:
    """Redis's answer when the outbox stream (`no such key`, from XINFO, also inside a script) or its
    group (`NOGROUP`) is missing. Redis 7 answers a read blocked on the stream when it is deleted
    with `UNBLOCKED the stream key no longer exists` (6.2 let it time out, then said NOGROUP); the
    other UNBLOCKED, a master turned replica, is not this (`is_transient`)."""
    text = str(exc)
    return "NOGROUP" in text or "no such key" in text.lower() or text.startswith("UNBLOCKED the stream key no longer exists")


def _id_order(entry_id: str) -> tuple[int, int]:
    """A stream entry id ('1700000000000-3') as a sortable pair."""
    ms, _, seq = str(entry_id).partition("-")
    return int(ms), int(seq or 0)


def _ms_of(entry_id: str) -> int:
    """The millisecond part of a stream entry id ('1700000000000-3')."""
    return _id_order(entry_id)[0]


TRACK_RECORD_SPAN_S = 30 * 86400  # verdicts a notification's track record counts (wall clock)
TRACK_RECORD_TTL_S = 300.0  # how long one read of them serves the notifications that follow


LOOP_BACKOFF_MAX_S = 10.0  # alerts wait at most this long once Redis is back


def loop_backoff_s(failures: int) -> float:
    """Seconds before the delivery loop tries again after `failures` in a row: 1, 2, 4, 8, 10 ..."""
    return min(2.0 ** (failures - 1), LOOP_BACKOFF_MAX_S)


class AlertDelivery:
    """Drains the outbox (see the module docstring)."""

    def __init__(self, store: WindowStore, notifier: Notifier | None, publish: PublishRecord, *, consumer: str, chart: bool = True,
                 claim_idle_s: float = 60.0, metrics: DeliveryObserver | None = None):
        self.store = store
        self.redis = store.redis
        self.notifier = notifier
        self.publish = publish
        self.consumer = consumer
        self.chart = chart
        self.claim_idle_ms = int(claim_idle_s * 1000)
        self.metrics: DeliveryObserver = metrics if metrics is not None else _NoObserver()
        self._trimmed_at = time.monotonic()
        self._mark_script = self.redis.register_script(_MARK_NOTIFIED)
        self._ack_script = self.redis.register_script(_ACK_PUBLISHED)
        self._forget_script = self.redis.register_script(_FORGET_CONSUMERS)
        # This consumer's own pending entries are read again first: at start (a restarted process
        # may keep its name) and after a failed round, so they wait a round, not `claim_idle_s`.
        self._redeliver_own = True
        # Chains held back behind an earlier entry pending elsewhere (`_held_back`): their entries
        # stay pending with this consumer and are read again with the next round's.
        self._held = False
        self._waiting: dict[str, float] = {}  # order key held back -> since when (monotonic), `_log_waits`
        self._round_started = time.monotonic()
        self._verdicts: tuple[float, list[dict[str, Any]]] = (-TRACK_RECORD_TTL_S, [])  # (read at, monotonic; entries)
        self._verdicts_lock = asyncio.Lock()
        if notifier is not None and notifier.daily_cap > 0:
            notifier.admit = self._admit

    async def ensure_group(self) -> None:
        try:
            await self.redis.xgroup_create(OUTBOX_KEY, OUTBOX_GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
            return
        await self.redis.expire(OUTBOX_KEY, self.store.idle_ttl_s)  # made empty here: no write has set it yet

    async def _count(self, field: str) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hincrby(ALERT_STATS_KEY, field, 1)
            pipe.expire(ALERT_STATS_KEY, self.store.idle_ttl_s)
            await pipe.execute()

    async def run(self) -> None:
        self._stopping = asyncio.Event()
        grouped = False
        failures = 0
        while not self._stopping.is_set():
            try:
                if not grouped:  # inside the loop: Redis away when the worker starts must not crash it
                    await self.ensure_group()
                    grouped = True
                self._current = asyncio.ensure_future(self.drain_once(block_ms=1000))
                await asyncio.shield(self._current)
                if failures:
                    log.info("alert delivery recovered", extra={"failures": failures})
                    failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - Redis or Kafka trouble: log, back off, keep the loop alive
                failures += 1
                delay = loop_backoff_s(failures)
                if failures == 1 and not is_transient(exc):
                    log.exception("alert delivery loop error; retrying", extra={"retry_in_s": delay})
                else:
                    # Redis away for hours: one line per try, backing off, not a traceback a second.
                    log.warning("alert delivery loop error; retrying",
                                extra={"error": f"{type(exc).__name__}: {exc}"[:300], "failures": failures, "retry_in_s": delay})
                await asyncio.sleep(delay)

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
            entries = await self._take(block_ms)
        except ResponseError as exc:
            if not _outbox_gone(exc):
                raise
            # Redis lost the group (restarted without persistence, or the outbox was deleted): without
            # it every read fails forever. Re-create it at the stream's start and read on next time.
            await self._regroup("read", exc)
            return 0
        delivered = await self._deliver_all(entries)
        if time.monotonic() - self._trimmed_at >= TRIM_EVERY_S:
            self._trimmed_at = time.monotonic()
            await self.trim_outbox()
            await self.forget_idle_consumers()
        return delivered

    async def _regroup(self, step: str, exc: ResponseError) -> None:
        """The outbox stream or its group is gone (an operator's DEL, a FLUSHDB, Redis restarted
        without persistence, a failover that lost the key): one line, and the group made again as
        at start, so the next read finds it and delivers whatever is recorded from now on."""
        log.warning("outbox consumer group missing; re-creating it", extra={"step": step, "error": str(exc)[:200]})
        await self.ensure_group()

    async def _take(self, block_ms: int) -> list[tuple[str, dict[str, str] | None, bool]]:
        """This round's entries as (entry id, fields, claimed): only a claimed entry (or one this
        worker failed to finish) can have been notified before."""
        entries: list[tuple[str, dict[str, str] | None, bool]] = []
        if self._redeliver_own or self._held:
            read = await self.redis.xreadgroup(OUTBOX_GROUP, self.consumer, {OUTBOX_KEY: "0"}, count=READ_COUNT)
            own = [(entry_id, fields, True) for _, items in read or [] for entry_id, fields in items]
            if self._redeliver_own and own:  # a failed round's entries go again first, alone
                self._redeliver_own = len(own) >= READ_COUNT  # more of them left for the next round
                log.info("outbox entries delivered again", extra={"count": len(own), "entries": [e for e, _, _ in own]})
                return own
            self._redeliver_own = False
            # Held back last round: checked again with what this round claims and reads, which may
            # bring the earlier entry they wait for (claimed from a dead worker).
            entries = own
        claimed = await self.redis.xautoclaim(OUTBOX_KEY, OUTBOX_GROUP, self.consumer, self.claim_idle_ms, start_id="0-0", count=READ_COUNT)
        await purge_expired(self.redis)
        mine = {entry_id for entry_id, _, _ in entries}
        taken = [(entry_id, fields, True) for entry_id, fields in (claimed[1] if claimed else []) if entry_id not in mine]
        if taken:  # a worker died or stalled mid-delivery: those it had notified are only published now
            log.warning("outbox entries claimed after %d s idle", self.claim_idle_ms // 1000,
                        extra={"count": len(taken), "entries": [entry_id for entry_id, _, _ in taken][:20]})
        entries += taken
        read = await self.redis.xreadgroup(OUTBOX_GROUP, self.consumer, {OUTBOX_KEY: ">"}, count=READ_COUNT, block=block_ms or None)
        for _, items in read or []:
            entries.extend((entry_id, fields, False) for entry_id, fields in items)
        return entries

    async def _deliver_all(self, entries: list[tuple[str, dict[str, str] | None, bool]]) -> int:
        # Every chain's delivery runs to its end before the next read, even when one fails: an
        # orphaned delivery would still be notifying while the next round claims or reads.
        self._round_started = time.monotonic()
        skipped, marked = await self._skip_settled([entry_id for entry_id, fields, _ in entries if fields])
        # An entry read as new that carries a notified mark was notified in the group's earlier life
        # (pending with a worker at an XGROUP DESTROY): delivered as a claimed one, its mark read.
        entries = [(entry_id, fields, claimed or entry_id in marked) for entry_id, fields, claimed in entries if entry_id not in skipped]
        chains: dict[str, list[tuple[str, dict[str, str], bool]]] = {}
        for entry_id, fields, claimed in sorted(entries, key=lambda e: _id_order(e[0])):
            if fields:
                chains.setdefault(order_key(entry_id, fields), []).append((entry_id, fields, claimed))
        held = await self._held_back(chains)
        self._held = bool(held)
        self._log_waits(held, chains)
        going = [chain for key, chain in chains.items() if key not in held]
        results = await asyncio.gather(*(self._deliver_chain(chain) for chain in going), return_exceptions=True)
        failed = [r for r in results if isinstance(r, BaseException)]
        if failed:
            self._redeliver_own = True
            raise failed[0]
        return sum(len(chain) for chain in going) + sum(1 for _, fields, _ in entries if not fields) + len(skipped)

    async def _skip_settled(self, entry_ids: list[str]) -> tuple[set[str], set[str]]:
        """The entries among `entry_ids` acknowledged before (`keys.SETTLED_KEY`), acknowledged again
        here and not delivered: read as new only where the group was lost with the stream kept (an
        `XGROUP DESTROY`) and re-created at its start, which until session 54 notified every notice
        the trim had not yet dropped a second time. An entry a session-53 worker acknowledged is
        not recorded, and is delivered again as before. Also (second set) the others that have a
        notified mark (`NOTIFIED_KEY`): one pending at such a loss whose notification had gone out,
        which a read as new would have sent again (its mark is read only for a claimed entry)."""
        if not entry_ids:
            return set(), set()
        async with self.redis.pipeline(transaction=False) as pipe:
            for entry_id in entry_ids:
                pipe.zscore(SETTLED_KEY, entry_id)
                pipe.hexists(NOTIFIED_KEY, entry_id)
            found = await pipe.execute()
        scores, marks = found[0::2], found[1::2]
        settled = {entry_id for entry_id, score in zip(entry_ids, scores) if score is not None}
        marked = {entry_id for entry_id, mark in zip(entry_ids, marks) if mark and entry_id not in settled}
        if settled:
            await self.redis.xack(OUTBOX_KEY, OUTBOX_GROUP, *settled)
            log.warning("outbox entries acknowledged before read again (the consumer group was re-created); not delivered again",
                        extra={"count": len(settled), "entries": sorted(settled, key=_id_order)[:20]})
        return settled, marked

    def _log_waits(self, held: set[str], chains: dict[str, list[tuple[str, dict[str, str], bool]]]) -> None:
        """A chain held back is said once when it starts waiting and once when it stops: it is
        checked again every round (about a second) for up to `claim_idle_s`, and a line a round
        buried the worker's other lines."""
        now = time.monotonic()
        started = sorted(held - self._waiting.keys())
        ended = sorted(self._waiting.keys() - held)
        if started:
            log.info("outbox entries held back behind an earlier one of their incident pending elsewhere",
                     extra={"keys": started[:20], "entries": [e for key in started for e, _, _ in chains[key]][:20]})
        if ended:
            log.info("outbox entries no longer held back",
                     extra={"keys": ended[:20], "waited_s": round(max(now - self._waiting[key] for key in ended), 1)})
        self._waiting = {key: self._waiting.get(key, now) for key in held}

    async def _held_back(self, chains: dict[str, list[tuple[str, dict[str, str], bool]]]) -> set[str]:
        """The order keys whose chain must wait: an earlier entry of the same incident (or scope and
        kind) is pending in the group outside this round, read by another worker that is delivering
        it or died with it. Without this, two workers in a backlog, or one that took over new
        entries while a dead one's waited `claim_idle_s`, sent "resolved" before "new"."""
        if not chains:
            return set()
        ours = {entry_id for chain in chains.values() for entry_id, _, _ in chain}
        last = max((chain[0][0] for chain in chains.values()), key=_id_order)
        try:
            pending = await self._pending_through(last)
        except ResponseError as exc:  # deleted since this round's read: nothing pending can hold a chain back
            if not _outbox_gone(exc):
                raise
            await self._regroup("hold back", exc)
            return set()
        others = [entry_id for entry_id in pending if entry_id not in ours]
        if not others:
            return set()
        async with self.redis.pipeline(transaction=False) as pipe:
            for entry_id in others:
                pipe.xrange(OUTBOX_KEY, entry_id, entry_id)
            found = await pipe.execute()
        earliest: dict[str, tuple[int, int]] = {}
        for items in found:
            for entry_id, fields in items or []:
                key = order_key(entry_id, fields)
                earliest[key] = min(earliest.get(key, _id_order(entry_id)), _id_order(entry_id))
        return {key for key, chain in chains.items() if key in earliest and earliest[key] < _id_order(chain[0][0])}

    async def _pending_through(self, last: str) -> list[str]:
        """Every entry pending in the group up to `last`, page by page: in a backlog (a notifier
        down, entries failing round after round) the first page can be all this worker's own, and
        an earlier entry pending elsewhere behind it must still hold its incident back."""
        found: list[str] = []
        low = "-"
        while True:
            page = await self.redis.xpending_range(OUTBOX_KEY, OUTBOX_GROUP, min=low, max=last, count=PENDING_SCAN)
            found += [str(p["message_id"]) for p in page]
            if len(page) < PENDING_SCAN:
                return found
            low = "(" + found[-1]

    async def _deliver_chain(self, chain: list[tuple[str, dict[str, str], bool]]) -> None:
        """One incident's (or one scope and kind's) entries, one after another in outbox order: a
        risk team must never read 'resolved' before the 'still firing' it ends. A failure stops the
        chain; the rest stay pending and follow the failed one in this worker's next round."""
        for entry_id, fields, claimed in chain:
            await self._deliver(entry_id, fields, claimed)

    async def trim_outbox(self, now_ms: int | None = None) -> int:
        """Drop delivered entries older than the retention (wall clock): the outbox would otherwise
        grow with every transition for good. Never an entry still pending in the group or not yet
        read by it, whatever its age. Returns the number of entries removed."""
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        cutoff = now_ms - self.store.retention_s * 1000
        try:
            groups = {g["name"]: g for g in await self.redis.xinfo_groups(OUTBOX_KEY)}
            group = groups.get(OUTBOX_GROUP)
            if group is None:
                return 0
            # Entries after the group's last-delivered id are unread; the oldest pending one is unfinished.
            # MINID keeps every entry of the limit's millisecond: ids share one when added together.
            limits = [cutoff, _ms_of(group["last-delivered-id"])]
            pending = await self.redis.xpending(OUTBOX_KEY, OUTBOX_GROUP)
        except ResponseError as exc:  # deleted since this round's read: nothing to trim
            if not _outbox_gone(exc):
                raise
            await self._regroup("trim", exc)
            return 0
        if pending["pending"]:
            limits.append(_ms_of(pending["min"]))
        # XTRIM of a stream deleted since the reads above removes nothing and makes no key.
        removed = int(await self.redis.execute_command("XTRIM", OUTBOX_KEY, "MINID", min(limits)))
        # The settled records of the entries trimmed go with them: no read can find those again. The
        # rest live on while the stream keeps their entries: an entry pending for long (deliveries
        # failing) holds the trim back, and with no acknowledgement for an idle TTL the records of
        # the acknowledged entries after it would expire, and a re-created group send those again.
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zremrangebyscore(SETTLED_KEY, "-inf", f"({min(limits)}")
            pipe.expire(SETTLED_KEY, self.store.idle_ttl_s)
            await pipe.execute()
        if removed:
            log.info("outbox trimmed", extra={"removed": removed})
        return removed

    async def forget_idle_consumers(self, idle_s: float = FORGET_CONSUMER_IDLE_S) -> list[str]:
        """Delete the group's consumers idle past `idle_s` with no pending entry (`_FORGET_CONSUMERS`):
        every worker that ever read the outbox left one, and under Kubernetes each pod restart adds
        a name. A dead worker's consumer with pending entries stays until a claim has taken them."""
        try:
            found = await self._forget_script(keys=[OUTBOX_KEY], args=[OUTBOX_GROUP, self.consumer, int(idle_s * 1000)])
        except ResponseError as exc:
            if not _outbox_gone(exc):
                raise
            await self._regroup("forget consumers", exc)
            return []
        gone = [name.decode() if isinstance(name, bytes) else str(name) for name in found]
        if gone:
            log.info("outbox consumers forgotten: idle with nothing pending", extra={"count": len(gone), "consumers": gone[:20],
                                                                                    "idle_s": idle_s})
        return gone

    async def _deliver(self, entry_id: str, fields: dict[str, str], claimed: bool) -> None:
        if "entry" in fields:
            await self._deliver_entry(entry_id, json.loads(fields["entry"]), claimed)
            return
        record = record_from_json(json.loads(fields["record"]))
        # A resolution's entry names every severity its alert's firing notifications went out at
        # (`incidents.told_through`); an entry without it is routed for its own severity.
        routes = json.loads(fields.get("route_severities") or "[]") or [record.severity]
        firing = record.state == "firing"
        # A firing record's time is its notice's: the marks keep the latest (`last`), against which a
        # resolution entry's `last_notified` (since session 50) tells a later notice a worker that
        # keeps no `last` delivered (`incidents.marks_behind`), as with grouping.
        earlier = await self._notified_as(entry_id) if claimed else None
        if earlier is not None and not earlier.partial:
            log.info("alert already notified; publishing it", extra={"alert_id": record.alert_id, "entry": entry_id})
            if firing:
                await self._mark_fate(record.alert_id, record.severity, TOLD_SENT, record.window_end, last=True)
            else:  # a crash between the resolution's notification and forgetting its marks left them
                await self._forget_told(record.alert_id)
            await self._publish_and_ack(entry_id, record.with_delivery(True))
            return
        told = routes if firing else (await self._told(record.alert_id, routes, fields.get("last_notified")))[0]
        only = _refused_only(entry_id, earlier, record.alert_id)
        silence = await self._silence_of(record.scope, [record.kind])
        notified = False
        fate: str | None = None
        if silence is not None:
            log.info("alert silenced", extra={"alert_id": record.alert_id, "scope": record.scope, "silence": silence.id})
            await self._count_silenced(earlier)
            fate = TOLD_HELD
        elif self.notifier is not None and told and self.notifier.targets_for(*told, only=only):
            delivered = await self._settle(entry_id, await self._notify(record, told, only), earlier)
            notified = delivered.notified
            fate = told_fate(delivered.sent)
        elif earlier is not None:
            notified = (await self._settle_unrouted(entry_id, earlier, record.alert_id)).notified
        if earlier is not None:  # partly delivered before (its worker died, or its publish or ack failed): the services that accepted it heard it
            fate = TOLD_SENT
        if firing:  # also one no service is routed for: it moves `last`
            await self._mark_fate(record.alert_id, record.severity, fate, record.window_end, last=True)
        if not firing:
            await self._forget_told(record.alert_id)
        await self._publish_and_ack(entry_id, record.with_delivery(notified))

    async def _deliver_entry(self, entry_id: str, data: dict[str, Any], claimed: bool) -> None:
        """An incident entry (SENTINEL_ALERT_GROUPING=incidents): its notice, if any, is notified
        unless the root is silenced; its records are published, `notified` as the notice went."""
        records = [record_from_json(r) for r in data.get("records", [])]
        notice = Notice.from_json(data["notice"]) if data.get("notice") else None
        routes = (data.get("route_severities") or [notice.severity]) if notice is not None else []  # Entry.route_severities
        notified = False
        firing = notice is not None and notice.state == "firing"
        earlier = await self._notified_as(entry_id) if notice is not None and claimed else None
        if notice is not None and earlier is not None and not earlier.partial:
            log.info("incident already notified; publishing it", extra={"incident_id": notice.incident_id, "entry": entry_id})
            notified = True
            if firing:
                # The services its worker's mark names heard it (a mark from before session 51 names
                # none: this notice then goes unmarked, and its resolution per severity).
                services = earlier.accepted
                await self._mark_fate(notice.incident_id, notice.severity, TOLD_SENT, notice.at, last=True,
                                      heard=None if services is None else (entry_id, services))
            else:  # a crash between the resolution's notification and forgetting its marks left them
                await self._forget_told(notice.incident_id)
        elif notice is not None:
            fate: str | None = None
            heard: Sequence[str] = ()  # a firing notice's: the services that accepted it
            told, sent_at = (routes, {}) if firing else await self._told(notice.incident_id, routes, data.get("last_notified"))
            only = None if firing else await self._told_services(notice.incident_id, data.get("firing_notices"))
            if only is not None and self.notifier is not None and told:
                _log_unheard(notice.incident_id, self.notifier.targets_for(*told), only)
            if (retry := _refused_only(entry_id, earlier, notice.incident_id)) is not None:
                only = retry if only is None else only & retry
            # When a service first heard it at each severity: the correlator's time is its first
            # notice's, which a silence may have held back; delivery's own marks say when one went out.
            told_at = {**(data["told_at"] if isinstance(data.get("told_at"), dict) else {}), **sent_at}
            silence = silence_of_incident(await list_silences(self.redis), notice.root_scope, notice.members, time.time())
            if silence is not None:
                log.info("incident silenced", extra={"incident_id": notice.incident_id, "scope": notice.root_scope, "silence": silence.id})
                await self._count_silenced(earlier)
                fate = TOLD_HELD
            elif self.notifier is not None and told and self.notifier.targets_for(*told, only=only):
                since, since_heard, heard_before = await self._since_last(notice, data.get("since_last"))
                delivered = await self._settle(entry_id, await self._notify_notice(notice, records, told, told_at, only, since, since_heard,
                                                                                   heard_before), earlier)
                notified = delivered.notified
                fate, heard = told_fate(delivered.sent), delivered.accepted
            elif earlier is not None:
                notified = (await self._settle_unrouted(entry_id, earlier, notice.incident_id)).notified
            if earlier is not None:  # partly delivered before (its worker died, or its publish or ack failed): the services that accepted it heard it
                fate, heard = TOLD_SENT, heard or tuple(earlier.accepted or ())
            if firing:  # every firing notice sets `last`, also one no service is routed for (`marks_behind`)
                await self._mark_fate(notice.incident_id, notice.severity, fate, notice.at, last=True, heard=(entry_id, heard))
            else:
                await self._forget_told(notice.incident_id)
        for record in records:
            await self.publish(record.with_delivery(notified))
        await self._ack(entry_id, published=len(records))

    async def _notify_notice(self, notice: Notice, records: list[AlertRecord], routes: Sequence[str],
                             told_at: dict[str, str] | None = None, only: set[str] | None = None,
                             since_last: dict[str, Any] | None = None, since_heard: set[str] | None = None,
                             heard_before: set[str] | None = None) -> Delivery:
        assert self.notifier is not None
        png = None
        if self.chart:
            kind = next((m["kind"] for m in notice.members if m["scope"] == notice.root_scope), notice.kinds[0])
            png = await self._chart_of(notice.root_scope, kind, int(epoch(notice.opened)), int(epoch(notice.at)), notice.incident_id,
                                       baselines_of(notice.members, notice.root_scope), self.notifier.window)
        track = await self._track_record(notice) if notice.state != "resolved" else None
        recent = await self._recent(notice) if notice.reason == "repeat" else None
        verdict = await self._verdict(notice.incident_id)
        acks = await self._acknowledgements(notice.incident_id) if notice.acked else []
        return await self.notifier.deliver_notice(notice, records, png, track=track, recent=recent, routes=routes, verdict=verdict,
                                                  told_at=told_at if isinstance(told_at, dict) else None, acks=acks, only=only,
                                                  since_last=since_last, since_heard=since_heard, heard_before=heard_before)

    async def _since_last(self, notice: Notice, since: Any) -> tuple[dict[str, Any] | None, set[str], set[str] | None]:
        """An update's or a reminder's `Entry.since_last` and the services (`service_key`) that read
        its line: those whose latest heard notice of the incident is the one it counts from
        (`heard_previous`). Each other routed service gets the body without it: one that never heard
        the incident (a critical-only pager first told at the escalation) or missed that notice (its
        severity not routed there, it refused it, the cap held it back) read "new since the last
        notice" of a notice it never saw, and nothing of what that notice said. None where the notice
        reached no service (`TOLD_UNHEARD_AT`: a silence held it, the cap, every service refused it);
        an empty set where a worker before session 55 delivered it (no `heard:` marks): no service is
        known to have read it, so none reads the line.

        Third, for an update or a reminder, the services that heard some firing notice of the
        incident (`svc:` or `heard:` marks; a session-54 worker writes `svc:` too), which the
        others, hearing it now for the first time, read titled as a first notice; None where the
        marks are gone or none was kept (no `last`): who heard it is unknown, and titles say
        "(update)" as before."""
        if notice.reason not in ("update", "repeat"):
            return None, set(), None
        ident = notice.incident_id
        marks = await self.redis.hgetall(told_key(ident))
        heard_before = marked_services(marks) | heard_by(marks) if TOLD_LAST in marks else None
        if not isinstance(since, dict):
            return None, set(), heard_before
        if since.get("at") and marks.get(TOLD_UNHEARD_AT) == since["at"]:
            log.info("the incident's previous notice reached no service; its update does not say what changed since",
                     extra={"incident_id": ident, "previous": since["at"]})
            return None, set(), heard_before
        heard = heard_previous(marks, since["at"]) if isinstance(since.get("at"), str) else set()
        if not heard:
            log.info("no service is marked as having heard the incident's previous notice (a worker before session 55 delivered "
                     "it, or its marks expired); its update does not say what changed since", extra={"incident_id": ident,
                                                                                                      "previous": since.get("at")})
        return since, heard, heard_before

    async def _acknowledgements(self, incident_id: str) -> list[dict[str, Any]]:
        """An acknowledged incident's acknowledgements, oldest first ({at, by, via, reason}), which its
        later notices list: the notice itself carries the latest reason alone, and a second ack hid
        the first. One HGET; a failed or unreadable read sends the notice with the reason alone."""
        try:
            return [a for a in await acknowledgements(self.redis, incident_id) if isinstance(a, dict)]
        except Exception as exc:  # noqa: BLE001 - the notice matters more than who acknowledged it
            log.warning("acknowledgements unavailable; the notice goes with the latest reason", extra={"incident_id": incident_id,
                                                                                                       "error": type(exc).__name__})
            return []

    async def _verdict(self, incident_id: str) -> dict[str, Any] | None:
        """The verdict given on an incident while it was open (`verdicts.give_verdict`), which its
        resolution says instead of asking for one, and its later firing notices say beside their ack
        and silence: one HGET. None when there is none, or when the read fails or the entry is not a
        verdict: the resolution then asks, and a firing notice says none, as before."""
        try:
            raw = await self.redis.hget(VERDICTS_KEY, incident_id)
            found = json.loads(raw) if raw else None
            return found if isinstance(found, dict) else None
        except Exception as exc:  # noqa: BLE001 - the notice matters more than naming its verdict
            log.warning("verdict unavailable; the notice goes without it", extra={"incident_id": incident_id, "error": type(exc).__name__})
            return None

    async def _recent(self, notice: Notice) -> dict[str, list[float]] | None:
        """A reminder's firing scopes' counts over the alert window before it (message.recent_level):
        its members' levels are averages since their onsets, hours or days ago. One read for all of
        them; the window [at - window, at) is complete once `at` was judged. A failed read sends the
        reminder without them, as a failed chart does."""
        assert self.notifier is not None
        scopes = sorted({m["scope"] for m in notice.members if m.get("firing")})
        if not scopes:
            return None
        try:
            window_s, at = parse_duration(self.notifier.window), int(epoch(notice.at))
            read = await self.store.slices_many([(scope, at - window_s, window_s, 1) for scope in scopes])
            return {scope: [float(x) for x in rows[0]] for scope, rows in zip(scopes, read) if len(rows)}
        except Exception:  # noqa: BLE001 - the level now is a nicety; the reminder goes without it
            log.warning("recent levels unavailable; reminding without them", extra={"incident_id": notice.incident_id}, exc_info=True)
            return None

    async def _track_record(self, notice: Notice) -> TrackRecord | None:
        """How the team judged earlier incidents of the notice's kinds, from the audit log's verdicts
        of the last 30 days (read at most every five minutes, once for the chains delivered side by
        side: verdicts come at human pace). Optional, as the chart is: a read that fails sends the
        notice without it."""
        try:
            async with self._verdicts_lock:
                read_at, entries = self._verdicts
                if time.monotonic() - read_at >= TRACK_RECORD_TTL_S:
                    entries = await audit.verdicts_within(self.redis, TRACK_RECORD_SPAN_S)
                    self._verdicts = (time.monotonic(), entries)
            return track_record(entries, notice.root_scope, notice.root_kinds, exclude=notice.incident_id)
        except Exception as exc:  # noqa: BLE001 - the notice matters more than its track record
            log.warning("track record unavailable; notifying without it",
                        extra={"incident_id": notice.incident_id, "error": type(exc).__name__})
            return None

    async def _admit(self, server: NotifyBase) -> str:
        """The daily cap per service (SENTINEL_NOTIFY_DAILY_CAP): a counter per service and UTC day in
        Redis, shared by every worker. The notification one past the cap becomes the one 'limit
        reached' notice; later ones are dropped until the day ends."""
        assert self.notifier is not None
        key = caps_key(time.strftime("%Y-%m-%d", time.gmtime()))
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hincrby(key, service_key(server), 1)
            pipe.expire(key, 2 * 86400)
            count, _ = await pipe.execute()
        cap = self.notifier.daily_cap
        return "send" if count <= cap else "limit" if count == cap + 1 else "drop"

    async def _silence_of(self, scope: str, kinds: list[str]) -> Silence | None:
        """The silence in force over `scope` for any of `kinds`."""
        silences = await list_silences(self.redis)
        return next((found for kind in kinds if (found := silenced_by(silences, scope, kind, time.time()))), None)

    async def _count_silenced(self, earlier: NotifiedMark | None) -> None:
        """A notification a silence held counts `silenced`, but not a partly delivered one's retry
        (`earlier`, a claim's or a redelivery's): its first delivery counted it (`delivery_failed`),
        and a notification counts in one result, `notified` added only where the rest accept it (until session 52's
        review a silence over the claim counted it `silenced` too)."""
        if earlier is None:
            await self._count("silenced")
            self.metrics.silenced()

    async def _notify(self, record: AlertRecord, routes: Sequence[str], only: set[str] | None = None) -> Delivery:
        assert self.notifier is not None
        png = await self._chart(record) if self.chart else None
        return await self.notifier.deliver(record, png, routes, only)

    async def _mark_fate(self, ident: str, severity: str, fate: str | None, at: str = "", last: bool = False,
                         heard: tuple[str, Sequence[str]] | None = None) -> None:
        """`_mark_told`, retried while Redis is away where the notification went out (`_after_sending`):
        without the mark its resolution would still be routed, as before the marks."""
        if fate == TOLD_SENT:
            await self._after_sending(lambda: self._mark_told(ident, severity, fate, at, last, heard), "told mark")
        elif fate is not None or last or heard is not None:
            await self._mark_told(ident, severity, fate, at, last, heard)

    async def _mark_told(self, ident: str, severity: str, fate: str | None, at: str = "", last: bool = False,
                         heard: tuple[str, Sequence[str]] | None = None) -> None:
        """A firing notification's fate at its severity (`incidents.told_routes`): `sent` replaces a
        `held` or `failed` (a later one went out after the silence, or once a service was back);
        neither replaces `sent`. Entries of one incident are delivered in order, so its resolution
        reads every mark of its firing notices. `at`: the notice's event time; a sent notice's first
        one is kept (`<severity>:at`) and, with `last` (an incident's notices), every notice's is the
        marks' `last` (`incidents.marks_behind`). `fate` None: `last` alone (no service routed).
        `heard`: an incident's firing notice whose every service's outcome is known here (where a
        claim finds a dead worker's delivery finished, as its notified mark names them since session
        51; none for an older mark), as its outbox entry id and the services that accepted it; each is marked `svc:<service_key>`, and the notice is marked
        (`svc:notice:<entry id>`) whoever heard it: once however often it is delivered, so a claim
        that delivers it again after its worker died adds the services it reached, not a notice."""
        key = told_key(ident)
        services_heard = list(heard[1]) if heard is not None and last and at else []

        async def write(pipe: Any) -> None:
            # Read under WATCH, in the transaction that writes: a mark another worker makes in between
            # (a newer notice's `heard:`, a claim's `unheard`) fails it, and it runs again on what that
            # worker wrote. Read before it (until session 56), a worker stalled past the claim delay
            # finishing an older notice moved a service's `heard:` back over a newer one's.
            # `unheard` stays until that very notice is sent (a claim's second try): a later notice sent
            # leaves it, so a retry of that later one to the services that refused it says what the first
            # delivery said (`_since_last`).
            heard_now = fate == TOLD_SENT and last and bool(at) and await pipe.hget(key, TOLD_UNHEARD_AT) == at
            # Each service's latest heard notice (`TOLD_HEARD`), which says whether it reads the next
            # update's since-last line: never moved back by an older notice finished late.
            stored = await pipe.hmget(key, [f"{TOLD_HEARD}{service}" for service in services_heard]) if services_heard else []
            # `last` likewise only moves forward: put back by an older notice finished late, it fell
            # behind a resolution's `last_notified`, as if a worker that keeps no marks had sent a
            # later notice (`marks_behind`), and every severity counted as told (until session 56's review).
            forward = not (last and at) or heard_later(await pipe.hget(key, TOLD_LAST), at)
            pipe.multi()
            if heard is not None:
                entry_id, services = heard
                for service in services:
                    pipe.hset(key, f"{TOLD_SERVICE}{service}", TOLD_SENT)
                pipe.hset(key, f"{TOLD_NOTICE}{entry_id}", 1)
            for service, was in zip(services_heard, stored):
                if heard_later(was, at):
                    pipe.hset(key, f"{TOLD_HEARD}{service}", at)
            if fate == TOLD_SENT:
                pipe.hset(key, severity, fate)
                if at:
                    pipe.hsetnx(key, f"{severity}:at", at)
            elif fate is not None:
                pipe.hsetnx(key, severity, fate)
            if last and at:
                if forward:
                    pipe.hset(key, TOLD_LAST, at)
                # Whether the team read it: an update after one nobody read must not say what
                # changed "since the last notice" (`_since_last`). An older notice finished late
                # leaves a later one's `unheard` (the latest that reached no service).
                if heard_now:
                    pipe.hdel(key, TOLD_UNHEARD_AT)
                elif fate != TOLD_SENT and forward:
                    pipe.hset(key, TOLD_UNHEARD_AT, at)
            pipe.expire(key, self.store.idle_ttl_s)

        # One key (one Redis Cluster slot): the cluster client's transaction watches it as one server's does.
        await self.redis.transaction(write, key)

    async def _told(self, ident: str, routes: Sequence[str], last_notified: Any = None) -> tuple[list[str], dict[str, str]]:
        """The severities of a resolution's `routes` that a firing notification went out at, and
        when the first sent at each went out (event time), where delivery marked it. `last_notified`:
        an incident resolution entry's, when its latest firing notice was made; marks that end before
        it missed one an older worker delivered, and count as told (`incidents.marks_behind`)."""
        read = await self.redis.hmget(told_key(ident), [*routes, *(f"{severity}:at" for severity in routes), TOLD_LAST])
        fates, times, last_marked = read[:len(routes)], read[len(routes):2 * len(routes)], read[-1]
        sent_at = {severity: at for severity, at, fate in zip(routes, times, fates) if at and fate == TOLD_SENT}
        if marks_behind(last_marked, last_notified if isinstance(last_notified, str) else None):
            log.info("told marks end before the incident's latest firing notice (a worker that keeps none delivered it); "
                     "the resolution is routed for every severity", extra={"incident_id": ident, "routes": list(routes)})
            return list(routes), sent_at
        told = told_routes(routes, {severity: fate for severity, fate in zip(routes, fates) if fate})
        if told != list(routes):
            log.info("resolution not routed where its firing notifications were silenced or reached no service",
                     extra={"incident_id": ident, "routes": list(routes), "told": told})
        return told, sent_at

    async def _told_services(self, ident: str, firing_notices: Any) -> set[str] | None:
        """The services (`service_key`) a firing notice of an incident reached, where its marks say
        so of every firing notice the correlator made (`firing_notices`, a resolution entry's, as
        many as its `svc:notice:` fields) and every service marked is still configured; else None,
        and the resolution is routed per severity (a notice an older worker delivered, or finished
        by a claim, left no service marks; a service that heard was removed or moved to another
        host or path, or a session-50 worker marked it under its key of the whole URL)."""
        if not isinstance(firing_notices, int) or isinstance(firing_notices, bool) or self.notifier is None:
            return None
        marks = await self.redis.hgetall(told_key(ident))
        configured = {service_key(server) for server in self.notifier.targets}
        gone = marked_services(marks) - configured
        if gone:
            log.info("told marks name services no longer configured (removed, moved to another host or path, or marked by a "
                     "session-50 worker); the resolution is routed per severity", extra={"incident_id": ident, "services": len(gone)})
        return told_services(marks, firing_notices, configured)

    async def _forget_told(self, ident: str) -> None:
        """Its resolution delivered: its marks go (an incident whose resolution never comes here
        keeps them until its key's idle TTL)."""
        await self.redis.delete(told_key(ident))

    async def _notified_as(self, entry_id: str) -> NotifiedMark | None:
        """An earlier delivery's notified mark of this entry (this worker's or a dead one's, `_settle`),
        None where none notified it: finished, or partial (`NotifiedMark.partial`: some services
        refused it)."""
        found, refused, capped = await self.redis.hmget(NOTIFIED_KEY, [entry_id, refused_field(entry_id), capped_field(entry_id)])
        return None if found is None else notified_mark(str(found), None if refused is None else str(refused),
                                                        None if capped is None else str(capped))

    async def _settle(self, entry_id: str, delivered: Delivery, earlier: NotifiedMark | None = None) -> Delivery:
        """Count the notification's outcome; one some service accepted is also marked on its entry
        (retried while Redis is away, see `_after_sending`). Not sent to every service it was routed
        for: a failure where a service refused it after its retries, else `capped` where the daily cap
        held a service back (a hold the operator chose, as a silence is; until session 50 it counted as
        a failure). One the cap held back from some services and others accepted is notified (since
        session 51; it reached someone) and counted `capped` too. One some accepted and others refused
        is marked with both (since session 52), so a claim after its worker died, or its own worker's
        delivery again after a failed publish or acknowledgement, sends it to the refused alone
        (before, with no mark, to every service again).

        `earlier`: such a partial mark, where this was that delivery's notification to the services that
        refused: the outcome is of the whole notification (every service that accepted it, either
        time, and every service the daily cap held back either time), counted once more only where it
        is now notified (counted `delivery_failed` the first time, and `notified` now that it reached
        the rest, `capped` too where the cap held a service back either time); refused again, it
        counts nothing new. Returns the outcome so joined."""
        if earlier is not None:
            delivered = _joined(earlier, delivered)
        if delivered.capped and not delivered.failures and earlier is None:
            await self._count("capped")  # also where another service accepted it: then notified, too
        if not delivered.notified and delivered.capped and not delivered.failures:
            self.metrics.delivery_capped()
            return delivered
        if earlier is None or delivered.notified:
            self.metrics.delivery(delivered.notified)  # one result per notification: a partly capped one is notified
        if not delivered.notified and earlier is None:
            await self._count("delivery_failed")
        if not delivered.notified and not delivered.accepted:  # it reached nobody: nothing a claim must not send again
            return delivered
        # The mark's value names the services that accepted it: a claim that finds the entry notified
        # marks them told (`_deliver_entry`), where it knew none once its worker died. A session-51
        # worker reads a partial mark's value as a finished one's: it publishes the entry without
        # notifying again (never a duplicate) and the refused services get no second try.
        heard = json.dumps(list(delivered.accepted))
        refused = json.dumps(list(delivered.refused)) if not delivered.notified and delivered.refused else ""
        # A partial one's holds are kept beside it: the delivery that finishes it counts it `capped`.
        held = str(delivered.capped) if refused and delivered.capped else ""
        # A retry's `capped` is counted by the script with its `notified`, once: two deliveries of
        # the entry at once (a claim racing its worker's redelivery) both hold the partial mark, and
        # the first to finish it counts (since session 53 the mark keeps the first delivery's hold).
        retry = "" if earlier is None else "capped" if delivered.capped and not delivered.failures else "retry"
        await self._after_sending(lambda: self._mark_script(keys=[NOTIFIED_KEY, ALERT_STATS_KEY],
                                                            args=[entry_id, self.store.idle_ttl_s, heard, refused_field(entry_id), refused,
                                                                  capped_field(entry_id), held, retry]),
                                  "notified mark")
        return delivered

    async def _settle_unrouted(self, entry_id: str, earlier: NotifiedMark, ident: str) -> Delivery:
        """A partly delivered notification (`earlier`) whose services that refused it are none of them
        routed now (the operator removed them, or retagged them away from its severities, or no
        service is configured): nothing is left to send it to, and every service routed has it, so
        it is settled as notified, as where they accept it then (`_settle`): `notified` counted once
        and the mark finished. Until session 53 its record said `notified: false` and nothing counted
        the services that heard it."""
        log.info("notification partly delivered before; none of the services that refused it is routed now: settled as notified",
                 extra={"id": ident, "entry": entry_id, "accepted": len(earlier.accepted or ()), "refused": len(earlier.refused)})
        return await self._settle(entry_id, Delivery(notified=False, failures=0, attempts=0), earlier)

    async def _after_sending(self, call: Callable[[], Awaitable[Any]], what: str) -> None:
        """A step that follows something sent (a notification, a record), retried while Redis is
        away: failing it would send that again. Until about when another worker may claim the entry
        (the claim delay after the round began, less a second; at least 1 s): past that, the entry
        is that worker's to finish."""
        left_s = self.claim_idle_ms / 1000 - (time.monotonic() - self._round_started) - 1.0
        await retry_transient(call, what=what, first_delay_s=0.05, max_delay_s=1.0, give_up_after_s=max(left_s, 1.0))

    async def _ack(self, entry_id: str, published: int) -> None:
        """Acknowledge the entry, count its `published` records once, and drop its mark (a mark left
        by a crash before this expires with its key)."""
        await self._after_sending(lambda: self._ack_script(keys=[OUTBOX_KEY, NOTIFIED_KEY, ALERT_STATS_KEY, SETTLED_KEY],
                                                           args=[OUTBOX_GROUP, entry_id, published, self.store.idle_ttl_s,
                                                                 refused_field(entry_id), capped_field(entry_id), _ms_of(entry_id)]),
                                  "acknowledgement")

    async def _publish_and_ack(self, entry_id: str, record: AlertRecord) -> None:
        await self.publish(record)
        await self._ack(entry_id, published=1)
        log.info("alert delivered", extra={"alert_id": record.alert_id, "state": record.state, "window_end": record.window_end,
                                           "notified": record.notified, "entry": entry_id})

    async def _chart(self, record: AlertRecord) -> bytes | None:
        return await self._chart_of(record.scope, record.kind, int(epoch(record.window_start)), int(epoch(record.window_end)),
                                    record.alert_id, baselines_of([asdict(record)], record.scope), record.window)

    async def _chart_of(self, scope: str, kind: str, start: int, end: int, ident: str, baselines: dict[str, float],
                        window: str) -> bytes | None:
        """The scope's last 24 h, its measures drawn against the `baselines` the notice compares
        them with (from the record or incident members in hand; a volume's is per `window`)."""
        first = end - CHART_SPAN_S
        try:
            slices = await self.store.slices(scope, first, CHART_STEP_S, CHART_SPAN_S // CHART_STEP_S)
            points = chart_points(slices.tolist(), first, CHART_STEP_S)
            return await asyncio.to_thread(render_chart, points, start, end, scope, kind, baselines=baselines,
                                           window_s=parse_duration(window))
        except Exception:  # noqa: BLE001 - a chart is a nicety; the notification goes without it
            log.exception("chart failed; notifying without it", extra={"id": ident})
            return None


def _refused_only(entry_id: str, earlier: NotifiedMark | None, ident: str) -> set[str] | None:
    """The services a claimed entry's notification goes to where an earlier delivery of it was
    partial (`NotifiedMark.partial`): those that refused it; None where it goes to every service
    routed (no earlier delivery notified it)."""
    if earlier is None or not earlier.partial:
        return None
    log.info("notification partly delivered before; sending it to the services that refused it alone",
             extra={"id": ident, "entry": entry_id, "accepted": len(earlier.accepted or ()), "refused": len(earlier.refused)})
    return set(earlier.refused)


def _joined(earlier: NotifiedMark, retried: Delivery) -> Delivery:
    """A partly delivered notification's outcome once it went again to the services that refused it
    (`retried`): every service either delivery reached accepted it; notified where none refused it
    again (the daily cap's holds aside, as in `Notifier._deliver`); capped where the cap held a
    service back either time (the first time's as its mark kept it, since session 53: before, a
    notice held back from one service and accepted by the rest on the retry counted no `capped`)."""
    accepted = tuple(dict.fromkeys([*(earlier.accepted or ()), *retried.accepted]))
    return replace(retried, notified=retried.failures == 0, sent=len(accepted), accepted=accepted, capped=earlier.capped + retried.capped)


def _log_unheard(ident: str, routed: Sequence[NotifyBase], heard: set[str]) -> None:
    """Say which services routed for a resolution hear nothing of it: no firing notice of its
    incident reached them (each refused or was capped, or was added since). Named log-safe
    (`describe`), never by URL."""
    unheard = [describe(server) for server in routed if service_key(server) not in heard]
    if unheard:
        log.info("resolution not sent to services no firing notice of it reached", extra={"incident_id": ident, "services": unheard[:20]})


def order_key(entry_id: str, fields: dict[str, str]) -> str:
    """What an entry's delivery must keep its order within: its incident (grouping on), or its
    record's scope and kind (grouping off: one scope's resolution and its next firing)."""
    if "entry" in fields:
        data = json.loads(fields["entry"])
        notice, records = data.get("notice"), data.get("records") or []
        ident = notice["incident_id"] if notice else records[0].get("incident_id", "") if records else ""
        return f"incident:{ident}" if ident else f"entry:{entry_id}"
    record = json.loads(fields["record"])
    return f"alert:{record['scope']}|{record['kind']}"


async def outbox_drained(client: aioredis.Redis) -> bool:
    """Every transition record so far has been delivered (or given up on) and published."""
    try:
        info = await client.xinfo_stream(OUTBOX_KEY)
    except ResponseError:
        return True  # no stream: nothing was ever recorded
    groups = {g["name"]: g for g in await client.xinfo_groups(OUTBOX_KEY)}
    group = groups.get(OUTBOX_GROUP)
    if group is None:
        return info["length"] == 0
    return group["pending"] == 0 and group["last-delivered-id"] == info["last-generated-id"]


def public_record(record: AlertRecord) -> bytes:
    return json.dumps(record.as_record(), ensure_ascii=False).encode()
