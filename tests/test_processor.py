"""The batch processor's failure handling, with a real redis-server and a stand-in classifier."""

from __future__ import annotations

import asyncio
import json

import redis

from model.classifier import judgement_from_probs
from stream.processor import BatchProcessor, RawMessage
from stream.store import WindowStore


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


def test_a_poison_post_is_split_out_to_the_dlq_and_the_rest_is_processed(redis_server):
    redis.Redis.from_url(redis_server).flushdb()
    published: list[tuple[str, dict]] = []

    async def publish(topic, key, value):
        published.append((topic, json.loads(value)))

    async def go():
        store = WindowStore.from_url(redis_server)
        classify = OomOnPoison()
        proc = BatchProcessor(classify, store, publish, sentiment_topic="out", dlq_topic="dlq", model_base="m", model_adapter=None)
        await proc.start()
        msgs = [message(i, "fine post") for i in range(8)]
        msgs[5] = message(5, "POISON post")
        outcome = await proc.handle(msgs)
        stats = await store.stats()
        await store.close()
        return outcome, stats, classify.calls

    outcome, stats, calls = asyncio.run(go())
    dead = [rec for topic, rec in published if topic == "dlq"]
    assert [(d["reason"], d["post_id"], d["source_offset"]) for d in dead] == [("classification_failed", "p5", 5)]
    assert "CUDA out of memory" in dead[0]["message"]
    assert sorted(rec["id"] for topic, rec in published if topic == "out") == [f"p{i}" for i in range(8) if i != 5]
    assert outcome.processed == 7 and outcome.dlq == 1 and stats["processed"] == 7 and stats["dlq"] == 1
    assert calls[0] == 8 and 1 in calls  # split down to the single poison post, not retried forever
