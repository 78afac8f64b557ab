"""`sentinel replay` / `sentinel run` read their file line by line: a record line that cannot be
decoded is sent as-is (the DLQ names it), a post is never taken for a record, a bad event time
does not hold the pacing, and a line the broker refuses is skipped with its FILE:LINE."""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import re
import time
import uuid
from pathlib import Path

import pytest

from stream.kafka import ensure_topics
from stream.settings import Settings
from stream.tools.replay import ReplayResult, consume_records, pace_time, read_replay_file, replay, replay_item, replay_lines

RECORD = {"topic": "forum-posts", "partition": 0, "offset": 1, "timestamp": 1_767_225_600_000, "key": "k1"}


@pytest.mark.parametrize("fields", [
    {"value": 5},
    {"value": "abc", "value_encoding": "base64"},
    {"value": None, "value_encoding": "base64"},
    {"value": {"id": "p1"}},
    {"value": "\ud800"},
    {"value": '{"id":"p1"}', "key": "\ud800"},
    {"value": '{"id":"p1"}', "key": 7},
    {"value": '{"id":"p1"}', "value_encoding": "rot13"},
    {"value": None, "value_encoding": "utf-8"},
])
def test_a_malformed_record_line_is_sent_as_is(fields):
    line = json.dumps({**RECORD, **fields}).encode()
    item = replay_item(line)
    assert (item.key, item.value, item.event_time) == (None, line, None)


@pytest.mark.parametrize("field", ["partition", "timestamp"])
def test_a_record_lines_unkept_partition_or_timestamp_is_said_briefly_however_deep_or_long(field):
    """Session 55 said such a value with json.dumps of the whole of it: a 100 kB string was a 100 kB
    warning line, and one nested nearly as deep as json.loads takes raised RecursionError out of
    replay_item (a traceback, where the line is the DLQ's to judge and the rest of the file goes out)."""
    failures = []
    long = replay_item(json.dumps({**RECORD, field: "x" * 100_000, "value": "v"}).encode())
    if not (long.value == b"v" and 0 < len(long.unkept) < 200):
        failures.append(f"a 100 kB {field} said in {len(long.unkept)} characters")
    deepest = 0
    for depth in range(100, 5000, 50):  # the deepest json.loads takes here
        try:
            json.loads("[" * depth + "]" * depth)
        except RecursionError:
            break
        deepest = depth
    for depth in range(max(deepest - 300, 1), deepest + 60):
        line = json.dumps({**RECORD, "value": "v", field: "DEEP"}).replace('"DEEP"', "[" * depth + "]" * depth).encode()
        try:
            item = replay_item(line)  # raises nothing, at any depth
        except RecursionError:
            failures.append(f"RecursionError at depth {depth}")
            break
        assert item.value in (b"v", line) and len(item.unkept) < 200
    assert failures == []


def test_a_utf8_bom_and_crlf_line_ends_are_not_sent_and_the_lines_keep_their_numbers(tmp_path):
    # A file saved by a Windows tool: the BOM went out with the first post, which the worker then
    # dead-lettered as not JSON ("Unexpected UTF-8 BOM"), while the posts after it went through.
    posts = [{"id": f"p{n}", "text": "BTC up", "created_at": f"2026-03-02T00:00:0{n}Z"} for n in (1, 2)]
    path = tmp_path / "windows.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + b"".join(json.dumps(p).encode() + b"\r\n" for p in posts))
    items = list(read_replay_file(path))
    assert [(i.line, i.key, json.loads(i.value)) for i in items] == [(1, b"p1", posts[0]), (2, b"p2", posts[1])]
    assert all(i.value.startswith(b"{") and i.event_time is not None for i in items)
    # Only the file's start is a BOM: one inside a later line is that line's, sent as it is.
    path.write_bytes(json.dumps(posts[0]).encode() + b"\n\xef\xbb\xbf" + json.dumps(posts[1]).encode() + b"\n")
    assert [i.value[:3] for i in read_replay_file(path)] == [b'{"i', b"\xef\xbb\xbf"]


def test_a_first_line_of_only_a_bom_is_neither_sent_nor_counted(kafka_server, tmp_path):
    """A Windows tool's BOM on a line of its own: dropped, so nothing was sent for line 1, but the
    count the progress shows held it (`replayed 2/3` at the end), and a file of no post named it
    as its first bad line (`line 1: not JSON`)."""
    import os
    import subprocess
    import sys

    from stream.tools.replay import holds_a_line, no_json_object

    assert not holds_a_line(b"\xef\xbb\xbf\r\n", 1) and not holds_a_line(b" \n", 3)
    assert holds_a_line(b"\xef\xbb\xbf\n", 2)  # a BOM after the file's start is that line's own, sent
    path = tmp_path / "windows.jsonl"
    start = time.time() - 3600
    path.write_bytes(b"\xef\xbb\xbf\r\n" + b"".join(post(n, iso(start + n)).encode() + b"\r\n" for n in (2, 3)))
    assert [i.line for i in read_replay_file(path)] == [2, 3]  # the file's own line numbers
    csv = tmp_path / "posts.csv"
    csv.write_bytes(b"\xef\xbb\xbf\nid,text\n")
    assert no_json_object(csv) == "line 2: not JSON (Expecting value)"
    topic = f"bom-{uuid.uuid4().hex[:6]}"
    asyncio.run(asyncio.wait_for(ensure_topics(Settings(kafka_broker=kafka_server, partitions=1), [topic]), 60))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "REDIS_", "SENTINEL_"))}
    r = subprocess.run([sys.executable, "-c", EVERY_REFRESH, "replay", str(path), "--topic", topic],
                       capture_output=True, text=True, timeout=120, env={**env, "KAFKA_BROKER": kafka_server})
    assert r.returncode == 0 and r.stdout == f"sent 2 messages to {topic}\n", r.stdout + r.stderr
    progress = [line for line in r.stderr.splitlines() if line.startswith("replayed ")]
    assert progress and all(re.match(r"replayed \d/2\b", line) for line in progress), r.stderr
    assert progress[-1].startswith("replayed 2/2"), r.stderr


def test_a_record_line_replays_its_value_key_and_time_and_a_null_value_is_a_tombstone():
    post = '{"id":"p1","text":"btc up","created_at":"2026-01-01T00:00:00Z"}'
    item = replay_item(json.dumps({**RECORD, "value": post, "value_encoding": "utf-8"}).encode())
    assert (item.key, item.value, item.event_time) == (b"k1", post.encode(), 1_767_225_600.0)
    raw = b"\xff\x00binary"
    item = replay_item(json.dumps({**RECORD, "value": base64.b64encode(raw).decode(), "value_encoding": "base64"}).encode())
    assert item.value == raw
    assert replay_item(json.dumps({**RECORD, "value": None, "value_encoding": None}).encode()).value is None


def test_a_post_with_fields_named_like_a_records_is_sent_as_the_post():
    line = json.dumps({"id": "p1", "text": "btc up", "created_at": "2026-01-01T00:00:00Z",
                       "topic": "markets", "partition": 1, "offset": 2, "value": "high"}).encode()
    item = replay_item(line)
    assert (item.key, item.value) == (b"p1", line)


@pytest.mark.parametrize("event_time", [float("inf"), float("nan"), 8_000_000_000.0, 1_000_000_000.0, None])
def test_pacing_ignores_a_time_the_contract_rejects(event_time):
    assert pace_time(event_time, now=1_767_225_600.0) is None


def test_pacing_keeps_a_time_the_contract_takes():
    assert pace_time(1_767_225_600.0, now=1_767_225_600.0) == 1_767_225_600.0


def iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def post(n: int, created_at: str, text: str = "btc up") -> str:
    return json.dumps({"id": f"p{n}", "text": text, "created_at": created_at})


def test_a_far_future_or_infinite_time_does_not_hold_a_paced_replay(kafka_server, tmp_path):
    settings = Settings(kafka_broker=kafka_server, partitions=1)
    topic = f"pace-{uuid.uuid4().hex[:6]}"
    now = time.time() - 3600
    path = tmp_path / "paced.jsonl"
    path.write_text("\n".join([
        post(1, iso(now)),
        post(2, "2226-12-05T00:00:00Z"),
        json.dumps({**RECORD, "timestamp": float("inf"), "value": post(3, iso(now + 1))}),
        post(4, iso(now + 2)),
    ]) + "\n")

    async def scenario() -> int:
        await ensure_topics(settings, [topic])
        return await replay(settings, path, topic, speed=60)

    started = time.monotonic()
    assert asyncio.run(asyncio.wait_for(scenario(), 60)) == 4
    assert time.monotonic() - started < 30  # 2 s of event time at 60x; the year-2226 line would be centuries


