"""The worker: Faust wiring around the BatchProcessor. One agent consumes forum-posts as raw bytes in
micro-batches; a task beside it delivers notifications. Read it top to bottom:

- `settings_problems`: the window and alert settings, checked before anything slow starts, every
  problem named at once;
- `faust_app`: settings to a Faust app (Kafka, web server, timeouts);
- `build_worker`: the composition: store, processor, alert engine, delivery, metrics, endpoints;
- `DeferredAck`: how a batch's offsets stay uncommitted until its windows are written;
- `Shutdown`: what SIGTERM does (the CLI's Faust worker calls `Shutdown.run`).

Scaling is Kafka's: run more workers with the same `app_id` (the consumer group) and the partitions
are shared between them; replicas beyond the partition count sit idle.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from dataclasses import dataclass
from functools import partial
from typing import Any, Callable, Collection, Iterable, Iterator, Sequence, TypeVar

import faust

from model.scorer import Scorer
from stream.alerts.delivery import AlertDelivery, public_record
from stream.alerts.detector import Thresholds, parse_overrides
from stream.alerts.correlator import Correlator
from stream.alerts.engine import AlertEngine
from stream.alerts.grouping import GroupConfig
from stream.alerts.incidents import AlertRecord
from stream.alerts.judging import AlertConfig
from stream.alerts.sequential import SeqConfig
from stream.alerts.notify import Notifier, cleartext_services, retry_delays
from stream.assets import load_aliases
from stream.batch import RawMessage
from stream.contracts import Limits
from stream.logs import CLEARTEXT_SERVICE
from stream.kafka import (Deliveries, broker_credentials, broker_url, group_member, guard_undecodable_batches, leave_group, max_request_bytes, partition_count,
                          publish_records, ssl_context, stall_checks_from_assignment, undecodable_reason)
from stream.model_thread import ModelThread
from stream.ops.http import install as install_http, serve_on, start_join_patience_s
from stream.ops.prometheus import WorkerMetrics
from stream.processor import BatchPipeline, BatchProcessor
from stream.settings import Settings, problems_unless_reading
from stream.store import WindowStore
from stream.timefmt import setting_duration
from stream.windows import dedupe_window_s, pair_retention_s, partitions_mismatch, partitions_outgrown

log = logging.getLogger(__name__)
T = TypeVar("T")

# Exit codes of a worker that leaves without Faust's own stop (see DeferredAck and Shutdown).
EXIT_DRAINED, EXIT_BATCH_FAILED, EXIT_GRACE_RAN_OUT = 0, 70, 75
# The posts topic outgrew SENTINEL_PARTITIONS while the worker ran: 2, as `sentinel worker`'s
# start-up check refuses the same mismatch, which a restart with the old count then meets.
EXIT_PARTITIONS_OUTGROWN = 2
# How long an assignment waits for the topic's partition count before going on without it (the
# assigned partitions' numbers are checked all the same); at most a third of the session timeout
# (partition_count_timeout_s).
PARTITION_COUNT_TIMEOUT_S = 10.0


CLAIM_MARGIN_S = 30.0  # room for the attempts themselves (an HTTP timeout or an SMTP exchange) beyond the delays


def settings_problems(settings: Settings, *, aliases: bool = True, failing: Collection[str] = ()) -> list[str]:
    """What each check below finds, in this order, one problem a line naming its variable: every
    problem, not only the first, since an operator told of one at a time pays a pod restart for each.
    `aliases`: also read the alias table (a worker's; not a command that only reads Redis).
    `failing`: fields that were wrong and are at their defaults (stream.settings.read_settings); a
    check that reads one is skipped."""
    checks: list[Callable[[Settings], Iterable[str]]] = [
        window_problems, *([alias_problems] if aliases else []), dedupe_window_problems, max_ahead_problems, max_future_problems,
        renamed_problems, alert_overrides_problems, *[partial(alert_duration_problems, name) for name in ALERT_DURATIONS],
        alert_config_problems, tls_problems, grouping_problems, pair_retention_problems, notify_problems,
    ]
    return [problem for check in checks for problem in problems_unless_reading(failing, check, settings)]


def problems_of(check: Callable[[], object]) -> list[str]:
    """[the message of the ValueError `check` raises], or [] when it passes."""
    try:
        check()
    except ValueError as exc:
        return [str(exc)]
    return []


def parsed(make: Callable[[], T]) -> T | None:
    """What `make` returns; None when it raises ValueError. For a check that reads another's input:
    that input's own check names the problem, so the dependent one is skipped, not said twice or
    said as a confusing follow-on."""
    try:
        return make()
    except ValueError:
        return None


def seconds(field: str, spec: str) -> int | None:
    """The setting in seconds; None when it does not parse."""
    return parsed(partial(setting_duration, field, spec))


def window_problems(settings: Settings) -> Iterator[str]:
    for field in ("bucket", "retention", "windows", "report_retention"):
        for spec in getattr(settings, field).split(","):
            yield from problems_of(partial(setting_duration, field, spec))
    bucket = seconds("bucket", settings.bucket)
    if bucket is not None and bucket < 1:
        yield "SENTINEL_BUCKET: must be at least 1s"


def alias_problems(settings: Settings) -> Iterator[str]:
    # The messages leave the path out: never a setting's value (it may be a misplaced secret).
    try:
        load_aliases(settings.aliases_file)
    except OSError as exc:
        yield f"SENTINEL_ALIASES_FILE: cannot read the file ({exc.strerror})"
    except ValueError:
        yield ("SENTINEL_ALIASES_FILE: not a JSON object of alias: TICKER strings, nor one of "
               "names / tickers / not_assets (docs/contracts.md)")


def dedupe_window_problems(settings: Settings) -> list[str]:
    if seconds("retention", settings.retention) is None:
        return []  # named by window_problems; the window is judged against it
    return problems_of(partial(dedupe_window_s, settings.retention, settings.dedupe_window))


def max_ahead_problems(settings: Settings) -> Iterator[str]:
    try:
        ahead = setting_duration("max_ahead", settings.max_ahead)
    except ValueError as exc:
        yield str(exc)
        return
    if ahead <= 0:
        yield "SENTINEL_MAX_AHEAD: must be longer than zero"


def max_future_problems(settings: Settings) -> Iterator[str]:
    try:
        future = post_limits(settings).max_future_s
    except ValueError as exc:
        yield str(exc)
        return
    window = parsed(partial(dedupe_window_s, settings.retention, settings.dedupe_window))
    if window is not None and future >= window:  # a window that is wrong is named by dedupe_window_problems
        # One post dated that far ahead moves the watermark there, and every post then further
        # behind it than the window would be dropped as late until the clock catches up.
        yield f"SENTINEL_MAX_FUTURE must be below SENTINEL_DEDUPE_WINDOW ({window} s)"


RENAMED_VARIABLES = frozenset({"SENTINEL_ALERT_MIN_SCORE_DELTA"})  # said by renamed_problems, not as an unknown variable


def renamed_problems(settings: Settings) -> Iterator[str]:
    if "SENTINEL_ALERT_MIN_SCORE_DELTA" in os.environ:  # renamed: an ignored setting would change the detector unnoticed
        yield ("SENTINEL_ALERT_MIN_SCORE_DELTA was replaced by SENTINEL_ALERT_MIN_SCORE_EFFECT, in standard deviations of the "
               "baseline's per-post scores (0.35 is the old 0.15 at scores of +-0.6)")


ALERT_DURATIONS = ("window", "baseline", "step", "grace", "repeat", "for", "half_life", "thaw")


def alert_overrides_problems(settings: Settings) -> list[str]:
    return [f"SENTINEL_ALERT_OVERRIDES: {problem}" for problem in problems_of(partial(parse_overrides, settings.alert_overrides))]


def alert_duration_problems(name: str, settings: Settings) -> list[str]:
    # A check of its own per duration: one left at its default (stream.settings.read_settings)
    # skips only the checks that read it.
    return problems_of(partial(setting_duration, f"alert_{name}", getattr(settings, f"alert_{name}")))


def alert_config_problems(settings: Settings) -> list[str]:
    """Once the overrides and every alert duration parse (each named by its own check), the alert
    config they make and the retention it needs."""
    if alert_overrides_problems(settings) or any(alert_duration_problems(name, settings) for name in ALERT_DURATIONS):
        return []
    try:
        config = built_alert_config(settings)
    except ValueError as exc:
        return [str(exc)]
    retention = seconds("retention", settings.retention)  # a bad one is named by window_problems
    problem = retention_problem(config, retention) if retention is not None else None
    return [problem] if problem else []


def tls_problems(settings: Settings) -> Iterator[str]:
    if settings.kafka_security_protocol not in ("SSL", "SASL_SSL"):
        return
    try:
        ssl_context(settings)
    except OSError as exc:  # a missing file, or one ssl cannot read (ssl.SSLError is an OSError)
        # The path stays out of the message (never a setting's value).
        why = exc.strerror or getattr(exc, "reason", None) or type(exc).__name__
        yield f"SENTINEL_KAFKA_SSL_CAFILE: cannot load the CA file ({why})"


GROUP_DURATIONS = ("alert_group_wait", "alert_group_interval", "alert_group_repeat")


def grouping_problems(settings: Settings) -> list[str]:
    durations = [problem for field in GROUP_DURATIONS for problem in problems_of(partial(setting_duration, field, getattr(settings, field)))]
    return durations or problems_of(partial(group_config, settings))  # then GroupConfig's own checks


def pair_retention_problems(settings: Settings) -> list[str]:
    own = problems_of(partial(setting_duration, "pair_retention", settings.pair_retention))
    group = parsed(partial(group_config, settings))
    if own or group is None or seconds("retention", settings.retention) is None:
        return own  # the others are named by grouping_problems and window_problems
    return problems_of(partial(pair_retention_s, settings.retention, settings.pair_retention, group.reference_s))


def notify_problems(settings: Settings) -> Iterator[str]:
    budget = sum(retry_delays(settings.notify_attempts, settings.notify_backoff, settings.notify_backoff_max))
    if settings.notify_claim_idle <= budget + CLAIM_MARGIN_S:
        # A worker still retrying a notification must not see its entry claimed and sent again.
        yield (f"SENTINEL_NOTIFY_CLAIM_IDLE ({settings.notify_claim_idle:g} s) must exceed the notification retry "
               f"delays ({budget:g} s) by more than {CLAIM_MARGIN_S:g} s")


def highwater(app: faust.App, tp: Any) -> int | None:
    """The partition's highwater as the consumer last fetched it (aiokafka keeps it from each fetch
    response); None before the first fetch or once the partition was revoked."""
    try:
        end = app.consumer.highwater(tp)
    except Exception:  # noqa: BLE001 - revoked since the batch was taken, or the consumer is restarting
        return None
    return end if isinstance(end, int) else None


def post_limits(settings: Settings) -> Limits:
    return Limits(max_message_bytes=settings.max_message_bytes, max_text_chars=settings.max_text_chars,
                  max_future_s=setting_duration("max_future", settings.max_future))


def alert_config(settings: Settings) -> AlertConfig:
    config = built_alert_config(settings)
    if problem := retention_problem(config, setting_duration("retention", settings.retention)):
        raise ValueError(problem)
    return config


def built_alert_config(settings: Settings) -> AlertConfig:
    """The alert config the settings make, with AlertConfig's own checks but not the retention's."""
    th = Thresholds(
        fire_z=settings.alert_fire_z, resolve_z=settings.alert_resolve_z, critical_z=settings.alert_critical_z,
        min_posts=settings.alert_min_posts, min_baseline_posts=settings.alert_min_baseline_posts,
        min_share_delta=settings.alert_min_share_delta, min_score_effect=settings.alert_min_score_effect,
        min_volume_ratio=settings.alert_min_volume_ratio,
    )

    def duration(name: str) -> int:
        return setting_duration(f"alert_{name}", getattr(settings, f"alert_{name}"))

    return AlertConfig(
        window_s=duration("window"), baseline_s=duration("baseline"), step_s=duration("step"), grace_s=duration("grace"),
        repeat_s=duration("repeat"), for_s=duration("for"), half_life_s=duration("half_life"),
        idle_s=settings.alert_idle_partition, lagging_idle_s=settings.alert_lagging_partition, thresholds=th, overrides=parse_overrides(settings.alert_overrides),
        detector=settings.alert_detector,
        sequential=SeqConfig(threshold_nats=settings.alert_threshold_nats, streams=settings.alert_streams, confirm_z=settings.alert_confirm_z,
                             thaw_bins=duration("thaw") // duration("step")),
    )


def retention_problem(config: AlertConfig, retention_s: int) -> str | None:
    if config.detector == "sequential" and retention_s < config.lookback_s + config.step_s:
        # The baseline's sums drop each bin as it leaves; a bin already trimmed would read as empty.
        return (f"SENTINEL_RETENTION must cover the alert window and baseline ({config.lookback_s + config.step_s} s) "
                "for the sequential detector")
    return None


def group_config(settings: Settings) -> GroupConfig:
    return GroupConfig(group_wait_s=setting_duration("alert_group_wait", settings.alert_group_wait),
                       group_interval_s=setting_duration("alert_group_interval", settings.alert_group_interval),
                       repeat_interval_s=setting_duration("alert_group_repeat", settings.alert_group_repeat))


def alert_engine(settings: Settings, store: WindowStore) -> AlertEngine:
    """The alert engine, with incident grouping when SENTINEL_ALERT_GROUPING=incidents."""
    config = alert_config(settings)
    correlator = None
    if settings.alert_grouping == "incidents":
        correlator = Correlator(store, group_config(settings), step_s=config.step_s,
                                history_s=setting_duration("retention", settings.retention))
    return AlertEngine(store, config, partitions=settings.partitions, samples=settings.alert_samples, correlator=correlator)


def url_host(host: str) -> str:
    """`host` as a URL names it: an IPv6 address in brackets."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def faust_app(settings: Settings, listeners: Sequence[socket.socket] = ()) -> faust.App:
    """`listeners`: sockets already listening on SENTINEL_WEB_PORT (the worker's start-up check),
    served on instead of Faust binding the port itself."""
    # Faust keeps table state here (in-memory store: only its version marker); one per worker port.
    datadir = settings.cache_dir / "faust" / f"{settings.app_id}-{settings.web_port}"
    datadir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        settings.app_id,
        broker=broker_url(settings),
        broker_credentials=broker_credentials(settings),
        value_serializer="raw",  # Faust's JSON codec would crash the agent on a non-JSON value
        key_serializer="raw",
        store="memory://",
        topic_partitions=settings.partitions,
        topic_replication_factor=1,
        # /healthz, /readyz and /metrics (stream/ops/http.py) are served by Faust's web server.
        web_enabled=True,
        web_port=settings.web_port,
        web_host=settings.web_host,
        web_bind=settings.web_host,  # Faust binds to web_bind; web_host only names the canonical URL
        # which Faust would build as http://{web_host}:{web_port}: for an IPv6 host (::) not a URL,
        # and the worker ended at its start
        canonical_url=f"http://{url_host(settings.web_host)}:{settings.web_port}",
        # Faust's /router and /table pages serve table routing and table data; we have no tables.
        web_router_enabled=False,
        web_tables_enabled=False,
        broker_rebalance_timeout=settings.rebalance_timeout,
        broker_session_timeout=settings.session_timeout,
        broker_heartbeat_interval=settings.heartbeat_interval,
        broker_commit_interval=1.0,
        stream_processing_timeout=settings.stream_processing_timeout,
        consumer_auto_offset_reset="earliest",
        # A CPU batch can take seconds; the consumer must not be considered dead meanwhile.
        broker_max_poll_interval=max(300.0, settings.rebalance_timeout),
        producer_max_request_size=max_request_bytes(settings),
        datadir=str(datadir),
    )
    stall_checks_from_assignment(app)
    if listeners:
        serve_on(app, listeners)
    return app


