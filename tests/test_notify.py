"""Notifications: message text and escaping, the chart, and Apprise delivery against real local
servers (aiosmtpd SMTP, stdlib HTTP). Slack is the one service reached without a server: its
plugin's HTTP call is captured, since the real endpoint is on the internet."""

from __future__ import annotations

import asyncio
import email
import email.policy
import importlib
import json
import logging
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable, Iterator

import pytest
import requests

from stream.logs import JsonFormatter, KeyValueFormatter
from stream.settings import Settings
from stream.alerts import message
from stream.alerts.chart import PNG_SIGNATURE, chart_points, render_chart
from stream.alerts.incidents import AlertRecord
from stream.windows import Sample, SliceCol
from stream.tools.services import free_port  # reserved: no other server takes it, so a dead one stays dead
from stream.alerts.notify import Notifier, build_apprise, retry_delays, route, servers_description, split_entries

ROOT = Path(__file__).resolve().parents[1]
END = 1_714_561_200  # 2024-05-01T11:00:00Z
SLACK_URL = "slack://T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7FQ"
SLACK_SECRET = "TIiajkdnlazkcOXrIdevi7FQ"


def make_record(**over) -> AlertRecord:
    fields = dict(
        alert_id="a1b2c3d4e5f6a7b8c9d0",
        scope="asset:ETH",
        kind="sentiment_drop",
        state="firing",
        severity="critical",
        window_start="2024-05-01T10:00:00Z",
        window_end="2024-05-01T11:00:00Z",
        value=-0.42,
        baseline=0.15,
        zscore=-6.8,
        posts=57,
        sample_post_ids=["p1", "p2"],
        notified=False,
        fired_at="2024-05-01T11:02:00Z",
        metric="mean_score",
        baseline_posts=1200,
        window="1h",
        samples=[
            Sample("p1", "ETH is dumping hard, gas fees insane", "negative", -0.91),
            Sample("p2", "sold everything, this is the top", "negative", -0.74),
        ],
    )
    fields.update(over)
    return AlertRecord(**fields)


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met before the deadline")
        time.sleep(0.01)


def run(coro):
    return asyncio.run(coro)


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch):
    # requests honours *_PROXY variables; local test servers must be reached directly.
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


# --- a local HTTP endpoint ------------------------------------------------------------------------


class Endpoint:
    """Records every POST; answers per path from a script of status codes (then 200)."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, bytes]] = []
        self.script: dict[str, list[int]] = {}
        self.barrier: threading.Barrier | None = None  # for paths starting with /together
        self.lock = threading.Lock()
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                data = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                path = self.path.split("?", 1)[0]
                with endpoint.lock:
                    endpoint.requests.append((path, data))
                    queue = endpoint.script.get(path)
                    status = queue.pop(0) if queue else 200
                if path.startswith("/together") and endpoint.barrier is not None:
                    try:
                        endpoint.barrier.wait()
                    except threading.BrokenBarrierError:
                        status = 500
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"json://127.0.0.1:{self.port}{path}"

    def paths(self) -> list[str]:
        with self.lock:
            return [p for p, _ in self.requests]

    def payloads(self, path: str) -> list[dict]:
        with self.lock:
            return [json.loads(d) for p, d in self.requests if p == path]


@pytest.fixture()
def http() -> Iterator[Endpoint]:
    endpoint = Endpoint()
    endpoint.thread.start()
    yield endpoint
    endpoint.server.shutdown()
    endpoint.server.server_close()


def notifier(urls: str, **kw) -> Notifier:
    kw.setdefault("backoff", 0.01)
    kw.setdefault("backoff_max", 0.05)
    return Notifier(build_apprise(urls, None), **kw)


# --- message.py -----------------------------------------------------------------------------------


def test_title_names_state_kind_and_scope():
    assert message.title(make_record()) == "[CRITICAL] sentiment_drop on asset:ETH [a1b2c3d4]"
    assert message.title(make_record(severity="warning")) == "[WARNING] sentiment_drop on asset:ETH [a1b2c3d4]"
    assert message.title(make_record(state="resolved")) == "[RESOLVED] sentiment_drop on asset:ETH [a1b2c3d4]"
    assert message.title(make_record(repeat=True)) == "[CRITICAL] sentiment_drop on asset:ETH (still firing) [a1b2c3d4]"
    # Another alert on the same scope and kind (another day): another id, so not read as this one's repeat.
    assert message.title(make_record(alert_id="0f9e8d7c6b5a49382716")) == "[CRITICAL] sentiment_drop on asset:ETH [0f9e8d7c]"


def test_body_has_numbers_window_posts_and_id():
    text = message.body(make_record())
    # The console's words for what moved (message.measure): no metric names, no rates as counts.
    assert "mean score -0.42 against +0.15; z -6.8 over 57 posts (1200 in the baseline)" in text
    assert "window 1h: 2024-05-01T10:00:00Z .. 2024-05-01T11:00:00Z" in text
    assert "alert_id: a1b2c3d4e5f6a7b8c9d0" in text
    assert "- [negative -0.91] ETH is dumping hard, gas fees insane (id p1)" in text
    resolved = message.body(make_record(state="resolved"))
    assert "is resolved" in resolved and "firing" not in resolved
    # A resolution with no posts behind it (the sequential chart restarted) says no level at all.
    restarted = message.body(make_record(state="resolved", posts=0))
    assert "against" not in restarted and "z " not in restarted


def test_body_volume_metric_shows_counts():
    text = message.body(make_record(kind="volume_spike", metric="posts", value=480.0, baseline=40.0, zscore=9.1))
    assert "480 posts per 1h against 40; z +9.1 over 57 posts" in text  # a rate, told as one


def test_an_ungrouped_volume_spikes_samples_say_they_are_of_either_sign():
    """A volume spike's samples are its most strongly scored posts, positive or negative, under the
    same plain "Sample posts:" as a drop's: a positive post first read as the spike's direction. A
    line above the header says so; the header and each post's line are as before."""
    samples = [Sample("p1", "ETH to the moon", "positive", 0.93), Sample("p2", "ETH is dumping hard", "negative", -0.91)]
    text = message.body(make_record(kind="volume_spike", metric="posts", value=480.0, baseline=40.0, zscore=9.1, samples=samples))
    head, posts = text.split("\nSample posts:\n")
    assert head.splitlines()[-1] == "A volume spike's samples are its most strongly scored posts of either sign: they show no direction."
    assert posts.splitlines() == ["- [positive +0.93] ETH to the moon (id p1)", "- [negative -0.91] ETH is dumping hard (id p2)"]
    drop = message.body(make_record())  # a drop's are its most negative: nothing to add
    assert "\n\nSample posts:\n- [negative -0.91]" in drop and "samples are" not in drop


def test_body_shows_at_most_n_samples():
    samples = [Sample(f"p{i}", f"post number {i}", "neutral", 0.0) for i in range(6)]
    record = make_record(samples=samples)
    assert message.body(record, samples=3).count("\n- [") == 3
    assert "post number 3" not in message.body(record, samples=3)
    assert "Sample posts" not in message.body(record, samples=0)


def test_escape_neutralises_slack_mentions_and_links():
    out = message.escape_post_text("hey <!channel> and <!here|here> <@U123ABC> <#C99|general> <http://evil.example/x|click me>")
    assert "<" not in out and ">" not in out and "@" not in out
    assert "!channel" in out and "#general" in out
    assert "click me (http://evil.example/x)" in out


def test_escape_neutralises_plain_mentions():
    out = message.escape_post_text("@here @channel @everyone ping @alice")
    for mention in ("@here", "@channel", "@everyone", "@alice"):
        assert mention not in out
    assert "\uff20here" in out  # still readable


def test_escape_markup_and_control_characters():
    out = message.escape_post_text("<script>alert(1)</script> a & b\x00\x07\x1b[31m red\u202e\u200b")
    assert out == "\u2039script\u203aalert(1)\u2039/script\u203a a & b[31m red"


def test_escape_drops_bidi_marks_tag_characters_and_every_other_format_character():
    """Only the bidi embeddings, overrides and isolates went: a right-to-left mark can reorder the
    numbers and signs around it, tag characters carry an invisible sentence, and both
    reached the sample posts of a notification and the console as the poster wrote them. The emoji joiners stay."""
    smuggled = "".join(chr(0xE0000 + ord(c)) for c in "ignore the alert")
    out = message.escape_post_text("BTC \u200f-5%\u200e \u061cnow" + smuggled + " \ufff9hidden\ufffb \U0001F468\u200d\U0001F4BB")
    assert out == "BTC -5% now hidden \U0001F468\u200d\U0001F4BB"


def test_escape_knows_every_format_character_of_this_pythons_unicode():
    """The format characters are listed by range: a newer Unicode's new ones must be added there."""
    import unicodedata

    joiners = {"\u200c", "\u200d"}
    missing = [f"U+{c:04X}" for c in range(0x110000) if unicodedata.category(chr(c)) == "Cf" and chr(c) not in joiners
               and message.escape_post_text(f"a{chr(c)}b") != "ab"]
    assert missing == []


def test_escape_collapses_newlines():
    assert message.escape_post_text("line one\r\n\n  line two\tthree\u2028four") == "line one line two three four"


def test_escape_truncates_long_text():
    out = message.escape_post_text("x" * 10_000, limit=200)
    assert len(out) == 200 and out.endswith("…")
    body = message.body(make_record(samples=[Sample("p", "y" * 10_000, "negative", -1.0)]))
    assert "y" * 199 + "…" in body and "y" * 200 not in body


# --- chart.py -------------------------------------------------------------------------------------


def test_chart_png_for_normal_empty_and_single_point():
    points = [(END - 86_400 + i * 300, 10 + i % 7, (i % 11) / 10, 0.1) for i in range(288)]
    for pts in (points, [], [(END - 120, 3, 0.2, 0.1)]):
        png = render_chart(pts, END - 3600, END, "asset:ETH", "sentiment_drop")
        assert png.startswith(PNG_SIGNATURE) and len(png) > 1000
    assert render_chart([], "2024-05-01T10:00:00Z", "2024-05-01T11:00:00Z", "all", "volume_spike").startswith(PNG_SIGNATURE)


def test_chart_points_leave_a_gap_where_a_slice_has_no_posts():
    # A quiet scope has many empty 15-minute slices; drawn as share 0 they were a dip to 0% in each.
    n, neg, pos = int(SliceCol.N), int(SliceCol.NEGATIVE), int(SliceCol.POSITIVE)
    rows = [[0.0] * len(SliceCol) for _ in range(3)]
    rows[0][n], rows[0][neg] = 4, 2.0
    rows[2][n], rows[2][pos] = 1, 1.0
    assert chart_points(rows, END, 900) == [(END, 4, 0.5, 0.0), (END + 900, 0, None, None), (END + 1800, 1, 0.0, 1.0)]
    assert render_chart(chart_points(rows, END - 2700, 900), END - 900, END, "asset:ETH", "sentiment_drop").startswith(PNG_SIGNATURE)


def test_importing_chart_and_notify_does_not_import_matplotlib():
    code = "import sys, stream.alerts.chart, stream.alerts.notify; assert 'matplotlib' not in sys.modules, 'eager import'"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=60)


# --- configuration --------------------------------------------------------------------------------


def test_split_entries_rule():
    text = "json://h/a,critical,warning=json://h/b\n# a comment\n warning=json://h/c  mailto://h?to=a@x.org,b@x.org"
    assert split_entries(text) == [
        "json://h/a",
        "critical,warning=json://h/b",
        "warning=json://h/c",
        "mailto://h?to=a@x.org,b@x.org",
    ]


def test_build_apprise_tags_and_errors(tmp_path):
    app = build_apprise("json://127.0.0.1:9/a,critical,warning=json://127.0.0.1:9/b", None)
    tags = [sorted(str(t) for t in s.tags) for s in app]
    assert tags == [[], ["critical", "warning"]]
    described = servers_description(list(build_apprise("critical=json://bob:hunter2@127.0.0.1:9/x", None)))
    assert len(described) == 1 and "tags=critical" in described[0] and "hunter2" not in described[0]
    with pytest.raises(ValueError, match=r"SENTINEL_APPRISE_URLS entry 2: scheme nosuch:// is not a known service") as err:
        build_apprise("json://127.0.0.1:9/a nosuch://user:hunter2@x", None)
    assert "hunter2" not in str(err.value)
    with pytest.raises(ValueError, match=r"SENTINEL_APPRISE_URLS entry 1: slack:// is a known service, but Apprise cannot load") as err:
        build_apprise("critical=slack://hunter2", None)
    assert "hunter2" not in str(err.value)
    config = tmp_path / "apprise.yml"
    config.write_text("urls:\n  - json://127.0.0.1:9/c:\n      tag: critical\n  - json://127.0.0.1:9/d\n")
    loaded = build_apprise(None, config)
    assert [sorted(str(t) for t in s.tags) for s in loaded] == [["critical"], []]
    with pytest.raises(ValueError, match="^SENTINEL_APPRISE_CONFIG: not a file$"):
        build_apprise(None, tmp_path / "missing.yml")
    config.write_text("urls:\n  - slack://hunter2\n")
    with pytest.raises(ValueError, match="^SENTINEL_APPRISE_CONFIG: the file defines no service Apprise can load"):
        build_apprise(None, config)


def test_every_apprise_entry_and_file_that_loads_no_service_is_named_without_its_secrets(tmp_path):
    # Each named by position and scheme as when it is the only one; never a password or token.
    with pytest.raises(ValueError) as err:
        build_apprise("nosuch://user:hunter2@x, json://127.0.0.1:9/a\nslack://hunter3\nwarning=mailto://bob:hunter4@", tmp_path / "no.yml")
    assert str(err.value).splitlines() == [
        "SENTINEL_APPRISE_URLS entry 1: scheme nosuch:// is not a known service",
        "SENTINEL_APPRISE_URLS entry 3: slack:// is a known service, but Apprise cannot load this URL: a part is missing or malformed "
        "(Apprise's wiki gives each service's URL form)",
        "SENTINEL_APPRISE_URLS entry 4: mailto:// is a known service, but Apprise cannot load this URL: a part is missing or malformed "
        "(Apprise's wiki gives each service's URL form)",
        "SENTINEL_APPRISE_CONFIG: not a file",
    ], str(err.value)
    assert "hunter" not in str(err.value) and "bob" not in str(err.value)


