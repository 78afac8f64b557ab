"""`sentinel run FILE`: the one-shot main job.

Start the embedded stack unless Kafka and Redis are configured, start a worker process, replay FILE
at full speed, wait until the worker has consumed every message and committed its offsets (counters
and offsets, never a sleep), then summarise and stop everything.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import EllipsisType
from typing import Any, Awaitable, Callable, Iterator, Sequence, TypeVar

from pydantic import SecretStr

from sentinel import BAD_LINES_SHOWN
from stream.settings import Settings
from stream.kafka import ensure_topics, held_logs, kafka_client_kwargs, release_logs, worker_topics
from stream.tools.replay import ReplayResult, replay_lines
from stream.tools.services import cancelled_if_stopped, dying_with_parent, embedded_stack, free_port, free_ports, sigterm_unwinds
from stream.store import COUNTERS, WindowStore
from stream.timefmt import shown

# An embedded single-broker stack needs no 30 s rebalance wait; production keeps its settings.
EMBEDDED_TIMEOUTS = {"SENTINEL_REBALANCE_TIMEOUT": "5", "SENTINEL_SESSION_TIMEOUT": "6", "SENTINEL_HEARTBEAT_INTERVAL": "1"}


POLL_S = 0.2  # how often a run looks at the counters, and at a starting worker's /readyz
READY_CONNECT_S = 2.0
READY_RECHECK_S = 1.0

log = logging.getLogger(__name__)
T = TypeVar("T")


class RunError(RuntimeError):
    pass


@contextlib.contextmanager
def connected(settings: Settings) -> Iterator[tuple[Settings, bool]]:
    """Settings pointing at real servers: the configured ones, or a fresh embedded stack. Inside, a
    SIGTERM stops the stack and the workers started under it before the command exits."""
    with sigterm_unwinds():
        if settings.kafka_broker and settings.redis_url:
            yield settings, False
            return
        if problem := half_configured(settings):
            raise RunError(problem)
        with embedded_stack(redis_cluster=settings.redis_cluster) as stack:
            yield settings.model_copy(update={"kafka_broker": stack.kafka_broker, "redis_url": SecretStr(stack.redis_url)}), True


def half_configured(settings: Settings) -> str | None:
    """Why the settings name neither a stack nor none (one URL of the two); None when they do."""
    if bool(settings.kafka_broker) != bool(settings.redis_url):
        return "configure both KAFKA_BROKER and REDIS_URL, or neither (for the embedded stack)"
    return None


def redis_url(settings: Settings) -> str:
    if settings.redis_url is None:
        raise RunError("no Redis configured (REDIS_URL)")
    return settings.redis_url.get_secret_value()


def open_store(settings: Settings) -> WindowStore:
    """The window store on the configured Redis: one server, or a cluster (SENTINEL_REDIS_CLUSTER)."""
    from stream.redis_client import ReplicaWait, open_redis
    from stream.timefmt import parse_duration
    from stream.alerts.grouping import GroupConfig
    from stream.windows import dedupe_window_s, pair_retention_s

    try:
        dedupe_s = dedupe_window_s(settings.retention, settings.dedupe_window)
        pair_s = pair_retention_s(settings.retention, settings.pair_retention, GroupConfig().reference_s)
    except ValueError as exc:
        raise RunError(f"invalid settings: {exc}") from None
    password = settings.redis_password.get_secret_value() if settings.redis_password else None
    try:
        client = open_redis(redis_url(settings), password=password, cluster=settings.redis_cluster)
    except ValueError as exc:
        raise RunError(f"REDIS_URL: {exc}") from None
    wait = ReplicaWait(client, settings.redis_wait_replicas, round(settings.redis_wait_timeout * 1000)) if settings.redis_wait_replicas else None
    return WindowStore(client, bucket_s=parse_duration(settings.bucket), retention_s=parse_duration(settings.retention), replica_wait=wait,
                       pairs=settings.alert_grouping == "incidents", day_retention_s=parse_duration(settings.report_retention),
                       dedupe_s=dedupe_s, pair_retention_s=pair_s, author_cap=settings.author_cap,
                       text_cap=settings.text_cap)


async def refuse_cluster_node(store: WindowStore) -> None:
    """RunError when a plain client was opened on a Redis Cluster node (SENTINEL_REDIS_CLUSTER
    unset): it would see its own slots' keys only, an empty table or a MOVED error."""
    from stream.redis_client import cluster_mode_problem

    if problem := await cluster_mode_problem(store.redis):
        raise RunError(problem)


