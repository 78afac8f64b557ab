"""The risk console (stream/console).

- Pure logic without servers: the overview's numbers and order, incident spans and timelines,
  inert sample text, who may read and write.
- The JSON API of a real `sentinel console` process on a real redis-server: numbers against counts
  computed here, and the write rules (no anonymous writes, roles, CSRF, origin).
- A real Chromium driven by Playwright against a console over a real worker fed by a replay: the
  overview loads, a swing's incident appears without a reload, acknowledging and silencing from the
  page change Redis, a hostile post renders as text. The same test takes the screenshots in docs/
  when SENTINEL_SCREENSHOTS names a folder (`make screenshots`).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import html as html_lib
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import redis

from stream.console import auth, views
from stream.console.shared_result import Cached, SharedResult, reusable
from stream.contracts import Post
from stream.keys import ACKS_KEY, ALERT_STATS_KEY, INCIDENTS_INDEX_KEY, INCIDENTS_KEY, OUTBOX_KEY, SCOPES_KEY, SILENCE_AUTHORS_KEY, SILENCES_KEY, STATS_KEY
from stream.store import Scored, WindowStore
from stream.timefmt import epoch
from stream.timefmt import shown as shown_at
from stream.tools.services import free_port
from stream.windows import Sample

OPERATOR, VIEWER = "op-token-123", "read-token-456"
TOKENS = auth.Tokens(read=VIEWER, operator=OPERATOR)
ALICE = auth.flash_owner(auth.caller(f"Basic {base64.b64encode(f'alice:{OPERATOR}'.encode()).decode()}", TOKENS))  # whom a flash is for
HOSTILE = "$BTC crash rekt <script>alert(1)</script> <img src=x onerror=alert(2)> <!channel> @everyone \u202eevil\u202c"


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


# --- pure ------------------------------------------------------------------------------------


def table(rows: list[tuple[int, int, int, int, float]]) -> np.ndarray:
    """(n, positive, negative, neutral, score_sum) rows -> a slice table."""
    return np.array([[n, p, ng, nu, s, 0.0] for n, p, ng, nu, s in rows], dtype=np.float64)


def test_overview_row_compares_the_current_window_with_the_baseline():
    base = [(100, 30, 20, 50, 10.0)] * 24
    row = views.overview_row("asset:ETH", table(base + [(100, 10, 60, 30, -50.0)]))
    assert (row.posts, row.negative, row.baseline_negative, row.positive, row.baseline_positive) == (100, 0.6, 0.2, 0.1, 0.3)
    assert row.mean_score == -0.5 and row.baseline_mean_score == 0.1 and row.baseline_posts_per_window == 100
    # (0.6 - 0.2) / sqrt(0.2 * 0.8 / 100) = 10
    assert row.abnormality == pytest.approx(10.0)
    assert len(row.spark) == 25 and row.spark[-1] == 0.6 and row.spark[0] == 0.2
    calm = views.overview_row("asset:BTC", table(base + [(100, 30, 20, 50, 10.0)]))
    assert calm.abnormality == 0.0


def test_overview_puts_scopes_in_open_incidents_first_then_the_most_abnormal():
    base = [(100, 30, 20, 50, 10.0)] * 24
    rows = [views.overview_row("asset:A", table(base + [(100, 30, 30, 40, 0.0)])),
            views.overview_row("asset:B", table(base + [(100, 30, 40, 30, 0.0)])),
            views.overview_row("channel:c", table(base + [(100, 30, 20, 50, 10.0)]))]
    incidents = [
        {"incident_id": "i1", "state": "open", "root_scope": "asset:A", "severity": "critical", "members": [{"scope": "channel:c", "kind": "sentiment_drop"}]},
        {"incident_id": "old", "state": "resolved", "root_scope": "asset:B", "severity": "warning", "members": []},
    ]
    ordered = views.overview(rows, incidents)
    assert [r.scope for r in ordered] == ["asset:A", "channel:c", "asset:B"]
    assert [r.incident for r in ordered] == ["i1", "i1", None] and ordered[0].incident_severity == "critical"


def test_spans_and_timeline_follow_one_incident():
    incidents = [
        {"incident_id": "a", "state": "resolved", "root_scope": "asset:ETH", "opened": 100, "at": 500, "severity": "warning",
         "members": [{"scope": "asset:ETH", "kind": "sentiment_drop"}, {"scope": "channel:x", "kind": "volume_spike"}]},
        {"incident_id": "b", "state": "open", "root_scope": "asset:BTC", "opened": 900, "at": 950, "severity": "critical",
         "members": [{"scope": "asset:BTC", "kind": "sentiment_drop"}]},
    ]
    assert [(s.incident_id, s.start, s.end, s.kinds) for s in views.spans(incidents, "channel:x")] == [("a", 100, 500, ["volume_spike"])]
    assert [(s.incident_id, s.end) for s in views.spans(incidents, "asset:BTC")] == [("b", None)]
    assert views.spans(incidents, "asset:SOL") == []
    entries = [
        {"records": [{"incident_id": "b", "scope": "asset:BTC", "kind": "sentiment_drop", "state": "firing", "window_end": "2026-01-01T00:10:00Z"}],
         "notice": None},
        {"records": [], "notice": {"incident_id": "b", "at": "2026-01-01T00:15:00Z", "reason": "new", "state": "firing", "severity": "critical"}},
        {"records": [{"incident_id": "a", "scope": "asset:ETH", "window_end": "2026-01-01T00:01:00Z"}], "notice": None},
    ]
    events = views.timeline(entries, "b")
    assert [(e["type"], e["at"]) for e in events] == [("transition", "2026-01-01T00:10:00Z"), ("notice", "2026-01-01T00:15:00Z")]
    # What moved, in words, as the notification says it.
    drop = {"metric": "negative_share", "value": 0.75, "baseline": 0.199, "onset": "2026-01-01T00:00:00Z"}
    assert views.measure(drop) == "negative share 75.0% since 2026-01-01T00:00:00Z against 19.9%"
    assert views.measure({"metric": "posts", "value": 149.0, "baseline": 31.2, "window": "1h"}) == "149 posts per 1h against 31"
    assert views.measure({"metric": "mean_score", "value": -0.31, "baseline": 0.05}) == "mean score -0.31 against +0.05"
    assert views.measure({"scope": "asset:ETH"}) == ""  # an older record without the metric
    assert views.measure({"metric": "posts", "value": 149.0, "baseline": 31.2}, window="1h") == "149 posts per 1h against 31"


def test_an_incidents_summary_carries_what_moved_for_the_console_to_show():
    from stream.alerts.correlator import summary
    from stream.alerts.grouping import Incident, Member

    root = Member("asset:ETH", "sentiment_drop", True, "warning", "2026-03-04T12:00:00Z", "negative_share", 0.75, 0.199)
    incident = Incident("i1", "asset:ETH", 100, {root.key: root})
    member = summary(incident, "open", 200)["members"][0]
    assert views.measure(member) == "negative share 75.0% since 2026-03-04T12:00:00Z against 19.9%"
    assert views.measure(member, since=False) == "negative share 75.0% against 19.9%"


def test_evidence_series_replays_the_detector_and_crosses_its_threshold_only_after_a_swing():
    from stream.alerts.judging import AlertConfig, table_bins

    config = AlertConfig()
    step, first = config.step_s, 1_790_812_800
    rng = np.random.default_rng(4)
    hours = 49
    bins = np.zeros((hours * 60, 6))
    for i in range(len(bins)):
        swing = i >= (hours - 2) * 60  # the last two hours: negative share 0.2 -> 0.7
        n = rng.poisson(4)
        neg = rng.binomial(n, 0.7 if swing else 0.2)
        pos = rng.binomial(n - neg, 0.3)
        bins[i] = [n, pos, neg, n - neg - pos, 0.5 * pos - 0.5 * neg, 0.25 * (pos + neg)]
    end = first + hours * 3600
    boundaries = list(range(end - 86400 + step, end + 1, step))
    series = views.evidence_series("asset:ETH", table_bins(bins, first, step, first), boundaries, config)
    drop = np.array(series["sentiment_drop"])
    assert series["threshold"] == round(config.sequential.b, 2) and len(drop) == len(series["t"]) == 288
    assert series["t"][-1] == end and series["t"][1] - series["t"][0] == 5 * step  # every 5th step, ending now
    swing_at = series["t"].index(end - 2 * 3600)
    assert drop[:swing_at + 1].max() < series["threshold"] <= drop[swing_at:].max()


def test_an_incidents_posts_are_looked_for_from_its_roots_onset():
    def member(scope: str, onset: str | None) -> dict:
        return {"scope": scope, "kind": "sentiment_drop", **({"onset": onset} if onset is not None else {})}

    root_late = {"root_scope": "asset:ETH", "members": [member("all", "2026-10-02T00:00:00Z"), member("asset:ETH", "2026-10-02T00:30:00Z"),
                                                        member("asset:ETH", "2026-10-02T00:20:00Z")]}
    assert views.incident_posts_span(root_late, 3600) == (T0 + 86400 + 1200, T0 + 86400 + 1200 + 3600)  # the root's earliest
    no_root_onset = {"root_scope": "asset:ETH", "members": [member("asset:ETH", None), member("all", "garbled"), member("all", "2026-10-02T00:00:00Z")]}
    assert views.incident_posts_span(no_root_onset, 600) == (T0 + 86400, T0 + 86400 + 600)
    zscore = {"root_scope": "asset:ETH", "opened": T0 + 7200, "members": [member("asset:ETH", "")]}  # that detector records no onset
    assert views.incident_posts_span(zscore, 3600) == (T0 + 3600, T0 + 7200)
    assert views.incident_posts_span({"root_scope": "asset:ETH", "members": [member("asset:ETH", None)]}, 600) is None


def test_sample_posts_are_made_inert_as_in_notifications():
    shown = views.samples([Sample("p1", HOSTILE, "negative", -0.9), Sample("p2", "$BTC moon", "positive", 0.8)], 5)
    text = shown["negative"][0]["text"]
    assert "<" not in text and ">" not in text and "\u202e" not in text and "@" not in text
    assert "‹script›alert(1)‹/script›" in text and "!channel" in text
    assert [s["id"] for s in shown["positive"]] == ["p2"]


def test_sample_posts_show_each_text_once_as_notices_do():
    """Copies of one text (the demo's raid posts) fill the list once; the next different post takes
    their place, as in notices (`distinct_samples`)."""
    copies = [Sample(f"c{i}", "ETH is  going to ZERO" if i % 2 else "eth is going to zero ", "negative", -0.99 + i / 1000) for i in range(6)]
    others = [Sample("n1", "$ETH rug", "negative", -0.5), Sample("n2", "$ETH dead", "negative", -0.4)]
    up = [Sample(f"u{i}", "$ETH moon", "positive", 0.9 - i / 1000) for i in range(3)] + [Sample("u9", "$ETH pump", "positive", 0.5)]
    shown = views.samples(copies + others + up, 3)
    assert [s["id"] for s in shown["negative"]] == ["c0", "n1", "n2"]
    assert [s["id"] for s in shown["positive"]] == ["u0", "u9"]


def test_a_page_says_when_its_newest_post_is_well_behind_the_wall_clock():
    """After a replay (the demo's posts are months old) the overview's "Now" is event time and read
    like the present: past the notices' 15 minutes the page says how far behind it is, in both clocks."""
    end = epoch("2026-03-04T23:58:00Z")
    assert views.behind(None, end + 86400) == ""
    assert views.behind(end, end + 15 * 60) == ""  # live: a minute or two behind, said nothing
    late = views.behind(end, end + 40 * 60)
    assert late.startswith("These figures run to 2026-03-04T23:58:00Z (event time), the end of the newest post's minute, 40 minutes before") and "2026-03-05T00:38:00Z (wall clock)" in late
    assert "277 days before" in views.behind(end, end + 277 * 86400 + 5)


def test_the_fuzz_and_injection_texts_render_as_inert_text():
    """Every hostile text of the fuzz test, as a sample post and as a post id, through the real
    template: the page's markup is the template's alone."""
    from html.parser import HTMLParser

    from jinja2 import Environment, FileSystemLoader

    from test_fuzz import CONTROLS, INJECTIONS

    texts = INJECTIONS + CONTROLS + [HOSTILE, '"><svg onload=alert(1)>', "javascript:alert(1)", "&lt;b&gt;", "<!here|here> <@U1|bob>"]
    # `{i}` in the text too: some differ only in space or control characters, and the list shows
    # each text once (distinct_samples), as notices do.
    found = [Sample(f"{t}-{i}", f"$BTC dump {i} {t}", "negative", -0.5 - i / 1000) for i, t in enumerate(texts)]
    env = Environment(loader=FileSystemLoader(str(Path(views.__file__).parent / "templates")), autoescape=True)
    html = env.from_string("<ul>{% for s in samples.negative %}<li><span>{{ s.text }}</span><span>{{ s.id }}</span></li>{% endfor %}</ul>")
    page = html.render(samples=views.samples(found, len(found)))

    class Tags(HTMLParser):
        def __init__(self):
            super().__init__()
            self.tags, self.text = [], []

        def handle_starttag(self, tag, attrs):
            self.tags.append((tag, attrs))

        def handle_data(self, data):
            self.text.append(data)

    parsed = Tags()
    parsed.feed(page)
    assert {t for t, _ in parsed.tags} == {"ul", "li", "span"} and all(not attrs for _, attrs in parsed.tags)
    assert len([t for t, _ in parsed.tags if t == "li"]) == len(texts)
    shown = "".join(parsed.text)
    assert not any(ch in shown for ch in "\u202e\u2066\u200b\ufeff\x00\x1b\r\n@")


def test_spark_points_stay_inside_the_box():
    points = [tuple(map(float, p.split(","))) for p in views.spark_points(np.array([[0.0, 0.5, 1.0, 2.0]]))[0].split()]
    assert points[0] == (0.0, 24.0) and points[1] == (40.0, 12.0) and points[-1] == (120.0, 0.0)


def test_a_charts_points_are_coarse_enough_to_read_and_short_spans_keep_their_minutes():
    """A day's chart of minute buckets is drawn an hour a point (24 points, not the 288 of about one
    post each the demo's asset:ETH had); an hour's chart keeps its minutes; every step is whole buckets."""
    assert views.chart_step(86400, 60) == 3600 and views.step_words(3600) == "hour"
    assert views.chart_step(3600, 60) == 60 and views.step_words(60) == "minute"
    assert views.chart_step(2 * 3600, 60) == 300 and views.step_words(300) == "5 minutes"
    assert views.chart_step(48 * 3600, 60) == 3600  # the default retention: hourly too
    assert views.chart_step(7 * 86400, 60) == 3 * 3600 and views.step_words(3 * 3600) == "3 hours"
    assert views.chart_step(90 * 86400, 60) == 2 * 86400 and views.step_words(2 * 86400) == "2 days"
    assert views.chart_step(3600, 120) == 120  # never finer than the store's bucket
    assert views.step_words(90) == "90 seconds" and views.step_words(86400) == "day"
    for bucket in (1, 7, 60, 120, 300, 3600):
        for span in (bucket, 3600, 5000, 86400, 2 * 86400 + 3600, 30 * 86400, 400 * 86400):
            if span < bucket:
                continue
            step = views.chart_step(span, bucket)
            assert step % bucket == 0 and span / step <= views.CHART_MAX_POINTS, (span, bucket, step)
            assert step == bucket or span / step > views.CHART_MAX_POINTS / 5, (span, bucket, step)  # no coarser than it needs


def test_a_charts_point_takes_its_shares_from_its_posts_and_says_what_it_covers():
    # An hour of one negative post in one minute and nine positive in another: 10% negative (the
    # mean of its two minutes' shares would say 50%); an hour without posts is a gap, not a zero.
    hours = views.series(table([(10, 9, 1, 0, 4.0), (0, 0, 0, 0, 0.0)]), first=T0, width=3600)
    assert hours.t == [T0, T0 + 3600] and hours.posts == [10, 0]
    assert hours.negative == [0.1, None] and hours.positive == [0.9, None] and hours.mean_score == [0.4, None]
    assert (hours.step, hours.per) == (3600, "hour") and hours.as_dict()["per"] == "hour"


def test_the_overview_filter_takes_a_part_of_a_name_or_a_glob_and_pages_in_order():
    base = [(100, 30, 20, 50, 10.0)] * 25
    rows = [views.overview_row(scope, table(base)) for scope in ("asset:BTC", "asset:ETH", "channel:btc-talk", "source:forum", "all")]
    assert [r.scope for r in views.page_of(rows, "btc")[0]] == ["asset:BTC", "channel:btc-talk"]  # any case
    assert [r.scope for r in views.page_of(rows, "asset:*")[0]] == ["asset:BTC", "asset:ETH"]
    # A glob matches the whole name, in any case as a part does (docs/console.md).
    assert [r.scope for r in views.page_of(rows, "*:btc")[0]] == ["asset:BTC"]
    assert [r.scope for r in views.page_of(rows, "ASSET:*")[0]] == ["asset:BTC", "asset:ETH"]
    assert [r.scope for r in views.page_of(rows, "*eth*")[0]] == ["asset:ETH"]
    assert [r.scope for r in views.page_of(rows, "Channel:BTC-*")[0]] == ["channel:btc-talk"]
    shown, matching = views.page_of(rows, "", offset=1, limit=2)
    assert [r.scope for r in shown] == ["asset:ETH", "channel:btc-talk"] and matching == 5
    assert views.page_of(rows, ":", offset=3, limit=10) == (rows[3:4], 4)
    assert views.page_of(rows, "", offset=9, limit=10) == ([], 5)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_shared_read_is_reused_until_the_data_changed_and_it_is_old_enough():
    clock = Clock()
    shared: SharedResult[str] = SharedResult(5.0, duty=10, clock=clock)
    reads: list[str] = []

    async def read(took: float = 0.0) -> str:
        reads.append("r")
        clock.now += took
        return f"rows{len(reads)}"

    async def get(version: str, took: float = 0.0) -> tuple[str, str]:
        found = await shared.get(version, lambda: read(took))
        return found.value, found.version

    assert asyncio.run(get("v1")) == ("rows1", "v1")
    clock.now += 60
    assert asyncio.run(get("v1")) == ("rows1", "v1")  # nothing changed: reused however old
    assert asyncio.run(get("v2")) == ("rows2", "v2")  # changed and older than 5 s: read again
    clock.now += 4.9
    assert asyncio.run(get("v3")) == ("rows2", "v2")  # changed, but younger than 5 s
    clock.now += 0.2
    assert asyncio.run(get("v3", took=2.0)) == ("rows3", "v3")
    clock.now += 15  # a read of 2 s stands for 10 times that, 20 s from its start
    assert asyncio.run(get("v4")) == ("rows3", "v3")
    clock.now += 3.1
    assert asyncio.run(get("v4")) == ("rows4", "v4")
    assert shared.reads == len(reads) == 4
    stalled = Cached("rows", "v1", started=0.0, took=100.0)  # a read Redis stalled: a minute at most, not 1,000 s
    assert reusable(stalled, "v2", now=59.0, max_age_s=5.0) and not reusable(stalled, "v2", now=61.0, max_age_s=5.0)
    off: SharedResult[str] = SharedResult(0.0, clock=clock)  # a maximum age of 0: nothing shared
    assert [asyncio.run(off.get("v1", read)).value for _ in range(2)] == ["rows5", "rows6"]


def test_concurrent_requests_share_the_one_read_in_flight_its_result_or_its_failure():
    shared: SharedResult[int] = SharedResult(0.001, duty=0)
    calls = 0

    async def slow() -> int:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.05)
        return calls

    async def failing() -> int:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.05)
        raise ConnectionError("redis timed out")

    async def main() -> None:
        found = await asyncio.gather(*(shared.get("v1", slow) for _ in range(10)))
        assert [f.value for f in found] == [1] * 10 and calls == 1
        failed = await asyncio.gather(*(shared.get("v2", failing) for _ in range(5)), return_exceptions=True)
        assert all(isinstance(f, ConnectionError) for f in failed) and calls == 2  # one read failed for all five
        assert shared.cached is not None and shared.cached.version == "v1"  # the last good read stays
        assert (await shared.get("v2", slow)).value == 3
        # A caller that goes away does not cancel the read the others wait for.
        first = asyncio.ensure_future(shared.get("v3", slow))
        second = asyncio.ensure_future(shared.get("v3", slow))
        deadline = time.monotonic() + 5
        while calls < 4:  # the read has started, so both callers have asked (they were scheduled first)
            assert time.monotonic() < deadline, "the shared read never started"
            await asyncio.sleep(0)
        first.cancel()
        assert (await second).value == 4 and calls == 4

    asyncio.run(main())


@pytest.mark.parametrize("header, role", [
    (None, "anonymous"), ("Bearer " + OPERATOR, "operator"), ("Bearer " + VIEWER, "viewer"), ("Bearer wrong", "anonymous"),
    (basic("alice", OPERATOR), "operator"), (basic("bob", VIEWER), "viewer"), (basic("eve", "nope"), "anonymous"),
    ("Basic !!!notbase64", "anonymous"), ("Digest x", "anonymous"),
])
def test_a_token_proves_a_role(header, role):
    assert auth.caller(header, TOKENS).role == role


def test_writes_need_the_operator_and_from_a_browser_the_csrf_token_and_same_origin():
    csrf = auth.csrf_token(TOKENS)
    op_bearer, op_basic = auth.caller("Bearer " + OPERATOR, TOKENS), auth.caller(basic("alice", OPERATOR), TOKENS)
    viewer, nobody = auth.caller("Bearer " + VIEWER, TOKENS), auth.caller(None, TOKENS)
    refuse = lambda who, **kw: auth.write_refusal(who, TOKENS, **({"csrf": None, "origin": None, "host": "h:1"} | kw))  # noqa: E731
    assert refuse(op_bearer) is None  # a bearer header is never sent by a browser on its own
    assert refuse(op_basic) == "missing or wrong CSRF token"
    assert refuse(op_basic, csrf="0" * 32) == "missing or wrong CSRF token"
    assert refuse(op_basic, csrf=csrf) is None
    assert refuse(op_basic, csrf=csrf, origin="http://evil.example") == "cross-origin write refused"
    assert refuse(op_basic, csrf=csrf, origin="http://h:1") is None
    assert refuse(viewer) == refuse(nobody) == "operator credentials required"
    read_only = auth.Tokens(read=None, operator=None)
    assert auth.write_refusal(auth.caller("Bearer x", read_only), read_only, csrf=None, origin=None, host=None).startswith("writes are disabled")
    assert auth.caller(None, read_only).may_read(read_only) and not nobody.may_read(TOKENS)


def test_a_csrf_field_that_is_no_text_is_refused_as_a_wrong_one_never_a_500():
    """A script writing with Basic credentials posts JSON, whose `csrf` may be a number, a list or
    text with a lone surrogate (valid JSON, no UTF-8): the check called `.encode()` on it and raised,
    a 500 where the answer is the 403 saying why."""
    op_basic = auth.caller(basic("alice", OPERATOR), TOKENS)
    for csrf in (5, ["x"], {"csrf": auth.csrf_token(TOKENS)}, "\ud800", True):
        assert auth.write_refusal(op_basic, TOKENS, csrf=csrf, origin=None, host="h:1") == "missing or wrong CSRF token", csrf


def test_a_json_write_whose_csrf_is_no_text_gets_the_403_not_a_500(api_console, redis_server):
    console, _ = api_console
    r = redis.Redis.from_url(redis_server, decode_responses=True)
    for csrf in (5, ["x"], "\ud800"):
        status, body, _ = console.call("POST", "/api/silences", {"scope": "asset:SOL", "duration": "1h", "csrf": csrf},
                                       headers={"Authorization": basic("alice", OPERATOR)})
        assert (status, body) == (403, "missing or wrong CSRF token"), (csrf, status, body)
    assert r.hlen(SILENCES_KEY) == 0


