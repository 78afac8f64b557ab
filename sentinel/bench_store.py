"""`sentinel bench store`: what a batch costs Redis, side by side in one run, on servers it starts
itself: one redis-server, a 6-node Redis Cluster (3 masters, 3 replicas), and that cluster with
WAIT for one replica per master (SENTINEL_REDIS_WAIT_REPLICAS=1).

Per target: the window write of a batch (WindowStore.apply, which is what the worker runs per
batch before judging) and the client's CPU for it (its arguments' packing and the replies), the
WAIT after it, the Redis commands per batch on each master (INFO
commandstats), Redis's own CPU per batch on its busiest node, and memory per post.
Alert judging is not in it: its cost per touched scope is measured by bench/scopes.py.
"""

from __future__ import annotations

import asyncio
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import redis

from stream.contracts import Post
from stream.redis_client import ReplicaWait, open_redis
from stream.store import Scored, WindowStore
from stream.tools.services import start_redis, start_redis_cluster

T0 = 1_767_225_600  # 2026-01-01T00:00:00Z
LABELS = ("positive", "negative", "neutral")


def batches(count: int, size: int, assets: int, channels: int, posts_per_s: float, seed: int = 0, authors: int = 10_000) -> list[list[Scored]]:
    """Posts spread over `assets` x `channels` by `authors` writers, arriving at `posts_per_s` of event time.
    Each text is its own and long enough for the text cap (windows.TEXT_CAP_MIN_CHARS): every post
    takes a place in a text's list, the cap's most memory."""
    rng = random.Random(seed)
    out, n = [], 0
    for _ in range(count):
        rows = []
        for _ in range(size):
            asset, channel = f"A{rng.randrange(assets)}", f"c{rng.randrange(channels)}"
            post = Post(id=f"b{n}", text=f"${asset} bench post number {n}", created_at=T0 + n / posts_per_s, source="forum",
                        channel=channel, assets=(asset,), author=f"u{rng.randrange(authors)}")
            rows.append(Scored(post, rng.choice(LABELS), rng.uniform(-1, 1)))
            n += 1
        out.append(rows)
    return out


def command_calls(ports: list[int]) -> dict[int, tuple[int, int]]:
    """(commands, scripts) served so far per node: INFO commandstats counts the commands a script
    runs as well as the script itself."""
    calls = {}
    for port in ports:
        stats = redis.Redis(host="127.0.0.1", port=port).info("commandstats")
        scripts = sum(int(v["calls"]) for k, v in stats.items() if k in ("cmdstat_evalsha", "cmdstat_eval"))
        calls[port] = (sum(int(v["calls"]) for v in stats.values()), scripts)
    return calls


def cpu_seconds(ports: list[int]) -> dict[int, float]:
    """redis-server CPU time so far per node (user + system)."""
    out = {}
    for port in ports:
        info = redis.Redis(host="127.0.0.1", port=port).info("cpu")
        out[port] = float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
    return out


def used_memory(ports: list[int]) -> int:
    return sum(int(redis.Redis(host="127.0.0.1", port=port).info("memory")["used_memory"]) for port in ports)


async def _run(url: str, cluster: bool, wait: int, work: list[list[Scored]], retention_s: int, pairs: bool,
               author_cap: int, text_cap: int = 0) -> dict[str, list[float]]:
    client = open_redis(url, cluster=cluster)
    store = WindowStore(client, retention_s=retention_s, replica_wait=ReplicaWait(client, wait, 1000) if wait else None, pairs=pairs,
                        author_cap=author_cap, text_cap=text_cap)
    apply_s, apply_cpu_s, wait_s = [], [], []
    try:
        for i, rows in enumerate(work):
            newest = max(r.post.created_at for r in rows)
            mark, cpu = time.perf_counter(), time.process_time()
            await store.apply(rows, {"consumed": len(rows), "valid": len(rows)}, newest, {0: newest}, batch=f"bench/0:{i}")
            apply_s.append(time.perf_counter() - mark)
            apply_cpu_s.append(time.process_time() - cpu)
            mark = time.perf_counter()
            await store.replicated()
            wait_s.append(time.perf_counter() - mark)
    finally:
        await store.close()
    return {"apply": apply_s, "apply_cpu": apply_cpu_s, "wait": wait_s}


def _summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {"median_ms": round(statistics.median(ordered) * 1000, 3), "p95_ms": round(ordered[int(0.95 * (len(ordered) - 1))] * 1000, 3)}


