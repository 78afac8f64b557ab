"""The scale-out and failover path, run as an operator would: Tansu on S3 storage (moto's server), a
6-node Redis Cluster (3 masters, 3 replicas, SENTINEL_REDIS_WAIT_REPLICAS=1), a json:// webhook and
`sentinel worker`s in one consumer group on a 4-partition topic, the demo stream replayed with the
lexicon scorer. `--baseline`: one worker, no fault. Otherwise: one worker, two more join at
--join (1 -> 3), one of them SIGKILLed at --kill, the Redis master holding `{all}` SIGKILLed at
--failover (its replica promoted, then the old master restarted as a replica), all fractions of the
stream counted; the rest of the stream is put on the broker at once and the broker SIGKILLed and
started again on its bucket while the workers read it. Then incidents are flushed as ended and
delivered. Writes OUT/alerts.jsonl (for `sentinel compare-alerts`), OUT/hooks.json, OUT/report.json
(counters, each worker's /readyz and the metrics the runbook names) and every process's log.

    .venv/bin/python bench/scale_out.py /tmp/scale/base --baseline
    .venv/bin/python bench/scale_out.py /tmp/scale/faults
    .venv/bin/sentinel compare-alerts /tmp/scale/base/alerts.jsonl /tmp/scale/faults/alerts.jsonl
    SENTINEL_SESSION_TIMEOUT=30 SENTINEL_REBALANCE_TIMEOUT=30 SENTINEL_HEARTBEAT_INTERVAL=3 ... --speed 1500  # the ConfigMap's
    ... --no-rejoin   # the killed Redis master stays down: batches commit on its promoted replica alone
    ... --kill-mid-send   # instead of the worker and broker kills: the sender of the first notification, mid-send
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import threading
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from pydantic import SecretStr  # noqa: E402
from workers import Hook, Worker  # noqa: E402

from sentinel.run import committed_lag, flush_incidents, open_store, read_alerts, wait_alerts_delivered, worker_env  # noqa: E402
from stream.alerts.delivery import OUTBOX_GROUP, OUTBOX_KEY  # noqa: E402
from stream.kafka import ensure_topics, worker_topics  # noqa: E402
from stream.settings import Settings  # noqa: E402
from stream.tools.replay import replay_lines  # noqa: E402
from stream.tools.services import cluster_healthy, replication_info, start_redis_cluster, start_s3, start_tansu  # noqa: E402

METRICS = ("sentinel_consumer_lag", "sentinel_posts_dead_lettered_total", "sentinel_posts_late_dropped_total",
           "sentinel_redis_replica_wait_short_total", "sentinel_dependency_up", "sentinel_dependency_outages_total",
           "sentinel_dependency_down_seconds_total", "sentinel_alert_deliveries_total", "sentinel_notify_service_sends_total")


def log(*args: object) -> None:
    print(f"[{time.strftime('%H:%M:%S')}]", *args, flush=True)


async def wait(cond, timeout: float, what: str) -> float:
    start = time.monotonic()
    while not await cond():
        if time.monotonic() - start > timeout:
            raise SystemExit(f"timed out after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(0.2)
    return time.monotonic() - start


def scrape(worker: Worker) -> dict[str, object]:
    samples = worker.metrics()
    picked = {f"{name}{dict(sorted(labels))}": value for (name, labels), value in samples.items()
              if name in METRICS and value}
    picked.update({f"{name}{dict(sorted(labels))}": value for (name, labels), value in samples.items()
                   if name == "sentinel_consumer_lag"})
    return picked


async def run(args: argparse.Namespace, hook: Hook) -> None:
    out: Path = args.out
    lines = args.stream.read_text().splitlines(keepends=True)
    cut = int(len(lines) * args.paced)
    parts = [out / "paced.jsonl", out / "burst.jsonl"]
    parts[0].write_text("".join(lines[:cut]))
    parts[1].write_text("".join(lines[cut:]))
    s3_proc, s3 = start_s3(out)
    broker_proc, broker = start_tansu(out, s3=s3)
    port = int(broker.rsplit(":", 1)[1])
    cluster = start_redis_cluster(out / "redis-cluster")
    workers: list[Worker] = []
    events: dict[str, object] = {}
    try:
        settings = Settings(kafka_broker=broker, redis_url=SecretStr(cluster.url), redis_cluster=True)
        await ensure_topics(settings, worker_topics(settings))
        store = open_store(settings)
        env = worker_env(settings, True)

        def start(name: str) -> Worker:
            worker = Worker(env, out / f"worker-{name}.log")
            workers.append(worker)
            return worker

        async def assigned(*ws: Worker) -> bool:
            mine = [await asyncio.to_thread(w.partitions) for w in ws]
            return sorted(p for ps in mine for p in ps) == [0, 1, 2, 3] and all(mine)

        async def counted() -> int:
            try:
                return int((await store.stats()).get("consumed", 0))
            except Exception:  # a failover in progress
                return -1

        first = start("1")
        events["first_assigned_s"] = await wait(lambda: assigned(first), 180, "the first worker's partitions")
        since_ms = int(time.time() * 1000)
        n = len(lines)
        replay = asyncio.create_task(replay_lines(settings, parts[0], settings.topic_posts, args.speed, repartition=True))
        arrived, answer = threading.Event(), threading.Event()
        if args.kill_mid_send:  # the first notification's answer waits until its sender is dead
            hook.on_accept = lambda: (arrived.set(), answer.wait(300)) if not answer.is_set() else None
        if not args.baseline:
            await wait(lambda: _ge(counted, args.join * n), 600, "the join point")
            log("join at", await counted())
            second, third = start("2"), start("3")
            t0 = time.monotonic()
            await wait(lambda: assigned(first, second, third), 180, "three workers holding the partitions")
            events["join_all_assigned_s"] = round(time.monotonic() - t0, 1)
        if not args.baseline and not args.kill_mid_send:
            await wait(lambda: _ge(counted, args.kill * n), 600, "the kill point")
            events["killed_at"] = await counted()
            events["killed_partitions"] = sorted(second.partitions())
            second.kill()
            log("worker 2 SIGKILLed at", events["killed_at"], "holding", events["killed_partitions"])
            t0 = time.monotonic()
            await wait(lambda: assigned(first, third), 180, "the survivors holding every partition")
            events["takeover_assigned_s"] = round(time.monotonic() - t0, 1)
            await wait(lambda: _ge(counted, args.failover * n), 600, "the failover point")
            slot_port = _master_of_all(cluster)
            await wait(lambda: _true(cluster_healthy(list(cluster.nodes), 3)), 60, "every replica link up")
            events["failover_at"] = await counted()
            os.killpg(cluster.nodes[slot_port].proc.pid, signal.SIGKILL)
            cluster.nodes[slot_port].stop()
            log("redis master", slot_port, "SIGKILLed at", events["failover_at"])
            t0 = time.monotonic()
            alive = [p for p in cluster.nodes if p != slot_port]
            await wait(lambda: _true(sum(replication_info(p).get("role") == "master" for p in alive) == 3), 60, "a replica promoted")
            events["promoted_s"] = round(time.monotonic() - t0, 1)
            if args.no_rejoin:  # the old master's node is gone for good: the promoted one has no replica
                del cluster.nodes[slot_port]
            else:
                cluster.start_node(slot_port)
                await wait(lambda: _true(cluster_healthy(list(cluster.nodes), 3)), 90, "the old master back as a replica")
                events["cluster_whole_s"] = round(time.monotonic() - t0, 1)
        if args.kill_mid_send:
            events.update(await kill_the_sender(store, workers, arrived, answer))
        sent = (await replay).sent
        if cut < len(lines):
            sent += (await replay_lines(settings, parts[1], settings.topic_posts, None, repartition=True)).sent
        if not args.baseline and not args.kill_mid_send:
            events["broker_killed_at"] = await counted()
            os.killpg(broker_proc.proc.pid, signal.SIGKILL)
            broker_proc.stop()
            log("broker SIGKILLed at", events["broker_killed_at"])
            t0 = time.monotonic()
            live = [w for w in workers if w.alive()]
            await wait(lambda: _true(all((w.readyz() or {}).get("status") != "ready" for w in live)), 60, "the workers unready")
            events["unready_after_s"] = round(time.monotonic() - t0, 1)
            events["readyz_broker_down"] = {w.log_path.name: w.readyz() for w in live}
            await asyncio.sleep(max(0.0, 5 - (time.monotonic() - t0)))
            broker_proc, _ = start_tansu(out, port, s3=s3)
            t0 = time.monotonic()
            at = await counted()
            await wait(lambda: _gt(counted, at) if at < n else _true(True), 120, "a batch after the broker restart")
            events["resumed_after_restart_s"] = round(time.monotonic() - t0, 1)
        live = [w for w in workers if w.alive()]
        await wait(lambda: _ge(counted, sent), 600, "every post consumed")
        await wait(lambda: _eq0(committed_lag(settings)), 300, "the group's committed offsets at the end")
        await flush_incidents(settings, store, ended=True)
        await wait_alerts_delivered(store, [w.proc for w in live], 600)
        await wait(lambda: _true(all(sum(v for k, v in scrape(w).items() if k.startswith("sentinel_consumer_lag")) == 0 for w in live)),
                   60, "sentinel_consumer_lag 0 on every worker")
        alerts = await read_alerts(settings, since_ms)
        stats = await store.stats()
        pending = (await store.redis.xpending(OUTBOX_KEY, OUTBOX_GROUP))["pending"]
        report = {
            "events": events, "sent": sent,
            "stats": {k: stats.get(k, 0) for k in ("consumed", "processed", "duplicates", "dlq", "late_dropped", "ahead")},
            "alert_records": len(alerts), "outbox_pending": pending,
            "workers": {w.log_path.name: {"alive": w.alive(), "readyz": w.readyz(), "metrics": scrape(w)} for w in workers},
        }
        await store.close()
        for w in live:
            w.proc.send_signal(signal.SIGTERM)
        report["exits"] = {w.log_path.name: w.proc.wait(60) for w in workers}
    finally:
        for w in workers:
            w.close()
        broker_proc.stop()
        cluster.stop()
        s3_proc.stop()
    report["quiet_stretches"] = quiet_stretches([w.log_path for w in workers])
    report["replicas_short_lines"] = {w.log_path.name: w.log_path.read_text(errors="replace").count("redis replicas short") for w in workers}
    report["tracebacks"] = {w.log_path.name: w.log_path.read_text(errors="replace").count("Traceback") for w in workers}
    counts = Counter(json.dumps(p, sort_keys=True) for p in hook.accepted)
    report["notices"] = {"accepted": len(hook.accepted), "distinct": len(counts),
                         "twice": [json.loads(k).get("title") for k, c in counts.items() if c > 1]}
    (out / "alerts.jsonl").write_text("".join(json.dumps(a) + "\n" for a in alerts))
    (out / "hooks.json").write_text(json.dumps(hook.accepted, indent=1))
    (out / "report.json").write_text(json.dumps(report, indent=1, default=str))
    print(json.dumps(report, indent=1, default=str))


async def kill_the_sender(store, workers: list[Worker], arrived: threading.Event, answer: threading.Event) -> dict[str, object]:
    """SIGKILL the worker whose notification the hook is holding (the outbox entry pending with its
    consumer name, host-pid), then let the hook answer: the survivors claim the entry after
    SENTINEL_NOTIFY_CLAIM_IDLE and send it again."""
    if not await asyncio.to_thread(arrived.wait, 600):
        raise SystemExit("no notification within 600 s")
    pending = await store.redis.xpending_range(OUTBOX_KEY, OUTBOX_GROUP, min="-", max="+", count=100)
    # The held notification is the incident's first entry, so the earliest pending: another
    # worker's later entries of it wait, pending with that worker, behind it (`_held_back`), and
    # the first worker holding any entry (the rule until session 50) was not always its sender.
    first = pending[0]["consumer"]
    owner = int(str(first.decode() if isinstance(first, bytes) else first).rsplit("-", 1)[1])
    sender = next(w for w in workers if w.proc.pid == owner and w.alive())
    killed_at = time.time()
    sender.kill()
    answer.set()
    log("the sender", sender.log_path.name, "SIGKILLed mid-send, holding", len(pending), "outbox entries")
    return {"sender_killed": sender.log_path.name, "sender_pending": len(pending), "sender_killed_wall": killed_at}


def quiet_stretches(logs: list[Path], top: int = 4) -> list[tuple[float, str]]:
    """The longest stretches with no batch written by any worker (seconds, and the wall time they
    began), from the workers' `batch done` lines: to the log's 1 s resolution."""
    from datetime import datetime

    stamps = sorted(datetime.fromisoformat(line[:19]).timestamp() for path in logs
                    for line in path.read_text(errors="replace").splitlines() if "batch done" in line)
    return sorted((b - a, datetime.fromtimestamp(a).strftime("%H:%M:%S")) for a, b in zip(stamps, stamps[1:]))[-top:][::-1]


async def _ge(counted, target: float) -> bool:
    return await counted() >= target


async def _gt(counted, target: float) -> bool:
    return await counted() > target


async def _true(value: bool) -> bool:
    return value


async def _eq0(lag) -> bool:
    return (await lag) == 0


def _master_of_all(cluster) -> int:
    """The port of the master serving the `{all}` slot (every batch writes there)."""
    import redis

    any_port = next(iter(cluster.nodes))
    client = redis.Redis(host="127.0.0.1", port=any_port, decode_responses=True)
    slot = client.cluster("keyslot", "sentinel:{all}:stats")
    for port in cluster.nodes:
        info = replication_info(port)
        if info.get("role") == "master":
            owned = redis.Redis(host="127.0.0.1", port=port).cluster("countkeysinslot", slot)
            if owned:
                return port
    raise SystemExit("no master holds the {all} slot")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--baseline", action="store_true", help="one worker, no fault")
    parser.add_argument("--speed", type=float, default=4000.0, help="event-time pacing of the paced part (the demo's 3 days in about 65 s)")
    parser.add_argument("--paced", type=float, default=0.7, help="share of the stream replayed paced; the rest goes at once before the broker kill")
    parser.add_argument("--join", type=float, default=0.15)
    parser.add_argument("--kill", type=float, default=0.3)
    parser.add_argument("--failover", type=float, default=0.5)
    parser.add_argument("--kill-mid-send", action="store_true",
                        help="no worker SIGKILL at --kill and no broker kill: the worker sending the first notification is SIGKILLed while the webhook holds its answer")
    parser.add_argument("--no-rejoin", action="store_true", help="the killed Redis master stays down (its promoted replica has none)")
    parser.add_argument("--stream", type=Path, default=ROOT / "examples" / "demo-stream.jsonl")
    args = parser.parse_args()
    if args.kill_mid_send:  # the demo's first notification comes at 83% of it: all of it paced, no broker kill
        args.paced = 1.0
    args.out.mkdir(parents=True, exist_ok=True)
    hook = Hook()
    os.environ.update(SENTINEL_BASE="lexicon", SENTINEL_PARTITIONS="4", SENTINEL_NOTIFY_CHART="false",
                      SENTINEL_REDIS_CLUSTER="true", SENTINEL_REDIS_WAIT_REPLICAS="1", SENTINEL_APPRISE_URLS=hook.url)
    try:
        asyncio.run(run(args, hook))
    finally:
        hook.close()


if __name__ == "__main__":
    main()