# --- the API of a real console on a real redis-server --------------------------------------------

T0 = 1_790_812_800  # a midnight


def console_env(redis_url: str, **extra: str) -> dict[str, str]:
    return {**os.environ, "REDIS_URL": redis_url, "SENTINEL_BASE": "lexicon", **extra}


class Console:
    """`sentinel console` in its own process on a free port."""

    def __init__(self, env: dict[str, str], log: Path, *, script: bool = False):
        """`script`: the console script a user runs (.venv/bin/sentinel), not `python -m sentinel.cli`."""
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log = log.open("wb")
        self.log = log
        command = [str(Path(sys.executable).parent / "sentinel")] if script else [sys.executable, "-m", "sentinel.cli"]
        self.proc = subprocess.Popen([*command, "console", "--port", str(self.port)], env=env,
                                     stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while self.call("GET", "/healthz")[0] != 200:
            assert self.proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)

    def call(self, method: str, path: str, body: dict | None = None, headers: dict | None = None, form: bool = False) -> tuple[int, str, dict]:
        data, head = None, dict(headers or {})
        if body is not None:
            data = (urllib.parse.urlencode(body) if form else json.dumps(body)).encode()
            head["Content-Type"] = "application/x-www-form-urlencoded" if form else "application/json"
        request = urllib.request.Request(self.url + path, data=data, method=method, headers=head)
        opener = urllib.request.build_opener(NoRedirect)
        try:
            with opener.open(request, timeout=10) as resp:
                return resp.status, resp.read().decode(), resp.headers
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode(), exc.headers
        except OSError:
            return 0, "", {}

    def json(self, path: str, token: str | None = VIEWER) -> dict:
        status, body, _ = self.call("GET", path, headers={"Authorization": f"Bearer {token}"} if token else None)
        assert status == 200, body
        return json.loads(body)

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)
        self._log.close()


@pytest.mark.parametrize("extra, open_to_all", [
    ({}, True),  # the default: every interface, no read token
    ({"SENTINEL_CONSOLE_HOST": "localhost"}, False),
    ({"SENTINEL_CONSOLE_READ_TOKEN": VIEWER}, False),
    ({"SENTINEL_CONSOLE_HOST": "127.0.0.1"}, False),
])
def test_a_console_that_anyone_may_read_says_so_at_start(tmp_path, redis_server, extra, open_to_all):
    """A bank's security review: with its defaults (every interface, no read token) the console
    served scopes, sample posts and the audit log's names to whoever reached its port, and its start
    said only "read-only". Now it warns, without a token in the line; a read token or loopback is quiet."""
    console = Console(console_env(redis_server, SENTINEL_CONSOLE_OPERATOR_TOKEN=OPERATOR, **extra), tmp_path / "console.log")
    try:
        reads = console.call("GET", "/api/incidents")[0]
    finally:
        console.close()
    log = console.log.read_text()
    warned = [line for line in log.splitlines() if line.startswith("warning: anyone who reaches")]
    assert reads == (200 if open_to_all else 401) or "SENTINEL_CONSOLE_HOST" in extra, (reads, log)
    assert len(warned) == int(open_to_all), log
    assert all(f"port {console.port}" in line and "set SENTINEL_CONSOLE_READ_TOKEN" in line for line in warned), warned
    assert OPERATOR not in log and VIEWER not in log


def test_a_console_whose_redis_is_away_starts_and_says_so_on_readyz(tmp_path):
    """The start-up's Redis Cluster check refuses a cluster node only (tests/test_redis_cluster.py):
    a Redis that is away is no refusal, the console serves and its readiness says why it is not ready."""
    console = Console(console_env(f"redis://127.0.0.1:{free_port()}/0"), tmp_path / "console.log")
    try:
        status, body, _ = console.call("GET", "/readyz")
        assert status == 503 and "redis" in body, body
        # A page it cannot read: the console's frame for a browser (it was bare text), text for others.
        status, page, headers = console.call("GET", "/incidents", headers={"Accept": HTML})
        assert (status, headers["content-type"].split(";")[0]) == (503, "text/html"), page
        assert framed_reason(page, back="/incidents") == "Redis is unavailable; retry shortly" and "(503)" in page  # a retry
        for path, accept in (("/incidents", "*/*"), ("/api/incidents", HTML)):
            status, body, headers = console.call("GET", path, headers={"Accept": accept})
            assert (status, headers["content-type"].split(";")[0], body) == (503, "text/plain", "Redis is unavailable; retry shortly")
    finally:
        console.close()


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):  # a 303 is the answer under test, not something to follow
        return None


def seeded_store(redis_url: str) -> Counter:
    """Two days of posts for three assets written through the real store; returns the counts per
    (scope, label) of the overview's current window (the last clock hour and the one in progress)."""
    redis.Redis.from_url(redis_url).flushdb()
    rng = np.random.default_rng(3)
    items, last_hour = [], Counter()
    end = T0 + 2 * 86400
    for i in range(6000):
        ts = T0 + float(rng.uniform(0, 2 * 86400))
        asset = ["BTC", "ETH", "SOL"][i % 3]
        label = rng.choice(["positive", "negative", "neutral"], p=[0.3, 0.2, 0.5])
        text = HOSTILE if i == 0 else f"${asset} post {i}"
        ts = end - 30 if i == 0 else ts
        items.append(Scored(Post(f"p{i:05d}", text, ts, (asset,), source="forum", channel="general"), str(label),
                            {"positive": 0.5, "negative": -0.5, "neutral": 0.0}[str(label)] if i else -0.99))
        if ts >= end - 2 * 3600:  # the data ends at a midnight: the two hours before it
            for scope in ("all", f"asset:{asset}"):
                last_hour[(scope, str(label))] += 1
    items.sort(key=lambda s: s.post.created_at)

    async def write() -> None:
        store = WindowStore.from_url(redis_url, bucket_s=60, retention_s=2 * 86400 + 3600)
        for k in range(0, len(items), 500):
            chunk = items[k: k + 500]
            await store.apply(chunk, {}, chunk[-1].post.created_at)
        await store.close()

    asyncio.run(write())
    return last_hour


def put_incident(redis_url: str, ident: str, root: str, state: str = "open") -> None:
    r = redis.Redis.from_url(redis_url)
    summary = {"incident_id": ident, "root_scope": root, "state": state, "opened": T0 + 86400, "at": T0 + 86400 + 600, "market": False,
               "severity": "warning", "acked": None, "members": [{"scope": root, "kind": "sentiment_drop", "firing": True, "severity": "warning",
                                                                   "onset": "2026-10-02T00:00:00Z"}]}
    r.hset(INCIDENTS_KEY, ident, json.dumps(summary))
    r.zadd(INCIDENTS_INDEX_KEY, {ident: T0 + 86400})


@pytest.fixture()
def api_console(redis_server, tmp_path):
    counts = seeded_store(redis_server)
    put_incident(redis_server, "inc1", "asset:ETH")
    console = Console(console_env(redis_server, SENTINEL_CONSOLE_READ_TOKEN=VIEWER, SENTINEL_CONSOLE_OPERATOR_TOKEN=OPERATOR), tmp_path / "console.log")
    yield console, counts
    console.close()


def test_api_reports_what_the_store_holds(api_console, redis_server):
    console, counts = api_console
    data = console.json("/api/overview")
    rows = {r["scope"]: r for r in data["rows"]}
    assert set(rows) == {"all", "asset:BTC", "asset:ETH", "asset:SOL", "channel:general", "source:forum"}
    for scope in ("all", "asset:BTC", "asset:ETH"):
        n = sum(counts[(scope, label)] for label in ("positive", "negative", "neutral"))
        assert rows[scope]["posts"] == n
        assert rows[scope]["negative"] == round(counts[(scope, "negative")] / n, 4)
    assert data["rows"][0]["scope"] == "asset:ETH" and data["rows"][0]["incident"] == "inc1"
    assert [i["incident_id"] for i in data["open_incidents"]] == ["inc1"]

    scope = console.json("/api/scopes/asset:BTC")
    seen = redis.Redis.from_url(redis_server)
    end = scope["end"]
    assert sum(scope["day"]["posts"]) == seen.zcount("sentinel:{asset:BTC}:seen", end - 86400, f"({end}")
    assert sum(scope["whole"]["posts"]) == seen.zcard("sentinel:{asset:BTC}:seen")
    assert scope["samples"]["negative"][0]["id"] == "p00000"  # the hostile post, its text made inert
    assert "<" not in scope["samples"]["negative"][0]["text"]
    assert console.call("GET", "/api/scopes/asset:NOPE", headers={"Authorization": "Bearer " + VIEWER})[0] == 404


def test_a_scopes_api_and_page_name_it_in_any_case_as_the_command_line_does(api_console, redis_server):
    """`sentinel windows --scope asset:eth` reads asset:ETH (silences.scope_name): so do the scope's
    API and page, and the page moves to the name its windows have. Channel and source names keep
    their case there and here."""
    console, _ = api_console
    viewer = {"Authorization": "Bearer " + VIEWER}
    for given in ("asset:eth", "Asset:Eth", "ASSET:ETH"):
        assert console.json(f"/api/scopes/{given}")["scope"] == "asset:ETH", given
        status, _, headers = console.call("GET", f"/scope/{given}", headers=viewer)
        assert status == 303 and headers["location"] == "/scope/asset:ETH", given
    assert console.json("/api/scopes/ALL")["scope"] == "all"
    # The page resolves the name once: one EXISTS for a name as its windows have it (the page's
    # only one: nothing else it reads asks whether a key exists).
    server = redis.Redis.from_url(redis_server)
    server.config_resetstat()
    status, page, _ = console.call("GET", "/scope/asset:ETH", headers=viewer)
    assert status == 200 and "<h1>asset:ETH</h1>" in page
    assert server.info("commandstats")["cmdstat_exists"]["calls"] == 1
    assert console.json("/api/scopes/channel:general")["scope"] == "channel:general"
    assert console.call("GET", "/api/scopes/channel:GENERAL", headers=viewer)[0] == 404
    assert console.call("GET", "/scope/channel:GENERAL", headers=viewer)[0] == 404


def test_the_overview_pages_and_filters_and_its_pages_share_one_read_while_incidents_stay_fresh(redis_server, tmp_path):
    counts = seeded_store(redis_server)
    # An hour's maximum age: every request here shares the first read of the rows.
    console = Console(console_env(redis_server, SENTINEL_CONSOLE_OVERVIEW_MAX_AGE="3600"), tmp_path / "console.log")
    try:
        full = console.json("/api/overview", token=None)
        assert full["scopes"] == full["matching"] == len(full["rows"]) == 6 and full["limit"] is None
        assets = [r["scope"] for r in full["rows"] if r["scope"].startswith("asset:")]
        page = console.json("/api/overview?q=asset:*&offset=1&limit=2", token=None)
        assert [r["scope"] for r in page["rows"]] == assets[1:3] and (page["matching"], page["scopes"]) == (3, 6)
        assert [r["scope"] for r in console.json("/api/overview?q=eth", token=None)["rows"]] == ["asset:ETH"]
        for glob in ("ASSET:*", "asset:e*", "*eth*"):  # a glob in any case, as a part
            found = [r["scope"] for r in console.json("/api/overview?" + urllib.parse.urlencode({"q": glob}), token=None)["rows"]]
            assert found == (assets if glob == "ASSET:*" else ["asset:ETH"]), glob
        for bad in ("limit=0", "offset=-1", "limit=ten"):
            assert console.call("GET", f"/api/overview?{bad}")[0] == 400, bad

        status, html, _ = console.call("GET", "/?q=BTC")
        assert status == 200 and 'data-scope="asset:BTC"' in html and 'data-scope="asset:ETH"' not in html
        assert f'data-version="{full["version"]}"' in html and "Scopes 1–1 of 1 matching" in html
        status, html, _ = console.call("GET", "/?" + urllib.parse.urlencode({"q": "asset:*", "offset": 1, "limit": 1}))
        links = dict(re.findall(r'rel="(prev|next)" href="/\?([^"]+)"', html))
        assert {rel: urllib.parse.parse_qs(html_lib.unescape(q)) for rel, q in links.items()} == {
            "prev": {"q": ["asset:*"], "offset": ["0"], "limit": ["1"]}, "next": {"q": ["asset:*"], "offset": ["2"], "limit": ["1"]}}
        status, html, _ = console.call("GET", "/?" + urllib.parse.urlencode({"q": '"><script>alert(1)</script>'}))
        assert status == 200 and "<script>alert" not in html and "No scope matches" in html

        # A new post: the data's version moves at once; the rows stay the shared read, the
        # incidents do not.
        version = console.json("/api/version", token=None)["data"]
        assert version == full["version"]

        async def one_more() -> None:
            store = WindowStore.from_url(redis_server, bucket_s=60, retention_s=2 * 86400 + 3600)
            post = Post("late1", "$BTC dump", T0 + 2 * 86400 - 20, ("BTC",), source="forum", channel="general")
            await store.apply([Scored(post, "negative", -0.5)], {}, post.created_at)
            await store.close()

        asyncio.run(one_more())
        assert console.json("/api/version", token=None)["data"] != version
        put_incident(redis_server, "inc2", "asset:BTC")
        again = console.json("/api/overview", token=None)
        assert again["version"] == version
        btc = next(r for r in again["rows"] if r["scope"] == "asset:BTC")
        assert btc["posts"] == sum(counts[("asset:BTC", label)] for label in ("positive", "negative", "neutral"))
        assert btc["incident"] == "inc2" and again["rows"][0]["scope"] == "asset:BTC"
    finally:
        console.close()


def test_a_scopes_day_is_charted_an_hour_a_point_from_its_posts_counts(redis_server, tmp_path):
    """At the demo's volumes, minute points are noise: the day's charts are 24 hourly points, each
    hour's shares from all its posts, and the page says a point is an hour, in UTC."""
    redis.Redis.from_url(redis_server).flushdb()
    end = T0 + 86400
    hour = end - 3 * 3600  # the hour 21:00-22:00 UTC: one negative post in its first minute, nine positive half an hour on
    posts = [(hour + 5, "negative", -0.5)] + [(hour + 1800 + i, "positive", 0.5) for i in range(9)] + [(end - 30, "neutral", 0.0)]

    async def write() -> None:
        store = WindowStore.from_url(redis_server, bucket_s=60, retention_s=48 * 3600)
        items = [Scored(Post(f"d{i}", "$DOGE", ts, ("DOGE",), source="forum", channel="general"), label, score)
                 for i, (ts, label, score) in enumerate(posts)]
        await store.apply(items, {}, items[-1].post.created_at)
        await store.close()

    asyncio.run(write())
    console = Console(console_env(redis_server), tmp_path / "console.log")
    try:
        scope = console.json("/api/scopes/asset:DOGE", token=None)
        day, whole = scope["day"], scope["whole"]
        assert (day["step"], day["per"], whole["step"], whole["per"]) == (3600, "hour", 3600, "hour")
        assert day["t"] == list(range(end - 86400, end, 3600)) and len(whole["t"]) == 48
        at = day["t"].index(hour)
        assert day["posts"][at] == 10 and day["negative"][at] == 0.1 and day["positive"][at] == 0.9  # not (1/1 + 0/9) / 2
        assert day["negative"][at - 1] is None and day["posts"][-1] == 1  # no posts: a gap; the last hour ends at the data's end
        page = console.call("GET", "/scope/asset:DOGE")[1]
        assert "<h2>Last 24 h, per hour</h2>" in page and "<h2>Whole retention, per hour</h2>" in page
        said = page[page.index('id="chart-step"'):]
        assert "A point is the hour from its time on, UTC;" in said[: said.index("</p>")]
    finally:
        console.close()


