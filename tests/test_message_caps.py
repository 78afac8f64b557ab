"""A notice body capped to what its service takes (message.fit_body, notify.body_limit); pure, no servers."""

from __future__ import annotations

from stream.alerts import message
from stream.alerts.grouping import Notice
from stream.alerts.incidents import AlertRecord
from stream.alerts.notify import body_for, body_limit, build_apprise, capped_limit, fitted
from stream.windows import Sample

CONSOLE = "https://sentinel.example.com"
MEMBER = {"kind": "sentiment_drop", "firing": True, "severity": "critical", "onset": "2026-03-04T12:00:00Z",
          "metric": "negative_share", "value": 0.75, "baseline": 0.2}


def record(scope: str, n: int) -> AlertRecord:
    return AlertRecord(alert_id=f"a{scope}", scope=scope, kind="sentiment_drop", state="firing", severity="critical",
                       window_start="2026-03-04T12:00:00Z", window_end="2026-03-04T13:00:00Z", value=0.75, baseline=0.2, zscore=6.8,
                       posts=57, sample_post_ids=[], notified=False, fired_at="2026-03-04T13:02:00Z", metric="negative_share",
                       baseline_posts=1200, window="1h",
                       samples=[Sample(f"{scope}-{i}", f"{scope} post {i} " + "dumping " * 20, "negative", -0.9) for i in range(n)])


def market_wide(members: int = 60) -> tuple[Notice, list[AlertRecord]]:
    scopes = ["all", *(f"asset:COIN{i:02d}" for i in range(members))]
    notice = Notice("cc08e3ebdfdb671ccafc", "all", "firing", "update", "critical", "2026-03-04T13:00:00Z", "2026-03-04T12:00:00Z", True,
                    [{**MEMBER, "scope": s} for s in scopes])
    return notice, [record("all", 3), *(record(s, 3) for s in scopes[1:4])]


def body(maxlen: int = 0, **kw) -> str:
    notice, records = market_wide(**kw)
    since = {"at": "2026-03-04T12:30:00Z", "joined": [{"scope": "asset:COIN00", "kind": "sentiment_drop"}]}
    text = message.notice_body(notice, records, samples_shown=10, console_url=CONSOLE, since_last=since)
    return message.fit_body(text, maxlen)


def head_lines(text: str) -> list[str]:
    """The lines that must arrive: what moved and since when, the root's level, the id, the actions, the console link."""
    lines = text.splitlines()
    return [line for line in lines if not line.startswith("- ") and not line.startswith("... and ")
            and not line.endswith("):") and line not in ("", "Sample posts:")]


def test_a_body_that_fits_is_left_as_it_is() -> None:
    full = body()
    assert message.fit_body(full, len(full)) == full and message.fit_body(full, 0) == full


def test_a_long_notice_keeps_its_head_and_counts_what_it_leaves_out() -> None:
    full = body()
    capped = body(2000)  # Discord's limit
    assert len(capped) <= 2000 < len(full)
    assert head_lines(capped) == head_lines(full)
    lines = capped.splitlines()
    assert lines[0] == "Incident on all is firing (critical)." and lines[1].startswith("New since the last notice")
    assert f"console: {CONSOLE}/incidents/cc08e3ebdfdb671ccafc" in lines and "incident_id: cc08e3ebdfdb671ccafc" in lines
    # Every sample went first (10 of them), then the members from the last.
    assert "... and 10 more sample posts (see the console link)" in lines and not [x for x in lines if x.startswith("- [")]
    kept = [x for x in lines if x.startswith("- ")]
    (more,) = [x for x in lines if x.startswith("... and ") and "related scope" in x]
    assert more == f"... and {60 - len(kept)} more related scopes (see the console link)" and kept
    assert kept == [x for x in full.splitlines() if x.startswith("- ") and not x.startswith("- [")][:len(kept)]
    # The count sits where the list was cut, before the lines that follow the list.
    assert lines.index(more) == lines.index(kept[-1]) + 1


def test_samples_go_before_any_member_and_an_emptied_groups_header_with_them() -> None:
    full = body()
    capped = message.fit_body(full, len(full) - 300)  # two samples' worth
    lines = capped.splitlines()
    assert [x for x in lines if x.startswith("- ") and not x.startswith("- [")] == [
        x for x in full.splitlines() if x.startswith("- ") and not x.startswith("- [")]
    assert "... and 2 more sample posts (see the console link)" in lines
    assert lines[-1] == "... and 2 more sample posts (see the console link)"
    # A group's header stays only while a sample of it does.
    headers = [i for i, x in enumerate(lines) if x.endswith("):") and not x.startswith("- ")]
    assert all(lines[i + 1].startswith("- [") for i in headers)


def test_without_a_console_link_the_count_says_why_and_the_last_resort_is_a_cut() -> None:
    notice, records = market_wide()
    text = message.notice_body(notice, records, samples_shown=10)
    capped = message.fit_body(text, 1500)
    assert len(capped) <= 1500 and "more related scopes (not shown: too long for this service)" in capped
    tiny = message.fit_body(text, 50)
    assert len(tiny) <= 50 and tiny.endswith("…") and tiny.startswith("Incident on all is firing")