class DeferredAck:
    """Faust's `take()` acks a batch's events as soon as the agent body returns, which with the
    pipeline is before the batch's windows are written; Faust then commits acked offsets on its
    next tick. So each message gets one more reference when taken (`hold`), and the batch is acked
    only once it is written (`release`). Offsets of a batch in flight therefore stay uncommitted
    whatever happens to the process: a crash, or a shutdown that exits without Faust's own stop
    (which would ack held batches on its way out), leaves them to be redelivered."""

    def __init__(self, stream: faust.Stream) -> None:
        self.stream = stream

    def hold(self, events: list[Any]) -> Any:
        for event in events:
            event.message.incref()

        async def release() -> None:
            for event in events:
                await self.stream.ack(event)

        return release


class Shutdown:
    """What the agent and the SIGTERM handler share, and what SIGTERM does (`run`)."""

    def __init__(self, app: faust.App, pipeline: BatchPipeline, delivery: AlertDelivery, outputs: Deliveries) -> None:
        self.requested = False
        self.app, self.pipeline, self.delivery, self.outputs = app, pipeline, delivery, outputs

    @property
    def busy(self) -> bool:
        """A batch is being classified or written, or is written but not yet acked."""
        return self.pipeline.in_flight > 0

    async def _outputs_settled(self, deadline: float) -> bool:
        """Flush the producer, within the grace period: with the broker away a flush waits for the
        producer's own timeout (20 minutes). Then the batches themselves: one given up on just
        before the flush has left the producer's queue but may not have reached batch_failed yet;
        settled() returns after it has (and the worker has exited)."""
        try:
            # shield: a flush cut short must not cancel what the producer is sending
            await asyncio.wait_for(asyncio.shield(self.app.producer.flush()), max(deadline - time.monotonic(), 0.0))
        except asyncio.TimeoutError:
            return False
        return await self.outputs.settled(deadline - time.monotonic())

    async def run(self, grace_s: float) -> None:
        """Stop taking batches, finish those in flight (the one being classified and the one being
        written: windows, alerts, outputs), flush the producer, commit, let notifications in
        progress finish, and exit, all within grace_s."""
        deadline = time.monotonic() + grace_s
        log.info("shutting down", extra={"grace_s": grace_s, "batch_in_flight": self.busy})
        self.requested = True
        while self.busy and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        finished = not self.busy and await self._outputs_settled(deadline)
        if finished:
            await self.app.consumer.commit()
        delivered = await self.delivery.stop(deadline - time.monotonic())
        left = finished and await self._leave_group(deadline)
        log.info("shutdown complete" if finished else "shutdown: grace ran out before the batch in flight and its outputs settled (it will be redelivered)",
                 extra={"committed": finished, "notifications_finished": delivered, "left_group": left})
        self.pipeline.processor.say_held()  # the dead letters and folded posts held back: no later batch says them
        logging.shutdown()  # before os._exit, which skips it: flushed, and held log counts said (stream/logs.py)
        # Exit here rather than through Faust's stop: its take() would ack a held batch on the way
        # out and the consumer would commit it unprocessed.
        os._exit(EXIT_DRAINED if finished else EXIT_GRACE_RAN_OUT)

    async def _leave_group(self, deadline: float) -> bool:
        """Leave the Kafka consumer group (stream.kafka.leave_group: LeaveGroup as the coordinator
        closes, for a first-generation member of Tansu's generation 0 too), so
        the other workers take this one's partitions with the next rebalance: without it they wait
        out the session timeout, and every rolling update or scale-down paused those partitions'
        alerts. Only after the commit. The coordinator alone is closed, not the consumer: Faust's
        fetcher would ask a stopped consumer for records and log a crash on the way out. A worker
        whose grace ran out leaves it to the session timeout, as a crash would."""
        thread = getattr(self.app.consumer, "_thread", None)  # Faust runs aiokafka on a thread of its own
        coordinator = getattr(getattr(thread, "_consumer", None), "_coordinator", None)
        if thread is None or coordinator is None:
            return False
        if not group_member(coordinator.generation, coordinator.member_id) or coordinator._group_instance_id is not None:
            return False  # mid-rebalance, not a member (or a static one, which keeps its place by design): nothing to leave
        self.app.consumer.stop_flow()  # no more records taken: nothing after the commit is processed
        try:
            return bool(await asyncio.wait_for(thread.call_thread(leave_group, coordinator), max(deadline - time.monotonic(), 1.0)))
        except Exception as exc:  # best effort: the session timeout still ends the membership
            log.warning("could not leave the consumer group; the others take over after the session timeout",
                        extra={"error": f"{type(exc).__name__}: {exc}"})
            return False


