"""`sentinel report`: the daily report per asset and UTC day.

Pure parts first (rows and shares from roll-up tables, the price CSV and its line-numbered errors,
lead-lag on a generated series with a known answer, escaping), then the real CLI against a real
redis-server (numbers checked against counts made here from the same generated posts), delivery
to a real local webhook through Apprise, and one `sentinel run --report` on the embedded stack.
"""

from __future__ import annotations

import asyncio
import base64
import csv
import email
import email.policy
import io
import json
import os
import random
import re
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from html.parser import HTMLParser

import pytest
import redis

from stream.assets import DEFAULT_ALIASES
from stream.contracts import Post
from stream.keys import INCIDENTS_INDEX_KEY, INCIDENTS_KEY
from stream.reporting.daily import DAY_S, build_report, day_span, rows_from_table
from stream.reporting.prices import (
    MEANINGFUL_PAIRS, LagResult, PriceError, daily_returns, fisher_interval, fisher_p, lead_lag, parse_prices, verdict,
)
from stream.reporting.render import format_for, md_escape, render_csv, render_html, render_markdown, summary_text
from stream.reporting.render import shown as displayed
from stream.store import Scored, WindowStore
from stream.timefmt import iso
from workers import Hook

T0 = 1_790_812_800  # 2026-10-01T00:00:00Z, a UTC midnight in the past
SCORES = {"positive": 0.6, "negative": -0.6, "neutral": 0.0}
HOSTILE = "<B>ONK|[X](Y)"  # a ticker that is markup in every format


# ------------------------------------------------------------------------------------------------ pure


def test_rows_shares_and_index_come_from_the_rollup_table():
    # (n, positive, negative, neutral, score_sum, score_sq) per day; the middle day has no posts.
    table = [[4, 2, 1, 1, 0.9, 0.61], [0, 0, 0, 0, 0, 0], [2, 0, 2, 0, -1.2, 0.72]]
    rows = rows_from_table("asset:BTC", T0, table)
    assert [r.date for r in rows] == ["2026-10-01", "2026-10-02", "2026-10-03"]
    first, empty, last = rows
    assert (first.posts, first.share("positive"), first.share("negative"), first.share("neutral")) == (4, 0.5, 0.25, 0.25)
    assert first.index == pytest.approx(0.225)
    assert first.score_sd == pytest.approx((0.61 / 4 - 0.225**2) ** 0.5)
    # A day without posts has unknown shares and index, not zeros.
    assert empty.posts == 0 and empty.index is None and empty.share("positive") is None
    assert last.index == pytest.approx(-0.6) and last.share("negative") == 1.0


def test_day_span_covers_every_utc_day_the_period_touches():
    newest = T0 + 7 * DAY_S + 3600  # 01:00 on day 7
    assert day_span(newest, 7 * DAY_S) == (T0, 8)  # day 0 (partly in the last 7 d) to day 7
    assert day_span(newest, DAY_S) == (T0 + 6 * DAY_S, 2)
    assert day_span(T0 + 5 * DAY_S - 1, None, oldest=T0 + 2 * DAY_S + 10) == (T0 + 2 * DAY_S, 3)  # all days in the data
    # --since reaching back before the data starts at its first day, not at empty days before it
    assert day_span(newest, 7 * DAY_S, oldest=T0 + 5 * DAY_S + 10) == (T0 + 5 * DAY_S, 3)
    assert day_span(newest, DAY_S, oldest=T0 + 2 * DAY_S) == (T0 + 6 * DAY_S, 2)  # data from before: as asked


def incident(ident: str, root: str, opened: float, members: tuple[str, ...] = (), **over) -> dict:
    summary = {"incident_id": ident, "root_scope": root, "state": "open", "opened": int(opened), "at": int(opened) + 60,
               "market": root == "all", "severity": "warning", "acked": None,
               "members": [{"scope": s, "kind": "sentiment_drop", "firing": True, "severity": "warning", "onset": iso(opened)}
                           for s in (root, *members)]}
    summary.update(over)
    return summary


def test_the_report_orders_scopes_drops_quiet_assets_and_places_incidents_by_day():
    zero = [[0] * 6] * 2
    tables = {"asset:SOL": zero, "asset:BTC": [[1, 1, 0, 0, 0.6, 0.36], [0] * 6], "all": [[3, 1, 1, 1, 0, 0.72], [0] * 6],
              "channel:general": [[3, 1, 1, 1, 0, 0.72], [0] * 6]}
    found = [incident("a1", "asset:BTC", T0 + 100), incident("c1", "channel:general", T0 + DAY_S + 5, ("asset:BTC",)),
             incident("old", "asset:BTC", T0 - 10), incident("late", "all", T0 + 2 * DAY_S)]
    report = build_report(T0, 2, tables, found, watermark=T0 + DAY_S + 5, generated_at=T0 + 2 * DAY_S)
    assert report.scopes == ("all", "asset:BTC")  # channels are not the report's business; SOL had no posts
    assert [i.incident_id for i in report.incidents] == ["a1", "c1"]  # the others opened outside the days
    assert [i.incident_id for i in report.incidents_on("asset:BTC", T0)] == ["a1"]
    assert [i.incident_id for i in report.incidents_on("asset:BTC", T0 + DAY_S)] == ["c1"]  # BTC moved with it
    assert [i.incident_id for i in report.incidents_on("all", T0 + DAY_S)] == ["c1"]  # the whole market's row has all


def test_an_incident_open_when_the_first_day_began_is_listed_though_it_opened_before():
    """An incident across midnight: the daily CronJob's report of the day after listed nothing of it,
    so a day that began inside a critical incident read as quiet, its resolution and verdict unseen."""
    tables = {"all": [[3, 1, 1, 1, 0, 0.72]], "asset:ETH": [[3, 1, 1, 1, 0, 0.72]]}
    found = [incident("across", "asset:ETH", T0 - 600, state="resolved", at=T0 + 5400, severity="critical",
                      verdict={"verdict": "real"}),
             incident("over", "asset:BTC", T0 - 7200, state="resolved", at=T0 - 60),  # declared over before the day
             incident("still", "all", T0 - DAY_S),  # open for a day and more
             incident("today", "asset:ETH", T0 + 60)]
    report = build_report(T0, 1, tables, found, watermark=T0 + 7200, generated_at=T0 + 7200)
    assert [i.incident_id for i in report.incidents] == ["today"]
    assert [i.incident_id for i in report.carried] == ["still", "across"]
    assert report.incidents_on("asset:ETH", T0) == [report.incidents[0]]  # the day rows: opened that day, as documented
    page, md = render_html(report), render_markdown(report)
    said = "Open when 2026-10-01 began (2 incidents opened earlier; the day rows count an incident on the day it opened only):"
    assert f'<p class="note" id="carried">{said}</p>' in page and f"\n{said}\n" in md
    assert page.index('data-incident="today"') < page.index('id="carried"') < page.index('data-incident="across"')
    # When it was declared over, beside its state: a day that began with a minute of it or was spent in it.
    assert "| 2026-09-30T23:50:00Z | across | asset:ETH | critical | resolved 2026-10-01T01:30:00Z |" in md and "real |" in md
    assert "<td class=\"text\">resolved 2026-10-01T01:30:00Z</td>" in page
    assert 'data-incident="over"' not in page and "| over |" not in md
    assert "2 incident(s) opened earlier were open when 2026-10-01 began: all (open), asset:ETH (resolved 2026-10-01T01:30:00Z)" in summary_text(report)


def test_the_history_drops_an_incident_open_longer_than_the_retention_so_no_report_carries_it(redis_server):
    """docs/operations.md says the limit of the carried list: the correlator's commit prunes by
    opening time, open or not, in the same script that writes the summary."""
    from stream.alerts.correlator import _COMMIT
    from stream.keys import ACK_LOG_KEY, ACKS_KEY, ALERT_STATS_KEY, CORRELATION_KEY, OUTBOX_KEY, STAGING_KEY, VERDICTS_KEY

    r = redis.Redis.from_url(redis_server, decode_responses=True)
    r.flushdb()
    keys = [CORRELATION_KEY, STAGING_KEY, OUTBOX_KEY, INCIDENTS_KEY, INCIDENTS_INDEX_KEY, ALERT_STATS_KEY, ACKS_KEY, ACK_LOG_KEY, VERDICTS_KEY]
    long_open, recent = incident("long", "all", T0), incident("recent", "asset:BTC", T0 + 2 * DAY_S)
    items = [[i["incident_id"], i["opened"], json.dumps(i)] for i in (long_open, recent)]
    until = T0 + 3 * DAY_S
    assert r.eval(_COMMIT, len(keys), *keys, "", str(until), "{}", "[]", "[]", json.dumps(items), str(until - 2 * DAY_S), "3600") == 1
    assert r.hkeys(INCIDENTS_KEY) == ["recent"] and r.zrange(INCIDENTS_INDEX_KEY, 0, -1) == ["recent"]  # "long" still open, gone


