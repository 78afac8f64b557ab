"""The worker's HTTP endpoints, served by Faust's own web server on SENTINEL_WEB_PORT.

- `/healthz` (liveness): the process answers and its event loop is not stalled. A heartbeat task
  wakes every second; if its last beat is older than `max_stall_s` the loop has been starved (a
  blocking call, a runaway coroutine) and restarting is the cure, so the answer is 503. Kafka and
  Redis are deliberately not checked here: a restart cannot fix them.
- `/readyz` (readiness): broker reachable, Redis answers PING, model loaded, and the agent holds at
  least one partition of the posts topic; else 503 naming the failed checks.
- `/metrics`: Prometheus text format from the worker's own registry (stream/ops/prometheus.py).
  Broker and Redis are probed every few seconds for it (`sentinel_dependency_up`, outages and
  seconds down), so an outage shows in the metrics whether or not anything calls /readyz.

The views run on the worker's event loop (Faust's `web_in_thread` is off): a fully blocked loop
cannot answer at all, and the probe's timeout is then the failure signal; the heartbeat catches
the loop that still answers but is starved. The decisions (`liveness`, `readiness`,
`offsets_behind`, `resume_offset`) are pure functions; the probes of Kafka, Redis and Faust's consumer are the shell.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import socket
import time
from dataclasses import dataclass
from typing import Any, Callable, Collection, Mapping, Sequence

import faust
from faust.web import Request, Response, View
from prometheus_client import CONTENT_TYPE_LATEST

from model.scorer import Scorer
from stream.keys import DATA_MARKER_KEY
from stream.ops.prometheus import ConsumerOffsets, ModelLabels, TopicPartition, WorkerMetrics, offsets_behind, resume_offset

log = logging.getLogger(__name__)

HEARTBEAT_S = 1.0
DEPENDENCY_PROBE_S = 5.0  # broker and Redis are probed this often for the metrics, scraped or not
CHECK_TIMEOUT_S = 2.0  # per readiness check; below a typical probe timeout (5 s) with all run at once
JSON_HEADERS = {"Cache-Control": "no-store"}


# --- the functional core -------------------------------------------------------------------------


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str = ""


def readiness(checks: Sequence[Check]) -> tuple[int, dict[str, Any]]:
    """HTTP status and body for /readyz: 200 only when every check passed."""
    failed = [c.name for c in checks if not c.ok]
    body = {
        "status": "unready" if failed else "ready",
        "failed": failed,
        "checks": {c.name: {"ok": c.ok, "detail": c.detail} for c in checks},
    }
    return (503 if failed else 200), body


# The least a start waits for its partitions before that is news: Faust's own start (the topics'
# metadata, the coordinator's address) is not bounded by the group's timeouts, and a busy node
# slows it; with the embedded stack's (session 6 s, rebalance 5 s) the derivation alone gives 17 s.
START_JOIN_FLOOR_S = 30.0


def start_join_patience_s(session_timeout_s: float, rebalance_timeout_s: float) -> float:
    """How long a start's wait for its partitions is normal, from the group settings that bound it
    (SENTINEL_SESSION_TIMEOUT, SENTINEL_REBALANCE_TIMEOUT): a predecessor that died without leaving
    (a pod killed, a rolling restart) keeps its member until its session lapses, the rebalance that
    then starts waits for the others to rejoin, and one more member lost in it (the rollout's next
    pod) costs another session. A fixed 60 s warned of a normal join on a group configured slower,
    and said nothing for a minute on one configured faster. Never under START_JOIN_FLOOR_S."""
    return max(START_JOIN_FLOOR_S, 2 * session_timeout_s + rebalance_timeout_s)


def readiness_log_level(failed: Sequence[str], was_ready: bool, warned: bool = False, starting_s: float = 0.0,
                        patience_s: float = START_JOIN_FLOOR_S) -> int:
    """How a change of /readyz's failed checks is logged. Before its first ready answer a worker
    that has only not joined its group yet is starting as it should: every `sentinel run` and every
    pod start logged that as a WARNING, then its end as INFO, two lines saying nothing the
    "partitions assigned" line does not. From then on (or where another check fails) a change is news.
    So is a start's wait past `patience_s` (`start_join_patience_s`; `starting_s`: a pod that never
    joins would otherwise log no reason it stays unready), and once a start has warned (`warned`),
    its way back to ready: a WARNING with no INFO after it reads as a worker still down."""
    if not was_ready and not warned and set(failed) <= {"partitions"} and (not failed or starting_s < patience_s):
        return logging.DEBUG
    return logging.WARNING if failed else logging.INFO


class ReadinessLog:
    """Which /readyz answers are logged ("readiness changed"), at `readiness_log_level`: a change of
    the failed checks, not every probe; and a start's wait for its partitions again, as a WARNING,
    once it has lasted `patience_s` (`start_join_patience_s`)."""

    def __init__(self, started: float, patience_s: float) -> None:
        self.started = started
        self.patience_s = patience_s
        self.reported: list[str] | None = None  # the failed checks last logged
        self.reported_level = logging.DEBUG
        self.was_ready = False
        self.warned = False

    def level(self, failed: list[str], now: float) -> int | None:
        """The level to log this answer at; None: nothing new to say."""
        level = readiness_log_level(failed, self.was_ready, self.warned, now - self.started, self.patience_s)
        if failed == self.reported and not (failed and level > self.reported_level):
            return None
        self.reported, self.reported_level = failed, level
        self.was_ready = self.was_ready or not failed
        self.warned = self.warned or level == logging.WARNING
        return level


def liveness(since_beat_s: float, loop_lag_s: float, max_stall_s: float) -> tuple[int, dict[str, Any]]:
    """HTTP status and body for /healthz: 503 once the heartbeat is older than `max_stall_s`."""
    stalled = since_beat_s > max_stall_s
    body = {
        "status": "stalled" if stalled else "ok",
        "since_heartbeat_s": round(since_beat_s, 3),
        "loop_lag_s": round(loop_lag_s, 3),
        "max_stall_s": max_stall_s,
    }
    return (503 if stalled else 200), body


class Outages:
    """Up/down bookkeeping of one dependency from its successive probe results (the periodic probe
    and /readyz both feed it): an outage starts at the first failed probe after a good one (or at
    start-up) and counts, in seconds, every interval that began down."""

    def __init__(self) -> None:
        self.up: bool | None = None  # unknown until the first probe
        self.last: float | None = None
        self.down_since: float | None = None

    def observe(self, ok: bool, now: float) -> tuple[bool, float]:
        """(an outage started with this probe, seconds of outage since the previous probe)."""
        down_s = max(0.0, now - self.last) if self.last is not None and self.up is False else 0.0
        started = not ok and self.up is not False
        if started:
            self.down_since = now
        self.up, self.last = ok, now
        return started, down_s


# --- the loop heartbeat --------------------------------------------------------------------------


class LoopWatch:
    """Stamps the time every `interval_s` from a task on the event loop; how late each wake-up is
    measures the loop's lag, and the age of the last stamp how long it has been stalled."""

    def __init__(self, interval_s: float = HEARTBEAT_S, clock: Callable[[], float] = time.monotonic,
                 on_lag: Callable[[float], None] | None = None) -> None:
        self.interval_s = interval_s
        self.clock = clock
        self.on_lag = on_lag
        # None until the first beat: Faust starts app tasks only once the app is fully started
        # (first rebalance, table recovery), which can take a while against a slow broker; that
        # is start-up, not a stall, and the startup probe covers it.
        self.last_beat: float | None = None
        self.lag_s = 0.0

    async def run(self) -> None:
        while True:
            before = self.clock()
            await asyncio.sleep(self.interval_s)
            now = self.clock()
            self.lag_s = max(0.0, now - before - self.interval_s)
            self.last_beat = now
            if self.on_lag is not None:
                self.on_lag(self.lag_s)

    def since_beat(self) -> float:
        return 0.0 if self.last_beat is None else max(0.0, self.clock() - self.last_beat)