def test_an_incident_is_named_in_the_consoles_urls_by_its_id_or_a_unique_start_of_six_characters(api_console, redis_server):
    """As `sentinel ack 36ae68f0`: a unique start of 6 or more characters names the incident in the
    ack and verdict URLs and the incident pages; a shorter or ambiguous one is a 400 saying so, and
    a browser's form goes back to its page saying it."""
    console, _ = api_console
    r = redis.Redis.from_url(redis_server, decode_responses=True)
    for ident in ("36ae68f000a534b25d04", "36ae68f111a534b25d04", "9c01d2e3f4a5b6c7d8e9"):
        put_incident(redis_server, ident, "asset:BTC")
    bearer = {"Authorization": "Bearer " + OPERATOR}

    status, body, _ = console.call("POST", "/api/incidents/9c01d2/ack", {"reason": "on it"}, headers=bearer)
    assert status == 200 and json.loads(body)["acknowledged"] == "9c01d2e3f4a5b6c7d8e9", body
    assert r.hget(ACKS_KEY, "9c01d2e3f4a5b6c7d8e9") == "on it" and r.hget(ACKS_KEY, "9c01d2") is None
    status, body, _ = console.call("POST", "/api/incidents/36ae68f1/verdict", {"verdict": "real"}, headers=bearer)
    assert status == 200 and json.loads(body)["incident"] == "36ae68f111a534b25d04", body
    assert console.json("/api/incidents/36ae68f111a534b25d04")["incident"]["verdict"]["verdict"] == "real"

    status, body, _ = console.call("POST", "/api/incidents/36ae68/ack", {"reason": "x"}, headers=bearer)
    assert status == 400 and "starts several incidents' ids: 36ae68f000a534b25d04, 36ae68f111a534b25d04" in body, body
    status, body, _ = console.call("POST", "/api/incidents/9c01/verdict", {"verdict": "real"}, headers=bearer)
    assert status == 400 and "give its first 6 characters or more" in body, body
    assert r.hget(ACKS_KEY, "36ae68f000a534b25d04") is None and console.json("/api/incidents/9c01d2e3f4a5b6c7d8e9")["incident"]["verdict"] is None
    assert console.call("POST", "/api/incidents/ffffff/ack", {"reason": "x"}, headers=bearer)[0] == 404  # none: unknown, as before
    # Over: said so (409), not "no open incident with that id", which read as a wrong id.
    put_incident(redis_server, "5e1f0a0b0c0d0e0f0a0b", "asset:SOL", state="resolved")
    status, body, _ = console.call("POST", "/api/incidents/5e1f0a/ack", {"reason": "x"}, headers=bearer)
    assert status == 409 and "incident 5e1f0a0b0c0d0e0f0a0b is resolved (declared over 2026-10-02T00:10:00Z, event time)" in body, body
    assert "(real or false-alarm) on its page" in body and r.hget(ACKS_KEY, "5e1f0a0b0c0d0e0f0a0b") is None

    # Pages and the API read by a unique start too: the page moves to its whole id (its address,
    # its forms' way back and its polls name the incident in full).
    viewer = {"Authorization": "Bearer " + VIEWER}
    status, _, headers = console.call("GET", "/incidents/9c01d2e3", headers=viewer)
    assert status == 303 and headers["location"] == "/incidents/9c01d2e3f4a5b6c7d8e9"
    assert console.json("/api/incidents/9c01d2")["incident"]["incident_id"] == "9c01d2e3f4a5b6c7d8e9"
    status, body, _ = console.call("GET", "/incidents/36ae68", headers=viewer)
    assert status == 400 and "starts several incidents' ids" in body
    assert console.call("GET", "/api/incidents/9c01", headers=viewer)[0] == 400
    assert console.call("GET", "/incidents/inc1", headers=viewer)[0] == 200  # a whole id, however short

    browser_op = {"Authorization": basic("alice", OPERATOR), "Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}
    form = {"reason": "x", "csrf": auth.csrf_token(TOKENS), "next": "/incidents/36ae68f000a534b25d04"}
    status, _, headers = console.call("POST", "/api/incidents/36ae68/ack", form, headers=browser_op, form=True)
    assert status == 303 and headers["location"] == "/incidents/36ae68f000a534b25d04"
    page = console.call("GET", "/incidents/36ae68f000a534b25d04", headers={**browser_op, "Cookie": headers["set-cookie"].split(";")[0]})[1]
    flash = page[page.index('id="flash"'):]
    assert "Not done: &#39;36ae68&#39; starts several incidents&#39; ids" in flash[: flash.index("</p>")], flash[:300]
    assert r.hget(ACKS_KEY, "36ae68f000a534b25d04") is None


def test_pages_link_assets_by_path_and_list_each_member_scope_once_with_what_moved(api_console, redis_server):
    """Behind a TLS Ingress the console sees http requests: absolute asset URLs would be http://
    on an https:// page (blocked as mixed content), and would echo whatever Host was sent."""
    console, _ = api_console
    r = redis.Redis.from_url(redis_server)
    summary = json.loads(r.hget(INCIDENTS_KEY, "inc1"))
    summary["members"] += [{"scope": scope, "kind": kind, "firing": True, "severity": "warning", "onset": "2026-10-02T00:00:00Z"}
                           for scope, kind in (("all", "sentiment_drop"), ("all", "volume_spike"), ("channel:General", "volume_spike"),
                                               ("channel:general", "volume_spike"))]  # channel names keep their case
    summary["members"][0] |= {"metric": "negative_share", "value": 0.75, "baseline": 0.199}  # the root: what moved
    r.hset(INCIDENTS_KEY, "inc1", json.dumps(summary))
    status, page, _ = console.call("GET", "/", headers={"Authorization": f"Bearer {VIEWER}", "Host": "evil.example:1",
                                                        "X-Forwarded-Proto": "https"})
    assert status == 200, page
    assert 'href="/static/console.css"' in page and 'src="/static/console.js"' in page
    assert "evil.example" not in page and "http://" not in page
    row = page[page.index('data-incident="inc1"'):]
    members = row[: row.index("</tr>")].split("<td>")[-2]  # the members cell, before the acknowledgement
    assert members.count(">all</a>") == 1 and ">channel:General</a>" in members and ">channel:general</a>" in members, members
    assert "negative share 75.0% against 19.9%" in row[: row.index("</tr>")]


def test_a_scopes_page_says_which_silences_are_in_force_over_it(api_console, redis_server):
    """Silenced from a scope's page, the operator came back to the page as it was, with no sign the
    silence was made; nor could anyone see there that the scope's alerts were held back. It lists
    the silences over the scope, its own name or a pattern matching it, of any kind; the API too."""
    console, _ = api_console
    browser_op = {"Authorization": basic("alice", OPERATOR), "Accept": HTML}
    form = {"scope": "asset:ETH", "kind": "volume_spike", "duration": "2h", "reason": "listing <b>news</b>",
            "csrf": auth.csrf_token(TOKENS), "next": "/scope/asset:ETH"}
    status, _, headers = console.call("POST", "/api/silences", form, headers=browser_op, form=True)
    assert (status, headers["location"]) == (303, "/scope/asset:ETH"), status
    bearer = {"Authorization": "Bearer " + OPERATOR}
    assert console.call("POST", "/api/silences", {"scope": "asset:*", "duration": "1h"}, headers=bearer)[0] == 200
    assert console.call("POST", "/api/silences", {"scope": "asset:BTC", "duration": "1h"}, headers=bearer)[0] == 200  # not over ETH
    made = {s["scope"]: s for s in console.json("/api/incidents")["silences"]}
    over = console.json("/api/scopes/asset:ETH")["silences"]
    assert sorted((s["id"], s["scope"], s["kind"]) for s in over) == sorted(
        (made[p]["id"], p, k) for p, k in (("asset:ETH", "volume_spike"), ("asset:*", None))), over
    page = console.call("GET", "/scope/asset:ETH", headers=browser_op)[1]
    items = silenced_items(page)
    until = {p: shown_at(made[p]["until"]) for p in made}
    said = {made[p]["id"]: text for p, text in (
        ("asset:ETH", f"silenced volume_spike until {until['asset:ETH']} (wall clock) by silence {made['asset:ETH']['id']} over asset:ETH, made by alice: listing <b>news</b>; silences."),
        ("asset:*", f"silenced every kind until {until['asset:*']} (wall clock) by silence {made['asset:*']['id']} over asset:*, made by operator token; silences."))}
    assert set(items) == set(said) and all(items[ident].startswith(text[len("silenced "):]) for ident, text in said.items()), items
    assert "<b>news</b>" not in page  # the reason is text
    assert [s["id"] for s in console.json("/api/scopes/asset:SOL")["silences"]] == [made["asset:*"]["id"]]
    assert 'id="silenced"' not in console.call("GET", "/scope/all", headers=browser_op)[1]


def silenced_items(page: str) -> dict[str, str]:
    """A scope page's silences, by id: each one's words, tags gone and spaces collapsed."""
    assert '<ul id="silenced">' in page, page
    start = page.index('<ul id="silenced">')
    end = min(page.find(mark, start) % len(page) for mark in ("<section>", 'id="behind"'))  # what follows the list
    items = re.split(r'<li><span class="badge sev-warning">silenced</span>', page[start:end])[1:]
    words = [html_lib.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", item))).strip() for item in items]
    return {re.search(r"by silence (\w+)", w).group(1): w for w in words}


def test_a_scopes_page_says_what_each_silence_over_it_holds_back_in_truth(api_console, redis_server, tmp_path):
    """With grouping on, delivery holds an incident's notices only for a silence over its root (for
    every kind it is about). A scope's page listed a silence over a member of another root's
    incident just as one over a root: the analyst read notices as held that went. Each silence now
    says what it holds back, and for each open incident of the scope whether it holds it."""
    console, _ = api_console
    viewer = {"Authorization": f"Bearer {VIEWER}"}
    bearer = {"Authorization": f"Bearer {OPERATOR}"}
    r = redis.Redis.from_url(redis_server)
    member = {"firing": True, "severity": "warning", "onset": "2026-10-02T00:00:00Z"}
    summary = {"incident_id": "mkt1", "root_scope": "all", "state": "open", "opened": T0 + 86400, "at": T0 + 86400 + 600, "market": True,
               "severity": "warning", "acked": None, "members": [{"scope": "all", "kind": "volume_spike", **member},
                                                                  {"scope": "asset:SOL", "kind": "volume_spike", **member}]}
    r.hset(INCIDENTS_KEY, "mkt1", json.dumps(summary))
    r.zadd(INCIDENTS_INDEX_KEY, {"mkt1": T0 + 86400})
    made = {}
    for name, body in (("sol", {"scope": "asset:SOL", "duration": "2h"}),  # a member of all's incident
                       ("eth_volume", {"scope": "asset:ETH", "duration": "2h", "kind": "volume_spike"}),  # inc1 is about sentiment_drop
                       ("eth", {"scope": "asset:ETH", "duration": "1h"})):  # inc1's root, every kind
        status, answer, _ = console.call("POST", "/api/silences", body, headers=bearer)
        assert status == 200, answer
        made[name] = json.loads(answer)["id"]
    # The notices delivery sends: inc1's held (the silence over its root), mkt1's not.
    assert console.json("/api/incidents/inc1")["silence"]["id"] == made["eth"] and console.json("/api/incidents/mkt1")["silence"] is None

    sol = console.json("/api/scopes/asset:SOL")["silences"]
    assert [(s["id"], s["holds"]) for s in sol] == [(made["sol"], {"grouping": "incidents", "incidents": [
        {"incident_id": "mkt1", "root_scope": "all", "member": True, "kinds": ["volume_spike"], "held": False, "by_this": False,
         "over_root": False, "held_by": []}]})], sol
    page = console.call("GET", "/scope/asset:SOL", headers=viewer)[1]
    said = silenced_items(page)[made["sol"]]
    assert ("holds back an incident's notices only where it is over the incident's root: over a member of an incident alone, it holds none of "
            "that incident's notices." in said), said
    assert "mkt1: not held back by it: this scope is a member; its root is all, and its notices still go." in said, said
    assert 'data-incident="mkt1" data-held="no"' in page and '<a href="/scope/all">all</a>' in page

    page = console.call("GET", "/scope/asset:ETH", headers=viewer)[1]
    said = silenced_items(page)
    assert "inc1: its notices are held back (root asset:ETH)." in said[made["eth"]], said
    assert "and the incident is about volume_spike alone, or its other kinds are silenced there too" in said[made["eth_volume"]]
    assert (f"inc1: not held back by it: the incident is about sentiment_drop, and silence {made['eth']} over asset:ETH holds its notices."
            in said[made["eth_volume"]]), said
    # Lifted, the silence of all kinds no longer holds inc1: the one of volume alone says its notices go.
    assert console.call("POST", f"/api/silences/{made['eth']}/delete", {}, headers=bearer)[0] == 200
    said = silenced_items(console.call("GET", "/scope/asset:ETH", headers=viewer)[1])
    assert set(said) == {made["eth_volume"]} and "the incident is about sentiment_drop, and its notices still go." in said[made["eth_volume"]]

    # With grouping off, every alert is notified on its own: a silence holds this scope's alerts of its kind.
    plain = Console(console_env(redis_server, SENTINEL_CONSOLE_READ_TOKEN=VIEWER, SENTINEL_ALERT_GROUPING="none"), tmp_path / "plain.log")
    try:
        said = silenced_items(plain.call("GET", "/scope/asset:ETH", headers=viewer)[1])[made["eth_volume"]]
        assert "It holds back the notification of each volume_spike alert on this scope (alert grouping is off" in said, said
        assert "inc1" not in said
        assert plain.json("/api/scopes/asset:SOL")["silences"][0]["holds"] == {"grouping": "none", "incidents": []}
    finally:
        plain.close()


def test_a_glob_over_a_member_and_its_root_is_not_said_to_hold_none_of_the_incident(api_console, redis_server):
    """A glob (`asset:*`) over a member scope is over its incident's root too, and holds that
    incident's notices; the page's line for the silence said it held none of an incident the scope
    is only a member of, beside the incident's own line saying they were held back."""
    console, _ = api_console
    viewer = {"Authorization": f"Bearer {VIEWER}"}
    bearer = {"Authorization": f"Bearer {OPERATOR}"}
    r = redis.Redis.from_url(redis_server)
    member = {"kind": "sentiment_drop", "firing": True, "severity": "warning", "onset": "2026-10-02T00:00:00Z"}
    r.hset(INCIDENTS_KEY, "ethsol", json.dumps({"incident_id": "ethsol", "root_scope": "asset:ETH", "state": "open", "opened": T0 + 86400,
                                                 "at": T0 + 87000, "market": False, "severity": "warning", "acked": None,
                                                 "members": [{"scope": "asset:ETH", **member}, {"scope": "asset:SOL", **member}]}))
    r.zadd(INCIDENTS_INDEX_KEY, {"ethsol": T0 + 86400})
    made = {}
    for scope in ("asset:*", "asset:SOL"):
        status, answer, _ = console.call("POST", "/api/silences", {"scope": scope, "duration": "2h"}, headers=bearer)
        assert status == 200, answer
        made[scope] = json.loads(answer)["id"]
    said = silenced_items(console.call("GET", "/scope/asset:SOL", headers=viewer)[1])
    glob, own = said[made["asset:*"]], said[made["asset:SOL"]]
    assert "ethsol: its notices are held back (root asset:ETH)." in glob, glob
    assert "alone, it holds none" in glob and "not held back" not in glob, glob
    # Over the member alone: it holds none of the incident's notices, and the page says so.
    assert (f"ethsol: not held back by it: this scope is a member; its root is asset:ETH, and silence {made['asset:*']} over asset:* holds its notices"
            in own), own
    assert "over a member of an incident alone, it holds none of that incident's notices" in own, own


def test_a_scopes_page_names_the_silence_holding_an_incident_and_the_incidents_page_says_it_in_the_same_words(api_console, redis_server, browser):
    """Session 57: a scope's page said an incident's notices were held by "another silence" without
    naming it, and with several in force the analyst could not tell which to lift; the incidents
    page listed each silence's bare fields, not what it holds back, in other words than the scope
    page. Now the scope page names each silence holding the incident (id, pattern, kind) with a link
    to its row on /incidents, and that row says the scope page's rule and the incidents it holds now."""
    console, _ = api_console
    viewer = {"Authorization": f"Bearer {VIEWER}"}
    bearer = {"Authorization": f"Bearer {OPERATOR}"}
    made = {}
    for name, body in (("volume", {"scope": "asset:ETH", "duration": "2h", "kind": "volume_spike"}),  # inc1 is about sentiment_drop
                       ("glob", {"scope": "asset:E*", "duration": "1h"})):  # over inc1's root, every kind: holds it
        status, answer, _ = console.call("POST", "/api/silences", body, headers=bearer)
        assert status == 200, answer
        made[name] = json.loads(answer)["id"]
    page = console.call("GET", "/scope/asset:ETH", headers=viewer)[1]
    said = silenced_items(page)
    assert (f"inc1: not held back by it: the incident is about sentiment_drop, and silence {made['glob']} over asset:E* holds its notices."
            in said[made["volume"]]), said
    assert f'<a href="/incidents#silence-{made["glob"]}">{made["glob"]}</a> over asset:E*' in page
    (held,) = console.json("/api/scopes/asset:ETH")["silences"][0]["holds"]["incidents"]
    assert held["held_by"] == [{"id": made["glob"], "scope": "asset:E*", "kind": None}], held

    listed = console.call("GET", "/incidents", headers=viewer)[1]
    cells = {}
    for ident in made.values():
        row = re.search(rf'<tr data-silence="{ident}" id="silence-{ident}">(.*?)</tr>', listed, re.S)
        assert row, listed
        cells[ident] = html_lib.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", row.group(1)))).strip()
    rule = ("Alerts are notified per incident: it holds back an incident's notices only where it is over the incident's root: "
            "over a member of an incident alone, it holds none of that incident's notices.")
    assert rule in said[made["glob"]] and f"{rule} Holding now: inc1." in cells[made["glob"]], cells
    assert "and the incident is about volume_spike alone, or its other kinds are silenced there too" in cells[made["volume"]], cells
    assert "Holding no open incident's notices now." in cells[made["volume"]], cells
    assert "<th>over (a scope or a pattern)</th>" in listed and "<th>what it holds back</th>" in listed
    api = {s["id"]: s["holding"] for s in console.json("/api/incidents")["silences"]}
    assert api == {made["glob"]: ["inc1"], made["volume"]: []}, api

    # In Chromium the name is a link to the silence's row, where it can be lifted.
    page = signed_in(browser, console)
    page.goto(console.url + "/scope/asset:ETH")
    page.locator(f'#silenced li[data-incident="inc1"] a[href="/incidents#silence-{made["glob"]}"]').first.click()
    page.wait_for_url(f"**/incidents#silence-{made['glob']}")
    target = page.locator(f"#silence-{made['glob']}")
    assert page.evaluate("document.querySelector(':target') && document.querySelector(':target').id") == f"silence-{made['glob']}"
    assert target.is_visible() and target.locator("button", has_text="Lift").count() == 1
    page.context.close()


def test_what_a_silence_holds_back_follows_the_workers_outbox_not_the_consoles_own_setting(api_console, redis_server, tmp_path):
    """A console started with a SENTINEL_ALERT_GROUPING other than the workers' (`sentinel console`
    from a shell that lacks it, with the workers' REDIS_URL) said of each silence what the workers
    do not do: "alert grouping is off" while they notified per incident, or the reverse. The
    workers' newest outbox entry says how they notify (an incident's `entry`, or one alert's
    `record`): the page goes by it, and by the setting only while the outbox holds none."""
    console, _ = api_console
    viewer = {"Authorization": f"Bearer {VIEWER}"}
    bearer = {"Authorization": f"Bearer {OPERATOR}"}
    r = redis.Redis.from_url(redis_server)
    status, answer, _ = console.call("POST", "/api/silences", {"scope": "asset:ETH", "duration": "2h"}, headers=bearer)
    assert status == 200, answer
    ident = json.loads(answer)["id"]
    plain = Console(console_env(redis_server, SENTINEL_CONSOLE_READ_TOKEN=VIEWER, SENTINEL_ALERT_GROUPING="none"), tmp_path / "plain.log")
    try:
        # The outbox empty: each console by its own setting.
        assert plain.json("/api/scopes/asset:ETH")["silences"][0]["holds"]["grouping"] == "none"
        assert console.json("/api/scopes/asset:ETH")["silences"][0]["holds"]["grouping"] == "incidents"
        # The workers group: an incident's entry is their newest.
        r.xadd(OUTBOX_KEY, {"entry": json.dumps({"records": [], "notice": None})})
        holds = plain.json("/api/scopes/asset:ETH")["silences"][0]["holds"]
        assert holds["grouping"] == "incidents" and [i["incident_id"] for i in holds["incidents"]] == ["inc1"], holds
        said = silenced_items(plain.call("GET", "/scope/asset:ETH", headers=viewer)[1])[ident]
        assert "Alerts are notified per incident" in said and "alert grouping is off" not in said, said
        # They no longer do: one alert's record is the newest.
        r.xadd(OUTBOX_KEY, {"record": json.dumps({"alert_id": "a1"})})
        assert console.json("/api/scopes/asset:ETH")["silences"][0]["holds"] == {"grouping": "none", "incidents": []}
        said = silenced_items(console.call("GET", "/scope/asset:ETH", headers=viewer)[1])[ident]
        assert "alert grouping is off" in said and "inc1" not in said, said
        assert console.json("/api/incidents")["grouping"] == "none"
        # With no silence in force, /api/incidents' `grouping` still says the workers' way, not the
        # console's own setting (incidents), as the session-57 review found it did.
        assert console.call("POST", f"/api/silences/{ident}/delete", {}, headers=bearer)[0] == 200
        listed = console.json("/api/incidents")
        assert listed["silences"] == [] and listed["grouping"] == "none", listed
    finally:
        plain.close()


def test_an_incident_page_says_a_silence_holds_its_notifications(api_console, redis_server):
    console, _ = api_console
    bearer = {"Authorization": f"Bearer {OPERATOR}"}
    other = {"scope": "asset:ETH", "duration": "2h", "kind": "volume_spike", "reason": "not this incident's kind"}
    assert console.call("POST", "/api/silences", other, headers=bearer)[0] == 200
    assert console.json("/api/incidents/inc1")["silence"] is None
    assert 'id="silenced"' not in console.call("GET", "/incidents/inc1", headers={"Authorization": f"Bearer {VIEWER}"})[1]
    status, body, _ = console.call("POST", "/api/silences", {"scope": "asset:*", "duration": "2h", "reason": "listing news"}, headers=bearer)
    assert status == 200, body
    held = console.json("/api/incidents/inc1")["silence"]
    assert held["scope"] == "asset:*" and held["reason"].startswith("listing news")
    page = console.call("GET", "/incidents/inc1", headers={"Authorization": f"Bearer {VIEWER}"})[1]
    assert 'id="silenced"' in page and "asset:*" in page and held["id"] in page
    # A resolved incident sends nothing more: its page said "Further notifications about it are held back".
    put_incident(redis_server, "res1", "asset:BTC", state="resolved")
    page = console.call("GET", "/incidents/res1", headers={"Authorization": f"Bearer {VIEWER}"})[1]
    assert 'id="silenced"' not in page and "held back" not in page and ">resolved</span>" in page


def test_an_incidents_members_say_on_how_many_posts_and_when_their_level_was_judged(api_console, redis_server):
    """The demo's ETH volume spike read "330 posts per 1h against 10" on the incident page and the
    overview an hour into the incident: a level judged at 12:02 on 11 posts. The summary's members
    now carry `judged` and `posts` and the pages say them, as the notices do; a summary from before
    says the level alone."""
    console, _ = api_console
    r = redis.Redis.from_url(redis_server)
    member = {"scope": "asset:ETH", "kind": "volume_spike", "firing": True, "severity": "warning", "onset": "2026-03-04T12:00:00Z",
              "metric": "posts", "value": 330.0, "baseline": 9.58}
    for ident, extra in (("judged1", {"judged": "2026-03-04T12:02:00Z", "posts": 11}), ("before1", {})):
        summary = {"incident_id": ident, "root_scope": "asset:ETH", "state": "open", "opened": T0 + 86400, "at": T0 + 86400 + 3600,
                   "market": False, "severity": "warning", "acked": None, "members": [member | extra]}
        r.hset(INCIDENTS_KEY, ident, json.dumps(summary))
        r.zadd(INCIDENTS_INDEX_KEY, {ident: T0 + 86400})
    viewer = {"Authorization": f"Bearer {VIEWER}"}
    page = console.call("GET", "/incidents/judged1", headers=viewer)[1]
    assert "330 posts per 1h against 10 (11 posts by 2026-03-04T12:02:00Z)" in page, page
    overview = console.call("GET", "/", headers=viewer)[1]
    row = overview[overview.index('data-incident="judged1"'):]
    assert "330 posts per 1h against 10 (11 posts by 2026-03-04T12:02:00Z)" in row[: row.index("</tr>")]
    before = console.call("GET", "/incidents/before1", headers=viewer)[1]
    assert "330 posts per 1h against 10</td>" in before and "posts by" not in before


def test_an_incident_page_shows_the_posts_from_its_roots_onset(api_console, redis_server):
    """Not the scope's last hour: the root's posts over one alert window from its onset (inc1's
    root, asset:ETH, from 2026-10-02T00:00:00Z)."""
    console, _ = api_console
    onset = T0 + 86400

    async def write() -> None:
        store = WindowStore.from_url(redis_server, bucket_s=60, retention_s=2 * 86400 + 3600)
        posts = [Scored(Post("eth-before", "$ETH before the onset", onset - 600, ("ETH",), source="forum", channel="general"), "negative", -1.0),
                 Scored(Post("eth-inside", "$ETH <b>team</b> is dumping", onset + 600, ("ETH",), source="forum", channel="general"), "negative", -0.999),
                 Scored(Post("eth-after", "$ETH an hour later", onset + 3600 + 600, ("ETH",), source="forum", channel="general"), "negative", -1.0)]
        await store.apply(posts, {}, T0 + 2 * 86400)
        await store.close()

    asyncio.run(write())
    posts = console.json("/api/incidents/inc1")["posts"]
    assert (posts["from"], posts["to"]) == ("2026-10-02T00:00:00Z", "2026-10-02T01:00:00Z")
    assert posts["negative"][0]["id"] == "eth-inside"
    shown = {p["id"] for p in posts["negative"] + posts["positive"]}
    assert "eth-before" not in shown and "eth-after" not in shown
    page = console.call("GET", "/incidents/inc1", headers={"Authorization": f"Bearer {VIEWER}"})[1]
    section = page[page.index('id="incident-posts-negative"'):]
    assert "eth-inside" in section[: section.index("</ul>")] and "<b>team" not in page
    # A viewer is told how to act, and an operator gets the forms instead.
    assert 'id="read-only"' in page and "Sign in" in page[page.index('id="read-only"'):]
    assert 'id="read-only"' not in console.call("GET", "/incidents/inc1", headers={"Authorization": f"Bearer {OPERATOR}"})[1]
    # Resolved, a verdict is left to give: a viewer was told nothing, the operator's form hidden from it.
    put_incident(redis_server, "done1", "asset:ETH", state="resolved")
    page = console.call("GET", "/incidents/done1", headers={"Authorization": f"Bearer {VIEWER}"})[1]
    hint = page[page.index('id="read-only"'):]
    assert "Sign in" in hint and "real or a false alarm" in hint[: hint.index("</p>")] and "acknowledge" not in hint[: hint.index("</p>")]
    page = console.call("GET", "/incidents/done1", headers={"Authorization": f"Bearer {OPERATOR}"})[1]
    assert 'id="read-only"' not in page and '<form class="verdict"' in page and '<form class="ack"' not in page


def test_recent_incidents_list_the_scopes_that_moved_with_the_root_as_the_command_line_does(api_console, redis_server):
    """The demo's incident, resolved: /incidents' recent table listed 6 members (the root among them)
    where `sentinel incidents`, the open table above it and the notices' "+5 related scopes" say 5."""
    console, _ = api_console
    r = redis.Redis.from_url(redis_server)
    member = {"kind": "sentiment_drop", "firing": False, "severity": "warning", "onset": "2026-10-02T00:00:00Z"}
    summary = {"incident_id": "done1", "root_scope": "asset:ETH", "state": "resolved", "opened": T0 + 86400, "at": T0 + 90000, "market": False,
               "severity": "warning", "acked": None, "members": [{"scope": s, **member} for s in ("asset:ETH", "all", "channel:general")]}
    r.hset(INCIDENTS_KEY, "done1", json.dumps(summary))
    r.zadd(INCIDENTS_INDEX_KEY, {"done1": T0 + 86400})
    status, listing, _ = console.call("GET", "/incidents", headers={"Authorization": f"Bearer {VIEWER}"})
    assert status == 200
    row = re.search(r'<tr><td><a href="/incidents/done1">.*?</tr>', listing[listing.index("Recent incidents"):], re.S).group(0)
    cells = re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)
    members = re.sub(r"<[^>]+>", "", cells[5])
    assert members == "all, channel:general", members
    assert '<a href="/scope/channel:general">' in cells[5]


def posts_in(redis_url: str, channel: str) -> str:
    """A post in `channel`, written through the real store, so that its scope has windows (and a
    page); returns the scope."""
    async def write() -> None:
        store = WindowStore.from_url(redis_url, bucket_s=60, retention_s=2 * 86400 + 3600)
        at = T0 + 2 * 86400 - 60
        await store.apply([Scored(Post("hostile-scope", "$BTC hostile channel", at, ("BTC",), source="forum", channel=channel), "negative", -0.5)], {}, at)
        await store.close()

    # In a thread of its own: beside the browser fixture this thread runs Playwright's event loop.
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, write()).result()
    return f"channel:{channel}"


def test_recent_incidents_link_their_root_to_its_scope_page_whatever_its_name(api_console, redis_server):
    """The recent incidents' roots were plain text where every other scope on the pages links to its
    page. A root named with markup, quotes and the URL's own characters (`/ # ? %`) links, escaped,
    to its own page, and the page is that scope's."""
    console, _ = api_console
    viewer = {"Authorization": f"Bearer {VIEWER}"}
    hostile = posts_in(redis_server, '<script>"onmouseover=alert(1) a/b#c?d%2Fe')
    plain = posts_in(redis_server, "general")
    r = redis.Redis.from_url(redis_server)
    member = {"kind": "sentiment_drop", "firing": False, "severity": "warning", "onset": "2026-10-02T00:00:00Z"}
    for ident, root in (("done1", hostile), ("done2", plain)):
        summary = {"incident_id": ident, "root_scope": root, "state": "resolved", "opened": T0 + 86400, "at": T0 + 90000, "market": False,
                   "severity": "warning", "acked": None, "members": [{"scope": root, **member}]}
        r.hset(INCIDENTS_KEY, ident, json.dumps(summary))
        r.zadd(INCIDENTS_INDEX_KEY, {ident: T0 + 86400})
    status, listing, _ = console.call("GET", "/incidents", headers=viewer)
    assert status == 200
    recent = listing[listing.index("Recent incidents"):]
    assert "<script>" not in listing and '"onmouseover' not in listing
    for ident, root in (("done1", hostile), ("done2", plain)):
        row = re.search(rf'<tr><td><a href="/incidents/{ident}">.*?</tr>', recent, re.S).group(0)
        root_cell = re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)[1]
        link = re.fullmatch(r'<a href="([^"]+)">([^<]*)</a>', root_cell)
        assert link, root_cell
        href, text = html_lib.unescape(link.group(1)), html_lib.unescape(link.group(2))
        assert text == root and href == "/scope/" + urllib.parse.quote(root, safe=":|"), (href, text)
        status, page, _ = console.call("GET", href, headers=viewer)
        assert status == 200 and html_lib.unescape(re.search(r"<h1>(.*?)</h1>", page).group(1)) == root, page[:500]
        assert console.json(f"/api/scopes/{urllib.parse.quote(root, safe=':|')}")["scope"] == root


