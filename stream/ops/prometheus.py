"""Prometheus metrics of one worker: the instruments and the functions that update them.

Every `WorkerMetrics` owns its own `CollectorRegistry` (never the process-global one), so several
apps can live in one process (tests) without "duplicated timeseries" errors, and a scrape shows
exactly this worker's instruments. Updating is plain function calls from the processor, the alert
engine's caller and the delivery loop; nothing here touches Kafka, Redis or the event loop.

Consumer lag is a gauge refreshed at scrape time (`offsets_behind` of `resume_offset`): the log ends come from the
broker, one ListOffsets request per scrape (stream/ops/http.py `consumer_lag` says why and what
stands in when the broker is slow), the committed offsets from what Faust's consumer knows. So are
the read position and what lies past it (`ConsumerOffsets`), for `SentinelPartitionStalled`, and
the committed offset itself, for `SentinelProcessingStuck`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from stream.alerts.incidents import AlertRecord
from stream.batch import BatchOutcome
from stream.windows import FOLDED_KINDS

# A micro-batch holds 1..max_batch posts (64 by default; benchmarks go to 1024).
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048)
# Classification ranges from microseconds (lexicon) to tens of seconds (a 7B model on CPU).
CLASSIFY_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
# Window updates are a few Redis round trips; seconds only when Redis is retried.
WINDOWS_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

TopicPartition = tuple[str, int]


@dataclass(frozen=True)
class ModelLabels:
    base: str
    adapter: str
    device: str
    quantize: str
    dtype: str

    @classmethod
    def from_info(cls, info: Any) -> "ModelLabels":
        """From a `model.base.ModelInfo` (or anything with its attributes)."""
        return cls(
            base=str(info.base),
            adapter=str(info.adapter or "none"),
            device=str(info.device),
            quantize=str(info.quantize),
            dtype=str(info.dtype),
        )


def resume_offset(committed: int | None, start: int | None) -> int | None:
    """The offset the group resumes a partition from: its committed offset, or the log's first
    offset (`start`) where that is further. Before the group has committed a partition, it starts
    reading at the first offset (the worker's offset reset is `earliest`); and where retention
    deleted the records past its committed offset (the workers were down longer than the topic's
    retention), the consumer's fetch is out of range and the reset moves it to the first offset,
    while the committed offset stays behind until a post there is processed: the offsets between
    are gone, not waiting. None when neither is known."""
    known = [offset for offset in (committed, start) if offset is not None]
    return max(known) if known else None


def offsets_behind(ends: Mapping[TopicPartition, int], offsets: Mapping[TopicPartition, int]) -> dict[TopicPartition, int]:
    """Per partition of `offsets`, how far its end lies past that offset (the log end offset, the
    one the next produced message gets); never negative (an end read a moment before the offset
    moved past it), and a partition whose end or offset is not known (the broker did not answer
    and no fetch has since assignment) left out rather than guessed."""
    return {tp: max(0, ends[tp] - offset) for tp, offset in offsets.items() if tp in ends}


@dataclass(frozen=True)
class ConsumerOffsets:
    """Per assigned partition of the input topics: `lag` (end - committed, `offsets_behind` the resume offset), the
    read `position` (the next offset the consumer fetches), `unread` (end - position) and
    `committed` (the offset the group resumes from, `resume_offset`: its committed one, or the
    log's first offset where it never committed the partition or retention deleted past it). A consumer stopped on a partition holds its position while
    `unread` stays above 0; a caught-up partition written in transactions reads lag 1 (the commit
    marker) and unread 0. A stuck agent is the other way round: the consumer goes on fetching into
    Faust's buffer (position moves, unread 0) while no batch is acked, so `committed` holds with
    `position - committed` above that marker's 1."""

    lag: dict[TopicPartition, int]
    position: dict[TopicPartition, int]
    unread: dict[TopicPartition, int]
    committed: dict[TopicPartition, int]


def _replace(gauge: Gauge, values: Mapping[TopicPartition, int]) -> None:
    # The whole set: a partition revoked in a rebalance must disappear, not freeze.
    gauge.clear()
    for (topic, partition), value in values.items():
        gauge.labels(topic=topic, partition=str(partition)).set(value)


class _NotifierCollector(Collector):
    """Reads a Notifier's own per-service counters at scrape time (it already keeps them)."""

    def __init__(self, notifier: Any) -> None:
        self.notifier = notifier

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(
            "sentinel_notify_service_sends",
            "Per-service notification outcomes (accepted, or failed after every retry)",
            labels=["result"],
        )
        family.add_metric(["sent"], float(self.notifier.sent_total))
        family.add_metric(["failed"], float(self.notifier.failed_total))
        yield family
        yield CounterMetricFamily(
            "sentinel_notify_attempts", "Send attempts to notification services, retries included", value=float(self.notifier.attempts_total)
        )


class WorkerMetrics:
    """The worker's instruments in a registry of their own."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.consumed = Counter("sentinel_posts_consumed", "Messages consumed from the posts topic", registry=r)
        self.processed = Counter("sentinel_posts_processed", "Posts classified and newly counted in the windows", registry=r)
        self.duplicates = Counter("sentinel_posts_duplicate", "Valid posts already counted (redelivery or repeated id)", registry=r)
        self.capped = Counter("sentinel_posts_author_capped", "Posts processed but not counted in the `all` windows: over their "
                              "author's hourly cap (SENTINEL_AUTHOR_CAP)", registry=r)
        self.text_capped = Counter("sentinel_posts_text_capped", "Posts processed but not counted in the `all` windows: over "
                                   "their text's hourly cap (SENTINEL_TEXT_CAP; a post can be over both caps)", registry=r)
        self.late = Counter("sentinel_posts_late_dropped", "Valid posts dropped as further behind the watermark than the dedupe window", registry=r)
        self.ahead = Counter("sentinel_posts_ahead", "Valid posts stamped further ahead of what most of their partition's "
                             "sources agree on than SENTINEL_MAX_AHEAD (a source's clock running fast, or one post from the future): counted at "
                             "their own time, moving no watermark", registry=r)
        self.dead_letter = Counter("sentinel_posts_dead_lettered", "Messages sent to the DLQ, by reason", ["reason"], registry=r)
        self.scope_folded_posts = Counter(
            "sentinel_posts_scope_folded", "Posts whose new channel or source name was past SENTINEL_NEW_SCOPES_PER_HOUR and "
            "counted in that kind's overflow scope (`channel: (other)`), by kind", ["kind"], registry=r)
        self.batch_size = Histogram("sentinel_batch_size", "Messages per micro-batch", buckets=BATCH_SIZE_BUCKETS, registry=r)
        self.batch_seconds = Histogram("sentinel_batch_seconds", "Wall time of one micro-batch, end to end", buckets=CLASSIFY_BUCKETS, registry=r)
        self.classify_seconds = Histogram(
            "sentinel_classify_seconds", "Model time per micro-batch (batches with posts to classify)", buckets=CLASSIFY_BUCKETS, registry=r
        )
        self.windows_seconds = Histogram(
            "sentinel_window_update_seconds", "Redis window and counter update per micro-batch", buckets=WINDOWS_BUCKETS, registry=r
        )
        # Against sentinel_classify_seconds it says which half limits a worker: commits that take
        # as long as the model's calls leave the model waiting (docs/operations.md, "Capacity planning").
        self.commit_seconds = Histogram(
            "sentinel_commit_seconds", "Windows, judging, replica wait and publishing per micro-batch: the half after the model",
            buckets=CLASSIFY_BUCKETS, registry=r,
        )
        self.replica_wait_seconds = Histogram(
            "sentinel_redis_replica_wait_seconds", "WAIT for Redis replicas per micro-batch (SENTINEL_REDIS_WAIT_REPLICAS)",
            buckets=WINDOWS_BUCKETS, registry=r,
        )
        self.replica_wait_short = Counter(
            "sentinel_redis_replica_wait_short", "Batches committed with fewer Redis replicas than asked (a master had fewer connected)", registry=r
        )
        self.alert_transitions = Counter("sentinel_alert_transitions", "Alert transitions committed by this worker", ["kind", "state"], registry=r)
        self.deliveries = Counter(
            "sentinel_alert_deliveries",
            "Alert deliveries by result (notified: every service sent to accepted, the daily cap may have held others back; failed: "
            "a service refused it after its retries; capped: the daily cap held back every service and none failed; silenced)", ["result"], registry=r
        )
        self.lag = Gauge("sentinel_consumer_lag", "Messages behind per assigned partition (log end offset - the offset the group resumes from, as sentinel_consumer_committed)", ["topic", "partition"], registry=r)
        self.position = Gauge(
            "sentinel_consumer_position", "Offset of the next message the consumer fetches per assigned partition (past transaction markers)",
            ["topic", "partition"], registry=r,
        )
        self.unread = Gauge(
            "sentinel_consumer_unread", "Messages past the consumer's read position per assigned partition (log end offset - position)",
            ["topic", "partition"], registry=r,
        )
        self.committed = Gauge(
            "sentinel_consumer_committed", "Offset the group resumes from per assigned partition: its committed offset (moves only "
            "when processed batches are acked), or the log's first offset where it never committed the partition or retention "
            "deleted past its committed offset",
            ["topic", "partition"], registry=r,
        )
        # After a classifier switch (stream/alerts/epochs.py) drop and surge wait for the new
        # classifier's baseline: the event time they are judged from again (0: no switch recorded).
        self.judged_from = Gauge("sentinel_sentiment_judged_from_seconds", "Event time (Unix seconds) from which sentiment_drop and "
                                 "sentiment_surge are judged again after the newest classifier switch this worker saw when it last "
                                 "checked (its first batch, then every quarter hour); 0: none recorded", registry=r)
        self.model = Gauge("sentinel_model_info", "The loaded classifier (always 1)", ["base", "adapter", "device", "quantize", "dtype"], registry=r)
        self.loop_lag = Gauge("sentinel_event_loop_lag_seconds", "How late the last event-loop heartbeat woke up", registry=r)
        self.dependency_up = Gauge("sentinel_dependency_up", "1 if the dependency answered the worker's last probe, else 0", ["dependency"], registry=r)
        self.dependency_outages = Counter(
            "sentinel_dependency_outages", "Times a dependency stopped answering the worker's probes", ["dependency"], registry=r
        )
        self.dependency_down_seconds = Counter(
            "sentinel_dependency_down_seconds", "Seconds a dependency has not answered the worker's probes", ["dependency"], registry=r
        )
        self.redis_data_lost = Counter(
            "sentinel_redis_data_lost", "Times this worker found Redis emptied or replaced while it ran (its data marker changed)", registry=r
        )
        self.redis_data_since = Gauge(
            "sentinel_redis_data_since_seconds", "When the Redis this worker writes was found without a data marker and marked (epoch s): "
            "empty then, or written by a version without the marker", registry=r
        )
        for dependency in ("broker", "redis"):
            self.dependency_outages.labels(dependency=dependency)
            self.dependency_down_seconds.labels(dependency=dependency)
        # Pre-create the delivery results so a dashboard's rate() has a zero to start from.
        for result in ("notified", "failed", "capped", "silenced"):
            self.deliveries.labels(result=result)
        # And the folded kinds: SentinelScopesFolded's increase() needs a zero before a first burst,
        # which on a first start comes in the first batches, before any scrape.
        for kind in FOLDED_KINDS:
            self.scope_folded_posts.labels(kind=kind)

    # --- updates (called by the processor, the delivery loop and the HTTP shell) ---

    def observe_batch(self, outcome: BatchOutcome) -> None:
        self.consumed.inc(outcome.consumed)
        self.processed.inc(outcome.processed)
        self.duplicates.inc(outcome.duplicates)
        self.capped.inc(outcome.capped)
        self.text_capped.inc(outcome.text_capped)
        self.late.inc(outcome.late_dropped)
        self.ahead.inc(outcome.ahead)
        self.batch_size.observe(outcome.consumed)
        self.batch_seconds.observe(outcome.total_s)
        # A batch of only bad messages never reaches the model: observing 0 would drag the
        # latency distribution down with batches that measured nothing.
        if outcome.valid - outcome.late_dropped > 0:
            self.classify_seconds.observe(outcome.classify_s)
        self.windows_seconds.observe(outcome.windows_s)
        self.commit_seconds.observe(outcome.commit_s)
        if outcome.replicas_s:
            self.replica_wait_seconds.observe(outcome.replicas_s)
        if outcome.replicas_short:
            self.replica_wait_short.inc()

    def dead_lettered(self, reason: str) -> None:
        self.dead_letter.labels(reason=reason).inc()

    def scope_folded(self, kind: str, posts: int) -> None:
        self.scope_folded_posts.labels(kind=kind).inc(posts)

    def alert(self, record: AlertRecord) -> None:
        self.alert_transitions.labels(kind=record.kind, state=record.state).inc()

    def sentiment_judged_from(self, at: float | None) -> None:
        self.judged_from.set(at if at is not None else 0.0)

    def delivery(self, notified: bool) -> None:
        self.deliveries.labels(result="notified" if notified else "failed").inc()

    def silenced(self) -> None:
        self.deliveries.labels(result="silenced").inc()

    def delivery_capped(self) -> None:
        self.deliveries.labels(result="capped").inc()

    def set_model(self, labels: ModelLabels) -> None:
        self.model.clear()  # one model per worker: a reload replaces, never adds, a series
        self.model.labels(**vars(labels)).set(1)

    def set_lag(self, lags: Mapping[TopicPartition, int]) -> None:
        _replace(self.lag, lags)

    def set_offsets(self, offsets: ConsumerOffsets) -> None:
        _replace(self.lag, offsets.lag)
        _replace(self.position, offsets.position)
        _replace(self.unread, offsets.unread)
        _replace(self.committed, offsets.committed)

    def set_loop_lag(self, seconds: float) -> None:
        self.loop_lag.set(seconds)

    def observe_dependency(self, name: str, ok: bool, *, started: bool, down_s: float) -> None:
        self.dependency_up.labels(dependency=name).set(1 if ok else 0)
        if started:
            self.dependency_outages.labels(dependency=name).inc()
        if down_s:
            self.dependency_down_seconds.labels(dependency=name).inc(down_s)

    def observe_redis_marker(self, created_at: float, lost: bool) -> None:
        self.redis_data_since.set(created_at)
        if lost:
            self.redis_data_lost.inc()

    def watch_notifier(self, notifier: Any) -> None:
        if notifier is not None:
            self.registry.register(_NotifierCollector(notifier))

    def render(self) -> bytes:
        """The registry in Prometheus' text exposition format."""
        return generate_latest(self.registry)