# --- the probes (the imperative shell) -----------------------------------------------------------


async def check_broker(app: faust.App, timeout: float = CHECK_TIMEOUT_S) -> Check:
    """A metadata request over the producer's connection: proves a broker answers right now."""
    try:
        # Faust's aiokafka producer lives on this loop; its client is the cheapest live connection.
        client = app.producer._ensure_producer().client  # noqa: SLF001 - Faust exposes no public handle
        await asyncio.wait_for(client.fetch_all_metadata(), timeout)
    except Exception as exc:  # noqa: BLE001 - any failure means "not reachable"; the type says why
        return Check("broker", False, type(exc).__name__)
    return Check("broker", True)


async def check_redis(redis: Any, timeout: float = CHECK_TIMEOUT_S) -> Check:
    try:
        # redis-py retries a refused connection with backoff on its own; the timeout bounds it.
        await asyncio.wait_for(redis.ping(), timeout)
    except Exception as exc:  # noqa: BLE001
        return Check("redis", False, type(exc).__name__)
    return Check("redis", True)


def marker_news(seen: str | None, found: str | None, created: bool) -> str | None:
    """What one read of Redis' data marker (`keys.DATA_MARKER_KEY`) says, given the value this
    worker read before (`seen`): `fresh` where this worker's first read found none and set it (a
    new Redis, or one that lost its data before the worker started: nothing tells the two apart
    here), `lost` where it differs from the one read before (emptied, a restart without
    persistence, a failover to an empty replica, another Redis behind the address), else None. Pure."""
    if found is None:
        return None
    if seen is None:
        return "fresh" if created else None
    return "lost" if found != seen else None