def worker_env(settings: Settings, embedded: bool, web_port: int | None = None, step_file: Path | None = None) -> dict[str, str]:
    env = dict(os.environ)
    if embedded:
        for key, value in EMBEDDED_TIMEOUTS.items():
            env.setdefault(key, value)
    env.update(
        SENTINEL_KAFKA_BROKER=settings.kafka_broker or "",
        SENTINEL_REDIS_URL=redis_url(settings),
        SENTINEL_WEB_PORT=str(web_port or free_port()),
        # The count the run created the topics with (a recording's own, on the embedded stack):
        # a worker refuses a topic whose partitions differ from its setting.
        SENTINEL_PARTITIONS=str(settings.partitions),
        PYTHONUNBUFFERED="1",
    )
    if settings.console_url:  # `sentinel run --console` gives its own console's address (cli.run_console_settings)
        env["SENTINEL_CONSOLE_URL"] = settings.console_url
    env.pop("KAFKA_BROKER", None)
    env.pop("REDIS_URL", None)
    env.pop("SENTINEL_START_STEP_FILE", None)  # each worker its own, or none: never one the shell exported for all
    if step_file:
        env["SENTINEL_START_STEP_FILE"] = str(step_file)
    return env


def start_worker(settings: Settings, embedded: bool, log_path: Path | None = None, web_port: int | None = None,
                 step_file: Path | None = None) -> subprocess.Popen:
    # The worker has its own copy of the log's descriptor: ours is closed once it has started.
    # `-m sentinel`, the console script's entry (sentinel.main): a stop during the worker's imports
    # ends it with its line and 143, where `-m sentinel.cli` left it to the signal (-15, nothing said).
    with log_path.open("ab") if log_path else contextlib.nullcontext(subprocess.DEVNULL) as out:
        return subprocess.Popen(
            dying_with_parent([sys.executable, "-m", "sentinel", "worker"]),
            env=worker_env(settings, embedded, web_port, step_file),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop_workers(procs: list[subprocess.Popen], grace: float = 30.0) -> None:
    """SIGTERM every worker first, then wait for each (SIGKILL past the grace). Together, not one
    after the other: a worker that drains and leaves the group hands its partitions to those still
    in it, so each later one would wait out that rebalance (half the session timeout on Tansu)
    before it could leave in turn."""
    running = [proc for proc in procs if proc.poll() is None]
    for proc in running:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for proc in running:
        try:
            proc.wait(max(deadline - time.monotonic(), 0.0))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


async def committed_lag(settings: Settings) -> int | None:
    """Messages in forum-posts beyond the worker group's committed offsets; None while a
    partition's end cannot be read (the broker slow to answer a fetch), or the topic's partitions
    cannot be (a metadata answer that leaves the topic out: aiokafka drops a topic whose entry
    carries an error). Counted over no partitions that was 0, "caught up", and `wait_processed`
    went on to settle while the worker could still be judging its last batch, whose counters
    (the wait's other half) are written before it judges."""
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from aiokafka.errors import KafkaError

    consumer = AIOKafkaConsumer(**kafka_client_kwargs(settings), group_id=settings.app_id, enable_auto_commit=False)
    try:  # stopped when its start fails too, or asyncio reports it unclosed
        await consumer.start()
        parts = consumer.partitions_for_topic(settings.topic_posts)
        if not parts:
            await consumer._client.force_metadata_update()  # noqa: SLF001 - first metadata fetch
            parts = consumer.partitions_for_topic(settings.topic_posts)
        if not parts:
            return None
        tps = [TopicPartition(settings.topic_posts, p) for p in sorted(parts)]
        ends = await consumer.end_offsets(tps)
        # Tansu on S3 storage can report an end short of the last records (stream/tools/replay.py,
        # consume_records); a fetch from there answers with the right high watermark.
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, ends[tp])
        deadline = time.monotonic() + 5.0
        while any(consumer.highwater(tp) is None for tp in tps) and time.monotonic() < deadline:
            try:
                await consumer.getmany(timeout_ms=200, max_records=1)
            except KafkaError:  # a record past the end that cannot be decoded: the high watermark came first
                pass
        if any(consumer.highwater(tp) is None for tp in tps):
            return None
        ends = {tp: max(ends[tp], consumer.highwater(tp) or 0) for tp in tps}
        lag = 0
        for tp in tps:
            committed = await consumer.committed(tp) or 0
            lag += max(0, ends[tp] - committed)
        return lag
    finally:
        await consumer.stop()


