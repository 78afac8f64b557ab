"""`sentinel run` end to end: a real broker, a real redis-server, a real worker process, the tiny model.

The expected numbers are computed independently from the input file, not from the worker's code.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
import redis

from stream.keys import bucket_key, index_key
from workers import sentinel, worker_env

T0 = 1_767_225_600  # 2026-01-01T00:00:00Z
ASSETS = ["BTC", "ETH", "SOL"]


def good_posts(n: int) -> list[dict]:
    return [
        {
            "id": f"p{i}",
            "text": f"${ASSETS[i % 3]} post number {i} about the price",
            "created_at": T0 + 3600 + i * 37,
            "channel": ["general", "trading"][i % 2],
            "source": "discord",
        }
        for i in range(n)
    ]


BAD_LINES = {
    b"this is not json": "invalid_json",
    b'{"id": "u", "text": "\xff\xfe broken utf8", "created_at": 1767225600}': "invalid_utf8",
    b'["not", "an", "object"]': "not_an_object",
    b'{"id": "m", "created_at": 1767225600}': "missing_field",
    b'{"id": "w", "text": 42, "created_at": 1767225600}': "invalid_field",
    b'{"id": "e", "text": "   ", "created_at": 1767225600}': "empty_text",
    b'{"id": "f", "text": "far future", "created_at": "2999-01-01T00:00:00Z"}': "timestamp_out_of_range",
    b'{"id": "n", "text": "nan time", "created_at": NaN}': "invalid_json",
}


def write_stream(path: Path, posts: list[dict], late: dict) -> None:
    lines = [json.dumps(p).encode() for p in posts]
    lines.insert(10, json.dumps(posts[3]).encode())  # a duplicate delivery
    for offset, bad in enumerate(BAD_LINES):
        lines.insert(20 + offset * 5, bad)
    lines.append(json.dumps(late).encode())
    path.write_bytes(b"\n".join(lines) + b"\n")


def bucket_counts(redis_url: str, scopes: set[str]) -> Counter:
    """(scope, bucket start) -> post count, as the worker left them in Redis."""
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    counts: Counter = Counter()
    for scope in scopes:
        for b in r.zrange(index_key(scope), 0, -1):
            # A bucket whose posts were all over their author's cap keeps only its samples.
            if n := int(r.hget(bucket_key(scope, int(b)), "n") or 0):
                counts[(scope, int(b))] = n
    return counts


@pytest.fixture()
def stream_env(tiny_model_dir, cache_dir, kafka_server, redis_server, request):
    redis.Redis.from_url(redis_server).flushdb()
    name = request.node.name.replace("_", "-")[:40]
    return worker_env(
        name, kafka_server, redis_server, cache_dir,
        SENTINEL_BASE=str(tiny_model_dir), SENTINEL_DTYPE="float32",
        # One partition gives a total order, so which post is late is decided by the file alone.
        # Retention is the least the sequential detector accepts (window + baseline, 90,060 s).
        SENTINEL_RETENTION="26h", SENTINEL_MAX_BATCH="16",
    )


def test_run_counts_scopes_dlq_and_outputs(tmp_path, stream_env, redis_server):
    posts = good_posts(150)
    newest = max(p["created_at"] for p in posts)
    late = {"id": "late", "text": "$BTC very old news", "created_at": newest - 27 * 3600}
    data = tmp_path / "stream.jsonl"
    write_stream(data, posts, late)

    summary_path = tmp_path / "summary.json"
    r = sentinel(["run", str(data), "--summary-json", str(summary_path), "--alerts-out", str(tmp_path / "alerts.jsonl")], stream_env)
    assert r.returncode == 0, r.stdout + r.stderr
    summary = json.loads(summary_path.read_text())

    total_lines = len(posts) + 1 + len(BAD_LINES) + 1
    assert {k: summary[k] for k in ("consumed", "valid", "dlq", "duplicates", "late_dropped", "processed")} == {
        "consumed": total_lines,
        "valid": len(posts) + 2,  # the duplicate and the late post are valid posts
        "dlq": len(BAD_LINES),
        "duplicates": 1,
        "late_dropped": 1,
        "processed": len(posts),
    }
    assert sum(summary["labels"].values()) == len(posts)
    assert summary["alerts"] == 0 and summary["wall_s"] > 0 and summary["posts_per_s"] > 0
    assert (tmp_path / "alerts.jsonl").exists()

    # Per-scope bucket counts, computed independently from the file.
    expected: Counter = Counter()
    for p in posts:
        bucket = p["created_at"] // 60 * 60
        for scope in ("all", f"asset:{p['text'][1:4]}", f"channel:{p['channel']}", "source:discord"):
            expected[(scope, bucket)] += 1
    assert bucket_counts(redis_server, {s for s, _ in expected}) == expected

    # The DLQ holds every bad message with its reason and source coordinates.
    dlq_file = tmp_path / "dlq.jsonl"
    rec = sentinel(["record", "--topic", stream_env["SENTINEL_TOPIC_DLQ"], "--out", str(dlq_file), "--max-idle", "3"], stream_env)
    assert rec.returncode == 0, rec.stderr
    dlq = [json.loads(json.loads(line)["value"]) for line in dlq_file.read_text().splitlines()]
    assert Counter(d["reason"] for d in dlq) == Counter(BAD_LINES.values())
    assert all(d["source_topic"] == stream_env["SENTINEL_TOPIC_POSTS"] and d["source_offset"] >= 0 for d in dlq)
    utf8 = next(d for d in dlq if d["reason"] == "invalid_utf8")
    assert utf8["value_encoding"] == "base64"

    # post-sentiment: one record per processed post (the redelivered one is published twice:
    # publishing is at-least-once, windows are effectively-once).
    out_file = tmp_path / "sentiment.jsonl"
    rec = sentinel(["record", "--topic", stream_env["SENTINEL_TOPIC_SENTIMENT"], "--out", str(out_file), "--max-idle", "3"], stream_env)
    results = [json.loads(json.loads(line)["value"]) for line in out_file.read_text().splitlines()]
    assert {r["id"] for r in results} == {p["id"] for p in posts}
    first = next(r for r in results if r["id"] == "p0")
    assert first["assets"] == ["BTC"] and first["label"] in ("positive", "negative", "neutral")
    assert first["model"]["base"] == stream_env["SENTINEL_BASE"] and first["created_at"] == "2026-01-01T01:00:00Z"


def test_replay_of_a_recording_reproduces_the_stream(tmp_path, stream_env):
    """record writes (topic, partition, offset, timestamp, key, value); replay accepts it back."""
    posts = good_posts(20)
    src = tmp_path / "posts.jsonl"
    src.write_text("\n".join(json.dumps(p) for p in posts) + "\nnot json\n")
    r = sentinel(["replay", str(src)], stream_env)
    assert r.returncode == 0 and "sent 21" in r.stdout, r.stderr
    recording = tmp_path / "rec.jsonl"
    r = sentinel(["record", "--topic", stream_env["SENTINEL_TOPIC_POSTS"], "--out", str(recording), "--max-idle", "3"], stream_env)
    rows = [json.loads(line) for line in recording.read_text().splitlines()]
    assert len(rows) == 21 and {"topic", "partition", "offset", "timestamp", "key", "value"} <= set(rows[0])
    assert rows[0]["key"] == "p0" and json.loads(rows[0]["value"]) == posts[0]

    env = {**stream_env, "SENTINEL_TOPIC_POSTS": stream_env["SENTINEL_TOPIC_POSTS"] + "-again"}
    r = sentinel(["replay", str(recording)], env)
    assert r.returncode == 0, r.stderr
    again = tmp_path / "again.jsonl"
    sentinel(["record", "--topic", env["SENTINEL_TOPIC_POSTS"], "--out", str(again), "--max-idle", "3"], env)
    assert [json.loads(line)["value"] for line in again.read_text().splitlines()] == [row["value"] for row in rows]


def test_run_on_discord_import_matches_an_independent_count(tmp_path, stream_env, redis_server):
    """A few thousand real Discord posts (../shared): exact per-scope counts from the file, the
    author cap (SENTINEL_AUTHOR_CAP, 3) counted independently from the labels the worker published:
    per scope, hour and label an author's first 3 posts by (event time, id)."""
    from conftest import shared_file

    from stream.assets import detect_assets

    src = shared_file("seed", "meritcircle_cleaned_discord.csv")
    posts_file = tmp_path / "discord.jsonl"
    r = sentinel(["import-discord", str(src), "--out", str(posts_file), "--limit", "3000"], stream_env)
    assert r.returncode == 0, r.stderr
    posts = [json.loads(line) for line in posts_file.read_text(encoding="utf-8").split("\n") if line]

    # Retention longer than the data: every bucket stays, so all of them can be compared.
    env = {**stream_env, "SENTINEL_RETENTION": "3650d", "SENTINEL_MAX_BATCH": "64"}
    summary_path = tmp_path / "summary.json"
    r = sentinel(["run", str(posts_file), "--summary-json", str(summary_path)], env)
    assert r.returncode == 0, r.stdout + r.stderr
    summary = json.loads(summary_path.read_text())

    from datetime import datetime

    published = tmp_path / "sentiment.jsonl"
    r = sentinel(["record", "--topic", env["SENTINEL_TOPIC_SENTIMENT"], "--out", str(published), "--max-idle", "3"], env)
    assert r.returncode == 0, r.stderr
    label = {v["id"]: v["label"] for v in (json.loads(json.loads(line)["value"]) for line in published.read_text().splitlines())}

    expected: Counter = Counter()
    by_author: dict[tuple, list[tuple[float, str]]] = {}
    seen, newest, late = set(), float("-inf"), 0
    for p in posts:  # one partition: the worker sees the file's order
        ts = datetime.fromisoformat(p["created_at"].replace("Z", "+00:00")).timestamp()
        newest = max(newest, ts)
        if ts < newest - 3650 * 86400:
            late += 1
            continue
        if p["id"] in seen:
            continue
        seen.add(p["id"])
        for scope in ["all", "channel:meritcircle", "source:discord", *(f"asset:{a}" for a in detect_assets(p["text"]))]:
            if p.get("author"):
                by_author.setdefault((scope, ts // 3600, label[p["id"]], p["author"]), []).append((ts, p["id"]))
            else:
                expected[(scope, int(ts // 60 * 60))] += 1
    capped = 0
    for (scope, *_), written in by_author.items():
        for ts, _ in sorted(written)[:3]:
            expected[(scope, int(ts // 60 * 60))] += 1
        capped += max(len(written) - 3, 0) if scope == "all" else 0
    assert summary["consumed"] == len(posts) and summary["dlq"] == 0
    assert summary["late_dropped"] == late and summary["processed"] == len(seen)
    assert summary["capped"] == capped and capped > 100, capped  # real chatter: a few authors write most of it

    assert bucket_counts(redis_server, {s for s, _ in expected}) == expected
