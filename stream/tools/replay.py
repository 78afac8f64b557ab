"""Replay JSONL into Kafka and record a topic to JSONL (aiokafka).

A replay file holds one post object per line, or the records `record` writes
({topic, partition, offset, timestamp, key, value, value_encoding}). A line is taken for a record
when it has `topic`, `partition`, `offset` and `value` and no `text` or `id` (a post that merely
carries fields of those names is sent as the post it is). A line that is neither, and a record line
that cannot be decoded (a value that is not text, bad base64, a key or value with an unpaired
surrogate escape), is sent as-is, so it reaches the DLQ like any bad message. A recorded tombstone
(`"value": null` without an encoding) is replayed as a tombstone.

With --speed, the gaps between event times are paced; a time the post contract rejects (before
2009-01-01, beyond SENTINEL_MAX_FUTURE ahead of the wall clock, not finite) is not a pace: that
line goes out at once and the lines after it keep their own times. A line the broker refuses as
too large is skipped with a warning naming FILE:LINE and its size, and counted as not sent; the
rest of the file still goes out.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import difflib
import json
import math
import sys
import time
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Iterable, Iterator

from stream.contracts import Limits, encode_value, parse_created_at
from stream.kafka import every_topic, kafka_client_kwargs
from stream.settings import Settings

# Replay sends lines as they are, hostile ones included, so that the worker's own byte cap and the
# DLQ see them: the client must not refuse a line the broker would take. The broker's limit
# (message.max.bytes; 1 MiB by default on Kafka) is the one that counts; this only stops a runaway.
REPLAY_MAX_REQUEST_BYTES = 64 * 1024 * 1024
RECORD_FIELDS = frozenset({"topic", "partition", "offset", "value"})
POST_FIELDS = frozenset({"text", "id"})


@dataclass(frozen=True)
class ReplayItem:
    key: bytes | None
    value: bytes | None  # None: a tombstone (a recorded null value)
    event_time: float | None  # for --speed pacing; None when the line has none
    line: int = 0  # the line's number in its file (1-based)


@dataclass
class ReplayResult:
    """What a replay sent. `placed` maps where each sent line landed, per partition: parallel arrays
    of offsets and line numbers (16 bytes a line, so a large file stays cheap)."""

    sent: int = 0
    not_sent: list[tuple[int, str]] = field(default_factory=list)  # (line, why)
    placed: dict[int, tuple[array, array]] = field(default_factory=dict)

    def place(self, partition: int, offset: int, line: int) -> None:
        offsets, lines = self.placed.setdefault(partition, (array("q"), array("q")))
        offsets.append(offset)
        lines.append(line)

    def lines_at(self, wanted: Iterable[tuple[int, int]]) -> dict[tuple[int, int], int]:
        """(partition, offset) -> the line sent there, for the wanted places this replay sent."""
        by_partition: dict[int, set[int]] = {}
        for partition, offset in wanted:
            by_partition.setdefault(partition, set()).add(offset)
        found = {}
        for partition, offsets_wanted in by_partition.items():
            offsets, lines = self.placed.get(partition, (array("q"), array("q")))
            for offset, line in zip(offsets, lines):
                if offset in offsets_wanted:
                    found[(partition, offset)] = line
        return found


def read_replay_file(path: Path) -> Iterator[ReplayItem]:
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            line = raw.rstrip(b"\r\n")
            if not line.strip():
                continue
            item = replay_item(line)
            yield ReplayItem(item.key, item.value, item.event_time, number)


def is_record(obj: Any) -> bool:
    """A line `record` wrote: its fields, and none of a post's."""
    return isinstance(obj, dict) and RECORD_FIELDS <= obj.keys() and not (POST_FIELDS & obj.keys())


def record_item(obj: dict[str, Any]) -> ReplayItem:
    """The message a recorded record holds. Raises ValueError for one that cannot be decoded."""
    value, encoding = obj["value"], obj.get("value_encoding")
    if encoding == "base64":
        if not isinstance(value, str):
            raise ValueError("a base64 value that is not a string")
        try:
            data: bytes | None = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ValueError(f"the value is not base64 ({exc})") from None
    elif encoding in (None, "utf-8"):
        if value is None and encoding is None:
            data = None  # a tombstone
        elif isinstance(value, str):
            try:
                data = value.encode("utf-8")
            except UnicodeEncodeError:
                raise ValueError("the value holds an unpaired surrogate") from None
        else:
            raise ValueError(f"a value that is not text ({type(value).__name__})")
    else:
        raise ValueError(f"unknown value_encoding {encoding!r}")
    key = obj.get("key")
    if key is not None and not isinstance(key, str):
        raise ValueError("a key that is not text")
    try:
        key_bytes = key.encode("utf-8") if key is not None else None
    except UnicodeEncodeError:
        raise ValueError("the key holds an unpaired surrogate") from None
    ts = obj.get("timestamp")
    event_time = ts / 1000 if isinstance(ts, (int, float)) and not isinstance(ts, bool) else None
    return ReplayItem(key_bytes, data, event_time)


def replay_item(line: bytes) -> ReplayItem:
    try:
        obj = json.loads(line)
    except (ValueError, RecursionError):  # deep nesting overflows json's recursion: still a line to send
        return ReplayItem(None, line, None)
    if is_record(obj):
        try:
            return record_item(obj)
        except (ValueError, OverflowError):  # a record line that cannot be used: sent as-is, for the DLQ
            return ReplayItem(None, line, None)
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