STARTING_WHAT = "loading the classifier"  # the long part of a worker's start (and a first run's GGUF conversion)
WAITING = "waiting for the first classified post"
# What a worker tells its SENTINEL_START_STEP_FILE until its web server answers, in order (the
# commands' worker()). Measured on 2 busy cores with smollm2: 3-7 s of imports and Kafka and Redis
# checks before the classifier loaded and 0.5-2 s of Faust's start after it, once all "loading".
START_STEPS = ("checking Kafka and Redis", STARTING_WHAT, "starting Faust")


def tell_start_step(path: Path | None, step: str) -> None:
    """Say `step` in the worker's start-step file (replaced whole: a reader never sees half)."""
    if path is None:
        return
    part = path.with_name(path.name + ".part")
    try:
        part.write_text(step, encoding="utf-8")
        os.replace(part, path)
    except OSError:  # a hint for a progress line: never a reason for a worker to stop
        with contextlib.suppress(OSError):
            part.unlink()  # a folder named (os.replace refused): no stray file left beside it


def read_start_step(path: Path) -> str | None:
    """The step a starting worker said (`tell_start_step`); None before its first, or for text that is not one."""
    try:
        step = path.read_text(encoding="utf-8")
    except OSError:
        return None
    return step if step in START_STEPS else None


def start_phase(answers: Sequence[list[str] | None], consumed: int, steps: Sequence[str | None] = ()) -> str | None:
    """What a run's progress says it waits for while its workers start, from each one's /readyz
    (stream/ops/http.py): None where it has not answered yet (its web server starts last), else the
    checks it failed ([]: ready, holding partitions or a standby in the group). Until it answers,
    its `steps` entry says what it does (`START_STEPS`; None: not said yet, its imports).
    None once a post is processed: the count says the rest. Without it, `replayed 3,085/3,085,
    processed 0/3,085` stood for minutes and read as a hang. Once one worker is ready posts can
    flow: with more workers than partitions the others went on joining (the group rebalances at
    each join) while the first classified its batch, and the run said they all were joining."""
    if consumed > 0:
        return None
    steps = list(steps) + [None] * (len(answers) - len(steps))
    pending = [(answer, step) for answer, step in zip(answers, steps) if answer != []]
    if not pending:
        return WAITING
    what = waiting_on(pending)
    if len(pending) < len(answers):
        if what and what.startswith("not ready"):
            still = what  # each of them is, the checks together (failed_checks: how many failed which)
        elif what and any(waiting_on([worker]) != what for worker in pending):
            # The count is of them all, the step only the slowest's: "4 of 5 workers still loading
            # the classifier" said so of 3 that were joining the group.
            still = f"still starting, the slowest {what}"
        else:
            still = f"still {what or 'starting'}"
        return f"{WAITING}; {len(pending)} of {len(answers)} workers {still}"
    who = "worker" if len(answers) == 1 else "workers"
    return f"starting {who}: {what}" if what else f"starting {who}"


def waiting_on(pending: Sequence[tuple[list[str] | None, str | None]]) -> str | None:
    """What the workers not ready yet do, the slowest first: not answering yet (the earliest step
    said; None where one said none yet), then failed checks, then only not in the group yet."""
    unanswered = [step for answer, step in pending if answer is None]
    if unanswered:
        return None if None in unanswered else min(unanswered, key=START_STEPS.index)
    failed = sorted({check for answer, _ in pending if answer for check in answer})
    if failed == ["partitions"]:
        return "joining the consumer group"
    return f"not ready ({failed_checks([answer or [] for answer, _ in pending], failed)})"


def failed_checks(answers: Sequence[list[str]], failed: Sequence[str]) -> str:
    """The checks `answers` failed, each with how many workers failed it where not all did: listed
    together, `not ready (partitions, redis)` of a worker that failed Redis and one that was only
    joining its group read as both without Redis."""
    def on(check: str) -> str:
        count = sum(check in answer for answer in answers)
        return check if count == len(answers) else f"{check} on {count} of {len(answers)}"

    return ", ".join(on(check) for check in failed)


