"""Posts from a third-party producer (librdkafka, through the confluent-kafka wheel), into a real
broker, read by a real worker process: every codec Kafka producers use, idempotence on, headers, null
keys and tombstones; then a corrupt record batch, which must not stop the partition.

The expected counts come from what this test produced, not from the worker's code.
"""

from __future__ import annotations

import asyncio
import json
import struct
from collections import Counter

import pytest
import redis

import workers
from stream.keys import STATS_KEY
from workers import Worker, wait_until

confluent_kafka = pytest.importorskip("confluent_kafka", reason="confluent-kafka (librdkafka) comes with the dev extra")
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402 - after the skip

CODECS = ("none", "gzip", "snappy", "lz4", "zstd")
PER_CODEC = 10
T0 = 1_767_225_600  # 2026-01-01T00:00:00Z


def post(i: int, codec: str) -> bytes:
    return json.dumps({"id": f"{codec}-{i}", "text": f"$BTC going up, post {i}", "created_at": T0 + i * 60}).encode()


def produce_with_librdkafka(broker: str, topic: str, codec: str, first: int, count: int) -> None:
    """`count` posts, a tombstone and a non-JSON value, in `codec` batches, idempotent."""
    producer = confluent_kafka.Producer({
        "bootstrap.servers": broker, "compression.type": codec, "enable.idempotence": True,
        "linger.ms": 20, "acks": "all",
    })
    failures: list[str] = []

    def delivered(err, _msg) -> None:
        if err is not None:
            failures.append(str(err))

    for i in range(first, first + count):
        key = None if i % 2 else f"user-{i}".encode()  # half with a null key
        producer.produce(topic, value=post(i, codec), key=key, headers=[("trace-id", f"t{i}".encode()), ("empty", None)],
                         on_delivery=delivered)
    producer.produce(topic, value=None, key=b"deleted-post", on_delivery=delivered)  # a tombstone
    producer.produce(topic, value=b"not json at all", on_delivery=delivered)
    assert producer.flush(30) == 0, "librdkafka did not deliver everything within 30 s"
    assert not failures, failures


def corrupt_batch(values: list[bytes]) -> bytes:
    """A v2 record batch whose last byte is flipped after its CRC was computed."""
    from aiokafka.record.default_records import DefaultRecordBatchBuilder

    builder = DefaultRecordBatchBuilder(magic=2, compression_type=0, is_transactional=False, producer_id=-1,
                                        producer_epoch=-1, base_sequence=-1, batch_size=1 << 20)
    for i, value in enumerate(values):
        builder.append(i, timestamp=None, key=None, value=value, headers=[])
    data = bytearray(builder.build())
    data[-1] ^= 0xFF
    assert struct.unpack_from(">b", data, 16)[0] == 2  # magic: the layout this test assumes
    return bytes(data)


async def produce_raw(broker: str, topic: str, batch: bytes) -> None:
    """Send bytes as they are: a client's producer would never build a corrupt batch."""
    from aiokafka import TopicPartition
    from aiokafka.client import AIOKafkaClient
    from aiokafka.protocol.produce import ProduceRequest

    client = AIOKafkaClient(bootstrap_servers=broker)
    await client.bootstrap()
    try:
        client.add_topic(topic)
        await client.force_metadata_update()
        node = client.cluster.leader_for_partition(TopicPartition(topic, 0))
        response = await client.send(node, ProduceRequest(transactional_id=None, required_acks=-1, timeout=10_000,
                                                          topics=[(topic, [(0, batch)])]))
        error_code = response.topics[0][1][0][1]
        assert error_code == 0, f"the broker refused the raw batch with error {error_code}"
    finally:
        await client.close()


async def read_topic(broker: str, topic: str, count: int, timeout: float = 60) -> list[dict]:
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(topic, bootstrap_servers=broker, auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    out: list[dict] = []
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(out) < count and loop.time() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                out.extend(json.loads(r.value) for r in records)
    finally:
        await consumer.stop()
    return out


def counters(r: redis.Redis) -> dict[str, int]:
    raw = r.hgetall(STATS_KEY)
    return {name: int(raw.get(name, 0)) for name in ("consumed", "valid", "dlq", "processed")}


@pytest.fixture()
def worker_setup(kafka_server, redis_server, cache_dir, tmp_path):
    redis.Redis.from_url(redis_server).flushdb()
    env = workers.worker_env("producers", kafka_server, redis_server, cache_dir, SENTINEL_WEB_HOST="127.0.0.1",
                              SENTINEL_LOG_JSON="1", PYTHONUNBUFFERED="1")
    admin = AdminClient({"bootstrap.servers": kafka_server})
    for future in admin.create_topics([NewTopic(env["SENTINEL_TOPIC_POSTS"], 1, 1)]).values():
        future.result(30)
    started: list[Worker] = []
    yield env, started, tmp_path
    for w in started:
        w.close()


def test_every_codec_and_shape_from_librdkafka_then_a_corrupt_batch(worker_setup, kafka_server, redis_server):
    env, started, tmp_path = worker_setup
    topic = env["SENTINEL_TOPIC_POSTS"]
    for n, codec in enumerate(CODECS):
        produce_with_librdkafka(kafka_server, topic, codec, n * PER_CODEC, PER_CODEC)
    asyncio.run(produce_raw(kafka_server, topic, corrupt_batch([post(900, "raw"), post(901, "raw")])))
    produce_with_librdkafka(kafka_server, topic, "zstd", 1000, PER_CODEC)  # after the corrupt batch

    worker = Worker(env, tmp_path / "worker.log")
    started.append(worker)
    r = redis.Redis.from_url(redis_server, decode_responses=True)
    valid = (len(CODECS) + 1) * PER_CODEC
    dead = 2 * (len(CODECS) + 1) + 1  # a tombstone and a non-JSON value per producer run, one corrupt batch
    wait_until(lambda: counters(r).get("consumed", 0) >= valid + dead, 120, "every message consumed", [worker], poll=0.2)

    stats = counters(r)
    assert stats["valid"] == valid and stats["processed"] == valid
    assert stats["dlq"] == dead
    letters = asyncio.run(read_topic(kafka_server, env["SENTINEL_TOPIC_DLQ"], dead))
    assert Counter(d["reason"] for d in letters) == {"invalid_json": dead - 1, "undecodable": 1}
    tombstones = [d for d in letters if d["value"] is None and d["reason"] == "invalid_json"]
    assert len(tombstones) == len(CODECS) + 1
    (bad,) = [d for d in letters if d["reason"] == "undecodable"]
    assert "could not be decoded" in bad["message"] and bad["source_partition"] == 0
    # The log line names partition and offset, and the worker is still consuming.
    log = worker.log_path.read_text()
    assert "undecodable record batch" in log and f'"offset": {bad["source_offset"]}' in log
    assert worker.alive()
    sentiment = asyncio.run(read_topic(kafka_server, env["SENTINEL_TOPIC_SENTIMENT"], valid))
    ids = {s["id"] for s in sentiment}
    assert ids == {f"{c}-{i}" for n, c in enumerate(CODECS) for i in range(n * PER_CODEC, (n + 1) * PER_CODEC)} | {
        f"zstd-{i}" for i in range(1000, 1000 + PER_CODEC)}
