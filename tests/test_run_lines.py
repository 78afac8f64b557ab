"""`sentinel run FILE` names the lines it dead-lettered (FILE:LINE: reason: message) and puts
them in --summary-json: with the embedded stack the DLQ topic goes when the run ends."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from sentinel.run import (
    START_STEPS, StartPhases, dead_letter_lines, notifying, read_start_step, run_warnings, start_phase, start_worker, stop_workers,
    tell_start_step,
)
from stream.settings import Settings


def iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def test_dead_letter_lines_are_capped_with_how_many_more():
    letters = [{"line": n, "reason": "invalid_json", "message": "not JSON"} for n in range(1, 24)]
    lines = dead_letter_lines(Path("posts.jsonl"), letters)  # the first 20, as --skip-bad names skipped rows (test_cli.py)
    assert lines[0] == "posts.jsonl:1: invalid_json: not JSON"
    assert len(lines) == 21 and lines[-1] == "... and 3 more"
    assert dead_letter_lines(Path("p"), letters[:2]) == ["p:1: invalid_json: not JSON", "p:2: invalid_json: not JSON"]


def test_a_run_into_a_redis_that_already_counted_posts_says_so():
    # The audit's second run into the same configured Redis: 2,104 duplicates, 979 late, nothing
    # processed, no alert and no word; compare-alerts then called every incident lost.
    counted = {"watermark": 1_772_668_800.0}
    summary = {"duplicates": 2104, "late_dropped": 979, "processed": 0}
    warned = run_warnings(counted, summary, embedded=False)
    assert len(warned) == 2 and "already held posts up to 2026-03-05T00:00:00Z" in warned[0] and "979 posts were dropped as late" in warned[1]
    assert run_warnings({}, {"duplicates": 1, "late_dropped": 0}, embedded=False) == []  # a fresh Redis: the demo's one duplicate is its own
    assert run_warnings(counted, {"late_dropped": 0}, embedded=True) == []  # the embedded stack is fresh by construction
    # --input-ended promised the file was the whole input; a Redis that held posts says it was not.
    assert "--input-ended took this file for the whole input, which it was not" in run_warnings(counted, {"ended": True}, embedded=False)[0]
    assert "--input-ended" not in warned[0]



def test_a_run_that_will_notify_people_says_so_before_it_starts(tmp_path):
    """A replay meant as a dry run, in a shell that exports production's Apprise URLs, would send
    the risk team every old swing in the file: `sentinel run` says so at its start."""
    assert notifying(Settings()) is None and notifying(Settings(apprise_urls=" \n")) is None
    config = tmp_path / "apprise.yml"
    assert notifying(Settings(apprise_urls="json://127.0.0.1:9/x")).startswith("SENTINEL_APPRISE_URLS set: this run notifies")
    assert notifying(Settings(apprise_urls="json://127.0.0.1:9/x", apprise_config=config)).startswith(
        "SENTINEL_APPRISE_URLS and SENTINEL_APPRISE_CONFIG set:")
    data = tmp_path / "posts.jsonl"
    data.write_text(json.dumps({"id": "p1", "text": "btc pumping hard", "created_at": iso(time.time() - 3600)}) + "\n", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith(("REDIS_", "KAFKA_", "SENTINEL_REDIS", "SENTINEL_KAFKA", "SENTINEL_APPRISE"))}
    env.update(SENTINEL_BASE="lexicon", SENTINEL_CACHE_DIR=str(tmp_path / "cache"), NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost")
    for urls, said in ((None, False), ("json://127.0.0.1:9/x", True)):
        done = subprocess.run([sys.executable, "-m", "sentinel.cli", "run", str(data), "--timeout", "300"],
                              env={**env, **({"SENTINEL_APPRISE_URLS": urls} if urls else {})}, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        assert ("warning: SENTINEL_APPRISE_URLS set: this run notifies" in done.stderr) == said, done.stderr[-3000:]


def test_run_names_each_dead_lettered_line_and_its_reason(tmp_path):
    now = time.time() - 3600
    good = [json.dumps({"id": f"g{i}", "text": "btc pumping hard", "created_at": iso(now + i)}) for i in range(30)]
    bad = {
        3: "this is not json",
        7: json.dumps({"id": "m1", "created_at": iso(now)}),  # no text
        12: json.dumps({"topic": "forum-posts", "partition": 0, "offset": 1, "value": 5}),  # a record line that cannot be decoded
    }
    bad.update({20 + i: "[1, 2]" for i in range(22)})  # 22 more: the printed list stops at 20
    lines, g = [], iter(good)
    for n in range(1, 50):
        lines.append(bad[n] if n in bad else next(g))
    data = tmp_path / "posts.jsonl"
    data.write_text("\n".join(lines) + "\n", encoding="utf-8")
    summary_path = tmp_path / "summary.json"
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "KAFKA_BROKER", "SENTINEL_REDIS_URL", "SENTINEL_KAFKA_BROKER")}
    env.update(SENTINEL_BASE="lexicon", SENTINEL_CACHE_DIR=str(tmp_path / "cache"), SENTINEL_PARTITIONS="2",
               NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost")
    done = subprocess.run([sys.executable, "-m", "sentinel.cli", "run", str(data), "--summary-json", str(summary_path), "--timeout", "300"],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads(summary_path.read_text())
    assert summary["dlq"] == len(bad) and summary["sent"] == 49 and summary["not_sent"] == 0
    named = {d["line"]: d["reason"] for d in summary["dead_lettered_lines"]}
    assert named == {3: "invalid_json", 7: "missing_field", 12: "missing_field",
                     **{20 + i: "not_an_object" for i in range(22)}}
    assert f"{data}:3: invalid_json: " in done.stderr
    assert f"{data}:7: missing_field: " in done.stderr
    assert "... and 5 more" in done.stderr


def test_run_of_a_recording_from_two_partitions_runs_on_two(tmp_path):
    # The run creates its topics with the recording's partition count; its workers must be told the
    # same count, or each refuses the topic (review: every recording not from 4 partitions failed).
    now = time.time() - 3600
    lines = [{"topic": "forum-posts", "partition": i % 2, "offset": i // 2, "timestamp": int((now + i) * 1000), "key": f"r{i}",
              "value": json.dumps({"id": f"r{i}", "text": "btc pumping hard", "created_at": iso(now + i)})} for i in range(6)]
    data = tmp_path / "recording.jsonl"
    data.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    summary_path = tmp_path / "summary.json"
    env = {k: v for k, v in os.environ.items()
           if k not in ("REDIS_URL", "KAFKA_BROKER", "SENTINEL_REDIS_URL", "SENTINEL_KAFKA_BROKER", "SENTINEL_PARTITIONS")}
    env.update(SENTINEL_BASE="lexicon", SENTINEL_CACHE_DIR=str(tmp_path / "cache"), NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost")
    done = subprocess.run([sys.executable, "-m", "sentinel.cli", "run", str(data), "--summary-json", str(summary_path), "--timeout", "300"],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert json.loads(summary_path.read_text())["processed"] == 6


def test_starting_a_worker_leaves_no_log_file_unclosed(tmp_path):
    """start_worker opened the worker log and left the file object to the garbage collector: a
    ResourceWarning per worker in every run under python -X dev. The worker holds its own copy."""
    import gc
    import warnings

    log = tmp_path / "worker.log"
    settings = Settings(kafka_broker="127.0.0.1:9", redis_url="redis://127.0.0.1:9/0", cache_dir=tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        proc = start_worker(settings, embedded=False, log_path=log)
        gc.collect()
    try:
        theirs = [fd for fd in os.listdir(f"/proc/{proc.pid}/fd") if os.path.realpath(f"/proc/{proc.pid}/fd/{fd}") == str(log.resolve())]
        assert theirs  # its stdout and stderr
    finally:
        stop_workers([proc])
    assert [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)] == []


def test_the_start_phase_follows_the_workers_readiness_and_ends_with_the_first_post():
    # /readyz unanswered (the worker's web server starts last): what its start-step file says, and
    # nothing where it said nothing yet (its imports). "loading the classifier" stood for all of it,
    # though imports, the Kafka and Redis checks and Faust's start took 3.5-9 s of it (2 busy cores).
    assert start_phase([None], 0) == "starting worker"
    assert start_phase([None], 0, ["checking Kafka and Redis"]) == "starting worker: checking Kafka and Redis"
    assert start_phase([None], 0, ["loading the classifier"]) == "starting worker: loading the classifier"
    assert start_phase([None], 0, ["starting Faust"]) == "starting worker: starting Faust"
    assert start_phase([["partitions"], None], 0, [None, "loading the classifier"]) == "starting workers: loading the classifier"  # the slowest one
    assert start_phase([None, None], 0, ["starting Faust", "checking Kafka and Redis"]) == "starting workers: checking Kafka and Redis"
    assert start_phase([None, None], 0, ["starting Faust", None]) == "starting workers"
    assert start_phase([["partitions"]], 0) == "starting worker: joining the consumer group"
    assert start_phase([["broker", "partitions"]], 0) == "starting worker: not ready (broker, partitions)"
    # One worker ready (partitions, or a standby in the group): posts can flow, whatever the others
    # do; 5 workers on 4 partitions said all were joining while the first classified its batch.
    assert start_phase([[], ["partitions"]], 0) == "waiting for the first classified post; 1 of 2 workers still joining the consumer group"
    assert start_phase([["partitions"], [], None, ["partitions"], ["partitions"]], 0, [None, None, "loading the classifier"]) == (
        "waiting for the first classified post; 4 of 5 workers still starting, the slowest loading the classifier")  # 3 are joining
    assert start_phase([[], None, None], 0, [None, "starting Faust", "loading the classifier"]) == (
        "waiting for the first classified post; 2 of 3 workers still starting, the slowest loading the classifier")
    assert start_phase([[], None, None], 0, [None, "starting Faust", "starting Faust"]) == (
        "waiting for the first classified post; 2 of 3 workers still starting Faust")  # both are
    assert start_phase([[], None], 0) == "waiting for the first classified post; 1 of 2 workers still starting"
    assert start_phase([[], ["redis", "partitions"], ["redis", "partitions"]], 0) == (
        "waiting for the first classified post; 2 of 3 workers not ready (partitions, redis)")  # each failed both
    # Which checks each worker failed, where they differ: together, one worker without Redis and
    # one only joining its group read as both without Redis.
    assert start_phase([[], ["redis", "partitions"], ["partitions"]], 0) == (
        "waiting for the first classified post; 2 of 3 workers not ready (partitions, redis on 1 of 2)")
    assert start_phase([["broker", "partitions"], ["model", "partitions"], ["partitions"]], 0) == (
        "starting workers: not ready (broker on 1 of 3, model on 1 of 3, partitions)")
    assert start_phase([["redis", "partitions"], ["redis"]], 0) == "starting workers: not ready (partitions on 1 of 2, redis)"
    assert start_phase([["partitions"]] * 5, 0) == "starting workers: joining the consumer group"
    assert start_phase([[], []], 0) == "waiting for the first classified post"
    assert start_phase([None], 1) is None and start_phase([[]], 5) is None  # the count says the rest
    from sentinel.healthcheck import local_url

    assert [local_url(host, 8, "/readyz") for host in ("0.0.0.0", "::", "10.1.2.3")] == [
        "http://127.0.0.1:8/readyz", "http://[::1]:8/readyz", "http://10.1.2.3:8/readyz"]
    heard: list[str | None] = []
    phases = StartPhases(1, heard.append)
    phases.answered(0, None)  # no answer again: nothing new to say
    phases.stepped(0, None)
    phases.stepped(0, "loading the classifier")
    phases.stepped(0, "loading the classifier")
    phases.stepped(0, "starting Faust")
    phases.answered(0, ["partitions"])
    phases.answered(0, [])
    phases.processed(0)
    phases.processed(3)
    phases.processed(9)
    assert heard == ["starting worker", "starting worker: loading the classifier", "starting worker: starting Faust",
                     "starting worker: joining the consumer group", "waiting for the first classified post", None]


def test_a_start_step_is_read_whole_and_only_as_one_of_the_steps(tmp_path):
    path = tmp_path / "worker-0.step"
    assert read_start_step(path) is None  # not said yet
    for step in START_STEPS:
        tell_start_step(path, step)
        assert read_start_step(path) == step
    path.write_text("loading the classif", encoding="utf-8")
    assert read_start_step(path) is None  # not a step: nothing, never a phase made up of it
    tell_start_step(None, "starting Faust")  # no file set (a worker under Kubernetes)
    tell_start_step(tmp_path / "gone" / "worker-1.step", "starting Faust")  # unwritable: a hint lost, the worker goes on
    (tmp_path / "folder").mkdir()
    tell_start_step(tmp_path / "folder", "starting Faust")  # a folder named: nothing written beside it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder", "worker-0.step"]


def test_an_empty_start_step_file_setting_is_unset(monkeypatch):
    """SENTINEL_START_STEP_FILE="" (how a manifest switches a variable off) read as the path "."
    and stopped the worker at its first step with a ValueError."""
    monkeypatch.setenv("SENTINEL_START_STEP_FILE", "")
    settings = Settings()
    assert settings.start_step_file is None
    tell_start_step(settings.start_step_file, START_STEPS[0])  # the worker's first step: nothing, no error


def test_run_says_what_it_waits_for_before_the_first_post_is_processed(tmp_path):
    """A newcomer's `make demo` showed `processed 0/3,085` for minutes while the worker loaded its
    model, and they took it for a hang: the progress line names the phase, off a terminal at once."""
    now = time.time() - 3600
    data = tmp_path / "posts.jsonl"
    data.write_text("".join(json.dumps({"id": f"p{i}", "text": "btc pumping hard", "created_at": iso(now + i)}) + "\n"
                            for i in range(5)), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "KAFKA_BROKER", "SENTINEL_REDIS_URL", "SENTINEL_KAFKA_BROKER")}
    env.update(SENTINEL_BASE="lexicon", SENTINEL_CACHE_DIR=str(tmp_path / "cache"), NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost")
    worker_log = tmp_path / "worker.log"
    done = subprocess.run([sys.executable, "-m", "sentinel.cli", "run", str(data), "--timeout", "300", "--worker-log", str(worker_log)],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    # The run's own /readyz questions are a start going as it should: no "readiness changed" in the log.
    assert "readiness changed" not in worker_log.read_text(), worker_log.read_text()[-3000:]
    progress = [line for line in done.stderr.splitlines() if line.startswith("replayed ")]
    counts = [int(re.search(r"processed (\d+)/5", line).group(1)) for line in progress]
    assert progress and progress[0].endswith("processed 0/5 (starting worker)"), done.stderr[-3000:]
    order = ["starting worker", *(f"starting worker: {step}" for step in START_STEPS), "starting worker: joining the consumer group",
             "waiting for the first classified post"]
    seen = [order.index(re.search(r"\((.*)\)$", line).group(1)) for line in progress if "(" in line]
    assert seen == sorted(seen), progress  # a phase never goes back
    # Which of the worker's steps show here depends on a 0.2 s poll catching them (all three took
    # 0.5-1.3 s on a busy machine): that a worker says them is test_a_starting_worker_says_...
    assert all(count == 0 for count, line in zip(counts, progress) if "(" in line), progress  # a phase only before the first post


def test_a_first_line_of_only_a_bom_is_not_in_the_runs_total(tmp_path):
    """The line is not sent (a BOM before line 1 is dropped), but the progress counted it: a run of
    5 posts ended at `replayed 5/6, processed 5/6`, as if one were lost."""
    now = time.time() - 3600
    data = tmp_path / "windows.jsonl"
    data.write_bytes(b"\xef\xbb\xbf\n" + "".join(json.dumps({"id": f"p{i}", "text": "btc pumping hard", "created_at": iso(now + i)}) + "\n"
                                                for i in range(5)).encode())
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "KAFKA_BROKER", "SENTINEL_REDIS_URL", "SENTINEL_KAFKA_BROKER")}
    env.update(SENTINEL_BASE="lexicon", SENTINEL_CACHE_DIR=str(tmp_path / "cache"), NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost")
    summary_path = tmp_path / "summary.json"
    done = subprocess.run([sys.executable, "-m", "sentinel.cli", "run", str(data), "--timeout", "300", "--summary-json", str(summary_path)],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    progress = [line for line in done.stderr.splitlines() if line.startswith("replayed ")]
    assert progress and all(re.match(r"replayed \d/5, processed \d/5\b", line) for line in progress), progress
    assert progress[-1] == "replayed 5/5, processed 5/5", progress
    assert json.loads(summary_path.read_text())["sent"] == 5


def test_a_sigterm_to_a_finished_runs_console_leaves_no_worker_log_behind(tmp_path):
    """`run --console` serves what the run saw until stopped; a SIGTERM then (a supervisor's, a
    `kill`) ended it saying `terminated (worker log: /tmp/sentinel-worker-*.log)` and kept that temp
    log, which `--help` says is kept only on failure: one stray file per console session."""
    import signal
    import urllib.error
    import urllib.request

    from stream.tools.services import free_port

    now = time.time() - 3600
    data = tmp_path / "posts.jsonl"
    data.write_text("".join(json.dumps({"id": f"p{i}", "text": "btc pumping hard", "created_at": iso(now + i)}) + "\n"
                            for i in range(5)), encoding="utf-8")
    temp = tmp_path / "temp"
    temp.mkdir()
    port = free_port()
    env = {k: v for k, v in os.environ.items()
           if k not in ("REDIS_URL", "KAFKA_BROKER", "SENTINEL_REDIS_URL", "SENTINEL_KAFKA_BROKER", "SENTINEL_CONSOLE_URL")}
    env.update(SENTINEL_BASE="lexicon", SENTINEL_CACHE_DIR=str(tmp_path / "cache"), SENTINEL_CONSOLE_PORT=str(port), TMPDIR=str(temp),
               NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost")
    log = tmp_path / "run.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "sentinel", "run", str(data), "--console"], env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 300
        while True:  # the console answers once the run has finished and printed its summary
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5):
                    break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.5)
        assert "processed" in log.read_text()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 143, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
    output = log.read_text()
    assert "terminated" in output and "worker log" not in output, output[-3000:]
    assert [p.name for p in temp.iterdir() if p.name.startswith("sentinel-worker-")] == [], output[-3000:]


def test_a_run_whose_worker_fails_to_start_leaves_no_step_folder(tmp_path, kafka_server, redis_server, monkeypatch):
    """The start-step files' folder was made before the workers started and removed only by the
    `finally` after them: a start that failed there (here a worker log that is a folder; a stop
    half-way through starting --workers N) left it in the temp folder, and any workers started."""
    import asyncio
    import tempfile

    import pytest

    from sentinel.run import run_once

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    data = tmp_path / "posts.jsonl"
    data.write_text(json.dumps({"id": "p0", "text": "btc up", "ts": iso(time.time())}) + "\n", encoding="utf-8")
    settings = Settings(kafka_broker=kafka_server, redis_url=redis_server, base="lexicon", cache_dir=tmp_path / "cache")
    with pytest.raises(IsADirectoryError):  # the worker log's open, in start_worker
        asyncio.run(run_once(settings, data, embedded=False, timeout=30, worker_log=tmp_path, on_phase=lambda text: None))
    assert list((tmp_path / "tmp").iterdir()) == []


def test_a_starting_worker_says_its_last_step_before_its_web_server_answers(tmp_path, kafka_server, redis_server, cache_dir):
    """Deterministic where `sentinel run`'s progress line is not (a 0.2 s poll may miss a short
    step): by its first /readyz answer the worker has said "starting Faust" in its step file, whole."""
    from workers import Worker, wait_until, worker_env

    step = tmp_path / "worker-0.step"
    worker = Worker(worker_env("start-steps", kafka_server, redis_server, cache_dir, SENTINEL_START_STEP_FILE=str(step)),
                    tmp_path / "worker.log")
    try:
        wait_until(lambda: worker.readyz() is not None, 180, "the worker's first /readyz answer", [worker])
        assert step.read_text(encoding="utf-8") == START_STEPS[-1], worker.log_tail()
        assert sorted(p.name for p in tmp_path.iterdir()) == ["worker-0.step", "worker.log"]  # no .part left
    finally:
        worker.close()


def test_each_worker_gets_its_own_step_file_never_the_shells(monkeypatch):
    from sentinel.run import worker_env

    monkeypatch.setenv("SENTINEL_START_STEP_FILE", "/tmp/exported-for-all.step")  # one file for every worker: steps mixed
    settings = Settings(kafka_broker="127.0.0.1:9092", redis_url="redis://127.0.0.1:6379/0")
    assert "SENTINEL_START_STEP_FILE" not in worker_env(settings, embedded=False)
    assert worker_env(settings, embedded=False, step_file=Path("/run/x/worker-1.step"))["SENTINEL_START_STEP_FILE"] == "/run/x/worker-1.step"


def test_a_run_stopped_while_its_worker_starts_leaves_no_worker_log_behind(tmp_path):
    """A SIGTERM (or Ctrl-C) while the worker is still importing: the worker says `terminated
    before the command started` in its temp log, and `sentinel run` kept that log and named it,
    though `--help` keeps it only on failure. A stop the user asked for is not one."""
    import signal

    import psutil

    from workers import command_line

    data = tmp_path / "posts.jsonl"
    data.write_text("".join(json.dumps({"id": f"p{i}", "text": "btc pumping hard", "created_at": iso(time.time() - 3600 + i)}) + "\n"
                            for i in range(5)), encoding="utf-8")
    temp = tmp_path / "temp"
    temp.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "KAFKA_BROKER", "SENTINEL_REDIS_URL", "SENTINEL_KAFKA_BROKER")}
    env.update(SENTINEL_BASE="lexicon", SENTINEL_CACHE_DIR=str(tmp_path / "cache"), TMPDIR=str(temp),
               NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost")
    said = tmp_path / "stderr"
    with said.open("wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "sentinel", "run", str(data)], env=env, stdout=subprocess.DEVNULL, stderr=err)
    try:
        parent, deadline = psutil.Process(proc.pid), time.monotonic() + 120
        while not any(command_line(c).endswith("-m sentinel worker") and takes_sigterm(c.pid) for c in parent.children(recursive=True)):
            assert proc.poll() is None and time.monotonic() < deadline, said.read_text()[-3000:]
            time.sleep(0.05)
        logs = [p for p in temp.iterdir() if p.name.startswith("sentinel-worker-")]
        assert len(logs) == 1, [p.name for p in temp.rglob("*")]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(120) == 143, said.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
    stderr = said.read_text()
    assert "terminated" in stderr and "worker log" not in stderr, stderr[-3000:]
    assert [p.name for p in temp.iterdir() if p.name.startswith("sentinel-worker-")] == [], stderr[-3000:]


def takes_sigterm(pid: int) -> bool:
    """Whether the process has a SIGTERM handler (its SigCgt mask): the worker's interpreter is up
    and sentinel.main has taken the signal, so a stop now is said in its log, not the signal's silent end."""
    try:
        caught = next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith("SigCgt:"))
    except (OSError, StopIteration):  # gone already
        return False
    return bool(int(caught.split()[1], 16) >> (15 - 1) & 1)