def test_a_line_the_producer_refuses_as_too_large_is_named_and_the_rest_go_out(kafka_server, tmp_path, monkeypatch):
    """The producer's own cap is 64 MiB (Tansu takes what it is given); 1 MiB here stands for it
    without writing a 64 MiB file. A broker's refusal (message.max.bytes) takes the same path."""
    import stream.tools.replay as replay_module

    monkeypatch.setattr(replay_module, "REPLAY_MAX_REQUEST_BYTES", 1_048_576)
    settings = Settings(kafka_broker=kafka_server, partitions=1)
    topic = f"big-{uuid.uuid4().hex[:6]}"
    now = time.time() - 3600
    path = tmp_path / "big.jsonl"
    path.write_text("\n".join([post(1, iso(now)), post(2, iso(now), "x" * 2_000_000), post(3, iso(now))]) + "\n")
    warnings: list[str] = []

    async def scenario():
        await ensure_topics(settings, [topic])
        result = await replay_lines(settings, path, topic, None, warn=warnings.append)
        return result, [r async for r in consume_records(settings, topic)]

    result, records = asyncio.run(asyncio.wait_for(scenario(), 120))
    assert result.sent == 2
    assert [line for line, _ in result.not_sent] == [2]
    assert len(warnings) == 1 and warnings[0].startswith(f"{path}:2: not sent: ") and "bytes" in warnings[0]
    assert [json.loads(r["value"])["id"] for r in records] == ["p1", "p3"]
    assert result.lines_at([(0, r["offset"]) for r in records]) == {(0, records[0]["offset"]): 1, (0, records[1]["offset"]): 3}


def test_a_recorded_tombstone_replays_as_a_tombstone(kafka_server, tmp_path):
    settings = Settings(kafka_broker=kafka_server, partitions=1)
    topic = f"tomb-{uuid.uuid4().hex[:6]}"
    path = tmp_path / "tomb.jsonl"
    path.write_text(json.dumps({**RECORD, "value": None, "value_encoding": None}) + "\n")

    async def scenario():
        await ensure_topics(settings, [topic])
        await replay(settings, path, topic, None)
        return [r async for r in consume_records(settings, topic)]

    records = asyncio.run(asyncio.wait_for(scenario(), 60))
    assert [(r["key"], r["value"], r["value_encoding"]) for r in records] == [("k1", None, None)]


# --- record order, pacing, partitions and the round trip (the record/replay audit)

from stream.tools.replay import (  # noqa: E402
    Pacer,
    PartitionMismatch,
    merge_by_time,
    record,
    record_item,
    recorded_partitions,
)


def rec(partition: int, offset: int, ts: int) -> dict:
    return {"partition": partition, "offset": offset, "timestamp": ts}


def test_partitions_merge_by_timestamp_then_partition_then_offset_keeping_each_partitions_order():
    p0 = [rec(0, 0, 10), rec(0, 1, 30), rec(0, 2, 20), rec(0, 3, 40)]  # a CreateTime that goes back stays in place
    p1 = [rec(1, 0, 10), rec(1, 1, 25), rec(1, 2, 50)]
    p2 = [rec(2, 0, 5)]
    merged = [(r["partition"], r["offset"]) for r in merge_by_time([p0, p1, p2])]
    assert merged == [(2, 0), (0, 0), (1, 0), (1, 1), (0, 1), (0, 2), (0, 3), (1, 2)]
    for p in (0, 1):
        assert [o for q, o in merged if q == p] == sorted(o for q, o in merged if q == p)


def test_pacing_never_waits_backwards_and_cuts_a_long_gap():
    pacer = Pacer(speed=60, max_gap_s=60)
    assert pacer.due(1000.0) == (0.0, None)
    assert pacer.due(1060.0) == (1.0, None)  # a minute of event time at 60x
    assert pacer.due(931.0) == (1.0, None)  # another partition's older record: at once, 129 s back
    assert pacer.due(1120.0) == (2.0, None)  # paced from the newest sent, not from the older one
    assert pacer.due(None) == (2.0, None)
    assert pacer.due(1120.0 + 86_400) == (62.0, "cut")  # a day at 60x is 24 min: cut to the bound
    assert pacer.due(1120.0) == (62.0, "behind")


def test_a_first_line_a_year_before_the_rest_does_not_hold_the_pacing():
    pacer = Pacer(speed=60, max_gap_s=60)
    year_before = 1_767_225_600.0 - 365 * 86_400
    dues = [pacer.due(t) for t in (year_before, 1_767_225_600.0, 1_767_225_660.0)]
    assert dues == [(0.0, None), (60.0, "cut"), (61.0, None)]


def test_a_record_line_keeps_its_binary_key_headers_partition_and_timestamp():
    item = record_item({**RECORD, "partition": 5, "key": "\ufffd\ufffdbin", "key_b64": base64.b64encode(b"\xff\xfebin").decode(),
                        "value": "v", "value_encoding": "utf-8",
                        "headers": [{"key": "trace", "value": "t1"}, {"key": "raw", "value_b64": base64.b64encode(b"\x00\xff").decode()},
                                    {"key": "none", "value": None}]})
    assert (item.key, item.partition, item.timestamp_ms) == (b"\xff\xfebin", 5, RECORD["timestamp"])
    assert item.headers == (("trace", b"t1"), ("raw", b"\x00\xff"), ("none", None))


async def produce_recorded(settings: Settings, topic: str, messages: list[tuple]) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_broker, acks="all")
    await producer.start()
    try:
        for partition, key, value, ts, headers in messages:
            await producer.send(topic, value, key=key, partition=partition, timestamp_ms=ts, headers=headers)
        await producer.flush()
    finally:
        await producer.stop()


def test_record_writes_the_partitions_merged_in_timestamp_order(kafka_server, tmp_path):
    settings = Settings(kafka_broker=kafka_server, partitions=4)
    topic = f"merge-{uuid.uuid4().hex[:6]}"
    base = 1_767_225_600_000
    # Partition p holds the posts at seconds p, p+4, p+8, ...: written in one time, recorded in it.
    messages = [(i % 4, f"k{i}".encode(), f"m{i}".encode(), base + i * 1000, None) for i in range(40)]
    out = tmp_path / "rec.jsonl"

    async def scenario() -> int:
        await ensure_topics(settings, [topic])
        await produce_recorded(settings, topic, messages)
        return await record(settings, topic, out, 0)

    assert asyncio.run(asyncio.wait_for(scenario(), 120)) == 40
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["value"] for r in lines] == [f"m{i}" for i in range(40)]
    assert [r["timestamp"] for r in lines] == sorted(r["timestamp"] for r in lines)


def test_record_replay_record_keeps_keys_values_partitions_timestamps_and_headers(kafka_server, tmp_path):
    """Produced with aiokafka (a binary key, a null key, headers, set timestamps, three partitions),
    recorded, replayed into a fresh topic, recorded again: the same records, partition for partition."""
    settings = Settings(kafka_broker=kafka_server, partitions=3)
    source, copy = f"rt-{uuid.uuid4().hex[:6]}", f"rt-copy-{uuid.uuid4().hex[:6]}"
    base = 1_767_225_600_000
    messages = [
        (0, b"\xff\xfebin", b'{"id":"p0"}', base, [("trace", b"t0"), ("raw", b"\x00\xff")]),
        (2, None, b'{"id":"p1"}', base + 1000, None),
        (1, b"k2", b"\xff\x00binary value", base + 2000, [("empty", b"")]),
        (2, None, b'{"id":"p3"}', base + 3000, None),
        (1, "é".encode(), b'{"id":"p4"}', base + 4000, None),
        (0, b"k5", None, base + 5000, None),  # a tombstone
    ]
    first, second = tmp_path / "first.jsonl", tmp_path / "second.jsonl"

    async def scenario() -> None:
        await ensure_topics(settings, [source, copy])
        await produce_recorded(settings, source, messages)
        await record(settings, source, first, 0)
        await replay(settings, first, copy, None)
        await record(settings, copy, second, 0)

    asyncio.run(asyncio.wait_for(scenario(), 120))

    def essentials(path: Path) -> list[tuple]:
        items = [replay_item(line.encode()) for line in path.read_text().splitlines()]
        return [(i.partition, i.key, i.value, i.timestamp_ms, i.headers) for i in items]

    expected = [(p, k, v, ts, tuple(h or ())) for p, k, v, ts, h in messages]
    assert essentials(first) == expected
    assert essentials(second) == expected
    assert json.loads(first.read_text().splitlines()[0])["key_b64"] == base64.b64encode(b"\xff\xfebin").decode()


