"""SIGTERM, as Kubernetes sends it: the worker stops taking batches, finishes the one in flight,
commits, and exits within its grace period; a successor then processes the rest with no post
processed twice (a batch counted but left uncommitted would come back as duplicates)."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest
import redis

from stream.settings import Settings
from sentinel.run import committed_lag, open_store, start_worker, stop_workers, wait_processed
from stream.kafka import ensure_topics
from stream.tools.replay import replay
from test_stream_e2e import bucket_counts, good_posts

GRACE_S = 20


def stats(url: str) -> dict[str, int]:
    raw = redis.Redis.from_url(url, decode_responses=True).hgetall("sentinel:{all}:stats")
    return {k: int(v) for k, v in raw.items() if v.isdigit()}


@pytest.mark.slow
@pytest.mark.parametrize("model_process", ["false", "true"], ids=["model-on-a-thread", "model-in-its-own-process"])
def test_sigterm_finishes_the_batch_in_flight_commits_and_exits(tmp_path, base_dir, cache_dir, kafka_server, redis_server, monkeypatch, model_process):
    redis.Redis.from_url(redis_server).flushdb()
    env = {
        "SENTINEL_MODEL_PROCESS": model_process,  # in its own process the batches in flight drain through the pipe
        "SENTINEL_CACHE_DIR": str(cache_dir), "KAFKA_BROKER": kafka_server, "REDIS_URL": redis_server,
        "SENTINEL_APP_ID": "test-shutdown", "SENTINEL_TOPIC_POSTS": "shutdown-posts", "SENTINEL_TOPIC_SENTIMENT": "shutdown-sentiment",
        "SENTINEL_TOPIC_DLQ": "shutdown-dlq", "SENTINEL_TOPIC_ALERTS": "shutdown-alerts", "SENTINEL_PARTITIONS": "2",
        "SENTINEL_MAX_BATCH": "32", "SENTINEL_SHUTDOWN_GRACE": str(GRACE_S), "SENTINEL_REBALANCE_TIMEOUT": "5",
        "SENTINEL_SESSION_TIMEOUT": "6", "SENTINEL_HEARTBEAT_INTERVAL": "1",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = Settings()
    posts = good_posts(480)  # the real model: seconds per batch, so SIGTERM lands mid-batch
    data = tmp_path / "posts.jsonl"
    data.write_text("".join(__import__("json").dumps(p) + "\n" for p in posts))

    async def go():
        await ensure_topics(settings, [settings.topic_posts, settings.topic_sentiment, settings.topic_dlq, settings.topic_alerts])
        first = start_worker(settings, embedded=False, log_path=tmp_path / "first.log")
        try:
            sent = await replay(settings, data, settings.topic_posts, None)
            deadline = time.monotonic() + 300
            while stats(redis_server).get("processed", 0) == 0:
                assert first.poll() is None and time.monotonic() < deadline, (tmp_path / "first.log").read_text()[-3000:]
                await asyncio.sleep(0.1)
            first.send_signal(signal.SIGTERM)
            stopped = time.monotonic()
            code = await asyncio.to_thread(first.wait, GRACE_S + 15)
            took = time.monotonic() - stopped
        except subprocess.TimeoutExpired:
            raise AssertionError("the worker did not exit after SIGTERM") from None
        finally:
            stop_workers([first])
        counted = stats(redis_server)
        assert code == 0 and took <= GRACE_S + 5, (code, took)
        assert 0 < counted["consumed"] < sent
        assert await committed_lag(settings) > 0  # the rest is left for the successor

        second = start_worker(settings, embedded=False, log_path=tmp_path / "second.log")
        try:
            store = open_store(settings)
            await wait_processed(settings, store, {"consumed": counted["consumed"]}, sent - counted["consumed"], [second], 600)
            await store.close()
        finally:
            stop_workers([second])
        return sent

    sent = asyncio.run(go())
    log = (tmp_path / "first.log").read_text()
    assert "shutdown complete" in log
    # SIGTERM came once a first batch was counted: with the real model a batch of 32 takes seconds
    # to classify, and the pipeline had taken the next one, so the drain had a batch to finish.
    assert "batch_in_flight=True" in log, log[-3000:]
    final = stats(redis_server)
    # No duplicates: every post the first worker counted was committed before it exited (an
    # uncommitted one would have been redelivered to the successor and counted as a duplicate).
    # Nothing lost: the successor counted the rest.
    assert final["processed"] == sent and final.get("duplicates", 0) == 0
    expected: Counter = Counter()
    for p in posts:
        expected[("all", p["created_at"] // 60 * 60)] += 1
    assert bucket_counts(redis_server, {"all"}) == expected


# A stand-in worker: on SIGTERM it exits only once the other one has had its SIGTERM too, as a
# worker that leaves the group while another still drains hands that one its partitions, and the
# other then waits out the rebalance before it can leave (on Tansu, half the session timeout).
TOGETHER = """
import os, signal, sys, time
mine, other = sys.argv[1], sys.argv[2]
def on_term(*_):
    open(mine, "w").close()
    deadline = time.monotonic() + 120
    while not os.path.exists(other) and time.monotonic() < deadline:
        time.sleep(0.01)
    os._exit(0 if os.path.exists(other) else 3)
