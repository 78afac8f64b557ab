"""The batch processor's failure handling, with a real redis-server and a stand-in classifier."""

from __future__ import annotations

import asyncio
import json
import logging
import time

import pytest
import redis

from model.scorer import judgement_from_probs
from stream.batch import RawMessage
from stream.processor import BatchProcessor
from stream.store import WindowStore
from workers import every_bucket


class OomOnPoison:
    """Raises like a CUDA OOM whenever the poison post is in the batch."""

    def __init__(self):
        self.calls: list[int] = []

    def __call__(self, texts):
        self.calls.append(len(texts))
        if any("POISON" in t for t in texts):
            raise RuntimeError("CUDA out of memory (simulated)")
        return [judgement_from_probs([0.7, 0.2, 0.1]) for _ in texts]


def message(i: int, text: str) -> RawMessage:
    value = json.dumps({"id": f"p{i}", "text": text, "created_at": 1_767_225_600 + i}).encode()
    return RawMessage(value, "forum-posts", 0, i)


T = 1_767_225_600  # event time of the lateness tests


def post_at(pid: str, ts: float, partition: int = 0, offset: int = 0) -> RawMessage:
    return RawMessage(json.dumps({"id": pid, "text": "post", "created_at": ts}).encode(), "forum-posts", partition, offset)


async def discard(topic, records):
    pass


def neutral_processor(store: WindowStore, **options) -> BatchProcessor:
    """A processor whose stand-in classifier calls every post neutral, publishing nowhere."""
    return BatchProcessor(lambda texts: [judgement_from_probs([0.1, 0.8, 0.1]) for _ in texts], store, discard,
                          sentiment_topic="out", dlq_topic="dlq", model_base="m", model_adapter=None, **options)


# For the lateness tests on a handful of posts: a partition's first post sets its watermark, as when
# it starts from a stored one (a partition new to the store waits for CLOCK_JUMP_POSTS posts first).
FIRST_POST_SETS_THE_CLOCK = {"clock_jump_posts": 1}


class NanOnPoison(OomOnPoison):
    """Returns non-finite scores for the poison post, as a model in half precision can on an overflow:
    Redis refused them in the window write, so the batch failed there on every retry."""

    def __call__(self, texts):
        self.calls.append(len(texts))
        return [judgement_from_probs([float("nan")] * 3 if "POISON" in t else [0.7, 0.2, 0.1]) for t in texts]


@pytest.mark.parametrize("classifier, said", [(OomOnPoison, "CUDA out of memory"), (NanOnPoison, "non-finite scores")])
def test_a_poison_post_is_split_out_to_the_dlq_and_the_rest_is_processed(redis_server, classifier, said):
    redis.Redis.from_url(redis_server).flushdb()
    published: list[tuple[str, dict]] = []

    async def publish(topic, records):
        published.extend((topic, json.loads(value)) for _, value in records)

    async def go():
        store = WindowStore.from_url(redis_server)
        classify = classifier()
        proc = BatchProcessor(classify, store, publish, sentiment_topic="out", dlq_topic="dlq", model_base="m", model_adapter=None)
        await proc.start()
        msgs = [message(i, "fine post") for i in range(8)]
        msgs[5] = message(5, "POISON post")
        outcome = await asyncio.wait_for(proc.handle(msgs), 60)
        stats = await store.stats()
        await store.close()
        return outcome, stats, classify.calls

    outcome, stats, calls = asyncio.run(go())
    dead = [rec for topic, rec in published if topic == "dlq"]
    assert [(d["reason"], d["post_id"], d["source_offset"]) for d in dead] == [("classification_failed", "p5", 5)]
    assert said in dead[0]["message"]
    assert sorted(rec["id"] for topic, rec in published if topic == "out") == [f"p{i}" for i in range(8) if i != 5]
    assert outcome.processed == 7 and outcome.dlq == 1 and stats["processed"] == 7 and stats["dlq"] == 1
    assert calls[0] == 8 and 1 in calls  # split down to the single poison post, not retried forever


def test_with_a_dedupe_window_a_redelivery_inside_it_counts_once_and_an_older_post_is_late(redis_server):
    """SENTINEL_DEDUPE_WINDOW 10 minutes, retention an hour: a post further behind the watermark
    than the window is dropped as late (its id may be gone), one inside it is deduped or counted."""
    redis.Redis.from_url(redis_server).flushdb()

    async def go():
        store = WindowStore.from_url(redis_server, retention_s=3600, dedupe_s=600)
        proc = neutral_processor(store, **FIRST_POST_SETS_THE_CLOCK)
        await proc.start()
        first = await proc.handle([post_at("a", T, offset=0), post_at("b", T + 1000, offset=1)])
        # b again (a redelivery), one 900 s behind the watermark (past the window), one 500 s behind.
        second = await proc.handle([post_at("b", T + 1000, offset=1), post_at("old", T + 100, offset=2), post_at("inside", T + 500, offset=3)])
        stats = await store.stats()
        await store.close()
        return first, second, stats

    first, second, stats = asyncio.run(go())
    assert (first.processed, first.late_dropped) == (2, 0)
    assert (second.processed, second.duplicates, second.late_dropped) == (1, 1, 1)
    assert (stats["processed"], stats["duplicates"], stats["late_dropped"]) == (3, 1, 1)


def test_a_partition_behind_the_others_keeps_its_posts_and_its_redeliveries_count_once(redis_server):
    """Dedupe window 10 minutes. Partition 1 (one worker) runs 2,000 s of event time behind partition
    0 (another): its posts are on time by its own watermark, and the worker ahead keeps the shared
    ids a window behind the slowest partition, so a redelivery on partition 1 is still a duplicate."""
    redis.Redis.from_url(redis_server).flushdb()

    async def go():
        stores = [WindowStore.from_url(redis_server, retention_s=3600, dedupe_s=600) for _ in range(2)]
        ahead, behind = (neutral_processor(s) for s in stores)
        for proc in (ahead, behind):
            await proc.start()
        await behind.handle([post_at("b0", T, 1, 0)])
        await ahead.handle([post_at("a0", T, 0, 0)])
        await ahead.handle([post_at("a1", T + 2000, 0, 1)])  # partition 0 is 2,000 s on; partition 1 holds b0's id
        more = await behind.handle([post_at("b1", T + 10, 1, 1)])  # 1,990 s behind the stored watermark: on time
        # b0 redelivered, in a batch cut differently (so its offsets' token is new and only its id can tell).
        again = await behind.handle([post_at("b0", T, 1, 0), post_at("b2", T + 20, 1, 2)])
        stats = await stores[0].stats()
        members = await stores[0].redis.zrange("sentinel:{all}:seen", 0, -1)
        for store in stores:
            await store.close()
        return more, again, stats, members

    more, again, stats, members = asyncio.run(go())
    assert (more.processed, more.late_dropped) == (1, 0)
    assert (again.processed, again.duplicates, again.late_dropped) == (1, 1, 0)
    assert (stats["processed"], stats["duplicates"], stats["late_dropped"]) == (5, 1, 0)
    assert "b0" in members


