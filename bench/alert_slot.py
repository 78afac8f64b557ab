"""How hot is the `{alerts}` hash slot? Replays a stream through `sentinel run` on a local 6-node
Redis Cluster and reports, per master, the commands and scripts it served, and which masters hold
`{all}` (windows' counters) and `{alerts}` (the early-warning state and outbox).

    PYTHONPATH=. .venv/bin/python bench/alert_slot.py [FILE] > docs/results/alert_slot.json

FILE defaults to the demo stream. The lexicon scorer keeps the model out of it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import redis
from redis.crc import key_slot

from sentinel.bench_store import command_calls
from stream.keys import OUTBOX_KEY, STATS_KEY
from stream.tools.services import start_redis_cluster, start_tansu, wait_for

ROOT = Path(__file__).resolve().parents[1]


def slot_map(port: int) -> dict[int, set[int]]:
    """master port -> the slots it serves, as the node on `port` sees the cluster."""
    masters: dict[int, set[int]] = {}
    for start, end, primary, *_ in redis.Redis(host="127.0.0.1", port=port).execute_command("CLUSTER SLOTS"):
        masters.setdefault(int(primary[1]), set()).update(range(int(start), int(end) + 1))
    return masters


def owner(port_slots: dict[int, set[int]], key: str) -> int:
    slot = key_slot(key.encode())
    return next(port for port, slots in port_slots.items() if slot in slots)


def main() -> None:
    data = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "examples" / "demo-stream.jsonl"
    with tempfile.TemporaryDirectory(prefix="alert-slot-") as tmp:
        cluster = start_redis_cluster(Path(tmp) / "cluster")
        tansu, broker = start_tansu(Path(tmp))
        try:
            masters = slot_map(next(iter(cluster.nodes)))
            # An even split puts {all} (slot 3894) and {alerts} (4569) on one master; give {alerts}
            # a master of its own (the slot is empty, so assigning it is all a move takes).
            alerts_slot, all_owner = key_slot(OUTBOX_KEY.encode()), owner(masters, STATS_KEY)
            if owner(masters, OUTBOX_KEY) == all_owner:
                target = next(port for port in masters if port != all_owner)
                target_id = redis.Redis(host="127.0.0.1", port=target).execute_command("CLUSTER MYID")
                for port in masters:
                    redis.Redis(host="127.0.0.1", port=port).execute_command("CLUSTER SETSLOT", alerts_slot, "NODE", target_id)
                wait_for(lambda: all(owner(slot_map(p), OUTBOX_KEY) == target for p in cluster.nodes), 30, "the slot move")
                masters = slot_map(next(iter(cluster.nodes)))
            before = command_calls(list(masters))
            env = {**os.environ, "KAFKA_BROKER": broker, "REDIS_URL": cluster.url, "SENTINEL_REDIS_CLUSTER": "1",
                   "SENTINEL_BASE": "lexicon", "SENTINEL_REBALANCE_TIMEOUT": "5", "SENTINEL_SESSION_TIMEOUT": "6",
                   "SENTINEL_HEARTBEAT_INTERVAL": "1"}
            summary = Path(tmp) / "summary.json"
            subprocess.run([sys.executable, "-m", "sentinel.cli", "run", str(data), "--summary-json", str(summary)],
                           env=env, check=True, capture_output=True)
            after = command_calls(list(masters))
            run = json.loads(summary.read_text())
        finally:
            tansu.stop()
            cluster.stop()
    batches = max(1, round(run["consumed"] / 64))
    per_master = {
        str(port): {"commands": after[port][0] - before[port][0], "scripts": after[port][1] - before[port][1],
                    "holds": [name for name, key in (("{all}", STATS_KEY), ("{alerts}", OUTBOX_KEY)) if owner(masters, key) == port]}
        for port in masters
    }
    total = sum(m["commands"] for m in per_master.values())
    for m in per_master.values():
        m["share"] = round(m["commands"] / total, 3)
    print(json.dumps({"file": str(data.relative_to(ROOT)) if data.is_relative_to(ROOT) else str(data), "posts": run["processed"],
                      "alerts": run["alerts"], "batches_about": batches, "per_master": per_master}, indent=1))


if __name__ == "__main__":
    main()
