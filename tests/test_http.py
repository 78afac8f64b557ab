"""The worker's HTTP endpoints end to end: a real broker, real redis-servers, a real worker process.

The classifier is the keyword scorer (`SENTINEL_BASE=lexicon`): no model to load, so a worker is
up in seconds. Expected numbers come from the input file, not from the worker's code.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Iterator

import redis

from stream.ops.http import (START_JOIN_FLOOR_S, Check, Outages, ReadinessLog, liveness, marker_created_at, marker_news, readiness, readiness_log_level,
                             start_join_patience_s)
from stream.ops.prometheus import WorkerMetrics, offsets_behind, resume_offset
from stream.batch import BatchOutcome
from stream.tools.services import free_port, start_redis
from stream.keys import DATA_MARKER_KEY, STATS_KEY
from workers import metric_samples as samples, worker_env

T0 = 1_767_225_600  # 2026-01-01T00:00:00Z
GOOD = [
    {"id": f"h{i}", "text": f"${['BTC', 'ETH'][i % 2]} {['bullish', 'dump', 'chart'][i % 3]} today", "created_at": T0 + 60 * i,
     "channel": "general", "source": "discord"}
    for i in range(10)
]
BAD = {  # line -> the DLQ reason it must be counted under
    b"not json at all": "invalid_json",
    b"{broken": "invalid_json",
    b'{"id": "m1", "created_at": 1767225600}': "missing_field",
    b'{"id": "e1", "text": "   ", "created_at": 1767225600}': "empty_text",
}


# --- helpers ------------------------------------------------------------------------------------


def get(port: int, path: str, timeout: float = 3.0) -> tuple[int, bytes]:
    """(status, body); (0, b"") while nothing listens yet."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return 0, b""


def wait_until(condition: Callable[[], Any], timeout: float, what: str, worker: "Worker") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert worker.proc.poll() is None, f"worker exited with {worker.proc.returncode} while waiting for {what}\n{worker.log_tail()}"
        result = condition()
        if result:
            return result
        time.sleep(0.2)  # a polling interval, not a wait for something to happen
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}\n{worker.log_tail()}")


def env_for(kafka: str, redis_url: str, cache_dir: Path, name: str) -> dict[str, str]:
    return worker_env(
        name, kafka, redis_url, cache_dir,
        SENTINEL_MAX_BATCH="4",  # several batches, so the histograms see more than one
        SENTINEL_WEB_PORT=str(free_port()), SENTINEL_WEB_HOST="127.0.0.1", PYTHONUNBUFFERED="1",
    )

WORKER = ["-m", "sentinel.cli", "worker"]


