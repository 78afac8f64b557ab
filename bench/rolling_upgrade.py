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

OUT/summary.json: exit codes, ERROR/CRITICAL and Traceback lines per worker's log, the outbox's
pending and unread entries and its consumers, the told marks left, each webhook's notices; with
--compare BASELINE_OUT, whether the alert records (but `fired_at`) and each webhook's notices (but
their wall-clock `sent` line) are the baseline's. --silence SCOPE: silenced from the start, lifted
once the first worker stopped (a silence lifted mid-incident). --down TAG: that webhook refuses
until the first worker stopped (a firing notice that reached no service). --pause S: after the
first part both workers stay up, quiet, until one's outbox consumer is forgotten (Redis before 7.2);
--linger S: the second stays up until the stopped first's is. --twin: a second `warning=` webhook,
`warning2`, which --down may name (one of two services of a severity refusing: a resolution goes
only to the one a firing notice reached where the told marks are kept per service). Session 49
(docs/results/upgrade_s49.json): 740daaf (git worktree add /tmp/upg-old 740daaf) and main, each
way round, against main twice:

    SENTINEL_ALERT_CRITICAL_Z=5 .venv/bin/python bench/rolling_upgrade.py /tmp/ru/new-new
    SENTINEL_ALERT_CRITICAL_Z=5 .venv/bin/python bench/rolling_upgrade.py /tmp/ru/old-new --first /tmp/upg-old --compare /tmp/ru/new-new