def test_an_open_incident_whose_root_resolved_says_so_instead_of_a_blank(api_console, redis_server):
    """The demo's incident stayed open from the root's resolution (16:07) until declared over (16:22)
    while related scopes still fired; the open-incidents table's "what moved on the root" was blank."""
    console, _ = api_console
    r = redis.Redis.from_url(redis_server)
    member = {"kind": "sentiment_drop", "severity": "warning", "onset": "2026-10-02T00:00:00Z"}
    summary = {"incident_id": "tail1", "root_scope": "asset:SOL", "state": "open", "opened": T0 + 86400, "at": T0 + 90000, "market": False,
               "severity": "warning", "acked": None, "members": [{"scope": "asset:SOL", "firing": False, **member},
                                                                  {"scope": "channel:general", "firing": True, **member}]}
    r.hset(INCIDENTS_KEY, "tail1", json.dumps(summary))
    r.zadd(INCIDENTS_INDEX_KEY, {"tail1": T0 + 86400})
    for path in ("/", "/incidents"):
        status, listing, _ = console.call("GET", path, headers={"Authorization": f"Bearer {VIEWER}"})
        row = re.search(r'<tr class="incident[^"]*" data-incident="tail1".*?</tr>', listing, re.S).group(0)
        assert status == 200 and "root no longer firing; 1 related scope still firing" in row, row


def test_the_open_incidents_list_the_roots_kinds_and_related_scopes_sorted_as_the_command_line_does(api_console, redis_server):
    """The open-incidents table said the root's kinds in member order ("volume_spike, sentiment_drop")
    where `sentinel incidents` sorts them; one function says them for both now."""
    from rich.console import Console as Rich

    from sentinel.cli import incidents_table

    console, _ = api_console
    r = redis.Redis.from_url(redis_server)
    member = {"firing": True, "severity": "warning", "onset": "2026-10-02T00:00:00Z"}
    summary = {"incident_id": "kinds1", "root_scope": "asset:SOL", "state": "open", "opened": T0 + 86400, "at": T0 + 90000, "market": False,
               "severity": "warning", "acked": None,
               "members": [{"scope": s, "kind": k, **member} for s, k in (("asset:SOL", "volume_spike"), ("channel:trading", "volume_spike"),
                                                                             ("asset:SOL", "sentiment_drop"), ("all", "sentiment_drop"))]}
    r.hset(INCIDENTS_KEY, "kinds1", json.dumps(summary))
    r.zadd(INCIDENTS_INDEX_KEY, {"kinds1": T0 + 86400})
    cli = Rich(width=200, record=True)
    cli.print(incidents_table([summary], 200))
    said = cli.export_text()
    assert "sentiment_drop, volume_spike" in said and "all, channel:trading" in said, said
    for path in ("/", "/incidents"):
        status, listing, _ = console.call("GET", path, headers={"Authorization": f"Bearer {VIEWER}"})
        row = re.search(r'<tr class="incident[^"]*" data-incident="kinds1".*?</tr>', listing, re.S).group(0)
        cells = [re.sub(r"<[^>]+>", "", c).strip() for c in re.findall(r"<td>(.*?)</td>", row, re.S)]
        assert status == 200 and cells[4] == "sentiment_drop, volume_spike" and cells[6] == "all, channel:trading", cells


def test_a_resolved_incidents_page_says_when_its_root_resolved_and_when_it_was_declared_over(api_console, redis_server):
    """It said "last change" at the declaration alone, where its notice says "root resolved 16:07;
    declared over 16:22": the summary keeps when the root resolved, and the page says both."""
    from stream.alerts.correlator import summary as summarize
    from stream.alerts.grouping import Incident, Member
    from stream.alerts.message import over_words

    assert over_words("12:07", "12:22") == "root resolved 12:07; declared over 12:22"
    assert over_words("12:22", "12:22") == "resolved 12:22" and over_words(None, "12:22") == "declared over 12:22"
    root = Member("asset:ETH", "sentiment_drop", False, "warning", "2026-03-04T12:00:00Z", "negative_share", 0.75, 0.199)
    incident = Incident("i1", "asset:ETH", 100, {root.key: root})
    incident.root_resolved, incident.over_told = 400, 1300
    assert summarize(incident, "resolved", 1500)["root_resolved"] == 400
    assert "root_resolved" not in summarize(incident, "open", 1500)  # still open: nothing ended yet

    console, _ = api_console
    r = redis.Redis.from_url(redis_server)
    for ident, extra in (("over1", {"root_resolved": T0 + 86400 + 300}), ("over2", {"root_resolved": T0 + 86400 + 1200}), ("over3", {})):
        put_incident(redis_server, ident, "asset:ETH", state="resolved")
        stored = json.loads(r.hget(INCIDENTS_KEY, ident)) | {"at": T0 + 86400 + 1200} | extra
        r.hset(INCIDENTS_KEY, ident, json.dumps(stored))
    said = {}
    for ident in ("over1", "over2", "over3", "inc1"):
        status, page, _ = console.call("GET", f"/incidents/{ident}", headers={"Authorization": f"Bearer {VIEWER}"})
        assert status == 200, page
        said[ident] = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", re.search(r'<p class="summary">(.*?)</p>', page, re.S).group(1)))
    assert "root resolved 2026-10-02T00:05:00Z; declared over 2026-10-02T00:20:00Z." in said["over1"], said["over1"]
    assert "opened 2026-10-02T00:00:00Z, resolved 2026-10-02T00:20:00Z." in said["over2"], said["over2"]
    assert "declared over 2026-10-02T00:20:00Z." in said["over3"] and "last change" not in said["over3"], said["over3"]  # an older summary
    assert "last change 2026-10-02T00:10:00Z." in said["inc1"], said["inc1"]  # open
    # The recent incidents' "closed" column says it as the page does: it showed the declaration alone.
    listing = console.call("GET", "/incidents", headers={"Authorization": f"Bearer {VIEWER}"})[1]
    closed = {ident: re.sub(r"\s+", " ", html_lib.unescape(re.search(rf'href="/incidents/{ident}">.*?<td class="ended">(.*?)</td>', listing, re.S).group(1)))
              for ident in ("over1", "over2", "over3")}
    assert closed == {"over1": "root resolved 2026-10-02T00:05:00Z; declared over 2026-10-02T00:20:00Z",
                      "over2": "resolved 2026-10-02T00:20:00Z", "over3": "declared over 2026-10-02T00:20:00Z"}, closed


