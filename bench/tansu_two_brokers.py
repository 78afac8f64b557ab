"""Can a second Tansu broker take over from the first? Two brokers on one S3 bucket (moto), a topic
made through the first, 20 records produced through the second and read by a consumer group that
was given both addresses; then the broker the consumer talks to is killed with -9, 20 more are
produced through the other, and the script reports what the consumer read in the next 60 seconds.

    .venv/bin/python bench/tansu_two_brokers.py

Tansu's brokers are stateless (every broker leads every partition and coordinates every group,
the state is in the bucket), but each reports itself as node 111 at its own advertised address, so
a client holds one address for node 111 and never goes back to its bootstrap list: Tansu expects
its brokers behind one address (a Kubernetes Service or a load balancer), not a client-side list.
Output of session 33: docs/results/tansu_two_brokers.json.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from stream.tools.services import start_s3, start_tansu


async def _produce(address: str, numbers: range) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=address)
    await producer.start()
    try:
        for i in numbers:
            await producer.send_and_wait("probe", json.dumps(i).encode(), key=str(i).encode())
    finally:
        await producer.stop()


async def _probe(brokers: dict[str, subprocess.Popen]) -> dict:
    first, second = brokers
    admin = AIOKafkaAdminClient(bootstrap_servers=first)
    await admin.start()
    await admin.create_topics([NewTopic("probe", 4, 1)])
    await admin.close()
    await _produce(second, range(20))
    consumer = AIOKafkaConsumer("probe", bootstrap_servers=f"{first},{second}", group_id="probe", auto_offset_reset="earliest",
                                enable_auto_commit=False, session_timeout_ms=6000, heartbeat_interval_ms=1000, metadata_max_age_ms=2000)
    got: list[int] = []

    async def read(until: int, seconds: float) -> float:
        start = time.monotonic()
        while len(got) < until and time.monotonic() - start < seconds:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                got.extend(json.loads(r.value) for r in records)
            if got:  # a commit to a dead coordinator retries for ever: bounded
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(consumer.commit(), 5)
        return time.monotonic() - start

    def known() -> list[str]:
        return [f"{b.host}:{b.port}" for b in consumer._client.cluster.brokers()]

    try:
        await consumer.start()
        await read(20, 30)
        used = known()[0]  # node 111, at whichever address answered the consumer's first metadata request
        survivor = second if used == first else first
        before = {"read": len(got), "brokers_known": known(), "killed": used}
        brokers[used].send_signal(signal.SIGKILL)
        await _produce(survivor, range(20, 40))
        waited = await read(40, 60)
        after = {"read": len(got), "missing": sorted(set(range(40)) - set(got)), "duplicates": len(got) - len(set(got)),
                 "seconds": round(waited, 1), "brokers_known": known()}
    finally:
        # A consumer whose only known broker is dead can hang in stop(): bounded, and left behind.
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await asyncio.wait_for(consumer.stop(), 10)
    return {"brokers": list(brokers), "before_the_kill": before, "after_the_kill": after}


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="sentinel-tansu-pair-") as tmp:
        workdir = Path(tmp)
        s3_proc, s3 = start_s3(workdir)
        first_proc, first = start_tansu(workdir, s3=s3)
        second_proc, second = start_tansu(workdir, s3=s3)
        try:
            result = asyncio.run(_probe({first: first_proc.proc, second: second_proc.proc}))
        finally:
            for proc in (second_proc, first_proc, s3_proc):
                proc.stop()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