def test_from_settings():
    settings = Settings(apprise_urls="warning=json://127.0.0.1:9/w", notify_attempts=2, notify_backoff=0.5,
                        notify_backoff_max=4.0, alert_samples=1, notify_chart=False)
    n = Notifier.from_settings(settings)
    assert (n.attempts, n.backoff, n.backoff_max, n.samples, n.chart) == (2, 0.5, 4.0, 1, False)
    assert [sorted(str(t) for t in s.tags) for s in n.targets] == [["warning"]]
    assert Notifier.from_settings(Settings(apprise_urls=None, apprise_config=None)).targets == []
    assert n.body_max == 0 and Notifier.from_settings(Settings(apprise_urls=None, notify_body_max=4000)).body_max == 4000


@pytest.mark.parametrize("value", ["-1", "4", "400"])
def test_a_body_max_that_would_cut_a_notices_head_is_refused_naming_its_variable(monkeypatch, value):
    """SENTINEL_NOTIFY_BODY_MAX=4 (meant as kB) was taken: every alert went out as a lone "…", no
    incident_id, no console link, and the worker started as if nothing were wrong. 0 or 1,000 up."""
    from pydantic import ValidationError

    monkeypatch.setenv("SENTINEL_NOTIFY_BODY_MAX", value)
    with pytest.raises(ValidationError, match="notify_body_max"):
        Settings()
    for taken in ("0", "1000", "4000"):
        monkeypatch.setenv("SENTINEL_NOTIFY_BODY_MAX", taken)
        assert Settings().notify_body_max == int(taken)


def test_retry_delays_double_and_cap():
    assert retry_delays(5, 1.0, 3.0) == [1.0, 2.0, 3.0, 3.0]
    assert retry_delays(1, 1.0, 3.0) == []


# --- delivery: email ------------------------------------------------------------------------------


@contextmanager
def smtp_server(hostname: str = "127.0.0.1", **options) -> Iterator[tuple[int, list]]:
    """A real aiosmtpd server on `hostname`; `options` to its Controller (an authenticator)."""
    from aiosmtpd.controller import Controller

    received: list = []

    class Collect:
        async def handle_DATA(self, server, session, envelope):  # noqa: N802
            received.append(envelope)
            return "250 Message accepted for delivery"

    port = free_port()
    controller = Controller(Collect(), hostname=hostname, port=port, **options)
    controller.start()
    try:
        yield port, received
    finally:
        controller.stop()


def test_email_through_local_smtp_with_chart():
    png = render_chart([(END - 600, 5, 0.4, 0.2), (END - 300, 9, 0.6, 0.1)], END - 3600, END, "asset:ETH", "sentiment_drop")
    record = make_record()
    with smtp_server() as (port, received):
        n = notifier(f"mailto://127.0.0.1:{port}?from=sentinel@example.com&to=ops@example.com&mode=insecure")
        result = run(n.deliver(record, png))
        wait_until(lambda: len(received) == 1)
    assert (result.notified, result.failures, result.attempts) == (True, 0, 1)
    envelope = received[0]
    assert envelope.mail_from == "sentinel@example.com" and envelope.rcpt_tos == ["ops@example.com"]
    msg = email.message_from_bytes(envelope.original_content, policy=email.policy.default)
    assert msg["Subject"] == "[CRITICAL] sentiment_drop on asset:ETH [a1b2c3d4]"
    text = msg.get_body(preferencelist=("plain", "html")).get_content()
    assert "mean score -0.42 against +0.15; z -6.8 over 57 posts" in text
    assert "ETH is dumping hard, gas fees insane" in text
    images = [part for part in msg.iter_attachments() if part.get_content_type() == "image/png"]
    assert len(images) == 1
    assert images[0].get_content() == png and images[0].get_content().startswith(PNG_SIGNATURE)


def test_html_text_escapes_breaks_lines_and_lets_them_wrap():
    """Session 54: Apprise's text-to-HTML conversion wrote every space as `&nbsp;`, so no line of
    an HTML mail wrapped (a 200-character sample post ran off a phone's screen)."""
    html_ = message.html_text("Incident on asset:ETH is firing (critical).\n\n- [negative -0.99] a <b>x</b> & \"y\" free  ETH")
    assert "&nbsp;" not in html_ and "\u00a0" not in html_
    assert html_.count("<br/>") == 2 and "\n" not in html_
    assert "a &lt;b&gt;x&lt;/b&gt; &amp; &quot;y&quot; free  ETH" in html_
    assert html_.startswith('<div style="overflow-wrap: anywhere') and html_.endswith("</div>")


def test_an_html_mail_wraps_its_lines_and_its_plain_part_is_the_text():
    """An operator's `format=html` (and Apprise 1.9's default): the HTML part is ours (no
    `&nbsp;`: its lines wrap), the plain part beside it still the text, the chart still attached."""
    png = render_chart([(END - 600, 5, 0.4, 0.2), (END - 300, 9, 0.6, 0.1)], END - 3600, END, "asset:ETH", "sentiment_drop")
    hostile = Sample("p9", "<b>dump</b> & run " + "x" * 150, "negative", -0.99)
    record = make_record(samples=[hostile])
    with smtp_server() as (port, received):
        n = notifier(f"mailto://127.0.0.1:{port}?from=sentinel@example.com&to=ops@example.com&mode=insecure&format=html "
                     f"mailto://127.0.0.1:{port}?from=sentinel@example.com&to=desk@example.com&mode=insecure")
        result = run(n.deliver(record, png))
        wait_until(lambda: len(received) == 2)
    assert result.notified
    mails = {e.rcpt_tos[0]: email.message_from_bytes(e.original_content, policy=email.policy.default) for e in received}
    html_mail, text_mail = mails["ops@example.com"], mails["desk@example.com"]
    html_ = html_mail.get_body(preferencelist=("html",)).get_content()
    plain = html_mail.get_body(preferencelist=("plain",)).get_content()
    assert "&nbsp;" not in html_ and "- [negative -0.99] ‹b›dump‹/b› &amp; run xxx" in html_ and "<b>" not in html_
    assert "mean score -0.42 against +0.15; z -6.8 over 57 posts" in html_
    # The same lines as the mail sent as text (Apprise derives the plain part from the HTML).
    assert plain.strip().splitlines() == text_mail.get_body(preferencelist=("plain",)).get_content().strip().splitlines()
    assert [p.get_content_type() for p in html_mail.iter_attachments()] == ["image/png"]


def refusal(records: list[logging.LogRecord]) -> tuple[list[str], str]:
    """Our warnings' and error's `error` fields, and all the log's text (for the password)."""
    ours = [r for r in records if r.name == "stream.alerts.notify" and r.levelno >= logging.WARNING]
    return [getattr(r, "error", None) for r in ours], _log_text(records)


def test_a_password_against_an_smtp_server_without_auth_is_said_by_service_never_the_password(caplog):
    # Apprise said "Connection error while submitting email to 127.0.0.1" and our lines no reason:
    # the server answered, it offers no AUTH (smtplib's SMTPNotSupportedError, at Apprise's DEBUG).
    with smtp_server() as (port, received):
        n = notifier(f"mailto://ops:HUNTER2SECRET@127.0.0.1:{port}?from=sentinel@example.com&to=ops@example.com&mode=insecure", attempts=2)
        result = run(n.deliver(make_record(), None))
    assert (result.notified, result.failures, received) == (False, 1, [])
    errors, text = refusal(caplog.records)
    reason = ("the SMTP server offers no login (AUTH) but the URL gives a user and password: remove them, or use the server's port "
              "that takes a login (587 with mode=starttls, 465 with mode=ssl)")
    assert errors == [reason, reason, reason], errors  # each attempt's warning and the error after them
    (error,) = [r for r in caplog.records if r.name == "stream.alerts.notify" and r.levelno == logging.ERROR]
    assert error.service == "E-Mail" and error.url.startswith(f"mailto://ops:***@127.0.0.1:{port}/")
    assert "HUNTER2SECRET" not in text


def test_a_password_the_smtp_server_refuses_is_said_so(caplog):
    from aiosmtpd.smtp import AuthResult

    # With no message aiosmtpd 1.4 leaves the client waiting; a real server answers 535 so.
    refuse = AuthResult(success=False, handled=False, message="535 5.7.8 Authentication credentials invalid")
    with smtp_server(authenticator=lambda *args: refuse, auth_require_tls=False) as (port, received):
        n = notifier(f"mailto://ops:HUNTER2SECRET@127.0.0.1:{port}?from=sentinel@example.com&to=ops@example.com&mode=insecure", attempts=1)
        assert not run(n.deliver(make_record(), None)).notified
    errors, text = refusal(caplog.records)
    assert errors == ["the SMTP server refused the URL's user and password"] * 2, errors
    assert received == [] and "HUNTER2SECRET" not in text


def test_the_daily_reports_delivery_says_an_smtp_refusal_too(tmp_path, caplog):
    from stream.reporting.deliver import deliver_report

    report = tmp_path / "report.html"
    report.write_text("<p>report</p>")
    with smtp_server() as (port, received):
        targets = list(build_apprise(f"mailto://ops:HUNTER2SECRET@127.0.0.1:{port}?from=sentinel@example.com&to=ops@example.com&mode=insecure", None))
        result = deliver_report(targets, report, "report", "the day", attempts=1, sleep=lambda _: None)
    assert not result.ok and received == []
    (warning,) = [r for r in caplog.records if r.name == "stream.reporting.deliver"]
    assert warning.error.startswith("the SMTP server offers no login (AUTH) but the URL gives a user and password"), vars(warning)
    assert "HUNTER2SECRET" not in _log_text(caplog.records)


def test_the_daily_report_mailed_as_html_wraps_its_lines_too(tmp_path):
    from stream.reporting.deliver import deliver_report

    report = tmp_path / "report.html"
    report.write_text("<p>report</p>")
    with smtp_server() as (port, received):
        targets = list(build_apprise(f"mailto://127.0.0.1:{port}?from=sentinel@example.com&to=ops@example.com&mode=insecure&format=html", None))
        result = deliver_report(targets, report, "report", "the day: 3 incidents & 1 false alarm", attempts=1, sleep=lambda _: None)
        wait_until(lambda: len(received) == 1)
    assert result.ok
    html_ = email.message_from_bytes(received[0].original_content, policy=email.policy.default).get_body(preferencelist=("html",)).get_content()
    assert "the day: 3 incidents &amp; 1 false alarm" in html_ and "&nbsp;" not in html_


def test_a_mail_api_service_sends_our_html_too(monkeypatch):
    """Review of session 54: SES, SendGrid, Mailgun and the other mail APIs send HTML only, and got
    Apprise's conversion (every space `&nbsp;`, no line wrapping) where `mailto://` got ours; under
    Apprise 1.9 they got our text as HTML unconverted, its lines run together. A chat that takes
    HTML (Telegram) or none keeps its text."""
    from apprise import NotifyFormat
    from stream.alerts.notify import body_for

    sendgrid = importlib.import_module("apprise.plugins.sendgrid")
    posted: list[dict] = []

    def capture(url, data=None, **kwargs):
        posted.append(json.loads(data))
        response = requests.Response()
        response.status_code, response._content = 202, b""
        return response

    monkeypatch.setattr(sendgrid.requests, "post", capture)
    hostile = Sample("p9", "<b>dump</b> & run " + "x" * 150, "negative", -0.99)
    result = run(notifier("sendgrid://abcd1234:sentinel@example.com/ops@example.com").deliver(make_record(samples=[hostile]), None))
    assert result.notified
    ((content,),) = [[c for c in p["content"] if c["type"] == "text/html"] for p in posted]
    html_ = content["value"]
    assert "&nbsp;" not in html_ and "\u00a0" not in html_ and "<b>" not in html_
    assert "<br/>mean score -0.42 against +0.15; z -6.8 over 57 posts" in html_ and "- [negative -0.99] ‹b›dump‹/b› &amp; run xxx" in html_
    text = "a  b\nc"
    for url in ("ses://sentinel@example.com/AKIAIOSFODNN7EXAMPLE/wJalrXUtnFEMIK7MDENGbPxRfiCYEXAMPLEKEY/us-west-2/ops@example.com",
                "mailgun://sentinel@example.com/abcd1234/ops@example.com", "smtp2go://sentinel@example.com/abcd1234/ops@example.com",
                "sparkpost://sentinel@example.com/abcd1234/ops@example.com"):
        assert body_for(build_apprise(url, None)[0], text) == (message.html_text(text), NotifyFormat.HTML), url
    for url in ("tgram://123456789:abcdefg_hijklmnop/12315544/", SLACK_URL, "json://127.0.0.1:9/x"):
        assert body_for(build_apprise(url, None)[0], text) == (text, NotifyFormat.TEXT), url


def test_an_smtp_reason_is_ours_in_words_never_the_noted_text():
    from stream.alerts.notify import smtp_reason

    assert smtp_reason(["Socket Exception: STARTTLS extension not supported by server."]).startswith("the SMTP server offers no STARTTLS")
    # An exception's text that is no known refusal (it may quote a secret path) is never said.
    assert smtp_reason(["Socket Exception: HTTPSConnectionPool(host='hooks.slack.com'): /services/T0/B0/SECRET"]) is None
    assert smtp_reason([]) is None


def test_no_debug_line_of_an_apprise_child_logger_reaches_the_log_and_a_refusal_is_still_read(caplog):
    """The `apprise` logger was at DEBUG so an attempt's exception text could be read: a child logger
    (`apprise.xmpp`) inherited that level, and its records pass only their own logger's filters,
    not `apprise`'s, so its DEBUG lines, a URL's secret path in them, reached the worker's handlers.
    Now DEBUG lines are made only by `apprise` itself within an attempt, noted and dropped."""
    from stream.alerts.notify import explained

    build_apprise("json://127.0.0.1:9/", None)  # installs the filter on the `apprise` logger
    caplog.set_level(logging.DEBUG)
    apprise_log, child = logging.getLogger("apprise"), logging.getLogger("apprise.xmpp")
    secret = "https://hooks.example.com/services/T0/B0/SECRETPATH"

    def attempt() -> tuple[bool, str | None]:
        child.debug("Socket Exception: %s", secret)
        apprise_log.debug("Socket Exception: (535, b'5.7.8 Authentication failed')")
        return False, None

    ok, error = explained(attempt)
    child.debug("Posting to %s", secret)
    apprise_log.debug("Posting to %s", secret)
    assert (ok, error) == (False, "the SMTP server refused the URL's user and password")
    assert [(r.name, r.levelno) for r in caplog.records if r.name.startswith("apprise") and r.levelno < logging.INFO] == []
    assert "SECRETPATH" not in _log_text(caplog.records)