def test_a_browser_meets_refusals_in_the_consoles_frame_and_api_clients_as_before(api_console, redis_server):
    """A mistyped address, a bad query field and an old notice's link to an incident purged since
    were bare text pages with no way back: a browser gets the console's frame with the reason and a
    link to the overview, the status kept; API and other clients get what they got."""
    console, _ = api_console
    browser = {"Authorization": f"Bearer {VIEWER}", "Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}
    plain = {"Authorization": f"Bearer {VIEWER}"}
    for path, status, reason, text_said in (("/incidnets", 404, "no page of the console has this address", "Not Found"),
                                            ("/audit?since=abc", 400, "since: ", "since: "),
                                            ("/incidents/0123456789abcdef0123", 404, "no such incident", "no such incident")):
        code, page, headers = console.call("GET", path, headers=browser)
        assert code == status and headers["content-type"].startswith("text/html"), (path, code, page)
        assert "<title>" in page and 'id="back" href="/"' in page and reason in page[page.index('id="reason"'):], page
        assert headers["content-security-policy"].startswith("default-src 'self'")
        code, text, headers = console.call("GET", path, headers=plain)
        assert (code, headers["content-type"].split(";")[0]) == (status, "text/plain") and text.startswith(text_said) and "<" not in text, text
    assert "SENTINEL_RETENTION" in console.call("GET", "/incidents/0123456789abcdef0123", headers=browser)[1]
    code, body, headers = console.call("GET", "/api/incidents/0123456789abcdef0123", headers=browser)
    assert (code, json.loads(body)) == (404, {"error": "not found"})
    code, body, headers = console.call("GET", "/api/audit?since=abc", headers=browser)
    assert code == 400 and headers["content-type"].startswith("text/plain") and body.startswith("since: "), body
    assert console.call("GET", "/incidents/inc1", headers=browser)[0] == 200


HTML = "text/html,application/xhtml+xml,*/*;q=0.8"  # what a browser navigating asks for


def framed_reason(page: str, back: str = "/") -> str:
    """The reason an error page in the console's frame gives, checking where its link leads back."""
    assert "<title>" in page and f'id="back" href="{back}"' in page, page
    said = page[page.index('id="reason"'):]
    return said[said.index(">") + 1: said.index("</p>")]


def test_a_browser_meets_401_and_403_in_the_consoles_frame_with_the_challenge_and_never_a_credential(api_console, redis_server):
    """A browser's 401 and 403 were bare text (the page after a cancelled sign-in, a viewer's or a
    cross-site form's refused write): now the frame, status, challenge and refusal kept; API
    clients and other clients get the status and the text as before."""
    console, _ = api_console
    r = redis.Redis.from_url(redis_server, decode_responses=True)
    csrf = auth.csrf_token(TOKENS)
    wrong = basic("mallory", "guessed-" + VIEWER)
    cases = (  # method, path, headers, form, status, reason, where its link leads back (where the person was going)
        ("GET", "/", {"Authorization": wrong}, None, 401, "viewer or operator credentials required", "/"),
        ("GET", "/incidents/inc1", {}, None, 401, "viewer or operator credentials required", "/incidents/inc1"),
        ("GET", "/login?next=/incidents/inc1", {"Authorization": basic("bob", VIEWER)}, None, 401,
         "sign in with the operator token as the password", "/incidents/inc1"),
        ("POST", "/api/incidents/inc1/ack", {"Authorization": wrong}, {"reason": "x", "csrf": csrf, "next": "/incidents/inc1"}, 401,
         "operator credentials required", "/incidents/inc1"),
        ("POST", "/api/incidents/inc1/ack", {"Authorization": basic("bob", VIEWER)}, {"reason": "x", "csrf": csrf, "next": "/"}, 403,
         "operator credentials required", "/"),
        ("POST", "/api/silences", {"Authorization": basic("alice", OPERATOR)}, {"scope": "all", "duration": "1h", "csrf": "x" + csrf}, 403,
         "missing or wrong CSRF token", "/"),
        ("POST", "/api/silences", {"Authorization": basic("alice", OPERATOR), "Origin": "http://evil.example"},
         {"scope": "all", "duration": "1h", "csrf": csrf, "next": "/incidents"}, 403, "cross-origin write refused", "/incidents"),
    )
    for method, path, headers, form, status, reason, back in cases:
        code, page, got = console.call(method, path, form, headers={**headers, "Accept": HTML}, form=form is not None)
        assert (code, got["content-type"].split(";")[0]) == (status, "text/html"), (path, code, page)
        assert framed_reason(page, back) == reason, (path, page)
        assert got["content-security-policy"].startswith("default-src 'self'")
        assert (got.get("WWW-Authenticate") == 'Basic realm="Forum Sentinel console"') == (status == 401), (path, got)
        assert ('id="sign-in"' in page) == (status == 401), page
        for secret in (OPERATOR, VIEWER, csrf, "mallory", "guessed-"):
            assert secret not in page, (path, secret)
        # The same refusal to an API client or a client not asking for HTML: as before.
        for plain in ({}, {"Accept": "application/json"}):
            code, text, got = console.call(method, path, form, headers={**headers, **plain}, form=form is not None)
            assert (code, got["content-type"].split(";")[0], text) == (status, "text/plain", reason), (path, text)
            assert (got.get("WWW-Authenticate") is not None) == (status == 401)
    assert r.hget(ACKS_KEY, "inc1") is None and r.hlen(SILENCES_KEY) == 0  # nothing refused changed anything
    # An API read from a browser's address bar keeps its answer too.
    code, text, got = console.call("GET", "/api/overview", headers={"Accept": HTML})
    assert (code, got["content-type"].split(";")[0], text) == (401, "text/plain", "viewer or operator credentials required")


def test_a_framed_401_or_403_links_back_to_where_the_person_was_going_and_never_off_the_console(api_console):
    """A browser not signed in, or a viewer posting an operator's form, was sent back to the
    overview: the link now leads to the page asked for or the form's `next`, a path on this console
    only (a crafted `next` must not make the console's own page link elsewhere)."""
    console, _ = api_console
    viewer = {"Authorization": basic("bob", VIEWER), "Accept": HTML}
    status, page, _ = console.call("GET", "/scope/channel:off%20topic?x=1", headers={"Accept": HTML})
    assert status == 401 and framed_reason(page, "/scope/channel:off%20topic?x=1"), page
    status, page, _ = console.call("POST", "/api/silences", {"scope": "all", "duration": "1h", "next": "/scope/asset:ETH"}, headers=viewer, form=True)
    assert status == 403 and "Back to /scope/asset:ETH</a>" in page and framed_reason(page, "/scope/asset:ETH"), page
    for crafted in ("//evil.example/", "http://evil.example/", "https:/evil.example", "/\\evil.example", "\\\\evil.example",
                    "/\t/evil.example", "/\n/evil.example", "evil.example", " //evil.example"):
        status, page, _ = console.call("POST", "/api/incidents/inc1/ack", {"reason": "x", "next": crafted}, headers=viewer, form=True)
        assert status == 403 and framed_reason(page, "/") == "operator credentials required" and "evil" not in page, (crafted, page)
        status, page, _ = console.call("GET", "/login?" + urllib.parse.urlencode({"next": crafted}), headers=viewer)
        assert status == 401 and framed_reason(page, "/") and "evil" not in page, (crafted, page)


def test_reads_need_the_read_token_when_one_is_set(api_console):
    console, _ = api_console
    status, _, headers = console.call("GET", "/api/overview")
    assert status == 401 and headers.get("WWW-Authenticate", "").startswith("Basic")
    assert console.call("GET", "/", headers={"Authorization": basic("bob", VIEWER)})[0] == 200
    assert console.call("GET", "/api/overview", headers={"Authorization": "Bearer " + OPERATOR})[0] == 200


def test_writes_are_refused_unless_an_operator_asks_from_this_console(api_console, redis_server):
    console, _ = api_console
    r = redis.Redis.from_url(redis_server, decode_responses=True)
    ack = "/api/incidents/inc1/ack"
    assert console.call("POST", ack, {"reason": "x"})[0] == 401
    assert console.call("POST", ack, {"reason": "x"}, headers={"Authorization": "Bearer " + VIEWER})[0] == 403
    # A browser's Basic credentials alone: a cross-site form could send those.
    op = {"Authorization": basic("alice", OPERATOR)}
    assert console.call("POST", ack, {"reason": "x", "next": "/"}, headers=op, form=True)[0] == 403
    csrf = auth.csrf_token(TOKENS)
    evil = {**op, "Origin": "http://evil.example"}
    assert console.call("POST", ack, {"reason": "x", "csrf": csrf}, headers=evil, form=True)[0] == 403
    assert r.hget(ACKS_KEY, "inc1") is None  # nothing refused changed anything

    status, _, headers = console.call("POST", ack, {"reason": "on it", "csrf": csrf, "next": "//evil.example/"}, headers=op, form=True)
    assert status == 303 and headers["location"] == "/"  # never redirected off the console
    assert r.hget(ACKS_KEY, "inc1") == "on it (by alice)"
    (logged,) = console.json("/api/incidents/inc1")["acknowledgements"]
    assert (logged["by"], logged["via"], logged["reason"]) == ("alice", "console", "on it")  # who apart from what was typed
    assert abs(epoch(logged["at"]) - time.time()) < 60  # wall clock, when it was given
    version = console.json("/api/version")["alerts"]
    assert console.call("POST", ack, {"reason": "second look"}, headers={"Authorization": "Bearer " + OPERATOR})[0] == 200
    assert console.json("/api/version")["alerts"] != version  # open pages refresh to show it
    page = console.call("GET", "/incidents/inc1", headers={"Authorization": f"Bearer {VIEWER}"})[1]
    log = page[page.index('id="acknowledgements"'):]
    log = log[: log.index("</ul>")]
    assert "(wall clock) by alice (console): on it</li>" in log and "by operator token (console): second look" in log, log
    assert console.call("POST", "/api/incidents/none/ack", {"reason": "x"}, headers={"Authorization": "Bearer " + OPERATOR})[0] == 404

    bearer = {"Authorization": "Bearer " + OPERATOR}
    status, body, _ = console.call("POST", "/api/silences", {"scope": "asset:*", "duration": "2h", "kind": "volume_spike", "reason": "listing"}, headers=bearer)
    assert status == 200, body
    silence = json.loads(body)
    stored = json.loads(r.hget(SILENCES_KEY, silence["id"]))
    assert (stored["scope"], stored["kind"], stored["reason"]) == ("asset:*", "volume_spike", "listing")
    assert stored["until"] - stored["created_at"] == 7200
    for bad in ({"scope": "", "duration": "1h"}, {"scope": "asset:X", "duration": "forever"}, {"scope": "asset:X", "duration": "90d"},
                {"scope": "asset:X", "duration": "1h", "kind": "bogus"}):
        assert console.call("POST", "/api/silences", bad, headers=bearer)[0] == 400
    assert [s["id"] for s in console.json("/api/incidents")["silences"]] == [silence["id"]]
    assert console.call("POST", f"/api/silences/{silence['id']}/delete", {}, headers=bearer)[0] == 200
    assert r.hlen(SILENCES_KEY) == 0
    # One that ran out, not yet purged: nothing to lift (409), not "lifted" and logged after its end.
    ended = {"id": "e0d0e0d0", "scope": "asset:SOL", "kind": None, "until": time.time() - 60, "reason": "", "created_at": time.time() - 3660}
    r.hset(SILENCES_KEY, "e0d0e0d0", json.dumps(ended))
    status, body, _ = console.call("POST", "/api/silences/e0d0e0d0/delete", {}, headers=bearer)
    assert status == 409 and "silence e0d0e0d0 over asset:SOL already ended at" in body and "nothing to lift" in body, body
    assert not [e for e in console.json("/api/audit")["entries"] if e["target"] == "e0d0e0d0"]


def test_the_audit_log_shows_who_did_what_from_the_console(api_console, redis_server):
    """Acknowledged, silenced and lifted from the console by a signed-in user and by the operator
    token: the audit log (API and page, for viewers too) names who and what; a refused write is not in it."""
    console, _ = api_console
    csrf = auth.csrf_token(TOKENS)
    alice = {"Authorization": basic("alice", OPERATOR)}
    bearer = {"Authorization": "Bearer " + OPERATOR}
    assert console.call("POST", "/api/incidents/inc1/ack", {"reason": "x"}, headers={"Authorization": "Bearer " + VIEWER})[0] == 403
    assert console.call("POST", "/api/incidents/inc1/ack", {"reason": "on it", "csrf": csrf}, headers=alice, form=True)[0] == 303
    version = console.json("/api/version")["alerts"]
    status, body, _ = console.call("POST", "/api/silences", {"scope": "asset:eth", "duration": "2h", "reason": "listing", "csrf": csrf},
                                   headers=alice, form=True)
    assert status == 303, body
    (silence,) = console.json("/api/incidents")["silences"]
    assert (silence["scope"], silence["reason"], silence["by"], silence["via"]) == ("asset:ETH", "listing", "alice", "console")
    assert console.call("POST", f"/api/silences/{silence['id']}/delete", {}, headers=bearer)[0] == 200
    # Made and lifted between two polls: the counts are as they were, the pages refresh all the same.
    assert console.json("/api/version")["alerts"] != version

    logged = console.json("/api/audit")["entries"]
    assert [(e["action"], e["by"], e["via"], e["target"], e["scope"], e["reason"]) for e in logged] == [
        ("unsilence", "operator token", "console", silence["id"], "asset:ETH", ""),
        ("silence", "alice", "console", silence["id"], "asset:ETH", "listing"),
        ("acknowledge", "alice", "console", "inc1", "asset:ETH", "on it"),
    ]
    assert [e["action"] for e in console.json("/api/audit?by=alice&action=acknowledge")["entries"]] == ["acknowledge"]
    assert [e["action"] for e in console.json("/api/audit?action=silence&action=unsilence&limit=1")["entries"]] == ["unsilence"]
    assert console.json("/api/audit?since=0s")["entries"] == []
    assert len(console.json("/api/audit?since=3000000d")["entries"]) == 3  # everything, not "Redis is unavailable"
    for bad in ("since=forever", "limit=0", "limit=many", "limit=1_0", "limit=%C2%B2", "limit=99999", "action=mute"):
        assert console.call("GET", f"/api/audit?{bad}", headers={"Authorization": "Bearer " + VIEWER})[0] == 400, bad
    assert console.call("GET", "/api/audit")[0] == 401  # a reader's token, as every page

    page = console.call("GET", "/audit?by=alice", headers={"Authorization": "Bearer " + VIEWER})[1]
    table = page[page.index('id="audit"'):page.index("</table>")]
    rows = re.findall(r"<tr data-entry=.*?</tr>", table, re.S)
    assert len(rows) == 2 and "silence" in rows[0] and "listing" in rows[0] and '<a href="/incidents/inc1">inc1</a>' in rows[1], table
    assert 'href="/audit"' in page  # in the navigation of every page


def test_an_operator_records_a_verdict_on_an_incident_open_or_resolved(api_console, redis_server):
    console, _ = api_console
    put_incident(redis_server, "old1", "asset:BTC", state="resolved")
    csrf = auth.csrf_token(TOKENS)
    alice = {"Authorization": basic("alice", OPERATOR)}
    viewer = {"Authorization": "Bearer " + VIEWER}
    assert console.call("POST", "/api/incidents/old1/verdict", {"verdict": "real"}, headers=viewer)[0] == 403
    assert console.call("POST", "/api/incidents/old1/verdict", {"verdict": "maybe", "csrf": csrf}, headers=alice, form=True)[0] == 400
    assert console.call("POST", "/api/incidents/none/verdict", {"verdict": "real", "csrf": csrf}, headers=alice, form=True)[0] == 404
    page = console.call("GET", "/incidents/old1", headers=alice)[1]
    assert 'class="verdict"' in page and 'id="verdict"' not in page  # the form, on a resolved incident too
    assert 'class="verdict"' not in console.call("GET", "/incidents/old1", headers=viewer)[1]
    status, _, headers = console.call("POST", "/api/incidents/old1/verdict", {"verdict": "false-alarm", "reason": "one whale's posts", "csrf": csrf,
                                                                               "next": "/incidents/old1"}, headers=alice, form=True)
    assert status == 303 and headers["location"] == "/incidents/old1"
    shown = console.json("/api/incidents/old1")["incident"]["verdict"]
    assert (shown["verdict"], shown["by"], shown["via"], shown["reason"]) == ("false-alarm", "alice", "console", "one whale's posts")
    assert console.json("/api/incidents/inc1")["incident"]["verdict"] is None
    page = console.call("GET", "/incidents/old1", headers=viewer)[1]
    said = page[page.index('id="verdict"'):]
    assert said[: said.index("</p>")].count("false-alarm") == 1 and "by alice (console): one whale&#39;s posts" in said
    listing = console.call("GET", "/incidents", headers=viewer)[1]
    recent = listing[listing.index("Recent incidents"):]
    assert "<td>false-alarm</td>" in recent
    (logged,) = console.json("/api/audit?action=verdict")["entries"]
    assert (logged["target"], logged["verdict"], logged["by"], logged["kind"]) == ("old1", "false-alarm", "alice", "sentiment_drop")
    # The incidents page counts them into the alerts' precision.
    assert console.call("POST", "/api/incidents/inc1/verdict", {"verdict": "real", "csrf": csrf}, headers=alice, form=True)[0] == 303
    # The API's fields as before, `judged` and the interval added; the page shows both, not a bare rate.
    row = console.json("/api/incidents")["precision"][0]
    assert row == {"kind": "all incidents", "real": 1, "false_alarm": 1, "precision": 0.5, "judged": 2,
                   "interval_95": [pytest.approx(0.0945, abs=1e-4), pytest.approx(0.9055, abs=1e-4)]}
    listing = console.call("GET", "/incidents", headers=viewer)[1]
    table = listing[listing.index('id="precision"'):]
    assert "<tr><td>all incidents</td><td>1</td><td>1</td><td>2 (few)</td><td>0.50 (0.09-0.91)</td></tr>" in table[: table.index("</table>")]
    assert "in brackets its 95% interval (Wilson&#39;s)" in table or "in brackets its 95% interval (Wilson's)" in table


def test_the_api_refuses_operator_input_the_forms_would_refuse_and_says_when_a_silence_matches_no_scope(api_console, redis_server):
    """The forms' limits are the server's too: an API client is held to them. A silence that could
    never match is refused saying what is accepted; one that matches no scope seen yet is kept, and said."""
    console, _ = api_console
    r = redis.Redis.from_url(redis_server, decode_responses=True)
    bearer = {"Authorization": "Bearer " + OPERATOR}
    for scope in ("Nonexistent:scope", "<img src=x onerror=alert(1)>", "asset:E\u202eTH", "asset:", "asset:a|b"):
        status, body, _ = console.call("POST", "/api/silences", {"scope": scope, "duration": "1h"}, headers=bearer)
        assert status == 400 and body.startswith("scope: "), (scope, body)
    status, body, _ = console.call("POST", "/api/silences", {"scope": "all", "duration": "1h"}, headers=bearer)
    assert status == 200 and json.loads(body)["warning"] is None  # posts came for `all`
    for silence in ({"scope": "asset:ETH", "duration": "1h", "reason": "x" * 6000}, {"scope": "asset:ETH", "duration": "1h", "reason": "a \u202eb"}):
        status, body, _ = console.call("POST", "/api/silences", silence, headers=bearer)
        assert status == 400 and body.startswith("reason: "), body
    status, body, _ = console.call("POST", "/api/incidents/inc1/verdict", {"verdict": "real", "reason": "y" * 5000}, headers=bearer)
    assert status == 400 and "at most 500" in body
    assert console.call("POST", "/api/incidents/inc1/ack", {"reason": "z" * 501}, headers=bearer)[0] == 400
    assert r.hlen(SILENCES_KEY) == 1 and r.hget(ACKS_KEY, "inc1") is None
    assert console.json("/api/incidents/inc1")["incident"]["verdict"] is None

    made = json.loads(console.call("POST", "/api/silences", {"scope": "ASSET:eth", "duration": "1h", "reason": " " + "w" * 500}, headers=bearer)[1])
    assert (made["scope"], made["reason"], made["warning"]) == ("asset:ETH", "w" * 500, None)  # at the limit: kept
    made = json.loads(console.call("POST", "/api/silences", {"scope": "channel:General", "duration": "1h"}, headers=bearer)[1])
    assert made["scope"] == "channel:General" and "did you mean channel:general" in made["warning"]  # case kept, and said


def test_a_refused_forms_fields_go_back_cut_to_fit_the_cookie_never_dropped():
    """A browser drops a cookie over 4 KB and the reason why with it. A long non-ASCII reason (475
    accented letters, 8 bytes each escaped) dropped every kept field, the scope and duration too:
    since session 53 the cookie is UTF-8 encrypted, base64'd (an emoji under 6 bytes), and a reason
    of 500 emoji fits whole; what still does not (every field 500 emoji) is cut to what fits, the
    fields cut named in `cut`, the form's action whole."""
    from starlette.requests import Request
    from starlette.responses import Response

    from stream.console.app import _flash, _flashed

    typed = {"action": "/api/silences", "scope": "asset:SOL", "kind": "volume_spike", "duration": "90d"}
    for reason, whole in (("short", True), ("\u00e9" * 475, True), ("\u00e9" * 500, True), ("\u20ac" * 500, True),
                          ("\U0001f600" * 500, True), ("\U0001f600" * 250 + "x" * 250, True)):
        cookie = _flashed(Response(), TOKENS, "error", "duration: more than zero", typed | {"reason": reason}, owner=ALICE).headers["set-cookie"]
        value = cookie.split(";")[0]
        assert len(value) < 4096, len(value)
        read = _flash(Request({"type": "http", "headers": [(b"cookie", value.encode())]}), TOKENS, owner=ALICE)
        assert read is not None and read["text"] == "duration: more than zero", value
        kept = read["kept"]
        assert {k: kept[k] for k in typed} == typed, kept  # every other field whole
        assert reason.startswith(kept["reason"]) and (kept["reason"] == reason) == whole and ("cut" in kept) != whole, kept
        assert whole or (kept["cut"] == "reason" and len(kept["reason"]) >= 200), kept
    emoji = {k: "\U0001f600" * 500 for k in ("scope", "kind", "duration", "reason", "verdict")}
    value = _flashed(Response(), TOKENS, "error", "no", {"action": "/api/silences"} | emoji, owner=ALICE).headers["set-cookie"].split(";")[0]
    assert len(value) < 4096, len(value)
    kept = _flash(Request({"type": "http", "headers": [(b"cookie", value.encode())]}), TOKENS, owner=ALICE)["kept"]
    assert kept["action"] == "/api/silences" and kept["cut"] == "duration kind reason scope verdict", kept
    assert all(emoji[k].startswith(kept[k]) and len(kept[k]) >= 100 for k in emoji), kept  # cut to what fits, not to nothing


def test_a_flash_messages_own_text_is_cut_to_fit_the_cookie_never_dropped():
    """FLASH_CHARS bounds a message's characters, not its bytes: a silence's warning naming scopes in
    a cased script (Deseret, 12 bytes a letter escaped; names differing in case are offered) or a
    duration of emoji echoed in its refusal made a cookie of 6 KB, which a browser drops, the
    message and the form's fields with it. The text is now cut to fit, ending in an ellipsis, the
    form's action and fields still in it. Since session 53 (UTF-8, encrypted) the warning alone fits
    whole; with a duration of 500 emoji echoed it still does not."""
    from starlette.requests import Request
    from starlette.responses import Response

    from stream.alerts.silences import unmatched
    from stream.console.app import FLASH_CHARS, MAX_FLASH_BYTES, _flashes, _flashed

    upper, lower = "\U00010400" * 128, "\U00010428" * 128
    warning = unmatched("channel:" + lower, ["channel:" + upper, "channel:" + upper[:64] + lower[64:], "channel:" + lower[:64] + upper[64:]])
    assert warning is not None and "did you mean" in warning
    typed = {"action": "/api/silences", "scope": "asset:SOL", "duration": "\U0001f600" * 500, "reason": "listing"}
    for kind, text, kept, page in (("note", warning, None, None),
                                   ("error", f"duration: bad duration '{typed['duration']}'", typed, "/scope/channel:" + "\U0001f600" * 256)):
        value = _flashed(Response(), TOKENS, kind, text, kept, owner=ALICE, page=page).headers["set-cookie"].split(";")[0].partition("=")[2]
        assert len(value) <= MAX_FLASH_BYTES, len(value)
        read = _flashes(Request({"type": "http", "headers": [(b"cookie", f"sentinel_flash={value}".encode())]}), TOKENS, owner=ALICE)
        if kept is None:
            assert len(read) == 1 and read[0]["text"] == text[:FLASH_CHARS], read
            continue
        assert len(read) == 1 and read[0]["text"].endswith("\u2026") and text.startswith(read[0]["text"][:-1]), read
        assert len(read[0]["text"]) >= 100, read  # cut to what fits, not to nothing
        assert kept is None or read[0]["kept"]["action"] == "/api/silences", read


def seal_51(content: str) -> str:
    """The owner-less seal of consoles of sessions 49 to 51 (auth.flash_seal as it was until session 52)."""
    return hmac.new(OPERATOR.encode(), b"sentinel-console-flash\0" + content.encode(), hashlib.sha256).hexdigest()[:32]


def seal_52(content: str, owner: str) -> str:
    """The owner's seal of session 52's consoles (auth.flash_seal as it was until session 53: signed, not encrypted)."""
    whose = hashlib.sha256(owner.encode("utf-8", "surrogatepass")).digest()
    return hmac.new(OPERATOR.encode(), b"sentinel-console-flash-for\0" + whose + content.encode(), hashlib.sha256).hexdigest()[:32]


def test_consoles_before_and_after_session_53_ignore_each_others_flash_cookies_never_a_500():
    """During a rollout a refused form's cookie may be written by one version and read by the other
    (console.md). This console's cookie is encrypted for its owner: the readers of sessions 50, 51
    and 52 (their JSON reader, then their seal), as they were, find no JSON and show nothing, never
    raising. A cookie those consoles wrote (signed JSON, its fields readable by whoever holds it; no
    owner under session 51's seal, no time under session 50's) is ignored by this one, quietly."""
    from starlette.requests import Request
    from starlette.responses import Response

    from stream.console.app import _flash, _flashed

    def sealed_old(value: str, seal_of) -> dict | None:
        try:  # as their _flash/_flashes read it
            found = json.loads(urllib.parse.unquote(value.partition("=")[2]))
        except (ValueError, RecursionError):
            return None
        if not isinstance(found, dict):
            return None
        seal = found.pop("seal", None)
        if not isinstance(seal, str) or not hmac.compare_digest(seal_of(json.dumps(found, sort_keys=True)), seal):
            return None
        return found

    def read_old(value: str, now: float, seal_of) -> list[dict]:
        found = sealed_old(value, seal_of)
        if found is None:
            return []
        also = found.pop("also", [])
        return [e for e in [found, *(also if isinstance(also, list) else [])][:4]
                if isinstance(e, dict) and ("at" not in found or isinstance(e.get("at"), int) and now - e["keep"] - 60 <= e["at"] <= now + 60)]

    old_seals = (seal_51, lambda content: seal_52(content, ALICE))  # session 50's seal is session 51's, with no time
    typed = {"action": "/api/silences", "scope": "channel:Крипто", "kind": "volume_spike", "duration": "90d"}
    earlier = [{"kind": "error", "text": "Redis was unavailable", "at": int(time.time()), "keep": 600,
                "kept": {"action": "/api/incidents/inc1/ack", "reason": "desk"}}]
    for reason in ("r\u00e9sum\u00e9", "\u00e9" * 475, "\U0001f600" * 500):
        value = _flashed(Response(), TOKENS, "error", "duration: more than zero", typed | {"reason": reason}, owner=ALICE,
                         earlier=earlier).headers["set-cookie"].split(";")[0]
        assert _flash(Request({"type": "http", "headers": [(b"cookie", value.encode())]}), TOKENS, owner=ALICE) is not None  # its own reads it
        assert all(read_old(value, time.time(), seal_of) == [] for seal_of in old_seals), value
    now = int(time.time())
    written_51 = {"kind": "error", "text": "x", "kept": typed, "at": now, "keep": 600}
    for written, seal_of in (({"kind": "error", "text": "x", "kept": typed}, seal_51), ({"kind": "note", "text": "x"}, seal_51),
                             (written_51, seal_51), (written_51 | {"kept": typed | {"form": "0" * 16}}, old_seals[1])):  # sessions 49 to 52
        cookie = "sentinel_flash=" + urllib.parse.quote(json.dumps(written | {"seal": seal_of(json.dumps(written, sort_keys=True))}), safe="")
        assert read_old(cookie, now, seal_of)  # a cookie that console sealed, and read
        assert _flash(Request({"type": "http", "headers": [(b"cookie", cookie.encode())]}), TOKENS, owner=ALICE) is None, written


def test_a_flash_cookies_bytes_hold_none_of_what_was_typed():
    """Until session 53 the cookie was signed, not encrypted: a refused silence's scope, reason and
    duration were in it as percent-escaped JSON for anyone who read it (a shared machine, a proxy's
    log). Its value, and what its base64 decodes to, now hold none of the typed fields nor the
    message's text, and two cookies of one message differ (a fresh nonce each)."""
    from starlette.responses import Response

    from stream.console.app import _flashed

    typed = {"action": "/api/silences", "scope": "asset:SECRETSCOPE", "duration": "90d", "reason": "call Jo on 555-0100 r\u00e9sum\u00e9"}
    values = [_flashed(Response(), TOKENS, "error", "duration: more than zero", typed, owner=ALICE).headers["set-cookie"].split(";")[0].partition("=")[2]
              for _ in range(2)]
    assert values[0] != values[1] and all(v.startswith(auth.FLASH_PREFIX) for v in values), values
    for value in values:
        body = value[len(auth.FLASH_PREFIX):]
        decoded = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        for shown in (value, urllib.parse.unquote(value), decoded.decode("latin-1")):
            for secret in ("SECRETSCOPE", "555-0100", "call Jo", "r\u00e9sum\u00e9", "more than zero", "/api/silences"):  # none short enough to be chance
                assert secret not in shown, (secret, shown[:80])


def test_a_flash_cookie_is_read_only_by_the_caller_it_was_sealed_for():
    """The seal is over the flash's owner (auth.flash_owner): the operator alice who wrote it reads
    it; alice as a viewer, bob, a bearer token's operator or nobody signed in read nothing of it."""
    from starlette.requests import Request
    from starlette.responses import Response

    from stream.console.app import _flashes, _flashed

    typed = {"action": "/api/silences", "scope": "asset:SOL", "reason": "call Jo"}
    value = _flashed(Response(), TOKENS, "error", "no", typed, owner=ALICE).headers["set-cookie"].split(";")[0]
    request = Request({"type": "http", "headers": [(b"cookie", value.encode())]})
    assert [e["kept"]["reason"] for e in _flashes(request, TOKENS, owner=ALICE)] == ["call Jo"]
    for header in (basic("alice", VIEWER), basic("bob", OPERATOR), f"Bearer {OPERATOR}", None, basic("alice", "wrong")):
        assert _flashes(request, TOKENS, owner=auth.flash_owner(auth.caller(header, TOKENS))) == [], header


def test_a_flash_cookie_opens_only_under_the_operator_token_it_was_sealed_with():
    """The key is the operator token's alone (HKDF, a purpose of its own): a console with another
    token, or anyone holding only the CSRF token (in every operator page's HTML), neither reads a
    cookie nor writes one this console opens. A key that ignored the token passed every other test."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    from starlette.requests import Request
    from starlette.responses import Response

    from stream.console.app import _flashes, _flashed

    typed = {"action": "/api/silences", "scope": "asset:SOL", "reason": "call Jo"}
    other = auth.Tokens(read=VIEWER, operator=OPERATOR + "-rotated")
    value = _flashed(Response(), TOKENS, "error", "no", typed, owner=ALICE).headers["set-cookie"].split(";")[0]
    request = Request({"type": "http", "headers": [(b"cookie", value.encode())]})
    assert [e["kept"]["reason"] for e in _flashes(request, TOKENS, owner=ALICE)] == ["call Jo"]
    assert _flashes(request, other, owner=ALICE) == []  # another console's token (or the token rotated): nothing, no error
    assert _flashes(Request({"type": "http", "headers": [(b"cookie", _flashed(Response(), other, "error", "no", typed, owner=ALICE)
                                                         .headers["set-cookie"].split(";")[0].encode())]}), TOKENS, owner=ALICE) == []
    # A forger who read the CSRF token from a page: the key is neither it nor derived from it as from the operator token.
    csrf = auth.csrf_token(TOKENS)
    content = json.dumps({"kind": "error", "text": "forged", "at": int(time.time()), "keep": 60, "kept": typed}).encode()
    context = b"sentinel-console-flash-for\0" + hashlib.sha256(ALICE.encode()).digest()
    nonce = bytes(auth.FLASH_NONCE_BYTES)
    forged = [auth.flash_seal(auth.Tokens(read=None, operator=csrf), content, owner=ALICE, nonce=nonce)]
    for key in (csrf.encode(), hashlib.sha256(OPERATOR.encode()).digest(), hashlib.sha256(csrf.encode()).digest()):
        forged.append(auth.FLASH_PREFIX + base64.urlsafe_b64encode(nonce + AESGCM(key).encrypt(nonce, content, context)).decode().rstrip("="))
    assert auth.flash_key(OPERATOR) not in (csrf.encode(), OPERATOR.encode()) and len(auth.flash_key(OPERATOR)) == 32
    for value in forged:
        assert auth.flash_open(TOKENS, value, owner=ALICE) is None, value
        assert _flashes(Request({"type": "http", "headers": [(b"cookie", f"sentinel_flash={value}".encode())]}), TOKENS, owner=ALICE) == []


def test_a_flash_cookie_lasts_as_long_as_its_purpose_under_its_seal():
    """The issued-at time is sealed with the message: a refusal's message is read for 60 s, a
    Redis-away form's for 10 minutes, and not after, whatever the browser keeps; one dated ahead of
    the clock (beyond a replica's skew) or with its time changed is refused. A replica whose clock
    is up to FLASH_SKEW_S ahead of the writer's reads it for its whole keep, as one behind does
    (it read a 60 s message for 60 s less its lead, and none a minute ahead: the refusal's page
    said nothing, its typed fields lost)."""
    from starlette.requests import Request
    from starlette.responses import Response

    from stream.console.app import FLASH_SKEW_S, _flash, _flashed

    def read(value: str, now: float) -> dict | None:
        return _flash(Request({"type": "http", "headers": [(b"cookie", value.encode())]}), TOKENS, owner=ALICE, now=now)

    t = 1_790_000_000
    typed = {"action": "/api/silences", "scope": "asset:SOL", "duration": "2h"}
    for keep in (60, 600):
        cookie = _flashed(Response(), TOKENS, "error", "no", typed, max_age=keep, owner=ALICE, now=t).headers["set-cookie"]
        assert f"Max-Age={keep}" in cookie, cookie
        value = cookie.split(";")[0]
        assert read(value, t) is not None and read(value, t + keep)["kept"] == typed
        assert read(value, t - FLASH_SKEW_S) is not None and read(value, t + keep + FLASH_SKEW_S)["kept"] == typed  # a replica's skew
        assert read(value, t + keep + FLASH_SKEW_S + 1) is None and read(value, t - FLASH_SKEW_S - 1) is None, keep
        for at in range(len("sentinel_flash=f1."), len(value)):  # the time is under the tag, as all else: any change is refused
            # Its top bits changed: the last character's low ones may be padding, which decodes alike.
            flipped = value[:at] + ("w" if value[at] in "ABCDEFGHIJKLMNOP" else "A") + value[at + 1:]
            assert read(flipped, t) is None, at
    # A message kept past its time by another's cookie is dropped, the other read as ever.
    old = _flash(Request({"type": "http", "headers": [(b"cookie", _flashed(Response(), TOKENS, "error", "away", typed, max_age=600, owner=ALICE, now=t)
                                                              .headers["set-cookie"].split(";")[0].encode())]}), TOKENS, owner=ALICE, now=t)
    both = _flashed(Response(), TOKENS, "error", "bidi", {"action": "/api/incidents/inc1/ack", "reason": "r"}, owner=ALICE, earlier=[old], now=t + 30)
    assert "Max-Age=570" in both.headers["set-cookie"], both.headers["set-cookie"]  # as long as the longest-lived message
    from stream.console.app import _flashes
    request = Request({"type": "http", "headers": [(b"cookie", both.headers["set-cookie"].split(";")[0].encode())]})
    assert [e["text"] for e in _flashes(request, TOKENS, owner=ALICE, now=t + 60)] == ["bidi", "away"]
    assert [e["text"] for e in _flashes(request, TOKENS, owner=ALICE, now=t + 30 + 60 + FLASH_SKEW_S + 1)] == ["away"]


def test_the_flash_cookie_is_secure_over_https_and_plain_on_plain_http(redis_server, tmp_path):
    """The flash cookie (a refused form's reason and fields) had no Secure flag, so a browser would
    send it on a plain-http request to the same host. It is Secure where the request came over
    https: as uvicorn reads it (X-Forwarded-Proto from a proxy it trusts: FORWARDED_ALLOW_IPS,
    127.0.0.1 by default, the address this test calls from), or on the host of an https
    SENTINEL_CONSOLE_URL (an Ingress ending TLS). Plain http to 127.0.0.1 (a port-forward,
    `sentinel run --console`) keeps a plain cookie, which a browser would not store otherwise."""
    seeded_store(redis_server)
    put_incident(redis_server, "inc1", "asset:ETH")
    console = Console(console_env(redis_server, SENTINEL_CONSOLE_READ_TOKEN=VIEWER, SENTINEL_CONSOLE_OPERATOR_TOKEN=OPERATOR,
                                  SENTINEL_CONSOLE_URL="https://sentinel.example.com"), tmp_path / "console.log")
    browser_op = {"Authorization": basic("alice", OPERATOR), "Accept": HTML}
    form = {"scope": "asset:BTC", "duration": "0m", "reason": "r", "csrf": auth.csrf_token(TOKENS), "next": "/incidents/inc1"}

    def attributes(cookie: str) -> set[str]:
        return {part.strip().split("=")[0].lower() for part in cookie.split(";")[1:]}

    try:
        for how, extra, secure in (("plain http", {}, False), ("proxied https", {"X-Forwarded-Proto": "https"}, True),
                                   ("the console URL's host", {"Host": "sentinel.example.com"}, True),
                                   ("another host's https", {"Host": "elsewhere.example.com"}, False),
                                   # An Ingress serving the console's host over plain http too (no redirect to
                                   # https) says so: a Secure cookie there was dropped by the browser, and the
                                   # refused form's reason and fields with it.
                                   ("plain http to the console URL's host", {"Host": "sentinel.example.com", "X-Forwarded-Proto": "http"}, False)):
            status, _, headers = console.call("POST", "/api/silences", form, headers={**browser_op, **extra}, form=True)
            assert status == 303 and "set-cookie" in headers, (how, status)
            assert ("secure" in attributes(headers["set-cookie"])) == secure, (how, headers["set-cookie"])
            assert {"httponly", "samesite"} <= attributes(headers["set-cookie"]), headers["set-cookie"]
            # Shown once, then cleared: the clearing cookie alike (a Secure one is replaced only by one).
            status, _, cleared = console.call("GET", "/incidents/inc1", headers={**browser_op, **extra, "Cookie": headers["set-cookie"].split(";")[0]})
            assert status == 200 and "Max-Age=0" in cleared["set-cookie"], (how, cleared.get("set-cookie"))
            assert ("secure" in attributes(cleared["set-cookie"])) == secure, (how, cleared["set-cookie"])
    finally:
        console.close()


def test_a_browsers_refused_form_goes_back_to_its_page_saying_why_while_api_clients_get_the_status(api_console, redis_server):
    console, _ = api_console
    r = redis.Redis.from_url(redis_server, decode_responses=True)
    browser_op = {"Authorization": basic("alice", OPERATOR), "Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}
    form = {"scope": "asset:BTC", "duration": "0m", "reason": "r", "csrf": auth.csrf_token(TOKENS), "next": "/incidents/inc1"}
    status, body, headers = console.call("POST", "/api/silences", form, headers=browser_op, form=True)
    assert status == 303 and headers["location"] == "/incidents/inc1", body
    cookie = headers["set-cookie"].split(";")[0]
    assert r.hlen(SILENCES_KEY) == 0
    # A HEAD (a link checker, a monitor) sees no page: it cleared the flash, and the form's fields with it.
    for path in ("/incidents/inc1", "/incidents", "/"):
        status, _, headers = console.call("HEAD", path, headers={**browser_op, "Cookie": cookie})
        assert status == 200 and "set-cookie" not in headers, (path, headers)
    status, page, headers = console.call("GET", "/incidents/inc1", headers={**browser_op, "Cookie": cookie})
    flash = page[page.index('id="flash"'):]
    assert status == 200 and "Not done: duration: more than zero and at most 30d</p>" in flash[: flash.index("</p>") + 4], flash[:300]
    assert page.index('id="flash"') < page.index('id="live"')  # not replaced by the page's live refresh
    assert 'sentinel_flash=""' in headers["set-cookie"] or "Max-Age=0" in headers["set-cookie"]  # shown once
    assert 'id="flash"' not in console.call("GET", "/incidents/inc1", headers=browser_op)[1]
    # What was typed comes back in the form that was refused (it came back empty: the scope the
    # root's, the duration 4h, the reason gone); never the CSRF token, and no other form filled.
    form_of = lambda page, name: page[page.index(f'<form class="{name}"'):][: page[page.index(f'<form class="{name}"'):].index("</form>")]  # noqa: E731
    typed = form | {"scope": "asset:SOL", "kind": "volume_spike", "duration": "90d", "reason": "listing <b>news</b>"}
    refusals = (("/api/silences", typed, "/incidents/inc1", "silence"), ("/api/silences", typed | {"next": "/incidents"}, "/incidents", "silence"),
                ("/api/incidents/inc1/ack", form | {"reason": "bidi \u202e here"}, "/incidents/inc1", "ack"),
                ("/api/incidents/inc1/verdict", form | {"verdict": "false-alarm", "reason": "bidi \u202e here"}, "/incidents/inc1", "verdict"))
    for action, posted, back, name in refusals:
        status, _, headers = console.call("POST", action, posted, headers=browser_op, form=True)
        assert status == 303 and headers["location"] == back, (action, status)
        page = console.call("GET", back, headers={**browser_op, "Cookie": headers["set-cookie"].split(";")[0]})[1]
        assert "Not done: " in page and auth.csrf_token(TOKENS) not in page.replace(f'name="csrf" value="{auth.csrf_token(TOKENS)}"', ""), action
        filled = form_of(page, name)
        if name == "silence":
            assert ('value="asset:SOL"' in filled and 'value="90d"' in filled and '<option value="volume_spike" selected>' in filled
                    and 'value="listing &lt;b&gt;news&lt;/b&gt;"' in filled), filled
        else:
            assert 'value="bidi \u202e here"' in filled, filled
            assert name != "verdict" or '<option value="false-alarm" selected>' in filled, filled
        for other in {"silence", "ack", "verdict"} - {name}:  # the other forms as they were
            if f'<form class="{other}"' in page:
                assert "bidi" not in form_of(page, other) and "listing" not in form_of(page, other), other
    assert r.hlen(SILENCES_KEY) == 0 and r.hget(ACKS_KEY, "inc1") is None
    # A cookie the console did not write shows nothing.
    assert 'id="flash"' not in console.call("GET", "/incidents/inc1", headers={**browser_op, "Cookie": "sentinel_flash=%7B%22kind%22%3A%22evil%22%7D"})[1]

    # A long non-ASCII reason came back with no field at all: 475 accented letters now whole, and
    # since session 53 (UTF-8 under base64, not escaped) 400 emoji too; with a kind of 500 emoji
    # posted beside it (no form sends one) cut to fit, the page saying so; the scope and duration kept.
    for reason, whole, kind in (("\u00e9" * 475, True, {}), ("\U0001f600" * 400, True, {}), ("\U0001f600" * 400, False, {"kind": "\U0001f600" * 500})):
        status, _, headers = console.call("POST", "/api/silences", typed | {"reason": reason} | kind, headers=browser_op, form=True)
        assert len(headers["set-cookie"].split(";")[0]) < 4096
        page = console.call("GET", "/incidents/inc1", headers={**browser_op, "Cookie": headers["set-cookie"].split(";")[0]})[1]
        filled = form_of(page, "silence")
        assert 'value="asset:SOL"' in filled and 'value="90d"' in filled and ('value="' + reason[:100]) in filled, filled
        assert (f'value="{reason}"' in filled) == whole, filled
        assert ("What was typed in kind, reason is cut short" in page[page.index('id="flash"'):].split("</p>")[0]) != whole, page

    # Kept, but matching no scope seen yet: said on the page it goes back to.
    status, _, headers = console.call("POST", "/api/silences", form | {"scope": "asset:NOPE", "duration": "1h"}, headers=browser_op, form=True)
    assert status == 303 and r.hlen(SILENCES_KEY) == 1
    page = console.call("GET", "/incidents/inc1", headers={**browser_op, "Cookie": headers["set-cookie"].split(";")[0]})[1]
    flash = page[page.index('id="flash"'):]
    assert "no scope seen so far matches asset:NOPE" in flash[: flash.index("</p>")] and "Not done" not in flash[: flash.index("</p>")]

    # API clients, JSON or a form posted without asking for HTML (curl -d): the status and text as before.
    bearer = {"Authorization": "Bearer " + OPERATOR}
    assert console.call("POST", "/api/silences", {"scope": "asset:BTC", "duration": "0m"}, headers=bearer) [:2] == (
        400, "duration: more than zero and at most 30d")
    assert console.call("POST", "/api/silences", {"scope": "asset:BTC", "duration": "0m"}, headers=bearer, form=True)[:2] == (
        400, "duration: more than zero and at most 30d")


def test_a_form_sent_while_redis_is_away_keeps_what_was_typed_for_when_it_is_back(redis_server, tmp_path):
    """A form write while Redis is away got the framed 503 and lost what was typed: the flash is a
    cookie, so it keeps the fields as a refused form does, for the form's page once Redis answers
    (another replica, or the same console later); a write that then succeeds clears it."""
    redis.Redis.from_url(redis_server).flushdb()
    put_incident(redis_server, "inc1", "asset:ETH")
    redis.Redis.from_url(redis_server).zadd(SCOPES_KEY, {"asset:SOL": T0})  # a scope seen: the silence gets no warning
    env = {"SENTINEL_CONSOLE_READ_TOKEN": VIEWER, "SENTINEL_CONSOLE_OPERATOR_TOKEN": OPERATOR}
    away = Console(console_env(f"redis://127.0.0.1:{free_port()}/0", **env), tmp_path / "away.log")
    try:
        browser_op = {"Authorization": basic("alice", OPERATOR), "Accept": HTML}
        typed = {"scope": "asset:SOL", "kind": "volume_spike", "duration": "2h", "reason": "listing news", "csrf": auth.csrf_token(TOKENS),
                 "next": "/incidents/inc1"}
        status, page, headers = away.call("POST", "/api/silences", typed, headers=browser_op, form=True)
        assert status == 503 and framed_reason(page, "/incidents/inc1") == "Redis is unavailable; retry shortly", page
        cookie = headers["set-cookie"].split(";")[0]
        assert "listing news" not in page and auth.csrf_token(TOKENS) not in cookie  # the page says no field; the cookie keeps no token
        # An API client, or a form not asking for HTML: the 503 and its text, no cookie.
        status, text, headers = away.call("POST", "/api/silences", typed, headers={"Authorization": "Bearer " + OPERATOR}, form=True)
        assert (status, text, "set-cookie" in headers) == (503, "Redis is unavailable; retry shortly", False)
    finally:
        away.close()
    back = Console(console_env(redis_server, **env), tmp_path / "back.log")
    try:
        # Pages without the silence form leave what was typed for the page with it (until session 51
        # a look at the overview lost it); a HEAD or a live refresh (a fetch for */*) too.
        for path, accept, method in (("/", HTML, "GET"), ("/audit", HTML, "GET"), ("/incidents", "*/*", "GET"), ("/incidents", HTML, "HEAD")):
            status, page, headers = back.call(method, path, headers={**browser_op, "Accept": accept, "Cookie": cookie})
            assert status == 200 and "set-cookie" not in headers and 'id="flash"' not in page, (path, headers.get("set-cookie"))
        page = back.call("GET", "/incidents/inc1", headers={**browser_op, "Cookie": cookie})[1]
        assert "Not done: Redis was unavailable" in page[page.index('id="flash"'):].split("</p>")[0], page
        filled = page[page.index('<form class="silence"'):].split("</form>")[0]
        assert ('value="asset:SOL"' in filled and 'value="2h"' in filled and '<option value="volume_spike" selected>' in filled
                and 'value="listing news"' in filled), filled
        # Sent again and done: the earlier "Not done" and its fields are not shown on the page it goes back to.
        status, _, headers = back.call("POST", "/api/silences", typed, headers={**browser_op, "Cookie": cookie}, form=True)
        assert status == 303 and "sentinel_flash=" in headers.get("set-cookie", "") and "Max-Age=0" in headers["set-cookie"], headers
        assert len(redis.Redis.from_url(redis_server).hgetall(SILENCES_KEY)) == 1
    finally:
        back.close()


def test_a_forms_kept_fields_wait_for_its_page_and_another_forms_write_leaves_them(redis_server, tmp_path):
    """A Redis-away silence's fields are kept for 10 minutes; until session 51 an acknowledgement that
    then succeeded (or was refused) cleared them with its own cookie. Each form's fields now stay until
    a page with that form shows them, and a write clears only its own form's."""
    redis.Redis.from_url(redis_server).flushdb()
    put_incident(redis_server, "inc1", "asset:ETH")
    redis.Redis.from_url(redis_server).zadd(SCOPES_KEY, {"asset:SOL": T0})
    env = {"SENTINEL_CONSOLE_READ_TOKEN": VIEWER, "SENTINEL_CONSOLE_OPERATOR_TOKEN": OPERATOR}
    browser_op = {"Authorization": basic("alice", OPERATOR), "Accept": HTML}
    csrf = auth.csrf_token(TOKENS)
    silence = {"scope": "asset:SOL", "duration": "2h", "reason": "listing news", "csrf": csrf, "next": "/incidents/inc1"}
    away = Console(console_env(f"redis://127.0.0.1:{free_port()}/0", **env), tmp_path / "away.log")
    try:
        cookie = away.call("POST", "/api/silences", silence, headers=browser_op, form=True)[2]["set-cookie"].split(";")[0]
    finally:
        away.close()
    back = Console(console_env(redis_server, **env), tmp_path / "back.log")
    try:
        def form_of(page: str, name: str) -> str:
            return page[page.index(f'<form class="{name}"'):].split("</form>")[0]

        # An ack refused (a control character): its message and fields, the silence's kept beside them.
        status, _, headers = back.call("POST", "/api/incidents/inc1/ack", {"reason": "bidi \u202e", "csrf": csrf, "next": "/incidents/inc1"},
                                       headers={**browser_op, "Cookie": cookie}, form=True)
        assert status == 303, status
        both = headers["set-cookie"].split(";")[0]
        page = back.call("GET", "/incidents/inc1", headers={**browser_op, "Cookie": both})[1]
        assert 'value="bidi \u202e"' in form_of(page, "ack") and 'value="listing news"' in form_of(page, "silence"), page
        assert "Not done: reason" in page and "Not done: Redis was unavailable" in page
        # The ack sent again and done: the silence's fields stay, for the next page with its form.
        status, _, headers = back.call("POST", "/api/incidents/inc1/ack", {"reason": "desk", "csrf": csrf, "next": "/incidents/inc1"},
                                       headers={**browser_op, "Cookie": both}, form=True)
        assert status == 303 and redis.Redis.from_url(redis_server).hget(ACKS_KEY, "inc1") is not None
        left = headers["set-cookie"].split(";")[0]
        assert "Max-Age=0" not in headers["set-cookie"] and left != "sentinel_flash=" and "desk" not in urllib.parse.unquote(left), headers
        # The incidents page's silence form is another copy of it: the fields wait for the incident's (session 52).
        status, page, headers = back.call("GET", "/incidents", headers={**browser_op, "Cookie": left})
        assert 'value="listing news"' not in form_of(page, "silence") and 'id="flash"' not in page and "set-cookie" not in headers, headers
        status, page, headers = back.call("GET", "/incidents/inc1", headers={**browser_op, "Cookie": left})
        assert 'value="listing news"' in form_of(page, "silence") and "Not done: Redis was unavailable" in page and "Not done: reason" not in page
        assert "Max-Age=0" in headers["set-cookie"] or 'sentinel_flash=""' in headers["set-cookie"], headers  # shown: gone
    finally:
        back.close()


def test_a_silences_kept_fields_fill_only_the_form_on_the_page_it_was_sent_from(api_console, redis_server):
    """The silence form is drawn on the incidents page and on each incident's and scope's page, one
    action for all: a silence refused from scope SOL's page came back filled in on scope BTC's page
    or an incident's, where a second "Silence" silenced SOL for 90d. Its fields and message now wait
    for the page its form was on; a page with another copy of the form draws it as ever."""
    console, _ = api_console
    browser_op = {"Authorization": basic("alice", OPERATOR), "Accept": HTML}
    typed = {"scope": "asset:SOL", "kind": "volume_spike", "duration": "90d", "reason": "listing news", "csrf": auth.csrf_token(TOKENS),
             "next": "/scope/asset:SOL"}
    status, _, headers = console.call("POST", "/api/silences", typed, headers=browser_op, form=True)
    assert status == 303 and headers["location"] == "/scope/asset:SOL", status
    cookie = headers["set-cookie"].split(";")[0]
    for path, drawn in (("/scope/asset:BTC", "asset:BTC"), ("/incidents/inc1", "asset:ETH"), ("/incidents", "")):
        status, page, headers = console.call("GET", path, headers={**browser_op, "Cookie": cookie})
        filled = page[page.index('<form class="silence"'):].split("</form>")[0]
        assert status == 200 and f'name="scope" value="{drawn}"' in filled and 'value="4h"' in filled, (path, filled)
        assert "listing news" not in page and "90d" not in filled and 'id="flash"' not in page, path
        assert "set-cookie" not in headers, (path, headers.get("set-cookie"))  # left for its own page
    status, page, headers = console.call("GET", "/scope/asset:SOL", headers={**browser_op, "Cookie": cookie})
    filled = page[page.index('<form class="silence"'):].split("</form>")[0]
    assert 'value="asset:SOL"' in filled and 'value="90d"' in filled and 'value="listing news"' in filled, filled
    assert "Not done: duration" in page[page.index('id="flash"'):].split("</p>")[0] and "Max-Age=0" in headers["set-cookie"]
    assert redis.Redis.from_url(redis_server).hlen(SILENCES_KEY) == 0


def test_the_silence_form_is_filled_in_only_where_the_notices_offer_a_silence(api_console, redis_server):
    """On a market-wide incident's page (and on the `all` scope's) the form came filled in with `all`,
    one click from holding back every market-wide notice; a root that reads as a glob came filled in
    as a pattern that silences other channels too. The notices offer neither (`root_silence`): the
    console fills in the scope only where they offer `sentinel silence`, and leaves it empty else."""
    console, _ = api_console
    put_incident(redis_server, "incall", "all")
    put_incident(redis_server, "incglob", "channel:[EN] general")
    put_incident(redis_server, "incspace", "channel:off topic")
    browser_op = {"Authorization": basic("alice", OPERATOR), "Accept": HTML}
    for path, drawn in (("/incidents/incall", ""), ("/incidents/incglob", ""), ("/scope/all", ""),
                        ("/incidents/inc1", "asset:ETH"), ("/incidents/incspace", "channel:off topic"), ("/scope/asset:BTC", "asset:BTC")):
        status, page, _ = console.call("GET", path, headers=browser_op)
        filled = page[page.index('<form class="silence"'):].split("</form>")[0]
        assert status == 200 and f'name="scope" value="{drawn}"' in filled, (path, filled)


def test_the_silence_form_is_filled_in_for_a_root_named_like_a_domain(api_console, redis_server):
    """Since session 56 a notice shows its scopes defanged and offers no `sentinel silence` for a root
    named like a domain (`source:bitcointalk.org`: a live link in the command); the console shows it
    exactly and links nothing, and is where the notice sends the reader: its form came back empty
    there too, so such a scope was the one a notice could not be silenced from in a click. (Since
    session 57 the notice offers the command with its dots bracketed, a pattern; here, the name.)"""
    console, _ = api_console
    put_incident(redis_server, "incdomain", "source:bitcointalk.org")
    browser_op = {"Authorization": basic("alice", OPERATOR), "Accept": HTML}
    for path in ("/incidents/incdomain",):
        status, page, _ = console.call("GET", path, headers=browser_op)
        filled = page[page.index('<form class="silence"'):].split("</form>")[0]
        assert status == 200 and 'name="scope" value="source:bitcointalk.org"' in filled, (path, filled)


def test_a_leaked_flash_cookie_shows_nobody_but_its_writer_what_was_typed(redis_server, tmp_path):
    """A flash cookie is kept 60 s (a Redis-away form's 10 minutes) and it held the refused form's
    message and fields for whoever presented it: a cookie copied from alice's browser (a proxy's log,
    a shared machine) showed her typed reason to anyone reading an open console, or to bob. It is
    sealed for the user who wrote it now: any other reader sees no message and no field, never a
    500, and its own write with it keeps none of hers; alice's page shows it as ever."""
    redis.Redis.from_url(redis_server).flushdb()
    put_incident(redis_server, "inc1", "asset:ETH")
    console = Console(console_env(redis_server, SENTINEL_CONSOLE_OPERATOR_TOKEN=OPERATOR), tmp_path / "console.log")  # anyone reads
    try:
        alice = {"Authorization": basic("alice", OPERATOR), "Accept": HTML}
        typed = {"scope": "asset:SOL", "duration": "90d", "reason": "call Jo on 555-0100", "csrf": auth.csrf_token(TOKENS), "next": "/incidents/inc1"}
        status, _, headers = console.call("POST", "/api/silences", typed, headers=alice, form=True)
        assert status == 303, status
        cookie = headers["set-cookie"].split(";")[0]
        bob = {"Authorization": basic("bob", OPERATOR), "Accept": HTML}
        for reader in ({"Accept": HTML}, bob, {"Authorization": basic("alice", "not-the-token"), "Accept": HTML}):
            status, page, headers = console.call("GET", "/incidents/inc1", headers={**reader, "Cookie": cookie})
            assert status == 200 and 'id="flash"' not in page and "555-0100" not in page and "90d" not in page, (reader, status)
            if reader is bob:  # another operator's browser: gone from it (a reader who may not write leaves it, as its owner may sign in)
                assert "Max-Age=0" in headers.get("set-cookie", "") or 'sentinel_flash=""' in headers.get("set-cookie", ""), headers
        # Bob's own refused ack with her cookie: his message alone, none of hers re-sealed for him.
        status, _, headers = console.call("POST", "/api/incidents/inc1/ack", {"reason": "bidi \u202e", "csrf": auth.csrf_token(TOKENS),
                                                                            "next": "/incidents/inc1"}, headers={**bob, "Cookie": cookie}, form=True)
        bobs = headers["set-cookie"].split(";")[0]
        assert status == 303 and "555-0100" not in urllib.parse.unquote(bobs), bobs
        page = console.call("GET", "/incidents/inc1", headers={**bob, "Cookie": bobs})[1]
        assert "Not done: reason" in page and "Not done: duration" not in page and "555-0100" not in page
        page = console.call("GET", "/incidents/inc1", headers={**alice, "Cookie": cookie})[1]
        assert "Not done: duration" in page and 'value="call Jo on 555-0100"' in page  # its writer's
    finally:
        console.close()


def test_a_reader_who_cannot_write_leaves_an_operators_flash_cookie_for_them(redis_server, tmp_path):
    """Only an operator writes a flash, so only an operator can own one. The operator's own browser
    reads as someone else before signing in again: on an open console its first page after a
    restart (the browser keeps the cookie, up to 10 minutes for a Redis-away form, but not the Basic
    credentials) is read anonymously, and on one with a read token whoever signs in with that token
    first is a viewer. Each such page cleared the cookie as a leaked one, and the Redis-away form's
    fields were gone by the time the operator had signed in. A page read by someone who may not
    write leaves it; another operator's page (bob) still clears it."""
    redis.Redis.from_url(redis_server).flushdb()
    put_incident(redis_server, "inc1", "asset:ETH")
    alice = {"Authorization": basic("alice", OPERATOR), "Accept": HTML}
    typed = {"scope": "asset:SOL", "duration": "0m", "reason": "listing news", "csrf": auth.csrf_token(TOKENS), "next": "/incidents/inc1"}
    for env, readers in (({}, [{"Accept": HTML}, {"Authorization": basic("alice", "not-the-token"), "Accept": HTML}]),
                         ({"SENTINEL_CONSOLE_READ_TOKEN": VIEWER}, [{"Authorization": basic("alice", VIEWER), "Accept": HTML}])):
        console = Console(console_env(redis_server, SENTINEL_CONSOLE_OPERATOR_TOKEN=OPERATOR, **env), tmp_path / "console.log")
        try:
            status, _, headers = console.call("POST", "/api/silences", typed, headers=alice, form=True)
            assert status == 303, status
            cookie = headers["set-cookie"].split(";")[0]
            for reader in readers:
                status, page, headers = console.call("GET", "/incidents/inc1", headers={**reader, "Cookie": cookie})
                assert status == 200 and 'id="flash"' not in page and "listing news" not in page, (env, reader)
                assert "set-cookie" not in headers, (env, reader, headers.get("set-cookie"))  # left for its owner
            status, page, _ = console.call("GET", "/incidents/inc1", headers={**alice, "Cookie": cookie})
            assert "Not done: duration" in page and 'value="listing news"' in page, env
            headers = console.call("GET", "/incidents/inc1", headers={"Authorization": basic("bob", OPERATOR), "Accept": HTML, "Cookie": cookie})[2]
            assert "Max-Age=0" in headers.get("set-cookie", "") or 'sentinel_flash=""' in headers.get("set-cookie", ""), env
        finally:
            console.close()


def test_a_flash_cookie_the_console_did_not_seal_says_and_fills_in_nothing(api_console, redis_server):
    """The flash cookie is the browser's to keep, and anyone who can set a cookie for the console's
    host (a sibling subdomain, a plain-http hop) could write one: it put its text on the page and
    filled in the form it named, a silence over `all` for 30d or a verdict chosen, for an operator
    to submit unknowingly. Only a cookie the console sealed is shown."""
    console, _ = api_console
    browser_op = {"Authorization": basic("alice", OPERATOR), "Accept": HTML}
    crafted = {"kind": "error", "text": "call the desk on 555-0100",
               "kept": {"action": "/api/silences", "scope": "all", "duration": "30d", "reason": "routine"}}
    verdict = {"kind": "error", "text": "reason: holds a control character",
               "kept": {"action": "/api/incidents/inc1/verdict", "verdict": "false-alarm"}}
    # One the console wrote, for a refused silence: its seal is over what it says.
    headers = console.call("POST", "/api/silences", {"scope": "asset:SOL", "duration": "90d", "csrf": auth.csrf_token(TOKENS),
                                                      "next": "/incidents/inc1"}, headers=browser_op, form=True)[2]
    real = headers["set-cookie"].split(";")[0].partition("=")[2]
    form = hashlib.sha256(b"/incidents/inc1").hexdigest()[:16]  # the copy of the form a kept field fills in (since session 52)
    # Session 52's cookie for this very form and owner, its seal right: signed JSON, no longer read (session 53).
    signed = {"kind": "error", "text": "call the desk on 555-0100", "at": int(time.time()), "keep": 60, "kept": crafted["kept"] | {"form": form}}
    signed_52 = urllib.parse.quote(json.dumps(signed | {"seal": seal_52(json.dumps(signed, sort_keys=True), ALICE)}), safe="")
    altered = real[:20] + ("w" if real[20] in "ABCDEFGHIJKLMNOP" else "A") + real[21:]  # the console's own, one byte changed
    crafted_cookies = [urllib.parse.quote(json.dumps(c), safe="") for c in (crafted, verdict, crafted | {"seal": "0" * 32})]
    for value in (*crafted_cookies, signed_52, altered, "f1." + real[3:40], "f1.!" + real[4:], "f1."):
        status, page, _ = console.call("GET", "/incidents/inc1", headers={**browser_op, "Cookie": f"sentinel_flash={value}"})
        assert status == 200 and 'id="flash"' not in page and "555-0100" not in page, value
        assert 'name="scope" value="asset:ETH"' in page and 'value="4h"' in page and "routine" not in page, value
        assert '<option value="" selected>choose' in page and '<option value="false-alarm" selected>' not in page, value
    page = console.call("GET", "/incidents/inc1", headers={**browser_op, "Cookie": f"sentinel_flash={real}"})[1]
    assert 'id="flash"' in page and 'value="asset:SOL"' in page and 'value="90d"' in page  # the console's own


def test_a_malformed_flash_cookie_leaves_every_page_working(api_console):
    """Anyone able to set a cookie for the console's host could write one the console cannot read:
    a seal holding a lone surrogate (valid JSON, no UTF-8) or JSON nested a thousand deep (it fits
    in 4 KB unescaped) raised in the seal check or the JSON reader, and every page the browser
    asked for was a 500 until the cookie was cleared. They are refused as any unsealed cookie is."""
    console, _ = api_console
    browser_op = {"Authorization": basic("alice", OPERATOR), "Accept": HTML}
    for cookie in (urllib.parse.quote(json.dumps({"kind": "error", "text": "x", "seal": "\ud800"}), safe=""),
                   "[" * 1500 + "]" * 1500, '{"kind":"error","text":"x","seal":"0","kept":' + "[" * 1500 + "]" * 1500 + "}"):
        for path in ("/", "/incidents", "/incidents/inc1", "/scope/asset:ETH", "/audit"):
            status, page, _ = console.call("GET", path, headers={**browser_op, "Cookie": f"sentinel_flash={cookie}"})
            assert status == 200 and 'id="flash"' not in page, (path, cookie[:60], status, page[:200])


def test_the_audit_page_says_what_the_command_line_says_and_links_every_incident(api_console, redis_server):
    console, _ = api_console
    from stream.alerts import audit

    bearer = {"Authorization": "Bearer " + OPERATOR}
    assert console.call("POST", "/api/incidents/inc1/verdict", {"verdict": "false-alarm", "reason": "one whale"}, headers=bearer)[0] == 200
    assert console.call("POST", "/api/incidents/inc1/ack", {"reason": "seen"}, headers=bearer)[0] == 200
    assert console.call("POST", "/api/silences", {"scope": "asset:ETH", "duration": "1h"}, headers=bearer)[0] == 200
    entries = console.json("/api/audit")["entries"]
    page = console.call("GET", "/audit", headers={"Authorization": f"Bearer {VIEWER}"})[1]
    rows = re.findall(r"<tr data-entry=.*?</tr>", page[page.index('id="audit"'):], re.S)
    assert len(rows) == len(entries) == 3
    for row, entry in zip(rows, entries):
        cells = re.findall(r"<td>(.*?)</td>", row, re.S)
        assert html_lib.unescape(re.sub(r"<[^>]+>", "", cells[4])) == audit.what(entry), (cells, entry)
    assert '<td>incident <a href="/incidents/inc1">inc1</a> over asset:ETH (sentiment_drop): false-alarm</td>' in rows[2], rows[2]
    assert '<a href="/incidents/inc1">inc1</a>' in rows[1] and "<a " not in rows[0] and rows[0].count("silence ") == 1


def test_the_audit_log_says_when_its_span_holds_more_entries_than_it_shows(api_console, redis_server):
    """At its limit (200 by default) the page listed the newest entries under "since" a day they did
    not reach, a busy week's 200 read as the whole week: it says older ones are left out, the API
    says `more`, and a link asks for the same filter at the most a request may (5,000)."""
    console, _ = api_console
    bearer = {"Authorization": "Bearer " + OPERATOR}
    for asset in ("BTC", "ETH", "SOL", "XRP"):
        assert console.call("POST", "/api/silences", {"scope": f"asset:{asset}", "duration": "1h"}, headers=bearer)[0] == 200
    assert console.call("POST", "/api/incidents/inc1/ack", {"reason": "seen"}, headers=bearer)[0] == 200
    cut = console.json("/api/audit?action=silence&limit=3")
    assert (len(cut["entries"]), cut["more"]) == (3, True), cut
    assert [e["scope"] for e in cut["entries"]] == ["asset:XRP", "asset:SOL", "asset:ETH"]  # the newest
    for query in ("action=silence&limit=4", "action=silence", "limit=5"):
        whole = console.json(f"/api/audit?{query}")
        assert whole["more"] is False and len(whole["entries"]) == (5 if query == "limit=5" else 4), (query, whole)
    viewer = {"Authorization": f"Bearer {VIEWER}"}
    page = console.call("GET", "/audit?since=1d&action=silence&limit=3", headers=viewer)[1]
    said = re.search(r'<p class="flash" id="more">(.*?)</p>', page, re.S)
    assert said, page
    text = html_lib.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", said.group(1))))
    assert text == (f"Only the newest 3 entries are shown: this span holds older ones, from before {cut['entries'][-1]['at']}. "
                    "Narrow it (a shorter span, one person, one action) or show up to 5000."), text
    assert '<a href="/audit?since=1d&amp;action=silence&amp;limit=5000">' in said.group(1), said.group(1)
    assert '<input type="hidden" name="limit" value="3">' in page  # filtering again keeps the limit asked for
    for query in ("since=1d&action=silence&limit=4", "since=1d"):
        page = console.call("GET", f"/audit?{query}", headers=viewer)[1]
        assert 'id="more"' not in page and ('name="limit"' in page) == ("limit" in query), query


def test_a_read_only_console_refuses_every_write(redis_server, tmp_path):
    redis.Redis.from_url(redis_server).flushdb()
    put_incident(redis_server, "inc2", "asset:SOL")
    put_incident(redis_server, "inc3", "channel:off topic")
    put_incident(redis_server, "inc4", "all")
    put_incident(redis_server, "inc5", "source:bitcointalk.org")  # defanged in its notices (their silence a bracketed pattern); here exact
    console = Console(console_env(redis_server), tmp_path / "console.log")
    try:
        assert console.call("GET", "/api/overview")[0] == 200  # anonymous reads: no read token set
        # No password answers a challenge here: a write is the read-only 403, as /login is (a 401 with a
        # Basic challenge until session 51, a browser's form asking for a password that no password answers).
        status, body, headers = console.call("POST", "/api/incidents/inc2/ack", {"reason": "x"}, headers={"Authorization": "Bearer anything"})
        assert (status, "WWW-Authenticate" in headers, body) == (403, False, "writes are disabled: SENTINEL_CONSOLE_OPERATOR_TOKEN is not set")
        for auth_header in ({}, {"Authorization": basic("alice", "guess")}):
            status, page, headers = console.call("POST", "/api/silences", {"scope": "all", "duration": "1h", "next": "/incidents/inc2"},
                                                 headers={"Accept": HTML, **auth_header}, form=True)
            assert (status, "WWW-Authenticate" in headers) == (403, False), (status, headers)
            assert "<h1>Read-only console" in page and "SENTINEL_CONSOLE_OPERATOR_TOKEN" in framed_reason(page, "/incidents/inc2"), page
        assert redis.Redis.from_url(redis_server).hlen(SILENCES_KEY) == 0
        assert redis.Redis.from_url(redis_server).hget(ACKS_KEY, "inc2") is None
        assert console.json("/api/overview", token=None)["end"] is None  # no posts yet: an empty overview, not an error
        page = console.call("GET", "/incidents/inc2")[1]
        hint = page[page.index('id="read-only"'):]
        assert "read-only" in hint[: hint.index("</p>")] and "sentinel ack inc2" in hint[: hint.index("</p>")]
        put_incident(redis_server, "done2", "asset:SOL", state="resolved")  # resolved: only the verdict is left
        hint = (page := console.call("GET", "/incidents/done2")[1])[page.index('id="read-only"'):]
        assert "sentinel verdict done2 real|false-alarm" in hint[: hint.index("</p>")] and "sentinel ack" not in hint[: hint.index("</p>")]
        # The whole command, as the notices offer it: it said "silence with `sentinel silence`", no scope.
        for ident, silence in (("inc2", "sentinel silence asset:SOL --for 2h"), ("inc3", "sentinel silence 'channel:off topic' --for 2h"),
                               ("inc4", None), ("inc5", "sentinel silence source:bitcointalk.org --for 2h")):
            page = console.call("GET", f"/incidents/{ident}")[1]
            hint = html_lib.unescape(page[page.index('id="read-only"'):])
            hint = hint[: hint.index("</p>")]
            assert (f"<code>{silence}</code>" in hint) if silence else ("sentinel silence" not in hint and f"sentinel ack {ident}" in hint), hint
        # Once acknowledged (the summary says by whom), the hint no longer offers an ack: the operator's
        # page hides its form then, and a second `sentinel ack` replaces the first one's reason.
        r = redis.Redis.from_url(redis_server)
        acked = json.loads(r.hget(INCIDENTS_KEY, "inc2")) | {"acked": "desk is on it (by alice)"}
        r.hset(INCIDENTS_KEY, "inc2", json.dumps(acked))
        page = html_lib.unescape(console.call("GET", "/incidents/inc2")[1])
        hint = page[page.index('id="read-only"'):]
        hint = hint[: hint.index("</p>")]
        assert "sentinel ack" not in hint and "<code>sentinel silence asset:SOL --for 2h</code>" in hint and "Acknowledged: desk is on it (by alice)" in page, hint
        # Nobody can sign in to write: /login challenged for a password no password answers. It says why and how instead.
        status, page, headers = console.call("GET", "/login?next=/incidents/inc2", headers={"Accept": HTML})
        assert (status, "WWW-Authenticate" in headers) == (403, False), (status, headers)
        said = framed_reason(page, "/incidents/inc2")
        assert "read-only" in said and "SENTINEL_CONSOLE_OPERATOR_TOKEN" in said and "<h1>Read-only console" in page, said
        status, text, headers = console.call("GET", "/login")
        assert (status, "WWW-Authenticate" in headers, text.startswith("this console is read-only")) == (403, False, True), text
    finally:
        console.close()


# --- a real browser over a real worker ------------------------------------------------------------

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


def chromium() -> str | None:
    return os.environ.get("SENTINEL_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture()
def browser():
    path = chromium()
    if path is None:
        pytest.skip("no Chromium here: `make test` installs Debian's chromium package where apt-get can run; "
                    "or set SENTINEL_CHROMIUM to a Chromium binary")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


def test_charts_show_utc_whatever_the_browsers_time_zone(api_console, browser):
    """The pages say times are UTC: a chart's time under the cursor reads the same in a browser set
    to New York as in one set to UTC."""
    console, _ = api_console
    shown = []
    for zone in ("Etc/UTC", "America/New_York"):
        context = browser.new_context(viewport={"width": 1300, "height": 900}, timezone_id=zone,
                                      extra_http_headers={"Authorization": f"Bearer {VIEWER}"})
        page = context.new_page()
        # uPlot draws its axes' labels on the canvas: note every text drawn.
        page.add_init_script("window.drawn = []; const fill = CanvasRenderingContext2D.prototype.fillText;"
                             "CanvasRenderingContext2D.prototype.fillText = function (text, ...rest) {"
                             " window.drawn.push(String(text)); return fill.call(this, text, ...rest); };")
        page.goto(console.url + "/scope/asset:ETH")
        page.wait_for_function("typeof uPlot !== 'undefined' && document.querySelectorAll('.uplot').length > 0")
        chart = page.locator(".uplot").first
        box = chart.locator(".u-over").bounding_box()
        page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        shown.append(chart.locator(".u-legend .u-series").first.locator(".u-value").inner_text())
        # Every chart names its times' zone, its time axis and the legend's time alike.
        names = page.locator(".uplot .u-legend .u-series:first-child .u-label").all_inner_texts()
        assert names == ["time (UTC)"] * page.locator(".uplot").count() and len(names) >= 6, names
        drawn = page.evaluate("window.drawn")
        assert drawn.count("time (UTC)") >= len(names), drawn  # each chart's time axis (drawn again on a resize)
        assert {"share per hour", "posts per hour", "mean score per hour"} <= set(drawn), drawn  # what one point is
        context.close()
    assert shown[0] == shown[1] and shown[0] not in ("", "--"), shown


def signed_in(browser, console, width: int = 390):
    """A page of an operator signed in (as alice) on a phone-sized screen."""
    context = browser.new_context(viewport={"width": width, "height": 844}, http_credentials={"username": "alice", "password": OPERATOR})
    page = context.new_page()
    page.goto(f"{console.url}/login?next=/")
    return page


def test_pages_fit_a_phone_and_say_how_old_their_data_is(api_console, redis_server, browser):
    """Someone woken at 3 am opens a notice's link on a phone (390 px): no page pans sideways (the
    overview was 917 px wide, an incident page 694; a wide table now scrolls in its own box), and
    the data's age against the wall clock is said (the seeded posts are weeks old)."""
    console, _ = api_console
    r = redis.Redis.from_url(redis_server)
    put_incident(redis_server, "over1", "asset:ETH", state="resolved")
    r.hset(INCIDENTS_KEY, "over1", json.dumps(json.loads(r.hget(INCIDENTS_KEY, "over1")) | {"root_resolved": T0 + 86400 + 300}))
    # A verdict, so the incidents page has its precision table (judged, the interval) to fit too.
    assert console.call("POST", "/api/incidents/over1/verdict", {"verdict": "real", "csrf": auth.csrf_token(TOKENS)},
                        headers={"Authorization": basic("alice", OPERATOR)}, form=True)[0] == 303
    page = signed_in(browser, console)
    page.goto(console.url + "/incidents")
    assert "1 (few)" in page.locator("#precision").inner_text()
    for path in ("/", "/incidents", "/incidents/inc1", "/incidents/over1", "/scope/asset:ETH", "/audit"):
        page.goto(console.url + path)
        page.wait_for_load_state("networkidle")
        assert page.evaluate("document.documentElement.scrollWidth") <= 390, path
    # The recent table's "closed" says both times, wrapped: about as wide as "opened" (one time and
    # a ";"), not the 450 px of one line.
    page.goto(console.url + "/incidents")
    closed, opened = (page.locator("table.recent tbody tr").first.locator("td").nth(n).bounding_box()["width"] for n in (4, 3))
    assert "declared over" in page.locator("table.recent td.ended").first.inner_text() and closed < 1.2 * opened, (closed, opened)
    for path in ("/", "/scope/asset:ETH"):
        page.goto(console.url + path)
        assert "(event time)" in page.locator("#behind").inner_text() and "(wall clock)" in page.locator("#behind").inner_text(), path
    page.goto(console.url + "/incidents/inc1")
    assert "days before this page was served" in page.locator("#behind").inner_text()  # open, and its posts are weeks old
    page.context.close()


def test_an_incidents_members_read_on_a_phone_without_a_sideways_scroll(api_console, redis_server, browser):
    """At 390 px the members table scrolled sideways in its box and wrapped "what moved" to about 5
    lines: below 800 px each member is a card (its scope, then kind, firing, severity, onset, then
    what moved across the card's width), no sideways scroll, a card a few lines high; at 1300 px
    it is the table it was, a member a line."""
    console, _ = api_console
    r = redis.Redis.from_url(redis_server)
    summary = json.loads(r.hget(INCIDENTS_KEY, "inc1"))
    moved = {"metric": "negative_share", "value": 0.75, "baseline": 0.199, "judged": "2026-10-02T00:02:00Z", "posts": 11}
    summary["members"] = [summary["members"][0] | moved] + [
        {"scope": scope, "kind": kind, "firing": True, "severity": "warning", "onset": "2026-10-02T00:05:00Z", "metric": "posts",
         "value": 330.0, "baseline": 9.58, "judged": "2026-10-02T00:07:00Z", "posts": 31}
        for scope, kind in (("all", "volume_spike"), ("channel:off topic", "volume_spike"), ("source:forum", "volume_spike"))]
    r.hset(INCIDENTS_KEY, "inc1", json.dumps(summary))
    for width in (390, 1300):
        page = signed_in(browser, console, width)
        page.goto(console.url + "/incidents/inc1")
        page.wait_for_load_state("networkidle")
        assert page.evaluate("document.documentElement.scrollWidth") <= width, width
        table = page.locator("table.members")
        assert table.evaluate("t => t.scrollWidth <= t.clientWidth"), (width, table.evaluate("t => [t.scrollWidth, t.clientWidth]"))
        line = page.evaluate("parseFloat(getComputedStyle(document.body).lineHeight)")
        rows = table.locator("tbody tr")
        assert rows.count() == 4
        for n in range(4):
            row = rows.nth(n)
            moved_cell = row.locator("td").nth(5)
            assert "posts by 2026-10-02T00:0" in moved_cell.inner_text()
            height, moved_height = row.bounding_box()["height"], moved_cell.bounding_box()["height"]
            if width == 390:  # a card: what moved in at most 2 lines, the card 5 and its padding
                assert moved_height <= 2.5 * line and height <= 6 * line, (n, height, moved_height, line)
                named = row.locator("td").nth(1).evaluate("td => getComputedStyle(td, '::before').content")
                assert named == '"kind "', named  # each value named, as the hidden header would
            else:
                assert height <= 1.9 * line and table.locator("thead").is_visible(), (n, height, line)
        page.context.close()


def test_an_incidents_members_keep_their_table_semantics_as_cards_on_a_phone(api_console, redis_server, browser):
    """Below 800 px the members are cards (display: block), and an engine may drop a table's semantics
    with its display (Chromium 150 here keeps them; the roles are spelled out for those that do not).
    The table had no name: a screen reader's list of tables said "table". It is the table Members,
    its rows, column headers and cells read as such, at either width."""
    console, _ = api_console
    r = redis.Redis.from_url(redis_server)
    summary = json.loads(r.hget(INCIDENTS_KEY, "inc1"))
    summary["members"].append({"scope": "all", "kind": "volume_spike", "firing": False, "severity": "warning", "onset": "2026-10-02T00:05:00Z"})
    r.hset(INCIDENTS_KEY, "inc1", json.dumps(summary))
    for width in (390, 1300):
        page = signed_in(browser, console, width)
        page.goto(console.url + "/incidents/inc1")
        table = page.get_by_role("table", name="Members")
        assert table.count() == 1, width
        assert table.get_by_role("row").count() == 3, width  # the header and two members
        assert [table.get_by_role("columnheader").nth(n).text_content() for n in range(6)] == [
            "scope", "kind", "firing", "severity", "onset", "what moved (last judged)"], width
        member = table.get_by_role("row").nth(2)
        assert member.get_by_role("cell").count() == 6, width
        assert member.get_by_role("cell", name="volume_spike").count() == 1, width  # on a phone named "kind volume_spike ·" by the CSS
        page.context.close()


def test_signing_in_returns_to_the_page_with_its_query(redis_server, tmp_path, browser):
    """The sign-in link named the page's path alone: a filtered audit log came back unfiltered. It
    names the path and the query, and signing in returns there."""
    redis.Redis.from_url(redis_server).flushdb()
    console = Console(console_env(redis_server, SENTINEL_CONSOLE_OPERATOR_TOKEN=OPERATOR), tmp_path / "console.log")  # anyone may read
    try:
        for address in ("/audit?since=1d&by=alice%20b", "/?q=asset:*&offset=0"):
            context = browser.new_context(http_credentials={"username": "alice", "password": OPERATOR})  # not signed in yet
            page = context.new_page()
            page.goto(console.url + address)
            page.locator("#login").click()  # the browser answers the challenge with the operator token
            page.wait_for_url(console.url + address)
            assert page.locator(".who .role").text_content().startswith("operator"), address
            context.close()
    finally:
        console.close()


def test_a_long_address_or_name_on_a_refusal_wraps_on_a_phone(api_console, browser):
    """A framed 401/403 links back to the address asked for, and a notice's scope link names a
    channel as written, percent-escaped (a Cyrillic name is 6 characters a letter, with nowhere to
    break): at 390 px "Back to /scope/channel:%D0%9A..." ran 1,422 px wide, the page panning
    sideways. So did a flash naming such a scope (a silence matching no scope seen yet)."""
    console, _ = api_console
    name = "Криптовалюта_Трейдинг_Сигналы"
    address = "/scope/channel:" + urllib.parse.quote(name, safe="")
    context = browser.new_context(viewport={"width": 390, "height": 844})
    page = context.new_page()
    # Not signed in: the page a browser shows once its sign-in dialog is cancelled (headless
    # Chromium has no dialog and fails the navigation on a challenge, so the challenge is left out).
    page.route("**/*", lambda route: route.fulfill(response=(got := route.fetch()),
                                                   headers={k: v for k, v in got.headers.items() if k.lower() != "www-authenticate"}))
    assert page.goto(console.url + address).status == 401
    assert page.locator("#back").get_attribute("href") == address
    assert page.evaluate("document.documentElement.scrollWidth") <= 390, page.evaluate("document.documentElement.scrollWidth")
    context.close()
    page = signed_in(browser, console)
    page.goto(console.url + "/incidents")
    page.fill("form.silence input[name=scope]", f"channel:{name}{name}")
    page.click("form.silence button")
    assert "no scope seen so far matches" in page.locator("#flash").inner_text()
    assert page.evaluate("document.documentElement.scrollWidth") <= 390, page.evaluate("document.documentElement.scrollWidth")
    page.context.close()


def test_a_member_with_a_long_scope_name_stays_a_card_within_the_phones_width(api_console, redis_server, browser):
    """A member card's scope is its first line: a channel named without spaces or hyphens (48
    Cyrillic letters and underscores, under the 128 a name may have) ran 537 px in a 370 px card,
    the members scrolling sideways again. It breaks to fit; at 1300 px the table is unchanged."""
    console, _ = api_console
    r = redis.Redis.from_url(redis_server)
    summary = json.loads(r.hget(INCIDENTS_KEY, "inc1"))
    scope = "channel:Криптовалюта_Трейдинг_Сигналы_Обсуждение_Новости"
    summary["members"] = summary["members"] + [summary["members"][0] | {"scope": scope}]
    r.hset(INCIDENTS_KEY, "inc1", json.dumps(summary))
    for width in (390, 1300):
        page = signed_in(browser, console, width)
        page.goto(console.url + "/incidents/inc1")
        table = page.locator("table.members")
        assert table.locator("td.scope").nth(1).inner_text() == scope
        assert table.evaluate("t => t.scrollWidth <= t.clientWidth"), (width, table.evaluate("t => [t.scrollWidth, t.clientWidth]"))
        assert page.evaluate("document.documentElement.scrollWidth") <= width, width
        page.context.close()


def test_a_recent_roots_link_reaches_its_scope_in_a_browser_and_the_silences_there_fit_a_phone(api_console, redis_server, browser):
    """Clicked in Chromium, a recent incident's root named with markup and / # ? % opens its own
    scope's page and runs nothing; that page, with a silence over a member of another root's
    incident and what it holds back said beside it, fits a phone."""
    console, _ = api_console
    hostile = posts_in(redis_server, '<img src=x onerror=alert(1)>"/#?%2F')
    r = redis.Redis.from_url(redis_server)
    member = {"kind": "volume_spike", "firing": True, "severity": "warning", "onset": "2026-10-02T00:00:00Z"}
    r.hset(INCIDENTS_KEY, "done1", json.dumps({"incident_id": "done1", "root_scope": hostile, "state": "resolved", "opened": T0 + 86400,
                                                "at": T0 + 90000, "market": False, "severity": "warning", "acked": None,
                                                "members": [{"scope": hostile, **member, "firing": False}]}))
    r.zadd(INCIDENTS_INDEX_KEY, {"done1": T0 + 86400})
    r.hset(INCIDENTS_KEY, "mkt1", json.dumps({"incident_id": "mkt1", "root_scope": "all", "state": "open", "opened": T0 + 86400,
                                               "at": T0 + 90000, "market": True, "severity": "warning", "acked": None,
                                               "members": [{"scope": "all", **member}, {"scope": "asset:ETH", **member}]}))
    r.zadd(INCIDENTS_INDEX_KEY, {"mkt1": T0 + 86400})
    bearer = {"Authorization": f"Bearer {OPERATOR}"}
    assert console.call("POST", "/api/silences", {"scope": "asset:ETH", "duration": "2h", "kind": "volume_spike"}, headers=bearer)[0] == 200
    page = signed_in(browser, console)
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.goto(console.url + "/incidents")
    root = page.locator("table.recent tbody tr", has=page.locator('a[href="/incidents/done1"]')).locator("td.root a")
    assert root.inner_text() == hostile
    root.click()
    page.wait_for_load_state("networkidle")
    assert page.locator("h1").first.inner_text() == hostile and dialogs == []
    page.goto(console.url + "/scope/asset:ETH")
    page.wait_for_load_state("networkidle")
    held = {li.get_attribute("data-incident"): (li.get_attribute("data-held"), li.inner_text()) for li in page.locator("#silenced li[data-incident]").all()}
    assert held["mkt1"][0] == "no" and "this scope is a member; its root is all" in held["mkt1"][1], held
    assert held["inc1"][0] == "no" and "the incident is about sentiment_drop" in held["inc1"][1], held
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    page.context.close()


def test_a_verdict_is_a_choice_not_a_stray_enter(api_console, browser):
    """Enter in the verdict's reason box recorded "real", the preselected first choice, though
    nobody chose it, and it counted into the alerts' precision."""
    console, _ = api_console
    page = signed_in(browser, console)
    page.goto(console.url + "/incidents/inc1")
    reason = page.locator("form.verdict input[name=reason]")
    reason.fill("looked at it")
    reason.press("Enter")
    assert page.locator("form.verdict select:invalid").count() == 1  # the browser holds the form: no verdict chosen
    assert console.json("/api/incidents/inc1")["incident"]["verdict"] is None
    page.select_option("form.verdict select", "false-alarm")
    reason.press("Enter")
    page.locator("#verdict").wait_for()
    assert console.json("/api/incidents/inc1")["incident"]["verdict"]["verdict"] == "false-alarm"
    assert page.locator("form.verdict select").input_value() == "false-alarm"  # the one given, to change
    page.context.close()


def test_the_incidents_pages_refresh_keeps_what_is_typed_in_its_silence_form(api_console, redis_server, browser):
    """/incidents refreshes its live part 2 s after it loads and on every alert change, and its
    silence form is in that part: a refused silence's fields, filled in again, and whatever the
    operator was typing were reset to a blank scope and 4h under their fingers."""
    console, _ = api_console
    page = signed_in(browser, console, width=1300)

    def refreshed() -> None:  # the live part replaced by the page's own refresh, after an alert change
        page.evaluate("document.getElementById('live').dataset.before = '1'")
        redis.Redis.from_url(redis_server).hincrby(ALERT_STATS_KEY, "entries", 1)
        page.wait_for_function("() => !document.getElementById('live').dataset.before", timeout=20_000)

    page.goto(console.url + "/incidents")
    page.fill("form.silence input[name=scope]", "asset:SOL")
    page.fill("form.silence input[name=duration]", "90d")
    page.fill("form.silence input[name=reason]", "listing \"news\" \u00e9")
    with page.expect_response(lambda r: r.request.method == "POST") as posted:  # the refusal's redirect, with the cookie
        page.click("form.silence button")
    page.locator("#flash").wait_for()
    typed = ["asset:SOL", "90d", "listing \"news\" \u00e9"]
    fields = lambda: [page.input_value(f"form.silence input[name={n}]") for n in ("scope", "duration", "reason")]  # noqa: E731
    assert "Not done: duration" in page.locator("#flash").inner_text() and fields() == typed
    # The fields came back through the cookie, which holds none of them readably (encrypted since session 53).
    cookie = urllib.parse.unquote(posted.value.header_value("set-cookie") or "")
    assert cookie.startswith("sentinel_flash=f1.") and not any(t in cookie for t in ("asset:SOL", "listing", "news", "Not done", "duration")), cookie
    refreshed()
    assert fields() == typed, fields()
    # Typing: the field keeps its text and the focus, so the next key lands where it was typed.
    page.select_option("form.silence select[name=kind]", "volume_spike")
    page.fill("form.silence input[name=scope]", "asset:BTC")
    refreshed()
    assert fields()[0] == "asset:BTC" and page.input_value("form.silence select[name=kind]") == "volume_spike"
    assert page.evaluate("document.activeElement.name") == "scope"
    page.keyboard.type("X")
    assert fields()[0] == "asset:BTCX"
    page.context.close()


def test_another_tabs_live_refresh_leaves_a_forms_kept_fields_for_its_page(api_console, redis_server, browser):
    """A form sent while Redis is away keeps what was typed in the flash cookie for 10 minutes, for
    the form's page once Redis answers. A console tab left open meanwhile refreshes its live part
    (a fetch of its own address, asking for */*): that GET cleared the cookie unseen, and the form's
    page then came back empty. Only a page a browser navigates to shows and clears it. The tab is
    left on the form's own page: since session 52 a message waits for its form's copy, and a tab on
    another page (the incidents page, as this test had it) would keep it whatever its refresh did."""
    from starlette.responses import Response

    from stream.console.app import REDIS_AWAY_FLASH, REDIS_AWAY_FLASH_S, _flashed, _kept

    console, _ = api_console
    context = browser.new_context(viewport={"width": 1300, "height": 900}, http_credentials={"username": "alice", "password": OPERATOR})
    other = context.new_page()  # a tab left on the incident, refreshing: the page whose silence form was sent
    other.goto(console.url + "/incidents/inc1")
    typed = _kept("/api/silences", {"scope": "asset:SOL", "kind": "volume_spike", "duration": "2h", "reason": "listing news", "next": "/incidents/inc1"})
    cookie = _flashed(Response(), TOKENS, "error", REDIS_AWAY_FLASH, typed, max_age=REDIS_AWAY_FLASH_S, owner=ALICE).headers["set-cookie"]
    # The 503 page's cookie, as a form sent from a second tab while Redis was away received it.
    context.add_cookies([{"name": "sentinel_flash", "value": cookie.split(";")[0].partition("=")[2], "url": console.url}])
    other.evaluate("document.getElementById('live').dataset.before = '1'")
    redis.Redis.from_url(redis_server).hincrby(ALERT_STATS_KEY, "entries", 1)  # an alert change: the open tab refreshes
    other.wait_for_function("() => !document.getElementById('live').dataset.before", timeout=20_000)
    assert [c["name"] for c in context.cookies()] == ["sentinel_flash"], context.cookies()
    page = context.new_page()  # the form's page, once Redis is back
    page.goto(console.url + "/incidents/inc1")
    assert "Not done: Redis was unavailable" in page.locator("#flash").inner_text()
    assert [page.input_value(f"form.silence input[name={n}]") for n in ("scope", "duration", "reason")] == ["asset:SOL", "2h", "listing news"]
    assert page.input_value("form.silence select[name=kind]") == "volume_spike"
    assert context.cookies() == []  # shown once
    context.close()


def test_a_silences_warning_naming_long_non_ascii_scopes_reaches_its_page_in_a_browser(api_console, redis_server, browser):
    """A silence over a pattern that matches no scope yet comes back to its page with a warning, which
    names the scopes differing only in case. Three 128-letter Cherokee channel names (a cased script,
    9 bytes a letter escaped) made that warning's cookie 4.7 KB: Chromium dropped it, and the page
    said nothing. Its text is cut to fit the cookie now, and the page says it (since session 53 the
    cookie is base64 of UTF-8, 4 bytes a Cherokee letter, not 9: the warning fits at its 600 characters)."""
    console, _ = api_console
    upper = "".join(chr(0x13A0 + i % 80) for i in range(128))
    lower = upper.lower()
    assert lower != upper and lower.casefold() == upper.casefold()
    redis.Redis.from_url(redis_server).zadd(SCOPES_KEY, {"channel:" + upper: T0, "channel:" + upper[:64] + lower[64:]: T0,
                                                         "channel:" + lower[:64] + upper[64:]: T0})
    context = browser.new_context(viewport={"width": 1300, "height": 900}, http_credentials={"username": "alice", "password": OPERATOR})
    page = context.new_page()
    page.goto(console.url + "/incidents")
    page.fill("form.silence input[name=scope]", "channel:" + lower)
    page.fill("form.silence input[name=duration]", "1h")
    page.click("form.silence button[type=submit]")
    page.wait_for_url(console.url + "/incidents")
    shown = page.locator("#flash").inner_text(timeout=10_000)
    assert shown.startswith("no scope seen so far matches channel:" + lower) and "did you mean" in shown and len(shown) >= 500, shown
    assert context.cookies() == []  # shown once
    context.close()


def test_console_in_a_real_browser(tmp_path, kafka_server, redis_server, cache_dir, browser):
    from scenarios import T0 as SCENARIO_T0, generate, to_posts
    from test_alerts_e2e import SCENARIO, SWING_AT, text_for
    from workers import Worker, sentinel, wait_until, worker_env

    shots = Path(os.environ.get("SENTINEL_SCREENSHOTS") or tmp_path)
    posts = to_posts(generate(SCENARIO, seed=7), text_for, seed=7)
    swing_at = SCENARIO_T0 + SWING_AT
    calm = [p for p in posts if p["created_at"] < swing_at]
    swing = [p for p in posts if swing_at <= p["created_at"] < swing_at + 45 * 60]  # the swing lasts an hour: still open
    calm.append({"id": "hostile", "text": HOSTILE, "created_at": calm[-1]["created_at"] - 60, "source": "forum", "channel": "general"})
    for name, part in (("calm", calm), ("swing", swing)):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(p) + "\n" for p in part))

    redis.Redis.from_url(redis_server).flushdb()
    # Settle after 3 s without posts: the end of each replayed part is judged at once.
    env = worker_env("console-ui", kafka_server, redis_server, cache_dir, SENTINEL_ALERT_SETTLE_AFTER="3",
                     SENTINEL_CONSOLE_OPERATOR_TOKEN=OPERATOR)
    r = redis.Redis.from_url(redis_server, decode_responses=True)
    worker = Worker(env, tmp_path / "worker.log")
    console = None
    try:
        def processed() -> int:
            return int(r.hget(STATS_KEY, "processed") or 0)

        assert sentinel(["replay", str(tmp_path / "calm.jsonl")], env).returncode == 0
        wait_until(lambda: processed() == len(calm), 180, "the calm part processed", [worker])
        console = Console(env, tmp_path / "console.log")

        page = browser.new_context(viewport={"width": 1300, "height": 900}).new_page()
        dialogs: list[str] = []
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))

        # A hostile post renders as text: no script runs, no element is injected, no bidi override.
        page.goto(console.url + "/scope/asset:BTC")
        first = page.locator("#samples-negative li .post").first
        shown = first.inner_text()
        assert "‹script›alert(1)‹/script›" in shown and "!channel" in shown and "\u202e" not in shown and "@everyone" not in shown
        assert page.locator("#samples-negative script, #samples-negative img").count() == 0
        page.wait_for_function("typeof uPlot !== 'undefined' && document.querySelectorAll('.uplot').length === 7")
        page.screenshot(path=str(shots / "console-scope.png"), full_page=True)

        # The overview loads; after a swing, its incident appears without a reload.
        page.goto(console.url + "/")
        page.locator('#scopes tr[data-scope="asset:BTC"]').wait_for()
        page.evaluate("window.sameDocument = true")
        assert sentinel(["replay", str(tmp_path / "swing.jsonl")], env).returncode == 0
        row = page.locator('tr.incident[data-root="asset:BTC"]')
        row.wait_for(timeout=180_000)
        assert page.evaluate("window.sameDocument") is True
        ident = row.get_attribute("data-incident")
        assert page.locator('#scopes tr[data-scope="asset:BTC"] a.badge').count() == 1
        # The rows are a read shared by every page, up to SENTINEL_CONSOLE_OVERVIEW_MAX_AGE (5 s)
        # behind the data: the page keeps refreshing until they have caught up, with no post after.
        wait_until(lambda: processed() == len(calm) + len(swing), 180, "the swing processed", [worker])
        wait_until(lambda: page.get_attribute("#live", "data-version") == console.json("/api/version", token=None)["data"], 30,
                   "the overview's rows caught up", [worker])
        assert page.evaluate("window.sameDocument") is True
        page.screenshot(path=str(shots / "console-overview.png"))

        # No anonymous write: the same endpoint the page's form uses, without credentials.
        refused = page.context.request.post(f"{console.url}/api/incidents/{ident}/ack", form={"reason": "anonymous"})
        assert refused.status == 401 and r.hget(ACKS_KEY, ident) is None

        # An operator signs in, acknowledges and silences from the incident page.
        operator = browser.new_context(viewport={"width": 1300, "height": 900}, http_credentials={"username": "alice", "password": OPERATOR})
        op = operator.new_page()
        op.goto(f"{console.url}/login?next=/incidents/{ident}")
        op.fill("form.ack input[name=reason]", "desk is on it")
        op.click("form.ack button")
        op.locator("#acked").wait_for()
        assert r.hget(ACKS_KEY, ident) == "desk is on it (by alice)"
        op.fill("form.silence input[name=duration]", "2h")
        op.fill("form.silence input[name=reason]", "known listing news")
        op.click("form.silence button")
        silences = wait_until(lambda: [json.loads(v) for v in r.hvals(SILENCES_KEY)], 10, "a silence stored", [worker])
        assert [(s["scope"], s["reason"]) for s in silences] == [("asset:BTC", "known listing news")]
        assert [json.loads(v)["by"] for v in r.hvals(SILENCE_AUTHORS_KEY)] == ["alice"]
        op.goto(f"{console.url}/audit")
        logged = op.locator("#audit tbody").inner_text()
        assert logged.count("alice") == 2 and "known listing news" in logged and "desk is on it" in logged, logged
        op.screenshot(path=str(shots / "console-audit.png"))
        op.goto(f"{console.url}/incidents/{ident}")
        # The timeline says what moved, from the worker's own records.
        assert "negative share" in op.locator("ol.timeline").inner_text()
        op.screenshot(path=str(shots / "console-incident.png"), full_page=True)

        # A form on another page, posted with the operator's cached credentials: refused (CSRF).
        op.set_content(f'<form method="post" action="{console.url}/api/silences"><input name="scope" value="all">'
                       '<input name="duration" value="1h"></form>')
        with op.expect_navigation() as nav:
            op.evaluate("document.forms[0].submit()")
        assert nav.value.status == 403 and r.hlen(SILENCES_KEY) == 1

        op.goto(f"{console.url}/incidents")
        op.click(f'tr[data-silence="{silences[0]["id"]}"] button')
        wait_until(lambda: r.hlen(SILENCES_KEY) == 0, 10, "the silence lifted", [worker])
        # A silence the server refuses: back on the page, saying why, nothing stored.
        op.fill("form.silence input[name=scope]", "asset:BTC")
        op.fill("form.silence input[name=duration]", "0m")
        op.click("form.silence button")
        op.locator("#flash").wait_for()
        assert op.url == f"{console.url}/incidents" and "Not done: duration: more than zero" in op.locator("#flash").inner_text()
        assert r.hlen(SILENCES_KEY) == 0
        # What was typed is still there to correct: it came back empty.
        assert [op.input_value(f"form.silence input[name={n}]") for n in ("scope", "duration")] == ["asset:BTC", "0m"]
        op.reload()
        assert op.locator("#flash").count() == 0  # shown once
        assert dialogs == []
    finally:
        if console is not None:
            console.close()
        worker.close()