Session 50 (docs/results/upgrade_s50.json, every run's command): feaa884 and main the same way, and
two warning= services, one down until the split:

    SENTINEL_ALERT_CRITICAL_Z=5 .venv/bin/python bench/rolling_upgrade.py /tmp/ru/new-new-twin-down --solo --twin --down warning2
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
from stream.alerts.silences import add_silence, remove_silence  # noqa: E402
from sentinel.run import flush_incidents, open_store, read_alerts, stop_workers, wait_alerts_delivered, wait_processed, worker_env  # noqa: E402
from stream.kafka import ensure_topics, worker_topics  # noqa: E402
from stream.settings import Settings  # noqa: E402
from stream.tools.replay import replay_lines  # noqa: E402
from stream.tools.services import embedded_stack  # noqa: E402


_ERROR = re.compile(r'"level": "(ERROR|CRITICAL)"|^\S+ (ERROR|CRITICAL) ')


def _text(value: object) -> object:
    return value.decode() if isinstance(value, bytes) else value


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
        if args.down:
            hooks[args.down].failing = True
        held = await add_silence(store.redis, args.silence, 7200, None, "upgrade drill") if args.silence else None
        since_ms = int(time.time() * 1000)
        before = await store.stats()
        sent = (await replay_lines(settings, parts[0], settings.topic_posts, None, None, repartition=True)).sent
        await wait_processed(settings, store, before, sent, list(procs.values()), 600)
        await wait_alerts_delivered(store, list(procs.values()), 600)
        paused = await _pause(store, args.pause, list(procs.values())) if args.pause else None
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
            stopped_at = time.monotonic()
            killed.set()
            sent = (await replay).sent
            await asyncio.to_thread(join, "second", args.second)
        else:
            if args.solo:
                join("second", args.second)
            procs["first"].send_signal(signal.SIGTERM)
            print("first exited", procs["first"].wait(60), flush=True)
            stopped_at = time.monotonic()
            if held is not None:
                print("silence lifted", await remove_silence(store.redis, held.id), flush=True)
            if args.down:
                hooks[args.down].failing = False
                print(f"{args.down} webhook back, refused {hooks[args.down].refused} while down", flush=True)
            mid = await store.stats()
            sent = (await replay_lines(settings, parts[1], settings.topic_posts, None, None, repartition=True)).sent
        await wait_processed(settings, store, mid, sent, [procs["second"]], 600)
        await flush_incidents(settings, store, ended=True)
        await wait_alerts_delivered(store, [procs["second"]], 600)
        forgotten = await _wait_forgotten(store, args.linger, procs["second"]) if args.linger else None
        stop_workers([procs["second"]])
        print("second exited", procs["second"].returncode, flush=True)
        alerts = await read_alerts(settings, since_ms)
        after = await store.stats()
        pending = (await store.redis.xpending(OUTBOX_KEY, OUTBOX_GROUP))["pending"]
        group = next((g for g in await store.redis.xinfo_groups(OUTBOX_KEY) if _text(g["name"]) == OUTBOX_GROUP), {})
        consumers = await _consumers(store)
        last_id = _text((await store.redis.xinfo_stream(OUTBOX_KEY))["last-generated-id"])
        told_left = [_text(k) async for k in store.redis.scan_iter(match="sentinel:{alerts}:told:*")]
        await store.close()
    (out / "alerts.jsonl").write_text("".join(json.dumps(a) + "\n" for a in alerts))
    (out / "hooks.json").write_text(json.dumps({tag: hook.accepted for tag, hook in hooks.items()}, indent=1))
    logs = {n: (out / f"worker-{n}.log").read_text(errors="replace") for n in procs}
    tracebacks = sum(text.count("Traceback") for text in logs.values())
    errors = {n: [line for line in text.splitlines() if _ERROR.search(line)] for n, text in logs.items()}
    counts = {k: after.get(k, 0) - before.get(k, 0) for k in ("consumed", "processed", "dlq")}
    print("alert records", len(alerts), "tracebacks", tracebacks, "outbox pending", pending, counts)
    print("error lines", {n: len(found) for n, found in errors.items()}, *[f"  {n}: {line[:300]}" for n, found in errors.items() for line in found], sep="\n")
    print("outbox group", {k: _text(v) for k, v in group.items()}, "last id", last_id, "consumers", consumers, "told marks left", told_left, flush=True)
    summary = {"exit": {n: p.returncode for n, p in procs.items()}, "alert_records": len(alerts), "tracebacks": tracebacks,
               "error_lines": {n: len(found) for n, found in errors.items()}, "outbox_pending": pending,
               "outbox_unread": _text(group.get("last-delivered-id")) != last_id, "outbox_consumers": consumers, "told_marks_left": told_left, **counts,
               "hooks": {tag: {"accepted": len(hook.accepted), "distinct": len({json.dumps(p, sort_keys=True) for p in hook.accepted}),
                               "titles": [p.get("title") for p in hook.accepted]} for tag, hook in hooks.items()}}
    for tag, hook in hooks.items():
        print(f"{tag} hook:", *[f"  {p.get('title')} (severity key: {p.get('severity')})" for p in hook.accepted], sep="\n")
        twice = {k: n for k, n in Counter(json.dumps(p, sort_keys=True) for p in hook.accepted).items() if n > 1}
        print(f"{tag} hook: {len(hook.accepted)} accepted, {len(hook.accepted) - sum(n - 1 for n in twice.values())} distinct,",
              "accepted more than once:", *[f"  x{n} {json.loads(k).get('title')}" for k, n in twice.items()] or ["  none"], sep="\n")
    if paused is not None:
        summary["pause"] = paused
    if forgotten is not None:
        summary["first_consumer_forgotten_after_s"] = round(forgotten - stopped_at, 1) if forgotten else None
    if args.compare:
        summary["compared_to"] = compare(args.compare, out)
        print("against", args.compare, summary["compared_to"], flush=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=1))


async def _consumers(store) -> list[dict[str, object]]:
    return [{k: _text(v) for k, v in c.items()} for c in await store.redis.xinfo_consumers(OUTBOX_KEY, OUTBOX_GROUP)]


async def _pause(store, pause: float, procs: list[subprocess.Popen]) -> dict[str, object]:
    """Both workers up and nothing replayed for up to `pause` s, until the group lost a consumer (on
    Redis before 7.2 a quiet live worker's is idle, and another worker forgets it): the consumers
    before and after, and how long it took."""
    before = await _consumers(store)
    start = time.monotonic()
    after = before
    while time.monotonic() - start < pause and all(p.poll() is None for p in procs):
        await asyncio.sleep(5)
        after = await _consumers(store)
        if len(after) < len(before):
            break
    return {"consumers_before": before, "consumers_after": after, "waited_s": round(time.monotonic() - start, 1)}


async def _wait_forgotten(store, linger: float, second: subprocess.Popen) -> float:
    """When the outbox group is down to one consumer (the other workers' forgotten by the one left,
    `delivery.FORGET_CONSUMER_IDLE_S`), polled every 5 s for up to `linger` s; 0.0 if not by then."""
    deadline = time.monotonic() + linger
    while time.monotonic() < deadline and second.poll() is None:
        if len(await store.redis.xinfo_consumers(OUTBOX_KEY, OUTBOX_GROUP)) <= 1:
            return time.monotonic()
        await asyncio.sleep(5)
    return 0.0


