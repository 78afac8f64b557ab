"""Replay JSONL into Kafka and record a topic to JSONL (aiokafka).

A replay file holds one post object per line, or the records `record` writes
({topic, partition, offset, timestamp, key, value, value_encoding}, and key_b64 for a key that is
not UTF-8, headers when there are any; docs/operations.md has the format), merged in timestamp
order across partitions. A record line is replayed to its recorded partition with its recorded
timestamp and headers (one whose partition or timestamp is no Kafka one goes where its key hashes,
or with the broker's time, with a warning). A line is taken for a record
when it has `topic`, `partition`, `offset` and `value` and no `text` or `id` (a post that merely
carries fields of those names is sent as the post it is). A line that is neither, and a record line
that cannot be decoded (a value that is not text, bad base64, a key or value with an unpaired
surrogate escape), is sent as-is, so it reaches the DLQ like any bad message. A recorded tombstone
(`"value": null` without an encoding) is replayed as a tombstone.

With --speed, the gaps between event times are paced from the newest time sent so far (an older
line goes out at once; a gap over max_gap_s of replay time is cut to it, with a warning); a time the post contract rejects (before
2009-01-01, beyond SENTINEL_MAX_FUTURE ahead of the wall clock, not finite) is not a pace: that
line goes out at once and the lines after it keep their own times. A line the broker refuses as
too large is skipped with a warning naming FILE:LINE and its size, and counted as not sent; the
rest of the file still goes out.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import dataclasses
import heapq
import difflib
import json
import math
import sys
import time
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from types import EllipsisType
from typing import Any, AsyncIterator, Callable, Iterable, Iterator

from stream.contracts import Limits, encode_value, parse_created_at
from stream.kafka import every_topic, kafka_client_kwargs
from stream.settings import Settings
from stream.tools.services import cancelled_if_stopped, stop_requested

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
    partition: int | None = None  # a record line's recorded partition
    timestamp_ms: int | None = None  # a record line's recorded Kafka timestamp, sent with it
    headers: tuple[tuple[str, bytes | None], ...] = ()  # a record line's recorded headers
    unkept: str = ""  # what of a record line's place cannot be kept (a partition that is no number): said, not silent


@dataclass
class ReplayResult:
    """What a replay sent. `placed` maps where each sent line landed, per partition: parallel arrays
    of offsets and line numbers (16 bytes a line, so a large file stays cheap)."""

    sent: int = 0
    not_sent: list[tuple[int, str]] = field(default_factory=list)  # (line, why)
    placed: dict[int, tuple[array, array]] = field(default_factory=dict)
    resume_line: int = 1  # every line before it was acknowledged (or refused as too large)
    reached: float | None = None  # a paced replay's newest event time sent so far (for progress)

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


UTF8_BOM = b"\xef\xbb\xbf"
GZIP_MAGIC = b"\x1f\x8b"  # the first two bytes of every gzip file


def read_replay_file(path: Path) -> Iterator[ReplayItem]:
    """The file's lines as messages, CRLF line ends taken as LF. A UTF-8 byte order mark before the
    first line (many Windows tools write one) is dropped: sent with it, the first post was not JSON
    to the worker and was dead-lettered, while every later line went through."""
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            line = line_sent(raw, number)
            if not line.strip():
                continue
            yield dataclasses.replace(replay_item(line), line=number)


def line_sent(raw: bytes, number: int) -> bytes:
    """File line `number` as it is sent: a UTF-8 BOM before line 1 dropped, its LF or CRLF cut."""
    return (raw.removeprefix(UTF8_BOM) if number == 1 else raw).rstrip(b"\r\n")


def holds_a_line(raw: bytes, number: int) -> bool:
    """Whether file line `number` is sent: one blank, or only a BOM, is skipped. The counts that
    `run` and `replay` show progress against use this, or a first line of only a BOM was counted
    and never sent (`replayed 5/6` at the end)."""
    return bool(line_sent(raw, number).strip())


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
    key_bytes = record_key(obj)
    ts = obj.get("timestamp")
    event_time = ts / 1000 if isinstance(ts, (int, float)) and not isinstance(ts, bool) else None
    timestamp_ms = ts if isinstance(ts, int) and not isinstance(ts, bool) and 0 <= ts < 2**63 else None
    recorded = obj.get("partition")
    partition = recorded if isinstance(recorded, int) and not isinstance(recorded, bool) and 0 <= recorded < 2**31 else None
    return ReplayItem(key_bytes, data, event_time, partition=partition, timestamp_ms=timestamp_ms, headers=record_headers(obj.get("headers")),
                      unkept=unkept_place(recorded, partition, ts, timestamp_ms))


def unkept_place(recorded: Any, partition: int | None, ts: Any, timestamp_ms: int | None) -> str:
    """Why a record line cannot go out where and when it was recorded ("" where it can): a
    partition or timestamp that is no Kafka one (a line edited by hand, or by a tool that wrote
    numbers as text). A timestamp of -1 (a record without one) or none at all is the broker's to set."""
    said = []
    if partition is None:
        said.append(f"partition {shown_json(recorded)} is no partition number: sent where its key hashes")
    if timestamp_ms is None and ts is not None and not (isinstance(ts, int) and not isinstance(ts, bool) and ts == -1):
        said.append(f"timestamp {shown_json(ts)} is no Kafka timestamp (ms): sent with the broker's time")
    return "; ".join(said)


