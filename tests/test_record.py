"""`consume_records` (sentinel record, and sentinel run's alert read) reads up to the end offsets taken
when it starts: every record, on every partition, with no idle wait deciding when it is done."""

from __future__ import annotations

import asyncio
import uuid

from stream.kafka import ensure_topics
from stream.settings import Settings
from stream.tools.replay import consume_records


async def produce(settings: Settings, topic: str, count: int) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_broker)
    await producer.start()
    try:
        for i in range(count):
            await producer.send(topic, f"m{i}".encode(), partition=i % settings.partitions)
        await producer.flush()
    finally:
        await producer.stop()


def test_reads_every_partition_to_its_end_offset_and_stops_there(kafka_server):
    settings = Settings(kafka_broker=kafka_server, partitions=4)
    topic = f"record-{uuid.uuid4().hex[:6]}"

    async def scenario() -> tuple[list[dict], list[dict]]:
        await ensure_topics(settings, [topic])
        empty = [r async for r in consume_records(settings, topic)]
        await produce(settings, topic, 203)
        return empty, [r async for r in consume_records(settings, topic)]

    empty, records = asyncio.run(asyncio.wait_for(scenario(), 120))
    assert empty == []
    assert sorted(r["value"] for r in records) == sorted(f"m{i}" for i in range(203))
    assert {r["partition"] for r in records} == {0, 1, 2, 3}