def batch_failed(exc: BaseException) -> None:
    # Input never raises here (it goes to the DLQ); this is a bug or a lost dependency. Faust would
    # ack the batch on the way out, so exit hard instead: the offsets stay uncommitted, the
    # restarted worker redelivers the batch, and windows are idempotent.
    log.error("batch failed unexpectedly; exiting without committing", exc_info=exc)
    logging.shutdown()  # os._exit skips it: library lines' held counts are said (stream/logs.py)
    os._exit(EXIT_BATCH_FAILED)


def partition_count_timeout_s(session_timeout: float) -> float:
    """How long an assignment may wait for the posts topic's count. aiokafka sends no heartbeat
    while the assignment callback runs (it stops them for the rejoin and starts them again only
    after the callback), so a wait near the session timeout (6 s on `sentinel run`'s embedded
    stack) gets the member expelled and the group rebalanced again, each time the broker is slow
    to answer or a bootstrap address is unreachable. A third leaves the rest of the callback room."""
    return min(PARTITION_COUNT_TIMEOUT_S, session_timeout / 3)


async def posts_partitions_now(settings: Settings) -> int | None:
    """The posts topic's partition count read from the broker now, None where it cannot be (the
    assignment goes on: a broker away is reported by the batches and /readyz)."""
    try:
        return await asyncio.wait_for(partition_count(settings, settings.topic_posts), partition_count_timeout_s(settings.session_timeout))
    except Exception as exc:  # noqa: BLE001 - any failure to read it leaves only the assigned numbers to go by
        log.warning("could not read the posts topic's partition count at a rebalance", extra={"topic": settings.topic_posts, "error": type(exc).__name__})
        return None