def test_run_with_console_keeps_the_stack_up_for_exploring_until_ctrl_c(tmp_path, cache_dir):
    """`sentinel run FILE --console` on the embedded stack: the console answers with what the run
    saw, its notices link to it, and Ctrl-C (SIGINT) ends the console and the stack cleanly."""
    import contextlib
    import signal

    import psutil

    from scenarios import SWING_MIX, Episode, Scenario, generate, to_posts
    from scenarios import T0 as START
    from test_alerts_e2e import text_for
    from workers import Hook

    # A day of BTC posts whose last hours swing negative: an incident, and its notice to a real webhook.
    posts = to_posts(generate(Scenario(days=1, per_minute={"BTC": 2.0}, episodes=(Episode("BTC", 20 * 3600, duration=4 * 3600, mix=SWING_MIX),)),
                              seed=5), text_for, seed=5)
    assert posts[0]["created_at"] >= START
    data = tmp_path / "posts.jsonl"
    data.write_text("".join(json.dumps(p) + "\n" for p in posts))
    port = free_port()
    hook = Hook()
    env = {k: v for k, v in os.environ.items()
           if k not in ("KAFKA_BROKER", "REDIS_URL", "SENTINEL_KAFKA_BROKER", "SENTINEL_REDIS_URL", "SENTINEL_CONSOLE_URL")}
    env |= {"SENTINEL_BASE": "lexicon", "SENTINEL_CACHE_DIR": str(cache_dir), "SENTINEL_CONSOLE_PORT": str(port),
            "SENTINEL_APPRISE_URLS": hook.url, "SENTINEL_NOTIFY_CHART": "false"}
    log = (tmp_path / "run.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "sentinel.cli", "run", str(data), "--console"], env=env, stdout=log, stderr=subprocess.STDOUT)
    stack: list[psutil.Process] = []
    try:
        deadline = time.monotonic() + 300
        rows: dict = {}
        while not rows:
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "run.log").read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/scopes/asset:BTC", timeout=5) as resp:
                    rows = json.loads(resp.read())
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.5)
        assert sum(rows["whole"]["posts"]) == len(posts)  # every post of the run, read back through the console
        # The run's notices link to the console it serves (SENTINEL_CONSOLE_URL not set): they carried no link.
        links = [re.search(r"^console: (\S+)", n["message"], re.M) for n in hook.accepted]
        assert hook.accepted and all(links), [n["message"] for n in hook.accepted]
        ident = hook.notices()[0][0]
        assert links[0].group(1) == f"http://127.0.0.1:{port}/incidents/{ident}", links[0].group(1)
        with urllib.request.urlopen(links[0].group(1), timeout=5) as resp:
            assert resp.status == 200 and f"Incident {ident}" in resp.read().decode()
        # A local look at a run listens on loopback only (SENTINEL_CONSOLE_HOST not set).
        listening = {c.laddr.ip for c in psutil.Process(proc.pid).net_connections(kind="inet")
                     if c.status == psutil.CONN_LISTEN and c.laddr.port == port}
        assert listening == {"127.0.0.1"}, listening
        stack = psutil.Process(proc.pid).children(recursive=True)  # the broker and redis-server it started
        assert {"redis-server", "tansu"} <= {p.name().split("-v")[0] for p in stack}, [p.name() for p in stack]
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0, (tmp_path / "run.log").read_text()[-3000:]
        _, left = psutil.wait_procs(stack, timeout=30)
        assert left == [], f"Ctrl-C left the stack running: {[p.name() for p in left]}"
        output = (tmp_path / "run.log").read_text()
        assert "processed" in output and f"console on http://127.0.0.1:{port}/" in output
        with pytest.raises(urllib.error.URLError):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2)
    finally:
        if proc.poll() is None:
            proc.kill()
        for p in stack:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.kill()
        log.close()
        hook.close()