def test_a_recording_goes_to_its_recorded_partitions_and_not_into_fewer(kafka_server, tmp_path):
    settings = Settings(kafka_broker=kafka_server, partitions=4)
    topic, fewer = f"parts-{uuid.uuid4().hex[:6]}", f"fewer-{uuid.uuid4().hex[:6]}"
    path = tmp_path / "rec.jsonl"
    # Null keys, and keys that do not hash to the partitions they were recorded on.
    path.write_text("".join(json.dumps({**RECORD, "partition": i % 4, "offset": i // 4, "timestamp": RECORD["timestamp"] + i,
                                        "key": None if i % 2 else "same", "value": post(i, iso(1_767_225_600 + i))}) + "\n"
                            for i in range(16)))
    assert recorded_partitions(path) == 4
    warnings: list[str] = []

    async def scenario():
        await ensure_topics(settings, [topic])
        await ensure_topics(settings.model_copy(update={"partitions": 2}), [fewer])
        await replay(settings, path, topic, None)
        with pytest.raises(PartitionMismatch, match="recorded from 4 partitions but topic .* has 2"):
            await replay(settings, path, fewer, None)
        refused = [r async for r in consume_records(settings, fewer)]
        sent = await replay(settings, path, fewer, None, warn=warnings.append, repartition=True)
        return [r async for r in consume_records(settings, topic)], refused, sent

    records, refused, sent = asyncio.run(asyncio.wait_for(scenario(), 120))
    assert sorted((r["partition"], json.loads(r["value"])["id"]) for r in records) == sorted((i % 4, f"p{i}") for i in range(16))
    assert refused == [] and sent == 16
    assert warnings == []  # the command that chose to repartition says so, once (sentinel replay, sentinel run)


def test_a_record_line_whose_partition_or_timestamp_is_no_kafka_one_is_sent_with_a_warning_naming_it(kafka_server, tmp_path):
    """A recording edited by hand, or by a tool that wrote numbers as text ("partition": "1"), went
    where its key hashed and with the broker's time, without a word: the per-partition order and
    times the docs say a replay keeps were lost silently. The first such line is named, then a count."""
    settings = Settings(kafka_broker=kafka_server, partitions=2)
    topic = f"unkept-{uuid.uuid4().hex[:6]}"
    path = tmp_path / "rec.jsonl"
    lines = [{**RECORD, "value": post(0, iso(1_767_225_600))},
             {**RECORD, "partition": "1", "value": post(1, iso(1_767_225_601))},
             {**RECORD, "timestamp": "soon", "value": post(2, iso(1_767_225_602))},
             {**RECORD, "timestamp": -1, "value": post(3, iso(1_767_225_603))}]  # a record without a timestamp: the broker's, unsaid
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    warnings: list[str] = []

    async def scenario():
        await ensure_topics(settings, [topic])
        sent = await replay(settings, path, topic, None, warn=warnings.append)
        return sent, [r async for r in consume_records(settings, topic)]

    sent, records = asyncio.run(asyncio.wait_for(scenario(), 120))
    assert sent == 4 and len(records) == 4
    assert warnings == [f'{path}:2: partition "1" is no partition number: sent where its key hashes',
                        f"{path}: 2 record lines could not keep their recorded partition or timestamp (lines 2, 3)"], warnings
    kept = next(r for r in records if json.loads(r["value"])["id"] == "p0")
    assert (kept["partition"], kept["timestamp"]) == (0, RECORD["timestamp"])


def test_a_paced_replay_cuts_a_long_gap_with_a_warning_naming_the_line_and_resumes_from_a_line(kafka_server, tmp_path):
    settings = Settings(kafka_broker=kafka_server, partitions=1)
    topic = f"gap-{uuid.uuid4().hex[:6]}"
    now = time.time() - 3600
    path = tmp_path / "gap.jsonl"
    path.write_text("\n".join([post(1, iso(now - 365 * 86_400)), post(2, iso(now)), post(3, iso(now + 1)), post(4, iso(now + 2)),
                               post(5, iso(now + 200))]) + "\n")
    warnings: list[str] = []

    async def scenario():
        await ensure_topics(settings, [topic])
        first = await replay_lines(settings, path, topic, 60, warn=warnings.append, max_gap_s=1)
        resumed = await replay_lines(settings, path, topic, None, from_line=3)
        return first, resumed, [json.loads(r["value"])["id"] async for r in consume_records(settings, topic)]

    started = time.monotonic()
    first, resumed, ids = asyncio.run(asyncio.wait_for(scenario(), 60))
    assert time.monotonic() - started < 30  # a year at 60x is 6 days
    assert first.sent == 5 and first.resume_line == 6 and resumed.sent == 3
    assert ids == ["p1", "p2", "p3", "p4", "p5", "p3", "p4", "p5"]
    assert len(warnings) == 2 and warnings[0].startswith(f"{path}:2: ") and "--max-gap" in warnings[0], warnings
    # The closing one counts them all, the first included (docs/operations.md says so since session 55's review).
    assert warnings[1] == f"{path}: 2 gaps longer than 1 s of replay time were cut to it (lines 2, 5)", warnings


def sentinel(*args: str, broker: str | None, timeout: float = 120, extra: dict[str, str] | None = None):
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "REDIS_", "SENTINEL_"))}
    if broker:
        env["KAFKA_BROKER"] = broker
    env.update(extra or {})
    return subprocess.run([sys.executable, "-m", "sentinel.cli", *args], capture_output=True, text=True, env=env, timeout=timeout)


def test_replay_refuses_a_topic_the_broker_lacks_unless_asked_to_create_it(kafka_server, tmp_path):
    from stream.tools.replay import broker_topics

    settings = Settings(kafka_broker=kafka_server, partitions=2)
    present = f"replay-{uuid.uuid4().hex[:6]}"
    missing, created = present + "s", f"made-{uuid.uuid4().hex[:6]}"
    asyncio.run(asyncio.wait_for(ensure_topics(settings, [present]), 60))
    path = tmp_path / "rec.jsonl"
    path.write_text("".join(json.dumps({**RECORD, "partition": p, "value": post(p, iso(1_767_225_600))}) + "\n" for p in range(3)))

    r = sentinel("replay", str(path), "--topic", missing, broker=kafka_server)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert f"topic '{missing}' does not exist on the broker (its topics: {present}" in r.stderr and "--create-topic" in r.stderr
    r = sentinel("replay", str(path), "--topic", created, "--create-topic", broker=kafka_server)
    assert r.returncode == 0, r.stderr
    topics = asyncio.run(asyncio.wait_for(broker_topics(settings), 60))
    assert missing not in topics and topics[created] == 3  # the recording's partition count
    huge = tmp_path / "huge.jsonl"  # one corrupt line naming partition 2**31 - 2: no topic of 2**31 partitions
    huge.write_text(path.read_text() + json.dumps({**RECORD, "partition": 2**31 - 2, "value": post(9, iso(1_767_225_600))}) + "\n")
    r = sentinel("replay", str(huge), "--topic", missing, "--create-topic", broker=kafka_server)
    assert r.returncode == 2 and "names partition 2,147,483,646: --create-topic creates at most 1,024" in r.stderr, r.stderr
    assert missing not in asyncio.run(asyncio.wait_for(broker_topics(settings), 60))
    r = sentinel("replay", str(path), "--topic", present, broker=kafka_server)  # 3 recorded partitions into 2
    assert r.returncode == 2 and "recorded from 3 partitions" in r.stderr and "--repartition" in r.stderr, r.stderr
    r = sentinel("replay", str(path), "--topic", present, "--repartition", broker=kafka_server)
    assert r.returncode == 0 and "sent 3 messages" in r.stdout, r.stderr
    assert r.stderr.count("per-partition order is not kept") == 1, r.stderr
    assert f"warning: {path} was recorded from 3 partitions but topic '{present}' has 2: records go where their keys hash" in r.stderr
    # The posts topic is the workers': made with SENTINEL_PARTITIONS, which they check it against,
    # not the recording's count (a recording names only the partitions it holds records of).
    posts_topic = f"posts-{uuid.uuid4().hex[:6]}"
    r = sentinel("replay", str(path), broker=kafka_server, extra={"SENTINEL_TOPIC_POSTS": posts_topic, "SENTINEL_PARTITIONS": "4"})
    assert r.returncode == 0, r.stderr
    assert asyncio.run(asyncio.wait_for(broker_topics(settings), 60))[posts_topic] == 4