def test_apprise_logs_nothing_under_the_processs_log_level(caplog):
    """SENTINEL_LOG_LEVEL=WARNING: Apprise's INFO lines ("Sent JSON notification to ...") stay out, as
    every other library's; the `apprise` logger's own level (INFO, for the refusal capture) made them
    pass. Within an attempt its DEBUG lines are still read for the refusal."""
    from stream.alerts.notify import explained

    root = logging.getLogger()
    level = root.level
    try:
        caplog.set_level(logging.DEBUG)  # its handler takes every record that reaches it
        root.setLevel(logging.WARNING)  # as setup_logging does for SENTINEL_LOG_LEVEL=WARNING
        build_apprise("json://127.0.0.1:9/", None)
        apprise_log = logging.getLogger("apprise")

        def attempt() -> tuple[bool, str | None]:
            apprise_log.info("Sent JSON notification to %s.", "ops@example.com")
            apprise_log.debug("Socket Exception: (535, b'5.7.8 Authentication failed')")
            return False, None

        ok, error = explained(attempt)
        apprise_log.info("Sent JSON notification to %s.", "ops@example.com")
        logging.getLogger("apprise.xmpp").info("Connected to %s", "xmpp.example.com")
        apprise_log.warning("Notification to %s failed.", "json://127.0.0.1:9/")
        assert error == "the SMTP server refused the URL's user and password"
        assert [(r.name, r.levelno) for r in caplog.records if r.name.startswith("apprise")] == [("apprise", logging.WARNING)]
    finally:
        root.setLevel(level)
        build_apprise("json://127.0.0.1:9/", None)  # back to the suite's level


# --- delivery: JSON webhook, routing, concurrency -------------------------------------------------


def test_a_notification_links_to_its_console_page_when_the_console_url_is_set(http):
    """SENTINEL_CONSOLE_URL: a notice links to its incident's page, a transition (no grouping) to its
    scope's, quoted as the console quotes its own links; unset, no link."""
    from stream.alerts.grouping import Notice

    member = {"scope": "channel:price talk/#1", "kind": "sentiment_drop", "firing": True, "severity": "warning", "onset": None,
              "metric": "negative_share", "value": 0.5, "baseline": 0.2}
    notice = Notice("inc 1", "channel:price talk/#1", "firing", "new", "warning", "2026-10-02T12:20:00Z", "2026-10-02T12:00:00Z", False, [member])
    linked = message.notice_body(notice, console_url="https://s.example.com")
    assert linked.splitlines()[-1] == "console: https://s.example.com/incidents/inc%201"
    assert "console:" not in message.notice_body(notice)
    over = Notice(**{**notice.to_json(), "state": "resolved", "reason": "resolved"})
    assert message.notice_body(over, console_url="https://s.example.com").splitlines()[-1] == (
        "console: https://s.example.com/incidents/inc%201 (real or a false alarm? record a verdict there)")
    record = make_record(scope="channel:price talk/#1|x")
    assert "console: https://s.example.com/scope/channel:price%20talk%2F%231%7Cx" in message.body(record, console_url="https://s.example.com")
    assert "console:" not in message.body(record)
    # Through Apprise to a real webhook, from the setting.
    settings = Settings(apprise_urls=http.url("/hook"), console_url="https://s.example.com/", notify_chart=False)
    n = Notifier.from_settings(settings)
    assert run(n.deliver(make_record(), None)).notified and run(n.deliver_notice(notice)).notified
    told = [p["message"] for p in http.payloads("/hook")]
    assert "console: https://s.example.com/scope/asset:ETH" in told[0] and "console: https://s.example.com/incidents/inc%201" in told[1]


def test_a_channel_named_as_a_domain_or_a_post_id_that_is_a_link_is_no_live_link_in_a_notice():
    """A poster who runs a channel names it, and sets a post's id: a Telegram group called
    `claim-airdrop.example` made the title and body of every notice about its (easily swung)
    sentiment carry a domain Slack and mail clients link, and an id `https://evil.example/claim` was a
    live link in each sample line. Both are defanged as a post's text is; a scope the escaping
    changed offers no `sentinel silence` command of its name (a live link), but since session 57 one
    of a pattern with its dots bracketed, which matches it alone and links nothing."""
    from stream.alerts.grouping import Notice

    scope = "channel:claim-airdrop.example"
    record = make_record(scope=scope, samples=[Sample("https://evil.example/claim", "bad news", "negative", -0.9)])
    shown = message.title(record) + "\n" + message.body(record)
    assert "claim-airdrop[.]example" in message.title(record) and "evil[.]example/claim" in shown
    assert "airdrop.example" not in shown and "evil.example" not in shown
    assert "sentinel silence 'channel:claim-airdrop[.]example' --kind sentiment_drop --for 2h" in shown
    member = {"scope": scope, "kind": "sentiment_drop", "firing": True, "severity": "warning", "onset": None,
              "metric": "negative_share", "value": 0.5, "baseline": 0.2}
    notice = Notice("inc1", scope, "firing", "new", "warning", "2026-10-02T12:20:00Z", "2026-10-02T12:00:00Z", False, [member])
    told = message.notice_title(notice) + "\n" + message.notice_body(notice, [record])
    assert "claim-airdrop[.]example" in message.notice_title(notice) and "airdrop.example" not in told and "evil.example" not in told
    assert "sentinel silence channel:general " in message.body(make_record(scope="channel:general"))  # left as it is: offered


@pytest.mark.parametrize("scope, offered", [
    ("channel:価格。速報", "channel:価格[。]速報"),  # an ideographic full stop in a channel's name
    ("channel:ニュース｡速報", "channel:ニュース[｡]速報"),
    ("channel:news．alerts", "channel:news[．]alerts"),
    ("source:bitcointalk.org", "source:bitcointalk[.]org"),
])
def test_a_scope_shown_with_its_dots_bracketed_is_offered_a_silence_that_matches_it_alone(scope, offered):
    """A root whose name holds a dot (`。`, `．`, `｡` or `.`) before letters is shown defanged
    (`channel:価格[.]速報`), and its notice offered no `sentinel silence` line, where the console offers
    one. The notice gives it as a pattern with each dot in brackets: it reads as no link, `sentinel
    silence` takes it as a glob matching that one scope (each bracket one character), and shell
    quoting keeps the shell from reading the brackets."""
    import shlex

    from stream.alerts.grouping import Notice
    from stream.alerts.silences import Silence, silence_request
    from stream.windows import matches_scope

    member = {"scope": scope, "kind": "sentiment_drop", "firing": True, "severity": "warning"}
    notice = Notice("cc08e3ebdfdb671ccafc", scope, "firing", "new", "warning", "2026-10-02T12:20:00Z", "2026-10-02T12:00:00Z", False, [member])
    for text, tail in ((message.notice_body(notice), ["--for", "2h"]),
                       (message.body(make_record(scope=scope)), ["--kind", "sentiment_drop", "--for", "2h"])):
        line = next((line for line in text.splitlines() if line.startswith("silence its notices: ")), None)
        assert line is not None, text
        argv = shlex.split(line.split(": ", 1)[1])
        assert argv == ["sentinel", "silence", offered, *tail]
        assert message.scope_text(line, limit=0) == line  # nothing in it reads as a link
        stored = silence_request(argv[2], 7200)
        assert Silence("s1", stored, None, 7200.0, "", 0.0).matches(scope, "sentiment_drop", 1.0)
        for other in (scope.replace(".", "x").replace("。", "x").replace("．", "x").replace("｡", "x"), scope + "x", "channel:other"):
            assert not matches_scope(other, stored), other
    # The console offers the name itself, as before (it shows and links nothing).
    assert message.root_silence(scope, defanged=False) == f"sentinel silence {shlex.quote(scope)} --for 2h"


@pytest.mark.parametrize("name", ["a" * 60 + "." + "b" * 67, "news.alerts.daily." + "x" * 109, "価格。速報" + "x" * 122])
def test_a_silence_a_notice_offers_for_a_long_name_is_one_sentinel_silence_takes(name: str) -> None:
    """A scope's name may hold 128 characters (`contracts.MAX_NAME_CHARS`: a Telegram group's title),
    and `sentinel silence` refuses a longer one. Each bracketed dot adds two: a 128-character
    `claim-airdrop.example...` was offered `sentinel silence 'channel:...[.]...'` of 130, which
    answered "is 130 characters, over the cap of 128". Where the pattern would be past the cap the
    notice offers none (its console link names the scope, and there its silence form is filled in)."""
    import shlex

    from stream.alerts.grouping import Notice
    from stream.alerts.silences import silence_request

    scope = f"channel:{name}"
    member = {"scope": scope, "kind": "sentiment_drop", "firing": True, "severity": "warning"}
    notice = Notice("cc08e3ebdfdb671ccafc", scope, "firing", "new", "warning", "2026-10-02T12:20:00Z", "2026-10-02T12:00:00Z", False, [member])
    for text in (message.notice_body(notice), message.body(make_record(scope=scope))):
        for line in (line for line in text.splitlines() if line.startswith("silence its notices: ")):
            pattern = shlex.split(line.split(": ", 1)[1])[2]
            assert silence_request(pattern, 7200) == pattern, line  # refused: ValueError
    # One that fits, as before: offered, and taken.
    fits = "channel:" + name[:100].replace("x", "y", 1)
    assert message.silence_pattern(fits) is not None and silence_request(message.silence_pattern(fits), 7200)


def test_json_webhook_receives_title_and_body(http):
    result = run(notifier(http.url("/hook")).deliver(make_record(), None))
    assert result.notified and result.targeted == 1
    (payload,) = http.payloads("/hook")
    assert payload["title"] == "[CRITICAL] sentiment_drop on asset:ETH [a1b2c3d4]"
    assert "over 57 posts (1200 in the baseline)" in payload["message"]
    assert payload["type"] == "failure" and payload["attachments"] == []


def test_a_notification_sent_well_after_its_event_time_says_when_it_was_sent():
    """Every time in a notice is event time. A replay with Apprise URLs set, or a worker catching up
    on a backlog, sent a move hours or months old that read like one happening now (the mail's
    Date is when it was sent). Past 15 minutes behind, the body says when it went out and how far
    behind that is; live (a minute or two behind) it says nothing more."""
    from stream.alerts.grouping import Notice
    from stream.timefmt import epoch

    notice = Notice("cc08e3ebdfdb671ccafc", "asset:ETH", "firing", "new", "warning", "2026-03-04T12:06:00Z", "2026-03-04T12:01:00Z", False,
                    [{"scope": "asset:ETH", "kind": "sentiment_drop", "firing": True, "severity": "warning", "onset": "2026-03-04T12:00:00Z",
                      "metric": "negative_share", "value": 0.75, "baseline": 0.197}])
    def late(text: str) -> list[str]:
        return [line for line in text.splitlines() if line.startswith("sent ")]

    assert late(message.notice_body(notice)) == [] and late(message.notice_body(notice, now=epoch("2026-03-04T12:08:00Z"))) == []
    body = message.notice_body(notice, now=epoch("2026-12-06T19:45:22Z")).splitlines()
    at = body.index("opened 2026-03-04T12:01:00Z; as of 2026-03-04T12:06:00Z (event time)")
    assert body[at + 1] == ("sent 2026-12-06T19:45:22Z (wall clock), 277 days after 2026-03-04T12:06:00Z (event time): "
                            "the posts it speaks of are that old (a replay, a backlog, or a stream gone quiet)") and body[at + 2].startswith("incident_id: ")
    assert late(message.notice_body(notice, now=epoch("2026-03-04T12:50:00Z")))[0].startswith("sent 2026-03-04T12:50:00Z (wall clock), 44 minutes after")
    assert " 5.2 hours after " in late(message.notice_body(notice, now=epoch("2026-03-04T17:20:00Z")))[0]
    record = make_record()  # ungrouped: behind its window's end
    assert late(message.body(record, now=epoch("2024-05-01T11:05:00Z"))) == []
    assert late(message.body(record, now=epoch("2024-05-01T13:00:00Z"))) == [
        "sent 2024-05-01T13:00:00Z (wall clock), 2.0 hours after 2024-05-01T11:00:00Z (event time): the posts it speaks of are that old (a replay, a backlog, or a stream gone quiet)"]


def test_an_incident_acknowledged_many_times_lists_a_bounded_number_of_acknowledgements():
    """Every acknowledgement was listed, one line each (the log keeps 50, a line up to about 500
    characters): an incident a script acknowledged at each repeat sent notices of 50 lines of
    acknowledgements above what moved. The first (who took it on) and the latest four are listed,
    with how many came between and where every one is."""
    from stream.alerts.grouping import Notice

    notice = Notice("cc08e3ebdfdb671ccafc", "asset:ETH", "firing", "update", "warning", "2026-03-04T12:06:00Z", "2026-03-04T12:01:00Z",
                    False, [{"scope": "asset:ETH", "kind": "sentiment_drop", "firing": True, "severity": "warning",
                             "onset": "2026-03-04T12:00:00Z", "metric": "negative_share", "value": 0.75, "baseline": 0.197}], acked="ack 49")
    acks = [{"at": f"2026-12-06T19:{i:02d}:00Z", "by": "bot", "via": "cli", "reason": f"ack {i}"} for i in range(50)]
    lines = message.notice_body(notice, acks=acks).splitlines()
    listed = [line for line in lines if line.startswith("Acknowledged ")]
    assert [line.rsplit(": ", 1)[1] for line in listed] == ["ack 0", "ack 46", "ack 47", "ack 48", "ack 49"], listed
    (between,) = [line for line in lines if "more acknowledgements" in line]
    assert between == "... 45 more acknowledgements between these (the console's incident page lists every one)"
    assert lines.index(between) == lines.index(listed[0]) + 1
    few = message.notice_body(notice, acks=acks[:5]).splitlines()  # five or fewer: each listed, as before
    assert len([line for line in few if line.startswith("Acknowledged ")]) == 5 and not [line for line in few if "more acknowledgements" in line]


