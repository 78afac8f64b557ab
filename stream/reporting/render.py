"""The daily report as one self-contained file (pure): HTML with inline CSS and SVG charts (no
scripts, no fetched fonts or styles, so it reads offline and as a mail attachment), Markdown, or CSV.

Scopes, incident ids, kinds and acknowledgement reasons come from posts and operators: untrusted.
HTML escapes them with `html.escape`, Markdown with `md_escape` (HTML entities plus backslash
escapes, so a `|` cannot break a table and `[x](y)` is no link), CSV quotes them and defuses
spreadsheet formulas. Where HTML, Markdown and the plain-text notification body show a scope, a
ticker or an incident id, it goes through `shown` (the alerts' `scope_text`: links and domains
defanged, as a notice shows it) before that escaping; CSV and the data- attributes keep it exact.
"""

from __future__ import annotations

import csv
import html
import io
import re
from typing import Callable, Sequence

from stream.alerts.message import fit_body, largest_fitting, scope_text
from stream.reporting.daily import ALL, LABELS, DayRow, IncidentRow, Report, day_label, ticker
from stream.reporting.prices import MEANINGFUL_PAIRS, AssetPrices, LagResult, noise_level, verdict
from stream.reporting.svg import day_chart, lag_chart
from stream.timefmt import iso

FORMATS = ("html", "md", "csv")
SUFFIXES = {".html": "html", ".htm": "html", ".md": "md", ".markdown": "md", ".csv": "csv"}

ABOUT = (
    "Days are UTC days of event time (when posts were written). Shares are each label's fraction of the "
    "day's posts; the sentiment index is the day's mean score (p(positive) - p(negative) per post, -1 to +1). "
    "The all row is the whole market: every post, including those that name no asset or several, so it is "
    "not the sum of the asset rows. Incidents are counted on the day they opened: on an asset's row when "
    "rooted at the asset or when the asset moved with them, on the all row every incident."
)
PRICES_ABOUT = (
    "Each asset's daily sentiment index against its daily return (close over the previous day's close, minus 1) "
    "the same day (lag 0) and 1 to 3 days later. n is the number of day pairs. A Pearson r on fewer than "
    f"about {MEANINGFUL_PAIRS} pairs is not meaningful; the 95% interval and p-value use Fisher's z (shown when n > 3), "
    "and the noise level is the |r| that unrelated series reach one time in twenty at that n. Four lags are tried, "
    "so one of them beating the noise level by chance is not rare. Correlation is not a forecast."
)


def format_for(out: str | None, explicit: str | None) -> str:
    """--format when given, else the output file's suffix, else html."""
    if explicit:
        if explicit not in FORMATS:
            raise ValueError(f"unknown format {explicit!r}; use one of {', '.join(FORMATS)}")
        return explicit
    if out:
        suffix = "." + out.rsplit(".", 1)[-1].lower() if "." in out else ""
        return SUFFIXES.get(suffix, "html")
    return "html"


def render(report: Report, fmt: str) -> str:
    renderers: dict[str, Callable[[Report], str]] = {"html": render_html, "md": render_markdown, "csv": render_csv}
    return renderers[fmt](report)


def title(report: Report) -> str:
    first, last = day_label(report.first_day), day_label(report.last_day)
    return f"Forum Sentinel daily report: {first}" + (f" to {last}" if last != first else "") + " (UTC)"


# --- numbers, as every format shows them -------------------------------------------------------------


def pct(value: float | None) -> str:
    return "" if value is None else f"{100 * value:.1f}%"


def pct_return(value: float | None) -> str:
    # Daily returns are often under 0.1%: two decimals, and a sign either way.
    return "" if value is None else f"{100 * value:+.2f}%"


