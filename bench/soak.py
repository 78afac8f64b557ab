"""Soak: a million posts through the whole pipeline (real broker, real redis-server, one `sentinel
worker` with the lexicon scorer) over several retentions of event time, sampling the worker's RSS,
Redis `used_memory`, the key count and the throughput as it goes. Memory must level off once the
retention has wrapped, and at the end no key may lack an expiry (docs/contracts.md, "Redis key
layout"): the run exits 1 if one does.

    PYTHONPATH=. .venv/bin/python bench/soak.py --posts 1000000 --out docs/results/soak.json --plot docs/images/soak.png

The posts are generated as they are sent (no file), a few per cent repeated ids and a few bad
messages among them, event times spread evenly over `--event-days`; the producer stays at most
`--ahead` messages ahead of the worker so the broker's log, not the measurement, holds the backlog.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections import Counter, deque
from pathlib import Path
from typing import Any

import psutil
import redis

from sentinel.synthetic import synthetic_post
from stream.settings import Settings
from stream.kafka import ensure_topics, kafka_client_kwargs, worker_topics
from stream.keys import STATS_KEY
from stream.timefmt import parse_duration
from stream.tools.services import free_port, start_redis, start_tansu

WORDS = {"positive": ("pump", "moon", "breakout", "bullish"), "negative": ("dump", "crash", "rekt", "bearish"),
         "neutral": ("update", "thread", "question", "chart")}


def asset_weights(assets: int, skew: float) -> list[float] | None:
    """Zipf weights for the assets (the k-th most talked about in proportion to 1/k^skew), or None
    for a uniform mix. Real chatter is dominated by a few assets: at skew 1 over 20 assets the first
    takes 28% of the posts and the last 1.4%."""
    return None if skew == 0 else [1.0 / (k + 1) ** skew for k in range(assets)]


def post(rng: random.Random, i: int, ts: float, assets: int, channels: int, words: int = 0, weights: list[float] | None = None) -> bytes:
    label = rng.choices(list(WORDS), weights=(0.3, 0.2, 0.5))[0]
    # A uniform mix draws as before, so the stored uniform runs are the same stream.
    asset = f"A{rng.randrange(assets) if weights is None else rng.choices(range(assets), weights)[0]:03d}"
    if words:  # forum-length posts: the two sample posts a bucket keeps cost what real ones would
        text = f"{synthetic_post(rng, label, '$' + asset, words)} {rng.choice(WORDS[label])} {i}"
    else:
        text = f"${asset} {rng.choice(WORDS[label])} {rng.choice(WORDS['neutral'])} {i}"
    return json.dumps({"id": f"s{i}", "text": text, "created_at": round(ts, 3), "assets": [asset],
                       "channel": f"c{rng.randrange(channels):02d}", "source": rng.choice(("forum", "discord"))}).encode()


def consumed(r: redis.Redis) -> int:
    return int(r.hget(STATS_KEY, "consumed") or 0)


async def produce(settings: Settings, r: redis.Redis, args: argparse.Namespace, t0: float, sent: list[int]) -> None:
    from aiokafka import AIOKafkaProducer

    rng = random.Random(args.seed)
    weights = asset_weights(args.assets, args.asset_skew)
    span = args.event_days * 86400.0
    producer = AIOKafkaProducer(**kafka_client_kwargs(settings), linger_ms=20, max_batch_size=256 * 1024)
    await producer.start()
    recent: deque[bytes] = deque(maxlen=500)  # a repeat is a post sent about 500 messages earlier, unchanged
    try:
        for i in range(args.posts):
            ts = t0 + span * i / args.posts
            roll = rng.random()
            if roll < args.bad_share:
                value = b'{"id": "bad-' + str(i).encode() + b'", "text": '  # not JSON: the DLQ
            elif roll < args.bad_share + args.repeat_share and len(recent) == recent.maxlen:
                value = recent[0]
            else:
                value = post(rng, i, ts, args.assets, args.channels, args.words, weights)
                recent.append(value)
            await producer.send(settings.topic_posts, value, key=str(i % 997).encode())
            sent[0] = i + 1
            if i % 2000 == 0:
                while sent[0] - consumed(r) > args.ahead:
                    await asyncio.sleep(0.2)
        await producer.flush()
    finally:
        await producer.stop()


def worker_rss(worker: psutil.Process) -> int:
    """The worker's RSS and its model process's (stream/model_process.py)."""
    return sum(p.memory_info().rss for p in [worker, *worker.children(recursive=True)])


def sample(r: redis.Redis, worker: psutil.Process, started: float, sent: int) -> dict[str, Any]:
    info = r.info("memory")
    stats = r.hgetall(STATS_KEY)
    return {"t": round(time.monotonic() - started, 1), "sent": sent, "consumed": int(stats.get("consumed", 0)),
            "processed": int(stats.get("processed", 0)), "duplicates": int(stats.get("duplicates", 0)), "dlq": int(stats.get("dlq", 0)),
            "watermark": float(stats.get("watermark", 0) or 0), "worker_rss_mb": round(worker_rss(worker) / 2**20, 1),
            "redis_used_mb": round(info["used_memory"] / 2**20, 2), "redis_rss_mb": round(info["used_memory_rss"] / 2**20, 1),
            "keys": r.dbsize()}


def keys_without_expiry(r: redis.Redis) -> dict[str, Any]:
    """Every key with no TTL, and how many keys of each shape there are (scopes folded)."""
    shapes: Counter = Counter()
    none: list[str] = []
    for key in r.scan_iter(count=5000):
        shape = key.split("}", 1)[-1]
        shapes[shape.rsplit(":", 1)[0] if shape.count(":") > 1 else shape] += 1
        if r.ttl(key) == -1:
            none.append(key)
    sizes = {}
    for key in none:
        kind = r.type(key)
        size = {"hash": r.hlen, "zset": r.zcard, "set": r.scard, "stream": r.xlen, "list": r.llen}.get(kind, lambda k: 1)(key)
        sizes[key] = {"type": kind, "entries": size, "bytes": r.memory_usage(key)}
    return {"without_expiry": sizes, "key_shapes": dict(shapes.most_common(20)), "memory_by_shape": memory_by_shape(r)}


def memory_by_shape(r: redis.Redis, per_shape: int = 300) -> dict[str, dict[str, float]]:
    """Where the memory goes: per key shape, its count, the mean MEMORY USAGE of up to `per_shape`
    keys sampled across the keyspace, and the estimated total (count x mean), in MiB."""
    rng = random.Random(0)
    keys: dict[str, list[str]] = {}
    for key in r.scan_iter(count=5000):
        tail = key.split("}", 1)[-1]
        shape = {":b": "bucket", ":h": "hour roll-up", ":d": "day roll-up"}.get(tail.rsplit(":", 1)[0], tail if tail.count(":") == 1 else "other")
        if key.startswith("sentinel:{alerts}:scope:"):
            shape = "alert state per scope"
        elif ":b:" in tail and tail.endswith((":lo", ":hi")):
            shape = "sample text"
        pair = "|" in key.split("}", 1)[0]
        keys.setdefault(f"{shape} (pair scope)" if pair and shape in ("bucket", ":seen", ":idx") else shape, []).append(key)
    out = {}
    for shape, found in sorted(keys.items(), key=lambda kv: -len(kv[1])):
        sample = rng.sample(found, min(per_shape, len(found)))
        mean = sum(r.memory_usage(k) or 0 for k in sample) / len(sample)
        out[shape] = {"keys": len(found), "mean_bytes": round(mean), "total_mib": round(mean * len(found) / 2**20, 1)}
    return out


def plot(samples: list[dict[str, Any]], retention_s: float, t0: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    posts = [s["consumed"] / 1e6 for s in samples]
    fig, axes = plt.subplots(3, 1, figsize=(8, 8), sharex=True)
    axes[0].plot(posts, [s["worker_rss_mb"] for s in samples], label="worker RSS")
    axes[0].set_ylabel("MiB")
    axes[0].legend(loc="lower right")
    axes[1].plot(posts, [s["redis_used_mb"] for s in samples], label="Redis used_memory")
    axes[1].set_ylabel("MiB")
    axes[1].legend(loc="lower right")
    rates = [(b["consumed"] - a["consumed"]) / max(b["t"] - a["t"], 1e-9) for a, b in zip(samples, samples[1:])]
    axes[2].plot(posts[1:], rates, label="posts/s consumed")
    axes[2].set_ylabel("posts/s")
    axes[2].set_xlabel("posts consumed (millions)")
    axes[2].legend(loc="lower right")
    # Where each retention of event time has passed: memory should stop growing after the first.
    for ax in axes:
        for s_prev, s in zip(samples, samples[1:]):
            if int((s["watermark"] - t0) // retention_s) > int((s_prev["watermark"] - t0) // retention_s) and s_prev["watermark"] > 0:
                ax.axvline(s["consumed"] / 1e6, color="grey", linestyle=":", linewidth=0.8)
    axes[0].set_title(f"Soak: memory and throughput over {samples[-1]['consumed']:,} posts (dotted: each retention of event time)", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--posts", type=int, default=1_000_000)
    parser.add_argument("--assets", type=int, default=20)
    parser.add_argument("--asset-skew", type=float, default=0.0, help="Zipf exponent of the asset mix (0: uniform; 1: the first of 20 assets in 28%% of posts)")
    parser.add_argument("--channels", type=int, default=10)
    parser.add_argument("--event-days", type=float, default=6.0, help="event time the posts span")
    parser.add_argument("--retention", default="26h", help="SENTINEL_RETENTION (the sequential detector needs 25 h and a minute)")
    parser.add_argument("--report-retention", default="2d")
    parser.add_argument("--dedupe-window", default="", help="SENTINEL_DEDUPE_WINDOW (empty: the retention)")
    parser.add_argument("--pair-retention", default="12h", help="SENTINEL_PAIR_RETENTION (capped at the retention)")
    parser.add_argument("--words", type=int, default=0, help="0: short posts (about 25 characters); N: forum-like posts of N words")
    parser.add_argument("--bad-share", type=float, default=0.001)
    parser.add_argument("--repeat-share", type=float, default=0.01)
    parser.add_argument("--ahead", type=int, default=20000)
    parser.add_argument("--sample-s", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("out/soak.json"))
    parser.add_argument("--plot", type=Path, default=None)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "redis").mkdir()
        redis_proc, redis_url = start_redis(work / "redis")
        broker_proc, broker = start_tansu(work)
        env = {**os.environ, "KAFKA_BROKER": broker, "REDIS_URL": redis_url, "SENTINEL_BASE": "lexicon", "SENTINEL_RETENTION": args.retention,
               "SENTINEL_REPORT_RETENTION": args.report_retention, "SENTINEL_DEDUPE_WINDOW": args.dedupe_window,
               "SENTINEL_PAIR_RETENTION": args.pair_retention,
               "SENTINEL_MAX_FUTURE": "10m",  # every post is dated in the past; below any --dedupe-window worth trying
               "SENTINEL_APPRISE_URLS": "", "SENTINEL_WEB_PORT": str(free_port()),
               "SENTINEL_LOG_JSON": "false", "SENTINEL_REBALANCE_TIMEOUT": "5", "SENTINEL_SESSION_TIMEOUT": "6",
               "SENTINEL_HEARTBEAT_INTERVAL": "1", "PYTHONUNBUFFERED": "1"}
        os.environ.update({k: v for k, v in env.items() if k.startswith(("KAFKA_", "REDIS_", "SENTINEL_"))})
        settings = Settings()
        r = redis.Redis.from_url(redis_url, decode_responses=True)
        log = (args.out.with_suffix(".worker.log")).open("wb")
        worker = None
        try:
            asyncio.run(ensure_topics(settings, worker_topics(settings)))
            worker = subprocess.Popen([sys.executable, "-m", "sentinel.cli", "worker"], env=env, stdout=log, stderr=subprocess.STDOUT)
            proc = psutil.Process(worker.pid)
            t0 = time.time() - args.event_days * 86400
            sent = [0]
            samples: list[dict[str, Any]] = []
            started = time.monotonic()

            async def run() -> None:
                producing = asyncio.create_task(produce(settings, r, args, t0, sent))
                while True:
                    samples.append(sample(r, proc, started, sent[0]))
                    print(json.dumps(samples[-1]), file=sys.stderr, flush=True)
                    if worker.poll() is not None:
                        raise SystemExit(f"the worker exited with {worker.returncode}")
                    if producing.done():
                        producing.result()
                        if samples[-1]["consumed"] >= sent[0]:
                            break
                    await asyncio.sleep(args.sample_s)

            asyncio.run(run())
            samples.append(sample(r, proc, started, sent[0]))
            expiry = keys_without_expiry(r)
        finally:
            if worker is not None:
                worker.terminate()
                worker.wait(60)
            log.close()
            broker_proc.stop()
            redis_proc.stop()

    result = {"command": " ".join(["bench/soak.py", *sys.argv[1:]]), "posts": args.posts, "assets": args.assets, "asset_skew": args.asset_skew,
              "channels": args.channels, "words": args.words,
              "event_days": args.event_days, "retention": args.retention, "dedupe_window": args.dedupe_window or args.retention,
              "pair_retention": args.pair_retention,
              "samples": samples, **expiry}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    if args.plot:
        plot(samples, parse_duration(args.retention), t0, args.plot)
    print(json.dumps({k: v for k, v in result.items() if k != "samples"}, indent=1))
    if expiry["without_expiry"]:
        raise SystemExit(f"keys without an expiry: {sorted(expiry['without_expiry'])}")


if __name__ == "__main__":
    main()
