"""`publish_records` (stream/kafka.py) on a real broker, through the worker's own Faust producer:
every record arrives once, with its key and value, on the partition a single send of its key would
have chosen and in the order given, including when a partition's records fill several of the
producer's batches; records without a key arrive too."""

from __future__ import annotations

import asyncio
import time

from aiokafka import AIOKafkaConsumer
from aiokafka.partitioner import DefaultPartitioner

from stream.kafka import Deliveries, ensure_topics, publish_records
from stream.settings import Settings
from stream.worker import faust_app

PARTITIONS = 4


async def read_all(broker: str, topic: str, count: int, timeout_s: float = 60) -> list:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=broker, auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    records: list = []
    try:
        deadline = time.monotonic() + timeout_s
        while len(records) < count and time.monotonic() < deadline:
            for batch in (await consumer.getmany(timeout_ms=500)).values():
                records.extend(batch)
    finally:
        await consumer.stop()
    return records


def test_records_arrive_once_on_their_keys_partitions_in_order(kafka_server, tmp_path):
    topic = "publish-records"
    settings = Settings(kafka_broker=kafka_server, partitions=PARTITIONS, cache_dir=tmp_path, app_id="test-publish")
    # 1 KiB values: about 60 a partition, so each partition's records fill several 16 KiB batches.
    keyed = [(f"post-{i}".encode(), f"{i:04d}".encode() + b"x" * 1020) for i in range(240)]
    keyless = [(None, f"no-key-{i}".encode()) for i in range(8)]

    async def go() -> list:
        await ensure_topics(settings, [topic])
        app = faust_app(settings)
        await app.producer.start()
        try:
            await publish_records(app.producer, topic, keyed[:120] + keyless + keyed[120:])
            await app.producer.flush()
        finally:
            await app.producer.stop()
        return await read_all(kafka_server, topic, len(keyed) + len(keyless))

    received = asyncio.run(go())
    assert sorted((r.key or b"", r.value) for r in received) == sorted((k or b"", v) for k, v in keyed + keyless)
    choose = DefaultPartitioner()
    everywhere = list(range(PARTITIONS))
    assert all(r.partition == choose(r.key, everywhere, everywhere) for r in received if r.key is not None)
    assert len({r.partition for r in received}) == PARTITIONS
    for partition in everywhere:
        order = [r.value[:4] for r in sorted(received, key=lambda r: r.offset) if r.partition == partition and r.key is not None]
        assert order == sorted(order), f"partition {partition} out of order"


def test_records_the_producer_gives_up_on_reach_on_lost(tmp_path):
    """The broker dies with records queued; once the producer's request timeout passes they come
    to `on_lost`, before a flush waiting on them returns (the worker exits there, so a commit
    behind that flush never runs). `Deliveries.settled`, which shutdown awaits before its commit,
    says False while they are still in doubt and returns only after their `on_lost` has run."""
    from stream.tools.services import start_tansu

    broker_proc, broker = start_tansu(tmp_path)
    topic = "publish-lost"
    settings = Settings(kafka_broker=broker, partitions=1, cache_dir=tmp_path, app_id="test-publish-lost")
    lost: list[Exception] = []
    flushed_first: list[bool] = []  # whether a flush waiting on the lost records had returned first
    settled_first: list[bool] = []  # whether Deliveries.settled had returned first
    deliveries = Deliveries()

    async def go() -> None:
        await ensure_topics(settings, [topic])
        app = faust_app(settings)
        app.conf.producer_request_timeout = 3.0  # Faust's 20 minutes, shortened
        await app.producer.start()
        deliveries.track(await publish_records(app.producer, topic, [(b"a", b"delivered")], on_lost=lost.append))
        assert await deliveries.settled(30)
        await app.producer.flush()
        assert not lost
        broker_proc.stop()
        flush: asyncio.Task | None = None
        settle: asyncio.Task | None = None

        def on_lost(exc: Exception) -> None:
            lost.append(exc)
            flushed_first.append(flush is not None and flush.done())
            settled_first.append(settle is not None and settle.done())

        deliveries.track(await publish_records(app.producer, topic, [(b"b", b"1"), (b"c", b"2")], on_lost=on_lost))
        assert not await deliveries.settled(0.5)  # still being retried: shutdown must not commit
        settle = asyncio.create_task(deliveries.settled(60))
        flush = asyncio.create_task(app.producer.flush())  # as Faust's commit does before committing
        await asyncio.wait_for(flush, 60)
        assert await settle
        deadline = time.monotonic() + 10
        while not lost and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await asyncio.wait_for(app.producer.stop(), 30)

    try:
        asyncio.run(go())
    finally:
        broker_proc.stop()
    assert len(lost) == 1 and f"2 records to {topic}[0] not delivered" in str(lost[0]), lost
    assert flushed_first == [False]  # so a commit behind that flush never ran
    assert settled_first == [False]  # nor one behind shutdown's settled()