def test_an_ungrouped_alerts_samples_are_capped_too() -> None:
    text = message.body(record("asset:ETH", 3), samples=3, console_url=CONSOLE)
    capped = message.fit_body(text, len(text) - 100)
    assert capped.splitlines()[-1] == "... and 1 more sample post (see the console link)"
    assert len(capped) <= len(text) - 100 and f"console: {CONSOLE}/scope/asset:ETH" in capped


def test_the_limit_is_the_services_own_and_an_html_mail_is_measured_as_sent() -> None:
    slack, pager, hook, mail = build_apprise("slack://T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7FQ pagerduty://key@token "
                                             "json://127.0.0.1:9/x mailto://u:p@example.com?format=html", None)
    assert body_limit(slack, "t") == slack.body_maxlen > 0 and body_limit(hook, "t") == hook.body_maxlen
    # PagerDuty has no title field: Apprise puts the title at the body's head, and its room is the body's.
    assert body_limit(pager, "x" * 50) == pager.body_maxlen - 52
    text = body()
    html, _ = body_for(mail, text, 3000)
    assert len(html) <= 3000 and "more related scopes (see the console link)" in html
    plain, _ = body_for(hook, text, 3000)
    assert len(plain) <= 3000 and body_for(hook, text)[0] == text  # no limit: as it is (the daily report gives its limit since session 56)


def test_past_the_limit_with_no_item_left_the_long_lines_are_cut_not_the_actions_or_the_console_link() -> None:
    """A PagerDuty-sized body (1,024 less the title) of an update with a long since-last line and an
    acknowledgement: with its samples and related scopes left out it was still too long, and the
    cut at its end took the console link (which the count line points to) and half a command."""
    scopes = ["asset:ETH", *(f"channel:telegram/crypto-signals-room-{i:03d}" for i in range(12))]
    notice = Notice("cc08e3ebdfdb671ccafc", "asset:ETH", "firing", "update", "critical", "2026-03-04T13:00:00Z", "2026-03-04T12:00:00Z",
                    False, [{**MEMBER, "scope": s} for s in scopes])
    since = {"at": "2026-03-04T12:30:00Z", "joined": [{"scope": s, "kind": "sentiment_drop"} for s in scopes[1:6]],
             "severity": {"from": "warning", "to": "critical"},
             "escalated": [{"scope": "asset:ETH", "kind": "sentiment_drop", "from": "warning", "to": "critical"}]}
    acks = [{"at": "2026-03-04T12:40:00Z", "by": "alice", "via": "cli",
             "reason": "desk is on it, hedging the ETH book; see the runbook for the exchange outage and the incident channel"}]
    text = message.notice_body(notice, [record("asset:ETH", 3)], samples_shown=3, console_url=CONSOLE, since_last=since, acks=acks)
    (pager,) = build_apprise("pagerduty://key@token", None)
    for limit in (body_limit(pager, message.notice_title(notice)), 700):
        capped = message.fit_body(text, limit)
        lines = capped.splitlines()
        assert len(capped) <= limit
        assert lines[0] == "Incident on asset:ETH is firing (critical)."
        for must in ("incident_id: cc08e3ebdfdb671ccafc", "acknowledge (no more reminders): sentinel ack cc08e3ebdfdb671ccafc",
                     "silence its notices: sentinel silence asset:ETH --for 2h", f"console: {CONSOLE}/incidents/cc08e3ebdfdb671ccafc"):
            assert must in lines, (limit, capped)
        # What was cut says so, and begins as it did.
        (since_line,) = [x for x in lines if x.startswith("New since the last notice")]
        assert since_line.endswith("…")
    # Measured as sent: the HTML part of a mail.
    capped = message.fit_body(text, 900, size=lambda t: len(message.html_text(t)))
    assert len(message.html_text(capped)) <= 900 and f"console: {CONSOLE}/incidents/cc08e3ebdfdb671ccafc" in capped.splitlines()


def test_a_notice_of_thousands_of_scopes_is_fitted_in_a_few_measures() -> None:
    """The number of items kept is found by bisection: one by one from the last, 2,000 scopes
    measured the whole text (as HTML, for a mail) some 2,000 times, seconds for each service and attempt."""
    notice, records = market_wide(2000)
    text = message.notice_body(notice, records, samples_shown=10, console_url=CONSOLE)
    measured = []

    def size(t: str) -> int:
        measured.append(t)
        return len(t)

    capped = message.fit_body(text, 2000, size=size)
    assert len(capped) <= 2000 and len(measured) < 60, len(measured)
    # The same as dropping them one by one: the most that fit, the rest counted.
    kept = [x for x in capped.splitlines() if x.startswith("- ")]
    (more,) = [x for x in capped.splitlines() if "more related scopes" in x]
    full = text.splitlines()
    following = full[full.index(kept[-1]) + 1]
    assert len(capped.replace(more, f"{following}\n... and {2000 - len(kept) - 1} more related scopes (see the console link)")) > 2000