def test_a_worker_restarted_on_offsets_reset_back_drops_what_the_window_no_longer_dedupes(redis_server):
    """A rebuild in place with a 10-minute dedupe window: the restarted worker takes each partition's
    stored progress, so posts older than the window (counted already, their ids gone) are late,
    not counted again."""
    redis.Redis.from_url(redis_server).flushdb()
    posts = [post_at(f"p{i}", T + ts, offset=i) for i, ts in enumerate((0, 500, 1000, 2000))]

    async def go():
        store = WindowStore.from_url(redis_server, retention_s=3600, dedupe_s=600)
        first = neutral_processor(store, **FIRST_POST_SETS_THE_CLOCK)
        await first.start()
        for msg in posts:
            await first.handle([msg])
        again = neutral_processor(store)  # the restart, its offsets reset to the start: its clock starts from the stored watermark
        await again.start()
        replay = await again.handle(posts)
        stats = await store.stats()
        await store.close()
        return replay, stats

    replay, stats = asyncio.run(go())
    assert (replay.processed, replay.duplicates, replay.late_dropped) == (0, 1, 3)
    assert stats["processed"] == 4


def test_a_post_behind_every_worker_by_more_than_the_retention_is_late_whatever_its_partition(redis_server):
    redis.Redis.from_url(redis_server).flushdb()

    async def go():
        store = WindowStore.from_url(redis_server, retention_s=3600, dedupe_s=600)
        proc = neutral_processor(store, **FIRST_POST_SETS_THE_CLOCK)
        await proc.start()
        outcome = await proc.handle([post_at("new", T + 4000, 0, 0), post_at("behind", T + 1000, 1, 0), post_at("gone", T, 1, 1)])
        await store.close()
        return outcome

    outcome = asyncio.run(go())
    # "behind" is 3,000 s behind partition 0 but first on partition 1: counted. "gone" is 4,000 s
    # behind the watermark, past the 3,600 s retention: its buckets may be trimmed already.
    assert (outcome.processed, outcome.late_dropped) == (2, 1)


def post_from(pid: str, ts: float, source: str, partition: int = 0, offset: int = 0) -> RawMessage:
    value = {"id": pid, "text": "post", "created_at": ts, "source": source}
    return RawMessage(json.dumps(value).encode(), "forum-posts", partition, offset)


def test_one_post_from_the_future_drops_no_later_post_of_its_partition_and_is_counted_ahead(redis_server):
    """future_one: one post dated a month ahead among a partition's posts, a 10-minute dedupe
    window. Its partition's watermark used to jump there, and every later post of the partition was
    dropped as late (777 of 4,763 in future_one.jsonl); now the watermark stays with the stream,
    nothing is late, and the post is counted where it says and in `ahead`."""
    redis.Redis.from_url(redis_server).flushdb()
    msgs = [post_from(f"p{i}", T + 60 * i, "discord", offset=i) for i in range(20)]
    msgs[5] = post_from("clockbug", T + 30 * 86400, "discord", offset=5)

    async def go():
        store = WindowStore.from_url(redis_server, retention_s=3600, dedupe_s=600)
        proc = neutral_processor(store)
        await proc.start()
        outcomes = [await proc.handle(msgs[i:i + 8]) for i in range(0, 20, 8)]
        stats = await store.stats()
        await store.close()
        return outcomes, stats

    outcomes, stats = asyncio.run(go())
    assert sum(o.late_dropped for o in outcomes) == 0 and sum(o.processed for o in outcomes) == 20
    assert sum(o.ahead for o in outcomes) == 1 and (stats["ahead"], stats["late_dropped"]) == (1, 0)
    assert stats["pwm:0"] == stats["watermark"] == T + 60 * 19  # the stream's time, not the future post's