def test_a_recording_of_another_topic_without_topic_is_refused_or_said(kafka_server, tmp_path):
    """`sentinel replay rec-sentiment-alerts.jsonl` sent the recorded alerts into forum-posts, where
    the worker dead-lettered every one, exit 0. A recording of this deployment's alerts, sentiment
    or DLQ topic without --topic is refused before the broker is asked; one of another topic (a
    production posts topic replayed into a staging one of another name) goes with a warning."""
    from stream.tools.replay import broker_topics

    alerts = tmp_path / "rec-sentiment-alerts.jsonl"
    alerts.write_text("\n" + "".join(json.dumps({**RECORD, "topic": "sentiment-alerts", "offset": n, "value": '{"scope": "btc"}'}) + "\n"
                                     for n in range(3)))
    r = sentinel("replay", str(alerts), broker="127.0.0.1:9")  # refused before a (dead) broker is asked
    said = " ".join(r.stderr.split())
    assert r.returncode == 2 and "Traceback" not in said and "Kafka" not in said, said
    assert (f"error: {alerts}:2: recorded from topic 'sentiment-alerts', the alerts topic, not posts: without --topic replay sends to "
            f"the posts topic 'forum-posts'") in said and "--topic forum-posts sends them there all the same" in said, said
    dlq = tmp_path / "dlq.jsonl"
    dlq.write_text(alerts.read_text().replace("sentiment-alerts", "forum-posts-dlq"))
    r = sentinel("replay", str(dlq), broker="127.0.0.1:9", extra={"SENTINEL_TOPIC_POSTS": "posts-b"})
    assert r.returncode == 2 and "recorded from topic 'forum-posts-dlq', the dead-letter topic" in " ".join(r.stderr.split()), r.stderr
    # Named with --topic, it goes there, as asked.
    topic = f"alerts-replay-{uuid.uuid4().hex[:6]}"
    r = sentinel("replay", str(alerts), "--topic", topic, "--create-topic", broker=kafka_server)
    assert r.returncode == 0 and "sent 3 messages" in r.stdout and "recorded from topic" not in r.stderr, r.stderr
    # A recording of forum-posts into a posts topic of another name: sent, and said.
    posts_topic = f"posts-{uuid.uuid4().hex[:6]}"
    path = tmp_path / "rec.jsonl"
    path.write_text(json.dumps({**RECORD, "value": post(0, iso(1_767_225_600))}) + "\n")
    r = sentinel("replay", str(path), broker=kafka_server, extra={"SENTINEL_TOPIC_POSTS": posts_topic})
    assert r.returncode == 0 and "sent 1 messages" in r.stdout, r.stderr
    assert f"warning: {path}:1: recorded from topic 'forum-posts': sent to the posts topic '{posts_topic}' (--topic names another)" in \
        " ".join(r.stderr.split()), r.stderr
    assert posts_topic in asyncio.run(asyncio.wait_for(broker_topics(Settings(kafka_broker=kafka_server)), 60))
    r = sentinel("replay", str(path), "--topic", posts_topic, broker=kafka_server)
    assert r.returncode == 0 and "recorded from topic" not in r.stderr, r.stderr


def test_an_empty_file_is_a_warning_for_replay_and_an_error_for_run(kafka_server, tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_text("\n  \n")
    r = sentinel("replay", str(path), "--topic", "never-made", broker=kafka_server)
    assert r.returncode == 0 and "holds no lines: nothing to send" in r.stderr, r.stdout + r.stderr
    temp = tmp_path / "temp"
    temp.mkdir()
    r = sentinel("run", str(path), broker=None, extra={"TMPDIR": str(temp)})
    assert r.returncode == 2 and "holds no lines: nothing to run" in r.stderr, r.stdout + r.stderr
    # Refused before the embedded stack starts (seconds), as a file of no post is.
    assert "embedded stack up" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    # No empty sentinel-worker-*.log left behind: no worker wrote one. Nor for one URL of the two.
    assert list(temp.iterdir()) == []
    path.write_text('{"id": "1", "text": "btc up"}\n')
    r = sentinel("run", str(path), broker=None, extra={"TMPDIR": str(temp), "REDIS_URL": "redis://127.0.0.1:9/0"})
    assert r.returncode == 2 and "configure both KAFKA_BROKER and REDIS_URL" in r.stderr, r.stdout + r.stderr
    assert list(temp.iterdir()) == []


def test_an_empty_files_replay_still_creates_the_topic_it_was_asked_to(kafka_server, tmp_path):
    """`replay empty.jsonl --topic T --create-topic` warned `nothing to send` and made no topic: a
    script that set up T so, then recorded or consumed it, found none. The topic is made as for a
    file with lines (with SENTINEL_PARTITIONS: no recording names a count), and the warning says so;
    without --create-topic an unknown --topic is still left alone."""
    from stream.tools.replay import broker_topics

    settings = Settings(kafka_broker=kafka_server)
    path = tmp_path / "empty.jsonl"
    path.write_bytes(b"\xef\xbb\xbf\n\n")  # nothing but a BOM and blank lines
    made, left = f"made-{uuid.uuid4().hex[:6]}", f"left-{uuid.uuid4().hex[:6]}"
    r = sentinel("replay", str(path), "--topic", made, "--create-topic", broker=kafka_server, extra={"SENTINEL_PARTITIONS": "3"})
    assert r.returncode == 0 and r.stdout == f"sent 0 messages to {made}\n", r.stdout + r.stderr
    assert f"warning: {path} holds no lines: nothing to send; created topic '{made}' (3 partitions)" in r.stderr, r.stderr
    assert asyncio.run(asyncio.wait_for(broker_topics(settings), 60))[made] == 3
    r = sentinel("replay", str(path), "--topic", made, "--create-topic", broker=kafka_server)  # there now: nothing said of it
    assert r.returncode == 0 and "created" not in r.stderr and "nothing to send" in r.stderr, r.stderr
    r = sentinel("replay", str(path), "--topic", left, broker=kafka_server)
    assert r.returncode == 0 and "nothing to send" in r.stderr and "created" not in r.stderr, r.stderr
    assert left not in asyncio.run(asyncio.wait_for(broker_topics(settings), 60))
    posts_topic = f"posts-{uuid.uuid4().hex[:6]}"  # the default, `created if missing`, likewise
    r = sentinel("replay", str(path), broker=kafka_server, extra={"SENTINEL_TOPIC_POSTS": posts_topic, "SENTINEL_PARTITIONS": "2"})
    assert r.returncode == 0 and f"created topic '{posts_topic}' (2 partitions)" in r.stderr, r.stderr
    assert asyncio.run(asyncio.wait_for(broker_topics(settings), 60))[posts_topic] == 2


def test_no_json_object_names_why_a_file_holds_no_post_or_record(tmp_path):
    from stream.tools.replay import no_json_object

    def lines(*text: str) -> Path:
        path = tmp_path / "f"
        path.write_bytes("\n".join(text).encode() if text and isinstance(text[0], str) else b"")
        return path

    assert no_json_object(lines("text,label", "btc up,positive")) == "line 1: not JSON (Expecting value)"
    assert no_json_object(lines("", "[1, 2]", "3")) == "line 2: a JSON list, not an object"
    assert no_json_object(lines("not json", json.dumps({"id": "1", "text": "btc"}))) is None  # one post: bad lines are the DLQ's
    assert no_json_object(lines(json.dumps(RECORD))) is None
    gz = tmp_path / "posts.jsonl.gz"
    gz.write_bytes(gzip.compress(json.dumps({"id": "1", "text": "btc"}).encode() + b"\n"))
    assert no_json_object(gz) == "line 1: gzip-compressed, not JSON (gunzip it first: replay and run read plain JSONL)"


SAYING_STACK_STARTS = """
import sys
import sentinel.run as run
started = run.embedded_stack
def said(*args, **kwargs):
    print("embedded stack starting", file=sys.stderr, flush=True)
    return started(*args, **kwargs)
run.embedded_stack = said
from sentinel.cli import app
app(prog_name="sentinel")
"""


def test_a_run_of_a_file_with_no_json_object_is_an_error_before_the_stack_starts(tmp_path):
    """A CSV given to `sentinel run` started the stack, dead-lettered every line and exited 0 with a
    summary of nothing; then it was refused, but only once the embedded stack had started (seconds
    for nothing). Now before it, as replay refuses it before it sends."""
    import os
    import subprocess
    import sys

    path = tmp_path / "posts.csv"
    path.write_text("text,label\nbtc up,positive\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "REDIS_", "SENTINEL_"))}
    r = subprocess.run([sys.executable, "-c", SAYING_STACK_STARTS, "run", str(path)], capture_output=True, text=True, timeout=120,
                       env={**env, "SENTINEL_BASE": "lexicon"})
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stdout + r.stderr
    assert f"error: {path}: no line is a JSON object (line 1: not JSON (Expecting value)); sentinel run reads posts" in " ".join(r.stderr.split())
    assert "embedded stack starting" not in r.stderr, r.stderr


def test_run_refuses_a_recording_of_the_alerts_topic_before_the_stack_starts(tmp_path):
    """`sentinel run rec-sentiment-alerts.jsonl` (run has no --topic) sent the recorded alerts into
    the posts topic, where its worker dead-lettered every one: a summary of nothing. Refused before
    the embedded stack, as replay refuses it without --topic."""
    import os
    import subprocess
    import sys

    path = tmp_path / "rec-sentiment-alerts.jsonl"
    path.write_text("".join(json.dumps({**RECORD, "topic": "sentiment-alerts", "offset": n, "value": '{"scope": "btc"}'}) + "\n"
                            for n in range(3)))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "REDIS_", "SENTINEL_"))}
    r = subprocess.run([sys.executable, "-c", SAYING_STACK_STARTS, "run", str(path)], capture_output=True, text=True, timeout=120,
                       env={**env, "SENTINEL_BASE": "lexicon"})
    said = " ".join(r.stderr.split())
    assert r.returncode == 2 and "Traceback" not in said, r.stdout + r.stderr
    assert (f"error: {path}:1: recorded from topic 'sentiment-alerts', the alerts topic, not posts: sentinel run sends its file to "
            "the posts topic") in said and "sentinel record --topic forum-posts" in said, said
    assert "embedded stack starting" not in r.stderr, r.stderr