async def watch_ready(url: str, proc: subprocess.Popen, said: Callable[[list[str] | None], None], started: Callable[[], bool]) -> None:
    """Ask the worker's /readyz until it is ready, it exits, or a post was processed (`started`);
    each answer goes to `said`: the checks that failed, [] when ready. One request at a time, with
    no read timeout: the worker holds its port from its first moments but answers only once its
    model has loaded, so one request waits in its listen queue for that, and no pile of abandoned
    ones is left there for its web server to meet."""
    import aiohttp

    timeout = aiohttp.ClientTimeout(total=None, sock_connect=READY_CONNECT_S)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        while proc.poll() is None and not started():
            try:
                async with session.get(url) as response:
                    body = await response.json(content_type=None)
                failed = [str(name) for name in body.get("failed", [])] if isinstance(body, dict) else ["readyz"]
                said(failed if response.status != 200 else [])
                if response.status == 200:
                    return
                # Each answer checks the broker and Redis: a second apart while a group forms,
                # not five times a second (a configured cluster's rebalance can last 30 s).
                await asyncio.sleep(READY_RECHECK_S)
                continue
            except (aiohttp.ClientError, OSError, ValueError):
                pass  # not listening yet (its imports), or gone: wait_processed says why a worker exited
            await asyncio.sleep(POLL_S)


class StartPhases:
    """The run's start phase (`start_phase`) as its workers answer and the counters move;
    `on_phase` hears each change, the first at once: the workers were just started."""

    def __init__(self, workers: int, on_phase: Callable[[str | None], None]) -> None:
        self.answers: list[list[str] | None] = [None] * workers
        self.steps: list[str | None] = [None] * workers
        self.consumed = 0
        self.on_phase = on_phase
        self.shown = start_phase(self.answers, 0)
        on_phase(self.shown)

    def answered(self, worker: int, failed: list[str] | None) -> None:
        self.answers[worker] = failed
        self.tell()

    def stepped(self, worker: int, step: str | None) -> None:
        self.steps[worker] = step
        self.tell()

    def processed(self, consumed: int) -> None:
        self.consumed = consumed
        self.tell()

    def tell(self) -> None:
        if (text := start_phase(self.answers, self.consumed, self.steps)) != self.shown:
            self.shown = text
            self.on_phase(text)


async def watch_step(path: Path, proc: subprocess.Popen, said: Callable[[str | None], None], done: Callable[[], bool]) -> None:
    """Read a starting worker's start-step file (`tell_start_step`) until `done` (its /readyz
    answered, or a post was processed) or it exits; each read goes to `said`."""
    while proc.poll() is None and not done():
        said(read_start_step(path))
        await asyncio.sleep(POLL_S)


async def watching_start(settings: Settings, procs: list[subprocess.Popen], ports: list[int], phases: StartPhases,
                         step_files: Sequence[Path]) -> None:
    from sentinel.healthcheck import local_url

    def answered(i: int) -> bool:
        return phases.answers[i] is not None or phases.consumed > 0

    await asyncio.gather(
        *(watch_ready(local_url(settings.web_host, port, "/readyz"), proc, functools.partial(phases.answered, i), lambda: phases.consumed > 0)
          for i, (proc, port) in enumerate(zip(procs, ports))),
        *(watch_step(path, proc, functools.partial(phases.stepped, i), functools.partial(answered, i))
          for i, (proc, path) in enumerate(zip(procs, step_files))),
    )


async def unless_transient(call: Callable[[], Awaitable[T]]) -> T | None:
    """`call()`, or None while Redis is away (stream/redis_client.is_transient)."""
    from stream.redis_client import is_transient

    try:
        return await call()
    except Exception as exc:
        if not is_transient(exc):
            raise
        log.warning("redis unavailable while waiting; polling on", extra={"error": type(exc).__name__})
        return None


async def wait_processed(
    settings: Settings, store: WindowStore, before: dict[str, float], sent: int, workers: list[subprocess.Popen], timeout: float,
    on_progress: Callable[[int], None] | None = None,
) -> dict[str, float]:
    deadline = time.monotonic() + timeout
    stats = dict(before)
    while True:
        # The workers ride out a Redis outage or a cluster failover; so does this wait.
        stats = await unless_transient(store.stats) or stats
        consumed = int(stats["consumed"] - before["consumed"])
        if on_progress:
            on_progress(consumed)
        # Counters first (one Redis read); the offsets check opens a Kafka client, so it runs
        # only once the counters say everything was consumed.
        if consumed >= sent and await committed_lag(settings) == 0:
            return stats
        for worker in workers:
            if worker.poll() is not None:
                raise RunError(f"a worker exited with code {worker.returncode} after consuming {consumed} of {sent}")
        if time.monotonic() > deadline:
            raise RunError(f"timed out after {timeout:.0f} s: consumed {consumed} of {sent}")
        cancelled_if_stopped()  # a stop a library swallowed (services.cancelled_if_stopped)
        await asyncio.sleep(POLL_S)