def test_a_resolution_tells_a_service_that_heard_a_warning_that_it_escalated_since():
    """A `warning=` channel heard the incident open as a warning; the pager heard it turn critical.
    Both get the resolution, which ends at critical: the warning channel read "critical, resolved"
    of what it last heard as a warning. The resolution now says which severities were told and
    when each began (event time); one told at its own severity alone says nothing more, and the
    lines consumers parse are unchanged."""
    from stream.alerts.grouping import Notice

    member = {"scope": "asset:ETH", "kind": "sentiment_drop", "firing": False, "severity": "critical", "onset": "2026-03-04T12:00:00Z",
              "metric": "negative_share", "value": 0.75, "baseline": 0.197}
    notice = Notice("cc08e3ebdfdb671ccafc", "asset:ETH", "resolved", "resolved", "critical", "2026-03-04T14:00:00Z", "2026-03-04T12:01:00Z",
                    False, [member])
    told_at = {"warning": "2026-03-04T12:06:00Z", "critical": "2026-03-04T13:06:00Z"}
    body = message.notice_body(notice, routes=["warning", "critical"], told_at=told_at).splitlines()
    assert body[0] == "Incident on asset:ETH is resolved."
    assert body[1] == ("Escalated: told as warning from 2026-03-04T12:06:00Z, then critical from 2026-03-04T13:06:00Z (event time). "
                       "A service for warning alone heard it only as warning.")
    plain = message.notice_body(notice).splitlines()
    assert body[2:] == plain[1:]  # every other line as before
    assert not [line for line in message.notice_body(notice, routes=["critical"], told_at=told_at).splitlines() if line.startswith("Escalated")]
    # Its critical notice was silenced (delivery drops it from the routes): it reached critical untold.
    assert message.escalation_lines("critical", ["warning"], told_at) == [
        "Escalated: told as warning from 2026-03-04T12:06:00Z (event time); it reached critical with no notification sent at it. "
        "A service for warning alone heard it only as warning."]
    # Ungrouped: the alert's record, no times kept.
    record = make_record(state="resolved", severity="critical")
    lines = message.body(record, routes=["warning", "critical"]).splitlines()
    assert lines[1] == "Escalated: told as warning, then critical. A service for warning alone heard it only as warning."
    assert lines[2:] == message.body(record).splitlines()[1:]


def test_a_resolution_says_the_highest_severity_it_reached_in_its_text():
    """The demo's incident turned critical in its update; its resolution, told to one unrouted
    webhook, read "[RESOLVED] ..." over "Incident on asset:ETH is resolved." with nothing saying it
    had been critical (only the JSON payload's `severity` key did, which mail and chat do not show)."""
    from stream.alerts.grouping import Notice

    member = {"scope": "asset:ETH", "kind": "sentiment_drop", "firing": False, "severity": "critical", "onset": "2026-03-04T12:00:00Z",
              "metric": "negative_share", "value": 0.75, "baseline": 0.197}
    notice = Notice("cc08e3ebdfdb671ccafc", "asset:ETH", "resolved", "resolved", "critical", "2026-03-04T14:00:00Z", "2026-03-04T12:01:00Z",
                    False, [member])
    for routes in ((), ("warning", "critical"), ("critical",)):
        body = message.notice_body(notice, routes=routes).splitlines()
        assert body[0] == "Incident on asset:ETH is resolved."  # the line consumers parse, as before
        assert "Highest severity reached: critical." in body, body
    warning = Notice(**{**notice.to_json(), "severity": "warning"})
    assert "Highest severity reached: warning." in message.notice_body(warning).splitlines()
    # A firing notice's severity is in its title and first line already.
    firing = Notice(**{**notice.to_json(), "state": "firing", "reason": "new"})
    assert not [line for line in message.notice_body(firing).splitlines() if line.startswith("Highest severity")]
    # Ungrouped: the alert's resolution likewise.
    lines = message.body(make_record(state="resolved", severity="critical")).splitlines()
    assert lines[0].endswith(" is resolved.") and lines[1] == "Highest severity reached: critical."
    assert "Highest severity" not in message.body(make_record(severity="critical"))


def test_a_json_webhook_gets_the_incident_id_and_state_as_fields_not_only_in_the_text(http):
    """Session 45's walkthrough: the JSON payload carried title, message and type, and a webhook
    consumer had to parse the text for the incident. Each notification's own keys now sit beside
    them, through Apprise's JSON plugin, on a real HTTP server; the operator's `:key=value` tokens
    still apply and win a clash, and the configured service is left as it was."""
    from stream.alerts.grouping import Notice

    member = {"scope": "asset:ETH", "kind": "sentiment_drop", "firing": True, "severity": "critical", "onset": "",
              "metric": "negative_share", "value": 0.5, "baseline": 0.2}
    notice = Notice("cc08e3ebdfdb671ccafc", "asset:ETH", "firing", "update", "critical", "2026-10-05T12:20:00Z",
                    "2026-10-05T12:00:00Z", False, [member])
    n = notifier(f"{http.url('/hook')} {http.url('/mapped')}?:incident_id=mine&:title=subject")
    assert run(n.deliver_notice(notice)).notified and run(n.deliver(make_record(incident_id=""), None)).notified
    told, record = http.payloads("/hook")
    assert {k: told[k] for k in ("incident_id", "root_scope", "state", "reason", "severity", "opened", "at")} == {
        "incident_id": "cc08e3ebdfdb671ccafc", "root_scope": "asset:ETH", "state": "firing", "reason": "update",
        "severity": "critical", "opened": "2026-10-05T12:00:00Z", "at": "2026-10-05T12:20:00Z"}
    assert told["title"].endswith("(update) [cc08e3eb]") and told["type"] == "failure" and "incident_id: cc08e3eb" in told["message"]
    # Sent long after its event time (these are weeks old): said, with the wall clock it went out at.
    late = [line for line in told["message"].splitlines() if line.startswith("sent ")]
    assert len(late) == 1 and "(wall clock), " in late[0] and " days after 2026-10-05T12:20:00Z (event time): the posts it speaks of are that old" in late[0], told
    assert " days after 2024-05-01T11:00:00Z (event time)" in record["message"], record
    # Ungrouped: the alert's own keys (its id is its incident's).
    assert {k: record[k] for k in ("alert_id", "incident_id", "scope", "kind", "state", "severity")} == {
        "alert_id": "a1b2c3d4e5f6a7b8c9d0", "incident_id": "a1b2c3d4e5f6a7b8c9d0", "scope": "asset:ETH",
        "kind": "sentiment_drop", "state": "firing", "severity": "critical"}
    mapped = http.payloads("/mapped")[0]
    assert mapped["incident_id"] == "mine" and mapped["subject"] == told["title"] and "title" not in mapped
    assert all(s.payload_extras in ({}, {"incident_id": "mine", "title": "subject"}) for s in n.targets)


def test_a_market_wide_notice_past_a_services_limit_arrives_with_its_head_and_counts_the_rest(http):
    """A market-wide incident of hundreds of scopes made a body past the JSON plugin's 32,768
    characters (Apprise's `body_maxlen`), which Apprise sent whole for the receiver to cut or
    refuse. On a real HTTP server: the body that arrives fits, keeps its head, its actions and its
    console link, and counts the related scopes it leaves out."""
    from stream.alerts.grouping import Notice

    member = {"kind": "sentiment_drop", "firing": True, "severity": "critical", "onset": "2026-03-04T12:00:00Z",
              "metric": "negative_share", "value": 0.75, "baseline": 0.2}
    scopes = ["all", *(f"channel:telegram/crypto-signals-room-{i:03d}" for i in range(400))]
    notice = Notice("cc08e3ebdfdb671ccafc", "all", "firing", "new", "critical", "2026-03-04T13:00:00Z", "2026-03-04T12:00:00Z", True,
                    [{**member, "scope": s} for s in scopes])
    n = notifier(http.url("/hook"), console_url="https://sentinel.example.com")
    full = message.notice_body(notice, console_url="https://sentinel.example.com")
    assert len(full) > n.targets[0].body_maxlen  # what it would have sent
    assert run(n.deliver_notice(notice)).notified
    (told,) = http.payloads("/hook")
    text = told["message"]
    assert len(text) <= n.targets[0].body_maxlen
    lines = text.splitlines()
    assert lines[0] == "Incident on all is firing (critical)." and "incident_id: cc08e3ebdfdb671ccafc" in lines
    assert lines[-1] == "console: https://sentinel.example.com/incidents/cc08e3ebdfdb671ccafc"
    kept = [line for line in lines if line.startswith("- ")]
    assert f"... and {400 - len(kept)} more related scopes (see the console link)" in lines and 0 < len(kept) < 400


def test_a_notice_is_fitted_once_per_service_and_the_same_body_is_sent_on_every_retry(http, monkeypatch):
    """Fitting a notice to its service's limit measures it as sent, again and again (a bisection):
    Google Chat took 235 ms for 400 scopes and 1.9 s for 5,000, CPU in the send thread, and it was
    done again on every retry. A webhook that refuses twice, then takes it, on a real HTTP server:
    three requests, one fitting, each request the same fitted body."""
    from stream.alerts.grouping import Notice

    member = {"kind": "sentiment_drop", "firing": True, "severity": "critical", "onset": "2026-03-04T12:00:00Z",
              "metric": "negative_share", "value": 0.75, "baseline": 0.2}
    scopes = ["all", *(f"channel:telegram/crypto-signals-room-{i:03d}" for i in range(400))]
    notice = Notice("cc08e3ebdfdb671ccafc", "all", "firing", "new", "critical", "2026-03-04T13:00:00Z", "2026-03-04T12:00:00Z", True,
                    [{**member, "scope": s} for s in scopes])
    fits: list[int] = []
    original = message.fit_body

    def counted(text: str, maxlen: int, *args, **kwargs) -> str:
        fits.append(maxlen)
        return original(text, maxlen, *args, **kwargs)

    monkeypatch.setattr(message, "fit_body", counted)
    http.script["/flaky"] = [500, 500]
    n = notifier(http.url("/flaky"), attempts=3, console_url="https://sentinel.example.com")
    delivered = run(n.deliver_notice(notice))
    assert (delivered.notified, delivered.attempts) == (True, 3)
    bodies = [p["message"] for p in http.payloads("/flaky")]
    assert len(bodies) == 3 and len(set(bodies)) == 1 and len(bodies[0]) <= n.targets[0].body_maxlen
    assert "more related scopes (see the console link)" in bodies[0]
    assert fits == [n.targets[0].body_maxlen], fits


def test_a_notice_arrives_no_longer_than_the_operators_body_max_with_its_head(http):
    """SENTINEL_NOTIFY_BODY_MAX=3000 on a webhook whose own limit is 32,768: the market-wide notice
    that reached it at some 32,000 characters arrives at 3,000 or fewer, on a real HTTP server,
    with its first line, id and console link, the rest counted."""
    from stream.alerts.grouping import Notice

    member = {"kind": "sentiment_drop", "firing": True, "severity": "critical", "onset": "2026-03-04T12:00:00Z",
              "metric": "negative_share", "value": 0.75, "baseline": 0.2}
    scopes = ["all", *(f"channel:telegram/crypto-signals-room-{i:03d}" for i in range(400))]
    notice = Notice("cc08e3ebdfdb671ccafc", "all", "firing", "new", "critical", "2026-03-04T13:00:00Z", "2026-03-04T12:00:00Z", True,
                    [{**member, "scope": s} for s in scopes])
    n = notifier(http.url("/hook"), console_url="https://sentinel.example.com", body_max=3000)
    assert run(n.deliver_notice(notice)).notified
    (told,) = http.payloads("/hook")
    lines = told["message"].splitlines()
    assert len(told["message"]) <= 3000, len(told["message"])
    assert lines[0] == "Incident on all is firing (critical)." and "incident_id: cc08e3ebdfdb671ccafc" in lines
    assert lines[-1] == "console: https://sentinel.example.com/incidents/cc08e3ebdfdb671ccafc"
    kept = [line for line in lines if line.startswith("- ")]
    assert f"... and {400 - len(kept)} more related scopes (see the console link)" in lines and 0 < len(kept) < 400


def test_the_logs_name_a_json_service_as_configured_not_with_a_notifications_keys(caplog):
    """The copy that carries a notification's payload keys has them in its URL (`:root_scope=...`, a
    forum's channel name among them): a failure's log lines name the service as configured."""
    from stream.alerts.grouping import Notice

    dead = f"json://127.0.0.1:{free_port()}/dead"
    notice = Notice("cc08e3ebdfdb671ccafc", "channel:<!here>", "firing", "new", "warning", "2026-10-05T12:05:00Z",
                    "2026-10-05T12:00:00Z", False, [{"scope": "channel:<!here>", "kind": "sentiment_drop", "firing": True, "severity": "warning"}])
    assert not run(notifier(dead, attempts=1).deliver_notice(notice)).notified
    (error,) = [r for r in caplog.records if r.name == "stream.alerts.notify" and r.levelno == logging.ERROR]
    assert "/dead" in error.url and "incident_id" not in error.url and "here" not in error.url


def test_chart_reaches_json_webhook_and_temp_file_is_removed(http, tmp_path, monkeypatch):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    png = render_chart([], END - 3600, END, "asset:ETH", "sentiment_drop")
    result = run(notifier(http.url("/hook")).deliver(make_record(), png))
    assert result.notified
    (payload,) = http.payloads("/hook")
    (attachment,) = payload["attachments"]
    assert attachment["mimetype"] == "image/png" and attachment["filename"].endswith(".png")
    assert list(tmp_path.iterdir()) == []


def test_routing_by_severity_tag(http):
    urls = f"critical={http.url('/critical')},warning={http.url('/warning')},{http.url('/any')} always={http.url('/always')}"
    n = notifier(urls)
    assert run(n.deliver(make_record(severity="warning"), None)).notified
    assert sorted(http.paths()) == ["/always", "/any", "/warning"]
    http.requests.clear()
    assert run(n.deliver(make_record(severity="critical"), None)).notified
    assert sorted(http.paths()) == ["/always", "/any", "/critical"]
    http.requests.clear()
    # A resolution reaches whoever was told about the incident: routed for every severity its firing
    # notifications went out at (`routes`), each service once, saying the highest.
    resolved = run(n.deliver(make_record(severity="critical", state="resolved"), None, routes=["warning", "critical"]))
    assert resolved.targeted == 4 and sorted(http.paths()) == ["/always", "/any", "/critical", "/warning"]
    assert {p["type"] for p in http.payloads("/warning")} == {"success"}
    assert [p["severity"] for p in http.payloads("/warning")] == ["critical"]


