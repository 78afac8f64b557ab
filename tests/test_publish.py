"""`publish_records` (stream/kafka.py) on a real broker, through the worker's own Faust producer:
every record arrives once, with its key and value, on the partition a single send of its key would
have chosen and in the order given, including when a partition's records fill several of the
producer's batches; records without a key arrive too. A record over the producer's max_request_size
is refused before any of its call is queued, and the worker fits its dead letters under that size
so it never gets there."""

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


def test_a_record_over_the_producers_max_request_size_is_refused_before_any_is_queued(kafka_server, tmp_path):
    """The producer's own limit, as `AIOKafkaProducer.send` holds it: send_batch checks none, so a
    record over it went to the broker, which Kafka refuses (message.max.bytes) and Tansu takes."""
    from aiokafka.errors import MessageSizeTooLargeError

    topic = "publish-too-large"
    settings = Settings(kafka_broker=kafka_server, partitions=1, cache_dir=tmp_path, app_id="test-publish-large",
                        kafka_max_request_bytes=65_536)
    records = [(b"a", b"small"), (b"b", b"x" * 70_000), (b"c", b"small too")]

    async def go() -> list:
        await ensure_topics(settings, [topic])
        app = faust_app(settings)
        await app.producer.start()
        try:
            try:
                await publish_records(app.producer, topic, records)
            except MessageSizeTooLargeError as exc:
                refused = str(exc)
            else:
                refused = ""
            await publish_records(app.producer, topic, [records[0], records[2]])
            await app.producer.flush()
        finally:
            await app.producer.stop()
        return [refused, await read_all(kafka_server, topic, 2, timeout_s=20)]

    refused, received = asyncio.run(go())
    assert "a record of 700" in refused and "over the producer's max_request_size (65536)" in refused, refused
    # None of the refused call's records went out: only the second call's two.
    assert [(r.key, r.value) for r in sorted(received, key=lambda r: r.offset)] == [records[0], records[2]]


def test_a_dead_letter_over_the_producers_limit_is_cut_to_fit_and_the_worker_goes_on(kafka_server, redis_server, cache_dir, tmp_path):
    """A broker or topic whose message size is under what a dead letter can grow to (escaping makes
    up to 768 KiB of the 128 KiB of the original it keeps), told to the worker as
    SENTINEL_KAFKA_MAX_REQUEST_BYTES; Tansu takes 12 MB, so the producer's own limit stands for it.
    Each dead letter reaches the DLQ with its reason, post id and offset, its original cut to fit;
    the worker does not stop, its offsets pass them, and the good posts on either side are counted
    and published."""
    import json
    import uuid

    import redis
    from aiokafka import TopicPartition

    from stream.kafka import record_bytes
    from stream.timefmt import iso
    from stream.tools.replay import consume_records
    from workers import sentinel, worker_env

    redis.Redis.from_url(redis_server).flushdb()
    limit = 65_536
    env = worker_env(f"large-{uuid.uuid4().hex[:6]}", kafka_server, redis_server, cache_dir, SENTINEL_KAFKA_MAX_REQUEST_BYTES=str(limit))
    at = iso(time.time() - 3600)

    def post(post_id: str, text: str) -> bytes:
        return json.dumps({"id": post_id, "text": text, "created_at": at, "assets": ["BTC"]}).encode()

    lines = [
        (post("p1", "BTC breaks out"), None, None),
        (post("long-1", "\x01" * 10_500), "text_too_long", "long-1"),  # 63 KB as JSON escapes, 74 KB as a dead letter
        (b"\x01" * 60_000, "invalid_json", None),  # 360 KB as a dead letter
        (post("big-1", "A" * 70_000), "too_large", None),  # decided before parsing; 64 KiB kept: over the limit with the fields
        (post("p5", "BTC dumps hard"), None, None),
    ]
    assert all(b"\n" not in raw and len(raw) for raw, _, _ in lines)
    data = tmp_path / "posts.jsonl"
    data.write_bytes(b"".join(raw + b"\n" for raw, _, _ in lines))

    summary_path, worker_log = tmp_path / "summary.json", tmp_path / "worker.log"
    r = sentinel(["run", str(data), "--summary-json", str(summary_path), "--worker-log", str(worker_log), "--timeout", "180"], env)
    log_text = worker_log.read_text(errors="replace")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:] + log_text[-3000:]
    assert "batch failed unexpectedly" not in log_text and "Traceback" not in log_text, log_text[-3000:]
    summary = json.loads(summary_path.read_text())
    assert {k: summary[k] for k in ("sent", "consumed", "dlq", "processed")} == {"sent": 5, "consumed": 5, "dlq": 3, "processed": 2}

    settings = Settings(kafka_broker=kafka_server)

    async def outputs() -> tuple[list, list, int | None]:
        dead = [rec async for rec in consume_records(settings, env["SENTINEL_TOPIC_DLQ"])]
        results = [rec async for rec in consume_records(settings, env["SENTINEL_TOPIC_SENTIMENT"])]
        consumer = AIOKafkaConsumer(bootstrap_servers=kafka_server, group_id=env["SENTINEL_APP_ID"], enable_auto_commit=False)
        await consumer.start()
        try:
            committed = await consumer.committed(TopicPartition(env["SENTINEL_TOPIC_POSTS"], 0))
        finally:
            await consumer.stop()
        return dead, results, committed

    dead, results, committed = asyncio.run(outputs())
    assert committed == len(lines)  # the offsets passed the dead letters
    assert sorted(json.loads(rec["value"])["id"] for rec in results) == ["p1", "p5"]
    letters = sorted((json.loads(rec["value"]) for rec in dead), key=lambda d: d["source_offset"])
    assert [(d["source_offset"], d["reason"], d["post_id"]) for d in letters] == [
        (offset, reason, post_id) for offset, (_, reason, post_id) in enumerate(lines) if reason]
    for rec, d in zip(sorted(dead, key=lambda rec: json.loads(rec["value"])["source_offset"]), letters):
        raw = lines[d["source_offset"]][0]
        assert record_bytes(rec["key"].encode() if rec["key"] else None, rec["value"].encode()) <= limit
        assert d["value_truncated"] and d["value_bytes"] == len(raw) and raw.startswith(d["value"].encode()), d["message"]
        # Cut to fit, and no more: a few more bytes kept would not have fitted.
        assert limit - 512 < record_bytes(rec["key"].encode() if rec["key"] else None, rec["value"].encode()), d["message"]
    assert log_text.count("dead letter cut to fit the producer's max request size") == 3, log_text[-3000:]
