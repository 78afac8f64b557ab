"""Replay JSONL into Kafka and record a topic to JSONL (aiokafka).

A replay file holds one post object per line, or the records `record` writes
({topic, partition, offset, timestamp, key, value, value_encoding}). A line that is neither is sent
as-is, so it reaches the DLQ like any bad message.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Iterator

from stream.contracts import encode_value, parse_created_at
from stream.kafka import kafka_client_kwargs
from stream.settings import Settings

# Replay sends lines as they are, hostile ones included, so that the worker's own byte cap and the
# DLQ see them: the client must not refuse a line the broker would take. The broker's limit
# (message.max.bytes; 1 MiB by default on Kafka) is the one that counts; this only stops a runaway.
REPLAY_MAX_REQUEST_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class ReplayItem:
    key: bytes | None
    value: bytes
    event_time: float | None  # for --speed pacing; None when the line has none


def read_replay_file(path: Path) -> Iterator[ReplayItem]:
    with path.open("rb") as handle:
        for raw in handle:
            line = raw.rstrip(b"\r\n")
            if not line.strip():
                continue
            yield replay_item(line)


def replay_item(line: bytes) -> ReplayItem:
    try:
        obj = json.loads(line)
    except (ValueError, RecursionError):  # deep nesting overflows json's recursion: still a line to send
        return ReplayItem(None, line, None)
    if isinstance(obj, dict) and {"topic", "partition", "offset", "value"} <= set(obj):
        value = obj["value"]
        data = base64.b64decode(value) if obj.get("value_encoding") == "base64" else (value or "").encode()
        key = obj.get("key")
        ts = obj.get("timestamp")
        return ReplayItem(key.encode() if isinstance(key, str) else None, data, ts / 1000 if isinstance(ts, (int, float)) else None)
    if isinstance(obj, dict):
        post_id = obj.get("id")
        try:
            event_time: float | None = parse_created_at(obj.get("created_at"))
        except ValueError:
            event_time = None
        return ReplayItem(message_key(post_id), line, event_time)
    return ReplayItem(None, line, None)


def message_key(post_id: Any) -> bytes | None:
    """The post id as the Kafka key; none for an id that is not a usable string (an unpaired
    surrogate escape cannot be encoded): the line still goes out, and the worker dead-letters it."""
    if not isinstance(post_id, str):
        return None
    try:
        return post_id.encode("utf-8")
    except UnicodeEncodeError:
        return None


async def replay(settings: Settings, path: Path, topic: str, speed: float | None, progress: Callable[[int], None] | None = None) -> int:
    """Produce every line of path into topic; speed None is as fast as possible. Returns the count."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(
        **kafka_client_kwargs(settings),
        linger_ms=5,
        max_request_size=max(REPLAY_MAX_REQUEST_BYTES, settings.max_message_bytes * 2),
        enable_idempotence=False,
        acks="all",
    )
    await producer.start()
    sent = 0
    first_event: float | None = None
    started = time.monotonic()
    try:
        pending = []
        for item in read_replay_file(path):
            if speed and item.event_time is not None:
                first_event = item.event_time if first_event is None else first_event
                due = started + (item.event_time - first_event) / speed
                delay = due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            pending.append(await producer.send(topic, value=item.value, key=item.key))
            sent += 1
            if len(pending) >= 1000:
                await asyncio.gather(*pending)
                pending.clear()
            if progress and sent % 100 == 0:
                progress(sent)
        await asyncio.gather(*pending)
        await producer.flush()
    finally:
        await producer.stop()
    if progress:
        progress(sent)
    return sent


async def consume_records(settings: Settings, topic: str, max_idle: float = 0.0) -> AsyncIterator[dict[str, Any]]:
    """Every record of topic from the beginning up to its end when reading starts (so a slow
    broker cannot cut the read short), then, with max_idle > 0, whatever else arrives until no new
    record comes for max_idle seconds.

    The end is the larger of the end offset ListOffsets reports and the high watermark of the
    partition's first fetch. Tansu 0.6 on S3 storage reports, as a partition's end, the base offset
    + 1 of the oldest record batch of the last second that had writes, until a write lands in a
    later second: a read that stopped there missed the newest records (hundreds after a busy
    second). Its fetch responses carry the right high watermark."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(**kafka_client_kwargs(settings), group_id=None, auto_offset_reset="earliest", enable_auto_commit=False)
    try:
        await consumer.start()
        await consumer.topics()  # metadata, so the topic's partitions are known
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        if not partitions:
            return
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        fetched: set[Any] = set()
        ends = await consumer.end_offsets(partitions)
        while [tp for tp in partitions if await consumer.position(tp) < ends[tp]]:
            for records in (await consumer.getmany(timeout_ms=1000, max_records=1000)).values():
                for rec in records:
                    yield _as_record(rec)
            for tp in partitions:
                if tp not in fetched and consumer.highwater(tp) is not None:  # this partition's first fetch
                    fetched.add(tp)
                    ends[tp] = max(ends[tp], consumer.highwater(tp) or 0)
        while max_idle > 0:
            batch = await consumer.getmany(timeout_ms=int(max_idle * 1000), max_records=1000)
            if not batch:
                return
            for records in batch.values():
                for rec in records:
                    yield _as_record(rec)
    finally:
        await consumer.stop()


def _as_record(rec: Any) -> dict[str, Any]:
    return {
        "topic": rec.topic,
        "partition": rec.partition,
        "offset": rec.offset,
        "timestamp": rec.timestamp,
        "key": rec.key.decode("utf-8", "replace") if rec.key is not None else None,
        **encode_value(rec.value),
    }


async def record(settings: Settings, topic: str, out: Path, max_idle: float) -> int:
    """Write the topic's records to `out` (replaced only once the read is done)."""
    from stream.tools.files import replaced_when_done

    count = 0
    with replaced_when_done(out) as handle:
        async for rec in consume_records(settings, topic, max_idle):
            handle.write(json.dumps(rec, ensure_ascii=False) + "\n")
            count += 1
    return count