signal.signal(signal.SIGTERM, on_term)
open(mine + ".ready", "w").close()
while True:
    time.sleep(1)
"""


def test_a_run_signals_every_worker_before_it_waits_for_one(tmp_path):
    """`sentinel run --workers N` stops its workers together: each gets SIGTERM before the run waits
    for any. Stopped one after the other, the first stand-in waits for a SIGTERM the other never
    gets while the run waits for the first, and is killed when the grace runs out."""
    names = [(tmp_path / "a", tmp_path / "b"), (tmp_path / "b", tmp_path / "a")]
    procs = [subprocess.Popen([sys.executable, "-c", TOGETHER, str(mine), str(other)], start_new_session=True) for mine, other in names]
    try:
        deadline = time.monotonic() + 60
        while not all((tmp_path / f"{n}.ready").exists() for n in "ab"):  # each has its SIGTERM handler
            assert time.monotonic() < deadline and all(p.poll() is None for p in procs), "the stand-ins did not start"
            time.sleep(0.05)
        stop_workers(procs, grace=20)
        assert [p.returncode for p in procs] == [0, 0]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(10)


# --- Shutdown.run's order, with stand-ins for Faust's producer and consumer (no servers) ----------


class Exited(Exception):
    def __init__(self, code: int):
        self.code = code


def run_shutdown(monkeypatch, flush, outputs, grace_s: float) -> tuple[int, list[str], float]:
    """Shutdown.run with a producer whose flush is `flush(events)`, a consumer that records its
    commit and a processor that records the held-back log counts said (`say_held`: dead letters
    and folded posts no later batch will say); returns the exit code, the events in order and the
    seconds it took."""
    from types import SimpleNamespace

    from stream import worker

    events: list[str] = []

    async def commit() -> None:
        events.append("commit")

    async def stop(_timeout: float) -> bool:
        return True

    monkeypatch.setattr(worker.os, "_exit", lambda code: (_ for _ in ()).throw(Exited(code)))
    monkeypatch.setattr(worker.logging, "shutdown", lambda: None)  # pytest's log capture stays open
    app = SimpleNamespace(producer=SimpleNamespace(flush=lambda: flush(events)), consumer=SimpleNamespace(commit=commit))
    processor = SimpleNamespace(say_held=lambda: events.append("say_held"))
    shutdown = worker.Shutdown(app, SimpleNamespace(in_flight=0, processor=processor), SimpleNamespace(stop=stop), outputs)
    started = time.monotonic()
    with pytest.raises(Exited) as exited:
        asyncio.run(shutdown.run(grace_s))
    return exited.value.code, events, time.monotonic() - started


def test_shutdown_commits_only_after_every_published_batch_settled(monkeypatch):
    from stream.kafka import Deliveries

    async def quick(events: list[str]) -> None:
        events.append("flush")

    # Everything delivered: flush, commit, the held counts said, exit 0.
    assert run_shutdown(monkeypatch, quick, Deliveries(), 5)[:2] == (0, ["flush", "commit", "say_held"])

    # A batch still in doubt when the grace runs out (the broker has not answered): no commit,
    # exit 75, and the batch is redelivered.
    outputs = Deliveries()

    async def flush_leaving_one_in_doubt(events: list[str]) -> None:
        outputs.track([asyncio.get_running_loop().create_future()])
        events.append("flush")

    code, events, took = run_shutdown(monkeypatch, flush_leaving_one_in_doubt, outputs, 0.5)
    assert (code, events) == (75, ["flush", "say_held"]) and took < 5

    # A flush that would wait for the producer's own timeout (the broker away): cut at the grace.
    async def hangs(events: list[str]) -> None:
        events.append("flush")
        await asyncio.sleep(600)

    code, events, took = run_shutdown(monkeypatch, hangs, Deliveries(), 0.5)
    assert (code, events) == (75, ["flush", "say_held"]) and took < 5


def test_a_batch_given_up_on_as_the_flush_returns_stops_the_worker_before_the_commit(monkeypatch):
    """The producer's queue is empty, so the flush returns, but the outcome of a batch that left it
    reaches the future the worker holds only later (behind aiokafka's shield, here a little later
    still). Shutdown waits for that outcome: the batch's on_lost (batch_failed, which exits in the
    worker) comes before the commit."""
    from stream.kafka import Deliveries

    outputs = Deliveries()

    async def gives_up(events: list[str]) -> None:
        loop = asyncio.get_running_loop()
        handed_out = loop.create_future()
        handed_out.add_done_callback(lambda f: events.append("on_lost") if f.exception() else None)
        outputs.track([handed_out])
        loop.call_later(0.05, handed_out.set_exception, RuntimeError("producer gave up"))
        events.append("flush")

    code, events, _ = run_shutdown(monkeypatch, gives_up, outputs, 5)
    assert events == ["flush", "on_lost", "commit", "say_held"], events


# --- The `sentinel` command's own stops, before its work begins and after its stop line -----------

# Put on PYTHONPATH, this holds a `sentinel` process at a moment a test names, so a signal lands
# there and not a little before or after: STOP_PROBE_IMPORT holds the import of that module (the
# process waits there until a signal unwinds it; STOP_PROBE_RUN holds that module as it runs, where another thread
# may import meanwhile: the held find_spec holds Python's global import lock), STOP_PROBE_EXIT holds the interpreter's teardown
# (its last atexit step) until the test writes `go`. Each says it is held with a file.
STOP_PROBE = """
import atexit, importlib.machinery, os, sys, time
from pathlib import Path