def outgrown_message(settings: Settings, count: int, counted: bool) -> str:
    """The ERROR line of refuse_outgrown_partitions (windows.partitions_mismatch, as the start-up
    check's refusal)."""
    return partitions_mismatch(settings.topic_posts, settings.partitions, count, "exiting without committing", counted=counted)


def refuse_outgrown_partitions(settings: Settings, count: int, mine: Sequence[int], *, counted: bool = True) -> None:
    """Partitions were added to the posts topic while this worker ran (docs/operations.md,
    "Scale"): judging with SENTINEL_PARTITIONS would take boundaries as final, and trim baselines,
    without the new partitions' posts (windows.partitions_outgrown). Exit before another batch, as
    batch_failed does: nothing after the last commit is acked, so the posts stay in Kafka until a
    worker started with the right count reads them, and a restart with the old count is refused
    at start-up the same way."""
    log.error(outgrown_message(settings, count, counted),
              extra={"topic": settings.topic_posts, "topic_partitions": count, "sentinel_partitions": settings.partitions, "assigned": list(mine)})
    logging.shutdown()  # os._exit skips it: library lines' held counts are said (stream/logs.py)
    os._exit(EXIT_PARTITIONS_OUTGROWN)


@dataclass
class Worker:
    app: faust.App
    shutdown: Shutdown


