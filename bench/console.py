"""How fast does the risk console answer, and how does that grow with the number of scopes?

A real redis-server filled through the real store (`WindowStore.apply`: one post per scope per
minute bucket, so every scope has a full day of minute buckets), a real `sentinel console` process,
and timed HTTP requests against it, for several scope counts side by side in one run.

    .venv/bin/python bench/console.py --scopes 50,200,500 --hours 25 --requests 20

Reports per case and page the median and 95th percentile in milliseconds (wall clock on the client,
loopback) and the response size. The overview reads every scope's window and baseline: its cost is
one server-side script call per scope summing that scope's buckets (scopes x buckets of work).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from stream.contracts import Post
from stream.store import Scored, WindowStore
from stream.tools.services import free_port, start_redis

T0 = 1_790_812_800  # 2026-10-01T00:00:00Z
LABELS = (("positive", 0.5), ("negative", -0.5), ("neutral", 0.0))
PAGES = {"overview (HTML)": "/", "overview (JSON)": "/api/overview", "scope page": "/scope/asset:A0000",
         "incidents page": "/incidents", "live poll": "/api/version"}


async def fill(url: str, assets: int, hours: int) -> int:
    """One post per asset per minute: `assets` asset scopes plus all, channel:c and source:forum."""
    store = WindowStore.from_url(url, bucket_s=60, retention_s=(hours + 2) * 3600)
    await store.redis.flushdb()
    posts, batch = 0, []
    for minute in range(hours * 60):
        ts = T0 + minute * 60 + 1
        for a in range(assets):
            label, score = LABELS[(minute + a) % 3]
            batch.append(Scored(Post(f"m{minute}a{a}", f"$A{a:04d} post", ts, (f"A{a:04d}",), source="forum", channel="c"), label, score))
        if len(batch) >= 5000 or minute == hours * 60 - 1:
            await store.apply(batch, {}, batch[-1].post.created_at)
            posts += len(batch)
            batch = []
    await store.close()
    return posts


def get(url: str) -> tuple[float, int]:
    start = time.perf_counter()
    with urllib.request.urlopen(url, timeout=60) as resp:
        body = resp.read()
        assert resp.status == 200
    return (time.perf_counter() - start) * 1000, len(body)


def time_pages(base: str, requests: int) -> dict[str, dict[str, float]]:
    out = {}
    for name, path in PAGES.items():
        get(base + path)  # warm: template compilation, script load into Redis
        samples = [get(base + path) for _ in range(requests)]
        ms = sorted(s[0] for s in samples)
        out[name] = {"median_ms": round(statistics.median(ms), 1), "p95_ms": round(ms[max(int(0.95 * len(ms)) - 1, 0)], 1),
                     "bytes": samples[-1][1]}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scopes", default="50,200,500", help="total scopes per case (assets + all, channel:c, source:forum)")
    parser.add_argument("--hours", type=int, default=25, help="hours of minute buckets per scope (the overview reads 25)")
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        redis_proc, url = start_redis(Path(tmp))
        try:
            for total in (int(s) for s in args.scopes.split(",")):
                started = time.perf_counter()
                posts = asyncio.run(fill(url, total - 3, args.hours))
                fill_s = time.perf_counter() - started
                port = free_port()
                env = {**os.environ, "REDIS_URL": url, "SENTINEL_BASE": "lexicon", "SENTINEL_RETENTION": f"{args.hours + 2}h"}
                console = subprocess.Popen([sys.executable, "-m", "sentinel.cli", "console", "--port", str(port)], env=env,
                                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                try:
                    base = f"http://127.0.0.1:{port}"
                    deadline = time.monotonic() + 60
                    while True:
                        try:
                            get(base + "/healthz")
                            break
                        except OSError:
                            if time.monotonic() > deadline or console.poll() is not None:
                                raise SystemExit("the console did not start")
                            time.sleep(0.2)
                    pages = time_pages(base, args.requests)
                finally:
                    console.terminate()
                    console.wait(30)
                case = {"scopes": total, "buckets_per_scope": args.hours * 60, "posts": posts, "fill_s": round(fill_s, 1), "pages": pages}
                print(json.dumps(case), flush=True)
                results.append(case)
        finally:
            redis_proc.stop()
    report = {"command": "bench/console.py " + " ".join(sys.argv[1:]), "cases": results}
    if args.out:
        args.out.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
