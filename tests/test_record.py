"""`consume_records` (sentinel record, and sentinel run's alert read) reads up to the end of each
partition when it starts: every record, on every partition, with no idle wait deciding when it is
done, even where the broker reports an end offset short of the last records."""

from __future__ import annotations

import asyncio
import uuid

import pytest

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


def test_reads_to_the_last_record_where_the_broker_reports_a_short_end(tmp_path):
    """Tansu on S3 storage answers ListOffsets(latest) with the base offset + 1 of the oldest
    record batch of the last busy second: records written in a burst after it were cut from every
    read that stopped there (once in CI: the last 305 results of the broker-restart fault test).
    consume_records reads to the fetch's high watermark, and sentinel run's committed lag counts
    from it."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

    from sentinel.run import committed_lag
    from stream.tools.services import start_s3, start_tansu

    COUNT = 8000  # about 2,000 a partition: more than one read (1,000 records) takes

    s3_proc, s3 = start_s3(tmp_path)
    broker_proc, broker = start_tansu(tmp_path, s3=s3)
    settings = Settings(kafka_broker=broker, partitions=4, topic_posts="burst", app_id="test-short-end")

    async def scenario() -> tuple[int, dict, list[dict], int]:
        await ensure_topics(settings, ["burst"])
        producer = AIOKafkaProducer(bootstrap_servers=broker, acks="all", linger_ms=5)
        await producer.start()
        try:
            sent = [await producer.send("burst", f"m{i}".encode(), key=f"k{i}".encode()) for i in range(COUNT)]
            await producer.flush()
            acked = [await future for future in sent]
        finally:
            await producer.stop()
        ends = {p: 1 + max(m.offset for m in acked if m.partition == p) for p in range(4)}
        probe = AIOKafkaConsumer(bootstrap_servers=broker, group_id=settings.app_id, enable_auto_commit=False)
        await probe.start()
        try:
            tps = [TopicPartition("burst", p) for p in range(4)]
            reported = sum((await probe.end_offsets(tps)).values())
            probe.assign(tps)
            await probe.commit({tp: ends[tp.partition] // 2 for tp in tps})  # the group halfway through
        finally:
            await probe.stop()
        records = [r async for r in consume_records(settings, "burst")]
        return reported, ends, records, await committed_lag(settings)

    try:
        reported, ends, records, lag = asyncio.run(asyncio.wait_for(scenario(), 180))
    finally:
        broker_proc.stop()
        s3_proc.stop()
    print(f"ListOffsets(latest) summed to {reported} of {COUNT} records")  # the broker's short answer, when it gives one
    assert sorted(r["value"] for r in records) == sorted(f"m{i}" for i in range(COUNT))
    assert lag == sum(end - end // 2 for end in ends.values())


def test_the_committed_lag_of_a_topic_the_metadata_leaves_out_is_unknown_not_zero(kafka_server):
    """`sentinel run` waits until the counters say every post was consumed and the group's committed
    lag is 0: the lag is the half that says the last batch was judged (its counters are written
    before it judges). A topic the broker's metadata leaves out (aiokafka drops one whose entry
    carries an error) has no end to read: the lag is unknown (None, the wait goes on), where it
    read 0 over no partitions. Once the topic is listed, its records count."""
    from sentinel.run import committed_lag

    topic = f"lag-{uuid.uuid4().hex[:8]}"
    settings = Settings(kafka_broker=kafka_server, partitions=2, topic_posts=topic, app_id=f"test-{topic}")

    async def scenario() -> tuple[int | None, int | None]:
        unlisted = await committed_lag(settings)
        await ensure_topics(settings, [topic])
        await produce(settings, topic, 6)
        return unlisted, await committed_lag(settings)

    unlisted, listed = asyncio.run(asyncio.wait_for(scenario(), 120))
    assert unlisted is None
    assert listed == 6  # nothing committed: every record is lag


def test_record_of_a_topic_the_broker_lacks_is_an_error_naming_it_and_creates_nothing(kafka_server, tmp_path):
    """`sentinel record --topic` with a typo: an error naming the topic and the broker's topics, exit
    2 and no file (not "wrote 0 records" and an empty one), and the topic is not created by the read."""
    import os
    import subprocess
    import sys

    from aiokafka import AIOKafkaConsumer

    settings = Settings(kafka_broker=kafka_server, partitions=2)
    present = f"record-{uuid.uuid4().hex[:6]}"
    missing = present + "s"  # a typo of a topic there: named first among the broker's, however many it has

    async def topics() -> set[str]:
        consumer = AIOKafkaConsumer(bootstrap_servers=kafka_server)
        await consumer.start()
        try:
            return await consumer.topics()
        finally:
            await consumer.stop()

    asyncio.run(asyncio.wait_for(ensure_topics(settings, [present]), 60))
    env = {**os.environ, "KAFKA_BROKER": kafka_server}
    out = tmp_path / "x.jsonl"

    def record(topic: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "sentinel.cli", "record", "--topic", topic, "--out", str(out)],
                              capture_output=True, text=True, env=env, timeout=120)

    r = record(missing)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    line = r.stderr.strip()
    assert line.startswith(f"error: --topic: topic '{missing}' does not exist on the broker (its topics: {present}"), line
    assert not out.exists()
    assert missing not in asyncio.run(asyncio.wait_for(topics(), 60))  # the read created nothing
    r = record(present)  # an empty topic that is there: an empty file, and it says so
    shown = "".join(r.stdout.split())  # Rich wraps a long path at 80 columns
    assert r.returncode == 0 and f"wrote0recordsto{out}" in shown and out.read_text() == "", r.stdout + r.stderr


def test_topics_are_read_from_fresh_metadata_not_the_consumers_bootstrap_view(monkeypatch):
    """On Apache Kafka the consumer's own view after bootstrap holds no topic (an empty topic list
    asks for none); Tansu answers it with every topic, so only a stand-in consumer shows the
    difference: the partition count and an unknown topic are read from every topic's metadata."""
    import aiokafka
    from aiokafka.cluster import ClusterMetadata

    from stream.kafka import partition_count
    from stream.tools.replay import UnknownTopic, consume_records

    class Fresh:  # what every topic's metadata, asked for now, says
        def topics(self):
            return {"forum-posts"}

        def partitions_for_topic(self, topic):
            return {0, 1} if topic == "forum-posts" else None

    class Client:
        cluster = ClusterMetadata()  # what bootstrap left: nothing

        async def fetch_all_metadata(self):
            return Fresh()

    class Consumer:
        def __init__(self, *args, **kwargs):
            self._client = Client()

        async def start(self):
            pass

        async def stop(self):
            pass

        async def topics(self):  # aiokafka's: fetches into a copy, leaves _client.cluster as it was
            return {"forum-posts"}

        def partitions_for_topic(self, topic):
            return self._client.cluster.partitions_for_topic(topic)

        def assign(self, partitions):
            assigned.extend(partitions)

        async def seek_to_beginning(self, *partitions):
            raise Assigned  # far enough: the read found the topic's partitions

    class Assigned(Exception):
        pass

    assigned = []
    monkeypatch.setattr(aiokafka, "AIOKafkaConsumer", Consumer)
    settings = Settings(kafka_broker="127.0.0.1:9")
    assert asyncio.run(partition_count(settings, "forum-posts")) == 2

    async def read(topic):
        return [rec async for rec in consume_records(settings, topic, must_exist=True)]

    with pytest.raises(Assigned):
        asyncio.run(read("forum-posts"))
    assert sorted((tp.topic, tp.partition) for tp in assigned) == [("forum-posts", 0), ("forum-posts", 1)]
    with pytest.raises(UnknownTopic, match="its topics: forum-posts"):
        asyncio.run(read("forum-postz"))