def shown_json(value: Any, width: int = 40) -> str:
    """A JSON value as a warning shows it: a list or object by its kind, not dumped (one nested
    nearly as deep as json.loads takes raised RecursionError from json.dumps, out of replay_item),
    a scalar cut to `width` characters (a 100 kB string was a 100 kB warning line)."""
    if isinstance(value, (list, dict)):
        return "a JSON " + ("list" if isinstance(value, list) else "object")
    text = json.dumps(value if not isinstance(value, str) else value[:width])
    return text if len(text) <= width else text[: width - 3] + "..."


def _b64(value: Any, what: str) -> bytes:
    if not isinstance(value, str):
        raise ValueError(f"a base64 {what} that is not a string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"the {what} is not base64 ({exc})") from None


def _utf8(value: Any, what: str) -> bytes | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"a {what} that is not text")
    try:
        return value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"the {what} holds an unpaired surrogate") from None


def record_key(obj: dict[str, Any]) -> bytes | None:
    """The recorded key's bytes: `key_b64` where the key is not UTF-8 (`key` then holds a readable
    rendering only), else `key` as UTF-8."""
    if "key_b64" in obj:
        return _b64(obj["key_b64"], "key")
    return _utf8(obj.get("key"), "key")


def record_headers(headers: Any) -> tuple[tuple[str, bytes | None], ...]:
    """A record line's `headers`: [{"key": name, "value": text or null} or {"key": name, "value_b64": ...}]."""
    if headers is None:
        return ()
    if not isinstance(headers, list):
        raise ValueError("headers that are not a list")
    out = []
    for header in headers:
        if not isinstance(header, dict) or not isinstance(header.get("key"), str):
            raise ValueError("a header that is not {key, value}")
        _utf8(header["key"], "header name")
        value = _b64(header["value_b64"], "header value") if "value_b64" in header else _utf8(header.get("value"), "header value")
        out.append((header["key"], value))
    return tuple(out)


def text_or_b64(data: bytes, field: str) -> dict[str, Any]:
    """{field: text} for UTF-8 bytes; else {field: a readable rendering, field_b64: the bytes}."""
    try:
        return {field: data.decode("utf-8")}
    except UnicodeDecodeError:
        return {field: data.decode("utf-8", "replace"), f"{field}_b64": base64.b64encode(data).decode("ascii")}