def test_a_replay_of_a_file_with_no_json_object_is_refused_and_one_with_a_post_among_bad_lines_is_sent(kafka_server, tmp_path):
    """`sentinel replay` of a CSV sent every line, for the worker to dead-letter, where `sentinel run` refuses it."""
    from stream.tools.replay import broker_topics

    topic = f"posts-{uuid.uuid4().hex[:6]}"
    extra = {"SENTINEL_TOPIC_POSTS": topic}
    path = tmp_path / "posts.csv"
    path.write_text("text,label\nbtc up,positive\n")
    r = sentinel("replay", str(path), broker=kafka_server, extra=extra)
    assert r.returncode == 2 and r.stdout == "" and r.stderr.count("\n") == 1, r.stdout + r.stderr
    assert " ".join(r.stderr.split()) == (f"error: {path}: no line is a JSON object (line 1: not JSON (Expecting value)); sentinel replay "
                                          "reads posts, one JSON object a line (examples/demo-stream.jsonl), or the records sentinel "
                                          "record writes; nothing sent"), r.stderr
    assert topic not in asyncio.run(asyncio.wait_for(broker_topics(Settings(kafka_broker=kafka_server)), 60))  # nothing sent, nothing made
    mixed = tmp_path / "mixed.jsonl"  # bad lines among posts are the worker's to dead-letter, as documented
    mixed.write_text("text,label\n" + json.dumps({"id": "1", "text": "btc up"}) + "\n[1]\n")
    r = sentinel("replay", str(mixed), broker=kafka_server, extra=extra)
    assert r.returncode == 0 and f"sent 3 messages to {topic}" in r.stdout, r.stdout + r.stderr


@pytest.mark.parametrize("stop", ["SIGINT", "SIGTERM"])
def test_ctrl_c_on_a_paced_replay_names_the_line_to_resume_from(kafka_server, tmp_path, stop):
    """Ctrl-C, or a SIGTERM (`timeout`, `kill`, a Job deleted), which ended the process at once
    with nothing said and the queued sends lost: both deliver what was queued and name the line."""
    import os

    from workers import stopped_when

    settings = Settings(kafka_broker=kafka_server, partitions=1)
    topic = f"intr-{uuid.uuid4().hex[:6]}"
    asyncio.run(asyncio.wait_for(ensure_topics(settings, [topic]), 60))
    now = time.time() - 3600
    path = tmp_path / "slow.jsonl"
    path.write_text("".join(post(i, iso(now + i)) + "\n" for i in range(1, 101)))  # a second apart at --speed 1
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "REDIS_", "SENTINEL_"))}

    async def count() -> int:
        return len([r async for r in consume_records(settings, topic)])

    code, stderr = stopped_when(["replay", str(path), "--topic", topic, "--speed", "1"], {**env, "KAFKA_BROKER": kafka_server},
                                lambda _pid: asyncio.run(count()) >= 3, stop, "the replay sent nothing")
    assert code == {"SIGINT": 130, "SIGTERM": 143}[stop], stderr
    resume = int(stderr.rsplit("--from-line ", 1)[1].split()[0])
    ids = [json.loads(r["value"])["id"] for r in asyncio.run(count_records(settings, topic))]
    assert resume >= 4 and ids[:resume - 1] == [f"p{i}" for i in range(1, resume)]