def summarise(before: dict[str, float], after: dict[str, float], wall_s: float, alerts: int) -> dict[str, Any]:
    delta = {name: int(after.get(name, 0) - before.get(name, 0)) for name in COUNTERS}
    labels = {label: int(after.get(f"label:{label}", 0) - before.get(f"label:{label}", 0)) for label in ("positive", "negative", "neutral")}
    return {**delta, "labels": labels, "alerts": alerts, "wall_s": round(wall_s, 2), "posts_per_s": round(delta["processed"] / wall_s, 2) if wall_s else 0.0}


def notifying(settings: Settings) -> str | None:
    """A run's worker notifies the Apprise services configured, of every incident the file raises,
    old swings too: a replay meant as a dry run must say so before it starts, or the risk team
    hears of it first. None where no service is set (an empty SENTINEL_APPRISE_URLS is none)."""
    urls = settings.apprise_urls.get_secret_value().strip() if settings.apprise_urls is not None else ""
    named = [name for name, set_ in (("SENTINEL_APPRISE_URLS", urls), ("SENTINEL_APPRISE_CONFIG", settings.apprise_config)) if set_]
    if not named:
        return None
    return (f"{' and '.join(named)} set: this run notifies those services of every incident it raises, old swings included; "
            "unset them for a dry run")


def run_warnings(before: dict[str, float], summary: dict[str, Any], *, embedded: bool) -> list[str]:
    """What a reader of the summary must know to trust it. A second run into a configured Redis
    that already counted this input counts nothing again (its ids are duplicates, its older posts
    late) and fires nothing: without a word it read as a run whose change silenced every alert."""
    warnings = []
    held = before.get("watermark", float("-inf"))
    if not embedded and held > float("-inf"):
        warnings.append(f"this Redis already held posts up to {shown(held)} before the run: posts it had counted are duplicates "
                        "and are not counted or judged again; to compare runs, run each on a fresh Redis (or the embedded stack)"
                        + ("; --input-ended took this file for the whole input, which it was not: the end was judged and trimmed as "
                           "if nothing else had written" if summary.get("ended") else ""))
    if summary.get("ahead"):
        warnings.append(f"{summary['ahead']} posts were stamped more than SENTINEL_MAX_AHEAD ahead of what most of their partition's "
                        "sources agree on (a source whose clock runs fast, or a post from the future): they are counted at their own time, which "
                        "judging reaches later, or never when past the end of the input, and they moved no watermark; "
                        "the worker log names them (\"post stamped ahead\")")
    if summary.get("late_dropped"):
        warnings.append(f"{summary['late_dropped']} posts were dropped as late (further behind the slowest live partition than the "
                        "retention, SENTINEL_RETENTION, or behind their partition's newest by more than the dedupe window): "
                        "they are not in the windows or the alerts")
    return warnings


async def wait_alerts_delivered(store: WindowStore, workers: list[subprocess.Popen], timeout: float) -> None:
    """Every transition in the outbox has been notified (or given up on) and published."""
    from stream.alerts.delivery import outbox_drained

    deadline = time.monotonic() + timeout
    while not await unless_transient(lambda: outbox_drained(store.redis)):
        if all(w.poll() is not None for w in workers):
            raise RunError("every worker exited before the alerts were delivered")
        if time.monotonic() > deadline:
            raise RunError(f"timed out after {timeout:.0f} s waiting for alert delivery")
        cancelled_if_stopped()  # a stop a library swallowed (services.cancelled_if_stopped)
        await asyncio.sleep(0.2)


async def flush_incidents(settings: Settings, store: WindowStore, *, ended: bool) -> None:
    """The replay is through its file: incidents still in their group wait are announced now (their
    wait counts event time, and no more will pass). `ended` (the run's own embedded stack, or a
    configured one with `--input-ended`): the file was the whole input, so every scope is judged up
    to the newest post of any partition (less the grace), not only as far as the partition that
    ended first, and every scope's windows are then trimmed as a write with every partition through
    its newest post would (AlertEngine.trim_ended), so what the run leaves does not depend on which
    partition went idle when. Otherwise other producers may still be writing, so no partition is
    taken for ended and nothing more is trimmed."""
    from stream.worker import alert_engine

    await alert_engine(settings, store).settle(ended=ended)