def _record(line: str) -> str:
    return json.dumps({k: v for k, v in json.loads(line).items() if k != "fired_at"}, sort_keys=True)


def _notice(payload: dict) -> str:
    # the wall-clock "sent ..." line differs from run to run; the rest is the notice
    text = "\n".join(line for line in str(payload.get("message", "")).splitlines() if not line.startswith("sent "))
    return json.dumps({**payload, "message": text}, sort_keys=True)


def _per_alert(notices: list[str]) -> dict[str, list[str]]:
    # a title ends with its incident's or alert's short id: "[36ae68f0]"
    found: dict[str, list[str]] = {}
    for notice in notices:
        found.setdefault(str(json.loads(notice).get("title", "")).rsplit("[", 1)[-1], []).append(notice)
    return found


def _same(ours: list[str], theirs: list[str]) -> str:
    if ours == theirs:
        return "same, in the same order"
    if _per_alert(ours) == _per_alert(theirs):  # ungrouped, alerts on other partitions interleave by timing
        return "same, in the same order per incident or alert"
    return "different"


def compare(baseline: Path, out: Path) -> dict[str, object]:
    """Whether OUT's alert records (but `fired_at`) and each webhook's notices (but their wall-clock
    line) are the baseline run's."""
    ours, theirs = ((d / "alerts.jsonl").read_text().splitlines() for d in (out, baseline))
    hooks, base_hooks = (json.loads((d / "hooks.json").read_text()) for d in (out, baseline))
    return {"alert_records_identical_but_fired_at": sorted(map(_record, ours)) == sorted(map(_record, theirs)),
            "notices_but_sent_line": {tag: _same([_notice(p) for p in hooks[tag]], [_notice(p) for p in base_hooks.get(tag, [])])
                                      for tag in hooks}}

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--first", type=Path, default=ROOT, help="checkout of the worker stopped at the split")
    parser.add_argument("--second", type=Path, default=ROOT, help="checkout of the worker that goes on")
    parser.add_argument("--split", type=int, default=2560, help="posts replayed before the first worker stops (2560: 12:30 event time)")
    parser.add_argument("--solo", action="store_true", help="the first worker alone until the split")
    parser.add_argument("--kill", action="store_true", help="SIGKILL the first worker mid-send after the split (needs --solo)")
    parser.add_argument("--silence", metavar="SCOPE", help="silence SCOPE (all kinds) from the start and lift it once the first worker stopped")
    parser.add_argument("--down", choices=("warning", "critical", "warning2"), help="that webhook refuses (500) until the first worker stopped (warning2: with --twin)")
    parser.add_argument("--twin", action="store_true", help="a second warning= webhook, warning2")
    parser.add_argument("--linger", type=float, default=0.0, help="keep the second worker up to this many seconds after the run, until the first's outbox consumer is forgotten")
    parser.add_argument("--pause", type=float, default=0.0, help="after the first part, both workers up, wait up to this many seconds until one's outbox consumer is forgotten")
    parser.add_argument("--compare", type=Path, help="a baseline run's OUT: say whether the records and notices match it")
    parser.add_argument("--stream", type=Path, default=ROOT / "examples" / "demo-stream.jsonl")
    args = parser.parse_args()
    if args.kill and not args.solo:
        parser.error("--kill needs --solo: the first worker alone must be the one sending when it is killed")
    if args.kill and (args.silence or args.down):
        parser.error("--silence and --down end after a SIGTERM: not with --kill")
    if args.down == "warning2" and not args.twin:
        parser.error("--down warning2 needs --twin")
    args.first, args.second = args.first.resolve(), args.second.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    hooks = {"warning": Hook(), "critical": Hook(), **({"warning2": Hook()} if args.twin else {})}
    # a hook's name is its Apprise tag, but warning2's: a second warning= service
    os.environ.update(SENTINEL_BASE="lexicon", SENTINEL_PARTITIONS="4", SENTINEL_NOTIFY_CHART="false",
                      SENTINEL_APPRISE_URLS=" ".join(f"{name.rstrip('2')}={hook.url}" for name, hook in hooks.items()))
    try:
        asyncio.run(run(args, hooks))
    finally:
        for hook in hooks.values():
            hook.close()


if __name__ == "__main__":
    main()
