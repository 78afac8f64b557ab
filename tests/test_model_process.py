"""The model in a child process (stream/model_process.py): real processes and pipes, the keyword
scorer or stand-ins as the model, so no test here loads torch."""

from __future__ import annotations

import asyncio
import functools
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import redis

from model.lexicon import LexiconClassifier
from model.scorer import ModelGone, ModelInfo, judgement_from_probs
from stream.batch import RawMessage
from stream.model_process import ModelProcess
from stream.ops.http import check_model
from stream.processor import BatchProcessor
from stream.store import WindowStore
from workers import pid_alive, wait_until

ROOT = Path(__file__).resolve().parents[1]


class RaisesOnPoison:
    """A scorer that fails a batch holding the word POISON, as a CUDA OOM would."""

    info = ModelInfo(base="stand-in", adapter=None, device="cpu", dtype="none", quantize="none", load_s=0.0)

    def classify(self, texts):
        if any("POISON" in t for t in texts):
            raise RuntimeError("CUDA out of memory (simulated)")
        return [judgement_from_probs([0.1, 0.1, 0.8]) for _ in texts]  # LABELS order: neutral


class SleepsOnSlow(RaisesOnPoison):
    """A scorer that works for ten minutes on a batch holding the word SLOW, after creating the file
    named by $SLOW_MARK (how a test sees it is inside the call)."""

    def classify(self, texts):
        if any("SLOW" in t for t in texts):
            Path(os.environ["SLOW_MARK"]).touch()
            time.sleep(600)
        return super().classify(texts)


def fails_to_load() -> None:
    raise SystemExit(3)


def test_judgements_and_info_come_back_as_the_scorer_gives_them_in_process():
    texts = ["BTC pump to the moon", "ETH dump, rekt", "staking question", "bullish bullish but red"]
    model = ModelProcess.start(LexiconClassifier)
    try:
        assert model.pid != os.getpid()
        assert model.info == LexiconClassifier().info
        assert list(model.classify(texts)) == list(LexiconClassifier().classify(texts))
        assert list(model.classify(texts[:1])) == list(LexiconClassifier().classify(texts[:1]))  # the pipe carries call after call
    finally:
        model.close()
    assert not pid_alive(model.pid)


def test_the_models_own_error_is_raised_in_the_worker_and_the_process_goes_on():
    model = ModelProcess.start(RaisesOnPoison)
    try:
        with pytest.raises(RuntimeError, match="CUDA out of memory"):
            model.classify(["fine", "POISON"])
        assert [j.label for j in model.classify(["fine"])] == ["neutral"]
    finally:
        model.close()


def test_a_failed_load_is_raised_where_the_process_was_started():
    with pytest.raises(SystemExit) as raised:
        ModelProcess.start(fails_to_load)
    assert raised.value.code == 3


def test_a_dead_model_process_is_model_gone_and_no_post_is_dead_lettered(redis_server):
    """A model process killed (the kernel's OOM killer, a driver fault) is a lost dependency: the
    processor raises instead of splitting the batch down and dead-lettering every post in it."""
    redis.Redis.from_url(redis_server).flushdb()
    published: list[str] = []

    async def publish(topic, records):
        published.extend(topic for _ in records)

    model = ModelProcess.start(LexiconClassifier)
    assert check_model(model).ok
    os.kill(model.pid, signal.SIGKILL)
    wait_until(lambda: not pid_alive(model.pid), 10, "the model process dies", [])
    assert not check_model(model).ok  # /readyz says so before any batch comes

    async def go():
        store = WindowStore.from_url(redis_server)
        proc = BatchProcessor(model.classify, store, publish, sentiment_topic="out", dlq_topic="dlq", model_base="m", model_adapter=None)
        await proc.start()
        messages = [RawMessage(json.dumps({"id": f"p{i}", "text": "pump", "created_at": 1_767_225_600 + i}).encode(), "forum-posts", 0, i)
                    for i in range(4)]
        try:
            with pytest.raises(ModelGone, match="exit code -9"):
                await proc.handle(messages)
            return await store.stats()
        finally:
            await store.close()

    stats = asyncio.run(go())
    model.close()
    assert published == []
    assert stats.get("processed", 0) == 0 and stats.get("dlq", 0) == 0


def test_the_model_process_dies_with_a_worker_killed_by_sigkill_mid_batch(tmp_path):
    """The pipe's end is seen only between batches; the kernel's parent-death signal covers a worker
    SIGKILLed while its model works (a GPU must not stay held by an orphan)."""
    script = textwrap.dedent("""
        import sys
        sys.path.insert(0, "tests")
        from test_model_process import SleepsOnSlow
        from stream.model_process import ModelProcess
        model = ModelProcess.start(SleepsOnSlow)
        print(model.pid, flush=True)
        model.classify(["SLOW"])
    """)
    mark = tmp_path / "inside"
    parent = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE, text=True, env=os.environ | {"SLOW_MARK": str(mark)})
    try:
        child = int(parent.stdout.readline())
        wait_until(mark.exists, 10, "the model process is inside the slow batch", [])
        parent.kill()
        parent.wait(10)
        wait_until(lambda: not pid_alive(child), 10, "the model process follows its SIGKILLed parent", [])
    finally:
        if parent.poll() is None:
            parent.kill()


