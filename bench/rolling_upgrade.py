"""A rolling upgrade, run for real: two `sentinel worker`s from two checkouts in one consumer group on
a 4-partition topic, one embedded Tansu broker and redis-server, `warning=` and `critical=` json://
webhooks; the demo stream replayed to line --split, the --first worker SIGTERMed, the rest replayed,
incidents flushed and delivered. Writes OUT/alerts.jsonl (for `sentinel compare-alerts`, a run with
the same tree twice as baseline), OUT/hooks.json (what each webhook accepted) and the workers' logs;
prints each exit code, the notices per webhook and the consumed/dead-lettered counts.

    # session 47: a5f1fca (git worktree add /tmp/old a5f1fca) told, then main; lexicon scores, and a
    # critical z the demo's ETH drop reaches after 12:30 so a resolution follows warning and critical
    SENTINEL_ALERT_CRITICAL_Z=5 .venv/bin/python bench/rolling_upgrade.py /tmp/ru/old-new --first /tmp/old --solo
    SENTINEL_ALERT_GROUPING=none ...   # ungrouped
    ... --first /tmp/old --solo --kill   # the old one SIGKILLed mid-send; --second /tmp/old: the new one

--solo: the first worker alone through the split (the second joins just before it stops), so the
older worker's stored state is the one the newer worker takes over; without it both judge from the
start. --kill (with --solo): instead the first worker is SIGKILLed when the first notification
after the split reaches a webhook, which holds its answer until then (so the kill lands mid-send);
the second joins, takes over the partitions and, after SENTINEL_NOTIFY_CLAIM_IDLE, the pending
outbox entries (sent again: at-least-once). Also prints the notifications each webhook accepted
more than once with the same payload (a resend by the other version renders its text differently)
and what the outbox group holds pending at the end. Both run with this checkout's virtual
environment and their own tree on PYTHONPATH (the dependencies must match).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from pydantic import SecretStr  # noqa: E402
from workers import Hook  # noqa: E402

from stream.alerts.delivery import OUTBOX_GROUP, OUTBOX_KEY  # noqa: E402
from sentinel.run import flush_incidents, open_store, read_alerts, stop_workers, wait_alerts_delivered, wait_processed, worker_env  # noqa: E402
from stream.kafka import ensure_topics, worker_topics  # noqa: E402
from stream.settings import Settings  # noqa: E402
from stream.tools.replay import replay_lines  # noqa: E402
from stream.tools.services import embedded_stack  # noqa: E402


def start(tree: Path, name: str, settings: Settings, out: Path) -> subprocess.Popen:
    env = worker_env(settings, True) | {"PYTHONPATH": str(tree)}
    found = subprocess.run([sys.executable, "-c", "import stream; print(stream.__file__)"], cwd=tree, env=env,
                           capture_output=True, text=True, check=True).stdout.strip()
    if not found.startswith(f"{tree}/"):
        raise SystemExit(f"{name}: imports {found}, not {tree}")
    log = (out / f"worker-{name}.log").open("ab")
    return subprocess.Popen([sys.executable, "-m", "sentinel.cli", "worker"], cwd=tree, env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)


def wait_log(out: Path, name: str, pattern: str, n: int = 1, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while len(re.findall(pattern, (out / f"worker-{name}.log").read_text(errors="replace"))) < n:
        if time.monotonic() > deadline:
            raise SystemExit(f"{name}: no {pattern!r} x{n} within {timeout}s")
        time.sleep(0.3)


async def run(args: argparse.Namespace, hooks: dict[str, Hook]) -> None:
    out: Path = args.out
    lines = args.stream.read_text().splitlines(keepends=True)
    parts = [out / "part1.jsonl", out / "part2.jsonl"]
    parts[0].write_text("".join(lines[:args.split]))
    parts[1].write_text("".join(lines[args.split:]))
    with embedded_stack() as stack:
        settings = Settings(kafka_broker=stack.kafka_broker, redis_url=SecretStr(stack.redis_url))
        await ensure_topics(settings, worker_topics(settings))
        store = open_store(settings)
        procs: dict[str, subprocess.Popen] = {}

        def join(name: str, tree: Path) -> None:
            procs[name] = start(tree, name, settings, out)
            wait_log(out, name, "partitions assigned")
            if name == "second" and procs["first"].poll() is None:
                wait_log(out, "first", "partitions assigned", 2)

        join("first", args.first)
        if not args.solo:
            join("second", args.second)
        since_ms = int(time.time() * 1000)
        before = await store.stats()
        sent = (await replay_lines(settings, parts[0], settings.topic_posts, None, None, repartition=True)).sent
        await wait_processed(settings, store, before, sent, list(procs.values()), 600)
        await wait_alerts_delivered(store, list(procs.values()), 600)
        if args.kill:
            mid = await store.stats()
            arrived, killed = threading.Event(), threading.Event()
            for hook in hooks.values():  # the answer waits until the sender is dead
                hook.on_accept = lambda: (arrived.set(), killed.wait(300))
            replay = asyncio.create_task(replay_lines(settings, parts[1], settings.topic_posts, None, None, repartition=True))
            if not await asyncio.to_thread(arrived.wait, 600):
                raise SystemExit("no notification after the split within 600 s")
            os.killpg(procs["first"].pid, signal.SIGKILL)
            print("first killed mid-send, exited", procs["first"].wait(60), flush=True)
            killed.set()
            sent = (await replay).sent
            await asyncio.to_thread(join, "second", args.second)
        else:
            if args.solo:
                join("second", args.second)
            procs["first"].send_signal(signal.SIGTERM)
            print("first exited", procs["first"].wait(60), flush=True)
            mid = await store.stats()
            sent = (await replay_lines(settings, parts[1], settings.topic_posts, None, None, repartition=True)).sent
        await wait_processed(settings, store, mid, sent, [procs["second"]], 600)
        await flush_incidents(settings, store, ended=True)
        await wait_alerts_delivered(store, [procs["second"]], 600)
        stop_workers([procs["second"]])
        print("second exited", procs["second"].returncode, flush=True)
        alerts = await read_alerts(settings, since_ms)
        after = await store.stats()
        pending = (await store.redis.xpending(OUTBOX_KEY, OUTBOX_GROUP))["pending"]
        await store.close()
    (out / "alerts.jsonl").write_text("".join(json.dumps(a) + "\n" for a in alerts))
    (out / "hooks.json").write_text(json.dumps({tag: hook.accepted for tag, hook in hooks.items()}, indent=1))
    tracebacks = sum((out / f"worker-{n}.log").read_text(errors="replace").count("Traceback") for n in procs)
    print("alert records", len(alerts), "tracebacks", tracebacks, "outbox pending", pending,
          {k: after.get(k, 0) - before.get(k, 0) for k in ("consumed", "processed", "dlq")})
    for tag, hook in hooks.items():
        print(f"{tag} hook:", *[f"  {p.get('title')} (severity key: {p.get('severity')})" for p in hook.accepted], sep="\n")
        twice = {k: n for k, n in Counter(json.dumps(p, sort_keys=True) for p in hook.accepted).items() if n > 1}
        print(f"{tag} hook: {len(hook.accepted)} accepted, {len(hook.accepted) - sum(n - 1 for n in twice.values())} distinct,",
              "accepted more than once:", *[f"  x{n} {json.loads(k).get('title')}" for k, n in twice.items()] or ["  none"], sep="\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--first", type=Path, default=ROOT, help="checkout of the worker stopped at the split")
    parser.add_argument("--second", type=Path, default=ROOT, help="checkout of the worker that goes on")
    parser.add_argument("--split", type=int, default=2560, help="posts replayed before the first worker stops (2560: 12:30 event time)")
    parser.add_argument("--solo", action="store_true", help="the first worker alone until the split")
    parser.add_argument("--kill", action="store_true", help="SIGKILL the first worker mid-send after the split (needs --solo)")
    parser.add_argument("--stream", type=Path, default=ROOT / "examples" / "demo-stream.jsonl")
    args = parser.parse_args()
    if args.kill and not args.solo:
        parser.error("--kill needs --solo: the first worker alone must be the one sending when it is killed")
    args.first, args.second = args.first.resolve(), args.second.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    hooks = {"warning": Hook(), "critical": Hook()}
    os.environ.update(SENTINEL_BASE="lexicon", SENTINEL_PARTITIONS="4", SENTINEL_NOTIFY_CHART="false",
                      SENTINEL_APPRISE_URLS=" ".join(f"{tag}={hook.url}" for tag, hook in hooks.items()))
    try:
        asyncio.run(run(args, hooks))
    finally:
        for hook in hooks.values():
            hook.close()


if __name__ == "__main__":
    main()