def no_json_object(path: Path, from_line: int = 1) -> str | None:
    """Why `path` is no file of posts or records: the first line's reason where no line (from
    `from_line` on) is a JSON object (a CSV, a JSON array, the wrong file), else None. Reads up to
    the first object only."""
    first = None
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if number < from_line or not holds_a_line(raw, number):
                continue
            if number == 1 and raw.startswith(GZIP_MAGIC):  # "not JSON" alone left a .jsonl.gz a puzzle
                return "line 1: gzip-compressed, not JSON (gunzip it first: replay and run read plain JSONL)"
            try:
                obj = json.loads(raw)
            except json.JSONDecodeError as exc:
                reason = f"not JSON ({exc.msg})"
            except (ValueError, RecursionError):  # not UTF-8, or nested past json's recursion
                reason = "not JSON"
            else:
                if isinstance(obj, dict):
                    return None
                reason = f"a JSON {type(obj).__name__}, not an object"
            first = first or f"line {number}: {reason}"
    return first


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


# After a stop (Ctrl-C, SIGTERM), how long the queued sends may take to be acknowledged before they
# are abandoned: well inside Kubernetes' default 30 s grace, where a dead broker's sends took 35-40 s
# to time out. A line abandoned is not counted, so the resume line stays right.
STOP_DRAIN_S = 5.0
# How long the sender task may take to end once cancelled (two cancels end aiokafka's), before the
# plain stop is waited for instead.
STOP_CANCEL_S = 5.0

MAX_GAP_S = 60.0  # --max-gap: the longest wait between two lines, in replay seconds


class Pacer:
    """When each line of a paced replay is due, in seconds of replay time from the start.

    Paced by the newest event time sent so far, not by the first line's: a line newer than it waits
    for the gap (divided by speed, and cut to max_gap_s); a line as old or older is due at once (no
    backwards waits), so one partition's records cannot hold the others back or run ahead of them.
    A line without a time to pace by (None) is due at once. `due` also says why, for a warning:
    "cut" (a gap longer than max_gap_s, waited max_gap_s) or "behind" (older than the newest sent by
    more than max_gap_s of replay time, sent at once)."""

    def __init__(self, speed: float, max_gap_s: float = MAX_GAP_S):
        self.speed = speed
        self.max_gap_s = max_gap_s
        self.newest: float | None = None
        self.at = 0.0

    def due(self, event_time: float | None) -> tuple[float, str | None]:
        if event_time is None:
            return self.at, None
        if self.newest is None:
            self.newest = event_time
            return self.at, None
        gap = (event_time - self.newest) / self.speed
        if gap <= 0:
            return self.at, "behind" if -gap > self.max_gap_s else None
        self.newest = event_time
        if gap > self.max_gap_s:
            self.at += self.max_gap_s
            return self.at, "cut"
        self.at += gap
        return self.at, None


def recorded_partitions(path: Path) -> int | None:
    """How many partitions the recording in path names (its highest record line's partition + 1);
    None when no line is a record that names one (posts, or an empty file)."""
    highest = -1
    for item in read_replay_file(path):
        if item.partition is not None:
            highest = max(highest, item.partition)
    return highest + 1 if highest >= 0 else None


def recorded_topic(path: Path) -> tuple[int, str] | None:
    """(line, topic) of the recording in path: the topic its first JSON object line names, where
    that line is a record (`record` writes one topic a file); None for posts, or no object at all.
    Reads up to that line only, not a retained topic's whole recording."""
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if not holds_a_line(raw, number):
                continue
            try:
                obj = json.loads(line_sent(raw, number))
            except (ValueError, RecursionError):
                continue
            if not isinstance(obj, dict):
                continue
            return (number, obj["topic"]) if is_record(obj) and isinstance(obj["topic"], str) else None
    return None


class PartitionMismatch(ValueError):
    """The recording names more partitions than the target topic has."""

    def __init__(self, path: Path, recorded: int, topic: str, target: int):
        self.recorded, self.target = recorded, target
        super().__init__(f"{path} was recorded from {recorded} partitions but topic {topic!r} has {target}: its records "
                         f"cannot go to their recorded partitions, so per-partition order would not be kept")


