"""A classifier switch mid-stream, run for real: one embedded Tansu broker and redis-server, a
`sentinel worker` with the --first environment through the stream's lines up to --split, then a
worker with the --second environment (joined before the first is SIGTERMed, as a rolling update
does) through the rest, on the same Redis, so the second model is judged against windows and
baselines the first one built. Writes OUT/alerts.jsonl (for `sentinel compare-alerts` against the
same command with the same environment both sides, the run with no switch), OUT/summary.json and
the workers' logs.

    # session 56 (docs/results/model_switch_s56.json): the demo's first two event-days (line 981 is
    # the last post of 2026-03-02), the keyword scorer, then the shipped classifier; and the keyword
    # scorer throughout, the run with no switch
    head -n 1944 examples/demo-stream.jsonl > /tmp/ms/days12.jsonl
    .venv/bin/python bench/model_switch.py /tmp/ms/d12-lexicon-smollm2 --stream /tmp/ms/days12.jsonl --first SENTINEL_BASE=lexicon --second SENTINEL_BASE=smollm2
    .venv/bin/python bench/model_switch.py /tmp/ms/d12-lexicon-lexicon --stream /tmp/ms/days12.jsonl --first SENTINEL_BASE=lexicon --second SENTINEL_BASE=lexicon
    .venv/bin/sentinel compare-alerts /tmp/ms/d12-lexicon-lexicon/alerts.jsonl /tmp/ms/d12-lexicon-smollm2/alerts.jsonl --json

    # the same with a webhook, to 12:00 of the switch day, without and with the runbook's silences
    head -n 1487 examples/demo-stream.jsonl > /tmp/ms/to-d2noon.jsonl
    .venv/bin/python bench/model_switch.py /tmp/ms/n-plain --stream /tmp/ms/to-d2noon.jsonl --first SENTINEL_BASE=lexicon --second SENTINEL_BASE=smollm2 --webhook
    .venv/bin/python bench/model_switch.py /tmp/ms/n-silenced --stream /tmp/ms/to-d2noon.jsonl --first SENTINEL_BASE=lexicon --second SENTINEL_BASE=smollm2 --webhook --runbook-silences

    # session 57 (docs/results/model_switch_s57.json): the same commands with the model epochs, and
    # the switch at the start of the ETH sell-off's day (a volume spike inside the warm-up)
    head -n 2689 examples/demo-stream.jsonl > /tmp/ms57/d3-to-14h.jsonl
    .venv/bin/python bench/model_switch.py /tmp/ms57/d3-lexicon-smollm2 --stream /tmp/ms57/d3-to-14h.jsonl --split 1944 --first SENTINEL_BASE=lexicon --second SENTINEL_BASE=smollm2

--runbook-silences runs the `sentinel silence` loop of docs/operations.md ("Roll out a new adapter")
as written, before the second worker joins. OUT/summary.json also counts each model's labels, read from `post-sentiment` (every record names its model).
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
import time
from collections import Counter
from pathlib import Path

from pydantic import SecretStr

from sentinel.run import flush_incidents, open_store, read_alerts, stop_workers, wait_alerts_delivered, wait_processed, worker_env
from stream.kafka import ensure_topics, worker_topics
from stream.settings import Settings
from stream.tools.replay import consume_records, replay_lines
from stream.tools.services import embedded_stack

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from workers import Hook  # noqa: E402


def _env(pairs: list[str]) -> dict[str, str]:
    return dict(pair.split("=", 1) for pair in pairs)


def start(name: str, settings: Settings, extra: dict[str, str], out: Path) -> subprocess.Popen:
    env = worker_env(settings, True) | {"PYTHONPATH": str(ROOT)} | extra
    log = (out / f"worker-{name}.log").open("ab")
    return subprocess.Popen([sys.executable, "-m", "sentinel.cli", "worker"], cwd=ROOT, env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)


def wait_log(out: Path, name: str, text: str, n: int = 1, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while (out / f"worker-{name}.log").read_text(errors="replace").count(text) < n:
        if time.monotonic() > deadline:
            raise SystemExit(f"{name}: no {text!r} x{n} within {timeout}s")
        time.sleep(0.3)


def holds(log_text: str) -> set[int]:
    """The partitions a worker's log says it holds now: its last `partitions assigned` line's."""
    found = re.findall(r'partitions assigned .*?partitions="\[([0-9, ]*)\]"', log_text)
    return {int(p) for p in found[-1].split(",") if p.strip()} if found else set()


def wait_holds_all(out: Path, name: str, partitions: int, timeout: float = 300) -> None:
    """Until the worker holds every partition. The second part is replayed only then: a partition
    handed over while the new worker is busy classifying (a rebalance took 4 min on a loaded
    2-core machine) was caught up at its last write, so after SENTINEL_ALERT_IDLE_PARTITION (60 s)
    it stops holding judgement back and the switch is judged from the other partitions' posts alone
    (docs/alerts.md, "A partition caught up and silent"): a different input, not the switch."""
    deadline = time.monotonic() + timeout
    while holds((out / f"worker-{name}.log").read_text(errors="replace")) != set(range(partitions)):
        if time.monotonic() > deadline:
            raise SystemExit(f"{name}: does not hold all {partitions} partitions within {timeout}s")
        time.sleep(0.3)


async def _labels(settings: Settings) -> dict[str, dict[str, int]]:
    """Each model's label counts, from `post-sentiment` (every record names its model)."""
    counts: dict[str, Counter] = {}
    async for rec in consume_records(settings, settings.topic_sentiment):
        if "value" in rec:
            value = json.loads(rec["value"])
            model = value.get("model", {})
            counts.setdefault(f"{model.get('base')}+{model.get('adapter')}", Counter())[value.get("label")] += 1
    return {model: dict(c) for model, c in counts.items()}