def paced_replay_under_way(settings: Settings, topic: str, tmp_path: Path):
    """`sentinel replay` of 2,000 posts a second apart at --speed 1 into a new `topic`, once 3 are in it."""
    import os
    import subprocess
    import sys

    asyncio.run(asyncio.wait_for(ensure_topics(settings, [topic]), 60))
    now = time.time() - 3600
    path = tmp_path / "slow.jsonl"
    path.write_text("".join(post(i, iso(now + i)) + "\n" for i in range(1, 2001)))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "REDIS_", "SENTINEL_"))}
    proc = subprocess.Popen([sys.executable, "-m", "sentinel.cli", "replay", str(path), "--topic", topic, "--speed", "1"],
                            env={**env, "KAFKA_BROKER": str(settings.kafka_broker)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while len(asyncio.run(count_records(settings, topic))) < 3:
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            pytest.fail("the replay sent nothing")
    return proc


def test_a_broker_lost_mid_replay_is_one_error_naming_the_line_to_resume_from(tmp_path):
    """The broker killed while a paced replay sends: the replay ends once the producer gives up on
    its first send (its 40 s request timeout). The error said nothing of what was sent, asyncio
    logged each of the batch's other failed sends as "Future exception was never retrieved"
    (hundreds of tracebacks), and failed sends were looked at only every 1000 sends: at this pace
    (a line a second) the replay queued into the dead broker for 1000 s before saying so."""
    import os
    import signal

    from stream.tools.services import start_tansu

    broker_proc, broker = start_tansu(tmp_path)
    try:
        settings, topic = Settings(kafka_broker=broker, partitions=1), f"lost-{uuid.uuid4().hex[:6]}"
        proc = paced_replay_under_way(settings, topic, tmp_path)
        try:
            os.killpg(broker_proc.proc.pid, signal.SIGKILL)
            _, stderr = proc.communicate(timeout=180)  # the request timeout and the reconnects, far from 1000 s
        finally:
            if proc.poll() is None:
                proc.kill()
    finally:
        broker_proc.stop()
    ours = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert proc.returncode == 2 and len(ours) == 1 and ours[0].startswith("error: Kafka: "), stderr[-3000:]
    resume = int(ours[0].rsplit("resume with --from-line ", 1)[1])
    assert resume >= 4 and f"lines before {resume} are all in {topic}" in ours[0], ours[0]
    assert "never retrieved" not in stderr and "Traceback" not in stderr, stderr[-3000:]


def received_unread(port: int) -> bool:
    """Whether bytes wait unread on an open connection to `port` (a frozen broker's: a request sent to it)."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as handle:
            for row in handle.readlines()[1:]:
                fields = row.split()
                established = fields[3] == "01"  # not a closed client's socket (CLOSE_WAIT holds its FIN)
                if established and int(fields[1].rsplit(":", 1)[1], 16) == port and int(fields[4].split(":")[1], 16) > 0:
                    return True
    return False


def test_a_stop_while_the_broker_does_not_answer_exits_within_seconds_naming_the_acknowledged_lines(tmp_path):
    """A SIGTERM (a pod's stop) while the broker answers nothing: the replay waited for its queued
    sends to time out (the producer's 40 s request timeout), past Kubernetes' 30 s grace, and was
    killed there without naming a line. Now a stop gives the sends STOP_DRAIN_S, then abandons them
    uncounted. The broker is frozen (SIGSTOP) rather than killed, so that once it is thawed the
    topic shows every line before the named one arrived."""
    import os
    import signal
    import subprocess

    from stream.tools.services import start_tansu

    broker_proc, broker = start_tansu(tmp_path)
    frozen = False
    try:
        settings, topic = Settings(kafka_broker=broker, partitions=1), f"frozen-{uuid.uuid4().hex[:6]}"
        proc = paced_replay_under_way(settings, topic, tmp_path)
        try:
            os.killpg(broker_proc.proc.pid, signal.SIGSTOP)
            frozen = True
            port = int(broker.rsplit(":", 1)[1])
            deadline = time.monotonic() + 30
            while not received_unread(port):  # a line sent to the frozen broker: a send waits on it
                assert time.monotonic() < deadline and proc.poll() is None, "no send reached the frozen broker"
                time.sleep(0.05)
            proc.send_signal(signal.SIGTERM)
            try:  # the old drain: the 40 s request timeout of the send in flight
                _, stderr = proc.communicate(timeout=20)
            except subprocess.TimeoutExpired:
                pytest.fail("the stopped replay waited on the frozen broker for 20 s (Kubernetes' grace is 30 s)")
        finally:
            if proc.poll() is None:
                proc.kill()
        os.killpg(broker_proc.proc.pid, signal.SIGCONT)
        frozen = False
        ids = [json.loads(r["value"])["id"] for r in asyncio.run(asyncio.wait_for(count_records(settings, topic), 60))]
    finally:
        if frozen:
            os.killpg(broker_proc.proc.pid, signal.SIGCONT)
        broker_proc.stop()
    assert proc.returncode == 143 and "Traceback" not in stderr, stderr[-3000:]
    said = [line for line in stderr.splitlines() if line.startswith("terminated: ")]
    assert len(said) == 1, stderr[-3000:]
    resume = int(said[0].rsplit("--from-line ", 1)[1])
    assert f"{resume - 1} messages sent; lines before {resume} are all in {topic}" in said[0], said[0]
    assert "not acknowledged within 5 s of the stop: not counted as sent" in stderr, stderr[-3000:]
    assert resume >= 4 and ids[:resume - 1] == [f"p{i}" for i in range(1, resume)], (resume, ids)


def test_a_send_that_fails_after_later_ones_were_acknowledged_holds_the_resume_line(tmp_path, monkeypatch):
    """Sends go out per partition, so line 1's can fail after line 2's (another partition) was
    acknowledged. The resume line stays at 1: moving past it would lose line 1; repeating line 2
    is what the docs allow (ids dedupe it). Pure logic: a producer whose sends finish on cue."""
    from types import SimpleNamespace

    import aiokafka
    from aiokafka.errors import KafkaTimeoutError

    class CuedProducer:
        def __init__(self, **_options: object) -> None:
            self.sends: list[asyncio.Future] = []

        async def start(self) -> None: ...

        async def flush(self) -> None: ...

        async def stop(self) -> None: ...

        async def send(self, _topic: str, **_message: object) -> asyncio.Future:
            fut = asyncio.get_running_loop().create_future()
            self.sends.append(fut)
            if len(self.sends) == 3:  # line 1's send fails only once lines 2 and 3 are acknowledged
                fut.set_result(SimpleNamespace(partition=0, offset=0))
                self.sends[0].set_exception(KafkaTimeoutError())
            elif len(self.sends) == 2:
                fut.set_result(SimpleNamespace(partition=1, offset=0))
            return fut

    monkeypatch.setattr(aiokafka, "AIOKafkaProducer", CuedProducer)
    path = tmp_path / "posts.jsonl"
    path.write_text("".join(post(i, "2026-01-01T00:00:00Z") + "\n" for i in range(1, 6)))
    result = ReplayResult()
    with pytest.raises(KafkaTimeoutError):
        asyncio.run(replay_lines(Settings(kafka_broker="127.0.0.1:9"), path, "forum-posts", None, result=result, recorded=None))
    assert result.resume_line == 1 and result.sent == 0


async def count_records(settings: Settings, topic: str) -> list[dict]:
    return [r async for r in consume_records(settings, topic)]


COUNTING_PASSES = """
import atexit, sys
import stream.tools.replay as replay
passes, read = [], replay.read_replay_file
def counted(path):
    passes.append(str(path))
    return read(path)
replay.read_replay_file = counted
atexit.register(lambda: print(f"passes over the file: {len(passes)}", file=sys.stderr))
from sentinel.cli import app
app(prog_name="sentinel")
"""


def test_replay_and_run_read_a_recording_once_for_its_partitions_and_once_to_send(kafka_server, tmp_path):
    """Each pass reads the whole recording (a retained topic's can be gigabytes): the partition
    count it names is found once, however many of --create-topic, --repartition and run's topic
    set-up ask for it, and the sending is the other pass."""
    import os
    import subprocess
    import sys

    settings = Settings(kafka_broker=kafka_server, partitions=2)
    present, created = f"passes-{uuid.uuid4().hex[:6]}", f"passes-made-{uuid.uuid4().hex[:6]}"
    asyncio.run(asyncio.wait_for(ensure_topics(settings, [present]), 60))
    path = tmp_path / "rec.jsonl"
    path.write_text("".join(json.dumps({**RECORD, "partition": p, "value": post(p, iso(1_767_225_600 + p))}) + "\n" for p in range(3)))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "REDIS_", "SENTINEL_"))}

    def passes(*args: str, broker: str | None) -> int:
        r = subprocess.run([sys.executable, "-c", COUNTING_PASSES, *args], capture_output=True, text=True, timeout=180,
                           env={**env, **({"KAFKA_BROKER": broker} if broker else {}), "SENTINEL_BASE": "lexicon"})
        assert r.returncode == 0 and "Traceback" not in r.stderr, r.stdout + r.stderr
        return int(r.stderr.rsplit("passes over the file: ", 1)[1].split()[0])

    assert passes("replay", str(path), "--topic", present, "--repartition", broker=kafka_server) == 2
    assert passes("replay", str(path), "--topic", created, "--create-topic", "--repartition", broker=kafka_server) == 2
    assert passes("run", str(path), broker=None) == 2  # the embedded stack, with the recording's 3 partitions


def test_off_a_terminal_the_progress_is_a_plain_line_every_ten_seconds():
    """Rich draws nothing off a terminal (a Job's log): a long replay, run or eval would be silent
    until it ends. The clock is injected; refresh() is what rich's own thread calls."""
    import io

    from rich.console import Console

    from sentinel.cli import PLAIN_PROGRESS_S, progress

    now = [100.0]
    log = io.StringIO()
    with progress(Console(file=log, force_terminal=False, soft_wrap=True), clock=lambda: now[0], auto_refresh=False) as bar:
        sent, done = bar.add_task("replayed", total=5000), bar.add_task("processed", total=5000)
        bar.update(sent, completed=1200)
        bar.refresh()
        assert log.getvalue() == ""  # not before the first interval
        now[0] += PLAIN_PROGRESS_S
        bar.update(done, completed=900)
        bar.refresh()
        assert log.getvalue() == "replayed 1,200/5,000, processed 900/5,000\n"
        now[0] += PLAIN_PROGRESS_S / 2
        bar.update(sent, completed=2000, detail="event time 2026-01-01T12:00:00Z")
        bar.refresh()
        assert log.getvalue().count("\n") == 1  # at most one line an interval
        now[0] += PLAIN_PROGRESS_S / 2
        bar.refresh()
    assert log.getvalue().splitlines()[1:] == ["replayed 2,000/5,000 (event time 2026-01-01T12:00:00Z), processed 900/5,000"]
    terminal = io.StringIO()
    with progress(Console(file=terminal, force_terminal=True), clock=lambda: now[0], auto_refresh=False) as bar:
        bar.add_task("replayed", total=10)
        now[0] += PLAIN_PROGRESS_S
        bar.refresh()
    assert "replayed 0/10" not in terminal.getvalue()  # a terminal has the bar


def test_off_a_terminal_a_phase_change_is_a_line_at_once():
    """`sentinel run`'s start phase (sentinel/run.py start_phase): a log says when it changed, not
    up to ten seconds later, so a short phase shows too."""
    import io

    from rich.console import Console

    from sentinel.cli import progress

    now = [100.0]
    log = io.StringIO()
    with progress(Console(file=log, force_terminal=False, soft_wrap=True), clock=lambda: now[0], auto_refresh=False) as bar:
        done = bar.add_task("processed", total=5)
        bar.say(done, detail="starting worker: loading the classifier")
        bar.refresh()
        bar.refresh()  # one line a change
        now[0] += 1
        bar.say(done, detail=None)
        bar.update(done, completed=5)
        bar.refresh()
    assert log.getvalue().splitlines() == ["processed 0/5 (starting worker: loading the classifier)", "processed 5/5"]


EVERY_REFRESH = """
import sentinel.cli
sentinel.cli.PLAIN_PROGRESS_S = 0  # a line at every refresh, the last one included: no waiting on the clock
sentinel.cli.app(prog_name="sentinel")
"""


def test_replay_and_record_off_a_terminal_print_progress_lines_and_keep_their_one_line_on_stdout(kafka_server, tmp_path):
    import os
    import subprocess
    import sys

    topic = f"progress-{uuid.uuid4().hex[:6]}"
    asyncio.run(asyncio.wait_for(ensure_topics(Settings(kafka_broker=kafka_server, partitions=1), [topic]), 60))
    start = time.time() - 3600
    path = tmp_path / "posts.jsonl"
    path.write_text("".join(post(i, iso(start + i)) + "\n" for i in range(1, 5)))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "REDIS_", "SENTINEL_"))}
    r = subprocess.run([sys.executable, "-c", EVERY_REFRESH, "replay", str(path), "--topic", topic, "--speed", "100", "--from-line", "2"],
                       capture_output=True, text=True, timeout=120, env={**env, "KAFKA_BROKER": kafka_server})
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"sent 3 messages to {topic}\n"  # scripts parse it
    assert f"replayed 3/3 (event time {iso(start + 4)})" in r.stderr.splitlines(), r.stderr
    out = tmp_path / "rec.jsonl"
    r = subprocess.run([sys.executable, "-c", EVERY_REFRESH, "record", "--topic", topic, "--out", str(out)],
                       capture_output=True, text=True, timeout=120, env={**env, "KAFKA_BROKER": kafka_server, "COLUMNS": "500"})
    assert r.returncode == 0 and r.stdout == f"wrote 3 records to {out}\n", r.stdout + r.stderr
    assert "read 3/?" in r.stderr.splitlines(), r.stderr


def test_from_line_past_the_end_of_the_file_is_an_error_and_just_after_it_sends_nothing(kafka_server, tmp_path):
    """--from-line 50 of a 40-line file is a typo or the wrong file: an error naming its length.
    Its last line + 1 is what Ctrl-C names once every line was acknowledged: nothing left, said so."""
    topic = f"from-{uuid.uuid4().hex[:6]}"
    asyncio.run(asyncio.wait_for(ensure_topics(Settings(kafka_broker=kafka_server, partitions=1), [topic]), 60))
    path = tmp_path / "forty.jsonl"
    path.write_text("".join(post(i, iso(1_767_225_600 + i)) + "\n" for i in range(1, 41)))
    r = sentinel("replay", str(path), "--topic", topic, "--from-line", "50", broker=kafka_server)
    assert r.returncode == 2 and r.stdout == "", r.stdout + r.stderr
    assert f"error: --from-line 50: {path} has only 40 lines (--from-line 41 would send nothing)" in " ".join(r.stderr.split())
    r = sentinel("replay", str(path), "--topic", topic, "--from-line", "41", broker=kafka_server)
    assert r.returncode == 0 and r.stdout == f"sent 0 messages to {topic}\n", r.stdout + r.stderr
    assert "has no lines from --from-line 41 on: nothing to send" in " ".join(r.stderr.split()), r.stderr
    r = sentinel("replay", str(path), "--topic", topic, "--from-line", "40", broker=kafka_server)
    assert r.returncode == 0 and r.stdout == f"sent 1 messages to {topic}\n", r.stdout + r.stderr


def test_stdin_and_a_pipe_are_refused_by_run_and_replay_with_a_line_saying_to_write_a_file(tmp_path):
    """Both read FILE more than once (lines and partitions counted, then sent; --from-line names a
    line of it): a pipe was read empty after the first pass, and `-` was called a missing file.
    Refused before anything else (here the broker is dead, and would otherwise be the error);
    /dev/null, which reads the same each time, is still a file of no lines."""
    import os
    import subprocess
    import sys

    fifo = tmp_path / "posts.fifo"
    os.mkfifo(fifo)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "REDIS_", "SENTINEL_"))}
    posts = post(1, iso(1_767_225_600)) + "\n"
    for command in ("run", "replay"):
        for name in ("-", "/dev/stdin", str(fifo)):
            r = subprocess.run([sys.executable, "-m", "sentinel.cli", command, name], input=posts, capture_output=True, text=True,
                               timeout=60, env={**env, "KAFKA_BROKER": "127.0.0.1:9", "SENTINEL_BASE": "lexicon"})
            said = " ".join(r.stderr.split())
            assert r.returncode == 2 and r.stdout == "" and r.stderr.count("\n") == 1, (command, name, r.stdout + r.stderr)
            assert said == (f"error: {name}: not a regular file (stdin or a pipe?): sentinel {command} reads its file more than once "
                            "(to count its lines and partitions, then to send them); write it to a file first (e.g. zcat "
                            "posts.jsonl.gz > posts.jsonl)"), said
    r = sentinel("replay", str(tmp_path / "missing.jsonl"), broker="127.0.0.1:9")
    assert r.returncode == 2 and " ".join(r.stderr.split()) == f"error: {tmp_path / 'missing.jsonl'} does not exist", r.stderr
    r = sentinel("run", os.devnull, broker=None, extra={"SENTINEL_BASE": "lexicon"})
    assert r.returncode == 2 and "holds no lines: nothing to run" in r.stderr and "embedded stack up" not in r.stderr, r.stderr