def test_a_resolution_is_routed_for_every_severity_its_firing_notices_went_out_at_each_service_once():
    """With `warning=` Slack and `critical=` a pager, an incident told as a warning, then critical,
    resolved to the pager alone (the highest severity's route): the warning channel never heard it
    end. Its resolution is routed for both; a service tagged with both, or `always`, or untagged,
    gets it once, and the order is the configured one."""
    servers = list(build_apprise("warning=json://h/slack critical=json://h/pager warning,critical=json://h/both "
                                 "always=json://h/always json://h/plain", None))
    named = lambda chosen: [s.fullpath for s in chosen]  # noqa: E731
    assert named(route(servers, "critical")) == ["/pager", "/both", "/always", "/plain"]  # a firing notice, as before
    assert named(route(servers, "warning", "critical")) == ["/slack", "/pager", "/both", "/always", "/plain"]
    assert named(route(servers, "critical", "warning", "critical")) == named(route(servers, "warning", "critical"))
    assert named(route(servers, "warning")) == ["/slack", "/both", "/always", "/plain"]


def test_no_target_is_not_notified(http):
    for empty in (None, "", " \n# nothing configured\n"):
        n = Notifier(build_apprise(empty, None))
        assert n.targets == []
        result = run(n.deliver(make_record(), None))
        assert (result.notified, result.failures, result.attempts) == (False, 0, 0)
    only_critical = notifier(f"critical={http.url('/critical')}")
    assert run(only_critical.deliver(make_record(severity="warning"), None)).notified is False
    assert http.paths() == []


def test_services_are_delivered_concurrently(http):
    # Each request waits at a barrier for the other; sent one after the other, both would fail.
    http.barrier = threading.Barrier(2, timeout=3)
    n = notifier(f"{http.url('/together/a')} {http.url('/together/b')}", attempts=1)
    result = run(n.deliver(make_record(), None))
    assert result.notified and result.sent == 2 and not http.barrier.broken


# --- delivery: failures and retries ---------------------------------------------------------------


def test_retries_until_the_endpoint_recovers(http, caplog):
    http.script["/flaky"] = [500, 500]
    n = notifier(http.url("/flaky"), attempts=5, backoff=0.05, backoff_max=1.0)
    started = time.monotonic()
    result = run(n.deliver(make_record(), None))
    elapsed = time.monotonic() - started
    assert (result.notified, result.failures, result.attempts) == (True, 0, 3)
    assert http.paths() == ["/flaky"] * 3
    assert elapsed >= 0.05 + 0.1  # the backoff was waited: 0.05 s, then doubled
    retries = [r for r in caplog.records if r.name == "stream.alerts.notify" and r.levelno == logging.WARNING]
    assert [r.attempt for r in retries] == [1, 2]
    assert all(r.alert_id == "a1b2c3d4e5f6a7b8c9d0" and r.scope == "asset:ETH" for r in retries)
    assert (n.sent_total, n.failed_total) == (1, 0)


def test_refused_service_fails_and_the_other_is_sent_once(http, caplog):
    dead = f"json://127.0.0.1:{free_port()}/dead"
    n = notifier(f"{dead} {http.url('/ok')}", attempts=3)
    result = run(n.deliver(make_record(), None))
    assert (result.notified, result.failures, result.attempts) == (False, 1, 3)
    assert (result.targeted, result.sent) == (2, 1)
    assert http.paths() == ["/ok"]
    assert (n.sent_total, n.failed_total, n.attempts_total) == (1, 1, 4)
    errors = [r for r in caplog.records if r.name == "stream.alerts.notify" and r.levelno == logging.ERROR]
    assert len(errors) == 1 and errors[0].service == "JSON" and "/dead" in errors[0].url
    warnings = [r for r in caplog.records if r.name == "stream.alerts.notify" and r.levelno == logging.WARNING]
    assert [r.attempt for r in warnings] == [1, 2, 3]


def _log_text(records: list[logging.LogRecord]) -> str:
    # Everything a handler could print: the message, every extra field, both project formatters.
    parts = []
    for r in records:
        parts += [r.getMessage(), repr(vars(r)), KeyValueFormatter().format(r), JsonFormatter().format(r)]
    return "\n".join(parts)


def test_secrets_never_reach_the_logs(caplog, monkeypatch):
    caplog.set_level(logging.DEBUG)
    dead = f"json://alice:HUNTER2SECRET@127.0.0.1:{free_port()}/hook"
    slack = importlib.import_module("apprise.plugins.slack")

    def refuse(method, url, **kwargs):
        raise requests.ConnectionError(f"cannot reach {url}")

    monkeypatch.setattr(slack.requests, "request", refuse)
    result = run(notifier(f"{dead} {SLACK_URL}", attempts=2).deliver(make_record(), None))
    assert (result.notified, result.failures) == (False, 2)
    text = _log_text(caplog.records)
    assert "notification failed after all attempts" in text  # the failure was logged ...
    assert "json://alice:***@127.0.0.1" in text  # ... with a usable, masked service URL
    assert "HUNTER2SECRET" not in text and SLACK_SECRET not in text


# --- Slack, built by Apprise's own plugin ---------------------------------------------------------


def test_slack_payload_is_built_and_neutralised(monkeypatch):
    slack = importlib.import_module("apprise.plugins.slack")
    posted: list[tuple[str, dict]] = []

    def capture(method, url, data=None, **kwargs):
        posted.append((url, json.loads(data)))
        response = requests.Response()
        response.status_code, response._content = 200, b"ok"
        return response

    monkeypatch.setattr(slack.requests, "request", capture)
    n = notifier(SLACK_URL)
    assert type(n.targets[0]).__module__ == slack.__name__
    hostile = Sample("p9", "<!channel> @here wake up <@U024BE7LH> <http://phish.example|free ETH> <b>bold</b>", "negative", -0.99)
    result = run(n.deliver(make_record(samples=[hostile]), None))
    assert result.notified
    ((url, payload),) = posted
    assert url == "https://hooks.slack.com/services/T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7FQ"
    (attachment,) = payload["attachments"]
    assert attachment["title"] == "[CRITICAL] sentiment_drop on asset:ETH [a1b2c3d4]"
    text = attachment["text"]
    assert "mean score -0.42 against +0.15" in text and "wake up" in text
    assert payload["mrkdwn"] is False
    # Nor is the attachment's text markdown (Slack formats only the fields `mrkdwn_in` names):
    # a post's *bold* or _italic_ stays as written.
    assert "mrkdwn_in" not in attachment
    # Slack parses mentions and links only inside < >, and @-words only when they start with "@".
    assert "<" not in text and ">" not in text
    assert "@here" not in text and "@channel" not in text
    # The hidden link is shown, defanged: Slack would link a bare `phish.example` too.
    assert "free ETH (hxxp://phish[.]example)" in text and "phish.example" not in text


def test_pagerduty_and_opsgenie_get_the_incident_id_as_dedup_key_and_alias():
    from stream.alerts.notify import keyed

    app = build_apprise("pagerduty://integration@apikey opsgenie://apikey json://127.0.0.1:9/h", None)
    pagerduty, opsgenie, hook = list(app)
    assert keyed(pagerduty, "inc123").dedup == "inc123" and pagerduty.dedup is None  # a copy: the shared one is untouched
    assert keyed(opsgenie, "inc123").alias == "inc123" and opsgenie.alias is None
    assert keyed(hook, "inc123") is hook and keyed(pagerduty, None) is pagerduty


def test_a_test_notification_to_a_pager_always_lands_on_one_page(monkeypatch):
    from stream.alerts import notify

    sent = []

    async def capture(self, server, *args):
        sent.append(server)
        return notify._Outcome(True, 1)

    monkeypatch.setattr(notify.Notifier, "_deliver_one", capture)
    n = Notifier(build_apprise("pagerduty://integration@apikey opsgenie://apikey", None))
    results = run(n.test_each("warning"))
    assert [s.dedup if hasattr(s, "dedup") else s.alias for s in sent] == ["sentinel-notify-test"] * 2
    assert all(ok for _, ok in results) and all("tags=-" in service for service, _ in results)


def test_an_incident_notice_names_root_kinds_members_onset_and_level_and_escapes_scopes():
    from stream.alerts.grouping import Notice

    member = {"kind": "sentiment_drop", "firing": True, "severity": "warning", "onset": "2026-10-02T11:50:00Z",
              "metric": "negative_share", "value": 0.583, "baseline": 0.2}
    notice = Notice("inc1", "asset:ETH", "firing", "update", "critical", "2026-10-02T12:20:00Z", "2026-10-02T12:00:00Z", False,
                    [{**member, "scope": "asset:ETH"}, {**member, "scope": "asset:ETH", "kind": "volume_spike", "metric": "posts",
                                                           "value": 90.0, "baseline": 30.0},
                     {**member, "scope": "channel:<!channel> @here", "severity": "critical"}])
    head, text = message.notice_title(notice), message.notice_body(notice)
    assert head == "[CRITICAL] sentiment_drop, volume_spike on asset:ETH (+1 related scope) (update) [inc1]"
    assert "sentiment_drop on asset:ETH (warning, firing): negative share 58.3% since 2026-10-02T11:50:00Z against 20.0%" in text
    assert "volume_spike on asset:ETH (warning, firing): 90 posts per 1h since 2026-10-02T11:50:00Z against 30" in text
    assert "incident_id: inc1" in text and "<!channel>" not in text and "@here" not in text and "!channel" in text
    resolved = Notice(**{**notice.to_json(), "state": "resolved", "reason": "resolved"})
    assert message.notice_title(resolved).startswith("[RESOLVED] ") and " is resolved." in message.notice_body(resolved)
    # Told over while a related scope still clears (grouping's tail): the body says what that means.
    assert "have not moved on their own since the root resolved" in message.notice_body(resolved)
    assert "have not moved" not in text
    cleared = Notice(**{**resolved.to_json(), "members": [{**m, "firing": False} for m in resolved.members]})
    assert "have not moved" not in message.notice_body(cleared)
    # A member that resolved keeps the level it had reached, said as such.
    assert "sentiment_drop on asset:ETH (warning, resolved; when last firing: negative share 58.3% since" in message.notice_body(cleared)


def test_a_market_wide_notice_before_any_asset_fired_has_no_empty_asset_list():
    """weekend.jsonl (audit 39, finding 10): `all` explained by several assets together, none of
    which had fired yet, was titled "market-wide volume_spike ()" over a body that promised assets."""
    from stream.alerts.grouping import Notice

    member = {"kind": "volume_spike", "firing": True, "severity": "warning", "onset": "2026-03-04T02:01:00Z", "metric": "posts",
              "value": 37.0, "baseline": 2.0}
    notice = Notice("inc1", "all", "firing", "new", "warning", "2026-03-04T02:24:00Z", "2026-03-04T02:19:00Z", True,
                    [{**member, "scope": "all"}, {**member, "scope": "source:discord"}])
    assert message.notice_title(notice) == "[WARNING] market-wide volume_spike (+1 related scope) [inc1]"
    text = message.notice_body(notice)
    assert "Scopes in this market-wide move (no asset's own alert has fired yet):" in text and "Assets and scopes" not in text
    with_asset = Notice(**{**notice.to_json(), "members": [*notice.members, {**member, "scope": "asset:BTC"}]})
    assert message.notice_title(with_asset) == "[WARNING] market-wide volume_spike (asset:BTC) (+2 related scopes) [inc1]"
    assert "Assets and scopes in this market-wide move:" in message.notice_body(with_asset)
    alone = Notice(**{**notice.to_json(), "members": notice.members[:1]})
    assert message.notice_title(alone) == "[WARNING] market-wide volume_spike [inc1]"


def test_a_market_wide_title_names_three_assets_and_counts_the_rest():
    """Session 54: a market-wide move of 25 cashtags listed every one in the title, a 642-character
    mail subject (652 on one header line) whose related count and incident id, at its end, no
    mailbox or chat showed. Three are named; the body lists every one."""
    from stream.alerts.grouping import Notice

    member = {"kind": "sentiment_drop", "firing": True, "severity": "critical", "onset": "2026-03-04T02:01:00Z",
              "metric": "negative_share", "value": 0.6, "baseline": 0.2}
    assets = [f"asset:TOKEN{i:02d}LONGNAME" for i in range(25)]
    notice = Notice("cc08e3eb1234", "all", "firing", "new", "critical", "2026-03-04T02:24:00Z", "2026-03-04T02:19:00Z", True,
                    [{**member, "scope": s} for s in ["all", *assets]])
    head = message.notice_title(notice)
    assert head == ("[CRITICAL] market-wide sentiment_drop (asset:TOKEN00LONGNAME, asset:TOKEN01LONGNAME, asset:TOKEN02LONGNAME "
                    "and 22 more) (+25 related scopes) [cc08e3eb]")
    assert len(head) < 160
    text = message.notice_body(notice)
    assert all(f"- sentiment_drop on {a} (critical, firing)" in text for a in assets)
    three = Notice(**{**notice.to_json(), "members": notice.members[:4]})
    assert message.notice_title(three).startswith("[CRITICAL] market-wide sentiment_drop (asset:TOKEN00LONGNAME, asset:TOKEN01LONGNAME, "
                                                  "asset:TOKEN02LONGNAME) (+3 related scopes)")


def test_a_reminder_says_where_each_firing_scope_is_now_not_only_its_level_since_the_onset():
    """newchannel_long.jsonl (audit 39, finding 10): reminder after reminder said "29 posts per 1h
    since" an onset a day earlier, an average that cannot tell a scope still at its peak from one
    back to normal or silent. With the last window's counts (the delivery loop reads them for a
    reminder) each firing member says where it is now; a resolved one keeps its last level."""
    from stream.alerts.grouping import Notice

    member = {"severity": "critical", "onset": "2026-03-04T06:08:00Z", "firing": True}
    members = [{**member, "scope": "asset:SOL", "kind": "sentiment_surge", "metric": "positive_share", "value": 0.327, "baseline": 0.25},
               {**member, "scope": "asset:SOL", "kind": "volume_spike", "metric": "posts", "value": 29.0, "baseline": 3.0},
               {**member, "scope": "channel:solana", "kind": "volume_spike", "metric": "posts", "value": 31.0, "baseline": 3.0},
               {**member, "scope": "all", "kind": "sentiment_drop", "metric": "negative_share", "value": 0.3, "baseline": 0.13,
                "firing": False}]
    notice = Notice("inc1", "asset:SOL", "firing", "repeat", "critical", "2026-03-05T02:38:00Z", "2026-03-04T06:31:00Z", False, members)
    recent = {"asset:SOL": [40, 10, 6, 24, 1.0, 3.0], "channel:solana": [0, 0, 0, 0, 0.0, 0.0], "all": [90, 20, 30, 40, 0.0, 9.0]}
    text = message.notice_body(notice, recent=recent)
    assert ("sentiment_surge on asset:SOL (critical, firing): positive share 32.7% since 2026-03-04T06:08:00Z against 25.0%; "
            "last 1h: positive share 25.0% of 40 posts") in text
    assert "volume_spike on asset:SOL (critical, firing): 29 posts per 1h since 2026-03-04T06:08:00Z against 3; last 1h: 40 posts" in text
    assert "- volume_spike on channel:solana (critical, firing): 31 posts per 1h since 2026-03-04T06:08:00Z against 3; last 1h: no posts" in text
    assert "last 1h: negative share" not in text  # a resolved member keeps the level it reached
    assert "last 1h" not in message.notice_body(notice)  # without the counts (another reason, a failed read) as before
    assert message.recent_level({"metric": "mean_score"}, [4, 0, 3, 1, -1.2, 0.5], "1h") == "last 1h: mean score -0.30 over 4 posts"
    assert message.recent_level({"metric": "negative_share"}, [1, 0, 1, 0, -0.5, 0.25], "15m") == "last 15m: negative share 100.0% of 1 post"


