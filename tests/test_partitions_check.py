"""A worker whose SENTINEL_PARTITIONS is not the posts topic's partition count refuses to start,
naming both numbers: the alert frontier waits for partitions 0..SENTINEL_PARTITIONS-1, so judging
would be wrong (early with too few, stalled with too many) for as long as it ran."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid

from stream.kafka import ensure_topics, partition_count
from stream.settings import Settings
from stream.tools.services import free_port


def test_a_worker_refuses_a_partition_count_the_topic_does_not_have(kafka_server, tmp_path):
    topic = f"parts-{uuid.uuid4().hex[:6]}"
    asyncio.run(asyncio.wait_for(ensure_topics(Settings(kafka_broker=kafka_server, partitions=6), [topic]), 60))
    assert asyncio.run(asyncio.wait_for(partition_count(Settings(kafka_broker=kafka_server), topic), 60)) == 6
    assert asyncio.run(asyncio.wait_for(partition_count(Settings(kafka_broker=kafka_server), topic + "-none"), 60)) is None
    env = {**os.environ, "SENTINEL_BASE": "lexicon", "KAFKA_BROKER": kafka_server, "REDIS_URL": "redis://127.0.0.1:9/0",
           "SENTINEL_CACHE_DIR": str(tmp_path), "SENTINEL_TOPIC_POSTS": topic, "SENTINEL_PARTITIONS": "4",
           "SENTINEL_APP_ID": f"parts-{uuid.uuid4().hex[:6]}", "SENTINEL_WEB_PORT": str(free_port())}  # checked first: not 6066
    for name in ("sentiment", "dlq", "alerts"):
        env[f"SENTINEL_TOPIC_{name.upper()}"] = f"{topic}-{name}"
    r = subprocess.run([sys.executable, "-m", "sentinel.cli", "worker"], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-3000:]
    assert f"error: SENTINEL_PARTITIONS is 4 but topic {topic} has 6 partitions: set SENTINEL_PARTITIONS=6" in r.stderr, r.stderr[-3000:]
    assert "partitions assigned" not in r.stderr  # stopped before joining the group