def test_a_device_without_end_is_refused_by_run_and_replay(tmp_path):
    """Any character device that was not a terminal passed as a file that reads the same each
    time: /dev/zero's line count read one endless line until memory ran out (MemoryError traceback,
    or the machine's memory). /dev/null alone is taken (a file of no lines, tested above). The
    child's address space is capped so that a regression fails, not fills the machine."""
    import os
    import resource
    import subprocess
    import sys

    def capped() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))

    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "REDIS_", "SENTINEL_"))}
    for command in ("run", "replay"):
        for name in ("/dev/zero", "/dev/urandom"):
            r = subprocess.run([sys.executable, "-m", "sentinel.cli", command, name], capture_output=True, text=True, timeout=120,
                               env={**env, "KAFKA_BROKER": "127.0.0.1:9", "SENTINEL_BASE": "lexicon"}, preexec_fn=capped)
            said = " ".join(r.stderr.split())
            assert r.returncode == 2 and r.stdout == "" and r.stderr.count("\n") == 1, (command, name, r.returncode, said[-300:])
            assert said.startswith(f"error: {name}: not a regular file"), said


def test_run_and_replay_say_what_is_wrong_with_their_file_in_one_line(tmp_path):
    """A file in a folder without search permission was a traceback (exit 1) once typer's `exists`
    check went: Path.exists() raises PermissionError there. A directory and a file without read
    permission were typer's four-line usage box; now one line each, exit 2, before the broker (dead
    here, which would otherwise be the error). A symlink to a file and a relative path pass to it."""
    import os
    import subprocess
    import sys

    from workers import without_root_reads

    posts = tmp_path / "posts.jsonl"
    posts.write_text(post(1, iso(1_767_225_600)) + "\n")
    (tmp_path / "link.jsonl").symlink_to("posts.jsonl")
    (tmp_path / "dangling.jsonl").symlink_to("nowhere.jsonl")
    (tmp_path / "folder").mkdir()
    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / "posts.jsonl").write_text(posts.read_text())
    unreadable = tmp_path / "unreadable.jsonl"
    unreadable.write_text(posts.read_text())
    unreadable.chmod(0)
    locked.chmod(0)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "REDIS_", "SENTINEL_"))}
    env.update(KAFKA_BROKER="127.0.0.1:9", SENTINEL_BASE="lexicon", COLUMNS="300")
    try:
        for command in ("run", "replay"):
            for name, wanted in (("locked/posts.jsonl", "error: cannot read locked/posts.jsonl: Permission denied"),
                                 ("unreadable.jsonl", "error: cannot read unreadable.jsonl: Permission denied"),
                                 ("folder", f"error: folder is a directory: sentinel {command} reads one JSONL file"),
                                 ("dangling.jsonl", "error: dangling.jsonl does not exist"),
                                 ("posts.jsonl/x", "error: cannot read posts.jsonl/x: Not a directory")):
                r = subprocess.run([*without_root_reads(), sys.executable, "-m", "sentinel.cli", command, name], capture_output=True,
                                   text=True, timeout=60, env=env, cwd=tmp_path)
                assert (r.returncode, r.stdout, r.stderr) == (2, "", wanted + "\n"), (command, name, r.returncode, r.stdout + r.stderr)
        for name in ("link.jsonl", "posts.jsonl", str(tmp_path / "link.jsonl")):  # past the file's checks, to the dead broker
            r = subprocess.run([*without_root_reads(), sys.executable, "-m", "sentinel.cli", "replay", name], capture_output=True,
                               text=True, timeout=60, env=env, cwd=tmp_path)
            assert r.returncode == 2 and r.stderr.startswith("error: Kafka:") and r.stderr.count("\n") == 1, (name, r.stderr)
    finally:
        locked.chmod(0o755)


def test_a_resume_past_every_json_object_sends_the_rest_with_one_warning(kafka_server, tmp_path):
    """A file of posts with bad lines at its end, resumed from the first of them (the line a Ctrl-C
    names once every post was acknowledged): they are sent, as the whole file's replay sends them,
    for the worker to dead-letter; refusing would leave that resume impossible. It was silent."""
    from stream.tools.replay import no_json_object

    topic = f"tail-{uuid.uuid4().hex[:6]}"
    asyncio.run(asyncio.wait_for(ensure_topics(Settings(kafka_broker=kafka_server, partitions=1), [topic]), 60))
    path = tmp_path / "tail.jsonl"
    path.write_text("".join(post(i, iso(1_767_225_600 + i)) + "\n" for i in range(1, 4)) + "text,label\n\n[1]\n")
    assert no_json_object(path, 4) == "line 4: not JSON (Expecting value)" and no_json_object(path, 3) is None
    r = sentinel("replay", str(path), "--topic", topic, "--from-line", "4", broker=kafka_server)
    said = " ".join(r.stderr.split())
    assert r.returncode == 0 and r.stdout == f"sent 2 messages to {topic}\n", r.stdout + r.stderr
    assert said.count("warning:") == 1 and (f"warning: {path}: no line from --from-line 4 on is a JSON object (line 4: not JSON "
                                            "(Expecting value)): they are sent as the whole file's replay sends them, and the worker "
                                            "dead-letters them") in said, said
    r = sentinel("replay", str(path), "--topic", topic, "--from-line", "3", broker=kafka_server)
    assert r.returncode == 0 and r.stdout == f"sent 3 messages to {topic}\n" and "warning" not in r.stderr, r.stdout + r.stderr
    values = [r["value"] for r in asyncio.run(count_records(Settings(kafka_broker=kafka_server), topic))]
    assert values[:2] == ["text,label", "[1]"], values