def build_worker(
    settings: Settings, classifier: Scorer, store: WindowStore, metrics: WorkerMetrics | None = None, model_thread: ModelThread | None = None,
    listeners: Sequence[socket.socket] = (),
) -> Worker:
    """The worker's Faust app and its shutdown. Pass the ModelThread that loaded `classifier`, so
    batches run on it, and the sockets held on SENTINEL_WEB_PORT (faust_app)."""
    metrics = metrics if metrics is not None else WorkerMetrics()
    guard_undecodable_batches()
    app = faust_app(settings, listeners)

    posts = app.topic(settings.topic_posts, value_type=bytes, key_type=bytes, partitions=settings.partitions)
    alerts = app.topic(settings.topic_alerts, value_type=bytes, key_type=bytes, partitions=settings.partitions)

    outputs = Deliveries()

    async def publish(topic: str, records: Sequence[tuple[str | None, bytes]]) -> None:
        # post-sentiment and the DLQ: a batch's records at once (stream/kafka.py, publish_records)
        # Records the producer gives up on stop the worker before their offsets can commit.
        outputs.track(await publish_records(app.producer, topic, [(key.encode() if key else None, value) for key, value in records],
                                            on_lost=batch_failed))

    async def publish_alert(record: AlertRecord) -> None:
        # Awaited until the broker has it: delivery acks the outbox entry after this, so a drained
        # outbox means every record is on the topic (`sentinel run` then reads up to its end).
        sent = await alerts.send(key=record.alert_id.encode(), value=public_record(record))
        await sent

    engine = alert_engine(settings, store)
    processor = BatchProcessor(
        classifier.classify,
        store,
        publish,
        sentiment_topic=settings.topic_sentiment,
        dlq_topic=settings.topic_dlq,
        model_base=classifier.info.base,
        model_adapter=classifier.info.adapter,
        limits=post_limits(settings),
        aliases=load_aliases(settings.aliases_file),
        alerts=engine,
        metrics=metrics,
        model_thread=model_thread,
        max_record_bytes=max_request_bytes(settings),
        # Trimming follows the partitions judging waits for (judging.frontier), as the engine counts them.
        partitions=settings.partitions,
        idle_s=engine.config.idle_s,
        lagging_idle_s=engine.config.lagging_idle_s,
        max_ahead_s=setting_duration("max_ahead", settings.max_ahead),
        new_scopes_per_hour=settings.new_scopes_per_hour,
    )
    notifier = Notifier.from_settings(settings)
    for line in cleartext_services(notifier.targets):  # alerts (and an SMTP login) readable on the way: said, not refused
        log.warning(CLEARTEXT_SERVICE, extra={"service": line})
    metrics.watch_notifier(notifier)
    worker_id = f"{socket.gethostname()}-{os.getpid()}"
    delivery = AlertDelivery(
        store,
        notifier,
        publish_alert,
        consumer=worker_id,
        chart=settings.notify_chart,
        claim_idle_s=settings.notify_claim_idle,
        metrics=metrics,
    )
    install_http(app, metrics=metrics, redis=store.redis, classifier=classifier, posts_topic=settings.topic_posts,
                 max_stall_s=settings.health_max_stall,
                 join_patience_s=start_join_patience_s(settings.session_timeout, settings.rebalance_timeout),
                 # As long as the longest-kept data it stands for, twice over, as the idle TTLs are.
                 marker_ttl_s=2 * max(setting_duration("retention", settings.retention),
                                      setting_duration("report_retention", settings.report_retention), 86400))

    @app.task
    async def deliver_alerts() -> None:
        # Notifications run here, beside the agent, never inside a batch.
        await delivery.run()

    pipeline = BatchPipeline(processor, on_failure=batch_failed)
    shutdown = Shutdown(app, pipeline, delivery, outputs)

    @app.on_partitions_assigned.connect
    async def log_assignment(_app: faust.App, assigned: set[Any], **_: Any) -> None:
        # Which worker holds which partitions after each rebalance: the first question when one
        # partition's lag grows. An empty list is a standby (more workers than partitions).
        mine = sorted(tp.partition for tp in assigned if tp.topic == settings.topic_posts)
        log.info("partitions assigned", extra={"worker": worker_id, "topic": settings.topic_posts, "partitions": mine})
        # Every member is assigned anew when partitions are added (the group leader's metadata
        # refresh starts a rebalance), so each checks here, whether it got a new partition or not.
        read = await posts_partitions_now(settings)
        if count := partitions_outgrown(settings.partitions, mine, read):
            refuse_outgrown_partitions(settings, count, mine, counted=read == count)
        processor.keep_clocks(mine)

    if settings.alert_settle_after > 0:
        @app.timer(interval=min(settings.alert_settle_after, 60.0))
        async def settle_when_silent() -> None:
            # Event time stands still while no post comes: without this an incident in its group
            # wait would be announced only with the next post.
            if shutdown.requested or pipeline.in_flight:
                return
            try:
                written = await engine.settle_if_silent(settings.alert_settle_after)
            except Exception as exc:  # Redis away: the batches' own retries report it; try again next tick
                log.warning("settling a silent stream failed; retrying at the next tick", extra={"error": repr(exc)})
                return
            if written:
                log.info("stream silent: scopes with posts judged and waiting incidents announced",
                         extra={"silent_s": settings.alert_settle_after, "written": written})

    @app.timer(interval=15.0)
    async def say_held_counts() -> None:
        # A flood's counts held back (dead letters, folded posts) are said by the next batch; a
        # stream gone quiet after it has none, and would keep them unsaid until the worker stops.
        processor.say_due()

    @app.agent(posts, name="classify-posts")
    async def classify_posts(stream: faust.Stream) -> None:
        await processor.start()
        acks = DeferredAck(stream)
        async for events in stream.take_events(settings.max_batch, within=settings.max_wait):
            if shutdown.requested:
                # Never handled, never acked: the worker exits before Faust's take() could ack
                # this batch on its way out, so whoever owns the partition next gets it again.
                await asyncio.Event().wait()
            # Each partition's end offset as the consumer knows it now (from its fetches): the
            # batch says what is left to read after it, so a partition with a backlog is not taken
            # as idle while another is read ahead of it (windows.frontier).
            ends = {tp: highwater(app, tp) for tp in {e.message.tp for e in events}}
            messages = [RawMessage(e.message.value, e.message.topic, e.message.partition, e.message.offset,
                                   undecodable_reason(e.message.headers), ends[e.message.tp]) for e in events]
            release = acks.hold(events)
            try:
                await pipeline.submit(messages, release)
            except Exception as exc:
                batch_failed(exc)

    return Worker(app, shutdown)