def test_a_run_stopped_while_it_looks_stuck_keeps_the_worker_log_that_says_why(tmp_path):
    """A run stands still (here its batch is held, tests/processing_stall.py) and its embedded
    Redis goes: the worker logs `dependency unreachable` at WARNING, the progress line does not
    move, and the user stops the run. The temp worker log was deleted, as after any calm stop, and
    with it the one line that said why it stood still (until session 55): it is kept and named."""
    import signal

    import psutil

    data = tmp_path / "posts.jsonl"
    data.write_text("".join(json.dumps({"id": f"p{i}", "text": "btc pumping hard", "created_at": iso(time.time() - 3600 + i)}) + "\n"
                            for i in range(5)), encoding="utf-8")
    temp, hooks, stall = tmp_path / "temp", tmp_path / "hooks", tmp_path / "stall"
    temp.mkdir()
    hooks.mkdir()
    stall.touch()
    # Every Python process of the run imports it; only the worker submits batches.
    (hooks / "sitecustomize.py").write_text(f"import sys\nsys.path.insert(0, {str(Path(__file__).parent)!r})\nimport processing_stall\n")
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "KAFKA_BROKER", "SENTINEL_REDIS_URL", "SENTINEL_KAFKA_BROKER")}
    env.update(SENTINEL_BASE="lexicon", SENTINEL_CACHE_DIR=str(tmp_path / "cache"), TMPDIR=str(temp), PROCESSING_STALL_FILE=str(stall),
               PYTHONPATH=os.pathsep.join([str(hooks), *filter(None, [os.environ.get("PYTHONPATH")])]),
               NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost")
    said = tmp_path / "stderr"
    with said.open("wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "sentinel", "run", str(data)], env=env, stdout=subprocess.DEVNULL, stderr=err)
    try:
        def until(done, what: str, within: float) -> None:
            deadline = time.monotonic() + within
            while not done():
                assert proc.poll() is None and time.monotonic() < deadline, f"{what}: {said.read_text()[-3000:]}"
                time.sleep(0.1)

        until(stall.with_name("stall.on").exists, "a batch held", 240)
        redis = [c for c in psutil.Process(proc.pid).children(recursive=True) if c.name() == "redis-server"]
        assert len(redis) == 1, redis
        redis[0].kill()
        logs = [p for p in temp.iterdir() if p.name.startswith("sentinel-worker-")]
        assert len(logs) == 1, [p.name for p in temp.iterdir()]
        until(lambda: "dependency unreachable" in logs[0].read_text(errors="replace"), "the worker to say Redis is gone", 60)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(180) == 143, said.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
    stderr = said.read_text()
    assert f"terminated (worker log: {logs[0]})" in " ".join(stderr.split()), stderr[-3000:]
    assert "dependency unreachable" in logs[0].read_text(errors="replace"), stderr[-3000:]
