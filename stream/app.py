"""The Faust app: one agent consumes forum-posts as raw bytes in micro-batches and hands each batch
to the BatchProcessor. Kafka (through Faust) is the only thing wired here.

Scaling is Kafka's: run more workers with the same `app_id` (the consumer group) and the partitions
are shared between them; replicas beyond the partition count sit idle.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import socket
import ssl
from typing import Any

import faust

from sentinel.settings import Settings
from stream.alerting import AlertDelivery, AlertEngine, public_record
from stream.assets import load_aliases
from stream.contracts import Limits
from stream.evaluation import config_from_settings
from stream.http import install as install_http
from stream.kafka import guard_undecodable_batches, undecodable_reason
from stream.metrics import WorkerMetrics
from stream.model_thread import ModelThread
from stream.notify import Notifier
from stream.processor import BatchProcessor, Pipeline, RawMessage
from stream.store import WindowStore

log = logging.getLogger(__name__)


def broker_url(settings: Settings) -> str:
    if not settings.kafka_broker:
        raise ValueError("no Kafka broker configured (KAFKA_BROKER)")
    return ";".join(f"kafka://{host.strip()}" for host in settings.kafka_broker.split(","))


def broker_credentials(settings: Settings) -> Any:
    """Faust credentials for SSL / SASL from settings; None for PLAINTEXT."""
    protocol = settings.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return None
    context = None
    if protocol in ("SSL", "SASL_SSL"):
        context = ssl.create_default_context(cafile=str(settings.kafka_ssl_cafile) if settings.kafka_ssl_cafile else None)
    if protocol.startswith("SASL"):
        password = settings.kafka_sasl_password.get_secret_value() if settings.kafka_sasl_password else ""
        return faust.SASLCredentials(
            username=settings.kafka_sasl_username or "",
            password=password,
            mechanism=settings.kafka_sasl_mechanism,
            ssl_context=context,
        )
    return faust.SSLCredentials(context)


def create_app(
    settings: Settings, classifier: Any, store: WindowStore, metrics: WorkerMetrics | None = None, model_thread: ModelThread | None = None,
) -> faust.App:
    """The worker's Faust app. Pass the ModelThread that loaded `classifier`, so batches run on it."""
    metrics = metrics if metrics is not None else WorkerMetrics()
    guard_undecodable_batches()
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
        # /healthz, /readyz and /metrics (stream/http.py) are served by Faust's web server.
        web_enabled=True,
        web_port=settings.web_port,
        web_host=settings.web_host,
        web_bind=settings.web_host,  # Faust binds to web_bind; web_host only names the canonical URL
        # Faust's /router and /table pages serve table routing and table data; we have no tables.
        web_router_enabled=False,
        web_tables_enabled=False,
        broker_rebalance_timeout=settings.rebalance_timeout,
        broker_session_timeout=settings.session_timeout,
        broker_heartbeat_interval=settings.heartbeat_interval,
        broker_commit_interval=1.0,
        consumer_auto_offset_reset="earliest",
        # A CPU batch can take seconds; the consumer must not be considered dead meanwhile.
        broker_max_poll_interval=max(300.0, settings.rebalance_timeout),
        producer_max_request_size=max(1_048_576, settings.max_message_bytes * 2),
        datadir=str(datadir),
    )
    posts = app.topic(settings.topic_posts, value_type=bytes, key_type=bytes, partitions=settings.partitions)
    outputs = {
        name: app.topic(name, value_type=bytes, key_type=bytes, partitions=settings.partitions)
        for name in (settings.topic_sentiment, settings.topic_dlq, settings.topic_alerts)
    }

    async def publish(topic: str, key: str | None, value: bytes) -> None:
        await outputs[topic].send(key=key.encode() if key else None, value=value)

    processor = BatchProcessor(
        classifier.classify,
        store,
        publish,
        sentiment_topic=settings.topic_sentiment,
        dlq_topic=settings.topic_dlq,
        model_base=classifier.info.base,
        model_adapter=classifier.info.adapter,
        limits=Limits(max_message_bytes=settings.max_message_bytes, max_text_chars=settings.max_text_chars),
        aliases=load_aliases(settings.aliases_file),
        alerts=AlertEngine(store, config_from_settings(settings), partitions=settings.partitions, samples=settings.alert_samples),
        metrics=metrics,
        model_thread=model_thread,
    )
    notifier = Notifier.from_settings(settings)
    metrics.watch_notifier(notifier)
    delivery = AlertDelivery(
        store,
        notifier,
        lambda record: publish(settings.topic_alerts, record.alert_id, public_record(record)),
        consumer=f"{socket.gethostname()}-{os.getpid()}",
        chart=settings.notify_chart,
        metrics=metrics,
    )
    install_http(app, metrics=metrics, redis=store.redis, classifier=classifier, posts_topic=settings.topic_posts,
                 max_stall_s=settings.health_max_stall)

    @app.task
    async def deliver_alerts() -> None:
        # Notifications run here, beside the agent, never inside a batch.
        await delivery.run()
    def batch_failed(exc: BaseException) -> None:
        # Input never raises here (it goes to the DLQ); this is a bug or a lost dependency. Faust
        # would ack the batch on the way out, so exit hard instead: the offsets stay uncommitted,
        # the restarted worker redelivers the batch, and windows are idempotent.
        log.error("batch failed unexpectedly; exiting without committing", exc_info=exc)
        os._exit(70)

    pipeline = Pipeline(processor, on_failure=batch_failed)
    shutdown = Shutdown(pipeline)

    @app.agent(posts, name="classify-posts")
    async def classify_posts(stream: faust.Stream) -> None:
        await processor.start()
        async for events in stream.take_events(settings.max_batch, within=settings.max_wait):
            if shutdown.requested:
                # Never handled, never acked: the worker exits before Faust's take() could ack
                # this batch on its way out, so whoever owns the partition next gets it again.
                await asyncio.Event().wait()
            messages = [RawMessage(e.message.value, e.message.topic, e.message.partition, e.message.offset,
                                   undecodable_reason(e.message.headers)) for e in events]
            # take() acks a batch's events as soon as this body returns, which with the pipeline is
            # before its windows are written. One more reference per message keeps them unacked
            # (so uncommitted) until `done` acks them after the commit.
            for event in events:
                event.message.incref()

            async def done(events: list = events) -> None:
                for event in events:
                    await stream.ack(event)

            try:
                await pipeline.submit(messages, done)
            except Exception as exc:
                batch_failed(exc)

    async def graceful_exit(grace_s: float) -> None:
        """SIGTERM: stop taking batches, finish those in flight (the one being classified and the
        one being written: windows, alerts, outputs), flush the producer, commit, let notifications
        in progress finish, and exit, all within grace_s."""
        deadline = time.monotonic() + grace_s
        log.info("shutting down", extra={"grace_s": grace_s, "batch_in_flight": shutdown.busy})
        shutdown.requested = True
        while shutdown.busy and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        finished = not shutdown.busy
        if finished:
            await app.producer.flush()
            await app.consumer.commit()
        delivered = await delivery.stop(deadline - time.monotonic())
        log.info("shutdown complete" if finished else "shutdown: grace ran out with a batch in flight (it will be redelivered)",
                 extra={"committed": finished, "notifications_finished": delivered})
        logging.shutdown()
        # Exit here rather than through Faust's stop: its take() would ack a held batch on the way
        # out and the consumer would commit it unprocessed. The group notices the departure after
        # the session timeout.
        os._exit(0 if finished else 75)

    app.graceful_exit = graceful_exit  # type: ignore[attr-defined]  # called by the CLI's SIGTERM handler
    return app


class Shutdown:
    """What the agent and the SIGTERM handler share."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.requested = False
        self.pipeline = pipeline

    @property
    def busy(self) -> bool:
        """A batch is being classified or written, or is written but not yet acked."""
        return self.pipeline.in_flight > 0