@pytest.mark.parametrize("stop", ["SIGINT", "SIGTERM"])
def test_a_record_stopped_mid_read_says_nothing_was_written_and_leaves_no_spill(kafka_server, tmp_path, stop):
    """Ctrl-C said nothing; a SIGTERM (`timeout`, `kill`) also left the spill folder beside --out.
    Both now say the file was not written, leave it as it was and remove the spill."""
    import os

    from workers import stopped_when

    settings = Settings(kafka_broker=kafka_server, partitions=1)
    topic = f"record-{uuid.uuid4().hex[:6]}"
    asyncio.run(asyncio.wait_for(ensure_topics(settings, [topic]), 60))
    asyncio.run(asyncio.wait_for(produce(settings, topic, 5), 60))
    out = tmp_path / "out" / "r.jsonl"
    out.parent.mkdir()
    out.write_text("kept\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "REDIS_", "SENTINEL_"))}
    code, stderr = stopped_when(["record", "--topic", topic, "--out", str(out), "--max-idle", "120"], {**env, "KAFKA_BROKER": kafka_server},
                                lambda _pid: bool(list(out.parent.glob("sentinel-record-*/*.jsonl"))),  # records read, spilled: following on
                                stop, "the record read nothing")
    assert code == {"SIGINT": 130, "SIGTERM": 143}[stop], stderr
    assert f"nothing written to {out}" in stderr and "Traceback" not in stderr, stderr
    assert out.read_text() == "kept\n" and [p.name for p in out.parent.iterdir()] == ["r.jsonl"]


def test_a_record_stopped_while_it_writes_the_finished_read_says_the_file_was_written(tmp_path, monkeypatch):
    """A Ctrl-C that comes while the read's records are merged into --out (one step, no await: a
    retained topic's takes a while) cancels the command only once the file is replaced. It still
    said "nothing written to OUT ... run record again" of the file it had written."""
    import os
    import signal

    from typer.testing import CliRunner

    import stream.tools.replay as replay_module
    from sentinel.cli import app

    out = tmp_path / "r.jsonl"
    out.write_text("earlier\n")

    async def reachable(_settings: Settings) -> list[str]:
        return ["forum-posts"]

    async def read_then_stopped(_settings: Settings, _topic: str, path, _max_idle: float, _progress=None) -> int:
        os.kill(os.getpid(), signal.SIGINT)  # asyncio cancels the command, which ends only after this step
        path.write_text('{"offset": 0}\n')
        return 1

    monkeypatch.setattr(replay_module, "broker_topics", reachable)
    monkeypatch.setattr(replay_module, "record", read_then_stopped)
    # SIGINT as a terminal leaves it, also where this test run ignores it (put in the background by a
    # non-interactive shell): the command would not take the Ctrl-C, and said it wrote and exited 0.
    ignored = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        r = CliRunner().invoke(app, ["record", "--topic", "forum-posts", "--out", str(out)], env={"KAFKA_BROKER": "127.0.0.1:9", "COLUMNS": "300"})
    finally:
        signal.signal(signal.SIGINT, ignored)
    said = " ".join(r.output.split())
    assert r.exit_code == 130 and out.read_text() == '{"offset": 0}\n', said
    assert f"interrupted: wrote 1 records to {out}" in said and "nothing written" not in said, said


def test_an_out_that_is_not_a_regular_file_is_refused_before_the_read(tmp_path):
    """`--out /dev/stdout` passed the output check: the read would spill into a folder in /dev (an
    error, or files in devtmpfs as root), and stdout would carry the closing "wrote N records" line
    after the records; `-` (stdout to most tools) was written as a file named `-`. Refused before the
    broker is asked (here a dead one, which would be the error)."""
    import os
    import subprocess
    import sys

    fifo = tmp_path / "out.fifo"
    os.mkfifo(fifo)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "REDIS_", "SENTINEL_"))}
    for out in ("/dev/stdout", str(fifo), "-"):
        r = subprocess.run([sys.executable, "-m", "sentinel.cli", "record", "--topic", "forum-posts", "--out", out], capture_output=True,
                           text=True, timeout=60, env={**env, "KAFKA_BROKER": "127.0.0.1:9"}, cwd=tmp_path)
        assert r.returncode == 2 and r.stdout == "" and "Kafka" not in r.stderr, r.stdout + r.stderr
        assert " ".join(r.stderr.split()) == (f"error: --out {out}: not a regular file: record spills the read beside --out and writes "
                                              "the file whole once the read is done; give a file path (e.g. --out incident.jsonl)")
    assert [p.name for p in tmp_path.iterdir()] == ["out.fifo"]