def marker_created_at(value: str) -> float:
    """The epoch seconds a marker value (`<hex>:<epoch s>`) was made at; 0.0 for one not so made."""
    try:
        return float(value.rpartition(":")[2])
    except ValueError:
        return 0.0


async def read_marker(redis: Any, ttl_s: int, timeout: float = CHECK_TIMEOUT_S) -> tuple[str | None, bool]:
    """Redis' data marker, set first where there is none: (its value, whether this call set it);
    (None, False) where Redis does not answer (the Redis check reports that). Its expiry is pushed
    to `ttl_s` from now at each read: it goes, as every key does, only once no worker has run for
    longer than the data it stands for lives."""
    mark = f"{secrets.token_hex(8)}:{int(time.time())}"
    try:
        async with redis.pipeline(transaction=False) as pipe:
            pipe.set(DATA_MARKER_KEY, mark, nx=True, ex=ttl_s)
            pipe.get(DATA_MARKER_KEY)
            pipe.expire(DATA_MARKER_KEY, ttl_s)
            created, found, _ = await asyncio.wait_for(pipe.execute(), timeout)
    except Exception:  # noqa: BLE001 - Redis away: the next probe reads it again
        return None, False
    found = found.decode() if isinstance(found, bytes) else found
    return found, bool(created)


def check_model(classifier: Scorer | None) -> Check:
    # A scorer exists only once its model loaded (Classifier.load raises otherwise); the lexicon needs none.
    if classifier is None:
        return Check("model", False, "no model loaded")
    if not getattr(classifier, "alive", True):  # its own process (stream/model_process.py) is gone
        return Check("model", False, "the model process exited")
    return Check("model", True, classifier.info.id)


def check_partitions(app: faust.App, topic: str) -> Check:
    try:
        mine = sorted(tp.partition for tp in app.consumer.assignment() if tp.topic == topic)
    except Exception as exc:  # noqa: BLE001 - the consumer is not started (or is restarting)
        return Check("partitions", False, type(exc).__name__)
    if mine:
        return Check("partitions", True, f"{topic}: {mine}")
    # In the group with nothing to do (more replicas than partitions, a surge pod in a rolling
    # update): ready as a standby, so it neither blocks the rollout nor eats the disruption budget.
    # Faust sets `unassigned` at each assignment; before the first one the worker has not joined.
    if getattr(app, "unassigned", None) is True and not getattr(app, "rebalancing", False):
        return Check("partitions", True, f"standby: in the consumer group, no partition of {topic} assigned")
    return Check("partitions", False, f"no partition of {topic} assigned yet")


LATEST, EARLIEST = -1, -2  # ListOffsets' timestamps for a partition's end and its first offset