def test_discord_counts_the_title_in_its_2000() -> None:
    """Discord sends the title and the body as one `content` (`title\r\nbody`), 2,000 characters at
    most, and Apprise says so (`overflow_amalgamate_title`): a notice fitted to 2,000 alone went out
    with its title, 130 characters, past it (Discord refuses such a message), and under
    `?overflow=truncate` Apprise cut its end."""
    from apprise import OverflowMode

    (discord,) = build_apprise("discord://1234567/abcdefgabcdefgabcdef", None)
    for members in (30, 60, 200):
        notice, records = market_wide(members)
        head = message.notice_title(notice)
        text = message.notice_body(notice, records, samples_shown=10, console_url=CONSOLE)
        fitted, body_format = body_for(discord, text, body_limit(discord, head))
        assert len(f"{head}\r\n{fitted}") <= discord.body_maxlen
        (cut,) = discord._build_send_calls(body=fitted, title=head, body_format=body_format, overflow=OverflowMode.TRUNCATE)
        assert cut["body"] == fitted and cut["title"] == head


def test_a_service_apprise_converts_for_is_measured_as_converted() -> None:
    """Apprise converts a plain body to the service's own format before it holds it to `body_maxlen`:
    Telegram's HTML (each line break `\\r\\n`, the title in `<b>`), Google Chat's Markdown (`_`
    escaped) and sends that (the default overflow mode, `upstream`). Measured as plain text, a
    fitted notice reached them 36 and 18 characters past it."""
    for server in build_apprise("tgram://123456789:abcdefg_hijklmnop/12315544/ gchat://workspace/key/token", None):
        for members in range(5, 80, 3):
            notice, records = market_wide(members)
            head = message.notice_title(notice)
            text = message.notice_body(notice, records, samples_shown=10, console_url=CONSOLE)
            fitted, body_format = body_for(server, text, body_limit(server, head), head)
            # What Server.notify hands the service's send(), as Apprise builds it.
            (sent,) = server._build_send_calls(body=fitted, title=head, body_format=body_format)
            assert len(sent["body"]) <= server.body_maxlen, (server.service_name, members, len(sent["body"]))


def test_the_operators_body_max_caps_a_service_below_its_own_limit_never_above() -> None:
    """SENTINEL_NOTIFY_BODY_MAX (since session 56): Slack takes 35,000 characters but advises some
    4,000 for reading, and there was no way to ask for shorter bodies. The least of the service's
    limit and the setting, through the same fitting: the head, the actions and the console link kept."""
    assert [capped_limit(35_000, 4_000), capped_limit(2_000, 4_000), capped_limit(0, 4_000), capped_limit(1_024, 0), capped_limit(0, 0)] == [
        4_000, 2_000, 4_000, 1_024, 0]
    slack, discord = build_apprise("slack://T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7FQ discord://1234567/abcdefgabcdefgabcdef", None)
    notice, records = market_wide(400)
    head = message.notice_title(notice)
    text = message.notice_body(notice, records, samples_shown=10, console_url=CONSOLE)
    whole, _ = fitted(slack, head, text)
    capped, _ = fitted(slack, head, text, 4_000)
    assert len(capped) <= 4_000 < len(whole) <= slack.body_maxlen
    assert head_lines(capped) == head_lines(text)
    assert f"console: {CONSOLE}/incidents/cc08e3ebdfdb671ccafc" in capped.splitlines()
    assert any(line.startswith("... and ") and "more related scopes (see the console link)" in line for line in capped.splitlines())
    # Discord's own 2,000 (less its title) is below the setting: it stays the limit.
    assert fitted(discord, head, text, 4_000) == fitted(discord, head, text)


def test_where_fitting_raises_the_body_is_still_one_of_the_services_format_and_it_is_logged(caplog) -> None:
    """Fitting may fail (a plugin's bug in its sizing): the notice goes out unfitted rather than not
    at all. It went as plain text to a mail service that sends HTML too, for Apprise to convert its
    own way (no line wrapped) or, under Apprise 1.9, not at all. The fallback is the service's own
    format, escaped (`message.html_text`), and the failure is logged with the service's name."""
    import logging

    def broken(text: str, limit: int, size) -> str:
        raise RuntimeError("a plugin's sizing bug")

    mail, hook = build_apprise("mailto://u:p@example.com?format=html json://127.0.0.1:9/x", None)
    text = "Incident on channel:<b>x</b> & co is firing (critical).\nconsole: https://s.example.com/incidents/i1"
    with caplog.at_level(logging.WARNING, logger="stream.alerts.notify"):
        sent, body_format = fitted(mail, "[CRITICAL] x", text, 100, fit=broken)
    assert (sent, body_format) == (message.html_text(text), "html")
    assert "&lt;b&gt;x&lt;/b&gt; &amp; co" in sent and "<br/>console: " in sent
    said = [r for r in caplog.records if "could not fit" in r.getMessage()]
    assert said and said[0].service == mail.service_name and said[0].error == "RuntimeError" and said[0].format == "html"
    assert fitted(hook, "[CRITICAL] x", text, 100, fit=broken) == (text, "text")  # plain text stays plain