def test_a_sample_post_with_no_visible_text_says_so():
    from stream.alerts.grouping import Notice
    from stream.windows import Sample

    notice = Notice("inc1", "asset:BTC", "firing", "new", "warning", "2026-03-04T07:10:00Z", "2026-03-04T07:05:00Z", False,
                    [{"scope": "asset:BTC", "kind": "sentiment_surge", "firing": True, "severity": "warning"}])
    blank = Sample("p1", "\u200b\u2066\r\n\t", "positive", 0.32)
    surge = make_record(scope="asset:BTC", kind="sentiment_surge", samples=[blank])
    assert message.notice_body(notice, [surge]).endswith(
        "Sample posts:\nsentiment_surge on asset:BTC (its most positive posts):\n- [positive +0.32] (no visible text) (id p1)")


def test_a_notices_sample_posts_each_say_the_member_they_illustrate_the_drops_first():
    """The demo's first ETH notice showed a drop's two negative texts and then its volume spike's
    positive post ("[positive +1.00] ETH staking rewards went up") under "negative share 75%", as if
    it were the drop's evidence. Each member's samples now come under its name, the root's
    sentiment kind first, and a text already shown is not shown again under another member."""
    from stream.alerts.grouping import Notice
    from stream.windows import Sample

    members = [{"scope": "asset:ETH", "kind": kind, "firing": True, "severity": "warning"} for kind in ("volume_spike", "sentiment_drop")]
    notice = Notice("cc08e3ebdfdb671ccafc", "asset:ETH", "firing", "new", "warning", "2026-03-04T12:06:00Z", "2026-03-04T12:01:00Z",
                    False, [*members, {"scope": "channel:trading", "kind": "sentiment_drop", "firing": True, "severity": "warning"}])
    rewards = Sample("p9", "ETH staking rewards went up again", "positive", 1.0)
    dump = Sample("p1", "ETH is dumping hard", "negative", -0.98)
    rekt = Sample("p2", "rekt on ETH longs", "negative", -0.95)
    # Outbox order: the volume spike's record first, as a notice's records can come.
    records = [make_record(kind="volume_spike", metric="posts", samples=[rewards, dump]),
               make_record(kind="sentiment_drop", metric="negative_share", samples=[dump, Sample("p3", "eth is  DUMPING hard", "negative", -0.9), rekt]),
               make_record(scope="channel:trading", kind="sentiment_drop", samples=[Sample("p4", "selling my ETH now", "negative", -0.9)])]
    text = message.notice_body(notice, records, samples_shown=4)
    assert text.split("\nSample posts:\n")[1].splitlines() == [
        "sentiment_drop on asset:ETH (its most negative posts):",
        "- [negative -0.98] ETH is dumping hard (id p1)",
        "- [negative -0.95] rekt on ETH longs (id p2)",
        "volume_spike on asset:ETH (its most strongly scored posts, either way):",
        "- [positive +1.00] ETH staking rewards went up again (id p9)",
        "sentiment_drop on channel:trading (its most negative posts):",
        "- [negative -0.90] selling my ETH now (id p4)"]
    # Three places: the root's drop and volume spike fill them; the related scope's post waits.
    shown = message.notice_body(notice, records).split("\nSample posts:\n")[1].splitlines()
    assert shown[-2:] == ["volume_spike on asset:ETH (its most strongly scored posts, either way):",
                          "- [positive +1.00] ETH staking rewards went up again (id p9)"] and len(shown) == 5
    assert "Sample posts" not in message.notice_body(notice, records, samples_shown=0)


def test_a_notice_title_names_the_kinds_the_root_fires_now_not_those_that_ended():
    from stream.alerts.grouping import Notice

    member = {"scope": "asset:ETH", "severity": "warning", "onset": "", "metric": "negative_share", "value": 0.5, "baseline": 0.2}
    members = [{**member, "kind": "sentiment_drop", "firing": True}, {**member, "kind": "volume_spike", "firing": False}]
    repeat = Notice("inc1", "asset:ETH", "firing", "repeat", "warning", "2026-10-02T16:00:00Z", "2026-10-02T12:00:00Z", False, members)
    assert message.notice_title(repeat) == "[WARNING] sentiment_drop on asset:ETH (still firing) [inc1]"
    over = Notice(**{**repeat.to_json(), "state": "resolved", "reason": "resolved",
                     "members": [{**m, "firing": False} for m in members]})
    assert message.notice_title(over) == "[RESOLVED] sentiment_drop, volume_spike on asset:ETH [inc1]"


def test_a_notice_title_tells_one_incident_from_another_on_the_same_root():
    """Session 45's walkthrough: two incidents on asset:ETH on different days had one title, so in
    Slack or a mailbox a new incident read as the old one's update. The title ends with the start of
    the incident's id, the same in each of its notices, and one `sentinel ack` takes."""
    from stream.alerts.grouping import Notice
    from stream.alerts.incidents import MIN_ID_PREFIX

    member = {"scope": "asset:ETH", "kind": "sentiment_drop", "firing": True, "severity": "warning", "onset": "",
              "metric": "negative_share", "value": 0.5, "baseline": 0.2}
    monday = Notice("cc08e3ebdfdb671ccafc", "asset:ETH", "firing", "new", "warning", "2026-10-05T12:05:00Z", "2026-10-05T12:00:00Z",
                    False, [member])
    tuesday = Notice(**{**monday.to_json(), "incident_id": "5f1e0a9b77c2d4e8a1b0", "at": "2026-10-06T09:05:00Z"})
    update = Notice(**{**monday.to_json(), "reason": "update", "severity": "critical"})
    assert message.notice_title(monday) == "[WARNING] sentiment_drop on asset:ETH [cc08e3eb]"
    assert message.notice_title(tuesday) == "[WARNING] sentiment_drop on asset:ETH [5f1e0a9b]"
    assert message.notice_title(update).endswith("(update) [cc08e3eb]")
    assert message.SHORT_ID >= MIN_ID_PREFIX and "incident_id: cc08e3ebdfdb671ccafc" in message.notice_body(monday)


def test_sentinel_notify_test_sends_one_test_to_each_routed_service_and_says_which_failed():
    """Operators check their Apprise routing before an alert depends on it: a real webhook accepts
    the test, one that is down is named as failed (exit 1), one tagged for another severity is not
    sent to."""
    import os

    from workers import Hook

    up, down, pager = Hook(), Hook(), Hook()
    down.failing = True
    env = {**os.environ, "SENTINEL_BASE": "lexicon", "COLUMNS": "200", "SENTINEL_CONSOLE_URL": "https://s.example.com",
           "SENTINEL_APPRISE_URLS": f"{up.url},{down.url},critical={pager.url}"}
    env.pop("SENTINEL_APPRISE_CONFIG", None)
    run = lambda *args, **extra: subprocess.run([sys.executable, "-m", "sentinel.cli", "notify-test", *args],  # noqa: E731
                                                env={**env, **extra}, capture_output=True, text=True, timeout=120)
    try:
        warning = run()
        assert warning.returncode == 1, warning.stderr
        rows = [line for line in warning.stdout.splitlines() if "json://" in line]
        assert len(rows) == 2 and sum("sent" in r for r in rows) == 1 and sum("failed" in r for r in rows) == 1, warning.stdout
        (test,) = up.accepted
        assert test["title"] == "[TEST] Forum Sentinel notifications (warning)" and "Nothing fired" in test["message"]
        assert "console: https://s.example.com/incidents" in test["message"] and pager.accepted == []
        down.failing = False
        critical = run("--severity", "critical")
        assert critical.returncode == 0, critical.stdout + critical.stderr
        assert [p["title"] for p in pager.accepted] == ["[TEST] Forum Sentinel notifications (critical)"] and len(up.accepted) == 2
        assert "tags=critical" in critical.stdout
        nothing = run(SENTINEL_APPRISE_URLS="")
        assert nothing.returncode != 0 and "no notification service is routed warning alerts" in nothing.stderr
        assert run("--severity", "info").returncode != 0
    finally:
        for hook in (up, down, pager):
            hook.close()


CLEAR_PASSWORD = "ClearPw8Jq2Wz5Rt"  # distinctive: a hit in any output is a leak


@pytest.mark.parametrize("url, why", [
    ("json://ops:PW@h.example.com/hook", "a webhook over plain http: use jsons:// (https)"),
    ("xml://h.example.com/hook", "a webhook over plain http: use xmls:// (https)"),
    ("form://h.example.com/hook", "a webhook over plain http: use forms:// (https)"),
    ("mailto://ops:PW@smtp.example.com:25?to=a@example.com&from=s@example.com",
     "SMTP without TLS with its user and password in clear text: use mailtos:// (STARTTLS, or mode=ssl on port 465)"),
    ("mailto://smtp.example.com:25?to=a@example.com&from=s@example.com&mode=insecure",
     "SMTP without TLS: use mailtos:// (STARTTLS, or mode=ssl on port 465)"),
    ("jsons://ops:PW@h.example.com/hook", None), ("xmls://h.example.com/hook", None), ("forms://h.example.com/hook", None),
    ("mailtos://ops:PW@smtp.example.com?to=a@example.com&from=s@example.com", None),
    ("mailto://ops:PW@smtp.example.com:465?to=a@example.com&from=s@example.com&mode=ssl", None),
    ("mailto://ops:PW@gmail.com", None),  # a provider Apprise knows: STARTTLS on its own
    ("slack://T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7FQ", None),  # HTTPS whatever its `secure` says
    ("jsons://h.example.com/hook?verify=no", "TLS without checking the certificate (verify=no): whoever stands in between reads it; "
     "remove verify=no"),
    ("slack://T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7FQ?verify=no",
     "TLS without checking the certificate (verify=no): whoever stands in between reads it; remove verify=no"),
    # Loopback crosses no network (a local MTA, a relay in the same pod): said at every start, it was
    # a WARNING in every ordinary run of such an install. A cluster-local name is a network: said.
    ("json://ops:PW@127.0.0.1:8080/hook", None), ("xml://localhost/hook", None), ("form://[::1]:8080/hook", None),
    ("json://127.0.0.2/hook", None), ("jsons://127.0.0.1/hook?verify=no", None),
    ("mailto://localhost?to=a@example.com&from=s@example.com", None),
    ("mailto://ops:PW@example.com?smtp=127.0.0.1&to=a@example.com&from=s@example.com", None),  # the SMTP server it connects to
    ("json://relay.monitoring.svc.cluster.local/hook", "a webhook over plain http: use jsons:// (https)"),
    ("json://localhost.example.com/hook", "a webhook over plain http: use jsons:// (https)"),  # a name: may resolve anywhere
    ("mailto://ops:PW@localhost?smtp=smtp.example.com&to=a@example.com&from=s@example.com",
     "SMTP without TLS with its user and password in clear text: use mailtos:// (STARTTLS, or mode=ssl on port 465)"),
    # A self-hosted chat or push server on its plain scheme is http, its token or login in the
    # request: a bank's Mattermost webhook was not named. Their `s` forms, ntfy's cloud, loopback: not.
    ("mmost://mm.corp.example/3ccdd113474722377935511fc85d3dd4", "a self-hosted service over plain http: use mmosts:// (https)"),
    ("gotify://g.corp.example/ABCDEFGHIJKLM", "a self-hosted service over plain http: use gotifys:// (https)"),
    ("rocket://ops:PW@rc.corp.example/#alerts", "a self-hosted service over plain http: use rockets:// (https)"),
    ("ntfy://ops:PW@ntfy.corp.example/alerts", "a self-hosted service over plain http: use ntfys:// (https)"),
    ("mmosts://mm.corp.example/3ccdd113474722377935511fc85d3dd4", None), ("gotifys://g.corp.example/ABCDEFGHIJKLM", None),
    ("rockets://ops:PW@rc.corp.example/#alerts", None), ("ntfys://ops:PW@ntfy.corp.example/alerts", None),
    ("ntfy://alerts", None),  # ntfy.sh itself: https whatever the scheme
    ("mmost://127.0.0.1:8065/3ccdd113474722377935511fc85d3dd4", None),
])
def test_a_service_that_sends_in_clear_text_is_named_without_its_secrets(url, why):
    from stream.alerts.notify import cleartext_services

    lines = cleartext_services(build_apprise(url, None))
    assert lines == ([] if why is None else [lines[0]]) and all(line.endswith(": " + why) for line in lines), lines
    assert not any("PW@" in line for line in lines), lines