async def list_offsets(client: Any, tps: Collection[Any], timestamp: int) -> dict[Any, int]:
    """ListOffsets for `tps` (LATEST: each partition's end; EARLIEST: its first offset), one request
    per partition leader, over `client` (aiokafka's AIOKafkaClient). The worker's producer's client,
    not the consumer: the consumer's connection to a leader carries its fetches, which Faust has
    the broker hold up to 1.5 s (`fetch_max_wait_ms`) when there is nothing new, and the broker
    answers a connection's requests in order, so a lookup there waits behind each; and its calls go
    through Faust's consumer thread, whose two workers run the fetches and commits too. A
    partition whose leader the client does not know yet (its first call: the producer writes other
    topics) or that the broker answers with an error (a leader moved) is left out, and the client's
    metadata is brought up to date for the next call."""
    from aiokafka.protocol.offset import OffsetRequest
    from aiokafka.structs import TopicPartition as KafkaTP

    by_leader: dict[int, dict[str, list[tuple[int, int]]]] = {}
    for tp in tps:
        leader = client.cluster.leader_for_partition(KafkaTP(tp.topic, tp.partition))
        if leader is None or leader == -1:
            client.add_topic(tp.topic)
            continue
        by_leader.setdefault(leader, {}).setdefault(tp.topic, []).append((tp.partition, timestamp))

    async def ask(leader: int, topics: dict[str, list[tuple[int, int]]]) -> dict[Any, int]:
        response = await client.send(leader, OffsetRequest(-1, 0, list(topics.items())))
        found: dict[Any, int] = {}
        for topic, partitions in response.topics:
            for partition, error_code, *info in partitions:
                if error_code:  # not the leader any more, unknown partition: the highwater stands in
                    client.force_metadata_update()
                    continue
                # v1 and later answer (timestamp, offset[, leader epoch]). v0's list of offsets is not
                # read: every Kafka since 0.10.1 (2016) answers v1, the brokers the project runs on
                # (Kafka under Strimzi in KRaft mode, docs/operations.md; Tansu) do, and no real broker
                # here answers v0 to test it with. A v0-only broker fails this unpacking and
                # `broker_offsets` lets the fetched highwater stand in.
                _timestamp, offset = info[:2]
                if offset >= 0:
                    found[KafkaTP(topic, partition)] = offset
        return found

    answers = await asyncio.gather(*(ask(leader, topics) for leader, topics in by_leader.items()))
    return {tp: offset for answer in answers for tp, offset in answer.items()}


async def broker_offsets(app: faust.App, tps: Collection[Any], timestamp: int, timeout: float = CHECK_TIMEOUT_S) -> dict[Any, int]:
    """`list_offsets` over the worker's producer's client; {} when it fails or takes over `timeout`."""
    if not tps:
        return {}
    try:
        client = app.producer._ensure_producer().client  # noqa: SLF001 - as check_broker: Faust exposes no public handle
        return await asyncio.wait_for(list_offsets(client, tps, timestamp), timeout)
    except Exception:  # noqa: BLE001 - the producer not started, the broker slow or away
        return {}


def read_position(consumer: Any, tp: Any) -> int | None:
    """The offset of the next record aiokafka fetches for `tp`, read from its subscription state
    where it lies (Faust's `position` is a call into the consumer thread, whose two workers run the
    fetches and commits). aiokafka moves it past a transaction's commit marker, which the group's
    committed offset never passes (`SentinelPartitionStalled` tells a stalled partition from a
    caught-up transactional one by it). None before the position is known or once revoked."""
    try:
        kafka = consumer._thread._ensure_consumer()  # noqa: SLF001 - Faust exposes no sync handle
        state = kafka._subscription.subscription.assignment.state_value(tp)  # noqa: SLF001
        # Inside the try too: the consumer thread can drop the position (aiokafka's reset after an
        # out-of-range fetch) between the check and the read, and `position` then asserts.
        return state.position if state is not None and state.has_valid_position else None
    except Exception:  # noqa: BLE001 - not started, no subscription yet, a rebalance or reset under way
        return None


async def consumer_lag(app: faust.App, topics: Collection[str], timeout: float = CHECK_TIMEOUT_S) -> dict[TopicPartition, int]:
    """`consumer_offsets`' lag alone."""
    return (await consumer_offsets(app, topics, timeout)).lag