def pace_time(event_time: float | None, now: float, max_future_s: float = Limits.max_future_s) -> float | None:
    """The event time to pace by, or None for one the post contract rejects (before 2009-01-01,
    more than max_future_s after now) or that is not finite: one bad time must not hold the replay."""
    if event_time is None or not math.isfinite(event_time):
        return None
    if not Limits.min_created_at <= event_time <= now + max_future_s:
        return None
    return event_time


def max_future_s(settings: Settings) -> float:
    from stream.timefmt import parse_duration

    try:
        return float(parse_duration(settings.max_future))
    except (ValueError, TypeError):
        return Limits.max_future_s


def warn_stderr(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr, flush=True)


async def replay(settings: Settings, path: Path, topic: str, speed: float | None, progress: Callable[[int], None] | None = None,
                 warn: Callable[[str], None] = warn_stderr) -> int:
    """Produce every line of path into topic; speed None is as fast as possible. Returns the count sent."""
    return (await replay_lines(settings, path, topic, speed, progress, warn)).sent


async def replay_lines(settings: Settings, path: Path, topic: str, speed: float | None, progress: Callable[[int], None] | None = None,
                       warn: Callable[[str], None] = warn_stderr) -> ReplayResult:
    """As replay, and where each line landed and which were not sent."""
    from aiokafka import AIOKafkaProducer
    from aiokafka.errors import MessageSizeTooLargeError

    producer = AIOKafkaProducer(
        **kafka_client_kwargs(settings),
        linger_ms=5,
        max_request_size=max(REPLAY_MAX_REQUEST_BYTES, settings.max_message_bytes * 2),
        enable_idempotence=False,
        acks="all",
    )
    await producer.start()
    result = ReplayResult()
    future_s = max_future_s(settings)
    first_event: float | None = None
    started = time.monotonic()

    def too_large(item: ReplayItem, exc: Exception) -> None:
        size = len(item.value or b"")
        why = f"{size} bytes, refused as too large ({type(exc).__name__})"
        result.not_sent.append((item.line, why))
        warn(f"{path}:{item.line}: not sent: {why}")

    async def settle(pending: list[tuple[ReplayItem, Any]]) -> None:
        outcomes = await asyncio.gather(*(fut for _, fut in pending), return_exceptions=True)
        for (item, _), outcome in zip(pending, outcomes):
            if isinstance(outcome, MessageSizeTooLargeError):
                too_large(item, outcome)
            elif isinstance(outcome, BaseException):
                raise outcome
            else:
                result.sent += 1
                result.place(outcome.partition, outcome.offset, item.line)
        pending.clear()

    try:
        pending: list[tuple[ReplayItem, Any]] = []
        queued = 0
        for item in read_replay_file(path):
            event_time = pace_time(item.event_time, time.time(), future_s) if speed else None
            if event_time is not None:
                first_event = event_time if first_event is None else first_event
                due = started + (event_time - first_event) / speed  # type: ignore[operator]
                delay = due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            try:
                pending.append((item, await producer.send(topic, value=item.value, key=item.key)))
            except MessageSizeTooLargeError as exc:  # over the client's own cap
                too_large(item, exc)
                continue
            queued += 1
            if len(pending) >= 1000:
                await settle(pending)
            if progress and queued % 100 == 0:
                progress(queued)
        await settle(pending)
        await producer.flush()
    finally:
        await producer.stop()
    if progress:
        progress(queued)
    return result


class UnknownTopic(LookupError):
    """The topic to read is not on the broker (`sentinel record --topic` with a typo)."""

    def __init__(self, topic: str, known: set[str]):
        # The names nearest the one asked for first: on a broker of hundreds, the one meant is shown.
        self.topic = topic
        self.known = sorted((t for t in known if not t.startswith("__")), key=lambda t: (-difflib.SequenceMatcher(None, topic, t).ratio(), t))
        shown = ", ".join(self.known[:10]) + (f" and {len(self.known) - 10} more" if len(self.known) > 10 else "")
        super().__init__(f"topic {topic!r} does not exist on the broker ({'its topics: ' + shown if shown else 'it has no topics'})")


async def consume_records(settings: Settings, topic: str, max_idle: float = 0.0, *,
                          must_exist: bool = False) -> AsyncIterator[dict[str, Any]]:
    """Every record of topic from the beginning up to its end when reading starts (so a slow
    broker cannot cut the read short), then, with max_idle > 0, whatever else arrives until no new
    record comes for max_idle seconds.

    The end is the larger of the end offset ListOffsets reports and the high watermark of the
    partition's first fetch. Tansu 0.6 on S3 storage reports, as a partition's end, the base offset
    + 1 of the oldest record batch of the last second that had writes, until a write lands in a
    later second: a read that stopped there missed the newest records (hundreds after a busy
    second). Its fetch responses carry the right high watermark.

    A topic the broker does not have yields nothing, or, with `must_exist`, raises UnknownTopic. It is
    never created: the metadata asked for is every topic's, which no broker answers by creating one."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(**kafka_client_kwargs(settings), group_id=None, auto_offset_reset="earliest", enable_auto_commit=False)
    try:
        await consumer.start()
        cluster = await every_topic(consumer)
        known = cluster.topics()
        partitions = [TopicPartition(topic, p) for p in sorted(cluster.partitions_for_topic(topic) or ())]
        if not partitions:
            if must_exist and topic not in known:
                raise UnknownTopic(topic, known)
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
    """Write the topic's records to `out` (replaced only once the read is done). UnknownTopic for a
    topic the broker does not have: an empty file would look like an empty topic."""
    from stream.tools.files import replaced_when_done

    count = 0
    with replaced_when_done(out) as handle:
        async for rec in consume_records(settings, topic, max_idle, must_exist=True):
            handle.write(json.dumps(rec, ensure_ascii=False) + "\n")
            count += 1
    return count
