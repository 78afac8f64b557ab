"""`sentinel replay` / `sentinel run` read their file line by line: a record line that cannot be
decoded is sent as-is (the DLQ names it), a post is never taken for a record, a bad event time
does not hold the pacing, and a line the broker refuses is skipped with its FILE:LINE."""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from pathlib import Path

import pytest

from stream.kafka import ensure_topics
from stream.settings import Settings
from stream.tools.replay import consume_records, pace_time, replay, replay_item, replay_lines

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
