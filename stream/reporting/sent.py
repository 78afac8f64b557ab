"""Which services already accepted a report (the one write of `sentinel report`): a run again for
the same days, such as the CronJob's Job retrying after one of two services refused, sends to the
others only. Until session 56 it sent to every service again, and the one that had accepted got
the report two or three times.

The marks are per service (`notify.service_key`) and report days, in one hash
(`keys.report_sent_key`) that expires `SENT_TTL_S` after its last mark.
"""

from __future__ import annotations

from typing import Iterable

from stream.keys import report_sent_key
from stream.store import WindowStore

SENT_TTL_S = 2 * 86400  # the Job's retries come within minutes; a hand re-run for the refused ones the next day still finds them
_FIELD = "svc:"


async def sent_to(store: WindowStore, first_day: int, days: int) -> set[str]:
    """The services (`service_key`) that accepted the report of these days."""
    fields = await store.redis.hkeys(report_sent_key(first_day, days))
    return {_text(f)[len(_FIELD):] for f in fields if _text(f).startswith(_FIELD)}


async def mark_sent(store: WindowStore, first_day: int, days: int, services: Iterable[str], now: float) -> None:
    """Mark `services` as having accepted the report of these days."""
    marks = {f"{_FIELD}{service}": int(now) for service in services}
    if not marks:
        return
    key = report_sent_key(first_day, days)
    # Two calls, not a MULTI: a Redis Cluster client (SENTINEL_REDIS_CLUSTER) takes them as they are.
    await store.redis.hset(key, mapping=marks)
    await store.redis.expire(key, SENT_TTL_S)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
