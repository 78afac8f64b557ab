"""How fast does the risk console answer, and how does that grow with the number of scopes?

A real redis-server filled through the real store (`WindowStore.apply`: one post per scope per
minute bucket, so every scope has a full day of minute buckets), a real `sentinel console` process,
and timed HTTP requests against it, for several scope counts side by side in one run.

    .venv/bin/python bench/console.py --scopes 50,200,500 --hours 25 --requests 20

Reports per case and page the median and 95th percentile in milliseconds (wall clock on the client,
loopback) and the response size. The overview reads every scope's window and baseline: its cost is
one server-side script call per scope summing that scope's buckets (scopes x buckets of work).

Open pages, side by side for each `--max-age` (SENTINEL_CONSOLE_OVERVIEW_MAX_AGE; 0 reads the rows
for every request, as the console did before they were shared):

    .venv/bin/python bench/console.py --scopes 2000,10000 --every 60 --max-age 0,5 --tabs 8 --seconds 20

With `--tabs N`, N clients load the overview back to back for `--seconds` while a writer adds a post
every 0.5 s (so the data changes as under live traffic, and every open page would refresh), and the
bench reports the requests served, their latency and the CPU seconds per second that Redis and the
console spent. `--every M` writes a scope's post every M minutes (60: one per hour, what the
overview's hourly roll-ups need; it fills 10,000 scopes in about a minute).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import redis

from stream.contracts import Post
from stream.store import Scored, WindowStore
from stream.tools.services import free_port, port_open, start_ready, start_redis

T0 = 1_790_812_800  # 2026-10-01T00:00:00Z
LABELS = (("positive", 0.5), ("negative", -0.5), ("neutral", 0.0))
PAGES = {"overview (HTML)": "/", "overview (JSON)": "/api/overview", "scope page": "/scope/asset:A0000",
         "incidents page": "/incidents", "live poll": "/api/version"}


async def fill(url: str, assets: int, hours: int, every: int = 1) -> int:
    """One post per asset every `every` minutes: `assets` asset scopes plus all, channel:c and source:forum."""
    store = WindowStore.from_url(url, bucket_s=60, retention_s=(hours + 2) * 3600)
    await store.redis.flushdb()
    posts, batch = 0, []
    for minute in range(0, hours * 60, every):
        ts = T0 + minute * 60 + 1
        for a in range(assets):
            label, score = LABELS[(minute + a) % 3]
            batch.append(Scored(Post(f"m{minute}a{a}", f"$A{a:04d} post", ts, (f"A{a:04d}",), source="forum", channel="c"), label, score))
        if len(batch) >= 5000 or minute + every >= hours * 60:
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


def quantiles(latencies: list[float]) -> dict[str, float | None]:
    """Median and 95th percentile in milliseconds."""
    ms = sorted(latencies)
    if not ms:
        return {"median_ms": None, "p95_ms": None}
    return {"median_ms": round(statistics.median(ms), 1), "p95_ms": round(ms[max(int(0.95 * len(ms)) - 1, 0)], 1)}


def time_pages(base: str, requests: int) -> dict[str, dict[str, float]]:
    out = {}
    for name, path in PAGES.items():
        get(base + path)  # warm: template compilation, script load into Redis
        samples = [get(base + path) for _ in range(requests)]
        out[name] = quantiles([s[0] for s in samples]) | {"bytes": samples[-1][1]}
    return out


def cpu_s(pid: int) -> float:
    """User and system CPU seconds of a process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def redis_cpu_s(client: redis.Redis) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def open_pages(base: str, url: str, console_pid: int, tabs: int, seconds: float, hours: int) -> dict[str, float]:
    """`tabs` clients loading the overview back to back while a post arrives every 0.5 s."""
    stop = threading.Event()
    latencies: list[float] = []

    def tab() -> None:
        while not stop.is_set():
            latencies.append(get(base + "/")[0])

    def writer() -> None:
        async def write() -> None:
            store = WindowStore.from_url(url, bucket_s=60, retention_s=(hours + 2) * 3600)
            ts = max(T0 + hours * 3600 - 30.0, await store.watermark())  # after an earlier run's posts
            while not stop.is_set():
                ts += 0.5
                await store.apply([Scored(Post(f"live{ts}", "$A0000 live", ts, ("A0000",), source="forum", channel="c"), "negative", -0.5)],
                                  {}, ts)
                await asyncio.sleep(0.5)
            await store.close()
        asyncio.run(write())

    client = redis.Redis.from_url(url)
    threads = [threading.Thread(target=writer)] + [threading.Thread(target=tab) for _ in range(tabs)]
    redis0, console0, started = redis_cpu_s(client), cpu_s(console_pid), time.perf_counter()
    for t in threads:
        t.start()
    stop.wait(seconds)  # the measuring window
    stop.set()
    for t in threads:
        t.join()
    took = time.perf_counter() - started
    redis1, console1 = redis_cpu_s(client), cpu_s(console_pid)
    client.close()
    return {"tabs": tabs, "seconds": round(took, 1), "requests": len(latencies), "requests_per_s": round(len(latencies) / took, 2),
            **quantiles(latencies),
            "redis_cpu_s_per_s": round((redis1 - redis0) / took, 3), "console_cpu_s_per_s": round((console1 - console0) / took, 3)}


@contextlib.contextmanager
def running_console(url: str, hours: int, max_age: str, log: Path) -> Iterator[tuple[str, int]]:
    """A real `sentinel console` process; yields its base URL and pid."""
    port = free_port()
    env = {**os.environ, "REDIS_URL": url, "SENTINEL_BASE": "lexicon", "SENTINEL_RETENTION": f"{hours + 2}h",
           "SENTINEL_CONSOLE_OVERVIEW_MAX_AGE": max_age}
    console = start_ready("console", [sys.executable, "-m", "sentinel.cli", "console", "--port", str(port)], log,
                          lambda: port_open(port), 60, env)
    try:
        yield f"http://127.0.0.1:{port}", console.proc.pid
    finally:
        console.stop(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scopes", default="50,200,500", help="total scopes per case (assets + all, channel:c, source:forum)")
    parser.add_argument("--hours", type=int, default=25, help="hours of minute buckets per scope (the overview reads 25)")
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--every", type=int, default=1, help="minutes between one scope's posts")
    parser.add_argument("--max-age", default="5", help="SENTINEL_CONSOLE_OVERVIEW_MAX_AGE values to run side by side")
    parser.add_argument("--tabs", type=int, default=0, help="open overview pages to simulate (0: none)")
    parser.add_argument("--seconds", type=float, default=20.0, help="how long the open pages run")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        redis_proc, url = start_redis(Path(tmp))
        try:
            for total in (int(s) for s in args.scopes.split(",")):
                started = time.perf_counter()
                posts = asyncio.run(fill(url, total - 3, args.hours, args.every))
                case = {"scopes": total, "buckets_per_scope": args.hours * 60 // args.every, "posts": posts,
                        "fill_s": round(time.perf_counter() - started, 1), "by_max_age": {}}
                for max_age in args.max_age.split(","):
                    with running_console(url, args.hours, max_age, Path(tmp) / "console.log") as (base, pid):
                        measured: dict = {"pages": time_pages(base, args.requests)}
                        if args.tabs:
                            measured["open_pages"] = open_pages(base, url, pid, args.tabs, args.seconds, args.hours)
                    case["by_max_age"][max_age] = measured
                print(json.dumps(case), flush=True)
                results.append(case)
        finally:
            redis_proc.stop()
    report = {"command": "bench/console.py " + " ".join(sys.argv[1:]), "cases": results}
    if args.out:
        args.out.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