def test_notify_test_warns_of_each_service_that_sends_in_clear_text_and_they_do(tmp_path):
    """A bank's reviewer asked: is a webhook over plain http, or an SMTP login without TLS, said
    anywhere? It was not: `json://` and `mailto://` to an unknown host went out in clear text
    silently. Now `sentinel notify-test` (and the worker at start) names each such service, its
    secrets masked; the real servers here show the password did cross unencrypted."""
    import base64
    import os

    from aiosmtpd.smtp import AuthResult

    from workers import Hook, outward_address

    logins: list = []

    def authenticate(server, session, envelope, mechanism, data):
        logins.append(data)  # the login as it arrived: no TLS was ever started
        return AuthResult(success=True)

    # Servers on this machine's own address beyond loopback, as on another host: one on loopback
    # (a local relay) crosses no network and is not named.
    host = outward_address()
    if host is None:
        pytest.skip("this machine has no address beyond loopback: every server here would be a local relay")
    hook, local = Hook(host), Hook()
    try:
        with smtp_server(authenticator=authenticate, auth_require_tls=False, hostname=host) as (port, received):
            urls = [hook.url.replace("json://", f"json://ops:{CLEAR_PASSWORD}@"),
                    f"mailto://ops:{CLEAR_PASSWORD}@{host}:{port}?from=s@example.com&to=ops@example.com",
                    local.url,  # plain http on loopback: not named
                    f"jsons://ops:{CLEAR_PASSWORD}@127.0.0.1:{free_port()}/hook"]  # https (nothing listens): not named
            env = {**os.environ, "SENTINEL_BASE": "lexicon", "COLUMNS": "200", "SENTINEL_APPRISE_URLS": ",".join(urls)}
            env.pop("SENTINEL_APPRISE_CONFIG", None)
            result = subprocess.run([sys.executable, "-m", "sentinel.cli", "notify-test"], env=env, capture_output=True,
                                    text=True, timeout=120)
            wait_until(lambda: len(received) == 1)
    finally:
        hook.close()
        local.close()
    output = result.stdout + result.stderr
    warned = [line for line in result.stderr.splitlines() if line.startswith("warning: sends in clear text: ")]
    assert len(warned) == 2, output[-3000:]
    assert warned[0].startswith(f"warning: sends in clear text: json://ops:***@{host}:") and "use jsons://" in warned[0]
    assert warned[1].startswith(f"warning: sends in clear text: mailto://ops:***@{host}:{port}") and "in clear text" in warned[1]
    assert len(local.accepted) == 1, output[-3000:]  # the loopback hook was sent to, and not named
    assert CLEAR_PASSWORD not in output
    # What the warnings say is so: both servers read the password without TLS.
    assert base64.b64decode(hook.headers[0]["Authorization"].split()[1]).decode() == f"ops:{CLEAR_PASSWORD}"
    assert [login.password.decode() for login in logins] == [CLEAR_PASSWORD]


def test_a_text_posted_again_and_again_is_one_sample_and_the_next_different_post_takes_its_place():
    from stream.windows import distinct_samples

    copies = [Sample(f"c{i}", "The ETH team went silent  and the token keeps falling.", "negative", -0.9) for i in range(5)]
    others = [Sample("o1", "the ETH team went silent and the token keeps falling.", "negative", -0.8),
              Sample("o2", "dumping everything", "negative", -0.7), Sample("o3", "rug?", "negative", -0.6)]
    assert [s.id for s in distinct_samples(copies + others, 3)] == ["c0", "o2", "o3"]
    body = message.body(make_record(samples=copies + others), samples=3)
    assert body.count("team went silent") == 1 and "dumping everything" in body and "rug?" in body


def test_a_notice_says_how_to_act_on_it_with_its_incident_id_console_or_not():
    """A notice named its incident id but, without SENTINEL_CONSOLE_URL, no way to act on it: the
    firing ones now give the acknowledge and silence commands, the resolution the verdict's, each
    a command line that a shell splits back into the id and scope the CLI takes."""
    import shlex

    from stream.alerts.grouping import Notice

    member = {"scope": "channel:price talk/#1", "kind": "sentiment_drop", "firing": True, "severity": "warning",
              "onset": "2026-10-02T12:00:00Z", "metric": "negative_share", "value": 0.5, "baseline": 0.2}
    notice = Notice("cc08e3ebdfdb671ccafc", "channel:price talk/#1", "firing", "new", "warning", "2026-10-02T12:20:00Z",
                    "2026-10-02T12:00:00Z", False, [member])

    def command(text: str, prefix: str) -> list[str]:
        line = next(line for line in text.splitlines() if line.startswith(prefix))
        return shlex.split(line.split(": ", 1)[1])

    text = message.notice_body(notice)
    assert command(text, "acknowledge") == ["sentinel", "ack", "cc08e3ebdfdb671ccafc"]
    assert command(text, "silence") == ["sentinel", "silence", "channel:price talk/#1", "--for", "2h"]
    assert "verdict:" not in text
    # With the console's link too; it stays the body's last line.
    assert message.notice_body(notice, console_url="https://s.example.com").splitlines()[-3:] == [
        "acknowledge (no more reminders): sentinel ack cc08e3ebdfdb671ccafc",
        "silence its notices: sentinel silence 'channel:price talk/#1' --for 2h",
        "console: https://s.example.com/incidents/cc08e3ebdfdb671ccafc"]
    # Acknowledged already: no ack to offer. Rooted at `all`: a silence there would hold back every incident's notices.
    acked = message.notice_body(Notice(**{**notice.to_json(), "acked": "desk is on it"}))
    assert "sentinel ack" not in acked and "sentinel silence" in acked
    market = Notice(**{**notice.to_json(), "root_scope": "all", "market": True, "members": [{**member, "scope": "all"}]})
    assert "sentinel silence" not in message.notice_body(market) and "sentinel ack cc08e3ebdfdb671ccafc" in message.notice_body(market)
    # A scope the escaping changed (an @ made inert) would not match what the command silences: none offered.
    at = Notice(**{**notice.to_json(), "root_scope": "channel:@ops", "members": [{**member, "scope": "channel:@ops"}]})
    assert "sentinel silence" not in message.notice_body(at)
    over = message.notice_body(Notice(**{**notice.to_json(), "state": "resolved", "reason": "resolved"}))
    verdict = next(line for line in over.splitlines() if line.startswith("verdict: "))
    assert [shlex.split(c) for c in verdict.removeprefix("verdict: ").split(", or: ")] == [
        ["sentinel", "verdict", "cc08e3ebdfdb671ccafc", "real"], ["sentinel", "verdict", "cc08e3ebdfdb671ccafc", "false-alarm"]]
    assert "sentinel ack" not in over and "sentinel silence" not in over


def test_a_resolution_says_the_verdict_already_given_instead_of_asking_for_one():
    """A resolved notice asked "was it real?" of a team that had said so while the incident was
    open. Given one (as verdicts.give_verdict stores it), it says it, who gave it, when and why,
    and how to change it; the console's link stops asking. Not a verdict: asked, as before."""
    from stream.alerts.grouping import Notice

    member = {"scope": "asset:ETH", "kind": "sentiment_drop", "firing": False, "severity": "warning"}
    over = Notice("cc08e3ebdfdb671ccafc", "asset:ETH", "resolved", "resolved", "warning", "2026-03-04T13:10:00Z",
                  "2026-03-04T12:01:00Z", False, [member])
    given = {"verdict": "real", "by": "<!channel> dana", "via": "console", "reason": "desk saw\nthe @here sell-off", "at": "2026-03-04T12:40:00Z"}
    text = message.notice_body(over, verdict=given, console_url="https://s.example.com").splitlines()
    assert text[-2:] == [
        'verdict given: real, 2026-03-04T12:40:00Z (wall clock), by !channel dana via console ("desk saw the \uff20here sell-off"); '
        "to change it: sentinel verdict cc08e3ebdfdb671ccafc false-alarm",
        "console: https://s.example.com/incidents/cc08e3ebdfdb671ccafc"]
    assert not any(line.startswith("verdict: ") for line in text)
    bare = message.actions(over, {"verdict": "false-alarm"})
    assert bare == ["verdict given: false-alarm; to change it: sentinel verdict cc08e3ebdfdb671ccafc real"]
    for none in (None, {}, {"verdict": "maybe"}):
        asked = message.notice_body(over, verdict=none, console_url="https://s.example.com").splitlines()
        assert asked[-2:] == ["verdict: sentinel verdict cc08e3ebdfdb671ccafc real, or: sentinel verdict cc08e3ebdfdb671ccafc false-alarm",
                              "console: https://s.example.com/incidents/cc08e3ebdfdb671ccafc (real or a false alarm? record a verdict there)"]
    # While it fires, its later notices said nothing of it (and still offered ack and silence, as they
    # do): one line above them says it. None given: the notice is as it was.
    firing = Notice(**{**over.to_json(), "state": "firing", "reason": "update", "members": [{**member, "firing": True}]})
    assert message.actions(firing, {"verdict": "false-alarm", "by": "dana"}) == [
        "verdict given: false-alarm, by dana; to change it: sentinel verdict cc08e3ebdfdb671ccafc real",
        "acknowledge (no more reminders): sentinel ack cc08e3ebdfdb671ccafc", "silence its notices: sentinel silence asset:ETH --for 2h"]
    for none in (None, {}, {"verdict": "maybe"}):
        assert message.notice_body(firing, verdict=none) == message.notice_body(firing)
        assert "verdict" not in message.notice_body(firing, verdict=none)


def test_an_ungrouped_alert_offers_the_silence_that_holds_back_its_scope_and_kind():
    """Session 45's walkthrough: an alert of SENTINEL_ALERT_GROUPING=none named its id but no way to
    act on it, where an incident's notice gives commands. What applies without grouping is a silence
    of its scope and kind; ack and verdict act on the incident history, which only grouping writes."""
    import shlex

    from stream.alerts.silences import Silence, silence_request
    from stream.timefmt import parse_duration

    record = make_record(scope="channel:price talk/#1")
    text = message.body(record, console_url="https://s.example.com")
    line = next(line for line in text.splitlines() if line.startswith("silence its notices: "))
    argv = shlex.split(line.split(": ", 1)[1])
    assert argv[:2] == ["sentinel", "silence"] and argv[3:] == ["--kind", "sentiment_drop", "--for", "2h"]
    # The command, as `sentinel silence` stores it, holds back this alert and no other kind.
    made = Silence("s1", silence_request(argv[2], parse_duration(argv[-1])), argv[4], 7200.0, "", 0.0)
    assert made.matches(record.scope, record.kind, 1.0) and not made.matches(record.scope, "volume_spike", 1.0)
    lines = text.splitlines()
    assert lines.index(line) == lines.index("alert_id: a1b2c3d4e5f6a7b8c9d0") + 1 and lines[lines.index(line) + 1].startswith("console: ")
    assert "sentinel ack" not in text and "verdict" not in text
    assert "sentinel silence all --kind sentiment_drop --for 2h" in message.body(make_record(scope="all"))
    for scope in ("channel:*", "channel:@ops"):  # a glob, or a name the escaping changed: the command would miss it
        assert "sentinel silence" not in message.body(make_record(scope=scope)), scope
    assert "sentinel silence" not in message.body(make_record(state="resolved"))


def test_a_notice_member_says_on_how_many_posts_and_up_to_when_its_level_was_judged():
    """The demo's update at 13:01 said '330 posts per 1h since 2026-03-04T12:00:00Z against 10' over
    'as of 13:01': that level was judged at 12:02 on 11 posts. The line now says so."""
    from stream.alerts.grouping import Notice

    volume = {"scope": "asset:ETH", "kind": "volume_spike", "firing": True, "severity": "warning", "onset": "2026-03-04T12:00:00Z",
              "metric": "posts", "value": 330.0, "baseline": 9.58, "judged": "2026-03-04T12:02:00Z", "posts": 11}
    drop = {**volume, "kind": "sentiment_drop", "firing": False, "severity": "critical", "metric": "negative_share", "value": 0.779,
            "baseline": 0.197, "judged": "2026-03-04T13:01:00Z", "posts": 1}
    notice = Notice("inc1", "asset:ETH", "firing", "update", "critical", "2026-03-04T13:01:00Z", "2026-03-04T12:01:00Z", False,
                    [drop, volume])
    text = message.notice_body(notice)
    assert ("volume_spike on asset:ETH (warning, firing): 330 posts per 1h since 2026-03-04T12:00:00Z against 10 "
            "(11 posts by 2026-03-04T12:02:00Z)") in text.splitlines()
    assert ("sentiment_drop on asset:ETH (critical, resolved; when last firing: negative share 77.9% since 2026-03-04T12:00:00Z "
            "against 19.7% (1 post by 2026-03-04T13:01:00Z))") in text.splitlines()
    # A notice written before members carried them reads as it did.
    old = Notice(**{**notice.to_json(), "members": [{k: v for k, v in m.items() if k not in ("judged", "posts")} for m in notice.members]})
    assert "volume_spike on asset:ETH (warning, firing): 330 posts per 1h since 2026-03-04T12:00:00Z against 10" in message.notice_body(old).splitlines()


def test_a_notice_offers_no_silence_for_a_root_that_reads_as_a_glob():
    """Review 45: `sentinel silence` takes a glob (stream.windows.matches_scope), and a channel name
    is any string: the command offered for a root `channel:*` silenced every channel, one for
    `channel:[EN] general` also `channel:E general`. Not offered there, as for `all`."""
    from stream.alerts.grouping import Notice

    for root in ("channel:*", "channel:[EN] general", "source:forum?"):
        member = {"scope": root, "kind": "sentiment_drop", "firing": True, "severity": "warning",
                  "onset": "2026-10-02T12:00:00Z", "metric": "negative_share", "value": 0.5, "baseline": 0.2}
        notice = Notice("cc08e3ebdfdb671ccafc", root, "firing", "new", "warning", "2026-10-02T12:20:00Z",
                        "2026-10-02T12:00:00Z", False, [member])
        text = message.notice_body(notice)
        assert "sentinel silence" not in text and "sentinel ack cc08e3ebdfdb671ccafc" in text, root


def test_a_service_key_hashes_where_a_service_sends_not_its_password_or_parameters():
    """`service_key` (the daily cap's counter and the told marks' `svc:` name) hashed Apprise's whole
    URL: a weak SMTP password could be brute-forced from 64 bits of an unkeyed SHA-256 by whoever
    reads Redis, and an Apprise upgrade (2.x writes `retry=`, `wait=` and `optional=` into every
    URL; 1.9 wrote a mail's `from=`) or an edited parameter reset the day's cap counters and sent
    resolutions per severity. It now hashes scheme, user, host, port and path alone: the same
    across password, parameters and their rendering; different wherever a service sends elsewhere.
    Apprise 1.9.0 gave these URLs the same keys as the installed 2.3.0 (see docs/operations.md)."""
    import hashlib

    from stream.alerts.notify import build_apprise, service_key

    def key(url: str) -> str:
        (server,) = build_apprise(url, None)
        return service_key(server)

    mail = "mailto://alerts:weakpw@mail.example.org?to=risk@example.org"
    assert key(mail) == key("mailto://alerts:Rotated-2@mail.example.org?to=risk@example.org&format=text&from=alerts@mail.example.org")
    (server,) = build_apprise(mail, None)
    # Apprise 1.9's rendering of the same service (no retry/wait/optional, a `from=`): one key.
    older = server.url(privacy=False).replace("&retry=0&wait=0.5&optional=no", "") + "&from=alerts%40mail.example.org"
    assert older != server.url(privacy=False) and key(older) == key(mail)
    assert hashlib.sha256(server.url(privacy=False).encode()).hexdigest()[:16] != key(mail)  # session 50's key: unknown now
    hook = "json://user:secret@localhost:8080/hook"
    assert key(hook) == key("json://user:other@localhost:8080/hook?overflow=split&format=markdown")
    distinct = [mail, "mailto://alerts:weakpw@mail.example.org?to=desk@example.org", "mailto://other:weakpw@mail.example.org?to=risk@example.org",
                hook, "json://localhost:8080/hook", "json://user@localhost:8081/hook", "json://user@localhost:8080/hook2",
                "slack://T1234abcd/B1234abcd/abcdefghijklmnop1234", "slack://T1234abcd/B1234abcd/abcdefghijklmnop1235"]
    assert len({key(url) for url in distinct}) == len(distinct)
    assert all("weakpw" not in server.url(privacy=True) for server in build_apprise(mail, None))  # describe() stays log-safe