class Insides:
    """A producer's `_sender`, as aiokafka 0.11-0.14 has it: the task that sends."""

    def __init__(self, task: asyncio.Task):
        self.sender_task = task


class Producer:
    """A producer whose stop() is its plain stop: the queued sends delivered or timed out (`stop_s`)."""

    def __init__(self, stop_s: float, sender: asyncio.Task | None = None):
        self.stop_s = stop_s
        if sender is not None:
            self._sender = Insides(sender)

    async def stop(self) -> None:
        if hasattr(self, "_sender"):  # as aiokafka's: until the sender ends or the sends are done
            await asyncio.wait([self._sender.sender_task], timeout=self.stop_s)
        else:
            await asyncio.sleep(self.stop_s)


def test_a_bounded_stop_without_aiokafkas_insides_falls_back_to_the_plain_stop(monkeypatch):
    """stop_producer reaches into aiokafka's private `producer._sender.sender_task`. Where an
    aiokafka lacks it, the stop was an AttributeError traceback in the middle of a Ctrl-C; where its
    sender swallows every cancellation, the cancel loop never ended. Now the plain stop in both,
    with one warning; aiokafka's own sender (ended by a second cancel) is still cut short."""
    import stream.tools.replay as replay_module
    from stream.tools.replay import stop_producer

    monkeypatch.setattr(replay_module, "STOP_CANCEL_S", 2.0, raising=False)  # four rounds of cancel and wait

    async def stopped(producer: Producer) -> tuple[bool, list[str]]:
        said: list[str] = []
        abandoned = await asyncio.wait_for(stop_producer(producer, 0.05, said.append), 30)
        return abandoned, said

    async def stubborn(release: asyncio.Event) -> None:
        while not release.is_set():
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:  # swallowed, as a changed sender might
                pass

    async def in_flight() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:  # aiokafka's: awaits the requests in flight, which a second cancel ends
            await asyncio.sleep(3600)

    async def main() -> None:
        assert await stopped(Producer(0.3)) == (False, ["the queued sends could not be abandoned (this aiokafka has no "
                                                        "producer._sender.sender_task): waiting for them to be delivered or to time out"])
        release = asyncio.Event()
        sender = asyncio.ensure_future(stubborn(release))
        try:
            assert await stopped(Producer(0.3, sender)) == (False, ["the queued sends could not be abandoned (its sender task did "
                                                                   "not end): waiting for them to be delivered or to time out"])
        finally:  # else asyncio.run would wait for it for ever
            release.set()
            sender.cancel()
            await asyncio.wait([sender])
        sender = asyncio.ensure_future(in_flight())
        assert await stopped(Producer(3600, sender)) == (True, []) and sender.cancelled()

    asyncio.run(main())


def stopped_mid_read(argv: list[str], env: dict[str, str], path: Path, stop: str) -> tuple[int, str]:
    """Run `sentinel ARGV`, and send it `stop` (SIGINT for Ctrl-C, SIGTERM) while it is part way
    through reading `path` (its open file's position past the start, short of the end): its exit
    status and stderr."""
    import os

    from workers import stopped_when

    def part_way(pid: int) -> bool:
        size = path.stat().st_size
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                if os.readlink(f"/proc/{pid}/fd/{fd}") == str(path):
                    pos = int(Path(f"/proc/{pid}/fdinfo/{fd}").read_text().split()[1])
                    if 0 < pos < size:
                        return True
        except (FileNotFoundError, ProcessLookupError):  # the file closed as it was looked at
            pass
        return False

    return stopped_when(argv, env, part_way, stop, "the file was never read part way")


@pytest.mark.parametrize("stop", ["SIGINT", "SIGTERM"])
def test_a_replay_stopped_while_it_counts_the_file_ends_as_one_stopped_mid_send(tmp_path, stop):
    """Before the event loop (the file's lines counted: a recording of a retained topic takes a
    while), a SIGTERM ended the process at once (-15, nothing said) and a Ctrl-C was exit 130 with
    nothing said. Both now end as a stop mid-replay does: its exit and its line naming where to resume.
    No broker is needed: nothing is sent before the count ends."""
    import os

    path = tmp_path / "big.jsonl"
    path.write_bytes(b"{}\n" * 30_000_000)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "REDIS_", "SENTINEL_"))}
    code, stderr = stopped_mid_read(["replay", str(path)], {**env, "KAFKA_BROKER": "127.0.0.1:9"}, path, stop)
    how = {"SIGINT": "interrupted", "SIGTERM": "terminated"}[stop]
    assert code == {"SIGINT": 130, "SIGTERM": 143}[stop], stderr
    assert f"{how}: 0 messages sent; lines before 1 are all in forum-posts: resume with --from-line 1" in " ".join(stderr.split()), stderr
    assert "Traceback" not in stderr, stderr


# `replay_lines` against a broker that takes the connection and never answers, so its producer's
# start() waits; a Ctrl-C comes while it does. ResourceWarnings shown (Python hides them by default).
_CTRL_C_DURING_THE_PRODUCERS_START = """
import asyncio, os, signal, socket, sys, warnings
from pathlib import Path
warnings.simplefilter("always", ResourceWarning)
from stream.settings import Settings
from stream.tools.replay import replay_lines
from stream.tools.services import run_async

silent = socket.create_server(("127.0.0.1", 0))
port = silent.getsockname()[1]

async def main():
    loop = asyncio.get_running_loop()
    loop.call_later(0.5, os.kill, os.getpid(), signal.SIGINT)
    await replay_lines(Settings(kafka_broker=f"127.0.0.1:{port}"), Path(sys.argv[1]), "posts", None)

try:
    run_async(main())
except KeyboardInterrupt:
    import gc
    gc.collect()
    print("interrupted", flush=True)
silent.close()
"""


def test_a_ctrl_c_while_the_replay_producer_starts_stops_it(tmp_path):
    """The producer's start() came before the `try` whose `finally` stops it: a Ctrl-C while it
    waited for a broker left it unstopped (asyncio's "Unclosed AIOKafkaProducer", its connection
    open). It is stopped now; aiokafka's stop of a producer that never started is safe."""
    import os
    import signal
    import subprocess
    import sys

    path = tmp_path / "posts.jsonl"
    path.write_text(post(1, iso(time.time())) + "\n")
    r = subprocess.run([sys.executable, "-c", _CTRL_C_DURING_THE_PRODUCERS_START, str(path)], capture_output=True, text=True, timeout=60,
                       cwd=os.getcwd(), preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert r.stdout.strip() == "interrupted", r.stdout + r.stderr
    assert "Unclosed" not in r.stderr and "Traceback" not in r.stderr, r.stderr


@pytest.mark.parametrize("stop", ["SIGINT", "SIGTERM"])
def test_a_run_stopped_while_it_counts_the_file_ends_as_one_stopped_mid_run(tmp_path, stop, cache_dir):
    """`sentinel run` counts FILE and reads its partitions before the embedded stack starts: a
    SIGTERM there ended the process at once (-15), a Ctrl-C was exit 130 with nothing said. Both
    end as a stop mid-run does now, naming the outputs not written."""
    import os

    path = tmp_path / "big.jsonl"
    path.write_bytes(b"{}\n" * 30_000_000)
    alerts = tmp_path / "alerts.jsonl"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "REDIS_", "SENTINEL_"))}
    env |= {"SENTINEL_BASE": "lexicon", "SENTINEL_CACHE_DIR": str(cache_dir)}
    code, stderr = stopped_mid_read(["run", str(path), "--alerts-out", str(alerts)], env, path, stop)
    how = {"SIGINT": "interrupted", "SIGTERM": "terminated"}[stop]
    assert code == {"SIGINT": 130, "SIGTERM": 143}[stop], stderr
    said = " ".join(stderr.split())
    assert f"{how}: the run did not finish, so nothing was written to --alerts-out {alerts}" in said, stderr
    assert "Traceback" not in stderr and not alerts.exists(), stderr