def settled_as_ended(*, embedded: bool, input_ended: bool) -> bool:
    """Whether the end of a run may be taken as the end of its input. The embedded stack is the
    run's own, so nothing else writes to it; a configured one only on the caller's word, since
    taking a partition another producer still writes for ended would judge past posts still to come
    and trim buckets they fall in."""
    return embedded or input_ended


async def read_alerts(settings: Settings, since_ms: int) -> list[dict[str, Any]]:
    """This run's alert records from the alerts topic, in a stable order (event time, scope, kind, state)."""
    from stream.tools.replay import consume_records

    found = []
    # Every record is on the broker by now (delivery awaits the broker's ack before it acks the
    # outbox), so reading up to the end offsets reads them all, however slow the broker.
    async for rec in consume_records(settings, settings.topic_alerts):
        if rec["timestamp"] >= since_ms and "value" in rec:
            found.append(json.loads(rec["value"]))
    order = {"firing": 0, "resolved": 1}
    return sorted(found, key=lambda r: (r["window_end"], r["scope"], r["kind"], order.get(r["state"], 2)))


async def run_once(
    settings: Settings,
    path: Path,
    *,
    embedded: bool,
    timeout: float,
    input_ended: bool = False,
    workers: int = 1,
    worker_log: Path | None = None,
    on_sent: Callable[[int], None] | None = None,
    on_consumed: Callable[[int], None] | None = None,
    on_phase: Callable[[str | None], None] | None = None,
    recorded: int | None | EllipsisType = ...,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Replay PATH through `workers` worker processes (one consumer group); the summary and the alert
    records. The end is settled as ended (`settled_as_ended`) on the embedded stack, or where the
    caller says PATH is the whole input of the configured topics and Redis (`input_ended`).
    `recorded`: the partition count PATH names (recorded_partitions), where the caller has it.
    `on_phase`: what the run waits for while the workers start (`start_phase`), None once posts flow."""
    ended = settled_as_ended(embedded=embedded, input_ended=input_ended)
    with held_logs("aiokafka") as held:  # a configured broker that is down is our one error line, not aiokafka's first
        await ensure_topics(settings, worker_topics(settings))
    release_logs(held)
    store = open_store(settings)
    try:
        await refuse_cluster_node(store)
        before = await store.stats()
        since_ms = int(time.time() * 1000)
        ports = free_ports(workers)  # distinct: a worker given a port another one holds exits
        # Each worker says its start step in a file of its own here, while it does not answer /readyz.
        steps_dir = tempfile.mkdtemp(prefix="sentinel-start-") if on_phase else None
        step_files = [Path(steps_dir, f"worker-{i}.step") for i in range(workers)] if steps_dir else []
        procs: list[subprocess.Popen] = []
        phases = StartPhases(workers, on_phase) if on_phase else None
        watcher: asyncio.Future[None] | None = None

        def consumed(n: int) -> None:
            if phases:
                phases.processed(n)
            if on_consumed:
                on_consumed(n)

        try:
            # In here, so that a start that fails (or a stop) part-way stops the workers started
            # and removes the step files' folder: before, both were left behind.
            for i, port in enumerate(ports):
                procs.append(start_worker(settings, embedded, worker_log, web_port=port,
                                          step_file=step_files[i] if step_files else None))
            watcher = asyncio.ensure_future(watching_start(settings, procs, ports, phases, step_files)) if phases else None
            started = time.monotonic()
            # A recording of more partitions than the topic's goes where its keys hash: sentinel run's
            # recording_partitions said so before the stack started (the worker's partition check
            # makes SENTINEL_PARTITIONS the topic's count).
            replayed = await replay_lines(settings, path, settings.topic_posts, None, on_sent, repartition=True,
                                          recorded=recorded)
            sent = replayed.sent
            after = await wait_processed(settings, store, before, sent, procs, timeout, consumed)
            wall = time.monotonic() - started
            await flush_incidents(settings, store, ended=ended)
            await wait_alerts_delivered(store, procs, timeout)
        finally:
            if watcher:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await watcher  # its own errors are only "not answered yet"
            stop_workers(procs)
            if steps_dir:
                shutil.rmtree(steps_dir, ignore_errors=True)
        alerts = await read_alerts(settings, since_ms)
        letters = await read_dead_letters(settings, since_ms, replayed) if after.get("dlq", 0) > before.get("dlq", 0) else []
        summary = summarise(before, after, wall, alerts=len(alerts))
        summary["sent"] = sent
        summary["not_sent"] = len(replayed.not_sent)
        summary["not_sent_lines"] = [{"line": line, "reason": why} for line, why in replayed.not_sent]
        summary["dead_lettered_lines"] = letters
        summary["ended"] = ended
        for warning in run_warnings(before, summary, embedded=embedded):
            print(f"warning: {warning}", file=sys.stderr, flush=True)
        if letters:
            # The embedded stack's DLQ topic goes with it: say here which lines were bad, and why.
            print(f"{len(letters)} line{'s' if len(letters) != 1 else ''} dead-lettered:", file=sys.stderr)
            print("\n".join(dead_letter_lines(path, letters)), file=sys.stderr, flush=True)
        if replayed.not_sent:
            print(f"{len(replayed.not_sent)} line{'s' if len(replayed.not_sent) != 1 else ''} not sent (too large; warned above)",
                  file=sys.stderr, flush=True)
        return summary, alerts
    finally:
        await store.close()


DEAD_LETTER_MESSAGE_CHARS = 300


async def read_dead_letters(settings: Settings, since_ms: int, sent: ReplayResult) -> list[dict[str, Any]]:
    """This run's dead letters, each with the file line it came from, in line order. A dead letter
    names where its message was (source_partition, source_offset); the replay knows which line it
    sent there. One from another producer, or from before this run, places no line and is left out."""
    from stream.tools.replay import consume_records

    letters = []
    # The workers flush their dead letters before they commit, and the run waited for the commits.
    async for rec in consume_records(settings, settings.topic_dlq):
        if rec["timestamp"] < since_ms or rec.get("value_encoding") != "utf-8":
            continue
        try:
            letter = json.loads(rec["value"])
        except (ValueError, RecursionError):
            continue
        if not isinstance(letter, dict) or letter.get("source_topic") != settings.topic_posts:
            continue
        partition, offset = letter.get("source_partition"), letter.get("source_offset")
        if isinstance(partition, int) and isinstance(offset, int) and not isinstance(partition, bool) and not isinstance(offset, bool):
            letters.append(((partition, offset), letter))
    lines = sent.lines_at(where for where, _ in letters)
    found = []
    for where, letter in letters:
        if (line := lines.get(where)) is None:
            continue
        message = " ".join(str(letter.get("message") or "").split())  # one line
        if len(message) > DEAD_LETTER_MESSAGE_CHARS:
            message = message[: DEAD_LETTER_MESSAGE_CHARS - 3] + "..."
        found.append({"line": line, "reason": str(letter.get("reason") or "unknown"), "message": message})
    return sorted(found, key=lambda d: d["line"])


def dead_letter_lines(path: Path, letters: list[dict[str, Any]], shown: int = BAD_LINES_SHOWN) -> list[str]:
    """`FILE:LINE: reason: message` for the first `shown`, then how many more."""
    lines = [f"{path}:{d['line']}: {d['reason']}: {d['message']}" for d in letters[:shown]]
    if len(letters) > shown:
        lines.append(f"... and {len(letters) - shown} more")
    return lines


def console_app(settings: Settings) -> Any:
    """The risk console's ASGI app on the configured Redis (stream/console)."""
    from stream.console.app import build_app
    from stream.console.auth import Tokens
    from stream.console.data import ConsoleData
    from stream.worker import alert_config

    def secret(value: SecretStr | None) -> str | None:
        return value.get_secret_value() if value else None

    tokens = Tokens(read=secret(settings.console_read_token), operator=secret(settings.console_operator_token))
    return build_app(ConsoleData(open_store(settings), alert_config(settings), settings.console_overview_max_age, settings.alert_grouping), tokens,
                     console_url=settings.console_url)


def serve_console(settings: Settings) -> None:
    """Serve the console until SIGINT or SIGTERM (uvicorn's own handlers)."""
    import uvicorn

    # Our structured logging stays; uvicorn's access log would repeat every poll.
    uvicorn.run(console_app(settings), host=settings.console_host, port=settings.console_port, log_config=None,
                access_log=False, lifespan="off")