PRICE_ROWS = "date,asset,close\n2026-10-01,BTC,100\n2026-10-02,BTC,110\n"


@pytest.mark.parametrize("text, line, words", [
    ("day,asset,close\n2026-10-01,BTC,1\n", 1, "expected the header"),
    ("", 1, "empty file"),
    (PRICE_ROWS + "2026-13-01,BTC,5\n", 4, "not a YYYY-MM-DD date"),
    (PRICE_ROWS + "\n2026-10-03,BTC,abc\n", 5, "'abc' is not a number"),
    (PRICE_ROWS + "2026-10-03,BTC,-4\n", 4, "must be a positive number"),
    (PRICE_ROWS + "2026-10-03,BTC,nan\n", 4, "must be a positive number"),
    (PRICE_ROWS + "2026-10-03,BTC\n", 4, "expected 3 columns"),
    (PRICE_ROWS + "2026-10-03,,5\n", 4, "empty asset"),
    (PRICE_ROWS + "2026-10-02,btc,111\n", 4, "second close for BTC on 2026-10-02 (the first is on line 3)"),
    # A stray quote: closed by another three rows on (the rows between would be one asset's name,
    # their closes gone unsaid), or never (every row after it).
    (PRICE_ROWS + '2026-10-03,"BTC,120\n2026-10-04,BTC,130\n2026-10-05,B"TC,140\n', 4, "a quote opened here runs on over line 5"),
    (PRICE_ROWS + '2026-10-03,"BTC,120\n2026-10-04,BTC,130\n', 4, "a quote opened here is never closed"),
    # Over the csv module's field limit, or within it where another module raised it (it is
    # process-wide): either way an error naming the line, not a traceback.
    (PRICE_ROWS + "2026-10-03,BTC," + "x" * 200_000 + "\n", 4, ""),
])
def test_a_bad_price_row_is_an_error_naming_its_line(text, line, words):
    with pytest.raises(PriceError) as caught:
        parse_prices(text, "prices.csv")
    assert f"prices.csv line {line}:" in str(caught.value) and words in str(caught.value)


def test_prices_parse_with_bom_blank_lines_quotes_and_any_case():
    closes = parse_prices('\ufeffDate, Asset ,Close\n\n2026-10-01,$btc,"100.5"\n2026-10-02,ETH,2000\n2026-10-03,BTC,120.6\n')
    assert closes == {"BTC": {T0: 100.5, T0 + 2 * DAY_S: 120.6}, "ETH": {T0 + DAY_S: 2000.0}}
    # A missing day is missing data: no return bridges the gap.
    assert daily_returns({T0: 100.0, T0 + DAY_S: 110.0, T0 + 3 * DAY_S: 99.0}) == {T0 + DAY_S: pytest.approx(0.1)}


def generated_prices(index: dict[int, float], lag: int, seed: int) -> str:
    """A price file whose returns follow the index `lag` days later, plus a little noise; closes
    from the day before the index's first to three days after its last (every lag has its pairs)."""
    rng = random.Random(seed)
    days = sorted(index)
    close = 100.0
    lines = ["date,asset,close", f"{iso(days[0] - DAY_S)[:10]},BTC,{close}"]
    for day in range(days[0], days[-1] + 4 * DAY_S, DAY_S):
        ret = 0.04 * index.get(day - lag * DAY_S, 0.0) + rng.gauss(0, 0.002)
        close *= 1 + ret
        lines.append(f"{iso(day)[:10]},BTC,{close:.10f}")
    return "\n".join(lines) + "\n"


def test_lead_lag_finds_the_lag_the_prices_were_built_with():
    rng = random.Random(5)
    index = {T0 + d * DAY_S: rng.uniform(-0.5, 0.5) for d in range(60)}
    closes = parse_prices(generated_prices(index, lag=1, seed=6))["BTC"]
    results = {r.lag: r for r in lead_lag(index, daily_returns(closes))}
    one = results[1]
    assert one.n == 60 and one.r > 0.95 and one.meaningful
    assert one.low < one.r < one.high and one.low > 0.9 and one.p < 1e-9
    assert "beyond noise" in verdict(one)
    for lag in (0, 2, 3):  # the index says nothing about those days' returns
        assert abs(results[lag].r) < 0.35 and results[lag].low < 0 < results[lag].high, results[lag]
        assert verdict(results[lag]).startswith("within noise")
    assert max(results.values(), key=lambda r: abs(r.r)).lag == 1


def test_fisher_interval_and_p_value_match_the_formula():
    # r = 0.5, n = 28: z = atanh(0.5) = 0.5493, standard error 1 / sqrt(25) = 0.2.
    low, high = fisher_interval(0.5, 28)
    assert low == pytest.approx(0.1568, abs=1e-3) and high == pytest.approx(0.7364, abs=1e-3)
    assert fisher_p(0.5, 28) == pytest.approx(0.00603, abs=2e-4)
    assert fisher_interval(0.5, 3) is None and fisher_p(0.5, 3) is None


def test_small_samples_say_so():
    few = lead_lag({T0 + d * DAY_S: float(d % 3) for d in range(6)}, {T0 + d * DAY_S: 0.01 * d for d in range(1, 9)}, lags=[1])[0]
    assert few.n == 6 and few.r is not None and few.low is not None and not few.meaningful
    assert verdict(few) == f"not meaningful: only 6 day pairs (need about {MEANINGFUL_PAIRS})"
    assert "undefined" in verdict(LagResult(0, 2, None)) and "constant" in verdict(LagResult(0, 9, None))


def test_format_comes_from_the_flag_then_the_suffix():
    assert format_for("r.html", None) == "html" and format_for("r.md", None) == "md" and format_for("r.CSV", None) == "csv"
    assert format_for("report", None) == "html" and format_for(None, None) == "html" and format_for("r.html", "md") == "md"
    with pytest.raises(ValueError, match="unknown format"):
        format_for("r.html", "pdf")


def hostile_report():
    scope = f"asset:{HOSTILE}"
    tables = {"all": [[2, 1, 1, 0, 0.0, 0.72]], scope: [[2, 1, 1, 0, 0.0, 0.72]]}
    bad = incident("=HYPERLINK(\"http://evil\")", scope, T0 + 60, acked="<img src=x onerror=alert(1)> **ok** | done\nnext",
                   verdict={"verdict": "false-alarm", "by": "dana", "via": "cli", "reason": "", "at": "2026-10-01T02:00:00Z"})
    return build_report(T0, 1, tables, [bad], watermark=T0 + 60, generated_at=T0 + 120)