async def consumer_offsets(app: faust.App, topics: Collection[str], timeout: float = CHECK_TIMEOUT_S) -> ConsumerOffsets:
    """Lag per assigned partition of the input `topics` from Faust's consumer. Faust assigns each
    worker its internal `<app id>-__assignor-__leader` topic too: its lag would be summed into the
    dashboard's partition 0, so it is left out.

    Each partition's end is asked of the broker (ListOffsets latest, `list_offsets`): one lookup per
    call, i.e. per scrape of /metrics (every 30 s with the shipped ServiceMonitor), waiting at most
    `timeout`. The
    consumer's in-memory highwater moves only with a fetch response for that partition, so a
    partition whose fetches stopped kept its last lag while posts piled up on it, and no rule fired
    (`tests/test_http.py`). Where the broker gives no end in time (an outage, a partition revoked
    meanwhile), that highwater stands in: what the worker last knew beats no series during an
    outage `sentinel_dependency_up` already reports. The larger of the two counts: a highwater was
    read from the same log earlier, so it is never past a right answer, and Tansu 0.6 answers a
    partition's end as one of its latest record batches' first offset + 1, short of the records
    after it (stream/tools/replay.py, `consume_records`, says when).
    Committed offsets are in memory (every commit updates them, and each assignment seeds them with
    the group's committed offsets). Each partition's first offset is a second lookup (ListOffsets
    earliest, beside and at the same time as the first): the group starts reading there where it
    never committed (the worker's offset reset is `earliest`), and resumes there where retention
    deleted the records past its committed offset, which stays behind until a post is processed
    (`resume_offset`); until session 52 only never-committed partitions were asked, and a group
    whose workers were down longer than the retention read its lag as the deleted records and
    `SentinelProcessingStuck` fired. Not the read position: the consumer reads ahead of the
    batches, so a new group whose first batch could not be written (Redis away) showed lag 0 with
    every post unread. `committed` is that offset itself, per partition: Faust moves it only when
    a processed batch is acked, so it holds behind the read position while an agent is stuck on a
    quiet stream (`SentinelProcessingStuck`). Where the broker gives no first offset in time, the
    committed offset stands alone."""
    consumer = app.consumer
    try:
        assignment = [tp for tp in consumer.assignment() if tp.topic in topics]
    except Exception:  # noqa: BLE001 - not started yet: no partitions, no lag
        return ConsumerOffsets({}, {}, {}, {})
    committed: Mapping[Any, int | None] = {tp: consumer._committed_offset.get(tp) for tp in assignment}  # noqa: SLF001
    ends, starts = await asyncio.gather(broker_offsets(app, assignment, LATEST, timeout), broker_offsets(app, assignment, EARLIEST, timeout))

    def end(tp: Any) -> int | None:
        try:
            fetched = consumer.highwater(tp)
        except Exception:  # noqa: BLE001 - revoked between assignment() and here
            fetched = None
        known = [offset for offset in (ends.get(tp), fetched) if offset is not None]
        return max(known) if known else None

    # Each figure once per partition: the lag and the gauge share the resume offset, and the lag
    # and the unread count share the end (the consumer thread can move its highwater between two
    # reads of it, and the two then disagreed on the same partition).
    ended = {tp: offset for tp in assignment if (offset := end(tp)) is not None}
    positions = {tp: offset for tp in assignment if (offset := read_position(consumer, tp)) is not None}
    resumes = {tp: offset for tp in assignment if (offset := resume_offset(committed[tp], starts.get(tp))) is not None}
    return ConsumerOffsets(offsets_behind(ended, resumes), positions, offsets_behind(ended, positions), resumes)


# --- wiring --------------------------------------------------------------------------------------


def serve_on(app: faust.App, listeners: Sequence[socket.socket]) -> None:
    """Faust's web server serves on these sockets, listening since the worker's start-up check,
    instead of binding the port itself: a port taken between the two was Faust's traceback. Call
    before anything uses `app.web` (pages register on it)."""
    from aiohttp.web import SockSite
    from faust.web.drivers.aiohttp import Web

    class HeldWeb(Web):
        async def start_server(self) -> None:  # Faust's own, with our sockets for its TCPSite
            await self._runner.setup()
            for sock in listeners:
                await SockSite(self._runner, sock).start()

    app.web = HeldWeb(app)


