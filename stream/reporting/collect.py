"""Read what a daily report needs from Redis (the one I/O module of the report's reading side):
the newest event time, the daily roll-ups of `all` and every asset, and the incidents kept.

Two round trips for the roll-ups whatever the number of days (one `days_many` pipeline), plus a
SCAN for the scopes and one read of the incident index.
"""

from __future__ import annotations

from typing import Iterable

from stream.alerts.correlator import list_incidents
from stream.keys import day_index_key
from stream.reporting.daily import ALL, Report, build_report, day_span, day_start, report_scopes
from stream.store import WindowStore


async def oldest_day(store: WindowStore) -> float | None:
    """The first UTC day with a roll-up of `all` (every post is counted there)."""
    first = await store.redis.zrange(day_index_key(ALL), 0, 0, withscores=True)
    return float(first[0][1]) if first else None


async def collect_report(store: WindowStore, *, since_s: int | None, since: str | None, now: float, day: int | None = None,
                         expected: Iterable[str] = ()) -> Report:
    """The report of the days overlapping the last `since_s` seconds of event time before the
    newest post from the first day with a roll-up on, or of every day with a roll-up when `since_s`
    is None, or of the one UTC day starting at `day` (`--day`: the same day whenever it is run,
    where `--since` counts back from the newest post). With no posts yet, an empty
    report of the wall clock's day (a scheduled run on an idle system still says so). `expected`: the
    tickers shown with 0 posts where they had none (the configured asset table's)."""
    stats = await store.stats()
    watermark = float(stats["watermark"]) if "watermark" in stats and stats["watermark"] >= 0 else None
    newest = watermark if watermark is not None else now
    oldest = await oldest_day(store)
    if day is not None:
        first, days = day, 1
        data_from = day_start(oldest) if oldest is not None and day < day_start(oldest) else None
    else:
        first, days = day_span(newest, since_s, oldest)
        # Said in the report when --since reaches back before the data: a week's report of three days.
        data_from = first if since_s is not None and first > day_span(newest, since_s)[0] else None
    scopes = report_scopes(await store.day_scopes())
    tables = await store.days_many([(scope, first, days) for scope in scopes])
    # Every incident kept (SENTINEL_RETENTION: a few dozen): those opened before the first day and
    # still open when it began are listed too (`Report.carried`).
    incidents = await list_incidents(store.redis)
    # The history keeps incidents opened within SENTINEL_RETENTION of the newest (the correlator prunes
    # by opening time): a past day's report says where its lists stop being whole.
    kept_from = int(newest) - store.retention_s if day is not None and watermark is not None else None
    return build_report(first, days, dict(zip(scopes, tables)), incidents, watermark=watermark, generated_at=now, since=since,
                        data_from=data_from, day_asked=day is not None, incidents_from=kept_from, expected=expected)