async def replay(settings: Settings, path: Path, topic: str, speed: float | None, progress: Callable[[int], None] | None = None,
                 warn: Callable[[str], None] = warn_stderr, **options: Any) -> int:
    """Produce every line of path into topic; speed None is as fast as possible. Returns the count sent."""
    return (await replay_lines(settings, path, topic, speed, progress, warn, **options)).sent


async def replay_lines(settings: Settings, path: Path, topic: str, speed: float | None, progress: Callable[[int], None] | None = None,
                       warn: Callable[[str], None] = warn_stderr, *, max_gap_s: float = MAX_GAP_S, from_line: int = 1,
                       repartition: bool = False, result: ReplayResult | None = None,
                       recorded: int | None | EllipsisType = ...) -> ReplayResult:
    """As replay, and where each line landed and which were not sent.

    A record line goes to its recorded partition, with its recorded timestamp and headers. A
    recording that names more partitions than the topic has raises PartitionMismatch before
    anything is sent, unless `repartition` (then every line goes where its key hashes; the caller,
    which chose that, tells its user). Lines before `from_line` are skipped (to resume). `result`,
    when given, is filled in as lines are acknowledged, so a caller interrupted (Ctrl-C) can say
    where to resume: `result.resume_line`. `recorded` is `recorded_partitions(path)` where the
    caller has it already: finding it reads the whole file, which a recording of a retained topic
    makes long; left out (...), it is read here."""
    from aiokafka import AIOKafkaProducer
    from aiokafka.errors import MessageSizeTooLargeError

    if recorded is ...:
        recorded = recorded_partitions(path)
    producer = AIOKafkaProducer(
        **kafka_client_kwargs(settings),
        linger_ms=5,
        max_request_size=max(REPLAY_MAX_REQUEST_BYTES, settings.max_message_bytes * 2),
        enable_idempotence=False,
        acks="all",
    )
    result = result if result is not None else ReplayResult()
    result.resume_line = max(result.resume_line, from_line)
    future_s = max_future_s(settings)
    pacer = Pacer(speed, max_gap_s) if speed else None
    cut: list[int] = []
    behind: list[int] = []
    unkept: list[int] = []  # record lines whose recorded partition or timestamp cannot be kept
    started = time.monotonic()

    def too_large(item: ReplayItem, exc: Exception) -> None:
        size = len(item.value or b"")
        why = f"{size} bytes, refused as too large ({type(exc).__name__})"
        result.not_sent.append((item.line, why))
        warn(f"{path}:{item.line}: not sent: {why}")

    def settled(item: ReplayItem, outcome: Any) -> None:
        if isinstance(outcome, MessageSizeTooLargeError):
            too_large(item, outcome)
        elif isinstance(outcome, BaseException):
            raise outcome
        else:
            result.sent += 1
            result.place(outcome.partition, outcome.offset, item.line)
        result.resume_line = item.line + 1

    def retrieved(sends: list[tuple[ReplayItem, Any]]) -> None:
        # Each finished send's outcome taken, so that after the first failure (raised by `settled`)
        # the batch's others are not each logged by asyncio as "Future exception was never
        # retrieved": a broker lost mid-replay wrote hundreds of those tracebacks.
        for _, fut in sends:
            if fut.done() and not fut.cancelled():
                fut.exception()

    def settle_done(pending: list[tuple[ReplayItem, Any]]) -> None:
        # The acknowledged prefix taken as it comes, not only every 1000 sends: a broker lost
        # mid-replay is then an error once its first send fails (the producer's request timeout),
        # where a paced replay went on queueing into the dead broker until 1000 sends were pending
        # (at a line a minute, most of a day). A failed send stays pending: the `finally` below
        # stops there, so a later send acknowledged on another partition never moves the resume
        # line past it.
        while pending and pending[0][1].done() and not pending[0][1].cancelled():
            item, fut = pending[0]
            failed = fut.exception()
            if failed is not None and not isinstance(failed, MessageSizeTooLargeError):
                raise failed
            pending.pop(0)
            settled(item, failed or fut.result())

    async def settle(pending: list[tuple[ReplayItem, Any]]) -> None:
        if pending:  # asyncio.wait, not gather: an interrupted wait leaves the sends' futures as they are
            await asyncio.wait([fut for _, fut in pending])
        batch = pending[:]
        pending.clear()
        retrieved(batch)
        for item, fut in batch:
            settled(item, fut.exception() or fut.result())

    pending: list[tuple[ReplayItem, Any]] = []
    queued = 0
    try:
        # Started inside the `try`: a stop (or a dead broker) during the start still stops the
        # producer, which closes what the start opened (aiokafka's stop of a producer whose start
        # never finished skips the sender and closes the client's connections).
        await producer.start()
        keep_partitions = True
        if recorded is not None:
            target = len(await producer.partitions_for(topic))
            if recorded > target:
                if not repartition:
                    raise PartitionMismatch(path, recorded, topic, target)
                keep_partitions = False
        for item in read_replay_file(path):
            cancelled_if_stopped()  # a Ctrl-C that a library swallowed still stops the replay here
            if item.line < from_line:
                continue
            if pacer is not None:
                due, why = pacer.due(pace_time(item.event_time, time.time(), future_s))
                if why == "cut":
                    cut.append(item.line)
                    if len(cut) == 1:
                        warn(f"{path}:{item.line}: its time is more than {max_gap_s:g} s of replay time after the "
                             f"newest line sent before it: waited {max_gap_s:g} s instead (--max-gap)")
                elif why == "behind":
                    behind.append(item.line)
                    if len(behind) == 1:
                        warn(f"{path}:{item.line}: its time is more than {max_gap_s * speed:g} s older than the "  # type: ignore[operator]
                             f"newest line sent before it: sent at once (a file not in time order?)")
                delay = started + due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            if item.unkept:
                unkept.append(item.line)
                if len(unkept) == 1:
                    warn(f"{path}:{item.line}: {item.unkept}")
            partition = item.partition if keep_partitions else None
            try:
                pending.append((item, await producer.send(topic, value=item.value, key=item.key, partition=partition,
                                                          timestamp_ms=item.timestamp_ms, headers=list(item.headers) or None)))
            except MessageSizeTooLargeError as exc:  # over the client's own cap
                too_large(item, exc)
                continue
            queued += 1
            if pacer is not None:
                result.reached = pacer.newest
            if len(pending) >= 1000:
                await settle(pending)
            settle_done(pending)
            if progress and (pacer is not None or queued % 100 == 0):  # paced lines come slowly: each one counts
                progress(queued)
        await settle(pending)
        await producer.flush()
    finally:
        # Delivers what was queued, also when interrupted; after a stop (Ctrl-C, SIGTERM) for
        # STOP_DRAIN_S at most, so a dead broker cannot hold the exit past a pod's grace period.
        abandoned = await stop_producer(producer, STOP_DRAIN_S if stop_requested() else None, warn)
        retrieved(pending)
        for item, fut in pending:  # interrupted: what was acknowledged, in order, up to the first that was not
            if not fut.done() or fut.cancelled():
                break
            failed = fut.exception()
            if failed is not None and not isinstance(failed, MessageSizeTooLargeError):
                break
            settled(item, failed or fut.result())
        if abandoned and (unsettled := sum(not fut.done() for _, fut in pending)):
            warn(f"{path}: {unsettled} queued line{'s' * (unsettled != 1)} not acknowledged within {STOP_DRAIN_S:g} s of the stop: "
                 f"not counted as sent (the broker may hold some of them)")
    if len(cut) > 1:
        warn(f"{path}: {len(cut)} gaps longer than {max_gap_s:g} s of replay time were cut to it (lines {', '.join(map(str, cut[:5]))}"
             f"{', ...' if len(cut) > 5 else ''})")
    if len(unkept) > 1:
        warn(f"{path}: {len(unkept)} record lines could not keep their recorded partition or timestamp "
             f"(lines {', '.join(map(str, unkept[:5]))}{', ...' if len(unkept) > 5 else ''})")
    if len(behind) > 1:
        warn(f"{path}: {len(behind)} lines were more than {max_gap_s * speed:g} s older than the newest sent before them"  # type: ignore[operator]
             f" (lines {', '.join(map(str, behind[:5]))}{', ...' if len(behind) > 5 else ''})")
    if progress:
        progress(queued)
    return result