here = Path(os.environ["STOP_PROBE_DIR"])

def held(name):
    (here / name).touch()
    deadline = time.monotonic() + 60
    while not (here / "go").exists() and time.monotonic() < deadline:
        time.sleep(0.01)

class Hold:
    def find_spec(self, name, path=None, target=None):
        if name == os.environ.get("STOP_PROBE_IMPORT"):
            sys.meta_path.remove(self)
            held("importing")
        elif name == os.environ.get("STOP_PROBE_RUN"):  # held as it runs: not under the import system's global lock
            sys.meta_path.remove(self)
            spec = importlib.machinery.PathFinder.find_spec(name, path, target)
            run = spec.loader.exec_module
            def exec_module(module):
                held("importing")
                run(module)
            spec.loader.exec_module = exec_module
            return spec
        return None

sys.meta_path.insert(0, Hold())
if os.environ.get("STOP_PROBE_EXIT"):
    atexit.register(held, "exiting")
"""


def probed_env(tmp_path, **probe: str) -> dict[str, str]:
    import os

    (tmp_path / "sitecustomize.py").write_text(STOP_PROBE)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "REDIS_", "SENTINEL_"))}
    return {**env, "PYTHONPATH": str(tmp_path), "STOP_PROBE_DIR": str(tmp_path), **probe}


HOW = {"SIGINT": ("interrupted", 130), "SIGTERM": ("terminated", 143)}


@pytest.mark.parametrize("stop", ["SIGINT", "SIGTERM"])
def test_a_stop_while_the_cli_is_imported_ends_with_a_line_and_the_stops_exit(tmp_path, stop):
    """The console script's first second or more is the CLI's imports (typer: the first of them).
    A SIGTERM there ended the process by the signal (-15, nothing said), a Ctrl-C printed a
    KeyboardInterrupt traceback (exit 1); both say they came before the command, 143 and 130."""
    from workers import stopped_when

    env = probed_env(tmp_path, STOP_PROBE_IMPORT="typer")
    code, stderr = stopped_when(["--help"], env, lambda _pid: (tmp_path / "importing").exists(), stop, "the CLI's import never began",
                                script=True)
    how, exit_code = HOW[stop]
    assert (code, stderr) == (exit_code, f"{how} before the command started\n"), stderr


def test_a_worker_sentinel_run_started_stopped_in_its_imports_says_so(tmp_path, monkeypatch):
    """`sentinel run` started its workers with `python -m sentinel.cli worker`, past the console
    script's stop handling: a run stopped while a worker still imported the CLI (a second or more
    on a loaded machine) ended that worker by the signal (-15) with nothing in its log. It starts
    them through the console script's entry now, so the worker ends as `sentinel` does there."""
    import os

    for key in [k for k in os.environ if k.startswith(("KAFKA_", "REDIS_", "SENTINEL_"))]:
        monkeypatch.delenv(key)
    for key, value in probed_env(tmp_path, STOP_PROBE_IMPORT="typer").items():  # start_worker passes its environment on
        monkeypatch.setenv(key, value)
    log = tmp_path / "worker.log"
    settings = Settings(kafka_broker="127.0.0.1:9", redis_url="redis://127.0.0.1:9/0", cache_dir=tmp_path)
    proc = start_worker(settings, embedded=False, log_path=log)
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / "importing").exists():
            assert time.monotonic() < deadline and proc.poll() is None, f"the worker's CLI import never began: {log.read_text()[-3000:]}"
            time.sleep(0.02)
        stop_workers([proc], grace=20)  # as `sentinel run` stops its workers: SIGTERM to each one's group
    finally:
        (tmp_path / "go").touch()
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert (proc.returncode, log.read_text()) == (143, "terminated before the command started\n")