def test_a_service_key_leaves_out_a_password_apprise_writes_as_the_user_or_host():
    """Some plugins write their password where a URL's user or host goes (voip.ms and Twist
    `{password}:{email}`, Growl `{password}@{host}`, Free Mobile `{user}@{password}`): `service_key`
    hashed it there, unkeyed, a user-chosen password 64 bits of SHA-256 away from whoever reads
    Redis, and a rotated one moved the service. Left out like any password now."""
    from stream.alerts.notify import build_apprise, service_key

    def key(url: str) -> str:
        (server,) = build_apprise(url, None)
        return service_key(server)

    for one, other in [("voipms://weakpw:desk@example.org/15551234567/15557654321", "voipms://Rotated-2:desk@example.org/15551234567/15557654321"),
                       ("growl://weakpw@growl.example.org", "growl://Rotated-2@growl.example.org"),
                       ("freemobile://desk@weakpw", "freemobile://desk@Rotated-2")]:
        assert key(one) == key(other), (one, other)
    assert key("voipms://weakpw:desk@example.org/15551234567/15557654321") != key("voipms://weakpw:desk@example.org/15551234567/15550000000")


def test_a_service_key_tells_apart_services_whose_recipients_are_parameters_or_a_bare_channel():
    """`service_key` hashed the URL's scheme, user, host, port and path alone, and read a bare `#`
    as a fragment: two services that send to different people through one endpoint shared a key,
    so one daily cap count (each heard half) and one told mark (a channel that never heard the
    firing heard its resolution). Recipients written as parameters count now (Mattermost's `to=`,
    a mail's `cc=`/`bcc=`, an Apprise API's `tags=`, a custom webhook's `-name=`/`:name=`), and a
    Rocket.Chat channel; in any order or spelling (Mattermost's `channel=risk` is Apprise 2's
    `to=#risk`). Not a webhook's headers (`+Authorization=` is a secret) nor other parameters."""
    from stream.alerts.notify import build_apprise, service_key

    def key(url: str) -> str:
        (server,) = build_apprise(url, None)
        return service_key(server)

    pairs = [("mmost://mm.example.org/abcdefghijkl?channel=risk", "mmost://mm.example.org/abcdefghijkl?channel=ops"),
             ("rocket://bot:pw@chat.example.org/#risk", "rocket://bot:pw@chat.example.org/#ops"),
             ("mailto://a:pw@mail.example.org/risk@example.org?cc=head@example.org", "mailto://a:pw@mail.example.org/risk@example.org?cc=ops@example.org"),
             ("mailto://a:pw@mail.example.org/risk@example.org?bcc=head@example.org", "mailto://a:pw@mail.example.org/risk@example.org"),
             ("apprise://api.example.org/KEY?tags=risk", "apprise://api.example.org/KEY?tags=ops"),
             ("json://hooks.example.org/alert?-team=risk", "json://hooks.example.org/alert?-team=ops"),
             ("json://hooks.example.org/alert?:team=risk", "json://hooks.example.org/alert?:team=ops")]
    for one, other in pairs:
        assert key(one) != key(other), (one, other)
    same = [("mmost://mm.example.org/abcdefghijkl?channel=risk,ops", "mmost://mm.example.org/abcdefghijkl?to=%23ops,%23risk&format=markdown"),
            ("mailto://a:pw@mail.example.org/risk@example.org?cc=x@example.org,y@example.org", "mailto://a:other@mail.example.org/risk@example.org?cc=y@example.org,x@example.org&format=text"),
            ("json://hooks.example.org/alert?-team=risk", "json://hooks.example.org/alert?-team=risk&+Authorization=Bearer%20abc&overflow=split")]
    for one, other in same:
        assert key(one) == key(other), (one, other)


def test_a_service_key_tells_apart_webhooks_whose_headers_name_a_receiver_but_never_hashes_a_credential():
    """A custom webhook's `+` headers were left out of `service_key` (an `Authorization` one is a
    secret): two webhooks of one URL that a gateway routes by header (`+X-Team=risk`, `+X-Team=ops`)
    were one service, so since delivery sends each service a notice once (session 54) one team
    would hear nothing. A header counts now, name and value, unless its name says it is a
    credential (Authorization, X-Api-Key, Cookie, a token or signature ...): such a header is
    neither hashed nor named, so a webhook with only those keeps its session-53 key."""
    from stream.alerts.notify import _identity, build_apprise, service_key

    def key(url: str) -> str:
        (server,) = build_apprise(url, None)
        return service_key(server)

    base = "json://hooks.example.org/alert"
    distinct = [base, f"{base}?+X-Team=risk", f"{base}?+X-Team=ops", "xml://hooks.example.org/alert?+X-Team=risk",
                "form://hooks.example.org/alert?+X-Team=risk"]
    assert len({key(url) for url in distinct}) == len(distinct)
    for secret in ("+Authorization=Bearer%20weakpw", "+X-Api-Key=weakpw", "+Cookie=sid%3Dweakpw", "+X-Auth-Token=weakpw",
                   "+X-Hub-Signature=weakpw", "+Proxy-Authorization=Basic%20weakpw"):
        assert key(f"{base}?{secret}") == key(base), secret
        assert key(f"{base}?{secret}&+X-Team=risk") == key(f"{base}?+x-team=risk"), secret  # header names are case-insensitive
        for server in build_apprise(f"{base}?{secret}&+X-Team=risk", None):
            assert "weakpw" not in _identity(server) and secret[1:].split("=")[0].lower() not in _identity(server).lower()


def test_an_update_says_on_its_second_line_what_changed_since_the_last_notice():
    """Session 53: an update said the incident's state alone, and the team compared it with the
    previous notice to find the news. Its second line now says it (`grouping.since_last`, carried on
    the outbox entry); a reminder says when nothing changed; where the previous notice is unknown
    (an incident a session-53 worker told last) or the entry's field is not this version's shape,
    the body is as before."""
    from stream.alerts.grouping import Notice

    drop = {"scope": "asset:ETH", "kind": "sentiment_drop", "firing": True, "severity": "critical", "onset": "2026-03-04T12:00:00Z",
            "metric": "negative_share", "value": 0.75, "baseline": 0.197, "judged": "2026-03-04T12:12:00Z", "posts": 60}
    volume = {**drop, "kind": "volume_spike", "severity": "warning", "metric": "posts", "value": 330.0, "baseline": 9.58,
              "judged": "2026-03-04T12:10:00Z", "posts": 11}
    notice = Notice("inc1", "asset:ETH", "firing", "update", "critical", "2026-03-04T12:20:00Z", "2026-03-04T12:01:00Z", False, [drop, volume])
    since = {"at": "2026-03-04T12:05:00Z", "root": {"from": "asset:ETH", "to": "asset:ETH"}, "severity": {"from": "warning", "to": "critical"},
             "joined": [{"scope": "asset:ETH", "kind": "volume_spike"}, {"scope": "all", "kind": "sentiment_drop"}], "fired": [],
             "resolved": [{"scope": "channel:<!here>", "kind": "sentiment_drop"}],
             "escalated": [{"scope": "asset:ETH", "kind": "sentiment_drop", "from": "warning", "to": "critical"}]}
    lines = message.notice_body(notice, since_last=since).splitlines()
    assert lines[0] == "Incident on asset:ETH is firing (critical)."
    assert lines[1] == ("New since the last notice (2026-03-04T12:05:00Z): volume_spike on asset:ETH, sentiment_drop on all joined; "
                        "sentiment_drop on channel:!here resolved; severity warning -> critical (sentiment_drop on asset:ETH).")
    before = message.notice_body(notice).splitlines()
    assert lines[:1] + lines[2:] == before  # every other line as before
    # The volume spike, new since the last notice, shows its level as judged since that notice.
    assert ("volume_spike on asset:ETH (warning, firing): 330 posts per 1h since 2026-03-04T12:00:00Z against 10 "
            "(11 posts by 2026-03-04T12:10:00Z)") in lines
    # A reminder with nothing changed says so; the root taking over from a parent, a member firing
    # again, a member's own escalation and a long list are each said briefly.
    repeat = Notice(**{**notice.to_json(), "reason": "repeat"})
    quiet = {**since, "severity": {"from": "critical", "to": "critical"}, "joined": [], "resolved": [], "escalated": []}
    assert message.notice_body(repeat, since_last=quiet).splitlines()[1] == (
        "Unchanged since the last notice (2026-03-04T12:05:00Z): the same scopes firing, at the same severity.")
    many = {**quiet, "root": {"from": "channel:trading", "to": "asset:ETH"},
            "joined": [{"scope": f"asset:C{i}", "kind": "sentiment_drop"} for i in range(5)],
            "fired": [{"scope": "all", "kind": "volume_spike"}],
            "escalated": [{"scope": "all", "kind": "volume_spike", "from": "warning", "to": "critical"}]}
    assert message.notice_body(notice, since_last=many).splitlines()[1] == (
        "New since the last notice (2026-03-04T12:05:00Z): root now asset:ETH (was channel:trading); sentiment_drop on asset:C0, "
        "sentiment_drop on asset:C1, sentiment_drop on asset:C2 and 2 more joined; volume_spike on all firing again; "
        "volume_spike on all warning -> critical.")
    # Unknown, or not this version's shape, or not an update or reminder: no line, no failure.
    for odd in (None, {}, {"at": "2026-03-04T12:05:00Z", "joined": [{"kind": "x"}]}, {"at": 5}, {"at": "x", "root": "asset:ETH"}):
        assert message.notice_body(notice, since_last=odd).splitlines() == before, odd
    first = Notice(**{**notice.to_json(), "reason": "new"})
    assert message.notice_body(first, since_last=since) == message.notice_body(first)


def test_an_update_names_the_members_whose_severity_fell_as_eased():
    """A member whose severity fell (critical -> warning) while the incident stayed critical through
    another was named nowhere in the since-last line: the team still counted it critical. It is
    named as eased, three then a count, as each part is; an entry a session-54 worker wrote (no
    `eased`) reads as before, and a malformed one leaves the line out rather than fail the notice."""
    from stream.alerts.grouping import Notice

    drop = {"scope": "asset:ETH", "kind": "sentiment_drop", "firing": True, "severity": "critical", "onset": "2026-03-04T12:00:00Z",
            "metric": "negative_share", "value": 0.75, "baseline": 0.197}
    notice = Notice("inc1", "asset:ETH", "firing", "repeat", "critical", "2026-03-04T16:20:00Z", "2026-03-04T12:01:00Z", False, [drop])
    since = {"at": "2026-03-04T12:20:00Z", "root": {"from": "asset:ETH", "to": "asset:ETH"}, "severity": {"from": "critical", "to": "critical"},
             "joined": [], "fired": [], "resolved": [], "escalated": [],
             "eased": [{"scope": "channel:trading", "kind": "sentiment_drop", "from": "critical", "to": "warning"}]}
    assert message.notice_body(notice, since_last=since).splitlines()[1] == (
        "New since the last notice (2026-03-04T12:20:00Z): eased: sentiment_drop on channel:trading critical -> warning.")
    many = {**since, "resolved": [{"scope": "all", "kind": "volume_spike"}],
            "eased": [{"scope": f"asset:C{i}", "kind": "sentiment_drop", "from": "critical", "to": "warning"} for i in range(5)]}
    assert message.notice_body(notice, since_last=many).splitlines()[1] == (
        "New since the last notice (2026-03-04T12:20:00Z): volume_spike on all resolved; eased: sentiment_drop on asset:C0 critical -> "
        "warning, sentiment_drop on asset:C1 critical -> warning, sentiment_drop on asset:C2 critical -> warning and 2 more.")
    older = {k: v for k, v in since.items() if k != "eased"}  # a session-54 worker's entry
    assert message.notice_body(notice, since_last=older).splitlines()[1].startswith("Unchanged since the last notice")
    before = message.notice_body(notice).splitlines()
    assert message.notice_body(notice, since_last={**since, "eased": [{"scope": "x"}]}).splitlines() == before


def test_a_service_key_never_hashes_a_credential_under_a_name_the_name_check_misses():
    """Since session 54 a webhook's `+` headers count in `service_key` unless their names say they
    carry a credential. A signature under a short name (`X-Sig`, `X-Hmac-Sha256`), a `X-Jwt`, or a
    bearer token under a name of the gateway's own (`+X-Gateway=Bearer ...`) named none of the
    words, so the secret was hashed into the key that the daily cap's and told marks' Redis keys
    carry (a weak one brute-forced from it by whoever reads Redis), and rotating it moved the
    service. A header whose value starts with an authentication scheme is a credential whatever
    its name; a receiver header (`X-Team`, `X-Desk`) still counts."""
    from stream.alerts.notify import _identity, build_apprise, service_key

    def key(url: str) -> str:
        (server,) = build_apprise(url, None)
        return service_key(server)

    base = "json://hooks.example.org/alert?+X-Team=risk"
    for secret in ("+X-Sig=weakpw", "+X-Hmac-Sha256=weakpw", "+X-Jwt=weakpw", "+X-Gateway=Bearer%20weakpw",
                   "+X-Upstream=basic%20d2Vha3B3", "+X-Relay=Token%20weakpw", "+X-Pwd=weakpw"):
        assert key(f"{base}&{secret}") == key(base), secret
        for server in build_apprise(f"{base}&{secret}", None):
            assert "weakpw" not in _identity(server) and "d2Vha3B3" not in _identity(server), secret
    for receiver in ("+X-Desk=ops", "+X-Route=tokenless", "+X-Team-Name=Basically"):
        assert key(f"{base}&{receiver}") != key(base), receiver