async def stop_producer(producer: Any, drain_s: float | None, warn: Callable[[str], None] = warn_stderr) -> bool:
    """producer.stop(), which waits until every queued send is delivered or has failed: with the
    broker gone, until its request timeout (40 s). With `drain_s`, that long at most; then the sends
    still queued are abandoned (their futures left pending: never counted as acknowledged) and the
    connections closed. True where sends were abandoned. Where the producer's insides are not as
    below (another aiokafka) or its sender outlasts STOP_CANCEL_S, the plain stop, with a warning:
    slower, but no traceback in the middle of a stop, and no loop of ours that never ends."""
    stopping = asyncio.ensure_future(producer.stop())
    if drain_s is None:
        await stopping
        return False
    await asyncio.wait([stopping], timeout=drain_s)
    if stopping.done():
        stopping.result()
        return False
    # aiokafka (0.11-0.14) has no stop that skips delivery: its sender task is cancelled, and
    # cancelled again while its cancellation handler awaits a request in flight, until it ends;
    # stop() then returns at once and closes the connections.
    sender = getattr(getattr(producer, "_sender", None), "sender_task", None)
    if isinstance(sender, asyncio.Future):
        given_up = time.monotonic() + STOP_CANCEL_S
        while not sender.done() and time.monotonic() < given_up:
            sender.cancel()
            await asyncio.wait([sender], timeout=0.5)
        if sender.done():
            await stopping
            return True
    why = "its sender task did not end" if sender is not None else "this aiokafka has no producer._sender.sender_task"
    warn(f"the queued sends could not be abandoned ({why}): waiting for them to be delivered or to time out")
    await stopping
    return False