def test_a_run_with_its_console_links_its_notices_there_unless_a_console_url_is_set():
    """`sentinel run FILE --console`'s worker gets the address of the console the run serves as
    SENTINEL_CONSOLE_URL; a user's own is kept (the run test above sees the link arrive at a webhook)."""
    from sentinel.cli import run_console_settings
    from sentinel.run import worker_env
    from stream.settings import Settings

    wired = {"kafka_broker": "127.0.0.1:9092", "redis_url": "redis://127.0.0.1:6379/0"}
    local = run_console_settings(Settings(console_port=8123, **wired))
    assert (local.console_host, local.console_url) == ("127.0.0.1", "http://127.0.0.1:8123")
    assert worker_env(local, True)["SENTINEL_CONSOLE_URL"] == "http://127.0.0.1:8123"
    assert run_console_settings(Settings(console_host="::1", console_port=8123)).console_url == "http://[::1]:8123"
    assert run_console_settings(Settings(console_host="0.0.0.0")).console_url == "http://127.0.0.1:8080"  # asked for every interface
    own = run_console_settings(Settings(console_url="https://sentinel.example.com/", **wired))
    assert own.console_url == "https://sentinel.example.com" and worker_env(own, True)["SENTINEL_CONSOLE_URL"] == own.console_url


