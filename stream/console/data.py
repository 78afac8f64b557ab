"""The console's Redis adapter: reads windows, incidents and silences the workers write, and the
operators' audit log; writes only acknowledgements and silences (through the same functions as
`sentinel ack` and `sentinel silence`, which log them).

Every page is a handful of round trips whatever the number of scopes: one pipeline of slice reads
(one server-side script call per scope, stream/store.py), one read of the incident summaries. The
overview's scope rows are the one read that grows with the scopes: it is shared by every request of
the process and repeated only when new posts came and it is old enough (`shared_result`).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from stream.alerts import audit
from stream.alerts.correlator import acknowledge, acknowledgements, incident_id, incident_summary, list_incidents
from stream.alerts.judging import AlertConfig, table_bins
from stream.alerts.silences import add_silence, holding, holds_over, list_silences, remove_silence, scope_name, silence_of_incident, silences_over
from stream.alerts.precision import tally, with_interval
from stream.alerts.verdicts import give_verdict
from stream.console import views
from stream.console.shared_result import SharedResult
from stream.keys import ACKS_KEY, ALERT_STATS_KEY, AUDIT_KEY, INCIDENTS_KEY, OUTBOX_KEY, SILENCES_KEY, STATS_KEY, incident_key, index_key
from stream.store import HOUR_S, WindowStore
from stream.timefmt import iso
from stream.windows import SLICE_FIELDS, bucket_start

OVERVIEW_BASELINE_H = 24
EVIDENCE_SPAN_S = 86400  # the scope page's chart of the detector's statistic
TIMELINE_ENTRIES = 5000  # newest outbox entries searched for an incident's timeline
SAMPLE_POSTS = 5
PRECISION_SPAN_S = 30 * 86400  # the incidents page's alert precision: verdicts given in the last 30 days (wall clock)


def data_mark(processed: str | None, watermark: str | None) -> str:
    """The version of the windows: it changes with every post counted, late ones included."""
    return f"{processed or 0}|{watermark or ''}"


@dataclass(frozen=True)
class ScopeRows:
    """Every scope's overview row, in no order and without incidents (they are read per request)."""

    end: int | None
    since: int | None
    rows: list[views.ScopeRow]