class Cells(HTMLParser):
    """Every table row of an HTML report: its data- attributes and its cells' text."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[tuple[dict[str, str], list[str]]] = []
        self.tags: list[str] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag == "tr":
            self.rows.append(({k: v or "" for k, v in attrs if k.startswith("data-")}, []))
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.rows[-1][1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def html_rows(text: str) -> dict[tuple[str, str], list[str]]:
    parser = Cells()
    parser.feed(text)
    return {(a["data-scope"], a["data-date"]): cells for a, cells in parser.rows if "data-scope" in a}


def test_rendering_escapes_hostile_scopes_and_incident_text():
    report = hostile_report()
    page = render_html(report)
    assert "<img" not in page and "<B>" not in page and "&lt;B&gt;ONK|[X](Y)" in page
    parser = Cells()
    parser.feed(page)
    assert set(parser.tags) <= {"html", "head", "meta", "title", "style", "body", "h1", "h2", "h3", "p", "table", "tr", "th", "td", "br",
                                "svg", "rect", "text", "line", "path", "polyline", "circle"}
    # The scope reads back exactly as it was, through the escaping.
    assert html_rows(page)[(f"asset:{HOSTILE}", "2026-10-01")][1] == "2"

    md = render_markdown(report)
    assert "<img" not in md and "<B>" not in md and "](" not in md and "**ok**" not in md
    assert md_escape(HOSTILE) == r"&lt;B&gt;ONK\|\[X\]\(Y\)"
    for line in md.splitlines():
        if line.startswith("| 2026-10-01") or "HYPERLINK" in line:
            cells = re.split(r"(?<!\\)\|", line)[1:-1]  # unescaped bars only: the column count holds
            assert len(cells) in (7, 9), line
    assert r"&lt;img src=x onerror=alert\(1\)&gt; \*\*ok\*\* \| done next | false\-alarm |" in md  # one line, inert, the bar escaped
    assert '<p class="note" id="judged">Verdicts on the 1 incident below: 0 real, 1 false alarm, 0 not judged.</p>' in page
    assert "\nVerdicts on the 1 incident below: 0 real, 1 false alarm, 0 not judged.\n" in md
    (cells,) = [cells for a, cells in parser.rows if "data-incident" in a]
    assert cells[-2:] == ["<img src=x onerror=alert(1)> **ok** | done\nnext", "false-alarm"]  # the verdict beside the acknowledgement

    rows = list(csv.reader(io.StringIO(render_csv(report))))
    (hostile_row,) = [r for r in rows if r[1] == f"asset:{HOSTILE}"]
    assert hostile_row[11].startswith("'=HYPERLINK")  # a spreadsheet shows it; it does not run it


class Texts(HTMLParser):
    """Every piece of text an HTML report shows (what a mail client may linkify), attributes aside."""

    def __init__(self) -> None:
        super().__init__()
        self.texts: list[str] = []

    def handle_data(self, data):
        self.texts.append(data)


def test_scopes_and_tickers_are_defanged_where_the_report_shows_them_and_exact_in_csv():
    """Session 57: a Telegram group named `claim-airdrop.example` rooted incidents; notices showed
    it defanged, but the daily report only escaped it, and a mail client opening the HTML (or the
    Markdown, or the mail's own text) inline linked it. Every output a person reads shows it as
    `claim-airdrop[.]example`: scope cells, headings, charts, incident lists and tables, the
    quiet assets' line; CSV and the data- attributes (for machines) keep the names exact."""
    channel, asset, quiet = "channel:claim-airdrop.example", "asset:CLAIM.EXAMPLE", "FREE.EXAMPLE"
    tables = {"all": [[3, 1, 1, 1, 0, 0.72]], asset: [[2, 1, 1, 0, 0, 0.5]]}
    found = [incident("i1", channel, T0 + 60, (asset,)), incident("i0", channel, T0 - 600, (asset,))]  # one carried
    report = build_report(T0, 1, tables, found, watermark=T0 + 3600, generated_at=T0 + 7200, expected=["CLAIM.EXAMPLE", quiet])
    assert report.carried and report.incidents

    page = render_html(report)
    texts = Texts()
    texts.feed(page)
    shown = " ".join(texts.texts)
    for live in ("airdrop.example", "CLAIM.EXAMPLE", "FREE.EXAMPLE"):
        assert live.lower() not in shown.lower(), (live, [t for t in texts.texts if live.lower() in t.lower()])
    assert "channel:claim-airdrop[.]example" in shown and "asset:CLAIM[.]EXAMPLE" in shown and "FREE[.]EXAMPLE" in shown
    assert f'aria-label="{asset} daily chart"' not in page  # the chart's label too
    assert (asset, "period") in html_rows(page) and f'data-quiet="asset:{quiet}"' in page  # exact, for machines

    md = render_markdown(report)
    assert "airdrop.example" not in md and "CLAIM.EXAMPLE" not in md and "FREE.EXAMPLE" not in md
    assert r"claim\-airdrop\[.\]example" in md and r"## asset:CLAIM\[.\]EXAMPLE" in md

    mail = summary_text(report)
    assert "airdrop.example" not in mail and "CLAIM.EXAMPLE" not in mail and "FREE.EXAMPLE" not in mail
    assert "FREE[.]EXAMPLE" in mail and "channel:claim-airdrop[.]example (open)" in mail

    rows = list(csv.DictReader(io.StringIO(render_csv(report))))
    assert {r["scope"] for r in rows} == {"all", asset, f"asset:{quiet}"}
    assert {r["incident_list"] for r in rows if r["scope"] == asset} == {f"i1 {channel} warning open"}


def test_the_html_report_is_one_self_contained_file():
    page = render_html(hostile_report())
    assert "<svg" in page and "</html>" in page
    for fetch in ("<script", "<link", " src=", "href=", "@import", "url(", "<iframe", "<object"):
        assert fetch not in page.replace("&lt;img src=x", ""), fetch  # the escaped hostile text is the only 'src='


def test_a_configured_asset_without_posts_is_shown_with_0_in_every_output():
    """Session 56: an asset of the alias table with no post in the report's days was no row at all,
    so a reader looking for SOL could not tell a quiet day from a report short of data. A cashtag's
    asset outside the table, quiet all period, is still left out."""
    tables = {"all": [[3, 1, 1, 1, 0, 0.72], [0] * 6], "asset:BTC": [[3, 1, 1, 1, 0, 0.72], [0] * 6], "asset:MOONCAT": [[0] * 6] * 2}
    report = build_report(T0, 2, tables, [], watermark=T0 + 60, generated_at=T0 + 120, expected={"BTC", "SOL"})
    assert report.scopes == ("all", "asset:BTC", "asset:SOL") and report.quiet == ["asset:SOL"]
    rows = list(csv.DictReader(io.StringIO(render_csv(report))))
    assert [(r["date"], r["posts"], r["sentiment_index"]) for r in rows if r["scope"] == "asset:SOL"] == [
        ("2026-10-01", "0", ""), ("2026-10-02", "0", "")]
    page = render_html(report)
    assert '<p class="note" id="quiet" data-quiet="asset:SOL">No posts in these days: SOL.</p>' in page
    assert page.count("<svg") == 2 and ("asset:SOL", "period") not in html_rows(page)  # one line, no row or chart of nothing
    md = render_markdown(report)
    assert "\nNo posts in these days: SOL.\n" in md and "asset:SOL" not in md
    text = summary_text(report)
    assert "\nNo posts in these days: SOL\n" in text and "MOONCAT" not in text + md + page


def test_a_small_forums_report_says_its_quiet_assets_in_one_line_not_a_section_each():
    """Session 56 review: with the built-in alias table (~35 tickers) a forum talking of two assets got
    ~33 rows of 0 among its period summary and ~33 "No posts" sections between its two charts: the
    news buried in noise for the reader. Now one line under the summary names them; an asset with
    no posts but an incident (rooted there) keeps its row and section; CSV keeps every row of 0."""
    tables = {"all": [[5, 2, 2, 1, 0, 1.0]], "asset:BTC": [[3, 1, 1, 1, 0, 0.72]], "asset:ETH": [[2, 1, 1, 0, 0, 0.5]]}
    found = [incident("sol1", "asset:SOL", T0 + 600)]
    report = build_report(T0, 1, tables, found, watermark=T0 + 3600, generated_at=T0 + 7200, expected=DEFAULT_ALIASES.known)
    quiet = sorted(f"asset:{t}" for t in DEFAULT_ALIASES.known - {"BTC", "ETH", "SOL"})
    assert len(quiet) > 25
    page = render_html(report)
    assert {s for s, d in html_rows(page) if d == "period"} == {"all", "asset:BTC", "asset:ETH", "asset:SOL"}
    assert page.count("<h3>") == 4 and page.count("<svg") == 4  # all, BTC, ETH and SOL (its incident)
    line = re.search(r'<p class="note" id="quiet" data-quiet="([^"]*)">No posts in these days: ([^<]*)\.</p>', page)
    assert line.group(1).split() == quiet and line.group(2).split(", ") == [q.removeprefix("asset:") for q in quiet]
    md = render_markdown(report)
    assert md.count("\n## ") == 4 + 2 and md.count("\n## asset:") == 3  # + "Period summary", "Incidents opened"
    assert re.search(r"^\| asset:SOL \| 0 \|", md, re.M) and not any(re.search(rf"^\| {q} \|", md, re.M) for q in quiet)
    assert "\nNo posts in these days: " in md
    rows = list(csv.DictReader(io.StringIO(render_csv(report))))
    assert {r["scope"] for r in rows} == {"all", *(f"asset:{t}" for t in DEFAULT_ALIASES.known)}


def storm_report():
    """A storm day: 900 assets with posts, 400 incidents opened, 60 open when it began."""
    assets = [f"asset:C{i:03d}" for i in range(900)]
    tables = {"all": [[90_000, 30_000, 40_000, 20_000, -900.0, 5000.0]], **{a: [[100, 30, 50, 20, -2.5, 40.0]] for a in assets}}
    found = [incident(f"storm{i:03d}", assets[i], T0 + 60 + i) for i in range(400)]
    found += [incident(f"carried{i:02d}", assets[-1 - i], T0 - 600 - i) for i in range(60)]
    return build_report(T0, 1, tables, found, watermark=T0 + DAY_S - 1, generated_at=T0 + DAY_S)


def test_a_fitted_notification_keeps_the_assets_with_incidents_and_the_most_posts():
    """Session 56 review: the fit cut asset lines from the alphabetical last, so ZEC's incident went
    while 29 quiet-ish assets before it stayed. The assets with incidents stay first, then those with
    the most posts, listed in the report's order."""
    from stream.reporting.render import summary_text

    tables = {"all": [[400, 100, 200, 100, -10.0, 50.0]], **{f"asset:A{i:02d}": [[3, 1, 1, 1, 0, 0.72]] for i in range(30)},
              "asset:YFI": [[200, 50, 100, 50, -5.0, 20.0]], "asset:ZEC": [[5, 0, 5, 0, -4.0, 3.5]]}
    report = build_report(T0, 1, tables, [incident("zec1", "asset:ZEC", T0 + 600)], watermark=T0 + 3600, generated_at=T0 + 7200)
    whole = summary_text(report)
    for limit in (len(whole) - 40, 1200):
        text = summary_text(report, limit)
        shown = re.findall(r"^asset:(\w+): ", text, re.M)
        assert len(text) <= limit and 2 <= len(shown) < 32, (limit, shown)
        assert shown[-2:] == ["YFI", "ZEC"]  # kept, in the report's order
        assert re.search(rf"^\.\.\. and {32 - len(shown)} more assets? \(in the attached report\)$", text, re.M)


def test_a_fitted_notification_cuts_the_quiet_assets_names_before_any_asset_with_posts():
    """Session 56 review: the 'No posts in these days' line was never cut, so to fit PagerDuty's 1,024
    the assets with posts and incidents went while the names of ~33 assets without news stayed (a
    long SENTINEL_ALIASES_FILE's line was cut blindly at its end). The names go first, counted."""
    from stream.reporting.render import summary_text

    tables = {"all": [[5, 2, 2, 1, 0, 1.0]], "asset:BTC": [[3, 1, 1, 1, 0, 0.72]], "asset:ETH": [[2, 1, 1, 0, 0, 0.5]]}
    report = build_report(T0, 1, tables, [incident("eth1", "asset:ETH", T0 + 600)], watermark=T0 + 3600, generated_at=T0 + 7200,
                          expected=DEFAULT_ALIASES.known)
    quiet = len(DEFAULT_ALIASES.known - {"BTC", "ETH"})
    whole = summary_text(report)
    cut = len(whole) - 60
    text = summary_text(report, cut)
    assert len(text) <= cut and re.search(r"^asset:BTC: 3 posts", text, re.M) and re.search(r"^asset:ETH: 2 posts, .*1 incident", text, re.M)
    line = re.search(r"^No posts in these days: (.*) \.\.\. and (\d+) more assets \(in the attached report\)$", text, re.M)
    assert line and len(line.group(1).split(", ")) + int(line.group(2)) == quiet, text
    full = re.search(r"^No posts in these days: .*$", whole, re.M).group(0)
    bare = whole.replace(full, f"No posts in these days: ... and {quiet} more assets (in the attached report)")
    assert summary_text(report, len(bare)) == bare  # no name left, a count; every asset line with posts kept


def test_a_storm_days_notification_fits_each_service_keeping_the_headline_and_the_attachment(tmp_path, monkeypatch):
    """Session 56: the report's text went to Apprise uncapped. A storm day's (900 assets) was 56,571
    characters against a webhook's or a mail's 32,768 (Apprise's `body_maxlen`), sent as it was for
    the service to cut or refuse. Fitted as alerts are: asset lines cut from the last with a count,
    the title, the whole market's line and the attachment line kept; through a real webhook and a
    real SMTP server, and to a small limit (Discord's 2,000) by the pure function."""
    from test_notify import smtp_server, wait_until

    from stream.alerts.notify import body_limit, build_apprise
    from stream.reporting.deliver import deliver_report
    from stream.reporting.render import ATTACHED_TEXT, summary_text, title

    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    report = storm_report()
    whole = summary_text(report)
    assert len(whole) > 50_000  # 56,571 characters: what went out before, to every service

    def kept_whole(text: str, limit: int) -> int:
        """The checks every fitted text passes; the number of asset lines it shows."""
        lines = text.split("\n")
        assert len(text) <= limit and lines[0] == title(report) and lines[-1] == ATTACHED_TEXT, (len(text), lines[:2], lines[-2:])
        assert re.search(r"^all: 90000 posts, sentiment index -0\.010, 400 incident\(s\)$", text, re.M)
        shown = len(re.findall(r"^asset:C\d{3}: 100 posts", text, re.M))
        more = re.search(r"^\.\.\. and (\d+) more assets \(in the attached report\)$", text, re.M)
        assert more and shown + int(more.group(1)) == 900, (shown, more)
        return shown

    # Discord's 2,000: a few assets, and the 60 incidents open at midnight whole.
    small = summary_text(report, 2000)
    assert 0 < kept_whole(small, 2000) < 20 and "asset:C840 (open)" in small and "more incidents" not in small
    # PagerDuty's 1,024: no asset line left, then the incidents cut from the last too, counted.
    tiny = summary_text(report, 1024)
    assert kept_whole(tiny, 1024) == 0
    carried = re.search(r"^60 incident\(s\) opened earlier were open when 2026-10-01 began: (.*) \.\.\. and (\d+) more incidents "
                        r"\(in the attached report\)$", tiny, re.M)
    assert carried and len(carried.group(1).split(", ")) + int(carried.group(2)) == 60, tiny

    path = tmp_path / "report.html"
    path.write_text(render_html(report), encoding="utf-8")
    hook = Hook()
    try:
        with smtp_server() as (port, received):
            targets = list(build_apprise(f"{hook.url} mailto://127.0.0.1:{port}?from=s@example.com&to=risk@example.com&mode=insecure", None))
            done = deliver_report(targets, path, title(report), whole, attempts=1,
                                  fit=lambda _text, maxlen, size: summary_text(report, maxlen, size))
            assert done.ok, done
            wait_until(lambda: len(received) == 1)
        limits = [body_limit(server, title(report)) for server in targets]
        assert limits == [32768, 32768]
        (payload,) = hook.accepted
        assert kept_whole(payload["message"], limits[0]) > 300 and len(payload["attachments"]) == 1
        mail = email.message_from_bytes(received[0].original_content, policy=email.policy.default)
        body = mail.get_body(preferencelist=("plain",)).get_content().replace("\r\n", "\n").rstrip("\n")
        assert kept_whole(body, limits[1]) > 300
        assert [p.get_filename() for p in mail.iter_attachments()] == ["report.html"]
        # The operator's SENTINEL_NOTIFY_BODY_MAX caps the report's text too, as it caps the notices'.
        capped = deliver_report(targets[:1], path, title(report), whole, attempts=1, body_max=4000,
                                fit=lambda _text, maxlen, size: summary_text(report, maxlen, size))
        assert capped.ok, capped
        assert 0 < kept_whole(hook.accepted[-1]["message"], 4000) < 60 and len(hook.accepted[-1]["attachments"]) == 1
    finally:
        hook.close()


# ------------------------------------------------------------------------------------------------ real redis, real CLI


def cli(args: list[str], redis_url: str | None, timeout: float = 180, **env_extra: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "KAFKA_BROKER", "SENTINEL_REDIS_URL", "SENTINEL_KAFKA_BROKER",
                                                           "SENTINEL_APPRISE_URLS", "SENTINEL_APPRISE_CONFIG")}
    env.update({"NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost", **env_extra})
    if redis_url:
        env["SENTINEL_REDIS_URL"] = redis_url
    return subprocess.run([sys.executable, "-m", "sentinel.cli", *args], env=env, capture_output=True, text=True, timeout=timeout)