def test_an_out_in_a_folder_without_search_permission_is_one_line(tmp_path):
    """`--out locked/incident.jsonl` (and run's --alerts-out there) was a PermissionError traceback,
    exit 1: the output check's Path.is_dir() raises there instead of answering. One line, exit 2,
    before the broker (a dead one here) is asked."""
    import os
    import subprocess
    import sys

    from workers import without_root_reads

    locked = tmp_path / "locked"
    locked.mkdir()
    (tmp_path / "posts.jsonl").write_text('{"id": "1", "text": "up", "created_at": "2026-01-01T00:00:00Z"}\n')
    locked.chmod(0)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "REDIS_", "SENTINEL_"))}
    env.update(KAFKA_BROKER="127.0.0.1:9", SENTINEL_BASE="lexicon", COLUMNS="300")
    try:
        for args in (["record", "--topic", "forum-posts", "--out", "locked/incident.jsonl"],
                     ["run", "posts.jsonl", "--alerts-out", "locked/incident.jsonl"]):
            r = subprocess.run([*without_root_reads(), sys.executable, "-m", "sentinel.cli", *args], capture_output=True, text=True,
                               timeout=60, env=env, cwd=tmp_path)
            assert (r.returncode, r.stdout, r.stderr) == (2, "", "error: cannot write locked/incident.jsonl: Permission denied\n"), (
                args, r.returncode, r.stdout + r.stderr)
        # An --out without read permission is replaced, not read: past the checks, to the dead broker
        # (typer refused it as "not readable", in its usage box).
        (tmp_path / "unreadable.jsonl").write_text("old\n")
        (tmp_path / "unreadable.jsonl").chmod(0o200)
        r = subprocess.run([*without_root_reads(), sys.executable, "-m", "sentinel.cli", "record", "--topic", "forum-posts", "--out",
                            "unreadable.jsonl"], capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path)
        assert r.returncode == 2 and r.stderr.startswith("error: Kafka:") and r.stderr.count("\n") == 1, r.stderr
        r = subprocess.run([sys.executable, "-m", "sentinel.cli", "record", "--help"], capture_output=True, text=True, timeout=60, env=env)
        assert "(a file path: not -, /dev/stdout or a pipe)" in " ".join(r.stdout.replace("│", " ").split()), r.stdout
    finally:
        locked.chmod(0o755)