@pytest.mark.parametrize("stop", ["SIGINT", "SIGTERM"])
def test_a_stop_while_a_command_loads_its_modules_is_its_stop(tmp_path, stop):
    """`sentinel bench pipeline` imports torch and the benchmarks (seconds) before anything of its
    own: a SIGTERM there ended the process by the signal (-15, nothing said). It says
    `terminated` (143), as a Ctrl-C there says `interrupted` (130)."""
    from workers import stopped_when

    env = probed_env(tmp_path, STOP_PROBE_IMPORT="sentinel.benchmarks")
    code, stderr = stopped_when(["bench", "pipeline"], env, lambda _pid: (tmp_path / "importing").exists(), stop,
                                "the benchmarks' import never began", script=True)
    how, exit_code = HOW[stop]
    assert (code, stderr.splitlines()[-1:]) == (exit_code, [how]), stderr
    assert "Traceback" not in stderr, stderr


@pytest.mark.parametrize("first", ["SIGINT", "SIGTERM"])
def test_a_signal_after_the_stop_line_leaves_the_commands_exit(tmp_path, first):
    """After a command's stop line the interpreter still takes about a second to end. A second
    Ctrl-C or SIGTERM there (a person pressing again, a supervisor's repeat) ended the process by
    that signal, and the exit a supervisor reads was no longer the command's. It is ignored now."""
    from workers import stopped_when

    second = {"SIGINT": "SIGTERM", "SIGTERM": "SIGINT"}[first]
    env = probed_env(tmp_path, STOP_PROBE_IMPORT="sentinel.benchmarks", STOP_PROBE_EXIT="1")
    code, stderr = stopped_when(["bench", "pipeline"], env, lambda _pid: (tmp_path / "importing").exists(), first,
                                "the benchmarks' import never began", script=True,
                                then=(lambda _pid: (tmp_path / "exiting").exists(), second, (tmp_path / "go").touch))
    how, exit_code = HOW[first]
    assert (code, stderr.splitlines()[-1:]) == (exit_code, [how]), stderr
    assert "Traceback" not in stderr, stderr


@pytest.mark.parametrize("stop", ["SIGINT", "SIGTERM"])
def test_a_stop_while_a_benchmark_runs_says_so_and_stops_its_servers(stop):
    """`sentinel bench` has no stop line of its own: a Ctrl-C said `interrupted` (130) but a SIGTERM
    ended it by the signal (-15) with nothing said, its Redis servers left running. A SIGTERM
    unwinds as the Ctrl-C does: its servers are stopped, then `terminated` (143)."""
    import os

    import psutil

    from workers import stopped_when

    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "REDIS_", "SENTINEL_"))}
    started: list[psutil.Process] = []

    def servers_up(pid: int) -> bool:  # the one server and the cluster's six nodes
        started[:] = [p for p in psutil.Process(pid).children(recursive=True) if p.name() == "redis-server"]
        return len(started) >= 7

    code, stderr = stopped_when(["bench", "store", "--batches", "10", "--author-cap", "0", "--text-cap", "0"], env, servers_up, stop,
                                "the benchmark's servers never started", script=True)
    how, exit_code = HOW[stop]
    assert (code, stderr.splitlines()[-1:]) == (exit_code, [how]), stderr
    assert "Traceback" not in stderr, stderr
    assert not [p for p in started if p.is_running() and p.status() != psutil.STATUS_ZOMBIE], "the benchmark left its servers running"