class Worker:
    def __init__(self, env: dict[str, str], log_path: Path, command: list[str] = WORKER) -> None:
        self.port = int(env["SENTINEL_WEB_PORT"])
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, *command], env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def terminate(self, grace: float = 30.0) -> int | None:
        """SIGTERM to the process group (as sentinel.run.stop_workers does); the exit code, None if it hung."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            return self.proc.wait(grace)
        except subprocess.TimeoutExpired:
            return None
        finally:
            if self.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
            self._log.close()

    def ready(self) -> bool:
        return get(self.port, "/readyz")[0] == 200


@contextlib.contextmanager
def running_worker(env: dict[str, str], log_path: Path, command: list[str] = WORKER) -> Iterator[Worker]:
    worker = Worker(env, log_path, command)
    try:
        yield worker
    finally:
        if worker.proc.poll() is None:
            worker.terminate()


# --- the pure parts, without servers --------------------------------------------------------------


def test_readiness_names_every_failed_check():
    assert readiness([Check("broker", True), Check("redis", True)])[0] == 200
    status, body = readiness([Check("broker", True), Check("redis", False, "ConnectionError"), Check("partitions", False, "none")])
    assert status == 503 and body["failed"] == ["redis", "partitions"]
    assert body["checks"]["redis"] == {"ok": False, "detail": "ConnectionError"}


def test_a_start_on_its_way_to_its_group_is_not_a_warning():
    """Every `sentinel run` logged "readiness changed" twice per worker, a WARNING for the normal
    wait for its partitions and an INFO at its end; an unready worker that had been ready still warns."""
    import logging

    assert readiness_log_level(["partitions"], was_ready=False) == logging.DEBUG
    assert readiness_log_level([], was_ready=False) == logging.DEBUG  # the first ready: "partitions assigned" said it
    assert readiness_log_level(["redis", "partitions"], was_ready=False) == logging.WARNING  # a dependency down at the start
    assert readiness_log_level(["partitions"], was_ready=True) == logging.WARNING  # lost its partitions later
    assert readiness_log_level([], was_ready=True) == logging.INFO  # and back


def test_a_start_that_warned_says_when_it_is_ready_and_a_start_that_never_joins_warns():
    """A start's wait for its partitions is quiet, but not a WARNING's recovery (Kafka or Redis down
    at the start, back before the worker joined: its last readiness line said "not ready" while it
    served) nor a wait that never ends (a pod that stays unready logged no reason at all)."""
    import logging

    patience = 90.0
    said = ReadinessLog(started=0.0, patience_s=patience)
    assert said.level(["redis", "partitions"], 1.0) == logging.WARNING  # down at the start: warns
    assert said.level(["partitions"], 2.0) == logging.WARNING  # Redis back, not in the group yet
    assert said.level(["partitions"], 3.0) is None  # the same answer: nothing new
    assert said.level([], 4.0) == logging.INFO  # and the recovery the WARNING asks for
    assert said.level([], 5.0) is None

    said = ReadinessLog(started=0.0, patience_s=patience)  # a normal start: nothing above DEBUG, once each
    assert said.level(["partitions"], 1.0) == logging.DEBUG
    assert said.level([], 2.0) == logging.DEBUG
    assert said.level([], 3.0) is None and said.level([], 30.0) is None
    assert said.level(["partitions"], 40.0) == logging.WARNING  # lost its partitions later
    assert said.level([], 41.0) == logging.INFO

    said = ReadinessLog(started=0.0, patience_s=patience)  # never joins
    assert said.level(["partitions"], 1.0) == logging.DEBUG
    assert said.level(["partitions"], patience - 1) is None
    assert said.level(["partitions"], patience + 1) == logging.WARNING  # once
    assert said.level(["partitions"], patience + 30) is None
    assert said.level([], patience + 40) == logging.INFO
    assert readiness_log_level(["partitions"], was_ready=False, warned=True) == logging.WARNING


def test_a_starts_patience_for_its_partitions_follows_the_group_timeouts():
    """A fixed 60 s warned of a normal join where the group's timeouts are longer (a dead
    predecessor's session, then the rebalance) and waited a minute where they are short. Two
    sessions and a rebalance, never under the floor (Faust's own start, which they do not bound)."""
    import logging

    assert start_join_patience_s(30.0, 30.0) == 90.0  # the ConfigMap's
    assert start_join_patience_s(45.0, 60.0) == 150.0
    assert start_join_patience_s(6.0, 5.0) == START_JOIN_FLOOR_S  # the embedded stack's: 17 s, floored
    assert start_join_patience_s(12.0, 10.0) == 34.0  # just above the floor: the timeouts again
    # A join that lasts a session and a rebalance (a killed predecessor, at the ConfigMap's: 47 s
    # measured, docs/reliability.md) is no WARNING; one that outlasts the patience is.
    said = ReadinessLog(started=0.0, patience_s=start_join_patience_s(30.0, 30.0))
    assert said.level(["partitions"], 1.0) == logging.DEBUG
    assert said.level(["partitions"], 65.0) is None
    assert said.level(["partitions"], 91.0) == logging.WARNING


def test_liveness_fails_only_past_the_stall_threshold():
    assert liveness(29.9, 0.01, 30.0)[0] == 200
    status, body = liveness(30.1, 0.0, 30.0)
    assert status == 503 and body["status"] == "stalled"


def test_outages_count_each_outage_once_and_its_seconds():
    watch = Outages()
    assert watch.observe(True, 0.0) == (False, 0.0)
    assert watch.observe(False, 5.0) == (True, 0.0)  # down since this probe: nothing counted yet
    assert watch.observe(False, 10.0) == (False, 5.0)
    assert watch.observe(True, 12.0) == (False, 2.0)  # the interval that began down counts
    assert watch.observe(True, 17.0) == (False, 0.0)
    assert watch.observe(False, 20.0)[0] is True  # a second outage
    starting = Outages()
    assert starting.observe(False, 0.0) == (True, 0.0)  # down at start-up is an outage too


def test_dependency_metrics_show_an_outage():
    m = WorkerMetrics()
    m.observe_dependency("broker", False, started=True, down_s=0.0)
    m.observe_dependency("broker", False, started=False, down_s=5.0)
    got = samples(m.render().decode())
    broker = frozenset({("dependency", "broker")})
    assert got[("sentinel_dependency_up", broker)] == 0
    assert got[("sentinel_dependency_outages_total", broker)] == 1 and got[("sentinel_dependency_down_seconds_total", broker)] == 5
    assert got[("sentinel_dependency_outages_total", frozenset({("dependency", "redis")}))] == 0


def test_the_data_marker_tells_a_fresh_redis_and_one_that_lost_its_data_while_the_worker_ran():
    assert marker_news(None, "a1:100", created=True) == "fresh"  # nothing tells a new Redis from an emptied one at start
    assert marker_news(None, "a1:100", created=False) is None  # another worker marked it, or an earlier run
    assert marker_news("a1:100", "a1:100", created=False) is None
    assert marker_news("a1:100", "b2:200", created=True) == "lost"  # emptied and marked again by this read
    assert marker_news("a1:100", "b2:200", created=False) == "lost"  # emptied and marked by another worker first
    assert marker_news("a1:100", None, created=False) is None  # Redis away: the outage metrics say so
    assert marker_created_at("a1:100") == 100.0 and marker_created_at("garbage") == 0.0


def test_a_worker_says_so_when_redis_loses_its_data_under_it(tmp_path, kafka_server, cache_dir):
    """A FLUSHALL (or a restart without persistence, a failover to an empty replica) is no outage:
    the worker writes on, its windows, incidents, silences and notification marks gone. Until
    session 57 nothing said so; its data marker now does, in the log (ERROR) and the metrics."""
    (tmp_path / "redis").mkdir()
    redis_proc, redis_url = start_redis(tmp_path / "redis")
    try:
        env = env_for(kafka_server, redis_url, cache_dir, "http-redis-flushed")
        with running_worker(env, tmp_path / "worker.log") as worker:
            wait_until(worker.ready, 60, "/readyz 200", worker)
            r = redis.Redis.from_url(redis_url, decode_responses=True)
            first = wait_until(lambda: r.get(DATA_MARKER_KEY), 20, "the data marker", worker)
            assert r.ttl(DATA_MARKER_KEY) > 170 * 86400  # twice the 90-day report retention; pushed on at each probe
            wait_until(lambda: "Redis holds no data marker" in worker.log_path.read_text(errors="replace"), 10, "the fresh-Redis warning", worker)
            since = samples(get(worker.port, "/metrics")[1].decode())[("sentinel_redis_data_since_seconds", frozenset())]
            assert since == marker_created_at(first) > 0

            r.flushall()

            def lost() -> dict | None:
                m = samples(get(worker.port, "/metrics")[1].decode())
                return m if m[("sentinel_redis_data_lost_total", frozenset())] == 1 else None

            m = wait_until(lost, 20, "sentinel_redis_data_lost_total 1", worker)
            assert r.get(DATA_MARKER_KEY) not in (None, first) and m[("sentinel_redis_data_since_seconds", frozenset())] >= since
            wait_until(lambda: "Redis lost its data while the worker ran" in worker.log_path.read_text(errors="replace"), 10, "the error", worker)
            assert worker.proc.poll() is None and worker.ready()
    finally:
        redis_proc.stop()


def partition_lag(tps, highwater, committed, start=lambda tp: None):
    """The lag as `consumer_offsets` works it out: each end past the offset the group resumes from."""
    ends = {tp: end for tp in tps if (end := highwater(tp)) is not None}
    return offsets_behind(ends, {tp: done for tp in tps if (done := resume_offset(committed(tp), start(tp))) is not None})


def test_partition_lag_uses_committed_then_where_reading_starts_and_skips_unknowns():
    tps = [("posts", 0), ("posts", 1), ("posts", 2), ("posts", 3)]
    highwater = {("posts", 0): 100, ("posts", 1): 50, ("posts", 2): None, ("posts", 3): 7}.get
    committed = {("posts", 0): 90, ("posts", 1): None, ("posts", 2): 3, ("posts", 3): 9}.get
    start = {("posts", 1): 45}.get
    # 3: committed past a highwater read a moment earlier is no negative lag.
    assert partition_lag(tps, highwater, committed, start) == {("posts", 0): 10, ("posts", 1): 5, ("posts", 3): 0}


def test_the_group_resumes_from_the_log_start_where_retention_deleted_past_its_committed_offset():
    assert resume_offset(40, 10) == 40  # the log start behind the committed offset: the committed one
    assert resume_offset(40, 55) == 55  # records up to 55 deleted while no worker ran: read from 55
    assert resume_offset(None, 4) == 4 and resume_offset(40, None) == 40 and resume_offset(None, None) is None
    tps = [("posts", 0), ("posts", 1)]
    # 0: deleted up to the end (nothing left to read); 1: deleted up to 55, 5 posts after it.
    lags = partition_lag(tps, {("posts", 0): 55, ("posts", 1): 60}.get, {("posts", 0): 40, ("posts", 1): 40}.get,
                         {("posts", 0): 55, ("posts", 1): 55}.get)
    assert lags == {("posts", 0): 0, ("posts", 1): 5}


def test_consumer_offsets_report_the_log_start_as_committed_where_retention_deleted_past_the_committed_offset():
    """Workers down longer than the topic's retention: the records past the group's committed offset
    are deleted, aiokafka's out-of-range reset (`earliest`) moves the read position to the log's
    first offset, and Faust's committed offset stays behind until a post there is processed. Reported
    as it was, `position - committed` read as posts fetched and none processed
    (`SentinelProcessingStuck` fired) and the lag counted deleted records (`SentinelFallingBehind`
    fired, nothing being consumed). Tansu cannot delete records, so the broker is `_Broker` here;
    `tests/monitoring/rules_test.yml` has the rule's side."""
    from types import SimpleNamespace

    from faust.types import TP

    from stream.ops.http import consumer_offsets

    emptied, trimmed, kept = TP("forum-posts", 0), TP("forum-posts", 1), TP("forum-posts", 2)
    states = {emptied: SimpleNamespace(has_valid_position=True, position=5000),
              trimmed: SimpleNamespace(has_valid_position=True, position=5200),
              kept: SimpleNamespace(has_valid_position=True, position=90)}
    subscription = SimpleNamespace(subscription=SimpleNamespace(assignment=SimpleNamespace(state_value=states.get)))
    kafka = SimpleNamespace(_subscription=subscription)
    consumer = SimpleNamespace(assignment=lambda: {emptied, trimmed, kept}, _committed_offset={emptied: 40, trimmed: 40, kept: 80},
                               highwater={}.get, _thread=SimpleNamespace(_ensure_consumer=lambda: kafka))
    broker = _Broker({emptied: 5000, trimmed: 5300, kept: 90}, {emptied: 5000, trimmed: 5100, kept: 10})
    offsets = asyncio.run(consumer_offsets(SimpleNamespace(consumer=consumer, producer=broker), ("forum-posts",)))
    assert offsets.committed == {emptied: 5000, trimmed: 5100, kept: 80}
    assert offsets.lag == {emptied: 0, trimmed: 200, kept: 10}
    # Nothing fetched past where the group resumes on the emptied partition: no stuck processing.
    assert {tp: offsets.position[tp] - offsets.committed[tp] for tp in states} == {emptied: 0, trimmed: 100, kept: 10}

    broker.delay = 60  # the broker away: the committed offsets stand alone (and the fetched highwater, none here)
    assert asyncio.run(consumer_offsets(SimpleNamespace(consumer=consumer, producer=broker), ("forum-posts",), timeout=0.05)).committed == {
        emptied: 40, trimmed: 40, kept: 80}


class _Broker:
    """The worker's producer's aiokafka client as `list_offsets` uses it: partition leaders, and
    ListOffsets answered from `ends` and `starts` (v1's (partition, error, timestamp, offset)), after
    `delay` seconds."""

    def __init__(self, ends: dict, starts: dict | None = None, delay: float = 0.0) -> None:
        from types import SimpleNamespace

        self.ends, self.starts, self.delay = ends, starts or {}, delay
        self.requests: list[list] = []
        self.added: list[str] = []
        self.cluster = SimpleNamespace(leader_for_partition=lambda tp: 0)
        self.client = self

    def _ensure_producer(self) -> Any:
        return self

    def add_topic(self, topic: str) -> None:
        self.added.append(topic)

    def force_metadata_update(self) -> None:
        pass

    async def send(self, node_id: int, request: Any) -> Any:
        from types import SimpleNamespace

        from faust.types import TP

        await asyncio.sleep(self.delay)
        self.requests.append(request._topics)
        answers = []
        for topic, partitions in request._topics:
            offsets = {-1: self.ends, -2: self.starts}
            found = [(p, 0, -1, offsets[ts][TP(topic, p)]) for p, ts in partitions if TP(topic, p) in offsets[ts]]
            answers.append((topic, found))
        return SimpleNamespace(API_VERSION=1, topics=answers)


def test_consumer_lag_counts_the_input_topics_alone():
    """Faust assigns each worker its `<app id>-__assignor-__leader` topic beside the posts topic; a
    lag reported for it was summed into the dashboard's partition 0."""
    from types import SimpleNamespace

    from faust.types import TP

    from stream.ops.http import consumer_lag

    posts, leader = TP("forum-posts", 0), TP("forum-sentinel-__assignor-__leader", 0)
    ends = {posts: 42, leader: 9}
    consumer = SimpleNamespace(assignment=lambda: {posts, leader}, _committed_offset={posts: 40, leader: 3}, highwater=ends.get)
    lags = asyncio.run(consumer_lag(SimpleNamespace(consumer=consumer, producer=_Broker(ends)), ("forum-posts",)))
    assert lags == {posts: 2}


def test_consumer_lag_takes_the_log_end_from_the_broker_and_the_highwater_where_the_broker_falls_short():
    """The in-memory highwater moves only with a fetch response: a partition whose fetches stopped
    kept its last lag while posts piled up on it. The broker's end counts; the highwater stands in
    for a partition the broker gave no end for (it did not answer in time), and where the broker's
    end is short of it (Tansu's answer for a partition whose last record batch holds several)."""
    from types import SimpleNamespace

    from faust.types import TP

    from stream.ops.http import consumer_lag

    stalled, fetched, new = TP("forum-posts", 0), TP("forum-posts", 1), TP("forum-posts", 2)
    # Nothing for `new`'s end: its highwater stands in. Its first offset: where the group starts.
    broker = _Broker({stalled: 57, fetched: 10}, {new: 4})
    consumer = SimpleNamespace(assignment=lambda: {stalled, fetched, new}, _committed_offset={stalled: 40, fetched: 11},
                               highwater={stalled: 42, fetched: 12, new: 9}.get)
    app = SimpleNamespace(consumer=consumer, producer=broker)
    assert asyncio.run(consumer_lag(app, ("forum-posts",))) == {stalled: 17, fetched: 1, new: 5}
    # One ListOffsets for every end (one leader here), one for every start (the committed
    # partitions' too: retention may have deleted past their committed offset).
    asked = sorted(sorted(ts for _, parts in topics for _, ts in parts) for topics in broker.requests)
    assert asked == [[-2, -2, -2], [-1, -1, -1]]

    # The producer's client has not learnt the posts topic's leaders yet (its first call): the
    # highwater stands in, and the topic is added to the client's metadata for the next call.
    broker.cluster.leader_for_partition = lambda tp: None
    assert asyncio.run(consumer_lag(app, ("forum-posts",))) == {stalled: 2, fetched: 1} and set(broker.added) == {"forum-posts"}
    broker.cluster.leader_for_partition = lambda tp: 0

    broker.delay = 60  # the broker away: what the consumer last fetched
    assert asyncio.run(consumer_lag(app, ("forum-posts",), timeout=0.05)) == {stalled: 2, fetched: 1}


def test_consumer_offsets_count_the_unread_past_the_read_position_against_the_same_end():
    """A caught-up partition written in transactions: the commit marker takes the last offset, the
    group's committed offset stops before it (lag 1 for good), aiokafka's read position is past it
    (unread 0). A stalled one: the position holds with posts past it. A partition whose position is
    not known yet (no fetch since assignment) has no position and no unread."""
    from types import SimpleNamespace

    from faust.types import TP

    from stream.ops.http import consumer_offsets

    caught_up, stalled, new = TP("forum-posts", 0), TP("forum-posts", 1), TP("forum-posts", 2)
    states = {caught_up: SimpleNamespace(has_valid_position=True, position=41),
              stalled: SimpleNamespace(has_valid_position=True, position=30),
              new: SimpleNamespace(has_valid_position=False, position=None)}
    subscription = SimpleNamespace(subscription=SimpleNamespace(assignment=SimpleNamespace(state_value=states.get)))
    kafka = SimpleNamespace(_subscription=subscription)
    consumer = SimpleNamespace(assignment=lambda: {caught_up, stalled, new}, _committed_offset={caught_up: 40, stalled: 30, new: 0},
                               highwater={caught_up: 41, stalled: 31, new: 3}.get, _thread=SimpleNamespace(_ensure_consumer=lambda: kafka))
    offsets = asyncio.run(consumer_offsets(SimpleNamespace(consumer=consumer, producer=_Broker({stalled: 36})), ("forum-posts",)))
    assert offsets.lag == {caught_up: 1, stalled: 6, new: 3}
    assert offsets.position == {caught_up: 41, stalled: 30}
    assert offsets.unread == {caught_up: 0, stalled: 6}


def test_consumer_offsets_work_out_each_partitions_resume_offset_and_end_once(monkeypatch):
    """One scrape asks each partition's resume offset and the consumer's highwater once: until
    session 53 the lag and the `committed` gauge each worked out the resume offset, and the lag and
    the unread count each read the highwater. The figures are the same
    (`test_consumer_offsets_report_the_log_start_as_committed_where_retention_deleted_past_the_committed_offset`)."""
    from collections import Counter
    from types import SimpleNamespace

    from faust.types import TP

    import stream.ops.http as http
    import stream.ops.prometheus as prometheus

    trimmed, kept = TP("forum-posts", 1), TP("forum-posts", 2)
    states = {trimmed: SimpleNamespace(has_valid_position=True, position=5200), kept: SimpleNamespace(has_valid_position=True, position=90)}
    subscription = SimpleNamespace(subscription=SimpleNamespace(assignment=SimpleNamespace(state_value=states.get)))
    kafka = SimpleNamespace(_subscription=subscription)
    asked: Counter = Counter()

    def highwater(tp):
        asked["highwater", tp] += 1
        return {trimmed: 5250, kept: 95}[tp]

    def counted(committed, start):
        asked["resume"] += 1
        return resume_offset(committed, start)

    monkeypatch.setattr(http, "resume_offset", counted)
    monkeypatch.setattr(prometheus, "resume_offset", counted)
    consumer = SimpleNamespace(assignment=lambda: {trimmed, kept}, _committed_offset={trimmed: 40, kept: 80},
                               highwater=highwater, _thread=SimpleNamespace(_ensure_consumer=lambda: kafka))
    offsets = asyncio.run(http.consumer_offsets(SimpleNamespace(consumer=consumer, producer=_Broker({trimmed: 5300, kept: 90}, {trimmed: 5100, kept: 10})),
                                                ("forum-posts",)))
    assert offsets.committed == {trimmed: 5100, kept: 80} and offsets.lag == {trimmed: 200, kept: 15}
    assert offsets.unread == {trimmed: 100, kept: 5}
    assert asked == Counter({"resume": 2, ("highwater", trimmed): 1, ("highwater", kept): 1})


def test_read_position_is_none_when_the_consumer_thread_resets_the_position_under_it():
    """/metrics reads aiokafka's partition state on the event loop while Faust's consumer thread
    changes it: an out-of-range fetch (retention deleted what a worker behind had not read) makes
    aiokafka `await_reset`, which drops the position. Landing between the `has_valid_position`
    check and the `position` read, aiokafka's `assert` raised out of /metrics: a 500, a failed
    scrape that makes every series of the worker stale at once. Now that position is unknown."""
    from types import SimpleNamespace

    from aiokafka.consumer.subscription_state import TopicPartitionState
    from aiokafka.structs import OffsetAndMetadata
    from faust.types import TP

    from stream.ops.http import read_position

    async def go() -> tuple[int | None, int | None]:  # aiokafka's state makes futures: a running loop, as in the consumer thread
        state = TopicPartitionState(assignment=None)
        state.update_committed(OffsetAndMetadata(7, ""))
        state.seek(7)

        class ResetBetween:
            """The real state, with the consumer thread's reset falling right after the check."""

            @property
            def has_valid_position(self) -> bool:
                valid = state.has_valid_position
                state.await_reset(0)  # aiokafka's Fetcher on OffsetOutOfRange, in the consumer thread
                return valid

            @property
            def position(self) -> int:
                return state.position

        tp = TP("forum-posts", 0)
        assignment = SimpleNamespace(state_value={tp: ResetBetween()}.get)
        kafka = SimpleNamespace(_subscription=SimpleNamespace(subscription=SimpleNamespace(assignment=assignment)))
        consumer = SimpleNamespace(_thread=SimpleNamespace(_ensure_consumer=lambda: kafka))
        torn = read_position(consumer, tp)
        state.seek(9)  # read again from a known position: it shows
        assignment.state_value = {tp: state}.get
        return torn, read_position(consumer, tp)

    assert asyncio.run(go()) == (None, 9)


def test_each_worker_metrics_has_its_own_registry():
    a, b = WorkerMetrics(), WorkerMetrics()  # a second set of the same names must not collide
    a.observe_batch(BatchOutcome(consumed=5, valid=4, dlq=1, processed=4, classify_s=0.01, windows_s=0.002))
    a.dead_lettered("invalid_json")
    a.set_lag({("posts", 0): 3})
    a.set_lag({("posts", 1): 0})  # after a rebalance the revoked partition disappears
    ma, mb = samples(a.render().decode()), samples(b.render().decode())
    assert ma[("sentinel_posts_consumed_total", frozenset())] == 5 and mb[("sentinel_posts_consumed_total", frozenset())] == 0
    assert ma[("sentinel_posts_dead_lettered_total", frozenset({"reason": "invalid_json"}.items()))] == 1
    lags = {dict(labels)["partition"]: v for (name, labels), v in ma.items() if name == "sentinel_consumer_lag"}
    assert lags == {"1": 0}


# --- a real worker --------------------------------------------------------------------------------


def test_metrics_health_and_readiness_of_a_worker(tmp_path, kafka_server, redis_server, cache_dir):
    redis.Redis.from_url(redis_server).flushdb()
    env = {**env_for(kafka_server, redis_server, cache_dir, "http-metrics"), "SENTINEL_LOG_JSON": "true"}
    lines = [json.dumps(p).encode() for p in GOOD]
    lines.insert(3, json.dumps(GOOD[0]).encode())  # a redelivered post: consumed and valid, counted once
    for n, bad in enumerate(BAD):
        lines.insert(2 + 3 * n, bad)
    data = tmp_path / "posts.jsonl"
    data.write_bytes(b"\n".join(lines) + b"\n")

    with running_worker(env, tmp_path / "worker.log") as worker:
        wait_until(worker.ready, 60, "/readyz 200", worker)
        status, body = get(worker.port, "/healthz")
        assert status == 200 and json.loads(body)["status"] == "ok"

        r = subprocess.run([sys.executable, "-m", "sentinel.cli", "replay", str(data)], env=env, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0 and f"sent {len(lines)}" in r.stdout, r.stdout + r.stderr

        store = redis.Redis.from_url(redis_server, decode_responses=True)
        wait_until(lambda: int(store.hget(STATS_KEY, "consumed") or 0) >= len(lines), 30, "Redis: every message consumed", worker)
        assert int(store.hget(STATS_KEY, "consumed")) == len(lines)

        # The batch's metrics are updated when the batch returns, and the offsets committed about
        # a second later: scrape until both show the whole file.
        lag_key = ("sentinel_consumer_lag", frozenset({"topic": env["SENTINEL_TOPIC_POSTS"], "partition": "0"}.items()))

        def settled() -> dict | None:
            status, body = get(worker.port, "/metrics")
            assert status == 200, body
            found = samples(body.decode())
            done = found.get(("sentinel_posts_consumed_total", frozenset()), 0) >= len(lines) and found.get(lag_key) == 0
            return found if done else None

        m = wait_until(settled, 30, "metrics of the whole file and lag 0", worker)

        assert m[("sentinel_posts_consumed_total", frozenset())] == len(lines)
        assert m[("sentinel_posts_processed_total", frozenset())] == len(GOOD)
        assert m[("sentinel_posts_duplicate_total", frozenset())] == 1
        assert m[("sentinel_posts_late_dropped_total", frozenset())] == 0
        dlq = {dict(labels)["reason"]: v for (name, labels), v in m.items() if name == "sentinel_posts_dead_lettered_total"}
        assert dlq == dict(Counter(BAD.values()))
        # Histograms: every batch observed; the batch sizes add up to the file.
        assert m[("sentinel_batch_size_count", frozenset())] >= 2
        assert m[("sentinel_batch_size_sum", frozenset())] == len(lines)
        assert m[("sentinel_classify_seconds_count", frozenset())] >= 1
        assert m[("sentinel_window_update_seconds_count", frozenset())] == m[("sentinel_batch_size_count", frozenset())]
        assert m[("sentinel_commit_seconds_count", frozenset())] == m[("sentinel_batch_size_count", frozenset())]
        # The commit half holds the window write: never shorter than it.
        assert m[("sentinel_commit_seconds_sum", frozenset())] >= m[("sentinel_window_update_seconds_sum", frozenset())] > 0
        model = [dict(labels) for (name, labels), v in m.items() if name == "sentinel_model_info" and v == 1]
        assert model == [{"base": "lexicon", "adapter": "none", "device": "cpu", "quantize": "none", "dtype": "none"}]
        assert lag_key in m
        # The input topic's partitions alone: Faust's assignor-leader topic, summed by partition,
        # was added into partition 0 on the dashboard.
        assert {dict(labels)["topic"] for (name, labels) in m if name == "sentinel_consumer_lag"} == {env["SENTINEL_TOPIC_POSTS"]}
        assert ("sentinel_alert_deliveries_total", frozenset({"result": "failed"}.items())) in m
        assert ("sentinel_event_loop_lag_seconds", frozenset()) in m

        status, body = get(worker.port, "/healthz")
        assert status == 200 and json.loads(body)["status"] == "ok"
        status, body = get(worker.port, "/readyz")
        assert status == 200 and json.loads(body)["failed"] == []

        code = worker.terminate()
        assert code is not None, "the worker did not exit within 30 s of SIGTERM"
        assert code == 0, f"SIGTERM is a clean stop, not a crash (exit {code}):\n{worker.log_tail()}"

    # With JSON logs, everything the worker writes is JSON lines a log pipeline can parse.
    output = [line for line in (tmp_path / "worker.log").read_text(errors="replace").splitlines() if line.strip()]
    not_json = [line for line in output if not _is_json_object(line)]
    assert output and not_json == [], not_json[:5]


def _is_json_object(line: str) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False


def test_readyz_turns_unready_when_redis_stops(tmp_path, kafka_server, cache_dir):
    (tmp_path / "redis").mkdir()
    redis_proc, redis_url = start_redis(tmp_path / "redis")
    try:
        env = env_for(kafka_server, redis_url, cache_dir, "http-redis-down")
        with running_worker(env, tmp_path / "worker.log") as worker:
            wait_until(worker.ready, 60, "/readyz 200", worker)

            redis_proc.stop()

            def unready() -> dict | None:
                status, body = get(worker.port, "/readyz")
                return json.loads(body) if status == 503 else None

            body = wait_until(unready, 20, "/readyz 503", worker)
            assert body["failed"] == ["redis"], body
            assert body["checks"]["redis"]["ok"] is False and body["checks"]["broker"]["ok"] is True

            # Liveness is not readiness: the worker keeps running and its loop keeps answering.
            status, health = get(worker.port, "/healthz")
            assert status == 200 and json.loads(health)["status"] == "ok"
            assert worker.proc.poll() is None

            # Redis back on the same address: ready again, without a restart.
            redis_proc, _ = start_redis(tmp_path / "redis", port=int(redis_url.rsplit(":", 1)[1].split("/")[0]))
            wait_until(worker.ready, 20, "/readyz 200 after Redis returned", worker)

            # The outage is in the metrics: one of it, its seconds, and Redis up again; not the broker.
            m = samples(get(worker.port, "/metrics")[1].decode())
            redis_, broker = frozenset({("dependency", "redis")}), frozenset({("dependency", "broker")})
            assert m[("sentinel_dependency_up", redis_)] == 1 and m[("sentinel_dependency_outages_total", redis_)] == 1
            assert m[("sentinel_dependency_down_seconds_total", redis_)] > 0
            assert m[("sentinel_dependency_up", broker)] == 1 and m[("sentinel_dependency_outages_total", broker)] == 0
    finally:
        redis_proc.stop()


def test_a_new_groups_lag_counts_what_its_first_batch_has_not_written(tmp_path, kafka_server, cache_dir):
    # A group that has never committed (a first install, a replay or shadow worker's own app id)
    # had its lag read from the consumer's position, which runs ahead of the batches: with its first
    # batch waiting on Redis, every post unread showed as lag 0 (no SentinelFallingBehind, and a
    # dashboard saying all is read).
    (tmp_path / "redis").mkdir()
    redis_proc, redis_url = start_redis(tmp_path / "redis")
    try:
        env = env_for(kafka_server, redis_url, cache_dir, "http-lag-first")
        lag_key = ("sentinel_consumer_lag", frozenset({"topic": env["SENTINEL_TOPIC_POSTS"], "partition": "0"}.items()))
        data = tmp_path / "posts.jsonl"
        data.write_text("".join(json.dumps(p) + "\n" for p in GOOD))
        with running_worker(env, tmp_path / "worker.log") as worker:
            wait_until(worker.ready, 60, "/readyz 200", worker)
            redis_proc.stop()
            r = subprocess.run([sys.executable, "-m", "sentinel.cli", "replay", str(data)], env=env, capture_output=True, text=True, timeout=120)
            assert r.returncode == 0 and f"sent {len(GOOD)}" in r.stdout, r.stdout + r.stderr

            def lag() -> float | None:
                return samples(get(worker.port, "/metrics")[1].decode()).get(lag_key)

            wait_until(lambda: lag() == len(GOOD), 30, f"lag {len(GOOD)} while the first batch waits for Redis", worker)

            # Redis back: the batch is written and committed, and the committed offset counts again.
            redis_proc, _ = start_redis(tmp_path / "redis", port=int(redis_url.rsplit(":", 1)[1].split("/")[0]))
            wait_until(lambda: lag() == 0, 30, "lag 0 once the posts are committed", worker)
    finally:
        redis_proc.stop()


async def _produce(broker: str, topic: str, partition: int, posts: list[dict]) -> None:
    """One record batch per post: Tansu answers ListOffsets with its last batch's first offset + 1
    (stream/ops/http.py, consumer_lag), the end only where that batch holds one record."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=broker, acks="all")
    await producer.start()
    try:
        for post in posts:
            await producer.send_and_wait(topic, json.dumps(post).encode(), partition=partition)
    finally:
        await producer.stop()


def test_a_partition_whose_fetches_stop_shows_its_lag_growing(tmp_path, kafka_server, redis_server, cache_dir):
    """aiokafka stops fetching one partition of a live worker (tests/fetch_stall.py leaves it out of
    the fetch requests, as aiokafka does for a partition it holds paused) while the other goes on.
    The lag came from the highwater, which only a fetch response moves: it stayed 0 with every new
    post on that partition unread, so neither the dashboard nor a lag rule could see the stall, and
    Faust's own check for it never fires with aiokafka 0.14 (docs/operations.md). Its read
    position (`sentinel_consumer_position`) holds meanwhile, with the posts past it counted
    (`sentinel_consumer_unread`), which a partition getting too few posts for its lag to grow
    every quarter hour is alerted on."""
    redis.Redis.from_url(redis_server).flushdb()
    stall = tmp_path / "stall"
    env = env_for(kafka_server, redis_server, cache_dir, "http-lag-stall")
    topic = env["SENTINEL_TOPIC_POSTS"]
    env.update(SENTINEL_PARTITIONS="2", FETCH_STALL_FILE=str(stall), FETCH_STALL_TOPIC=topic, FETCH_STALL_PARTITION="1")
    shim = f"import sys, runpy; sys.path.insert(0, {str(Path(__file__).parent)!r}); import fetch_stall; runpy.run_module('sentinel.cli', run_name='__main__')"
    posts = iter([{**GOOD[i % len(GOOD)], "id": f"s{i}", "created_at": T0 + 60 * i} for i in range(40)])

    def produce(partition: int, count: int) -> None:
        asyncio.run(_produce(kafka_server, topic, partition, [next(posts) for _ in range(count)]))

    with running_worker(env, tmp_path / "worker.log", ["-c", shim, "worker"]) as worker:
        wait_until(worker.ready, 60, "/readyz 200", worker)

        def scrape() -> tuple[float, dict[str, float]]:
            found = samples(get(worker.port, "/metrics")[1].decode())
            lags = {dict(labels)["partition"]: v for (name, labels), v in found.items() if name == "sentinel_consumer_lag"}
            return found.get(("sentinel_posts_consumed_total", frozenset()), 0), lags

        def shows(consumed: int, lags: dict[str, float]) -> Callable[[], bool]:
            return lambda: scrape() == (consumed, lags)

        def reads(positions: dict[str, float], unread: dict[str, float]) -> Callable[[], bool]:
            """The read position and the posts past it (`SentinelPartitionStalled`'s second half)."""
            def check() -> bool:
                found = samples(get(worker.port, "/metrics")[1].decode())
                return [{dict(labels)["partition"]: v for (n, labels), v in found.items() if n == name}
                        for name in ("sentinel_consumer_position", "sentinel_consumer_unread")] == [positions, unread]
            return check

        produce(0, 3)
        produce(1, 3)
        wait_until(shows(6, {"0": 0, "1": 0}), 60, "both partitions read and committed", worker)
        wait_until(reads({"0": 3, "1": 3}, {"0": 0, "1": 0}), 30, "both read to their ends", worker)

        stall.touch()
        wait_until(stall.with_name("stall.on").exists, 30, "a fetch request without partition 1", worker)
        produce(1, 5)
        produce(0, 2)
        # Partition 0 goes on; partition 1's five posts are behind, as the broker's end says.
        wait_until(shows(8, {"0": 0, "1": 5}), 30, "lag 5 on the stalled partition 1", worker)
        produce(1, 2)
        wait_until(shows(8, {"0": 0, "1": 7}), 30, "lag 7 once two more posts wait on partition 1", worker)
        # Partition 1's read position holds with 7 posts past it; partition 0's moved on.
        wait_until(reads({"0": 5, "1": 3}, {"0": 0, "1": 7}), 30, "partition 1's position held, 7 unread", worker)

        stall.unlink()  # fetching again: read, committed, no lag
        wait_until(shows(15, {"0": 0, "1": 0}), 30, "partition 1 read again", worker)
        wait_until(reads({"0": 5, "1": 10}, {"0": 0, "1": 0}), 30, "partition 1's position at its end", worker)


def test_a_stuck_agent_fetches_on_while_its_committed_offset_holds(tmp_path, kafka_server, redis_server, cache_dir):
    """An agent or batch awaiting something that never returns (tests/processing_stall.py holds
    each batch while a file exists) on a quiet stream: the consumer goes on fetching into Faust's
    buffer, so the read position reaches the end and nothing is unread (`SentinelPartitionStalled`
    is silent), and /healthz stays green. The committed offset (`sentinel_consumer_committed`)
    holds, behind the position, which `SentinelProcessingStuck` alerts on; it moves again once
    the batch goes through."""
    redis.Redis.from_url(redis_server).flushdb()
    stall = tmp_path / "stall"
    env = env_for(kafka_server, redis_server, cache_dir, "http-processing-stall")
    topic = env["SENTINEL_TOPIC_POSTS"]
    env.update(SENTINEL_PARTITIONS="1", PROCESSING_STALL_FILE=str(stall))
    shim = f"import sys, runpy; sys.path.insert(0, {str(Path(__file__).parent)!r}); import processing_stall; runpy.run_module('sentinel.cli', run_name='__main__')"
    posts = iter([{**GOOD[i % len(GOOD)], "id": f"p{i}", "created_at": T0 + 60 * i} for i in range(10)])

    def produce(count: int) -> None:
        asyncio.run(_produce(kafka_server, topic, 0, [next(posts) for _ in range(count)]))

    with running_worker(env, tmp_path / "worker.log", ["-c", shim, "worker"]) as worker:
        wait_until(worker.ready, 60, "/readyz 200", worker)

        def reads(expected: dict[str, float]) -> Callable[[], bool]:
            def check() -> bool:
                found = samples(get(worker.port, "/metrics")[1].decode())
                return {name: found.get((name, frozenset({"topic": topic, "partition": "0"}.items()))) for name in expected} == expected
            return check

        produce(3)
        wait_until(reads({"sentinel_consumer_position": 3, "sentinel_consumer_committed": 3, "sentinel_consumer_unread": 0,
                          "sentinel_consumer_lag": 0}), 60, "three posts read and committed", worker)

        stall.touch()
        produce(2)
        wait_until(stall.with_name("stall.on").exists, 30, "a batch held by the stuck agent", worker)
        # Fetched to the end, nothing unread; not processed, so not committed.
        wait_until(reads({"sentinel_consumer_position": 5, "sentinel_consumer_committed": 3, "sentinel_consumer_unread": 0,
                          "sentinel_consumer_lag": 2}), 30,
                   "position 5 past committed 3", worker)
        assert samples(get(worker.port, "/metrics")[1].decode())[("sentinel_posts_consumed_total", frozenset())] == 3
        assert get(worker.port, "/healthz")[0] == 200

        stall.unlink()  # processed and committed: the committed offset catches up
        wait_until(reads({"sentinel_consumer_position": 5, "sentinel_consumer_committed": 5, "sentinel_consumer_lag": 0}), 30,
                   "committed 5 once the batch went through", worker)