class UnknownTopic(LookupError):
    """The topic to read is not on the broker (`sentinel record --topic` with a typo)."""

    def __init__(self, topic: str, known: set[str]):
        # The names nearest the one asked for first: on a broker of hundreds, the one meant is shown.
        self.topic = topic
        self.known = sorted((t for t in known if not t.startswith("__")), key=lambda t: (-difflib.SequenceMatcher(None, topic, t).ratio(), t))
        shown = ", ".join(self.known[:10]) + (f" and {len(self.known) - 10} more" if len(self.known) > 10 else "")
        super().__init__(f"topic {topic!r} does not exist on the broker ({'its topics: ' + shown if shown else 'it has no topics'})")


async def broker_topics(settings: Settings) -> dict[str, int]:
    """The broker's topics and their partition counts (creates none)."""
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(**kafka_client_kwargs(settings), group_id=None, enable_auto_commit=False)
    try:  # stopped when its start fails too (no broker), or asyncio reports it unclosed after our error
        await consumer.start()
        cluster = await every_topic(consumer)
        return {t: len(cluster.partitions_for_topic(t) or ()) for t in cluster.topics()}
    finally:
        await consumer.stop()


async def consume_records(settings: Settings, topic: str, max_idle: float = 0.0, *,
                          must_exist: bool = False) -> AsyncIterator[dict[str, Any]]:
    """Every record of topic from the beginning up to its end when reading starts (so a slow
    broker cannot cut the read short), then, with max_idle > 0, whatever else arrives until no new
    record comes for max_idle seconds.

    The end is the larger of the end offset ListOffsets reports and the high watermark of the
    partition's first fetch. Tansu 0.6 can report, as a partition's end, the base offset + 1 of one
    of its latest record batches rather than the offset after its last record: on S3 storage the
    oldest batch of the last second that had writes, until a write lands in a later second, and
    on its memory storage too (session 50 saw it there, with `sentinel_consumer_lag`, stream/ops/
    http.py `consumer_lag`). A read that stopped there missed the newest records (hundreds after a
    busy second). Its fetch responses carry the right high watermark.

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
            cancelled_if_stopped()
            for records in (await consumer.getmany(timeout_ms=1000, max_records=1000)).values():
                for rec in records:
                    yield _as_record(rec)
            for tp in partitions:
                if tp not in fetched and consumer.highwater(tp) is not None:  # this partition's first fetch
                    fetched.add(tp)
                    ends[tp] = max(ends[tp], consumer.highwater(tp) or 0)
        while max_idle > 0:
            cancelled_if_stopped()
            batch = await consumer.getmany(timeout_ms=int(max_idle * 1000), max_records=1000)
            if not batch:
                return
            for records in batch.values():
                for rec in records:
                    yield _as_record(rec)
    finally:
        await consumer.stop()


def _as_record(rec: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "topic": rec.topic,
        "partition": rec.partition,
        "offset": rec.offset,
        "timestamp": rec.timestamp,
        **(text_or_b64(rec.key, "key") if rec.key is not None else {"key": None}),
        **encode_value(rec.value),
    }
    if rec.headers:
        record["headers"] = [{"key": name, **(text_or_b64(value, "value") if value is not None else {"value": None})}
                             for name, value in rec.headers]
    return record


def record_order(rec: dict[str, Any]) -> tuple[int, int, int]:
    """A record's place in a recording: Kafka timestamp, then partition, then offset."""
    ts = rec.get("timestamp")
    return (ts if isinstance(ts, int) else -1, rec["partition"], rec["offset"])