class ConsoleData:
    def __init__(self, store: WindowStore, config: AlertConfig, overview_max_age_s: float = 5.0, grouping: str = "incidents"):
        self.store = store
        self.redis = store.redis
        self.config = config
        self.grouping = grouping  # SENTINEL_ALERT_GROUPING: what a silence holds back, until the outbox says how the workers notify (workers_grouping)
        self.scope_rows: SharedResult[ScopeRows] = SharedResult(overview_max_age_s)
        self._precision: tuple[tuple[str, int], list[dict[str, Any]]] | None = None  # ((newest audit id, hour), rows)

    async def end(self) -> int | None:
        """The end of the newest bucket (the watermark's), or None before the first post."""
        wm = await self.store.watermark()
        if wm == float("-inf"):
            return None
        return bucket_start(wm, self.store.bucket_s) + self.store.bucket_s

    async def data_version(self) -> str:
        return data_mark(*await self.redis.hmget(STATS_KEY, "processed", "watermark"))

    async def overview(self, query: str = "", offset: int = 0, limit: int | None = None) -> dict[str, Any]:
        """Scopes in open incidents first, then the most abnormal; the page of them that matches
        `query` (views.page_of). `version` is the data the rows were read at (`/api/version`'s `data`
        once they are up to date)."""
        shared = await self.scope_rows.get(await self.data_version(), self._read_scope_rows)
        incidents = await list_incidents(self.redis, open_only=True)
        found = shared.value
        ranked = views.overview(found.rows, incidents)
        shown, matching = views.page_of(ranked, query, offset, limit)
        return {"end": found.end, "since": found.since, "baseline_h": OVERVIEW_BASELINE_H, "version": shared.version,
                "scopes": len(ranked), "matching": matching, "query": query, "offset": offset, "limit": limit,
                "rows": [r.as_dict() for r in shown], "open_incidents": incidents}

    async def _read_scope_rows(self) -> ScopeRows:
        end = await self.end()
        if end is None:
            return ScopeRows(None, None, [])
        # From the hourly roll-ups: the current window is the previous clock hour and the hour in
        # progress, the baseline the 24 hours before them (26 reads per scope, not 1,560 buckets).
        hour = (end - 1) // HOUR_S * HOUR_S
        since = hour - HOUR_S
        scopes = await self.store.scopes()
        tables = await self.store.hours_many([(scope, since - OVERVIEW_BASELINE_H * HOUR_S, OVERVIEW_BASELINE_H + 2) for scope in scopes])
        covered = (end - since) / (2 * HOUR_S)
        stacked = np.stack(tables) if tables else np.zeros((0, OVERVIEW_BASELINE_H + 2, len(SLICE_FIELDS)))
        return ScopeRows(end, since, views.overview_rows(scopes, stacked, window_slices=2, covered=covered))

    async def scope_named(self, given: str) -> str | None:
        """The scope a URL names, read as `sentinel windows --scope` reads it (silences.scope_name):
        `asset:eth` is `asset:ETH`, `ALL` is `all`; channel and source names keep their case, as
        there. The name as given is tried first, so a scope the reading would change (a pair scope's
        `|`) still has its page. None where neither has windows."""
        names = [given]
        try:
            names.append(scope_name(given))
        except ValueError:
            pass  # no scope is named so; the name as given may still be one
        for name in names:
            if await self.redis.exists(index_key(name)):
                return name
        return None

    async def scope(self, given: str) -> dict[str, Any] | None:
        """The scope page's data for the scope `given` names (scope_named); None where none is."""
        scope = await self.scope_named(given)
        return await self.scope_of(scope) if scope is not None else None

    async def scope_of(self, scope: str) -> dict[str, Any] | None:
        """The scope page's data for `scope`, a name scope_named gave; None before any window."""
        end = await self.end()
        if end is None:
            return None
        # Coarse enough to read at the demo's volumes (an hour a point over a day); the store sums
        # each slice's buckets, and the shares are taken from those sums (views.series).
        day_w, all_w = (views.chart_step(span, self.store.bucket_s) for span in (86400, self.store.retention_s))
        day_n, all_n = 86400 // day_w, self.store.retention_s // all_w
        window = self.config.window_s
        count = self.config.baseline_s // window + 1
        day, whole, table = await self.store.slices_many([
            (scope, end - day_n * day_w, day_w, day_n), (scope, end - all_n * all_w, all_w, all_n), (scope, end - count * window, window, count)])
        incidents = await list_incidents(self.redis, since=end - self.store.retention_s)
        until, seq = await self.redis.hmget(incident_key(scope), "until", "seq")
        evidence = []
        if seq and until:
            evidence = [asdict(e) | {"ratio": round(e.ratio, 3)} for e in views.evidence(
                json.loads(seq), at=int(until), step_s=self.config.step_s, per_window=window // self.config.step_s,
                config=self.config.sequential, fire_z=self.config.thresholds.fire_z)]
        series = await self._evidence_series(scope, end) if self.config.detector == "sequential" else None
        found = await self.store.extremes(scope, end - window, end)
        return {
            "scope": scope, "end": end, "window_s": window,
            "row": views.overview([views.overview_row(scope, table)], incidents)[0].as_dict(),
            "day": views.series(day, end - day_n * day_w, day_w).as_dict(),
            "whole": views.series(whole, end - all_n * all_w, all_w).as_dict(),
            "spans": [asdict(s) for s in views.spans(incidents, scope)], "evidence_series": series,
            "evidence": evidence, "detector": self.config.detector, "judged_until": int(until) if until else None,
            "samples": views.samples(found, SAMPLE_POSTS),
            # Silenced from this page, the operator came back to it with no sign it was done (session 55);
            # with grouping a silence over a member holds back no incident's notice (session 56).
            "silences": await self._silences_over(scope, incidents),
        }

    async def _silences_over(self, scope: str, incidents: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The silences in force over `scope`, each with what it holds back (`silences.holds_over`)."""
        silences, now = await list_silences(self.redis), time.time()
        over = silences_over(silences, scope, now)
        if not over:
            return []
        grouping = workers_grouping(await self.redis.xrevrange(OUTBOX_KEY, count=1), self.grouping)
        return [asdict(s) | {"holds": holds_over(s, scope, grouping, incidents, silences, now)} for s in over]

    async def _evidence_series(self, scope: str, end: int) -> dict[str, Any]:
        """The detector's statistic over the last 24 h at every step: one read of the step bins
        (24 h plus the window and baseline before them), then the pure replay."""
        step = self.config.step_s
        boundaries = list(range(end - EVIDENCE_SPAN_S + step, end + 1, step))
        first = boundaries[0] - step - self.config.lookback_s
        count = (end - first) // step
        bins = await self.store.slices(scope, first, step, count)
        started = (await self.store.stats()).get("first_event", first)
        # The scope's own history start, as the worker recorded it at its first judgement
        # (judging.scope_history_start); a scope judged before that field existed has the stream's.
        since = await self.redis.hget(incident_key(scope), "since")
        if since is not None:
            started = max(float(since), started)
        return views.evidence_series(scope, table_bins(bins, first, step, started), boundaries, self.config)

    async def incidents(self) -> dict[str, Any]:
        end = await self.end()
        since = end - self.store.retention_s if end is not None else None
        found = await list_incidents(self.redis, since=since)
        silences = await list_silences(self.redis)
        now = time.time()
        opened = [i for i in found if i["state"] == "open"]
        # Said in the scope page's words (session 57): the rule that applies and the incidents each holds now.
        # The workers' way whether or not a silence is in force: `grouping` is the API's field too, and
        # without silences it gave the console's own setting where the workers' differed.
        grouping = workers_grouping(await self.redis.xrevrange(OUTBOX_KEY, count=1), self.grouping)
        held = {i["incident_id"]: {s.id for s in holding(silences, i["root_scope"], i.get("members", []), now)} for i in opened}
        shown = [asdict(s) | {"holding": [ident for ident, by in held.items() if s.id in by] if grouping != "none" else []}
                 for s in silences]
        return {"open": opened, "recent": [i for i in found if i["state"] != "open"], "grouping": grouping,
                "silences": shown, "now": now, "precision": await self.precision(now)}

    async def precision(self, now: float) -> list[dict[str, Any]]:
        """The alerts' precision over the last 30 days of verdicts. Read again only when the audit log
        has a new entry or the hour turned (old verdicts age out): the incidents page renders again
        on every alert transition, and the log's read scans every action of the span."""
        newest = await self.redis.xrevrange(AUDIT_KEY, count=1)
        key = (newest[0][0] if newest else "", int(now // 3600))
        if self._precision is None or self._precision[0] != key:
            self._precision = (key, [with_interval(row) for row in tally(await audit.verdicts_within(self.redis, PRECISION_SPAN_S)).rows()])
        return self._precision[1]

    async def incident_id(self, given: str) -> str:
        """The incident id `given` names: whole, or a unique start of 6 characters or more, as
        `sentinel ack` takes it (ValueError when too short or ambiguous; itself when unknown)."""
        return await incident_id(self.redis, given)

    async def incident(self, ident: str) -> dict[str, Any] | None:
        incident = await incident_summary(self.redis, ident)
        if incident is None:
            return None
        entries = await self.redis.xrevrange(OUTBOX_KEY, count=TIMELINE_ENTRIES)
        parsed = [_entry(fields) for _, fields in entries]
        members = incident.get("members", [])
        silence = silence_of_incident(await list_silences(self.redis), incident["root_scope"], members, time.time())
        span = views.incident_posts_span(incident, self.config.window_s)
        found = await self.store.extremes(incident["root_scope"], *span) if span else []
        return {"incident": incident, "timeline": views.timeline(reversed(parsed), ident),
                "silence": asdict(silence) if silence else None, "acknowledgements": await acknowledgements(self.redis, ident),
                "posts": {"from": iso(span[0]) if span else None, "to": iso(span[1]) if span else None,
                          **views.samples(found, SAMPLE_POSTS)}}

    async def version(self) -> dict[str, Any]:
        """Cheap marks that change when something the pages show changes; pages poll it."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hmget(STATS_KEY, "processed", "watermark")
            pipe.hgetall(ALERT_STATS_KEY)
            pipe.hlen(INCIDENTS_KEY)
            pipe.hlen(ACKS_KEY)
            pipe.hlen(SILENCES_KEY)
            pipe.xlen(OUTBOX_KEY)
            pipe.xrevrange(AUDIT_KEY, count=1)
            (processed, wm), stats, incidents, acks, silences, outbox, audited = await pipe.execute()
        # The newest audit entry: a silence made and another lifted between two polls leave the counts as they were.
        newest = audited[0][0] if audited else ""
        alerts = f"{stats.get('entries', 0)}.{stats.get('transitions', 0)}.{stats.get('acks', 0)}.{incidents}.{acks}.{silences}.{outbox}.{newest}"
        return {"watermark": float(wm) if wm else None, "data": data_mark(processed, wm), "alerts": alerts}

    async def summary(self, ident: str) -> dict[str, Any] | None:
        """The incident's summary alone (`incident` adds its timeline, silence and posts)."""
        return await incident_summary(self.redis, ident)

    async def acknowledge(self, ident: str, reason: str, by: str, note: str) -> bool:
        return await acknowledge(self.redis, ident, reason, by=by, via="console", note=note)

    async def verdict(self, ident: str, verdict: str, reason: str, by: str) -> bool:
        return await give_verdict(self.redis, ident, verdict, reason, by=by, via="console")

    async def silence(self, scope: str, duration_s: int, kind: str | None, reason: str, by: str) -> dict[str, Any]:
        return asdict(await add_silence(self.redis, scope, duration_s, kind, reason, by=by, via="console"))

    async def unsilence(self, silence_id: str, by: str) -> bool:
        return await remove_silence(self.redis, silence_id, by=by, via="console")

    async def audit(self, since_s: int, by: str | None, actions: list[str], limit: int) -> dict[str, Any]:
        """The audit log's entries of the last `since_s` seconds (wall clock), newest first, at most
        `limit`; `more` says the span holds older ones beyond them (one more is read to know): the page
        said "since" a day it did not reach, 200 entries of a busy week read as the whole week."""
        now = time.time()
        entries = await audit.read(self.redis, since=now - since_s, by=by, actions=actions, limit=limit + 1)
        return {"since": iso(max(0, int(now - since_s))), "by": by, "actions": actions, "limit": limit, "entries": entries[:limit],
                "more": len(entries) > limit}


def workers_grouping(newest: Sequence[tuple[str, Mapping[str, str]]], configured: str) -> str:
    """How the workers notify, by their newest outbox entry (XREVRANGE COUNT 1): an incident's
    (`entry`, SENTINEL_ALERT_GROUPING=incidents) or one alert's (`record`, none). The console's own
    setting only where the outbox holds none: `sentinel console` run from a shell without the
    workers' setting said a silence held what delivery did not hold."""
    fields = newest[0][1] if newest else {}
    return "incidents" if "entry" in fields else "none" if "record" in fields else configured


def _entry(fields: dict[str, str]) -> dict[str, Any]:
    """An outbox entry in either form: grouped (`entry`) or one record per entry (`record`)."""
    if "entry" in fields:
        return json.loads(fields["entry"])
    if "record" in fields:
        return {"records": [json.loads(fields["record"])], "notice": None}
    return {}
