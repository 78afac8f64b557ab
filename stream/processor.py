"""One micro-batch, start to finish: validate, classify, publish, write windows.

Kafka and Redis reach it through small interfaces (a `publish` coroutine and a WindowStore), so the
Faust agent is only wiring. The order is what makes the guarantees:

1. bad messages are published to the DLQ with their reason;
2. good posts are classified off the event loop (a thread), split and retried if the model raises;
3. windows and counters are written to Redis (retried with backoff while Redis is down);
4. the scopes the batch touched are judged for swings (stream/alerts/engine.py); transitions land in
   the Redis outbox in the same step, and are notified off this path;
5. results are published to post-sentiment;
6. only then does the agent ack the batch's events (stream/worker.py), and Faust commits acked
   offsets on its next commit tick (or the SIGTERM drain commits them at once).

Step 1 is `admit`, step 2 `classify` (the two together `prepare`), steps 3-5 `commit`. The worker
runs them through `BatchPipeline`, which keeps the next batch queued for the model while it
classifies one and the one before is committed, so the model waits neither for Redis and Kafka nor
for the agent to take and validate its next batch.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections import Counter
from dataclasses import replace
from typing import Any, Awaitable, Callable, Iterable, Mapping, Protocol, Sequence, TypeVar

from model.scorer import Judgement, ModelGone, finite_judgement
from stream.alerts.epochs import REASSERT_S, Epoch, claim, first_bucket, model_identity, parse
from stream.alerts.incidents import AlertRecord
from stream.assets import DEFAULT_ALIASES, AliasTable
from stream.batch import Admitted, BatchOutcome, Prepared, RawMessage, partition_lags
from stream.contracts import DLQ_MAX_VALUE_BYTES, Limits, Post, Rejection, dlq_record, parse_post, sentiment_record
from stream.kafka import record_bytes
from stream.logs import DEAD_LETTER_CUT, DEAD_LETTERED, DEAD_LETTERS_HELD, DeadLetterLog
from stream.model_thread import ModelThread
from stream.redis_client import retry_transient
from stream.store import Scored, WindowStore
from stream.timefmt import iso
from stream.windows import (
    CLOCK_JUMP_POSTS, LAGGING_IDLE_S, OVERFLOW_NAME, Folded, Kept, PartitionClock, ScopeBudget, frontier, is_late, scopes_for,
    trim_horizon,
)

log = logging.getLogger(__name__)

Publish = Callable[[str, Sequence[tuple[str | None, bytes]]], Awaitable[Any]]  # (topic, [(key, value), ...])
Classify = Callable[[Sequence[str]], Sequence[Judgement]]
T = TypeVar("T")


class Judge(Protocol):
    """Judges the scopes a batch touched (stream/alerts/engine.AlertEngine)."""

    async def judge(self, touched: Iterable[str] | Mapping[str, float]) -> Sequence[AlertRecord]: ...

    async def kept(self, scopes: Iterable[str]) -> Kept: ...


class BatchObserver(Protocol):
    """What a batch reports (stream/ops/prometheus.WorkerMetrics implements it)."""

    def observe_batch(self, outcome: BatchOutcome) -> None: ...

    def dead_lettered(self, reason: str) -> None: ...

    def scope_folded(self, kind: str, posts: int) -> None: ...

    def alert(self, record: AlertRecord) -> None: ...

    def sentiment_judged_from(self, at: float | None) -> None: ...


class _NoObserver:
    def observe_batch(self, outcome: BatchOutcome) -> None:
        pass

    def dead_lettered(self, reason: str) -> None:
        pass

    def scope_folded(self, kind: str, posts: int) -> None:
        pass

    def alert(self, record: AlertRecord) -> None:
        pass

    def sentiment_judged_from(self, at: float | None) -> None:
        pass


class BatchProcessor:
    def __init__(
        self,
        classify: Classify,
        store: WindowStore,
        publish: Publish,
        *,
        sentiment_topic: str,
        dlq_topic: str,
        model_base: str,
        model_adapter: str | None,
        limits: Limits = Limits(),
        aliases: AliasTable | Mapping[str, str] = DEFAULT_ALIASES,
        redis_retry_max_s: float = 5.0,
        alerts: Judge | None = None,
        metrics: BatchObserver | None = None,
        model_thread: ModelThread | None = None,
        max_record_bytes: int | None = None,
        partitions: int = 1,
        idle_s: float = 60.0,
        lagging_idle_s: float = LAGGING_IDLE_S,
        max_ahead_s: float = 3600.0,
        clock_jump_posts: int = CLOCK_JUMP_POSTS,
        new_scopes_per_hour: int = 0,
    ):
        self.classify = classify
        self.store = store
        self.publish = publish
        self.sentiment_topic = sentiment_topic
        self.dlq_topic = dlq_topic
        self.model_base = model_base
        self.model_adapter = model_adapter
        self.limits = limits
        self.aliases = aliases
        self.redis_retry_max_s = redis_retry_max_s
        self.alerts = alerts
        self.metrics: BatchObserver = metrics if metrics is not None else _NoObserver()
        self.watermark = float("-inf")  # the newest of the partitions' watermarks (every worker's, after a write)
        # Each input partition's event-time watermark (windows.PartitionClock: its newest post
        # among the sources that agree with what most of its posts' sources have reached, so one
        # source stamping hours ahead, or one post from the future, moves none). Lateness against the dedupe window is judged per partition:
        # partitions are read unevenly (a catch-up can run one hours of event time ahead of
        # another), and each partition's redeliveries find their ids, which are kept a window
        # behind the slowest one. Made on a partition's first batch, from its stored watermark.
        self.max_ahead_s = max_ahead_s  # SENTINEL_MAX_AHEAD
        self.letter_log = DeadLetterLog()  # a few lines per reason, then counts: a flood's log stays small
        # SENTINEL_NEW_SCOPES_PER_HOUR: new channel and source scopes past it count in the overflow scope
        self.scope_budget = ScopeBudget(new_scopes_per_hour)
        self._own_frontier = float("-inf")  # the newest of this worker's partitions' watermarks (ScopeBudget's hour)
        self._folded_said = float("-inf")  # when the last `new scopes folded` line was logged (monotonic)
        self._folded_unsaid: Counter[str] = Counter()  # posts folded since, per kind
        # The posts a partition's first watermark, and a jump of it, need behind them
        # (PartitionClock.jump_posts): a partition with no stored watermark has none, and holds no
        # judging back, until it has read that many (its first post may be a fast source's).
        self.clock_jump_posts = clock_jump_posts
        self.clocks: dict[int, PartitionClock] = {}
        self.low = float("-inf")  # the slowest partition's watermark at the last write (ApplyResult.low)
        # Where buckets may go, and so the retention's lateness limit (windows.trim_horizon): a
        # retention behind the slowest live partition as judging counts them (the topic's partition
        # count, SENTINEL_ALERT_IDLE_PARTITION), from the stats each write returns. -inf until every
        # partition has reported or gone idle: a partition read behind another (a catch-up, a
        # rebuild in place) then finds its baselines whole and its posts on time.
        self.partitions = partitions
        self.idle_s = idle_s
        self.lagging_idle_s = lagging_idle_s  # SENTINEL_ALERT_LAGGING_PARTITION: a partition left with lag waits this long
        self.horizon = float("-inf")
        # The event time every live partition has reached (windows.frontier), from the same stats:
        # -inf while a partition of the topic has not reported and is not idle.
        self.floor = float("-inf")
        self.stats_read_at = float("-inf")  # wall clock of the stats the horizon was taken from
        self.batches = 0
        # Every model call on one long-lived thread, the one that loaded the model (stream/model_thread.py).
        self.model_thread = model_thread or ModelThread()
        # The producer's max_request_size (stream.kafka.max_request_bytes): a dead letter over it is
        # cut to fit. A post-sentiment record holds no text and stays far under its 64 KiB floor.
        self.max_record_bytes = max_record_bytes
        # When (time.monotonic) this worker last checked its classifier against the newest model
        # epoch (_claim_epoch): at its first batch, then every `epoch_reassert_s` while it labels.
        self.epoch_checked_at: float | None = None
        self.epoch_reassert_s = REASSERT_S

    async def start(self) -> None:
        stats = await self._with_redis(self.store.stats)  # Redis may be away as the agent starts
        self.watermark = float(stats.get("watermark", float("-inf")))
        self.clocks = {}
        self._advance_horizon(stats)

    def _advance_horizon(self, stats: Mapping[str, float]) -> None:
        """The horizon from the stats of the last write (or of the start). A partition heard from
        again after it was passed as idle moves the floor back, and trimming waits for it; but what
        any write has trimmed already (`trimmed`) is gone, so a post before it is late however the
        floor moved: written, it would land in an emptied bucket, and whether it did would depend
        on which worker read it and where its batch was cut."""
        self.stats_read_at = now = time.time()
        self.floor = floor = frontier(stats, self.partitions, now, self.idle_s, lagging_idle_s=self.lagging_idle_s)
        self.horizon = max(trim_horizon(self.watermark, floor, self.store.retention_s), stats.get("trimmed", float("-inf")))
        # A partition another worker has written past this one's clock of it was read elsewhere
        # meanwhile (a rebalance took it and gave it back): its clock starts again from the store.
        for partition in [p for p, clock in self.clocks.items() if stats.get(f"pwm:{p}", float("-inf")) > clock.mark]:
            del self.clocks[partition]

    def keep_clocks(self, partitions: Iterable[int]) -> None:
        """The input partitions this worker holds now (a rebalance's assignment): the others'
        clocks go, so a partition that comes back later starts again from its stored watermark,
        which its reader meanwhile moved on, instead of this worker's old view of it."""
        held = set(partitions)
        self.clocks = {p: clock for p, clock in self.clocks.items() if p in held}

    async def handle(self, messages: Sequence[RawMessage]) -> BatchOutcome:
        """One batch start to finish (what BatchPipeline does in two overlapping halves)."""
        return await self.commit(await self.prepare(messages))

    async def prepare(self, messages: Sequence[RawMessage]) -> Prepared:
        """Validate (bad messages go to the DLQ now), drop late posts, classify."""
        return await self.classify_batch(await self.admit(messages))

    async def admit(self, messages: Sequence[RawMessage]) -> Admitted:
        """Validate (bad messages go to the DLQ now) and drop late posts. Calls must come in batch
        order, each finished before the next: lateness is judged against the watermark this advances."""
        self.batches += 1
        started = time.perf_counter()
        outcome = BatchOutcome(consumed=len(messages))
        posts: list[tuple[Post, RawMessage]] = []
        rejected: list[tuple[RawMessage, Rejection]] = []
        for msg in messages:
            parsed = (Rejection("undecodable", msg.undecodable) if msg.undecodable is not None
                      else parse_post(msg.value, limits=self.limits, aliases=self.aliases))
            if isinstance(parsed, Rejection):
                rejected.append((msg, parsed))
            else:
                posts.append((parsed, msg))
        # In one publish: each publish of a partition's records waits for its previous one to leave.
        await self._dead_letter(rejected)
        self.say_dead_letters()  # on every batch: a flood's count is said within a batch of its window's end
        outcome.dlq += len(rejected)
        outcome.valid = len(posts)
        if posts and (time.time() - self.stats_read_at > self.idle_s or any(m.partition not in self.clocks for _, m in posts)):
            # This worker has not written for a while (its partitions were quiet, or it just got
            # them): the others' writes since have moved the floor and trimmed, which its horizon,
            # from its own last write, does not know. One read, at most once an idle time, and
            # when a partition is new to it: its clock starts from its stored watermark, so a
            # worker restarted on offsets reset hours back (a rebuild in place) drops what is older
            # than the window, counted already, instead of counting it again against dedupe sets
            # that hold only the window.
            stats = await self._with_redis(self.store.stats)
            self._advance_horizon(stats)
            for _, msg in posts:
                if msg.partition not in self.clocks:
                    self.clocks[msg.partition] = PartitionClock(self.max_ahead_s, mark=stats.get(f"pwm:{msg.partition}", float("-inf")),
                                                                   jump_posts=self.clock_jump_posts)
        frontiers: dict[str, float] = {}
        on_time = self._drop_late(posts, outcome, frontiers)
        outcome.late_dropped = len(posts) - len(on_time)
        # Captured: the next batch's admit may advance them before this commits.
        marks = {p: self.clocks[p].mark for p in {m.partition for _, m in posts} if self.clocks[p].mark > float("-inf")}
        # The horizon its posts were judged against goes with it to the write, which trims no further.
        return Admitted(self.batches, messages, posts, on_time, self.watermark, outcome, started, self.horizon, marks, frontiers)

    async def classify_batch(self, batch: Admitted) -> Prepared:
        """The model's part. Batches may queue for it; `classify_s` counts only the model's time."""
        scored = await self._classify(batch.on_time, batch.outcome)
        batch.outcome.dlq += len(batch.on_time) - len(scored)
        return Prepared(batch.number, batch.messages, batch.posts, scored, batch.watermark, batch.outcome, batch.started,
                        batch.horizon, batch.marks, batch.frontiers)

    async def commit(self, batch: Prepared) -> BatchOutcome:
        """Write windows and counters, judge the touched scopes, publish the results. Calls must
        come in batch order, one at a time."""
        outcome, scored = batch.outcome, batch.scored
        committing = time.perf_counter()
        counters = {
            "consumed": outcome.consumed, "valid": outcome.valid, "dlq": outcome.dlq, "late_dropped": outcome.late_dropped,
            "ahead": outcome.ahead,
            "classify_ms": round(outcome.classify_s * 1000),  # how busy the model is: for benchmarks and capacity
        }
        items = [Scored(p, j.label, j.score) for p, j in scored]
        # Decided once per batch, before the write: a retried write counts the same scopes.
        items, folded = await self._with_redis(lambda: self._fold_new_scopes(items, batch.frontiers))
        marks = batch.marks
        # What each partition has left to read: one with a backlog holds judging and trimming back
        # however long it goes unwritten (windows.frontier).
        lags = partition_lags(batch.messages)
        token = batch_token(batch.messages)
        committed: dict[str, AlertRecord] = {}
        touched: dict[str, float] = {}  # scope -> its newest post in the batch (the engine's dirty set)
        for item in items:
            for scope in scopes_for(item.post):
                touched[scope] = max(touched.get(scope, float("-inf")), item.post.created_at)

        async def write() -> None:
            # Windows, then judging, then the replicas: all idempotent, so a failure anywhere
            # (Redis away, a failover, replicas behind) writes the whole batch again.
            if items and (self.epoch_checked_at is None or time.monotonic() - self.epoch_checked_at >= self.epoch_reassert_s):
                await self._claim_epoch(min(item.post.created_at for item in items))
            mark = time.perf_counter()
            # What judging and grouping will still read of these scopes: the write trims no further,
            # however far the partitions ran ahead of judging (windows.Kept says why).
            keep = await self.alerts.kept(touched) if self.alerts is not None else None
            # Post ids and author cells are kept a dedupe window behind the slowest partition as
            # judging counts them (`floor`): one no worker has reported yet holds them back, as it
            # holds the buckets. Behind the slowest reported one alone (ApplyResult.low), a worker
            # that started late found the cells of its first hours gone, and its authors counted
            # past the cap (the export through two workers: 14,330 posts capped against 14,749).
            result = await self.store.apply(items, counters, batch.watermark, marks, batch=token, low=min(self.low, self.floor),
                                            horizon=batch.horizon, partition_lags=lags, keep=keep)
            outcome.windows_s = time.perf_counter() - mark
            # Every partition's progress (other workers' too): the next batches are judged, and
            # trim, a retention behind the slowest live one.
            self.watermark = max(self.watermark, result.watermark)
            self.low = result.low
            self._advance_horizon(result.marks)
            outcome.processed, outcome.duplicates = max(outcome.processed, result.added), max(outcome.duplicates, result.duplicates)
            outcome.capped = max(outcome.capped, result.capped)
            outcome.text_capped = max(outcome.text_capped, result.text_capped)
            if self.alerts is not None:
                mark = time.perf_counter()
                committed.update((r.alert_id, r) for r in await self.alerts.judge(touched))
                outcome.alerts_s = time.perf_counter() - mark
            # Before anything says "counted" (the results, then the offsets): a master that dies
            # now must not take writes its replica never saw (SENTINEL_REDIS_WAIT_REPLICAS).
            mark = time.perf_counter()
            outcome.replicas_short = not await self.store.replicated()
            outcome.replicas_s = time.perf_counter() - mark

        await self._with_redis(write)
        if folded.posts_folded:  # once written, as the dead letters once published: a batch redelivered counts once
            self._say_folded(folded)
        if outcome.replicas_short:
            log.warning("redis replicas short: batch committed with writes on a master alone", extra={"batch": batch.number})
        outcome.alerts = len(committed)
        for record in committed.values():
            self.metrics.alert(record)
        # Published after the windows are written, so a post-sentiment record means "counted", and
        # processed_at marks the window update. A redelivered post is published again (at-least-once).
        now = time.time()
        records = [(item.id, json.dumps(sentiment_record(item, judgement, base=self.model_base, adapter=self.model_adapter,
                                                         processed_at=now), ensure_ascii=False).encode())
                   for item, judgement in scored]
        await self.publish(self.sentiment_topic, records)
        outcome.commit_s = time.perf_counter() - committing
        outcome.total_s = time.perf_counter() - batch.started
        self.metrics.observe_batch(outcome)
        log.info(
            "batch done",
            extra={"batch": batch.number, "consumed": outcome.consumed, "dlq": outcome.dlq, "processed": outcome.processed,
                   "duplicates": outcome.duplicates, "late": outcome.late_dropped, "ahead": outcome.ahead, "capped": outcome.capped,
                   "text_capped": outcome.text_capped,
                   "partitions": sorted({m.partition for m in batch.messages}), "classify_s": round(outcome.classify_s, 3),
                   "windows_s": round(outcome.windows_s, 4), "alerts": outcome.alerts, "alerts_s": round(outcome.alerts_s, 4),
                   "replicas_s": round(outcome.replicas_s, 4), "commit_s": round(outcome.commit_s, 4),
                   "total_s": round(outcome.total_s, 3)},
        )
        return outcome

    async def _fold_new_scopes(self, items: list[Scored], frontiers: Mapping[str, float]) -> tuple[list[Scored], Folded]:
        """The batch's posts as they are counted: a new channel or source name past its kind's budget
        (SENTINEL_NEW_SCOPES_PER_HOUR) counted in that kind's overflow scope. The published record
        keeps the name (the caller publishes from the classified posts)."""
        if self.scope_budget.per_hour <= 0 or not items:
            return items, Folded([item.post for item in items], {}, {})
        posts = [item.post for item in items]
        known = await self.store.known_scopes(ScopeBudget.candidates(posts))
        decided = self.scope_budget.fold(posts, known, [frontiers.get(post.id, float("-inf")) for post in posts])
        return [item if post is item.post else replace(item, post=post) for item, post in zip(items, decided.posts)], decided

    def _say_folded(self, decided: Folded) -> None:
        """Count the folded posts (exact) and log them at most once a minute: a flood of new names
        would otherwise log a line a batch. Counts only: the names are the flood's own text."""
        for kind, posts in decided.posts_folded.items():
            self.metrics.scope_folded(kind, posts)
        self._folded_unsaid.update(decided.posts_folded)
        self._say_folded_if_due()

    def _say_folded_if_due(self) -> None:
        now = self.letter_log.clock()  # monotonic, as the dead letters' windows
        if self._folded_unsaid and now - self._folded_said >= 60.0:
            self._folded_said = now
            self._say_folded_counts()

    def say_due(self) -> None:
        """The counts whose minute has passed (dead letters held back, posts folded since the last
        line), said by the worker's timer: after a flood a quiet stream brings no batch to say them,
        and they would wait for the worker's stop."""
        self.say_dead_letters()
        self._say_folded_if_due()

    def _say_folded_counts(self) -> None:
        for kind, posts in sorted(self._folded_unsaid.items()):
            log.warning("new scopes folded into the overflow scope",
                        extra={"kind": kind, "overflow_scope": f"{kind}:{OVERFLOW_NAME}", "posts": posts,
                               "per_hour": self.scope_budget.per_hour})
        self._folded_unsaid.clear()

    def say_held(self) -> None:
        """The worker is stopping: log the counts still held back (dead letters, folded posts), which
        no later batch will say."""
        self.say_dead_letters(final=True)
        self._say_folded_counts()

    def _drop_late(self, posts: list[tuple[Post, RawMessage]], outcome: BatchOutcome,
                   frontiers: dict[str, float]) -> list[tuple[Post, RawMessage]]:
        """Advance the watermarks post by post, in offset order, so lateness depends only on the
        order of the partition and never on where a micro-batch happened to be cut. Late: further
        behind its partition's watermark than the dedupe window (its id may be gone), or before
        the horizon (its buckets may be gone): a retention behind the slowest live partition,
        which this batch's write trims to and no further, not behind the newest post of any (a
        partition read days behind another would lose its posts). Posts found stamped ahead of
        what most of their partition's sources agree on (PartitionClock.observe) keep their time and are counted in
        `ahead`: one source's clock running fast is visible, never silent. `frontiers` gets each
        on-time post's frontier, the newest of this worker's partitions' watermarks once it was read
        (ScopeBudget.fold)."""
        on_time = []
        for post, msg in posts:
            clock = self.clocks[msg.partition]
            for found in clock.observe(post.created_at, post.source, post.id):
                outcome.ahead += 1
                log.info("post stamped ahead of its partition's clock", extra={
                    "post_id": found, "partition": msg.partition, "watermark": clock.mark, "reference": clock.reference,
                    "max_ahead_s": self.max_ahead_s})
            self.watermark = max(self.watermark, clock.mark)
            if is_late(post.created_at, clock.mark, self.store.dedupe_s) or is_late(post.created_at, self.horizon, 0):
                log.info("late post dropped", extra={"post_id": post.id, "partition": msg.partition, "offset": msg.offset})
            else:
                on_time.append((post, msg))
                # This worker's own partitions' newest watermark, not self.watermark, which a write
                # moves to every worker's: a worker catching up hours behind the others would share
                # one budget hour across all the hours it reads.
                self._own_frontier = max(self._own_frontier, clock.mark)
                frontiers[post.id] = self._own_frontier
        return on_time

    async def _dead_letter(self, rejected: Sequence[tuple[RawMessage, Rejection]]) -> None:
        if not rejected:
            return
        self.say_dead_letters()  # a window that has passed starts over before these are counted in it
        records = []
        for msg, rejection in rejected:
            if self.letter_log.admit(rejection.reason, rejection.post_id):
                log.warning(
                    DEAD_LETTERED,
                    extra={"reason": rejection.reason, "post_id": rejection.post_id, "partition": msg.partition, "offset": msg.offset},
                )
            records.append((rejection.post_id, self._dead_letter_value(msg, rejection)))
        await self.publish(self.dlq_topic, records)
        for _, rejection in rejected:  # once published: the metric never runs ahead of the DLQ
            self.metrics.dead_lettered(rejection.reason)

    def say_dead_letters(self, *, final: bool = False) -> None:
        """Log, per reason, how many dead letters logged no line of their own over a window that has
        passed (`final`: every count held, the worker is stopping). The reason and a post id only:
        never the message, which holds the post's text."""
        for held in self.letter_log.due(final=final):
            log.warning(DEAD_LETTERS_HELD, extra={"reason": held.reason, "held_back": held.held_back,
                                                  "example_post_id": held.example_post_id, "window_s": held.window_s})

    def _dead_letter_value(self, msg: RawMessage, rejection: Rejection) -> bytes:
        """The dead letter, under the producer's max_record_bytes. Escaping can make up to 768 KiB
        of the 128 KiB of the original it keeps; where the limit is lower (a broker's or topic's
        smaller message size, SENTINEL_KAFKA_MAX_REQUEST_BYTES) the original is cut further, to
        the most that fits (to nothing at worst), so the reason, post id and offsets still reach the
        DLQ. Refused whole, the batch would stop the worker unacked, and the worker would stop on it
        again after every restart."""
        at, full = time.time(), min(self.limits.max_message_bytes, DLQ_MAX_VALUE_BYTES)
        key = rejection.post_id.encode() if rejection.post_id else None  # as the publish encodes it

        def encoded(cap: int) -> bytes:
            record = dlq_record(msg.value, rejection, topic=msg.topic, partition=msg.partition, offset=msg.offset, at=at,
                                max_value_bytes=cap)
            return json.dumps(record, ensure_ascii=False).encode()

        def fits(value: bytes) -> bool:
            return self.max_record_bytes is None or record_bytes(key, value) <= self.max_record_bytes

        if fits(value := encoded(full)):
            return value
        # A dead letter's size grows with the bytes kept: the most that fits, by bisection (a rare
        # path: ~17 encodings of a dead letter that is over the limit).
        low, high = 0, full - 1
        while low < high:
            middle = (low + high + 1) // 2
            low, high = (middle, high) if fits(encoded(middle)) else (low, middle - 1)
        log.warning(DEAD_LETTER_CUT,
                    extra={"post_id": rejection.post_id, "partition": msg.partition, "offset": msg.offset,
                           "value_bytes": len(msg.value or b""), "kept_bytes": low, "max_record_bytes": self.max_record_bytes})
        return encoded(low)

    async def _classify(self, posts: list[tuple[Post, RawMessage]], outcome: BatchOutcome) -> list[tuple[Post, Judgement]]:
        """Classify in a worker thread; on failure split the batch, so one poison post ends in the DLQ alone."""
        if not posts:
            return []

        def timed(texts: list[str]) -> Sequence[Judgement]:
            # Timed on the model's thread: the call may have waited there behind another batch.
            mark = time.perf_counter()
            try:
                return self.classify(texts)
            finally:
                outcome.classify_s += time.perf_counter() - mark

        try:
            judgements = await self.model_thread.run(timed, [p.text for p, _ in posts])
            # A model in half precision can overflow to NaN or inf on one input; Redis refuses such a
            # score in the window write, so the batch would fail there again on every restart. Failed
            # here instead: the split finds the post and dead-letters it alone.
            if not all(finite_judgement(j) for j in judgements):
                raise ValueError("the model returned non-finite scores")
            return [(p, j) for (p, _), j in zip(posts, judgements)]
        except ModelGone:
            raise  # no post is to blame: the batch stays unacked and the worker stops (BatchPipeline.on_failure)
        except Exception as exc:  # noqa: BLE001 - any model failure (OOM, odd input) is handled by splitting
            if len(posts) == 1:
                post, msg = posts[0]
                log.error("classification failed for one post", extra={"post_id": post.id, "error": type(exc).__name__})
                reason = Rejection("classification_failed", f"{type(exc).__name__}: {str(exc)[:200]}", post_id=post.id)
                await self._dead_letter([(msg, reason)])
                return []
            log.warning("classification failed, splitting batch", extra={"size": len(posts), "error": type(exc).__name__})
            half = len(posts) // 2
            return await self._classify(posts[:half], outcome) + await self._classify(posts[half:], outcome)

    async def _claim_epoch(self, first_post: float) -> None:
        """Before this worker's first write, and every `epoch_reassert_s` after (epochs.REASSERT_S
        says why): record its classifier as the newest model epoch if it is not
        (stream/alerts/epochs.py), so judging weighs the sentiment kinds against the buckets it
        labels alone. A compare-and-set, re-read when another worker appended first (two
        new-model pods starting together append one epoch)."""
        identity = model_identity(self.model_base, self.model_adapter)
        start = first_bucket(first_post, await self.store.stats(), self.store.bucket_s, time.time())
        newest: Epoch | None = None
        for _ in range(3):
            raw = await self.store.epochs()
            epochs = parse(raw)
            newest = epochs[-1] if epochs else None
            epoch = claim(epochs, identity, start, time.time())
            if epoch is None:
                break
            if await self.store.append_epoch(epoch.to_json(), raw[-1] if raw else None):
                newest = epoch
                if epochs and epoch.since == epochs[-1].since:  # a rolling update's other side: no new warm-up
                    log.info("model epoch: a rolling update's other classifier labels under the current epoch",
                             extra={"model": epoch.identity, "previous_model": epochs[-1].identity, "labels_since": iso(epoch.since)})
                elif epochs:
                    self._log_switch(epochs[-1].identity, epoch)
                break
        self.epoch_checked_at = time.monotonic()
        # Every worker, not only the one that recorded the switch, shows when the blind spot ends.
        self.metrics.sentiment_judged_from(self._warm_until(newest.since) if newest is not None else None)

    def _warm_until(self, since: float) -> float | None:
        """When the engine judges the sentiment kinds again after a switch at `since` (None: no
        switch, or no engine)."""
        warm = getattr(self.alerts, "warm_until", None)  # the Judge protocol's fakes need not have it
        until = warm(since) if callable(warm) else None
        return until if until is not None and math.isfinite(until) else None

    def _log_switch(self, previous: str, epoch: Epoch) -> None:
        """The blind spot, said where operators look: which kinds wait, and until when (event time)."""
        until = self._warm_until(epoch.since)
        log.warning("model switch: sentiment kinds warm up on the new classifier", extra={
            "model": epoch.identity, "previous_model": previous, "labels_since": iso(epoch.since),
            "sentiment_judged_from": iso(until) if until is not None else None,
            "kinds_waiting": ["sentiment_drop", "sentiment_surge"], "kinds_judged": ["volume_spike"]})

    async def _with_redis(self, call: Callable[[], Awaitable[T]]) -> T:
        # Redis is down (or a cluster is promoting a replica): keep the batch (its offsets stay
        # uncommitted) and back off. Every step is idempotent (post ids, compare-and-set on judged
        # boundaries), so a retry after a write that did land changes nothing.
        return await retry_transient(call, what="batch", max_delay_s=self.redis_retry_max_s)


class BatchPipeline:
    """Keeps the model busy. While it classifies batch N+1, batch N is written and batch N+2 is
    taken, validated and queued behind N+1, so the model starts N+2 the moment N+1 is done instead
    of waiting for the agent to take and validate it. Batches are written one at a time, in the
    order they were taken, so Redis sees them in order; `submit` returns only while at most `depth`
    batches are in flight, so a slow Redis (or model) holds the agent back instead of piling
    batches up.

    `done` runs after a batch is committed (the agent acks its events there). A commit that raises
    is a lost dependency or a bug, not bad input: `on_failure` decides (the worker exits unacked)."""

    def __init__(self, processor: BatchProcessor, on_failure: Callable[[BaseException], None], depth: int = 2):
        self.processor = processor
        self.on_failure = on_failure
        self.depth = depth
        self.in_flight = 0  # batches taken and not yet committed and acked
        self._last: asyncio.Task[None] | None = None  # the newest batch's write; each waits for the one before
        self._committed = asyncio.Event()

    async def submit(self, messages: Sequence[RawMessage], done: Callable[[], Awaitable[None]]) -> None:
        """Validate this batch, queue it for the model and for its write after the previous one;
        return once no more than `depth` batches are in flight."""
        self.in_flight += 1
        admitted = await self.processor.admit(messages)
        # Tasks start in the order they are made, so batches reach the model's thread in order.
        classified = asyncio.create_task(self.processor.classify_batch(admitted))
        self._last = asyncio.create_task(self._write(self._last, classified, done))
        while self.in_flight > self.depth:
            self._committed.clear()
            await self._committed.wait()

    async def drain(self) -> None:
        """Wait until every batch submitted so far is written (raises what a write raised)."""
        if self._last is not None:
            last, self._last = self._last, None
            await last

    async def _write(self, previous: asyncio.Task[None] | None, classified: asyncio.Task[Prepared],
                     done: Callable[[], Awaitable[None]]) -> None:
        if previous is not None:
            try:
                await previous
            except Exception:
                # The earlier batch failed and was reported: this one is never written or acked.
                classified.cancel()
                raise
        try:
            await self.processor.commit(await classified)
            await done()
        except Exception as exc:
            self.on_failure(exc)
            raise
        self.in_flight -= 1
        self._committed.set()


def batch_token(messages: Sequence[RawMessage]) -> str:
    """The batch's identity: its offset range per partition (the same messages give the same token)."""
    ranges: dict[tuple[str, int], tuple[int, int]] = {}
    for m in messages:
        lo, hi = ranges.get((m.topic, m.partition), (m.offset, m.offset))
        ranges[(m.topic, m.partition)] = (min(lo, m.offset), max(hi, m.offset))
    return ";".join(f"{t}/{p}:{lo}-{hi}" for (t, p), (lo, hi) in sorted(ranges.items()))