def test_a_source_stamping_hours_ahead_leaves_every_partition_on_the_other_sources_time(redis_server):
    """tz_skew8 at the processor: telegram's posts, 8 hours ahead, share both partitions with
    discord's (3 of every 8), and each partition's first post is telegram's. The stored watermarks,
    which judging follows, stay on discord's time (the first post a partition reads used to set its
    clock: both would have stayed 8 hours ahead); telegram's posts are counted where they say and
    in `ahead`."""
    redis.Redis.from_url(redis_server).flushdb()
    pattern = "tddtdtdd" * 10
    # Eight posts to one partition, the next eight to the other.
    msgs = [post_from(f"{c}{i}", T + 60 * i + (8 * 3600 if c == "t" else 0), {"d": "discord", "t": "telegram"}[c], i // 8 % 2, i)
            for i, c in enumerate(pattern)]

    async def go():
        store = WindowStore.from_url(redis_server)
        proc = neutral_processor(store)
        await proc.start()
        outcomes = [await proc.handle(msgs[i:i + 16]) for i in range(0, len(msgs), 16)]
        stats = await store.stats()
        await store.close()
        return outcomes, stats

    outcomes, stats = asyncio.run(go())
    newest_discord = {p: max(T + 60 * i for i, c in enumerate(pattern) if c == "d" and i // 8 % 2 == p) for p in (0, 1)}
    assert (stats["pwm:0"], stats["pwm:1"]) == (newest_discord[0], newest_discord[1])
    assert stats["watermark"] == max(newest_discord.values()) and stats["late_dropped"] == 0 and stats["processed"] == len(msgs)
    telegram = pattern.count("t")
    # Each partition's first watermark waits for CLOCK_JUMP_POSTS posts: the 6 telegram posts among them are not counted.
    assert stats["ahead"] == sum(o.ahead for o in outcomes) == telegram - 2 * 6


def test_a_partition_handed_over_starts_its_clock_from_the_stored_watermark(redis_server):
    """Worker A reads a partition, B takes it over (a rebalance), then A gets it back. B's clock
    starts from A's stored watermark, so the first posts B reads, two of the fast source's, do not
    carry the watermark off; A, told of the rebalance, starts again from B's progress, so a post
    further behind it than the dedupe window is late there as it would be at B."""
    redis.Redis.from_url(redis_server).flushdb()

    def at(k: int, source: str = "discord", skew: float = 0.0) -> RawMessage:
        return post_from(f"{source}-{k}", T + 60 * k + skew, source, 0, k)

    async def go():
        stores = [WindowStore.from_url(redis_server, retention_s=3600, dedupe_s=600) for _ in range(2)]
        a, b = (neutral_processor(s) for s in stores)
        await a.start()
        await b.start()
        await a.handle([at(k) for k in range(10)])
        a.keep_clocks([])  # the rebalance: partition 0 goes to B
        await b.handle([at(10, "telegram", 8 * 3600), at(11, "telegram", 8 * 3600), *(at(k) for k in range(12, 30))])
        after_b = (await stores[0].stats())["pwm:0"]
        back = await a.handle([at(5), at(30)])  # A has it back: at(5) is 25 minutes behind B's progress
        for store in stores:
            await store.close()
        return after_b, back

    after_b, back = asyncio.run(go())
    assert after_b == T + 60 * 29
    assert (back.late_dropped, back.processed) == (1, 1)


class Gated:
    """A classifier that waits for the test's go-ahead, so the test controls when a batch finishes."""

    def __init__(self):
        import threading

        self.started: list[int] = []
        self.gates: dict[int, "threading.Event"] = {}
        self._threading = threading

    def gate(self, first_offset: int):
        return self.gates.setdefault(first_offset, self._threading.Event())

    def __call__(self, texts):
        first = int(texts[0].split()[-1])
        self.started.append(first)
        if not self.gate(first).wait(timeout=30):
            raise TimeoutError("the test never released this batch")
        return [judgement_from_probs([0.7, 0.2, 0.1]) for _ in texts]


async def _until(condition, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def gated_pipeline(redis_server: str, events: list[str], held: asyncio.Event | None = None):
    """A BatchPipeline over a real store and a Gated model; outputs are logged in `events`, and
    batch 1's (post p0's) wait for `held` when given."""
    from stream.processor import BatchPipeline

    store = WindowStore.from_url(redis_server)
    classify = Gated()

    async def publish(topic, records):
        for key, _ in records:
            if held is not None and topic == "out" and key == "p0":
                await held.wait()
            events.append(f"publish {key}")

    proc = BatchProcessor(classify, store, publish, sentiment_topic="out", dlq_topic="dlq", model_base="m", model_adapter=None)
    await proc.start()
    failures: list[BaseException] = []
    return store, classify, BatchPipeline(proc, on_failure=failures.append), failures


def acker(events: list[str], name: str):
    async def done():
        events.append(f"ack {name}")
    return done


def test_the_pipeline_classifies_the_next_batch_while_the_previous_is_written_in_order(redis_server):
    """Batch 2 is classified while batch 1 is still being written; commits and acks stay in batch
    order; a batch counts as in flight until it is acked."""
    redis.Redis.from_url(redis_server).flushdb()
    events: list[str] = []

    async def go():
        held = asyncio.Event()  # batch 1's outputs stall until the test lets them through
        store, classify, pipe, failures = await gated_pipeline(redis_server, events, held)
        batch1 = [message(i, f"post {i}") for i in range(0, 4)]
        batch2 = [message(i, f"post {i}") for i in range(4, 8)]
        classify.gate(0).set()
        await pipe.submit(batch1, acker(events, "batch1"))  # queued for the model, then written
        second = asyncio.create_task(pipe.submit(batch2, acker(events, "batch2")))
        await _until(lambda: 4 in classify.started)  # batch 2 is in the model...
        assert "ack batch1" not in events and pipe.in_flight == 2  # ...while batch 1 is still being written
        held.set()
        classify.gate(4).set()
        await second
        await pipe.drain()
        stats = await store.stats()
        await store.close()
        return stats, failures, pipe.in_flight

    stats, failures, in_flight = asyncio.run(go())
    assert not failures and in_flight == 0
    assert events.index("ack batch1") < events.index("publish p4") < events.index("ack batch2")
    assert [e for e in events if e.startswith("ack")] == ["ack batch1", "ack batch2"]
    assert stats["processed"] == 8


def test_the_next_batch_waits_at_the_model_and_a_third_waits_for_the_first_commit(redis_server):
    """While the model holds batch 1, batch 2 is taken, validated and queued behind it, so the model
    starts batch 2 the moment batch 1 is done instead of waiting for the agent; a third submit
    (over the depth of 2) returns only once batch 1 is committed."""
    redis.Redis.from_url(redis_server).flushdb()
    events: list[str] = []

    async def go():
        store, classify, pipe, failures = await gated_pipeline(redis_server, events)
        batches = [[message(i, f"post {i}") for i in range(start, start + 4)] for start in (0, 4, 8)]
        await asyncio.wait_for(pipe.submit(batches[0], acker(events, "batch1")), 10)  # not held while the model works
        await _until(lambda: classify.started == [0])
        await asyncio.wait_for(pipe.submit(batches[1], acker(events, "batch2")), 10)  # queued behind batch 1
        third = asyncio.create_task(pipe.submit(batches[2], acker(events, "batch3")))
        await _until(lambda: pipe.in_flight == 3)
        assert not third.done() and classify.started == [0]  # batch 1 cannot commit while the model holds it
        classify.gate(0).set()
        await _until(lambda: 4 in classify.started)  # the queued batch went straight in
        await asyncio.wait_for(third, 10)
        assert "ack batch1" in events and "ack batch2" not in events
        classify.gate(4).set()
        classify.gate(8).set()
        await pipe.drain()
        stats = await store.stats()
        await store.close()
        return stats, failures, pipe.in_flight, classify.started

    stats, failures, in_flight, started = asyncio.run(go())
    assert not failures and in_flight == 0 and started == [0, 4, 8]
    assert [e for e in events if e.startswith("ack")] == ["ack batch1", "ack batch2", "ack batch3"]
    assert events.index("ack batch1") < events.index("publish p4") < events.index("ack batch2") < events.index("publish p8")
    assert stats["processed"] == 12


def test_a_failed_write_reaches_on_failure_and_the_batch_stays_in_flight(redis_server):
    from stream.processor import BatchPipeline

    redis.Redis.from_url(redis_server).flushdb()

    async def go():
        store = WindowStore.from_url(redis_server)

        async def publish(topic, records):
            if topic == "out":
                raise RuntimeError("producer gone")

        proc = BatchProcessor(lambda texts: [judgement_from_probs([0.1, 0.8, 0.1]) for _ in texts], store, publish,
                              sentiment_topic="out", dlq_topic="dlq", model_base="m", model_adapter=None)
        await proc.start()
        failures: list[BaseException] = []
        acked: list[bool] = []
        pipe = BatchPipeline(proc, on_failure=failures.append)

        async def done():
            acked.append(True)

        await pipe.submit([message(0, "post 0")], done)
        with pytest.raises(RuntimeError, match="producer gone"):  # the failure reaches the one who drains, too
            await pipe.drain()
        await store.close()
        return failures, acked, pipe.in_flight

    failures, acked, in_flight = asyncio.run(go())
    assert [str(f) for f in failures] == ["producer gone"]
    assert acked == [] and in_flight == 1  # never acked: a graceful shutdown would not commit it


def test_start_waits_for_redis_instead_of_failing(tmp_path, caplog):
    """The agent starts the processor while Redis is unreachable: start() backs off like a batch does
    and returns once Redis answers, instead of raising (which would end the agent)."""
    import logging

    from stream.tools.services import free_port, start_redis

    port = free_port()
    caplog.set_level(logging.WARNING, logger="stream.processor")  # the retry warning is what this waits on

    async def go():
        store = WindowStore.from_url(f"redis://127.0.0.1:{port}/0")
        proc = BatchProcessor(lambda texts: [], store, None, sentiment_topic="out", dlq_topic="dlq", model_base="m", model_adapter=None)
        proc.redis_retry_max_s = 0.2
        task = asyncio.ensure_future(proc.start())
        server = None
        try:
            deadline = time.monotonic() + 30
            while not task.done() and time.monotonic() < deadline:
                if server is None and caplog.records:  # it failed once against the closed port: Redis comes up
                    server, _ = await asyncio.to_thread(start_redis, tmp_path, port=port)
                await asyncio.sleep(0.1)
            return task.done() and task.exception() is None, len(caplog.records)
        finally:
            task.cancel()
            await store.close()
            if server is not None:
                server.stop()

    started, tries = asyncio.run(go())
    assert started and tries >= 1, (started, tries)


def test_a_batchs_bad_messages_go_to_the_dlq_in_one_publish(redis_server):
    """Each publish of a partition's records waits for the previous one to leave the producer, so
    a batch's rejections are published together, each with its reason, and counted once published."""
    events: list[str] = []

    async def publish(topic, records):
        events.append(f"publish {topic} " + ",".join(sorted(json.loads(value)["reason"] for _, value in records)))

    class Observer:
        def dead_lettered(self, reason):
            events.append(f"count {reason}")

    bad = [RawMessage(b"not json", "forum-posts", 0, 1), RawMessage(b'{"id": "x"}', "forum-posts", 0, 2),
           RawMessage(b"\xff\xfe", "forum-posts", 0, 3)]

    async def go():
        proc = BatchProcessor(lambda texts: [], WindowStore.from_url(redis_server), publish, sentiment_topic="out",
                              dlq_topic="dlq", model_base="m", model_adapter=None, metrics=Observer())
        return await proc.admit([message(0, "fine"), *bad, message(4, "also fine")])

    admitted = asyncio.run(go())
    assert [p.id for p, _ in admitted.posts] == ["p0", "p4"] and admitted.outcome.dlq == 3
    # One publish of all three, then their counts.
    assert len(events) == 4 and events[0].startswith("publish dlq ") and all(e.startswith("count ") for e in events[1:]), events
    assert sorted(e.split()[1] for e in events[1:]) == events[0].split()[2].split(",")


def test_a_partition_read_hours_behind_another_loses_no_post_and_judges_on_whole_baselines(redis_server):
    """Two workers, a 3-hour retention, 8 hours of posts on each of two partitions. Read in order
    (the partitions chunk by chunk), and read skewed (a catch-up: partition 0 through all 8 hours
    before partition 1 begins). The horizon trails the slowest live partition, so skewed: no post is
    late, partition 0's buckets all stay while partition 1 is unheard, and the judge ends with the
    baselines, state and transitions of the in-order run. (Trimming behind the newest post dropped
    the first 5 hours of partition 1 as late.)"""
    from dataclasses import replace

    from stream.alerts.engine import AlertEngine
    from stream.alerts.judging import AlertConfig
    from stream.keys import incident_key, index_key

    retention, step, hours = 3 * 3600, 120, 8
    config = replace(AlertConfig(), window_s=1800, baseline_s=7200, grace_s=120, idle_s=3600)  # no partition idles here

    def posts(partition: int) -> list[RawMessage]:
        # A negative share that moves with the hour, so the baselines matter; partition 1 a minute after 0.
        return [post_at(f"p{partition}-{k}", T + k * step + 60 * partition, partition, k)
                for k in range(hours * 3600 // step)]

    def label(texts):
        return [judgement_from_probs([0.8, 0.1, 0.1] if "neg" in t else [0.1, 0.1, 0.8]) for t in texts]

    def with_text(msg: RawMessage) -> RawMessage:
        value = json.loads(msg.value)
        k = msg.offset
        value["text"] = "neg post" if k % (2 + (k // 30) % 4) == 0 else "post"
        return RawMessage(json.dumps(value).encode(), msg.topic, msg.partition, msg.offset)

    chunks = [[[with_text(m) for m in posts(p)[i:i + 20]] for i in range(0, hours * 3600 // step, 20)] for p in (0, 1)]

    async def run_order(skewed: bool):
        redis.Redis.from_url(redis_server).flushdb()
        stores = [WindowStore.from_url(redis_server, retention_s=retention) for _ in range(2)]
        procs = [BatchProcessor(label, s, discard, sentiment_topic="out", dlq_topic="dlq", model_base="m", model_adapter=None,
                                alerts=AlertEngine(s, config, partitions=2, samples=0), partitions=2, idle_s=config.idle_s)
                 for s in stores]
        for proc in procs:
            await proc.start()
        outcomes, buckets_ahead = [], None
        order = ([(0, c) for c in chunks[0]] + [(1, c) for c in chunks[1]] if skewed
                 else [(p, chunks[p][i]) for i in range(len(chunks[0])) for p in (0, 1)])
        for partition, chunk in order:
            if skewed and partition == 1 and buckets_ahead is None:
                buckets_ahead = await stores[0].redis.zcard(index_key("all"))
            outcomes.append(await procs[partition].handle(chunk))
        judged = {field: value for field, value in (await stores[0].redis.hgetall(incident_key("all"))).items()}
        stats = await stores[0].stats()
        until = int(float(judged["until"]))
        table = await stores[0].slices("all", until - retention + step, 60, retention // 60)
        for store in stores:
            await store.close()
        return outcomes, buckets_ahead, judged, stats, table

    in_order = asyncio.run(run_order(skewed=False))
    skewed = asyncio.run(run_order(skewed=True))
    total = 2 * hours * 3600 // step
    for outcomes, _, _, stats, _ in (in_order, skewed):
        assert sum(o.late_dropped for o in outcomes) == 0 and sum(o.processed for o in outcomes) == total
        assert (stats["late_dropped"], stats["processed"]) == (0, total)
    assert skewed[1] == hours * 3600 // step  # partition 0's every bucket, while partition 1 was unheard
    (_, _, judged, _, table), (_, _, judged_skewed, _, table_skewed) = in_order, skewed
    assert judged["seq"] and judged_skewed == judged  # the judge's last boundary, baseline state and incidents
    assert table.sum() > 0 and (table_skewed == table).all()  # the buckets a retention behind it, whole


def test_a_worker_that_starts_late_finds_the_author_cells_of_its_first_hours(redis_server):
    """SENTINEL_AUTHOR_CAP with two workers, one a day ahead of the other before the other has
    written anything (a catch-up, a worker that starts late). Worker A reads partition 0: four posts
    of one author in hour 0, then hours of other chatter. Worker B then reads partition 1: the same
    author's two earlier posts in hour 0. The author counts 3 in hour 0 however they were read.
    Post ids and author cells go a dedupe window behind the slowest partition judging counts, so
    partition 1, not heard from yet, holds them back; behind the slowest one that had reported,
    A dropped hour 0's cells and B's posts counted past the cap (5)."""
    def post(pid: str, ts: float, partition: int, offset: int, author: str) -> RawMessage:
        value = {"id": pid, "text": "post", "created_at": ts, "author": author, "source": "forum"}
        return RawMessage(json.dumps(value).encode(), "forum-posts", partition, offset)

    def label(texts):
        return [judgement_from_probs([0.1, 0.8, 0.1]) for _ in texts]

    loud = [post(f"a{k}", T + 600 + 60 * k, 0, k, "loud") for k in range(4)]
    chatter = [post(f"c{k}", T + 3600 + 600 * k, 0, 4 + k, f"u{k}") for k in range(48)]  # 8 hours on
    early = [post(f"b{k}", T + 60 * k, 1, k, "loud") for k in range(2)]

    async def go(order):
        redis.Redis.from_url(redis_server).flushdb()
        stores = [WindowStore.from_url(redis_server, retention_s=3 * 3600, author_cap=3) for _ in range(2)]
        procs = [BatchProcessor(label, s, discard, sentiment_topic="out", dlq_topic="dlq", model_base="m", model_adapter=None,
                                partitions=2, idle_s=3600) for s in stores]
        for proc in procs:
            await proc.start()
        for worker, batch in order:
            await procs[worker].handle(batch)
        counted = int((await stores[0].slices("all", T, 3600, 1))[0][0])  # hour 0 in `all`
        for store in stores:
            await store.close()
        return counted

    late_start = asyncio.run(go([(0, loud), *((0, chatter[i:i + 8]) for i in range(0, 48, 8)), (1, early)]))
    in_step = asyncio.run(go([(1, early), (0, loud), *((0, chatter[i:i + 8]) for i in range(0, 48, 8))]))
    assert in_step == late_start == 3


def test_a_partition_unwritten_past_the_idle_time_with_posts_left_to_read_holds_the_frontier(redis_server):
    """Two workers, partitions 0 and 1, a 1-hour retention and a 1-second idle time. Worker B writes
    20 minutes of partition 1 (past the CLOCK_JUMP_POSTS posts its first watermark waits for), then goes unwritten for longer than the idle time (a catch-up reading
    one partition at a time, or B gone), while worker A writes 5 hours of partition 0; then A reads
    partition 1's next 2 hours (handed over by a rebalance). While B's last write left posts to read
    (lag > 0), partition 1 is not idle: the judge and A's trim horizon stay behind it, every bucket
    stays, and none of its posts is dropped as late. Caught up (lag 0), it is idle as before: the
    frontier passes it and those posts are late (the wall-clock rule, which a backlog got too)."""
    from dataclasses import replace

    from stream.alerts.engine import AlertEngine
    from stream.alerts.judging import AlertConfig
    from stream.keys import incident_key, index_key
    from stream.windows import frontier

    retention, step, idle_s = 3600, 60, 1.0
    config = replace(AlertConfig(), window_s=600, baseline_s=1800, grace_s=120, idle_s=idle_s)

    def posts(partition: int, start: float, count: int, offset: int, end: int) -> list[RawMessage]:
        # `end`: the partition's highwater as the consumer knew it when the batch was taken.
        return [replace(post_at(f"p{partition}-{offset + k}", start + k * step, partition, offset + k), highwater=end)
                for k in range(count)]

    def label(texts):
        return [judgement_from_probs([0.1, 0.8, 0.1]) for _ in texts]

    async def run(backlog: int):
        redis.Redis.from_url(redis_server).flushdb()
        stores = [WindowStore.from_url(redis_server, retention_s=retention) for _ in range(2)]
        procs = [BatchProcessor(label, s, discard, sentiment_topic="out", dlq_topic="dlq", model_base="m", model_adapter=None,
                                alerts=AlertEngine(s, config, partitions=2, samples=0), partitions=2, idle_s=idle_s)
                 for s in stores]
        for proc in procs:
            await proc.start()
        first = await procs[1].handle(posts(1, T, 20, 0, end=20 + backlog))
        # Worker B's partition goes unwritten past the idle time (the wall clock its write stamped).
        deadline = time.time() + 10
        while time.time() - (await stores[0].stats())["pseen:1"] <= 2 * idle_s:
            assert time.time() < deadline, "the wall clock did not move past the idle time"
            await asyncio.sleep(0.05)
        ahead = [await procs[0].handle(chunk) for chunk in
                 (posts(0, T + i * 3600, 60, i * 60, end=5 * 60) for i in range(5))]
        stats = await stores[0].stats()
        held = frontier(stats, 2, time.time(), idle_s)
        judged = float((await stores[0].redis.hgetall(incident_key("all"))).get("until", "-inf"))
        buckets, horizon = await stores[0].redis.zcard(index_key("all")), procs[0].horizon
        resumed = await procs[0].handle(posts(1, T + 1200, 120, 20, end=140 + backlog))
        for store in stores:
            await store.close()
        return [first, *ahead], stats, held, judged, horizon, buckets, resumed

    outcomes, stats, held, judged, horizon, buckets, resumed = asyncio.run(run(backlog=500))
    assert stats["plag:1"] == 500 and stats["plag:0"] == 0
    newest_1 = T + 19 * step
    assert held == newest_1 and judged <= newest_1 - config.grace_s  # partition 1 holds judging back
    assert horizon <= newest_1 - retention and buckets == 5 * 60  # and trimming: every minute of the 5 hours kept
    assert sum(o.late_dropped for o in outcomes) == 0 and (resumed.late_dropped, resumed.processed) == (0, 120)

    _, stats, held, judged, horizon, _, resumed = asyncio.run(run(backlog=0))
    assert stats["plag:1"] == 0 and held == T + 4 * 3600 + 59 * step  # caught up and silent: idle, passed
    assert judged > newest_1 and horizon > T + 1200
    assert resumed.late_dropped > 0


def test_a_post_before_what_was_trimmed_is_late_whichever_worker_reads_it(redis_server):
    """Partition 1 caught up and went quiet past the idle time, so it was passed and worker A's
    writes of 5 hours of partition 0 trimmed the first hours. Partition 1's next posts fall in those
    trimmed minutes: late, read by A or by B (whose own last write was before the idle time),
    and in every batch, not only the first (their write makes partition 1 live again and would move
    the floor back). Review: A took the second batch and B both into emptied buckets."""
    from dataclasses import replace

    def label(texts):
        return [judgement_from_probs([0.1, 0.8, 0.1]) for _ in texts]

    async def run(reader: str):
        redis.Redis.from_url(redis_server).flushdb()
        store = WindowStore.from_url(redis_server, retention_s=3600)
        a, b = (BatchProcessor(label, store, discard, sentiment_topic="o", dlq_topic="d", model_base="m", model_adapter=None,
                               partitions=2, idle_s=1.0) for _ in range(2))
        await a.start()
        await b.start()
        # Caught up, and past the CLOCK_JUMP_POSTS posts partition 1's first watermark waits for.
        await b.handle([replace(post_at(f"p1-{k}", T + 60 * k, 1, k), highwater=20) for k in range(20)])
        deadline = time.time() + 10
        while time.time() - (await store.stats())["pseen:1"] <= 2.0:
            assert time.time() < deadline, "the wall clock did not move past the idle time"
            await asyncio.sleep(0.05)
        for i in range(5):
            await a.handle([replace(post_at(f"p0-{i}-{k}", T + i * 3600 + 60 * k, 0, i * 60 + k), highwater=300) for k in range(60)])
        worker = {"A": a, "B": b}[reader]
        out = [await worker.handle([replace(post_at(f"p1-{k}", T + 60 * k, 1, k), highwater=k + 1)]) for k in (20, 21)]
        await store.close()
        return [(o.late_dropped, o.processed) for o in out]

    assert asyncio.run(run("A")) == [(1, 0), (1, 0)]
    # B's own last write is older than the idle time: it reads the stats again before judging.
    assert asyncio.run(run("B")) == [(1, 0), (1, 0)]


def test_a_replay_leaves_the_same_buckets_whether_or_not_the_partition_that_ended_first_went_idle(redis_server):
    """Two workers replay two partitions with a 1-hour retention: partition 0's posts (channel
    `early`) end after 90 minutes, partition 1's (channel `late`) run 4 hours. In one run partition
    0, caught up, is still live at every later write (an idle time of an hour); in the other it goes
    unwritten past a 1-second idle time before partition 1's last 2.5 hours are written, so those
    writes trim a retention behind partition 1 alone (SENTINEL_ALERT_IDLE_PARTITION, wall clock).
    The two keep different buckets at the retention's edge while the stream runs. Once the input
    has ended (`settle(ended=True)`, what `sentinel run` calls on its own stack), every scope keeps
    the same buckets in both: a retention behind the newest post, and a scope whose posts ended
    earlier the lookback before its newest post (what judging would read next; its last boundary
    judged, the line before, is wherever the rounds stopped, which differed between the runs)."""
    from dataclasses import replace

    from stream.alerts.engine import AlertEngine
    from stream.alerts.judging import AlertConfig

    retention, step = 3600, 60
    config = replace(AlertConfig(), window_s=600, baseline_s=1800, grace_s=120)

    def posts(partition: int, count: int, channel: str) -> list[RawMessage]:
        return [RawMessage(json.dumps({"id": f"p{partition}-{k}", "text": "post", "created_at": T + k * step + 30 * partition,
                                       "channel": channel}).encode(), "forum-posts", partition, k, highwater=count)
                for k in range(count)]

    early, late = posts(0, 90, "early"), posts(1, 240, "late")

    async def run(idle_s: float):
        redis.Redis.from_url(redis_server).flushdb()
        stores = [WindowStore.from_url(redis_server, retention_s=retention) for _ in range(2)]
        engine = AlertEngine(stores[0], replace(config, idle_s=idle_s), partitions=2, samples=0)
        procs = [neutral_processor(s, alerts=AlertEngine(s, replace(config, idle_s=idle_s), partitions=2, samples=0), partitions=2,
                                   idle_s=idle_s, **FIRST_POST_SETS_THE_CLOCK) for s in stores]
        for proc in procs:
            await proc.start()
        for i in range(0, len(early), 15):  # the partitions read side by side while both have posts
            await procs[0].handle(early[i:i + 15])
            await procs[1].handle(late[i:i + 15])
        deadline = time.time() + 10
        while time.time() - (await stores[0].stats())["pseen:0"] <= 2 * idle_s and idle_s < 60:
            assert time.time() < deadline, "the wall clock did not move past the idle time"
            await asyncio.sleep(0.05)
        for i in range(len(early), len(late), 15):
            await procs[1].handle(late[i:i + 15])
        client = redis.Redis.from_url(redis_server, decode_responses=True)
        running = every_bucket(client)
        await engine.settle(ended=True)
        ended = every_bucket(client)
        for store in stores:
            await store.close()
        return running, ended

    live_running, live_ended = asyncio.run(run(idle_s=3600.0))
    idle_running, idle_ended = asyncio.run(run(idle_s=1.0))
    edge = T + 179 * step  # the bucket a retention behind the newest post (T + 239 min 30 s)
    assert live_running != idle_running  # what the stream kept at the edge depended on the wall clock
    assert live_ended == idle_ended
    kept = {scope: sorted(start for s, start in live_ended if s == scope) for scope in {s for s, _ in live_ended}}
    assert kept["all"] == kept["channel:late"] == list(range(edge, T + 240 * step, step))
    # channel:early's newest post is at T + 89 min: judging would next read from the window and
    # baseline (40 min) before it.
    assert kept["channel:early"] == list(range(T + 49 * step, T + 90 * step, step))



def test_a_flood_of_bad_messages_logs_a_few_lines_and_a_count_but_counts_every_one(redis_server, caplog):
    """A 5,000-message flood logged 5,000 WARNING lines (one per dead letter) before session 57. Now
    the first few of each reason log a line; the rest a count per window, with an example post id;
    the DLQ and the metric still get every one, and no line holds a post's text."""
    from stream.logs import DEAD_LETTERED, DEAD_LETTERS_HELD, DeadLetterLog

    counted: dict[str, int] = {}
    dlq: list[dict] = []

    async def publish(topic, records):
        dlq.extend(json.loads(value) for _, value in records)

    class Observer:
        def dead_lettered(self, reason):
            counted[reason] = counted.get(reason, 0) + 1

    now = [0.0]
    flood = [RawMessage(json.dumps({"id": f"x{i}", "text": f"SECRET-TEXT-{i}"}).encode(), "forum-posts", 0, i) for i in range(5000)]

    async def go():
        proc = BatchProcessor(lambda texts: [], WindowStore.from_url(redis_server), publish, sentiment_topic="out",
                              dlq_topic="dlq", model_base="m", model_adapter=None, metrics=Observer())
        proc.letter_log = DeadLetterLog(clock=lambda: now[0])
        for start in range(0, len(flood), 500):
            await proc.admit([*flood[start:start + 500], RawMessage(b"not json", "forum-posts", 1, start)])
        now[0] = 61.0  # the window has passed: the next batch, a calm one, says the counts
        await proc.admit([message(9, "fine")])

    with caplog.at_level(logging.INFO, logger="stream.processor"):
        asyncio.run(go())
    assert counted == {"missing_field": 5000, "invalid_json": 10} and len(dlq) == 5010
    lines = [r for r in caplog.records if r.name == "stream.processor"]
    each = [r for r in lines if r.getMessage() == DEAD_LETTERED]
    assert sorted(r.reason for r in each) == ["invalid_json"] * 5 + ["missing_field"] * 5, len(each)
    summaries = {r.reason: r for r in lines if r.getMessage() == DEAD_LETTERS_HELD}
    assert set(summaries) == {"invalid_json", "missing_field"}
    assert (summaries["missing_field"].held_back, summaries["missing_field"].example_post_id) == (4995, "x5")
    assert (summaries["invalid_json"].held_back, summaries["invalid_json"].example_post_id) == (5, None)
    assert all(r.levelno == logging.WARNING for r in [*each, *summaries.values()])
    assert not any("SECRET-TEXT" in str(vars(r)) for r in caplog.records)


def _channel_post(i: int, channel: str, ts: float) -> RawMessage:
    """A post `p<i>` saying "gm" in `channel` of source `forum`, on partition 0 at offset i."""
    value = {"id": f"p{i}", "text": "gm", "created_at": ts, "channel": channel, "source": "forum"}
    return RawMessage(json.dumps(value).encode(), "forum-posts", 0, i)


def test_a_flood_of_new_channel_names_folds_past_the_budget_and_counts_every_post(redis_server, caplog):
    """SENTINEL_NEW_SCOPES_PER_HOUR: a bot inventing a channel name per post made a scope per post
    (buckets, roll-ups, ids, a judgement each round, a console row) until session 57. With a budget of
    3, three new names get scopes; the other posts count in `channel: (other)`, and every post in
    `all` and its source; a channel written before keeps counting as itself; the published records
    keep the names; the metric counts each folded post; one log line says it, not one a batch."""
    from stream.windows import OVERFLOW_NAME

    redis.Redis.from_url(redis_server).flushdb()
    folded: dict[str, int] = {}
    published: list[dict] = []

    async def publish(topic, records):
        published.extend(json.loads(value) for _, value in records if topic == "out")

    class Observer:
        def observe_batch(self, outcome):
            pass

        def dead_lettered(self, reason):
            pass

        def scope_folded(self, kind, posts):
            folded[kind] = folded.get(kind, 0) + posts

        def alert(self, record):
            pass

        def sentiment_judged_from(self, at):
            pass

    post = _channel_post

    async def go():
        store = WindowStore.from_url(redis_server)
        proc = BatchProcessor(lambda texts: [judgement_from_probs([0.1, 0.8, 0.1]) for _ in texts], store, publish,
                              sentiment_topic="out", dlq_topic="dlq", model_base="m", model_adapter=None, metrics=Observer(),
                              new_scopes_per_hour=3, clock_jump_posts=1)
        await proc.start()
        await proc.handle([post(0, "general", T - 60)])  # written the hour before the flood (a minute: no clock jump to wait for)
        for start in range(1, 201, 50):
            await proc.handle([post(i, f"flood-{i}", T + i) for i in range(start, start + 50)] + [post(1000 + start, "general", T + start)])
        await proc.handle([post(2000, "flood-1", T + 300)])  # a name admitted earlier this hour: itself
        scopes = await store.scopes()
        counts = {scope: (await store.window(scope, 7200, T + 600)).posts for scope in scopes}
        await store.close()
        proc.say_held()  # the worker stopping: the rest of the count
        return scopes, counts

    with caplog.at_level(logging.INFO, logger="stream.processor"):
        scopes, counts = asyncio.run(go())
    other = f"channel:{OVERFLOW_NAME}"
    assert sorted(scopes) == sorted(["all", "source:forum", "channel:general", "channel:flood-1", "channel:flood-2", "channel:flood-3", other]), scopes
    assert counts["all"] == counts["source:forum"] == 206  # 1 + 4 x 51 + 1: every post
    assert counts[other] == 197 and counts["channel:general"] == 5 and counts["channel:flood-1"] == 2
    assert folded == {"channel": 197}
    assert {r["channel"] for r in published} == {"general", *(f"flood-{i}" for i in range(1, 201))}
    lines = [r for r in caplog.records if r.getMessage() == "new scopes folded into the overflow scope"]
    assert [(r.kind, r.overflow_scope, r.posts, r.per_hour) for r in lines] == [("channel", other, 47, 3), ("channel", other, 150, 3)], lines


def test_a_post_stamped_hours_ahead_does_not_spend_the_scope_budget_of_hours_to_come(redis_server):
    """The scope budget's hour is the worker's event-time frontier's, which a post stamped ahead of
    its partition's clock (SENTINEL_MAX_AHEAD) does not move. Counted from the newest post's own
    time, one post stamped 20 h ahead (a source's clock, or a hostile poster) put the budget in that
    hour for the next 20 hours: every new channel of those hours shared one hour's budget."""
    from stream.windows import OVERFLOW_NAME

    redis.Redis.from_url(redis_server).flushdb()

    async def publish(topic, records):
        pass

    post = _channel_post

    async def go():
        store = WindowStore.from_url(redis_server)
        proc = BatchProcessor(lambda texts: [judgement_from_probs([0.1, 0.8, 0.1]) for _ in texts], store, publish,
                              sentiment_topic="out", dlq_topic="dlq", model_base="m", model_adapter=None,
                              new_scopes_per_hour=2, clock_jump_posts=1)
        await proc.start()
        await proc.handle([post(i, "general", T + i) for i in range(5)])
        outcome = await proc.handle([post(10, "from-the-future", T + 20 * 3600), post(11, "general", T + 60)])
        assert outcome.ahead == 1
        await proc.handle([post(20 + i, f"new-{i}", T + 3600 + i) for i in range(2)])  # the next hour: two new
        scopes = await store.scopes()
        await store.close()
        return scopes

    scopes = asyncio.run(go())
    assert {"channel:new-0", "channel:new-1"} <= set(scopes) and f"channel:{OVERFLOW_NAME}" not in scopes, scopes


def test_a_flood_followed_by_a_quiet_stream_has_its_counts_said_without_another_batch(redis_server, caplog):
    """The counts held back (dead letters past the first 5 of a reason, posts folded since the last
    `new scopes folded` line) were said only by a later batch or at shutdown: a flood followed by a
    quiet stream left them unsaid for as long as the stream stayed quiet. The worker's timer calls
    `say_due`, which says those whose minute has passed, with no batch."""
    from stream.logs import DEAD_LETTERS_HELD, DeadLetterLog

    redis.Redis.from_url(redis_server).flushdb()
    now = [0.0]

    async def publish(topic, records):
        pass

    def post(i: int, channel: str) -> RawMessage:
        value = {"id": f"p{i}", "text": "gm", "created_at": T + i, "channel": channel, "source": "forum"}
        return RawMessage(json.dumps(value).encode(), "forum-posts", 0, i)

    async def go():
        store = WindowStore.from_url(redis_server)
        proc = BatchProcessor(lambda texts: [judgement_from_probs([0.1, 0.8, 0.1]) for _ in texts], store, publish,
                              sentiment_topic="out", dlq_topic="dlq", model_base="m", model_adapter=None,
                              new_scopes_per_hour=1, clock_jump_posts=1)
        proc.letter_log = DeadLetterLog(clock=lambda: now[0])
        await proc.start()
        await proc.handle([post(i, f"flood-{i}") for i in range(10)])  # 9 folded: said at once (the first line)
        now[0] = 10.0
        bad = [RawMessage(json.dumps({"id": f"x{i}"}).encode(), "forum-posts", 1, i) for i in range(20)]
        await proc.handle([*bad, *(post(i, f"flood-{i}") for i in range(10, 20))])  # 15 held back, 10 more folded
        await store.close()
        caplog.clear()
        proc.say_due()  # the quiet stream's timer, before the minute has passed: nothing yet
        assert not [r for r in caplog.records if r.name == "stream.processor"]
        now[0] = 75.0
        proc.say_due()
        proc.say_due()  # said once

    with caplog.at_level(logging.INFO, logger="stream.processor"):
        asyncio.run(go())
    said = [(r.getMessage(), getattr(r, "held_back", None), getattr(r, "posts", None)) for r in caplog.records if r.name == "stream.processor"]
    assert sorted(said, key=str) == sorted([(DEAD_LETTERS_HELD, 15, None), ("new scopes folded into the overflow scope", None, 10)], key=str), said


def test_a_worker_catching_up_behind_another_gets_a_scope_budget_for_each_hour_it_reads(redis_server):
    """The budget's hour is this worker's own partitions' frontier: the watermark a write brings back
    is every worker's, and a worker reading hours behind another (a catch-up) would share that
    far hour's one budget across every hour it reads."""
    from stream.windows import OVERFLOW_NAME

    redis.Redis.from_url(redis_server).flushdb()

    async def publish(topic, records):
        pass

    def post(i: int, channel: str, ts: float, partition: int) -> RawMessage:
        value = {"id": f"p{i}", "text": "gm", "created_at": ts, "channel": channel, "source": "forum"}
        return RawMessage(json.dumps(value).encode(), "forum-posts", partition, i)

    def processor(store):
        return BatchProcessor(lambda texts: [judgement_from_probs([0.1, 0.8, 0.1]) for _ in texts], store, publish,
                              sentiment_topic="out", dlq_topic="dlq", model_base="m", model_adapter=None,
                              new_scopes_per_hour=1, clock_jump_posts=1)

    async def go():
        store = WindowStore.from_url(redis_server)
        ahead, behind = processor(store), processor(store)
        await ahead.start()
        await ahead.handle([post(100 + i, "live", T + 10 * 3600 + i, 1) for i in range(3)])  # another worker, 10 h on
        await behind.start()
        for hour in range(3):  # this one reads partition 0 from 10 h back: a new channel an hour
            await behind.handle([post(hour, f"old-{hour}", T + hour * 3600 + 60, 0)])
        scopes = await store.scopes()
        await store.close()
        return scopes

    scopes = asyncio.run(go())
    assert {"channel:old-0", "channel:old-1", "channel:old-2"} <= set(scopes) and f"channel:{OVERFLOW_NAME}" not in scopes, scopes
