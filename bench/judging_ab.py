"""Judging's cost in two checkouts, measured in lockstep: bench/judging.py's work (the window write and
`AlertEngine.judge` against a redis-server of its own) in one process per checkout, each taking its
turn a batch at a time (the order alternating), so both meet the same load on a shared machine.
Whole runs back to back, as bench/judging.py can only be run, moved by 20-30% between runs on a
busy two-core machine: more than a change to judging is worth.

    git worktree add /tmp/before <commit>
    .venv/bin/python bench/judging_ab.py /tmp/before . --cases 300x100 --batches 100

Per case and checkout: the judging CPU per scope judged (all batches; and the median over batches
of each batch's CPU per scope), Redis's CPU per batch, the transitions written; and the median of
the per-batch ratios B/A (each ratio from two batches judged one right after the other). The
checkouts must have the same bench/judging.py `_run` contract (WindowStore.apply, AlertEngine.judge).
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
from pathlib import Path


def _child(case: str, batch_count: int, batch_size: int, warmup: int) -> None:
    """One checkout's side (run with PYTHONPATH set to it): warm up, then one batch per line read."""
    from sentinel.bench_store import batches, cpu_seconds
    from stream.redis_client import open_redis
    from stream.settings import Settings
    from stream.store import WindowStore
    from stream.tools.services import start_redis
    from stream.windows import scopes_for
    from stream.worker import alert_engine

    import stream

    assets, channels = (int(x) for x in case.split("x"))
    work = batches(warmup + batch_count, batch_size, assets, channels, posts_per_s=1.0)
    settings = Settings(alert_detector="sequential", alert_grouping="incidents", partitions=1)

    async def run(url: str, port: int) -> None:
        store = WindowStore(open_redis(url), retention_s=2 * 86400 + 3600)
        engine = alert_engine(settings, store)
        judged = 0
        real_once = engine._judge_once

        async def counting_once(scopes, *args):  # type: ignore[no-untyped-def]
            nonlocal judged
            judged += len(scopes)
            return await real_once(scopes, *args)

        engine._judge_once = counting_once  # type: ignore[method-assign]
        try:
            for i, rows in enumerate(work):
                if i == warmup:
                    print(json.dumps({"ready": True, "stream": stream.__file__}), flush=True)
                if i >= warmup and not sys.stdin.readline():
                    return
                newest = max(r.post.created_at for r in rows)
                touched: dict[str, float] = {}
                for item in rows:
                    for scope in scopes_for(item.post):
                        touched[scope] = max(touched.get(scope, float("-inf")), item.post.created_at)
                redis_before = cpu_seconds([port])[port] if i >= warmup else 0.0
                await store.apply(rows, {"consumed": len(rows), "valid": len(rows)}, newest, {0: newest}, batch=f"bench/0:{i}")
                judged, cpu = 0, time.process_time()
                transitions = len(await engine.judge(touched))
                cpu = time.process_time() - cpu
                if i >= warmup:
                    redis_cpu = cpu_seconds([port])[port] - redis_before
                    print(json.dumps({"cpu_s": cpu, "scopes": judged, "transitions": transitions, "redis_cpu_s": redis_cpu}), flush=True)
        finally:
            await store.close()

    with tempfile.TemporaryDirectory(prefix="sentinel-bench-judging-ab-") as tmp:
        server, url = start_redis(Path(tmp))
        try:
            asyncio.run(run(url, int(url.rsplit(":", 1)[1].split("/")[0])))
        finally:
            server.stop()


def _commit(tree: str) -> str:
    head = subprocess.run(["git", "-C", tree, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", tree, "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True).stdout.strip()
    return head + ("+changes" if dirty else "")


def run_case(trees: dict[str, str], case: str, batch_count: int, batch_size: int, warmup: int) -> dict:
    procs = {}
    for side, tree in trees.items():
        env = {**os.environ, "PYTHONPATH": str(Path(tree).resolve())}  # its code, not the editable install's
        procs[side] = subprocess.Popen([sys.executable, __file__, "--child", case, str(batch_count), str(batch_size), str(warmup)],
                                       cwd=tree, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    imported = {side: json.loads(p.stdout.readline())["stream"] for side, p in procs.items()}  # both warm (in parallel)
    rows: dict[str, list[dict]] = {side: [] for side in trees}
    sides = list(trees)
    for i in range(batch_count):
        for side in (sides if i % 2 == 0 else sides[::-1]):
            procs[side].stdin.write("go\n")
            procs[side].stdin.flush()
            rows[side].append(json.loads(procs[side].stdout.readline()))
    for p in procs.values():
        p.stdin.close()
        p.wait()
    out: dict = {"case": case, "batches": batch_count, "batch_size": batch_size, "warmup": warmup}
    for side, tree in trees.items():
        got = rows[side]
        cpu, scopes = sum(r["cpu_s"] for r in got), sum(r["scopes"] for r in got)
        out[side] = {
            "tree": str(Path(tree).resolve()), "commit": _commit(tree), "stream": imported[side],
            "scopes_judged_per_batch": round(scopes / batch_count, 1),
            "judge_cpu_ms_per_batch": round(cpu / batch_count * 1000, 2),
            "judge_cpu_us_per_scope": round(cpu / max(scopes, 1) * 1e6, 1),
            "judge_cpu_us_per_scope_median_batch": round(statistics.median(r["cpu_s"] / r["scopes"] * 1e6 for r in got if r["scopes"]), 1),
            "redis_cpu_ms_per_batch": round(sum(r["redis_cpu_s"] for r in got) / batch_count * 1000, 2),
            "transitions": sum(r["transitions"] for r in got),
        }
    a, b = sides
    ratios = [rb["cpu_s"] / ra["cpu_s"] for ra, rb in zip(rows[a], rows[b]) if ra["cpu_s"] > 0 and ra["scopes"] == rb["scopes"]]
    out[f"median_ratio_{b}_over_{a}"] = round(statistics.median(ratios), 3) if ratios else None
    return out


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        case, batch_count, batch_size, warmup = sys.argv[2], *(int(x) for x in sys.argv[3:6])
        _child(case, batch_count, batch_size, warmup)
        return
    parser = argparse.ArgumentParser()
    parser.add_argument("a", help="checkout A (e.g. a git worktree of the commit before)")
    parser.add_argument("b", help="checkout B")
    parser.add_argument("--cases", default="3x3,300x100", help="ASSETSxCHANNELS, comma-separated")
    parser.add_argument("--batches", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--warmup", type=int, default=1500, help="batches before measuring (as bench/judging.py)")
    args = parser.parse_args()
    results = []
    for case in args.cases.split(","):
        results.append(run_case({"A": args.a, "B": args.b}, case, args.batches, args.batch_size, args.warmup))
        print(json.dumps(results[-1]), file=sys.stderr, flush=True)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
