"""A worker whose SENTINEL_PARTITIONS is not the posts topic's partition count refuses to start,
naming both numbers: the alert frontier waits for partitions 0..SENTINEL_PARTITIONS-1, so judging
would be wrong (early with too few, stalled with too many) for as long as it ran; and one already
running exits the same way when the topic outgrows its count."""

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
    refused = (f"error: topic {topic} has 6 partitions but SENTINEL_PARTITIONS is 4: refusing to start; "
               f"set SENTINEL_PARTITIONS=6 and roll the workers")
    assert refused in " ".join(r.stderr.split()), r.stderr[-3000:]
    # Worded as a running worker's exit when the topic outgrows its count (one line to grep for,
    # one fix): until session 55 the two put the numbers in opposite orders.
    from stream.worker import outgrown_message
    running = outgrown_message(Settings(partitions=4, topic_posts=topic), 6, counted=True)
    assert running.replace("exiting without committing", "refusing to start") in " ".join(r.stderr.split()), r.stderr[-3000:]
    assert "partitions assigned" not in r.stderr  # stopped before joining the group


def test_a_running_worker_exits_uncommitted_when_the_topic_outgrows_its_count(kafka_server, redis_server, cache_dir, tmp_path):
    """Partitions added while a worker runs (docs/operations.md, "Scale"): at the rebalance that
    follows, the worker reads the topic's count, logs both numbers at ERROR and exits 2 before
    judging another batch with the old count. Tansu cannot add partitions, so the topic is deleted
    and made again with two: to the worker's group the same change of the topic's metadata."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    import workers

    # Faust's own setting (read from the environment): the group leader refreshes the topic's
    # metadata every 5 s rather than every 5 min, so the rebalance comes within the test's time.
    env = workers.worker_env("outgrown", kafka_server, redis_server, cache_dir, SENTINEL_WEB_HOST="127.0.0.1", PYTHONUNBUFFERED="1",
                             CONSUMER_METADATA_MAX_AGE_MS="5000")
    worker = workers.Worker(env, tmp_path / "outgrown.log")

    async def remake(topic: str) -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka_server)
        await admin.start()
        try:
            await admin.delete_topics([topic])
            await admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)])
        finally:
            await admin.close()

    try:
        workers.wait_until(lambda: worker.partitions() == {0}, 120, "the worker to own partition 0", [worker])
        asyncio.run(asyncio.wait_for(remake("outgrown-posts"), 60))
        workers.wait_until(lambda: worker.proc.poll() is not None, 180, "the worker to see the topic's two partitions and exit", [])
        log = worker.log_path.read_text(errors="replace")
        assert worker.proc.returncode == 2 and "Traceback" not in log, worker.log_tail()
        assert ("topic outgrown-posts has 2 partitions but SENTINEL_PARTITIONS is 1: exiting without committing; "
                "set SENTINEL_PARTITIONS=2") in log, worker.log_tail()
    finally:
        worker.close()


def test_the_count_read_at_an_assignment_gives_up_within_a_third_of_the_session_timeout():
    """aiokafka sends no heartbeat while the assignment callback runs, so the count's read must end
    well inside the session timeout (6 s on `sentinel run`'s embedded stack): a wait of 10 s there,
    against a broker that takes the connection and never answers, got the member expelled and the
    group rebalanced again at every assignment. The read gives up, and the assignment goes on with
    the assigned numbers alone (None)."""
    import socket
    import time

    from stream.worker import posts_partitions_now

    with socket.socket() as hung:  # a real listener that accepts and never answers: a hung broker
        hung.bind(("127.0.0.1", 0))
        hung.listen(8)
        settings = Settings(kafka_broker=f"127.0.0.1:{hung.getsockname()[1]}", session_timeout=6.0)
        started = time.monotonic()
        assert asyncio.run(posts_partitions_now(settings)) is None
        took = time.monotonic() - started
    assert took < settings.session_timeout / 2, took


def test_a_count_known_only_from_an_assigned_partition_is_not_named_as_the_one_to_set():
    """Where the topic's count could not be read at the assignment, partition 5 assigned says only
    that the topic has at least 6: the line said `has 6 partitions ... set SENTINEL_PARTITIONS=6`
    for a topic of 8, and the operator who followed it met the start-up refusal on the next roll."""
    from stream.worker import outgrown_message

    settings = Settings(partitions=4, topic_posts="forum-posts")
    read = outgrown_message(settings, 8, counted=True)
    assert read.startswith("topic forum-posts has 8 partitions but SENTINEL_PARTITIONS is 4: exiting without committing; "
                           "set SENTINEL_PARTITIONS=8 and roll the workers"), read
    guessed = outgrown_message(settings, 6, counted=False)
    assert "has at least 6 partitions" in guessed and "SENTINEL_PARTITIONS=6" not in guessed, guessed