def merge_by_time(partitions: Iterable[Iterable[Any]], order: Callable[[Any], Any] = record_order) -> Iterator[Any]:
    """The partitions' records merged into one sequence in `order` (by default Kafka timestamp, then
    partition, then offset). Each partition's own order is kept, even where its timestamps go back
    (a producer's CreateTime): a record is taken only from the head of its partition."""
    return heapq.merge(*partitions, key=order)


async def record(settings: Settings, topic: str, out: Path, max_idle: float, progress: Callable[[int], None] | None = None) -> int:
    """Write the topic's records to `out` (replaced only once the read is done), merged in timestamp
    order across partitions (merge_by_time): a paced replay sends the partitions side by side, as
    they were written. UnknownTopic for a topic the broker does not have: an empty file would look
    like an empty topic. `progress` is told how many records were read, now and then."""
    import tempfile

    from stream.tools.files import replaced_when_done

    count = 0
    with tempfile.TemporaryDirectory(prefix="sentinel-record-", dir=out.parent if out.parent.is_dir() else None) as spill:
        # Each partition's lines spill to a file of their own (a retained topic need not fit in memory),
        # each line led by its order: "timestamp partition offset\t{json}".
        files: dict[int, Any] = {}
        read = 0
        try:
            async for rec in consume_records(settings, topic, max_idle, must_exist=True):
                read += 1
                if progress and read % 1000 == 0:
                    progress(read)
                handle = files.get(rec["partition"])
                if handle is None:
                    handle = files[rec["partition"]] = open(Path(spill) / f"{rec['partition']}.jsonl", "w+", encoding="utf-8")
                handle.write(" ".join(map(str, record_order(rec))) + "\t" + json.dumps(rec, ensure_ascii=False) + "\n")
            if progress:
                progress(read)
            for handle in files.values():
                handle.seek(0)

            def order(line: str) -> tuple[int, ...]:
                return tuple(map(int, line[:line.index("\t")].split()))

            with replaced_when_done(out) as handle:
                for line in merge_by_time([files[p] for p in sorted(files)], order):
                    handle.write(line[line.index("\t") + 1:])
                    count += 1
        finally:
            for handle in files.values():
                handle.close()
    return count