def generated_posts(seed: int, days: int) -> list[Scored]:
    """Posts over `days` days: BTC every day, ETH on most, a hostile ticker on one day, some posts
    about two assets and some about none; labels and scores drawn at random."""
    rng = random.Random(seed)
    posts = []
    for i in range(40 * days):
        ts = T0 + rng.uniform(0, days * DAY_S)
        day = int((ts - T0) // DAY_S)
        assets = rng.choice([("BTC",), ("BTC",), ("ETH",), ("BTC", "ETH"), ()])
        if day == 3 and "ETH" in assets:
            assets = ("BTC",)  # ETH is quiet on day 3: an empty day in its row
        if day == days - 1 and i % 7 == 0:
            assets = (HOSTILE,)
        label = rng.choice(["positive", "negative", "neutral"])
        score = round(SCORES[label] + rng.uniform(-0.3, 0.3), 3)
        posts.append(Scored(Post(f"p{i}", f"${' $'.join(assets) or 'nothing'} {label}", ts, assets, "forum", "general"), label, score))
    return sorted(posts, key=lambda s: s.post.created_at)


def load_posts(url: str, posts: list[Scored]) -> None:
    async def go() -> None:
        store = WindowStore.from_url(url, retention_s=30 * DAY_S)
        try:
            for i in range(0, len(posts), 50):
                batch = posts[i: i + 50]
                await store.apply(batch, {}, batch[-1].post.created_at, {0: batch[-1].post.created_at})
        finally:
            await store.close()

    asyncio.run(go())


def expected_rows(posts: list[Scored], first: int, days: int) -> dict[tuple[str, str], dict]:
    """(scope, date) -> posts, label counts and mean score, counted here from the posts."""
    acc: dict[tuple[str, int], list[Scored]] = defaultdict(list)
    for s in posts:
        for scope in ("all", *(f"asset:{a}" for a in s.post.assets)):
            acc[scope, int(s.post.created_at // DAY_S * DAY_S)].append(s)
    out = {}
    for scope in {k[0] for k in acc}:
        for d in range(days):
            day = first + d * DAY_S
            found = acc.get((scope, day), [])
            counts = {lab: sum(s.label == lab for s in found) for lab in SCORES}
            out[scope, iso(day)[:10]] = {"posts": len(found), **counts,
                                         "index": sum(s.score for s in found) / len(found) if found else None}
    return out


NO_POSTS = {"posts": 0, **{label: 0 for label in SCORES}, "index": None}  # an asset of the alias table nobody wrote of


def pct(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}%" if whole else ""


@pytest.fixture()
def loaded(redis_server):
    """Nine days of posts and three incidents in a flushed Redis; the report of the last 7 days
    covers days 1..8 (the newest post is on day 8)."""
    r = redis.Redis.from_url(redis_server, decode_responses=True)
    r.flushdb()
    posts = generated_posts(seed=11, days=9)
    load_posts(redis_server, posts)
    newest = posts[-1].post.created_at
    first, days = day_span(newest, 7 * DAY_S)
    found = [incident("eth1", "asset:ETH", T0 + 6 * DAY_S + 300, ("channel:general",), severity="critical"),
             incident("mkt1", "all", T0 + 7 * DAY_S + 60, ("asset:BTC", "asset:ETH"), state="resolved"),
             incident("gone", "asset:BTC", T0 + 10)]  # day 0: before the report's days
    for summary in found:
        r.hset(INCIDENTS_KEY, summary["incident_id"], json.dumps(summary))
        r.zadd(INCIDENTS_INDEX_KEY, {summary["incident_id"]: summary["opened"]})
    return posts, first, days


def test_report_cli_numbers_match_an_independent_count(loaded, redis_server, tmp_path):
    posts, first, days = loaded
    assert first == T0 + DAY_S and days == 8, (first, days)
    expected = expected_rows(posts, first, days)
    scopes = sorted({s for s, _ in expected if any(expected[s, iso(first + d * DAY_S)[:10]]["posts"] for d in range(days))})
    assert {"all", "asset:BTC", "asset:ETH", f"asset:{HOSTILE}"} <= set(scopes)
    # The built-in alias table's assets nobody wrote of: shown, with 0 posts (since session 56).
    quiet = sorted(f"asset:{t}" for t in DEFAULT_ALIASES.known if f"asset:{t}" not in scopes)
    assert "asset:SOL" in quiet
    incidents = {("asset:ETH", "2026-10-07"): 1, ("all", "2026-10-07"): 1, ("all", "2026-10-08"): 1, ("asset:BTC", "2026-10-08"): 1,
                 ("asset:ETH", "2026-10-08"): 1}

    runs = {fmt: cli(["report", "--since", "7d", "--out", str(tmp_path / f"r.{fmt}")], redis_server) for fmt in ("html", "md", "csv", "txt")}
    for fmt, done in runs.items():
        assert done.returncode == 0, f"{fmt}: {done.stderr}"
    # A name whose suffix says no format gets html, and is told so.
    assert "note: r.txt: writing html" in runs["txt"].stderr and "note:" not in runs["md"].stderr
    assert (tmp_path / "r.txt").read_text(encoding="utf-8").lstrip().lower().startswith("<!doctype html")

    rows = list(csv.DictReader(io.StringIO((tmp_path / "r.csv").read_text(encoding="utf-8"))))
    assert len(rows) == days * (len(scopes) + len(quiet))
    for row in rows:
        want = expected.get((row["scope"], row["date"]), NO_POSTS)
        assert int(row["posts"]) == want["posts"], row
        assert [int(row[lab]) for lab in SCORES] == [want[lab] for lab in SCORES], row
        if want["posts"]:
            assert float(row["positive_share"]) == pytest.approx(want["positive"] / want["posts"], abs=1e-6)
            assert float(row["sentiment_index"]) == pytest.approx(want["index"], abs=1e-6)
        else:
            assert row["sentiment_index"] == "" and row["positive_share"] == ""
        assert int(row["incidents"]) == incidents.get((row["scope"], row["date"]), 0), row
    assert "gone" not in (tmp_path / "r.csv").read_text()  # day rows: incidents opened in these days

    page = (tmp_path / "r.html").read_text(encoding="utf-8")
    table = html_rows(page)
    for (scope, date), want in expected.items():
        if scope not in scopes:
            continue
        cells = table[scope, date]
        assert cells[1] == str(want["posts"]), (scope, date, cells)
        assert cells[2:5] == [pct(want[lab], want["posts"]) for lab in ("positive", "negative", "neutral")]
        assert cells[5] == ("" if want["index"] is None else f"{want['index']:+.3f}")
        assert cells[6].startswith(str(incidents.get((scope, date), 0)))
    assert "eth1 asset:ETH critical open" in table["asset:ETH", "2026-10-07"][6]
    assert table["asset:BTC", "period"][1] == str(sum(expected["asset:BTC", iso(first + d * DAY_S)[:10]]["posts"] for d in range(days)))
    assert page.count("<svg") >= len(scopes) and "<B>ONK" not in page
    # One line under the summary, not a row and a section each (a small forum's report was mostly zeros).
    assert not any((scope, "period") in table for scope in quiet)
    assert re.search(r'<p class="note" id="quiet" data-quiet="([^"]*)">No posts in these days: ', page).group(1).split() == quiet

    md = (tmp_path / "r.md").read_text(encoding="utf-8")
    sections = re.split(r"^## ", md, flags=re.M)
    for scope in scopes:
        heading = "all (whole market)" if scope == "all" else md_escape(displayed(scope))  # as notices show it (`<` a look-alike)
        (section,) = [s for s in sections if s.startswith(heading + "\n")]
        dated = [line for line in section.splitlines() if re.match(r"^\| 2026-", line)]
        assert len(dated) == days
        for line in dated:
            cells = [c.strip() for c in line.strip("|").split(" | ")]
            want = expected[scope, cells[0]]
            assert cells[1] == str(want["posts"]) and cells[5] == ("" if want["index"] is None else f"{want['index']:+.3f}"), line
    # Opened on day 0, before the report's days, and still open: listed apart, in the md and the html.
    assert "\nOpen when 2026-10-02 began (1 incident opened earlier; " in md and "| gone | asset:BTC | warning | open |" in md
    assert 'data-incident="gone"' in page


def test_report_with_prices_and_bad_prices(loaded, redis_server, tmp_path):
    posts, first, days = loaded
    expected = expected_rows(posts, first, days)
    index = {first + d * DAY_S: expected["asset:BTC", iso(first + d * DAY_S)[:10]]["index"] for d in range(days)}
    prices = tmp_path / "prices.csv"
    prices.write_text(generated_prices(index, lag=1, seed=3), encoding="utf-8")
    done = cli(["report", "--since", "7d", "--format", "md", "--prices", str(prices)], redis_server)
    assert done.returncode == 0, done.stderr
    closes = parse_prices(prices.read_text())["BTC"]
    returns = daily_returns(closes)
    for lag in range(4):
        pairs = [(index[d], returns[d + lag * DAY_S]) for d in sorted(index) if d + lag * DAY_S in returns]
        r = statistics.correlation(*zip(*pairs))
        row = re.search(rf"^\| {lag} \| (\d+) \| ([+-]\d\.\d\d) \|.*$", done.stdout, re.M)
        assert row, done.stdout[-3000:]
        assert int(row.group(1)) == len(pairs) == days and row.group(2) == f"{r:+.2f}"
        assert "not meaningful: only 8 day pairs" in row.group(0)  # eight days are too few, and it says so
    assert re.search(r"^No prices in the file for: .*ETH\.$", done.stdout, re.M)

    bad = tmp_path / "bad.csv"
    bad.write_text("date,asset,close\n2026-10-01,BTC,100\n2026-10-02,BTC,1o1\n", encoding="utf-8")
    failed = cli(["report", "--prices", str(bad), "--out", str(tmp_path / "x.html")], redis_server)
    assert failed.returncode == 2 and f"{bad} line 3: close '1o1' is not a number" in failed.stderr.replace("\n", "")
    assert not (tmp_path / "x.html").exists()


def test_report_on_an_empty_redis_says_so(redis_server):
    redis.Redis.from_url(redis_server).flushdb()
    done = cli(["report", "--format", "csv"], redis_server)
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader(io.StringIO(done.stdout)))
    shown = {"all", *(f"asset:{t}" for t in DEFAULT_ALIASES.known)}  # the alias table's assets, 0 posts each
    assert len(rows) == 8 * len(shown) and {(r["scope"], r["posts"], r["sentiment_index"]) for r in rows} == {(s, "0", "") for s in shown}
    assert "no posts yet" in cli(["report", "--format", "md"], redis_server).stdout


def test_a_report_reaching_back_before_the_data_starts_at_its_first_day(redis_server, tmp_path):
    """`--since 7d` on three days of data listed four 0-post days first (the demo's 02-25 to 03-01)."""
    redis.Redis.from_url(redis_server).flushdb()
    load_posts(redis_server, generated_posts(seed=5, days=3))
    done = cli(["report", "--since", "7d", "--format", "csv"], redis_server)
    assert done.returncode == 0, done.stderr
    dates = sorted({r["date"] for r in csv.DictReader(io.StringIO(done.stdout))})
    assert dates == [iso(T0 + d * DAY_S)[:10] for d in range(3)], dates
    md = cli(["report", "--since", "7d", "--format", "md"], redis_server).stdout
    assert f"3 UTC day(s), the last 7d of event time (no data before {iso(T0)[:10]})" in md, md[:600]
    assert "no data before" not in cli(["report", "--since", "1d", "--format", "md"], redis_server).stdout
    one = cli(["report", "--since", "1s", "--out", str(tmp_path / "one.md")], redis_server)  # the newest day alone
    assert one.returncode == 0 and re.search(r"\(\d+ scopes, 1 day\)", one.stderr) and "1 days" not in one.stderr, one.stderr


def test_report_of_a_named_day_is_the_same_whenever_it_is_run(redis_server):
    """`--since 1d` counts back from the newest post, so the CronJob's report re-run later covered
    other days; `--day` re-creates one UTC day's, with the incidents opened that day and those open
    when it began, and says where the incident history no longer reaches."""
    r = redis.Redis.from_url(redis_server, decode_responses=True)
    r.flushdb()
    posts = generated_posts(seed=7, days=5)
    day1 = T0 + DAY_S
    load_posts(redis_server, [p for p in posts if p.post.created_at < T0 + 3 * DAY_S])
    for summary in (incident("d1", "asset:BTC", day1 + 600), incident("before", "asset:ETH", day1 - 600),
                    incident("over", "all", T0 + 60, state="resolved", at=T0 + 3600), incident("d2", "all", day1 + DAY_S + 5)):
        r.hset(INCIDENTS_KEY, summary["incident_id"], json.dumps(summary))
        r.zadd(INCIDENTS_INDEX_KEY, {summary["incident_id"]: summary["opened"]})
    first = cli(["report", "--day", iso(day1)[:10], "--format", "csv"], redis_server)
    assert first.returncode == 0, first.stderr
    rows = list(csv.DictReader(io.StringIO(first.stdout)))
    expected = expected_rows(posts, day1, 1)
    assert {row["date"] for row in rows} == {iso(day1)[:10]}
    for row in rows:
        assert int(row["posts"]) == expected.get((row["scope"], row["date"]), NO_POSTS)["posts"], row
    assert {row["incident_list"] for row in rows if row["scope"] == "all"} == {"d1 asset:BTC warning open"}
    md = cli(["report", "--day", iso(day1)[:10], "--format", "md"], redis_server).stdout
    assert "1 UTC day(s), the UTC day asked for (--day);" in md and "| before | asset:ETH |" in md
    assert "| d2 |" not in md and "| over |" not in md and "may be gone from the history" not in md

    load_posts(redis_server, [p for p in posts if p.post.created_at >= T0 + 3 * DAY_S])  # two days on
    again = cli(["report", "--day", iso(day1)[:10], "--format", "csv"], redis_server)
    assert again.returncode == 0 and again.stdout == first.stdout
    assert iso(day1)[:10] not in cli(["report", "--since", "1d", "--format", "csv"], redis_server).stdout  # counted from the newest post
    md = cli(["report", "--day", iso(day1)[:10], "--format", "md"], redis_server).stdout
    assert re.search(r"Incidents are kept for SENTINEL_RETENTION: those opened before about \S+ may be gone from the history", md), md[:800]

    for bad, says in ((["--day", "2026-13-01"], "--day: '2026-13-01' is not a UTC day as YYYY-MM-DD"),
                      (["--day", iso(day1)[:10], "--since", "2d"], "--day or --since, not both")):
        refused = cli(["report", *bad], redis_server)
        assert refused.returncode == 2 and says in refused.stderr.replace("\n", ""), refused.stderr


def test_notify_sends_the_report_as_an_attachment(loaded, redis_server, tmp_path):
    hook, pager = Hook(), Hook()
    try:
        out = tmp_path / "report.html"
        # The pager only takes critical alerts: a daily report must not page anyone.
        urls = f"{hook.url} critical={pager.url}"
        done = cli(["report", "--since", "1d", "--notify", "--out", str(out)], redis_server, SENTINEL_APPRISE_URLS=urls)
        assert done.returncode == 0, done.stderr
        (payload,) = hook.accepted
        assert pager.accepted == []
        (attachment,) = payload["attachments"]
        assert attachment["filename"] == "report.html" and attachment["mimetype"] == "text/html"
        assert base64.b64decode(attachment["base64"]) == out.read_bytes()
        assert payload["title"].startswith("Forum Sentinel daily report: 2026-10-08 to 2026-10-09")
        # The index named and its range said ("index +0.101" left the reader to guess).
        assert re.search(r"^asset:BTC: \d+ posts, sentiment index [+-]\d\.\d{3}, 1 incident\(s\)$", payload["message"], re.M)
        assert "Sentiment index: the mean of p(positive) - p(negative) per post, from -1 (all negative) to +1 (all positive)." in payload["message"]
        assert re.search(r"wrote .*report\.html \(\d+ scopes, 2 days\)", done.stderr), done.stderr

        # An endpoint that stays down: retried, then a failed command (the CronJob run fails).
        hook.failing = True
        failed = cli(["report", "--notify", "--format", "csv"], redis_server, SENTINEL_APPRISE_URLS=hook.url,
                     SENTINEL_NOTIFY_ATTEMPTS="2", SENTINEL_NOTIFY_BACKOFF="0.01")
        assert failed.returncode == 2 and "not delivered to 1 of 1 service" in failed.stderr and hook.refused == 2
        nothing = cli(["report", "--notify"], redis_server)  # nothing configured: said, not ignored
        assert nothing.returncode == 2 and "--notify needs SENTINEL_APPRISE_URLS" in nothing.stderr, nothing.stderr
    finally:
        hook.close()
        pager.close()


def test_the_configured_alias_tables_assets_are_the_ones_shown_without_posts(loaded, redis_server, tmp_path):
    """SENTINEL_ALIASES_FILE names the assets the workers detect: those the report shows with 0 posts
    (CSV, HTML, Markdown and the notification alike); one the pod cannot read is said, not fatal."""
    table = tmp_path / "aliases.json"
    table.write_text(json.dumps({"bitcoin": "BTC", "ethereum": "ETH", "solana": "SOL"}), encoding="utf-8")
    done = cli(["report", "--since", "7d", "--format", "csv"], redis_server, SENTINEL_ALIASES_FILE=str(table))
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader(io.StringIO(done.stdout)))
    assert {r["scope"] for r in rows} == {"all", "asset:BTC", "asset:ETH", f"asset:{HOSTILE}", "asset:SOL"}
    assert {r["posts"] for r in rows if r["scope"] == "asset:SOL"} == {"0"} and len(rows) == 8 * 5
    md = cli(["report", "--since", "7d", "--format", "md"], redis_server, SENTINEL_ALIASES_FILE=str(table)).stdout
    assert "\nNo posts in these days: SOL.\n" in md and "## asset:SOL" not in md and "asset:DOGE" not in md
    hook = Hook()
    try:
        sent = cli(["report", "--since", "1d", "--notify", "--format", "csv"], redis_server, SENTINEL_ALIASES_FILE=str(table),
                   SENTINEL_APPRISE_URLS=hook.url)
        assert sent.returncode == 0, sent.stderr
        assert "\nNo posts in these days: SOL\n" in hook.accepted[0]["message"]
    finally:
        hook.close()
    gone = cli(["report", "--since", "7d", "--format", "csv"], redis_server, SENTINEL_ALIASES_FILE=str(tmp_path / "absent.json"))
    assert gone.returncode == 0 and "note: the report lists only assets with posts: SENTINEL_ALIASES_FILE" in gone.stderr, gone.stderr
    assert "asset:SOL" not in gone.stdout and "asset:BTC" in gone.stdout


def test_a_retry_after_one_service_refused_sends_to_that_one_only(loaded, redis_server, tmp_path):
    """Session 56: the CronJob's Job retries a run that exits 2 (a service refused), and the retry
    sent the report to every service again: the desk that had accepted it got it twice. Two real
    webhooks, one down for the first run: the retry reaches it alone; `--resend` reaches both. One
    endpoint configured twice is sent one report (`one_per_service`), as notices are."""
    desk, risk = Hook(), Hook()
    try:
        urls = f"{desk.url} report={desk.url} {risk.url}"  # the desk's endpoint twice (untagged, and tagged): one report
        args = ["report", "--since", "1d", "--notify", "--out", str(tmp_path / "r.html")]
        env = {"SENTINEL_APPRISE_URLS": urls, "SENTINEL_NOTIFY_ATTEMPTS": "2", "SENTINEL_NOTIFY_BACKOFF": "0.01"}
        risk.failing = True
        first = cli(args, redis_server, **env)
        assert first.returncode == 2 and "not delivered to 1 of 2 service(s)" in first.stderr, first.stderr
        assert (len(desk.accepted), risk.refused) == (1, 2)

        risk.failing = False  # the Job's retry, the endpoint back
        retry = cli(args, redis_server, **env)
        assert retry.returncode == 0, retry.stderr
        assert (len(desk.accepted), len(risk.accepted)) == (1, 1)  # the desk's is not sent again
        assert "not sent again to 1 service(s) that accepted this report's days before" in retry.stderr and "sent r.html to 1 service" in retry.stderr

        again = cli(args, redis_server, **env)  # both have it: nothing to send, and no failure
        assert again.returncode == 0 and (len(desk.accepted), len(risk.accepted)) == (1, 1), again.stderr
        resent = cli([*args, "--resend"], redis_server, **env)
        assert resent.returncode == 0 and (len(desk.accepted), len(risk.accepted)) == (2, 2), resent.stderr
        other = cli(["report", "--since", "7d", "--notify", "--format", "csv"], redis_server, **env)  # other days: another report
        assert other.returncode == 0 and (len(desk.accepted), len(risk.accepted)) == (3, 3), other.stderr
    finally:
        desk.close()
        risk.close()


def test_resend_without_notify_is_an_error_not_ignored():
    """Session 56's `--resend` only chooses whom a sent report goes to: given alone it was ignored,
    and the user who asked for a resend got a report on stdout and nothing sent. Refused before
    anything connects (no Redis here), naming the flags it needs."""
    for args in (["report", "--resend"], ["report", "--since", "1d", "--format", "csv", "--resend"]):
        refused = cli(args, None)
        assert refused.returncode == 2, refused.stderr
        assert "--resend only with --notify or --notify-if-configured" in refused.stderr.replace("\n", ""), refused.stderr
        assert refused.stdout == ""


def test_a_service_is_marked_as_it_accepts_so_a_run_killed_in_a_later_retry_does_not_resend_it(loaded, redis_server, tmp_path):
    """Session 56 review: the marks were written once every service had been tried. A pod killed
    while a later service's retries waited (an eviction; the Job then retries) left the desk that had
    accepted unmarked, and the retry sent it the report again. Marked as it accepts now."""
    from stream.alerts.notify import build_apprise, service_key

    desk, risk = Hook(), Hook()
    admin = redis.Redis.from_url(redis_server)
    env = {**os.environ, "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost", "SENTINEL_REDIS_URL": redis_server,
           "SENTINEL_APPRISE_URLS": f"{desk.url} {risk.url}", "SENTINEL_NOTIFY_ATTEMPTS": "2", "SENTINEL_NOTIFY_BACKOFF": "120",
           "SENTINEL_NOTIFY_BACKOFF_MAX": "120", "SENTINEL_NOTIFY_CLAIM_IDLE": "600"}
    env.pop("SENTINEL_APPRISE_CONFIG", None)
    args = ["report", "--since", "1d", "--notify", "--out", str(tmp_path / "r.html")]
    risk.failing = True
    started = time.time()
    proc = subprocess.Popen([sys.executable, "-m", "sentinel.cli", *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while risk.refused < 1 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert risk.refused == 1 and len(desk.accepted) == 1 and proc.poll() is None  # waiting 120 s before risk's retry
        (desk_key,) = [service_key(s) for s in build_apprise(desk.url, None)]
        marked = [admin.hget(k, f"svc:{desk_key}") for k in admin.scan_iter(match="sentinel:report:sent:*")]
        assert [int(m) >= int(started) for m in marked if m] == [True]  # the desk's, marked by this run before it ended
    finally:
        proc.kill()  # the pod evicted
        proc.communicate(timeout=30)
    try:
        risk.failing = False
        retry = cli(args, redis_server, **{k: env[k] for k in ("SENTINEL_APPRISE_URLS", "SENTINEL_NOTIFY_ATTEMPTS")})
        assert retry.returncode == 0, retry.stderr
        assert (len(desk.accepted), len(risk.accepted)) == (1, 1), retry.stderr  # the desk is not sent it again
    finally:
        admin.close()
        desk.close()
        risk.close()


def test_a_report_goes_out_and_the_run_succeeds_where_redis_refuses_the_sent_marks(loaded, redis_server, tmp_path):
    """Session 56 review: the marks' Redis reads and writes exited 2 like the report's own. A Redis
    that serves reads but refuses writes (out of memory under noeviction, too few replicas) delivered
    the report, then failed the run: the Job retried, sending it to every service again (no mark
    held), and SentinelDailyReportFailed fired for a report that went out. A user that may not read
    the marks sent nothing. Both now a note: the report goes out, the run succeeds."""
    admin = redis.Redis.from_url(redis_server)
    hook = Hook()
    args = ["report", "--since", "1d", "--notify", "--out", str(tmp_path / "r.html")]
    try:
        admin.config_set("min-replicas-to-write", 1)  # writes refused (NOREPLICAS), reads served
        done = cli(args, redis_server, SENTINEL_APPRISE_URLS=hook.url)
        assert done.returncode == 0 and len(hook.accepted) == 1, done.stderr
        assert "note: not marked as sent (Redis: " in done.stderr and "a run again for these days sends to them again" in done.stderr
        admin.config_set("min-replicas-to-write", 0)

        # A user that may read the roll-ups but not the marks (HKEYS refused): sent, and said.
        admin.acl_setuser("nomarks", enabled=True, passwords=["+pw"], keys=["*"], channels=["*"], commands=["+@all", "-hkeys"])
        host_port = redis_server.split("://", 1)[1].rsplit("@", 1)[-1].split("/", 1)[0]
        unmarked = cli(args, f"redis://nomarks:pw@{host_port}", SENTINEL_APPRISE_URLS=hook.url)
        assert unmarked.returncode == 0 and len(hook.accepted) == 2, unmarked.stderr
        assert "note: sending to every service: which accepted this report's days before is unknown (Redis: " in unmarked.stderr
    finally:
        admin.config_set("min-replicas-to-write", 0)
        admin.acl_deluser("nomarks")
        admin.close()
        hook.close()


def test_notify_if_configured_writes_and_succeeds_without_services_but_not_when_none_takes_the_report(loaded, redis_server, tmp_path):
    """The CronJob's flag: no service at all is the documented default (a note, exit 0); services
    that all refuse reports by their tags are a routing mistake (exit 2, nobody sent anything)."""
    for urls in ("", " \n# no services yet\n"):  # unset-as-empty, and blank or comments only
        out = tmp_path / "quiet.html"
        out.unlink(missing_ok=True)
        done = cli(["report", "--since", "1d", "--notify-if-configured", "--out", str(out)], redis_server, SENTINEL_APPRISE_URLS=urls)
        assert done.returncode == 0, done.stderr
        assert "note: report not sent: no Apprise service is configured" in done.stderr
        assert out.read_text(encoding="utf-8").lstrip().lower().startswith("<!doctype html")
    # Without --out it is the plain command: the report on stdout, and the note.
    shown = cli(["report", "--since", "1d", "--notify-if-configured", "--format", "csv"], redis_server)
    assert shown.returncode == 0 and shown.stdout.startswith("date,scope,") and "report not sent" in shown.stderr, shown.stderr

    pager = Hook()
    try:
        routed_nowhere = cli(["report", "--since", "1d", "--notify-if-configured", "--out", str(tmp_path / "x.html")], redis_server,
                             SENTINEL_APPRISE_URLS=f"critical={pager.url}")
        assert routed_nowhere.returncode == 2 and "no Apprise service takes the report" in routed_nowhere.stderr, routed_nowhere.stderr
        assert pager.accepted == [] and not (tmp_path / "x.html").exists()
    finally:
        pager.close()


def test_run_writes_the_report_of_what_it_saw(tmp_path):
    """`sentinel run FILE --report`: the embedded stack, the keyword scorer, three days of posts."""
    rng = random.Random(2)
    posts, counts = [], defaultdict(lambda: defaultdict(int))
    for i in range(300):
        ts = T0 + rng.uniform(0, 3 * DAY_S)
        assets = rng.choice([["BTC"], ["ETH"], ["BTC", "SOL"], []])
        posts.append({"id": f"r{i}", "text": f"{' '.join('$' + a for a in assets) or 'market'} looks bullish today",
                      "created_at": iso(ts), "assets": assets, "source": "forum", "channel": "general"})
        for scope in ("all", *(f"asset:{a}" for a in assets)):
            counts[scope][iso(ts)[:10]] += 1
    data = tmp_path / "posts.jsonl"
    data.write_text("".join(json.dumps(p) + "\n" for p in sorted(posts, key=lambda p: p["created_at"])), encoding="utf-8")
    out = tmp_path / "run-report.html"
    done = cli(["run", str(data), "--report", str(out), "--timeout", "300"], None, timeout=600, SENTINEL_BASE="lexicon",
               SENTINEL_CACHE_DIR=str(tmp_path / "cache"), SENTINEL_PARTITIONS="1", SENTINEL_RETENTION="30d")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert f"report written to {out}" in done.stdout, done.stdout[-3000:]
    table = html_rows(out.read_text(encoding="utf-8"))
    assert {s for s, _ in table} == {"all", "asset:BTC", "asset:ETH", "asset:SOL"}  # rows: those with posts
    page = out.read_text(encoding="utf-8")
    quiet = re.search(r'id="quiet" data-quiet="([^"]*)"', page).group(1).split()  # the alias table's others: one line
    assert set(quiet) == {f"asset:{t}" for t in DEFAULT_ALIASES.known} - {"asset:BTC", "asset:ETH", "asset:SOL"}
    for scope, by_day in counts.items():
        assert table[scope, "period"][1] == str(sum(by_day.values())), scope
        for date, n in by_day.items():
            assert table[scope, date][1] == str(n), (scope, date)
    assert sorted({d for _, d in table if d != "period"}) == ["2026-10-01", "2026-10-02", "2026-10-03"]


def test_the_report_cronjob_runs_the_daily_command_with_the_deployed_settings(loaded, redis_server, tmp_path):
    """Both overlays: a daily CronJob with the CPU image, the worker's Secret keys and security rules, a
    writable /tmp for --out; and its exact command, run here with the overlay's ConfigMap (the gpu
    one names a CUDA model: the report must not care), delivers the report."""
    from test_deploy import OVERLAYS, check_references, config, one, render

    hooks: list[Hook] = []
    try:
        for name, path in sorted(OVERLAYS.items()):
            # A webhook per overlay: the same report days sent to one service again is a run again (not sent).
            hook = Hook()
            hooks.append(hook)
            docs = render(path)
            job = one(docs, "CronJob", "forum-sentinel-report")
            assert re.fullmatch(r"\d+ \d+ \* \* \*", job["spec"]["schedule"]) and job["spec"]["concurrencyPolicy"] == "Forbid"
            pod = job["spec"]["jobTemplate"]["spec"]["template"]["spec"]
            (c,) = pod["containers"]
            assert c["args"] == ["report", "--since", "1d", "--notify-if-configured", "--out", "/tmp/report.html"]
            # The console's image: the workers' on cpu, the CPU one beside CUDA workers on gpu (no GPU needed).
            console = one(docs, "Deployment", "forum-sentinel-console")["spec"]["template"]["spec"]["containers"][0]
            assert c["image"] == console["image"] and not c["image"].endswith("-cuda"), name
            assert pod["securityContext"]["runAsNonRoot"] is True and pod["automountServiceAccountToken"] is False
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False and sc["capabilities"]["drop"] == ["ALL"]
            (tmp,) = [m for m in c["volumeMounts"] if m["mountPath"] == "/tmp"]
            assert any(v["name"] == tmp["name"] and "emptyDir" in v for v in pod["volumes"])
            assert {e["name"] for e in c["env"]} >= {"SENTINEL_REDIS_URL", "SENTINEL_APPRISE_URLS"}
            check_references([{"kind": "Job", "spec": job["spec"]["jobTemplate"]["spec"]}], docs)

            before = len(hook.accepted)
            args = [*c["args"][:-1], str(tmp_path / f"{name}.html")]
            done = cli(args, redis_server, SENTINEL_APPRISE_URLS=hook.url, **config(docs))
            assert done.returncode == 0, f"{name}: {done.stderr}"
            assert len(hook.accepted) == before + 1
            (attachment,) = hook.accepted[-1]["attachments"]
            assert base64.b64decode(attachment["base64"]) == (tmp_path / f"{name}.html").read_bytes()

            # The rendered Secret's Apprise URLs (empty in the example, optional in the docs): the
            # daily run writes the report and succeeds, rather than failing every day.
            urls = one(docs, "Secret", "sentinel-secrets")["stringData"]["SENTINEL_APPRISE_URLS"]
            quiet = cli([*c["args"][:-1], str(tmp_path / f"{name}-quiet.html")], redis_server, SENTINEL_APPRISE_URLS=urls, **config(docs))
            assert quiet.returncode == 0, f"{name}: {quiet.stderr}"
            assert "report not sent" in quiet.stderr and (tmp_path / f"{name}-quiet.html").is_file()
            assert len(hook.accepted) == before + 1
    finally:
        for hook in hooks:
            hook.close()