def runbook_silences(settings: Settings, out: Path) -> None:
    """Run the silence loop of docs/operations.md ("Roll out a new adapter") as written, against this stack."""
    text = (ROOT / "docs" / "operations.md").read_text()
    section = text[text.index("## Roll out a new adapter"):]
    loop = re.search(r"```sh\n\s*(for scope in .+?)```", section, re.S)
    if loop is None:
        raise SystemExit("docs/operations.md: no silence loop in Roll out a new adapter")
    env = worker_env(settings, True) | {"PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    done = subprocess.run(["bash", "-euc", loop.group(1)], cwd=ROOT, env=env, capture_output=True, text=True)
    (out / "silences.log").write_text(done.stdout + done.stderr)
    if done.returncode:
        raise SystemExit(f"the runbook's silence loop failed: {done.stderr[-500:]}")


async def run(args: argparse.Namespace) -> dict[str, object]:
    out: Path = args.out
    lines = args.stream.read_text().splitlines(keepends=True)
    parts = [out / "part1.jsonl", out / "part2.jsonl"]
    parts[0].write_text("".join(lines[:args.split]))
    parts[1].write_text("".join(lines[args.split:]))
    with embedded_stack() as stack:
        settings = Settings(kafka_broker=stack.kafka_broker, redis_url=SecretStr(stack.redis_url))
        await ensure_topics(settings, worker_topics(settings))
        store = open_store(settings)
        since_ms = int(time.time() * 1000)
        # A run that fails part way stops its workers too: the stack they would write to is going.
        procs: list[subprocess.Popen] = []
        try:
            first = start("first", settings, _env(args.first), out)
            procs.append(first)
            wait_log(out, "first", "partitions assigned")
            before = await store.stats()
            sent = (await replay_lines(settings, parts[0], settings.topic_posts, None, None, repartition=True)).sent
            await wait_processed(settings, store, before, sent, [first], 1200)
            await wait_alerts_delivered(store, [first], 600)
            if args.runbook_silences:
                runbook_silences(settings, out)
            second = start("second", settings, _env(args.second), out)
            procs.append(second)
            wait_log(out, "second", "partitions assigned")
            wait_log(out, "first", "partitions assigned", 2)
            first.send_signal(signal.SIGTERM)
            print("first exited", first.wait(60), flush=True)
            wait_holds_all(out, "second", settings.partitions)
            mid = await store.stats()
            sent = (await replay_lines(settings, parts[1], settings.topic_posts, None, None, repartition=True)).sent
            await wait_processed(settings, store, mid, sent, [second], 1200)
            await flush_incidents(settings, store, ended=True)
            await wait_alerts_delivered(store, [second], 600)
            stop_workers([second])
            alerts = await read_alerts(settings, since_ms)
            labels = await _labels(settings)
        finally:
            stop_workers(procs)
        await store.close()
    (out / "alerts.jsonl").write_text("".join(json.dumps(a) + "\n" for a in alerts))
    firing = [a for a in alerts if a["state"] == "firing"]
    return {"first": args.first, "second": args.second, "split_line": args.split,
            "first_post_after_split": json.loads(lines[args.split])["created_at"],
            "labels_per_model": labels,
            "notices": None if args.hook is None else [p.get("title") for p in args.hook.accepted],
            "runbook_silences": args.runbook_silences,
            "exit": {"first": first.returncode, "second": second.returncode}, "alert_records": len(alerts),
            "models": dict(Counter(json.dumps(a.get("model")) for a in alerts)) if any("model" in a for a in alerts) else None,
            "firing_by_kind": dict(Counter(a["kind"] for a in firing)),
            "incidents": sorted({a.get("incident_id") for a in alerts if a.get("incident_id")}),
            "roots": dict(Counter(a.get("root_scope") for a in firing))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--stream", type=Path, default=ROOT / "examples" / "demo-stream.jsonl")
    parser.add_argument("--split", type=int, default=981, help="lines replayed to the first worker")
    parser.add_argument("--first", nargs="*", default=[], metavar="KEY=VALUE", help="the first worker's environment")
    parser.add_argument("--second", nargs="*", default=[], metavar="KEY=VALUE", help="the second worker's environment")
    parser.add_argument("--webhook", action="store_true", help="both workers notify a json:// webhook (all severities); the summary lists its notices")
    parser.add_argument("--runbook-silences", action="store_true", help="before the second worker joins, run docs/operations.md's rollout silence loop")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for key in ("KAFKA_BROKER", "REDIS_URL", "SENTINEL_KAFKA_BROKER", "SENTINEL_REDIS_URL", "SENTINEL_APPRISE_URLS", "SENTINEL_APPRISE_CONFIG"):
        os.environ.pop(key, None)
    args.hook = Hook() if args.webhook else None
    if args.hook is not None:
        os.environ.update(SENTINEL_APPRISE_URLS=f"{args.hook.url}", SENTINEL_NOTIFY_CHART="false")
    try:
        summary = asyncio.run(run(args))
    finally:
        if args.hook is not None:
            args.hook.close()
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