def test_a_factory_with_arguments_travels_to_the_child():
    """The worker passes functools.partial(scorer_in_child, settings): settings must survive the trip."""
    from sentinel.cli import scorer_in_child
    from stream.settings import Settings

    settings = Settings(base="lexicon", redis_url="redis://:secret@localhost:1/0", log_level="WARNING")
    model = ModelProcess.start(functools.partial(scorer_in_child, settings))
    try:
        assert model.info.base == "lexicon"
        assert [j.label for j in model.classify(["pump pump", "dump"])] == ["positive", "negative"]
    finally:
        model.close()


@pytest.mark.parametrize(("setting", "base", "device", "apart"), [
    ("auto", "smollm2", "cuda", True), ("auto", "smollm2", "cuda:1", True), ("auto", "smollm2", "cpu", False),
    ("auto", "lexicon", "cuda", False), ("true", "smollm2", "cpu", True), ("false", "smollm2", "cuda", False),
])
def test_auto_gives_the_model_a_process_of_its_own_on_a_gpu_only(setting, base, device, apart):
    from sentinel.cli import model_apart
    from stream.settings import Settings

    assert model_apart(Settings(model_process=setting, base=base, device=device)) is apart


def test_device_auto_on_a_machine_without_cuda_keeps_the_model_on_a_thread():
    import torch

    from sentinel.cli import model_apart
    from stream.settings import Settings

    assert model_apart(Settings(model_process="auto", base="smollm2", device="auto")) is torch.cuda.is_available()


def test_a_worker_whose_model_process_dies_stops_unacked_and_its_successor_counts_every_post_once(
        tmp_path, cache_dir, kafka_server, redis_server, monkeypatch):
    """The whole path with real processes: a running worker's model process is SIGKILLed; /readyz
    says so; the next batch stops the worker (exit 70) without counting, acking or dead-lettering
    it; a new worker then counts both files' posts exactly once."""
    import psutil

    from stream.kafka import ensure_topics, worker_topics
    from stream.settings import Settings
    from stream.tools.replay import replay
    from workers import Worker, command_line, worker_env

    redis.Redis.from_url(redis_server).flushdb()
    env = worker_env("modelproc", kafka_server, redis_server, cache_dir, SENTINEL_MODEL_PROCESS="true")
    for key in ("KAFKA_BROKER", "REDIS_URL", *(k for k in env if k.startswith("SENTINEL_"))):
        monkeypatch.setenv(key, env[key])
    settings = Settings()
    files = []
    for part in range(2):
        path = tmp_path / f"posts{part}.jsonl"
        path.write_text("".join(json.dumps({"id": f"m{part}-{i}", "text": f"$BTC pump number {i}", "created_at": 1_767_225_600 + 60 * part + i})
                                + "\n" for i in range(20)))
        files.append(path)
    asyncio.run(ensure_topics(settings, worker_topics(settings)))
    stats = redis.Redis.from_url(redis_server, decode_responses=True)

    def counted(key: str) -> int:
        return int(stats.hget("sentinel:{all}:stats", key) or 0)

    first = Worker(env, tmp_path / "first.log")
    try:
        asyncio.run(replay(settings, files[0], settings.topic_posts, None))
        wait_until(lambda: counted("processed") == 20, 120, "the first file counted", [first])
        model = next(p for p in psutil.Process(first.proc.pid).children() if "spawn_main" in command_line(p))

        def model_check() -> bool | None:
            """/readyz's model check; None while the worker does not answer."""
            body = first.readyz()
            return None if body is None else body["checks"]["model"]["ok"]

        wait_until(lambda: model_check() is True, 30, "/readyz to report the model loaded", [first])
        model.kill()
        wait_until(lambda: model_check() is False, 30, "/readyz to report the model process gone", [first])
        asyncio.run(replay(settings, files[1], settings.topic_posts, None))
        wait_until(lambda: not first.alive(), 60, "the worker to stop at its next batch", [])
        assert first.proc.returncode == 70, first.log_tail()
        assert "ModelGone" in first.log_path.read_text()
    finally:
        first.close()
    assert (counted("processed"), counted("dlq")) == (20, 0)

    successor = Worker(env, tmp_path / "second.log")
    try:
        wait_until(lambda: counted("processed") == 40, 120, "the successor to count the second file", [successor])
    finally:
        successor.close()
    assert (counted("processed"), counted("dlq"), counted("duplicates")) == (40, 0, 0)
