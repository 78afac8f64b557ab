"""What a flood of distinct channel names costs, and what SENTINEL_NEW_SCOPES_PER_HOUR bounds of it.

On a real redis-server (started as the tests start it), `--posts` posts each naming a channel no
other post names (a bot inventing a channel per post), over one hour of event time, beside a calm
stream (a post every tenth: 2 channels, `calm-0` and `calm-10`, and 5 authors), written as the
worker writes them (WindowStore.apply, batches of 500, with incident grouping's pair scopes), through the scope budget as the processor applies it. Then one
detector round over every scope the flood touched (AlertEngine.judge, as the next batch does), the
console's overview (/api/scopes) and the daily report's collection, each timed once.

    .venv/bin/python bench/scope_flood.py --posts 10000,100000 --budget 0,1000 --out docs/results/scope_flood.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

T0 = 1_790_812_800  # 2026-10-01T00:00:00Z


async def case(url: str, flood: int, budget: int) -> dict:
    import redis.asyncio as aioredis

    from stream.console.data import ConsoleData
    from stream.contracts import Post
    from stream.reporting.collect import collect_report
    from stream.settings import Settings
    from stream.store import Scored, WindowStore
    from stream.windows import ScopeBudget, scopes_for
    from stream.worker import alert_config, alert_engine

    client = aioredis.from_url(url, decode_responses=True)
    await client.flushdb(asynchronous=True)  # a synchronous flush of 1.6 M keys outlasts the client timeout
    settings = Settings(partitions=1)
    store = WindowStore(client, pairs=True, author_cap=settings.author_cap)
    engine = alert_engine(settings, store)
    scope_budget = ScopeBudget(budget)
    posts = []
    for i in range(flood):
        t = T0 + 3600 * i / flood
        posts.append(Post(f"f{i}", "gm ser", t, ("BTC",), "forum", f"flood-{i}", f"bot{i}"))
        if i % 10 == 0:
            # i is a multiple of 10 here: 2 channels and 5 authors (the stored results' 10,006 scopes)
            posts.append(Post(f"c{i}", "calm day", t, ("ETH",), "forum", f"calm-{i % 20}", f"u{i % 50}"))
    base = (await client.info("memory"))["used_memory"]
    started, folded, touched_all = time.perf_counter(), 0, {}
    for start in range(0, len(posts), 500):
        chunk = posts[start:start + 500]
        decided = scope_budget.fold(chunk, await store.known_scopes(ScopeBudget.candidates(chunk)))
        folded += decided.posts_folded.get("channel", 0)
        items = [Scored(p, "neutral", 0.0) for p in decided.posts]
        wm = max(p.created_at for p in chunk)
        await store.apply(items, {}, wm, {0: wm}, batch=f"b{start}")
        for p in decided.posts:
            for scope in scopes_for(p):
                touched_all[scope] = max(touched_all.get(scope, 0.0), p.created_at)
    write_s = time.perf_counter() - started
    memory = (await client.info("memory"))["used_memory"] - base
    keys = await client.dbsize()
    scopes = len(await store.scopes())
    mark = time.perf_counter()
    await engine.judge(touched_all)
    judge_s = time.perf_counter() - mark
    console = ConsoleData(store, alert_config(settings))
    mark = time.perf_counter()
    overview = await console.overview(limit=50)
    overview_s = time.perf_counter() - mark
    mark = time.perf_counter()
    report = await collect_report(store, since_s=None, since=None, now=T0 + 7200)
    report_s = time.perf_counter() - mark
    await client.aclose()
    return {"flood_posts": flood, "budget_per_hour": budget, "posts_written": len(posts), "channel_posts_folded": folded,
            "scopes_listed": scopes, "scopes_judged": len(touched_all), "redis_keys": keys, "redis_used_memory_mb": round(memory / 2**20, 1),
            "write_s": round(write_s, 1), "judge_round_s": round(judge_s, 2), "console_overview_s": round(overview_s, 2),
            "console_overview_scopes": overview["scopes"], "report_collect_s": round(report_s, 2),
            "report_scopes": len(report.scopes)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--posts", default="10000")
    parser.add_argument("--budget", default="0,1000")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    from stream.tools.services import start_redis

    results = []
    with tempfile.TemporaryDirectory(prefix="sentinel-bench-flood-") as tmp:
        proc, url = start_redis(Path(tmp))
        try:
            for flood in map(int, args.posts.split(",")):
                for budget in map(int, args.budget.split(",")):
                    results.append(asyncio.run(case(url, flood, budget)))
                    print(json.dumps(results[-1]), file=sys.stderr, flush=True)
        finally:
            proc.stop()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    out = {"command": " ".join([".venv/bin/python", "bench/scope_flood.py", *sys.argv[1:]]), "commit": commit,
           "host": "2-core VM shared with six other sessions' tests", "results": results}
    if args.out:
        args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