def counted(count: int, noun: str) -> str:
    """'1 day', '3 days' (the CLI said "1 days")."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def signed(value: float | None, digits: int = 3) -> str:
    return "" if value is None else f"{value:+.{digits}f}"


def shown(name: str) -> str:
    """A scope, ticker or incident id as a reader of the report sees it: whole, made inert as a
    notice makes it (`scope_text`). A Telegram group named `claim-airdrop.example` was escaped in
    the HTML report but not defanged, and some mail clients link a bare domain in an attachment
    opened inline (until session 57)."""
    return scope_text(name, limit=0)


def incident_text(inc: IncidentRow, name: Callable[[str], str] = str) -> str:
    """An incident in one line; `name` shows its id and root scope (`shown`, CSV: as they are)."""
    return f"{name(inc.incident_id)} {name(inc.root_scope)} {inc.severity} {inc.state}"


def period_row(report: Report, scope: str) -> DayRow:
    """The scope's whole period as one row (sums of its days)."""
    rows = report.rows.get(scope, ())
    return DayRow(scope, report.first_day, sum(r.posts for r in rows), sum(r.positive for r in rows), sum(r.negative for r in rows),
                  sum(r.neutral for r in rows), sum(r.score_sum for r in rows), sum(r.score_sq for r in rows))


def lag_cells(res: LagResult) -> list[str]:
    """lag, n, r, 95% interval, p, noise level, verdict."""
    interval = f"{res.low:+.2f} to {res.high:+.2f}" if res.low is not None and res.high is not None else ""
    noise = noise_level(res.n)
    p = "" if res.p is None else "< 0.001" if res.p < 0.001 else f"{res.p:.3f}"
    return [str(res.lag), str(res.n), signed(res.r, 2), interval, p,
            "" if noise is None else f"{noise:.2f}", verdict(res)]


LAG_HEAD = ["lag (days)", "n", "r", "95% interval", "p", "noise level", "reading"]


def meta_lines(report: Report) -> list[str]:
    newest = iso(report.watermark) if report.watermark is not None else "no posts yet"
    span = ("the UTC day asked for (--day)" if report.day_asked else f"the last {report.since} of event time" if report.since
            else "every day in the data")
    if (report.since or report.day_asked) and report.data_from is not None:
        span += f" (no data before {day_label(report.data_from)})"
    lines = [f"{report.days} UTC day(s), {span}; newest post at {newest}; generated at {iso(round(report.generated_at))}.",
             "Whole days: the first day counts all of its posts, and the newest day is partial until it ends."]
    if report.incidents_from is not None:
        # The newest post's time less the retention: the correlator prunes from its own (not later) time.
        lines.append(f"Incidents are kept for SENTINEL_RETENTION: those opened before about {iso(report.incidents_from)} may be "
                     "gone from the history, so these days may have had more than are listed.")
    return lines


# --- HTML --------------------------------------------------------------------------------------------

CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:1.5em;color:#222;max-width:1100px}
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #ddd}h3{font-size:1em;margin-bottom:.3em}
table{border-collapse:collapse;margin:.5em 0 1em;font-size:.9em}th,td{border:1px solid #ccc;padding:3px 7px;text-align:right}
th{background:#f3f3f3}td.text,th.text{text-align:left}td.num{white-space:nowrap}.note{color:#555;font-size:.9em}svg{max-width:100%;height:auto}
"""


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _tr(cells: Sequence[tuple[str, str]], attrs: str = "", head: bool = False) -> str:
    """A table row from (css class, already-escaped content) pairs."""
    tag = "th" if head else "td"
    return f"<tr{attrs}>" + "".join(f'<{tag} class="{cls}">{content}</{tag}>' for cls, content in cells) + "</tr>"


DAY_COLUMNS = ["date", "posts", "positive", "negative", "neutral", "index", "incidents"]


def _day_cells(row: DayRow, incidents: Sequence[IncidentRow], first: tuple[str, str]) -> list[tuple[str, str]]:
    listed = "<br>".join(_e(incident_text(i, shown)) for i in incidents)
    return [first, ("posts", str(row.posts)), *((label, pct(row.share(label))) for label in LABELS),
            ("index", signed(row.index)), ("incidents text", f"{len(incidents)}" + (f": {listed}" if incidents else ""))]


def render_html(report: Report) -> str:
    parts = [f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{_e(title(report))}</title>"
             f"<style>{CSS}</style></head><body>", f"<h1>{_e(title(report))}</h1>"]
    parts += [f'<p class="note">{_e(line)}</p>' for line in meta_lines(report)]
    parts.append(f'<p class="note">{_e(ABOUT)}</p>')
    parts += _html_summary(report)
    left = set(silent(report))  # said once, under the summary
    for scope in report.scopes:
        if scope not in left:
            parts += _html_scope(report, scope)
    parts += _html_incidents(report)
    if report.prices is not None:
        parts += _html_prices(report)
    parts.append("</body></html>\n")
    return "\n".join(parts)


def silent(report: Report) -> list[str]:
    """The assets shown without a post and without an incident in the report's days: one line in
    HTML and Markdown (`quiet_line`), not a row and a section each. On a small forum most of the
    alias table's ~35 assets are quiet, and their zero rows and "no posts" sections outnumbered and
    split up the few assets with news (session 56's first take). CSV keeps their rows of 0."""
    return [s for s in report.quiet if not any(i.involves(s) for i in report.incidents)]


def quiet_line(report: Report, escape: Callable[[str], str] = str) -> str:
    """'No posts in these days: ADA, AVAX, ...' (the assets of `silent`, `escape`d), or '' where
    there are none."""
    names = [shown(ticker(s) or s) for s in silent(report)]
    return f"No posts in these days: {escape(', '.join(names))}." if names else ""


def _html_summary(report: Report) -> list[str]:
    out = ["<h2>Period summary</h2>", "<table>",
           _tr([("scope text", "scope"), *((c, c) for c in DAY_COLUMNS[1:])], head=True)]
    left = set(silent(report))
    for scope in report.scopes:
        if scope in left:
            continue
        total = period_row(report, scope)
        found = [i for i in report.incidents if i.involves(scope)]
        out.append(_tr(_day_cells(total, found, ("scope text", _e(shown(scope)))), f' data-scope="{_e(scope)}" data-date="period"'))
    out.append("</table>")
    if left:
        out.append(f'<p class="note" id="quiet" data-quiet="{_e(" ".join(sorted(left)))}">{quiet_line(report, _e)}</p>')
    return out


def _html_scope(report: Report, scope: str) -> list[str]:
    rows = report.rows[scope]
    by_day = [report.incidents_on(scope, r.day) for r in rows]
    heading = "all (whole market)" if scope == ALL else shown(scope)
    out = [f"<h3>{_e(heading)}</h3>", day_chart(scope, rows, by_day, name=shown), "<table>",
           _tr([("date text", "date"), *((c, c) for c in DAY_COLUMNS[1:])], head=True)]
    for row, found in zip(rows, by_day):
        out.append(_tr(_day_cells(row, found, ("date text", row.date)), f' data-scope="{_e(scope)}" data-date="{row.date}"'))
    return out + ["</table>"]


INCIDENT_COLUMNS = ["opened (UTC)", "incident", "root scope", "severity", "state", "kinds", "scopes", "acknowledged", "verdict"]


def carried_text(report: Report) -> str:
    """The heading of the incidents opened before the report's first day and open when it began."""
    count = len(report.carried)
    return (f"Open when {day_label(report.first_day)} began ({counted(count, 'incident')} opened earlier; "
            "the day rows count an incident on the day it opened only):")


def state_text(inc: IncidentRow) -> str:
    """'open', or 'resolved 2026-10-01T01:30:00Z': when it was declared over (event time). A carried
    incident said "resolved" alone, whether its day began with a minute of it or ended inside it."""
    return f"{inc.state} {iso(inc.ended)}" if inc.ended is not None else inc.state


def _html_incident_table(incidents: Sequence[IncidentRow]) -> list[str]:
    out = ["<table>", _tr([("text", h) for h in INCIDENT_COLUMNS], head=True)]
    for inc in incidents:
        root = _e(shown(inc.root_scope)) + (" (market-wide)" if inc.market else "")
        out.append(_tr([("text", iso(inc.opened)), ("text", _e(shown(inc.incident_id))), ("text", root), ("text", _e(inc.severity)),
                        ("text", _e(state_text(inc))), ("text", _e(", ".join(inc.kinds))), ("text", _e(", ".join(map(shown, inc.scopes)))),
                        ("text", _e(inc.acked or "")), ("text", _e(inc.verdict or ""))], f' data-incident="{_e(inc.incident_id)}"'))
    return out + ["</table>"]


def _html_incidents(report: Report) -> list[str]:
    out = ["<h2>Incidents opened</h2>"]
    if report.incidents:
        out += [f'<p class="note" id="judged">{_e(report.judged())}</p>', *_html_incident_table(report.incidents)]
    else:
        out.append('<p class="note">None in these days.</p>')
    if report.carried:
        out += [f'<p class="note" id="carried">{_e(carried_text(report))}</p>', *_html_incident_table(report.carried)]
    return out


def _html_prices(report: Report) -> list[str]:
    out = ["<h2>Sentiment and prices</h2>", f'<p class="note">{_e(PRICES_ABOUT)}</p>']
    prices: dict[str, AssetPrices] = dict(report.prices or {})
    # An asset without posts has no index to set against prices: not named missing them.
    missing = [t for s in report.scopes if (t := ticker(s)) and t not in prices and s not in report.quiet]
    if missing:
        out.append(f'<p class="note">No prices in the file for: {_e(", ".join(map(shown, missing)))}.</p>')
    for tick, found in prices.items():
        out += [f"<h3>{_e(shown(tick))}</h3>", lag_chart(shown(tick), found.lags), "<table>", _tr([("text", h) for h in LAG_HEAD], head=True)]
        out += [_tr([*(("num", _e(c)) for c in lag_cells(res)[:-1]), ("text", _e(lag_cells(res)[-1]))],
                    f' data-asset="{_e(tick)}" data-lag="{res.lag}"') for res in found.lags]
        out += ["</table>", "<table>", _tr([("text", h) for h in ("date", "close", "return", "index")], head=True)]
        index = report.index_by_day(f"asset:{tick}")
        for day in report.day_starts:
            close = found.closes.get(day)
            out.append(_tr([("text", day_label(day)), ("num", "" if close is None else f"{close:g}"),
                            ("num", pct_return(found.returns.get(day))), ("num", signed(index.get(day)))]))
        out.append("</table>")
    return out


# --- Markdown ----------------------------------------------------------------------------------------

_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-!|~])")


def md_escape(text: object) -> str:
    """Text that Markdown shows as written: one line, HTML special characters as entities (raw HTML
    is allowed in Markdown), punctuation backslash-escaped (no emphasis, links, tables broken)."""
    one_line = re.sub(r"[\r\n\t\v\f\x85\u2028\u2029]+", " ", str(text))
    return _MD_SPECIAL.sub(r"\\\1", html.escape(one_line, quote=False))


def _md_row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _md_table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    return [_md_row(head), _md_row(["---"] * len(head)), *(_md_row(r) for r in rows), ""]


def _md_day_cells(row: DayRow, incidents: Sequence[IncidentRow], first: str) -> list[str]:
    listed = "; ".join(md_escape(incident_text(i, shown)) for i in incidents)
    return [first, str(row.posts), *(pct(row.share(label)) for label in LABELS), signed(row.index),
            f"{len(incidents)}" + (f": {listed}" if incidents else "")]


def _md_incident_table(incidents: Sequence[IncidentRow]) -> list[str]:
    return _md_table(INCIDENT_COLUMNS, [
        [iso(i.opened), md_escape(shown(i.incident_id)), md_escape(shown(i.root_scope)) + (" (market-wide)" if i.market else ""), md_escape(i.severity),
         md_escape(i.state) + (f" {iso(i.ended)}" if i.ended is not None else ""), md_escape(", ".join(i.kinds)),
         md_escape(", ".join(map(shown, i.scopes))), md_escape(i.acked or ""),
         md_escape(i.verdict or "")]
        for i in incidents])


def render_markdown(report: Report) -> str:
    # Fixed wording and numbers are written as they are; only data goes through md_escape.
    out = [f"# {title(report)}", "", *(line + "  " for line in meta_lines(report)), "", ABOUT, ""]
    out += ["## Period summary", ""]
    left = set(silent(report))  # said once, under the summary
    listed = [s for s in report.scopes if s not in left]
    out += _md_table(["scope", *DAY_COLUMNS[1:]], [
        _md_day_cells(period_row(report, s), [i for i in report.incidents if i.involves(s)], md_escape(shown(s))) for s in listed])
    if left:
        out += [quiet_line(report, md_escape), ""]
    for scope in listed:
        rows = report.rows[scope]
        out += [f"## {'all (whole market)' if scope == ALL else md_escape(shown(scope))}", ""]
        out += _md_table(DAY_COLUMNS, [_md_day_cells(r, report.incidents_on(scope, r.day), r.date) for r in rows])
    out += ["## Incidents opened", ""]
    if report.incidents:
        out += [report.judged(), ""]  # the report's own wording, written as is
        out += _md_incident_table(report.incidents)
    else:
        out += ["None in these days.", ""]
    if report.carried:
        out += [carried_text(report), "", *_md_incident_table(report.carried)]  # fixed wording and a date
    if report.prices is not None:
        out += ["## Sentiment and prices", "", PRICES_ABOUT, ""]
        missing = [t for s in report.scopes if (t := ticker(s)) and t not in (report.prices or {}) and s not in report.quiet]
        if missing:
            out += [f"No prices in the file for: {md_escape(', '.join(map(shown, missing)))}.", ""]
        for tick, found in (report.prices or {}).items():
            out += [f"### {md_escape(shown(tick))}", ""]
            # The reading says "|r|": escaped, or its bars would split the table's cells.
            out += _md_table(LAG_HEAD, [[*lag_cells(res)[:-1], md_escape(lag_cells(res)[-1])] for res in found.lags])
            index = report.index_by_day(f"asset:{tick}")
            out += _md_table(["date", "close", "return", "index"], [
                [day_label(d), "" if found.closes.get(d) is None else f"{found.closes[d]:g}", pct_return(found.returns.get(d)), signed(index.get(d))]
                for d in report.day_starts])
    return "\n".join(out)


# --- CSV ---------------------------------------------------------------------------------------------

CSV_COLUMNS = ["date", "scope", "posts", "positive", "negative", "neutral", "positive_share", "negative_share", "neutral_share",
               "sentiment_index", "incidents", "incident_list", "close", "return"]


def csv_text(value: str) -> str:
    """A text cell a spreadsheet will not run: a leading = + - @ (or tab, CR) starts a formula."""
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


def _num(value: float | None, digits: int = 6) -> str:
    return "" if value is None else f"{round(value, digits):.{digits}f}".rstrip("0").rstrip(".")


def render_csv(report: Report) -> str:
    """One row per UTC day and scope (the day-level table; the lead-lag results are in html and md)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for scope in report.scopes:
        tick = ticker(scope)
        found = (report.prices or {}).get(tick) if tick else None
        for row in report.rows[scope]:
            incidents = report.incidents_on(scope, row.day)
            writer.writerow([row.date, csv_text(scope), row.posts, row.positive, row.negative, row.neutral,
                             *(_num(row.share(label)) for label in LABELS), _num(row.index), len(incidents),
                             csv_text("; ".join(incident_text(i) for i in incidents)),
                             _num(found.closes.get(row.day), 10) if found else "", _num(found.returns.get(row.day), 8) if found else ""])
    return buf.getvalue()


# --- the notification's plain-text body ---------------------------------------------------------------


INDEX_TEXT = "Sentiment index: the mean of p(positive) - p(negative) per post, from -1 (all negative) to +1 (all positive)."


ATTACHED_TEXT = "The full report (tables and charts) is attached."


def _scope_line(report: Report, scope: str) -> str:
    total = period_row(report, scope)
    count = sum(1 for i in report.incidents if i.involves(scope))
    return (f"{scope_text(scope, limit=80)}: {total.posts} posts, sentiment index {signed(total.index) or 'n/a'}, "
            f"{count} incident(s)")


def _more(count: int, noun: str) -> str:
    return f"... and {count} more {noun}{'' if count == 1 else 's'} (in the attached report)"


def summary_text(report: Report, maxlen: int = 0, size: Callable[[str], int] = len) -> str:
    """A few lines for the notification that carries the report as an attachment.

    `maxlen`: the most a service takes, measured by `size` (its length as sent, `notify.body_for`):
    on a storm day (hundreds of assets, dozens of incidents open at midnight) the body ran past a
    service's limit, which the service cut blindly or refused (until session 56). Asset lines are
    left out after the names of the assets without posts, then the incidents open when the first
    day began (from the last), each list ended by
    what it no longer shows ("... and 412 more assets (in the attached report)"): the assets with
    fewest incidents, then fewest posts, go first; the title, the
    period, the index's meaning, the whole market's line and the attachment line stay. Where those
    alone are too long, `message.fit_body` cuts the longest lines. 0 or less: no cap."""
    assets = [s for s in report.scopes if s != ALL and s not in report.quiet]
    quiet = [ticker(s) or s for s in report.quiet]
    # Which lines stay when not all fit: the assets with the most incidents, then the most posts (kept
    # in the report's order). Cut from the alphabetical last, ZEC's incident went while ADA's quiet
    # day stayed (session 56's first take).
    weight = {s: (sum(1 for i in report.incidents if i.involves(s)), report.total_posts(s)) for s in assets}
    ranked = sorted(range(len(assets)), key=lambda n: (-weight[assets[n]][0], -weight[assets[n]][1], n))
    rank = {assets[n]: place for place, n in enumerate(ranked)}

    def text(shown: int, carried: int, named: int) -> str:
        # The index named and its range said: a mail reading "index +0.101" left its reader to guess
        # what it indexes and whether +0.1 is much.
        lines = [title(report), *meta_lines(report), INDEX_TEXT, "", _scope_line(report, ALL)]
        lines += [_scope_line(report, s) for s in assets if rank[s] < shown]
        if shown < len(assets):
            lines.append(_more(len(assets) - shown, "asset"))
        if quiet:  # the configured assets nobody wrote of: said, not missing (one line, however many)
            listed = ", ".join(scope_text(t, limit=80) for t in quiet[:named])  # defanged: a ticker is the alias file's
            if named < len(quiet):
                listed += (" " if listed else "") + _more(len(quiet) - named, "asset")
            lines.append("No posts in these days: " + listed)
        if report.carried:
            listed = ", ".join(f"{scope_text(i.root_scope, limit=80)} ({state_text(i)})" for i in report.carried[:carried])
            rest = len(report.carried) - carried
            if rest:
                listed += (" " if listed else "") + _more(rest, "incident")
            lines.append(f"{len(report.carried)} incident(s) opened earlier were open when {day_label(report.first_day)} began: {listed}")
        return "\n".join([*lines, "", ATTACHED_TEXT])

    everyone, carried_all = len(assets), len(report.carried)
    whole = text(everyone, carried_all, len(quiet))
    if maxlen <= 0 or size(whole) <= maxlen:
        return whole
    # The quiet assets' names go first (counted): no news, they took the room of assets with
    # incidents (a long SENTINEL_ALIASES_FILE's line was left whole, for fit_body to cut at the end).
    named = _most_kept(len(quiet), lambda k: size(text(everyone, carried_all, k)) <= maxlen)
    if size(text(everyone, carried_all, named)) <= maxlen:
        return text(everyone, carried_all, named)
    shown = _most_kept(everyone, lambda k: size(text(k, carried_all, 0)) <= maxlen)
    carried = carried_all if shown else _most_kept(carried_all, lambda k: size(text(0, k, 0)) <= maxlen)
    return fit_body(text(shown, carried, 0), maxlen, size)


def _most_kept(count: int, fits: Callable[[int], bool]) -> int:
    """The most items of a list (0 to `count`) with which the text fits (`message.largest_fitting`)."""
    return largest_fitting(0, count, fits) if fits(0) else 0
