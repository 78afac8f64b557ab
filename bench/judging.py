"""What judging costs a worker, without Kafka or a model: the window write and the alert engine
(`WindowStore.apply`, `AlertEngine.judge`, as the worker runs them per batch, incident grouping on)
against one redis-server it starts, in this process, so the worker's own CPU per scope judged is
measured apart from the broker's and Redis's (which bench/scopes.py's end-to-end rate mixes in).

    .venv/bin/python bench/judging.py --cases 3x3,300x100 --batches 300

Posts arrive one second apart in event time (as `bench/gpu_pipeline.py --runs 64x1/300x100` and
bench/scopes.py), so a batch of 64 crosses about one minute boundary and every scope with posts is
judged at it. Per case: the scopes judged per batch, the worker's CPU (process time) and wall time
for judging per batch and per scope judged, Redis's CPU per batch, and the transitions written.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sentinel.bench_store import batches, cpu_seconds
from stream.alerts.engine import AlertEngine
from stream.redis_client import open_redis
from stream.settings import Settings
from stream.store import WindowStore
from stream.tools.services import start_redis
from stream.windows import scopes_for
from stream.worker import alert_engine


async def _run(url: str, work: list, settings: Settings) -> dict[str, float]:
    client = open_redis(url)
    store = WindowStore(client, retention_s=2 * 86400 + 3600)
    engine: AlertEngine = alert_engine(settings, store)
    judged = 0
    real_once = engine._judge_once

    async def counting_once(scopes, *args):
        nonlocal judged
        judged += len(scopes)
        return await real_once(scopes, *args)

    engine._judge_once = counting_once  # type: ignore[method-assign]
    totals = {"judge_cpu_s": 0.0, "judge_wall_s": 0.0, "apply_cpu_s": 0.0, "transitions": 0}
    try:
        for i, rows in enumerate(work):
            newest = max(r.post.created_at for r in rows)
            touched: dict[str, float] = {}
            for item in rows:
                for scope in scopes_for(item.post):
                    touched[scope] = max(touched.get(scope, float("-inf")), item.post.created_at)
            cpu = time.process_time()
            await store.apply(rows, {"consumed": len(rows), "valid": len(rows)}, newest, {0: newest}, batch=f"bench/0:{i}")
            wall, mid = time.perf_counter(), time.process_time()
            totals["transitions"] += len(await engine.judge(touched))
            totals["judge_wall_s"] += time.perf_counter() - wall
            totals["judge_cpu_s"] += time.process_time() - mid
            totals["apply_cpu_s"] += mid - cpu
    finally:
        await store.close()
    return {**totals, "scopes_judged": judged}


def run_case(case: str, batch_count: int, batch_size: int, warmup: int) -> dict:
    assets, channels = (int(x) for x in case.split("x"))
    work = batches(warmup + batch_count, batch_size, assets, channels, posts_per_s=1.0)
    settings = Settings(alert_detector="sequential", alert_grouping="incidents", partitions=1)
    with tempfile.TemporaryDirectory(prefix="sentinel-bench-judging-") as tmp:
        server, url = start_redis(Path(tmp))
        try:
            port = int(url.rsplit(":", 1)[1].split("/")[0])
            asyncio.run(_run(url, work[:warmup], settings))
            before = cpu_seconds([port])[port]
            found = asyncio.run(_run(url, work[warmup:], settings))
            redis_cpu = cpu_seconds([port])[port] - before
        finally:
            server.stop()
    per_batch = found["scopes_judged"] / batch_count
    return {
        "case": f"{assets} assets x {channels} channels", "batches": batch_count, "batch_size": batch_size,
        "scopes_judged_per_batch": round(per_batch, 1),
        "judge_cpu_ms_per_batch": round(found["judge_cpu_s"] / batch_count * 1000, 2),
        "judge_wall_ms_per_batch": round(found["judge_wall_s"] / batch_count * 1000, 2),
        "judge_cpu_us_per_scope": round(found["judge_cpu_s"] / max(found["scopes_judged"], 1) * 1e6, 1),
        "apply_cpu_ms_per_batch": round(found["apply_cpu_s"] / batch_count * 1000, 2),
        "redis_cpu_ms_per_batch": round(redis_cpu / batch_count * 1000, 2),
        "transitions": found["transitions"],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cases", default="3x3,300x100", help="ASSETSxCHANNELS, comma-separated")
    parser.add_argument("--batches", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--warmup", type=int, default=1500, help="batches before measuring: a day of event time "
                        "gives every scope its baseline, so the measured batches judge charts that are running")
    args = parser.parse_args()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True).stdout.strip())
    host = {"commit": commit + ("+changes" if dirty else ""), "python": platform.python_version(), "machine": platform.machine()}
    rows = []
    for case in args.cases.split(","):
        rows.append({**host, **run_case(case, args.batches, args.batch_size, args.warmup)})
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