def test_an_out_that_is_the_commands_own_stdout_file_is_refused_before_the_read(tmp_path):
    """`record --out /dev/stdout > rec.jsonl` passed the regular-file check (/dev/stdout resolves to
    rec.jsonl): record replaced rec.jsonl by a rename, so the shell's handle wrote the closing
    "wrote N records" line (and all after it) into the unlinked old file, and it exited 0 where the
    docs say /dev/stdout is an error. Refused before the broker (a dead one here) is asked."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "REDIS_", "SENTINEL_"))}
    for out, stream in (("/dev/stdout", "stdout"), (str(tmp_path / "rec.jsonl"), "stdout"), ("/dev/stderr", "stderr")):
        held = tmp_path / "rec.jsonl"
        held.write_text("kept\n")
        with held.open("a") as handle:
            r = subprocess.run([sys.executable, "-m", "sentinel.cli", "record", "--topic", "forum-posts", "--out", out],
                               stdout=handle if stream == "stdout" else subprocess.PIPE, stderr=handle if stream == "stderr" else subprocess.PIPE, text=True, timeout=60,
                               env={**env, "KAFKA_BROKER": "127.0.0.1:9", "COLUMNS": "300"}, cwd=tmp_path)
        said = " ".join(held.read_text().split()) if stream == "stderr" else " ".join(r.stderr.split())
        assert r.returncode == 2 and "Kafka" not in said, said
        assert f"error: --out {out}: that is this command's {stream};" in said, said
        assert held.read_text().startswith("kept\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rec.jsonl"]  # no spill folder left beside it