@pytest.mark.parametrize("stop", ["SIGINT", "SIGTERM"])
def test_a_stop_while_the_worker_loads_its_model_ends_it_at_once(tmp_path, kafka_server, redis_server, stop):
    """A pod deleted while its worker loads the model (minutes for a large one): the load runs on
    the model thread, which the interpreter joins at exit, and after the stop line later signals are
    ignored, so the worker said `terminated` and stayed up until the model had loaded, or the
    kubelet's SIGKILL. It ends at once, with its stop line and exit, while the load is still held."""
    from stream.tools.services import free_port

    env = {**probed_env(tmp_path, STOP_PROBE_RUN="model.classifier"),  # imported on the model thread as the load begins
           "KAFKA_BROKER": kafka_server, "REDIS_URL": redis_server, "SENTINEL_MODEL_PROCESS": "false", "SENTINEL_WEB_PORT": str(free_port()),
           "SENTINEL_APP_ID": "test-stop-loading", "SENTINEL_TOPIC_POSTS": "stop-loading-posts", "SENTINEL_PARTITIONS": "1"}
    proc = subprocess.Popen([str(__import__("pathlib").Path(sys.executable).parent / "sentinel"), "worker"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 120
        while not (tmp_path / "importing").exists():
            assert time.monotonic() < deadline and proc.poll() is None, "the model's load never began"
            time.sleep(0.02)
        proc.send_signal(getattr(signal, stop))
        try:
            code = proc.wait(20)  # the load stays held for 60 s
        except subprocess.TimeoutExpired:
            proc.kill()
            raise AssertionError(f"the worker waited for its model's load after the stop: {proc.communicate(10)[1][-3000:]}") from None
        stderr = proc.stderr.read()
    finally:
        (tmp_path / "go").touch()
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    how, exit_code = HOW[stop]
    assert (code, stderr.splitlines()[-1:]) == (exit_code, [how]), stderr
    assert "Traceback" not in stderr, stderr


SWALLOWED = """
import os, signal, sys, time
{setup}

class Finalized:
    def __del__(self):  # the stop's handler runs here, inside the finalizer, which drops what it raises
        os.kill(os.getpid(), signal.{stop})
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            pass

try:
    Finalized()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        pass
    print("ran on")
except (KeyboardInterrupt, SystemExit) as exc:
    print("stopped", type(exc).__name__)
"""


@pytest.mark.parametrize("handler", ["console-script", "sigterm_unwinds"])
@pytest.mark.parametrize("stop", ["SIGINT", "SIGTERM"])
def test_a_stop_a_finalizer_swallowed_is_raised_again(handler, stop):
    """A signal's handler runs wherever Python is; in a `__del__` (a redis client the garbage
    collector ends) what it raises is printed and dropped, and the SIGTERM handlers had set later
    SIGTERMs to ignored: `sentinel bench store` stopped that way ran on to the end and exited 0. The
    stop is delivered again once the finalizer has dropped it."""
    setup = {"console-script": "from sentinel import stops\nstops.take_sigterm()",
             "sigterm_unwinds": "from stream.tools.services import sigterm_unwinds\nunwinding = sigterm_unwinds()\nunwinding.__enter__()"}[handler]
    done = subprocess.run([sys.executable, "-c", SWALLOWED.format(setup=setup, stop=stop)], capture_output=True, text=True, timeout=60)
    exc = {"SIGINT": "KeyboardInterrupt", "SIGTERM": "Terminated" if handler == "console-script" else "SystemExit"}[stop]
    assert done.stdout.strip() == f"stopped {exc}", (done.stdout, done.stderr)
    assert "Exception ignored" not in done.stderr, done.stderr