def install(
    app: faust.App,
    *,
    metrics: WorkerMetrics,
    redis: Any,
    classifier: Scorer,
    posts_topic: str,
    max_stall_s: float = 30.0,
    join_patience_s: float,
    marker_ttl_s: int = 180 * 86400,
) -> LoopWatch:
    """Register /healthz, /readyz and /metrics on the app's web server and start the heartbeat.
    `join_patience_s`: how long a start's wait for its partitions is logged at DEBUG only
    (`start_join_patience_s`). `marker_ttl_s`: how long Redis' data marker outlives the last
    worker's probe (`read_marker`)."""
    watch = LoopWatch(on_lag=metrics.set_loop_lag)
    metrics.set_model(ModelLabels.from_info(classifier.info))

    @app.task
    async def loop_heartbeat() -> None:
        await watch.run()

    @app.page("/healthz")
    async def healthz(self: View, request: Request) -> Response:
        status, body = liveness(watch.since_beat(), watch.lag_s, max_stall_s)
        return self.json(body, status=status, headers=dict(JSON_HEADERS))

    outages = {"broker": Outages(), "redis": Outages()}

    def observed(*checks: Check) -> None:
        """Probe results into the dependency metrics (and a log line when one goes or comes back)."""
        now = time.monotonic()
        for check in checks:
            tracker = outages[check.name]
            was_down_since = tracker.down_since if tracker.up is False else None
            started, down_s = tracker.observe(check.ok, now)
            metrics.observe_dependency(check.name, check.ok, started=started, down_s=down_s)
            if started:
                log.warning("dependency unreachable", extra={"dependency": check.name, "error": check.detail})
            elif check.ok and was_down_since is not None:
                log.info("dependency reachable again", extra={"dependency": check.name, "down_s": round(now - was_down_since, 1)})

    marker: dict[str, str | None] = {"seen": None}

    async def watch_marker() -> None:
        """Redis losing its data is not an outage when it comes back at once (a restart without
        persistence, a FLUSHALL): the windows, incidents, silences and notification marks are gone
        and the worker writes on as if nothing happened. The marker says so, in the log and the
        metrics (docs/operations.md, "Backup and disaster recovery")."""
        found, created = await read_marker(redis, marker_ttl_s)
        news = marker_news(marker["seen"], found, created)
        if found is None:
            return
        marker["seen"] = found
        metrics.observe_redis_marker(marker_created_at(found), news == "lost")
        if news == "fresh":
            # INFO: a first deployment and every `sentinel run` on its own Redis start so, and an
            # ordinary run logs no WARNING (logs.worth_keeping); the loss under a running worker is the ERROR.
            log.info("Redis holds no data marker: a new Redis, or one that lost its data; marked it",
                     extra={"marker": DATA_MARKER_KEY, "runbook": "docs/operations.md#backup-and-disaster-recovery"})
        elif news == "lost":
            log.error("Redis lost its data while the worker ran (its data marker changed): windows, baselines, incidents, "
                      "silences and notification marks are gone",
                      extra={"marker": DATA_MARKER_KEY, "runbook": "docs/operations.md#backup-and-disaster-recovery"})

    @app.task
    async def dependency_probe() -> None:
        # /readyz answers only when asked; Prometheus scrapes only /metrics: without this, an outage
        # between readiness probes, or on a worker nobody probes, would never reach the metrics.
        while True:
            broker, store = await asyncio.gather(check_broker(app), check_redis(redis))
            observed(broker, store)
            if store.ok:
                await watch_marker()
            await asyncio.sleep(DEPENDENCY_PROBE_S)

    said = ReadinessLog(time.monotonic(), join_patience_s)

    @app.page("/readyz")
    async def readyz(self: View, request: Request) -> Response:
        broker, store = await asyncio.gather(check_broker(app), check_redis(redis))
        observed(broker, store)
        status, body = readiness([broker, store, check_model(classifier), check_partitions(app, posts_topic)])
        if (level := said.level(body["failed"], time.monotonic())) is not None:
            log.log(level, "readiness changed", extra={"ready": not body["failed"], "failed": body["failed"],
                                                       "details": {c: v["detail"] for c, v in body["checks"].items() if not v["ok"]}})
        return self.json(body, status=status, headers=dict(JSON_HEADERS))

    @app.page("/metrics")
    async def prometheus(self: View, request: Request) -> Response:
        metrics.set_offsets(await consumer_offsets(app, (posts_topic,)))
        # Content-Type goes in the headers: aiohttp refuses a content_type argument with a charset.
        return self.bytes(metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    return watch