def bench_store(batch_count: int = 300, batch_size: int = 64, assets: int = 3, channels: int = 3, posts_per_s: float = 100.0,
                warmup: int = 20, pairs: bool = False, author_cap: int = 3, authors: int = 10_000, text_cap: int = 0) -> dict[str, Any]:
    """`pairs`: also write the hidden pair scopes, as a worker with incident grouping (the default) does.
    The targets write without the caps; `one_server_author_cap` is one server with the author cap
    (SENTINEL_AUTHOR_CAP=`author_cap`; 0 leaves it out), posts by `authors` writers, and
    `one_server_both_caps` one server with it and the text cap (SENTINEL_TEXT_CAP=`text_cap`; 0
    leaves it out)."""
    work = batches(batch_count + warmup, batch_size, assets, channels, posts_per_s, authors=authors)
    scopes = 1 + 1 + assets + channels  # all, source, assets, channels
    retention_s = 2 * 86400
    results: dict[str, Any] = {"batches": batch_count, "batch_size": batch_size, "scopes": scopes,
                               "pair_scopes": assets * channels + assets if pairs else 0,
                               "posts_per_s_event_time": posts_per_s}
    with tempfile.TemporaryDirectory(prefix="sentinel-bench-store-") as tmp:
        (Path(tmp) / "single").mkdir()
        single, single_url = start_redis(Path(tmp) / "single")
        try:
            cluster = start_redis_cluster(Path(tmp) / "cluster")
        except BaseException:  # a stop (Ctrl-C, SIGTERM) as the cluster starts: the one server too
            single.stop()
            raise
        try:
            single_port = int(single_url.rsplit(":", 1)[1].split("/")[0])
            masters = [port for port in cluster.nodes if redis.Redis(host="127.0.0.1", port=port).info("replication")["role"] == "master"]
            targets = [("one_server", single_url, False, 0, [single_port], 0, 0), ("cluster", cluster.url, True, 0, masters, 0, 0),
                       ("cluster_wait_1", cluster.url, True, 1, masters, 0, 0)]
            if author_cap:
                targets.append(("one_server_author_cap", single_url, False, 0, [single_port], author_cap, 0))
            if text_cap:
                targets.append(("one_server_both_caps", single_url, False, 0, [single_port], author_cap, text_cap))
            for name, url, is_cluster, wait, ports, cap, tcap in targets:
                for port in ports:
                    redis.Redis(host="127.0.0.1", port=port).flushall()
                asyncio.run(_run(url, is_cluster, wait, work[:warmup], retention_s, pairs, cap, tcap))
                before, memory_before, cpu_before = command_calls(ports), used_memory(ports), cpu_seconds(ports)
                timings = asyncio.run(_run(url, is_cluster, wait, work[warmup:], retention_s, pairs, cap, tcap))
                after, cpu_after = command_calls(ports), cpu_seconds(ports)
                busiest_cpu = max(cpu_after[p] - cpu_before[p] for p in ports) / batch_count
                per_node = {str(p): round((after[p][0] - before[p][0]) / batch_count, 1) for p in ports}
                grown = used_memory(ports) - memory_before
                results[name] = {
                    "apply": _summary(timings["apply"]),
                    # This process's CPU for a write: on a GPU worker its event loop is the limit.
                    "apply_client_cpu_ms_per_batch": round(statistics.fmean(timings["apply_cpu"]) * 1000, 3),
                    "wait": _summary(timings["wait"]),
                    "commands_per_batch": round(sum(after[p][0] - before[p][0] for p in ports) / batch_count, 1),
                    "scripts_per_batch": round(sum(after[p][1] - before[p][1] for p in ports) / batch_count, 1),
                    "commands_per_batch_by_node": per_node,
                    "busiest_node_share": round(max(per_node.values()) / max(1e-9, sum(per_node.values())), 3),
                    # Redis's own CPU per batch on its busiest node: that node saturates one core at
                    # batch_size / this posts a second, whatever the clients do.
                    "redis_cpu_ms_per_batch_busiest_node": round(busiest_cpu * 1000, 3),
                    "posts_per_s_at_one_busy_core": round(batch_size / busiest_cpu) if busiest_cpu else None,
                    # Mostly the dedupe ids (one per post and scope, kept for the retention).
                    "memory_bytes_per_post": round(grown / (batch_count * batch_size)),
                }
        finally:
            cluster.stop()
            single.stop()
    base = results["one_server"]["apply"]["median_ms"]
    results["ratios"] = {
        "cluster_apply_vs_one_server": round(results["cluster"]["apply"]["median_ms"] / base, 2),
        "wait_vs_apply_on_cluster": round(results["cluster_wait_1"]["wait"]["median_ms"] / results["cluster_wait_1"]["apply"]["median_ms"], 2),
    }
    if author_cap:
        capped = results["one_server_author_cap"]
        results["author_cap"], results["authors"] = author_cap, authors
        results["ratios"]["author_cap_apply_vs_one_server"] = round(capped["apply"]["median_ms"] / base, 2)
        results["ratios"]["author_cap_redis_cpu_vs_one_server"] = round(
            capped["redis_cpu_ms_per_batch_busiest_node"] / max(1e-9, results["one_server"]["redis_cpu_ms_per_batch_busiest_node"]), 2)
        results["ratios"]["author_cap_memory_vs_one_server"] = round(
            capped["memory_bytes_per_post"] / max(1, results["one_server"]["memory_bytes_per_post"]), 2)
    if text_cap:
        both, alone = results["one_server_both_caps"], results["one_server"]
        results["text_cap"] = text_cap
        results["ratios"]["both_caps_apply_vs_one_server"] = round(both["apply"]["median_ms"] / base, 2)
        results["ratios"]["both_caps_commands_vs_one_server"] = round(both["commands_per_batch"] / max(1e-9, alone["commands_per_batch"]), 2)
        results["ratios"]["both_caps_redis_cpu_vs_one_server"] = round(
            both["redis_cpu_ms_per_batch_busiest_node"] / max(1e-9, alone["redis_cpu_ms_per_batch_busiest_node"]), 2)
        results["ratios"]["both_caps_memory_vs_one_server"] = round(both["memory_bytes_per_post"] / max(1, alone["memory_bytes_per_post"]), 2)
    return results