def test_the_image_healthcheck_probes_the_console_a_console_container_runs(redis_server, tmp_path, monkeypatch, capsys):
    """The images' HEALTHCHECK probed the worker's port whatever the command, so `docker run IMAGE
    console` was marked unhealthy. It reads the main process's command line (here a real `sentinel
    console`, started through the `sentinel` script as the images' entrypoint is) and probes that."""
    from sentinel import healthcheck

    monkeypatch.setenv("SENTINEL_WEB_PORT", str(free_port()))  # nothing listens on the worker's port
    port = free_port()
    log = tmp_path / "console.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([str(Path(sys.executable).with_name("sentinel")), "console", "--port", str(port)],
                                env=console_env(redis_server), stdout=out, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 60
            # /proc can show the argv a moment after Popen returns: until then there is no command to follow.
            while "console" not in healthcheck.process_argv(proc.pid) or healthcheck.main(proc.pid) != 0:
                assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
                time.sleep(0.1)
            assert f"healthy: http://127.0.0.1:{port}/healthz answered 200" in capsys.readouterr().out
        finally:
            proc.terminate()
            proc.wait(30)
    # A worker's command line with nothing on its port is unhealthy; a command that serves nothing is not probed.
    idle = tmp_path / "sentinel"
    idle.write_text("import time\ntime.sleep(300)\n")
    for command, code in (("worker", 1), ("report", 0)):
        stand_in = subprocess.Popen([sys.executable, str(idle), command])
        try:
            deadline = time.monotonic() + 30
            while command not in healthcheck.process_argv(stand_in.pid):  # as above
                assert time.monotonic() < deadline
                time.sleep(0.05)
            assert healthcheck.main(stand_in.pid) == code, capsys.readouterr().out
        finally:
            stand_in.kill()
            stand_in.wait(30)
    said = capsys.readouterr().out
    assert f"unhealthy: http://127.0.0.1:{os.environ['SENTINEL_WEB_PORT']}/healthz" in said and "runs no server to probe" in said


@pytest.mark.parametrize("script", [False, True], ids=["python-m-sentinel.cli", "console-script"])
@pytest.mark.parametrize("stop", ["SIGINT", "SIGTERM"])
def test_sentinel_console_ends_as_a_server_on_its_stop(stop, script, redis_server, tmp_path):
    """operations.md says how `sentinel console` ends, apart from the commands that a Ctrl-C
    interrupts ("interrupted", 130): Ctrl-C is its way to end, so uvicorn shuts it down and it exits
    0 saying nothing more; a SIGTERM shuts it down alike and then ends it as the signal does. Also
    from the console script, whose SIGTERM otherwise ends a command as `terminated`, 143."""
    import signal

    console = Console(console_env(redis_server), tmp_path / "console.log", script=script)
    try:
        console.proc.send_signal(getattr(signal, stop))
        code = console.proc.wait(30)
    finally:
        console.close()
    output = console.log.read_text()
    assert code == {"SIGINT": 0, "SIGTERM": -signal.SIGTERM}[stop], output
    assert "Shutting down" in output and "interrupted" not in output and "Traceback" not in output, output
