"""The operators' audit log (stream/alerts/audit.py) on a real redis-server: every acknowledgement,
silence and lift, by whom, through what, read back across incidents by the command line."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
from typing import Any

import pytest
import redis

from stream.alerts import audit
from stream.alerts.silences import _REMOVE, add_silence, list_silences, purge_expired, remove_silence
from stream.keys import AUDIT_KEY, INCIDENTS_INDEX_KEY, INCIDENTS_KEY, SILENCE_AUTHORS_KEY, SILENCES_KEY, STATS_KEY
from stream.timefmt import epoch, iso, shown


def cli(args: list[str], redis_url: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "REDIS_URL": redis_url, "SENTINEL_BASE": "lexicon"}
    return subprocess.run([sys.executable, "-m", "sentinel.cli", *args], env=env, capture_output=True, text=True, timeout=120)


def lines(done: subprocess.CompletedProcess) -> list[dict[str, Any]]:
    assert done.returncode == 0, done.stderr[-2000:]
    return [json.loads(line) for line in done.stdout.splitlines()]


def run(redis_url: str, action):
    async def go():
        client = redis.asyncio.Redis.from_url(redis_url, decode_responses=True)
        try:
            return await action(client)
        finally:
            await client.aclose()

    return asyncio.run(go())


def test_the_command_line_logs_who_acknowledged_silenced_and_lifted_what(redis_server):
    r = redis.Redis.from_url(redis_server, decode_responses=True)
    r.flushdb()
    r.hset(INCIDENTS_KEY, "inc7", json.dumps({"incident_id": "inc7", "root_scope": "asset:BTC", "state": "open", "acked": None, "opened": 100}))
    started = time.time()
    assert cli(["silence", "asset:eth", "--for", "2h", "--kind", "volume_spike", "--reason", "listing day", "--by", "erin"], redis_server).returncode == 0
    (made,) = lines(cli(["silences", "--json"], redis_server))
    assert (made["by"], made["via"]) == ("erin", "cli")
    assert cli(["ack", "inc7", "--by", "dana", "--reason", "desk on it"], redis_server).returncode == 0
    assert cli(["unsilence", made["id"], "--by", "frank"], redis_server).returncode == 0
    assert cli(["unsilence", made["id"], "--by", "frank"], redis_server).returncode != 0  # gone: nothing more is logged
    assert cli(["ack", "nope", "--by", "dana"], redis_server).returncode != 0

    logged = lines(cli(["audit", "--json"], redis_server))
    assert [(e["action"], e["by"], e["via"], e["target"], e["scope"]) for e in logged] == [
        ("unsilence", "frank", "cli", made["id"], "asset:ETH"),
        ("acknowledge", "dana", "cli", "inc7", "asset:BTC"),
        ("silence", "erin", "cli", made["id"], "asset:ETH"),
    ]
    silence, ack = logged[2], logged[1]
    assert (silence["kind"], silence["reason"], silence["until"]) == ("volume_spike", "listing day", shown(made["until"]))
    assert ack["reason"] == "desk on it" and logged[0]["until"] == silence["until"]
    for entry in logged:  # the Redis server's clock, when it was done
        assert started - 2 <= epoch(entry["at"]) <= time.time() + 2, entry
    assert [e["action"] for e in lines(cli(["audit", "--json", "--by", "dana"], redis_server))] == ["acknowledge"]
    assert [e["by"] for e in lines(cli(["audit", "--json", "--action", "silence", "--action", "unsilence"], redis_server))] == ["frank", "erin"]
    assert lines(cli(["audit", "--json", "--limit", "1"], redis_server))[0]["action"] == "unsilence"
    assert lines(cli(["audit", "--json", "--since", "0s"], redis_server)) == []
    assert len(lines(cli(["audit", "--json", "--since", "3000000d"], redis_server))) == 3
    table = cli(["audit"], redis_server)
    rows = [row for row in table.stdout.splitlines() if "(cli)" in row]
    assert table.returncode == 0 and len(rows) == 3 and "frank" in rows[0] and "inc7" in rows[1] and "erin" in rows[2], table.stdout
    for bad, says in ((["--action", "mute"], "--action"), (["--since", "a week"], "--since")):
        refused = cli(["audit", *bad], redis_server)
        assert refused.returncode != 0 and says in refused.stderr and "Traceback" not in refused.stderr


def test_the_command_line_says_when_its_limit_left_older_entries_out(redis_server):
    """`sentinel audit --limit N` listed the newest N as if they were the whole span: a busy week's
    200, or a daily `--json` export cut short, with nothing said. It says on stderr that older
    entries exist, from before which, and stdout keeps one entry a line."""
    r = redis.Redis.from_url(redis_server, decode_responses=True)
    r.flushdb()
    for i in range(3):
        r.xadd(AUDIT_KEY, audit.entry("acknowledge", by="dana", via="cli", target=f"inc{i}", scope="all", reason=""))
    cut = cli(["audit", "--json", "--limit", "2"], redis_server)
    shown_ = lines(cut)
    assert [e["target"] for e in shown_] == ["inc2", "inc1"]
    said = " ".join(cut.stderr.split())
    assert f"only the newest 2 shown: the last 7d holds older entries, from before {shown_[-1]['at']}" in said, cut.stderr
    table = cli(["audit", "--limit", "2"], redis_server)
    assert table.returncode == 0 and "only the newest 2 shown" in " ".join(table.stderr.split()), table.stderr
    assert "inc0" not in table.stdout and "inc1" in table.stdout
    for args in (["--limit", "3"], ["--by", "dana"], ["--limit", "2", "--by", "erin"]):
        whole = cli(["audit", "--json", *args], redis_server)
        assert whole.returncode == 0 and "only the newest" not in whole.stderr, (args, whole.stderr)
    assert len(lines(cli(["audit", "--json", "--limit", "3"], redis_server))) == 3


def test_reading_filters_across_chunks_and_stops_at_the_limit_and_the_start(redis_server, monkeypatch):
    r = redis.Redis.from_url(redis_server, decode_responses=True)
    r.flushdb()
    for i in range(20):
        who = "dana" if i % 4 == 0 else "erin"
        r.xadd(AUDIT_KEY, audit.entry("acknowledge", by=who, via="cli", target=f"inc{i}", scope="all", reason=""), id=f"{1_000_000 + i * 1000}-0")
    monkeypatch.setattr(audit, "READ_CHUNK", 3)  # filters applied across many reads
    dana = run(redis_server, lambda c: audit.read(c, by="dana"))
    assert [e["target"] for e in dana] == ["inc16", "inc12", "inc8", "inc4", "inc0"]
    assert [e["target"] for e in run(redis_server, lambda c: audit.read(c, by="dana", limit=2))] == ["inc16", "inc12"]
    # From 1,008 s on (wall clock): inc8 onwards, the entry at the start included.
    assert [e["target"] for e in run(redis_server, lambda c: audit.read(c, since=1008, by="dana"))] == ["inc16", "inc12", "inc8"]
    # Before 1,008 s (wall clock): the entry at the end left out, for the next span to take.
    assert [e["target"] for e in run(redis_server, lambda c: audit.read(c, until=1008, by="dana"))] == ["inc4", "inc0"]
    assert [e["target"] for e in run(redis_server, lambda c: audit.read(c, since=1004, until=1008.5))] == [f"inc{i}" for i in (8, 7, 6, 5, 4)]
    assert run(redis_server, lambda c: audit.read(c, until=-5)) == []
    # A bound between two milliseconds (`--until`/`--from ...:08.0005Z`): the span before it and the
    # one from it split the entries, none in both (the one at 1,008.000 s is before the bound).
    before = run(redis_server, lambda c: audit.read(c, until=1008.0005, limit=100))
    after = run(redis_server, lambda c: audit.read(c, since=1008.0005, limit=100))
    assert [e["target"] for e in after][-1] == "inc9" and "inc8" in [e["target"] for e in before], (before, after)
    assert dana[-1]["at"] == "1970-01-01T00:16:40.000Z"  # always to the millisecond: one format parses every entry
    # A span longer than the epoch reads everything (a negative stream id would be an error).
    assert len(run(redis_server, lambda c: audit.read(c, since=-1e12))) == 20
    assert run(redis_server, lambda c: audit.read(c, actions=["silence"])) == []


def test_an_auditor_exports_one_past_day_by_from_and_until(redis_server):
    """An auditor asks months later what operators did on one day. `--since` only counted back
    from now, so a day's export was everything since then, cut by hand. `--from`/`--until`
    (wall clock, ISO 8601) give the day alone: from its first millisecond, up to but not including
    the next day's, so consecutive days' exports neither overlap nor miss an entry."""
    r = redis.Redis.from_url(redis_server, decode_responses=True)
    r.flushdb()
    day = epoch("2026-09-01T00:00:00Z")
    for target, at in (("before", day - 0.001), ("first", day), ("last", day + 86399.999), ("next", day + 86400)):
        r.xadd(AUDIT_KEY, audit.entry("acknowledge", by="dana", via="cli", target=target, scope="all", reason=""), id=f"{round(at * 1000)}-0")
    that_day = ["--from", "2026-09-01T00:00:00Z", "--until", "2026-09-02T00:00:00Z"]
    assert [e["target"] for e in lines(cli(["audit", "--json", *that_day], redis_server))] == ["last", "first"]
    assert [e["target"] for e in lines(cli(["audit", "--json", "--from", "2026-09-02"], redis_server))] == ["next"]
    # --since counts back from --until when there is no --from: the day before it.
    assert [e["target"] for e in lines(cli(["audit", "--json", "--since", "1d", "--until", "2026-09-02"], redis_server))] == ["last", "first"]
    table = cli(["audit", *that_day], redis_server)
    assert table.returncode == 0 and "2026-09-01T00:00:00Z to 2026-09-02T00:00:00Z" in " ".join(table.stdout.split()), table.stdout
    quiet = cli(["audit", "--from", "2026-08-01", "--until", "2026-08-02"], redis_server)
    assert quiet.returncode == 0 and "no actions in the audit log from 2026-08-01T00:00:00Z to 2026-08-02T00:00:00Z" in " ".join(quiet.stdout.split())
    for bad, says in ((["--from", "2026-13-01"], "--from 2026-13-01"), (["--until", "yesterday"], "--until yesterday: not an ISO 8601 time"),
                      (["--from", "2026-09-02", "--until", "2026-09-01"], "is after --until"), (["--from", "2026-09-01", "--since", "1d"], "not both"),
                      # The day written twice, read as "through that day": [from, until) holds no time, not a quiet day.
                      (["--from", "2026-09-01", "--until", "2026-09-01"], "--until is left out")):
        refused = cli(["audit", *bad], redis_server)
        assert refused.returncode != 0 and says in " ".join(refused.stderr.split()) and "Traceback" not in refused.stderr, (bad, refused.stderr)


def test_the_log_is_trimmed_to_its_latest_entries(redis_server, monkeypatch):
    r = redis.Redis.from_url(redis_server, decode_responses=True)
    r.flushdb()
    monkeypatch.setattr(audit, "AUDIT_ENTRIES", 10)

    async def many(client):
        return [(await add_silence(client, "asset:BTC", 60, None, "", by="erin", via="cli")).id for _ in range(300)]

    made = run(redis_server, many)
    # Approximate trimming drops whole stream nodes (100 entries by default), never one of the latest 10.
    assert 10 <= r.xlen(AUDIT_KEY) <= 110
    assert made[-10:] == [f["target"] for _, f in r.xrange(AUDIT_KEY)][-10:]
    assert len(run(redis_server, lambda c: audit.read(c, limit=1000))) == r.xlen(AUDIT_KEY)


def test_a_silence_is_stored_as_older_versions_read_it_and_its_author_apart(redis_server):
    """During a rolling upgrade older workers read the same hash with `Silence(**fields)`: one field
    more would make them refuse every silence. The author is kept in its own hash, lifted with it."""
    r = redis.Redis.from_url(redis_server, decode_responses=True)
    r.flushdb()
    made = run(redis_server, lambda c: add_silence(c, "asset:*", 3600, None, "maintenance", by="erin", via="console"))
    # The fields of the version before (session 35), written out: not the constant the code uses.
    assert set(json.loads(r.hget(SILENCES_KEY, made.id))) == {"id", "scope", "kind", "until", "reason", "created_at"}
    assert json.loads(r.hget(SILENCE_AUTHORS_KEY, made.id)) == {"by": "erin", "via": "console"}
    assert 3500 < r.ttl(SILENCE_AUTHORS_KEY) <= 3660  # goes with the silences
    # A silence stored by a later version with a field this one does not know, and one made before
    # authors were kept: both read.
    later = json.loads(r.hget(SILENCES_KEY, made.id)) | {"id": "later1", "note": "from the future"}
    earlier = json.loads(r.hget(SILENCES_KEY, made.id)) | {"id": "early1"}
    r.hset(SILENCES_KEY, mapping={"later1": json.dumps(later), "early1": json.dumps(earlier)})
    found = {s.id: s for s in run(redis_server, list_silences)}
    assert set(found) == {made.id, "later1", "early1"} and found["early1"].by == "" and found[made.id].by == "erin"

    # Two operators lift it at once: the one whose script removed it logs it.
    fields = audit.flat(audit.entry("unsilence", by="frank", via="cli", target=made.id, scope="asset:*", reason=""))
    keys = [SILENCES_KEY, SILENCE_AUTHORS_KEY, AUDIT_KEY]
    assert r.eval(_REMOVE, 3, *keys, made.id, 100, *fields) == 1
    assert r.eval(_REMOVE, 3, *keys, made.id, 100, *fields) == 0
    assert [f["action"] for _, f in r.xrange(AUDIT_KEY)] == ["silence", "unsilence"]
    assert r.hget(SILENCE_AUTHORS_KEY, made.id) is None
    assert run(redis_server, lambda c: remove_silence(c, made.id, by="gus")) is False
    assert r.xlen(AUDIT_KEY) == 2

    # A version from before authors were kept lifts a silence (HDEL of the silence alone): its
    # author is dropped at the next purge, a live silence's author kept.
    kept = run(redis_server, lambda c: add_silence(c, "all", 3600, None, "", by="hana"))
    gone = run(redis_server, lambda c: add_silence(c, "asset:BTC", 3600, None, "", by="ivan"))
    r.hdel(SILENCES_KEY, gone.id, "later1", "early1")
    assert run(redis_server, purge_expired) == 0
    assert set(r.hkeys(SILENCE_AUTHORS_KEY)) == {kept.id}


def test_verdicts_are_kept_with_their_incident_and_counted_into_the_alerts_precision(redis_server):
    r = redis.Redis.from_url(redis_server, decode_responses=True)
    r.flushdb()
    member = {"firing": False, "severity": "warning"}
    for ident, root, kinds in (("inc1", "asset:BTC", ["sentiment_drop"]), ("inc2", "asset:ETH", ["volume_spike"]),
                               ("inc3", "all", ["sentiment_drop", "volume_spike"])):
        members = [{**member, "scope": root, "kind": k} for k in kinds] + [{**member, "scope": "channel:x", "kind": "sentiment_surge"}]
        r.hset(INCIDENTS_KEY, ident, json.dumps({"incident_id": ident, "root_scope": root, "state": "resolved", "acked": None,
                                                 "opened": 100, "at": 200, "market": False, "severity": "warning", "members": members}))
        r.zadd(INCIDENTS_INDEX_KEY, {ident: 100})
    assert lines(cli(["verdicts", "--json"], redis_server)) == []
    for ident, said in (("inc1", "false-alarm"), ("inc2", "false-alarm"), ("inc3", "real"), ("inc1", "real")):  # inc1 judged again
        assert cli(["verdict", ident, said, "--by", "dana", "--reason", "checked the posts"], redis_server).returncode == 0
    for bad, says in ((["verdict", "nope", "real"], "no incident"), (["verdict", "inc1", "maybe"], "VERDICT: one of real, false-alarm")):
        refused = cli(bad, redis_server)
        assert refused.returncode != 0 and says in refused.stderr and "Traceback" not in refused.stderr

    rows = {row["kind"]: row for row in lines(cli(["verdicts", "--json"], redis_server))}
    # Each incident's latest verdict, once under each of its root kinds (the channel's surge is not a root kind).
    assert rows == {"all incidents": {"kind": "all incidents", "real": 2, "false_alarm": 1, "precision": 2 / 3},
                    "sentiment_drop": {"kind": "sentiment_drop", "real": 2, "false_alarm": 0, "precision": 1.0},
                    "volume_spike": {"kind": "volume_spike", "real": 1, "false_alarm": 1, "precision": 0.5}}
    per_scope = {row["scope"]: (row["real"], row["false_alarm"]) for row in lines(cli(["verdicts", "--json", "--per", "scope"], redis_server))}
    assert per_scope == {"all incidents": (2, 1), "asset:BTC": (1, 0), "asset:ETH": (0, 1), "all": (1, 0)}  # which scopes raise false alarms
    assert "--per: kind or scope" in cli(["verdicts", "--per", "day"], redis_server).stderr
    assert "all (whole market)" in cli(["verdicts", "--per", "scope"], redis_server).stdout  # the scope `all`, not the total row
    listed = {i["incident_id"]: i["verdict"] for i in lines(cli(["incidents", "--json"], redis_server))}
    assert listed["inc1"]["verdict"] == "real" and listed["inc2"]["verdict"] == "false-alarm"
    assert (listed["inc1"]["by"], listed["inc1"]["via"], listed["inc1"]["reason"]) == ("dana", "cli", "checked the posts")
    logged = lines(cli(["audit", "--json", "--action", "verdict"], redis_server))
    assert [(e["target"], e["verdict"], e["kind"]) for e in logged][:2] == [("inc1", "real", "sentiment_drop"), ("inc3", "real", "sentiment_drop,volume_spike")]
    assert len(logged) == 4
    table = cli(["verdicts"], redis_server)
    assert table.returncode == 0 and "0.67" in table.stdout and "volume_spike" in table.stdout
    # Three verdicts are no rate to trust: the table says how many were judged, the interval, and what precision counts.
    said = " ".join(table.stdout.split())
    assert re.search(r"all incidents │ 2 │ 1 │ 3 \(few\) │ 0\.67 \(0\.21-0\.94\) │", said), table.stdout
    assert "precision: real / judged (real + false alarms)" in said and "Under 10 judged ('few'), read the counts, not the rate." in said

    # The script itself refuses an incident the history no longer holds (pruned between the read and the write).
    from stream.alerts.verdicts import _GIVE
    from stream.keys import ALERT_STATS_KEY, VERDICTS_KEY

    before = r.xlen(AUDIT_KEY)
    assert r.eval(_GIVE, 4, INCIDENTS_KEY, VERDICTS_KEY, ALERT_STATS_KEY, AUDIT_KEY, "gone1", "{}", 100, "action", "verdict") == 0
    assert r.hget(VERDICTS_KEY, "gone1") is None and r.xlen(AUDIT_KEY) == before


def test_a_precisions_interval_is_wilsons_and_wide_on_a_few_verdicts():
    from stream.alerts.precision import interval_95

    low, high = interval_95(4, 10)  # Wilson 1927; as statsmodels' proportion_confint(4, 10, method="wilson")
    assert (round(low, 4), round(high, 4)) == (0.1682, 0.6873)
    assert interval_95(0, 1) == (0.0, pytest.approx(0.7935, abs=1e-4))  # one false alarm: precision anywhere up to 0.79
    assert interval_95(0, 0) is None


def test_a_tally_counts_each_incidents_latest_verdict_once_per_root_kind():
    from stream.alerts.precision import tally

    def judged(target: str, verdict: str, kind: str = "sentiment_drop") -> dict[str, str]:
        return {"action": "verdict", "target": target, "verdict": verdict, "kind": kind}

    newest_first = [judged("a", "real"), {"action": "acknowledge", "target": "b"}, judged("b", "false-alarm", "volume_spike"),
                    judged("a", "false-alarm"), judged("c", "bogus")]
    counted = tally(newest_first)
    assert (counted.real, counted.false_alarm) == ({"all incidents": 1, "sentiment_drop": 1}, {"all incidents": 1, "volume_spike": 1})
    assert counted.precision() == 0.5 and counted.precision("sentiment_drop") == 1.0 and counted.precision("sentiment_surge") is None
    assert [row["kind"] for row in counted.rows()] == ["all incidents", "sentiment_drop", "volume_spike"]
    assert tally([]).rows() == []


def test_a_notices_track_record_counts_earlier_verdicts_of_its_kinds_here_and_anywhere():
    from stream.alerts import message
    from stream.alerts.grouping import Notice
    from stream.alerts.precision import track_record

    def judged(target: str, verdict: str, scope: str, kind: str = "sentiment_drop") -> dict[str, str]:
        return {"action": "verdict", "target": target, "verdict": verdict, "scope": scope, "kind": kind}

    newest_first = [judged("a", "real", "asset:BTC"), judged("b", "false-alarm", "asset:ETH", "sentiment_drop,volume_spike"),
                    judged("a", "false-alarm", "asset:BTC"), judged("c", "false-alarm", "asset:BTC", "volume_spike"),
                    judged("now", "real", "asset:BTC"), judged("d", "false-alarm", "asset:BTC")]
    track = track_record(newest_first, "asset:BTC", ["sentiment_drop"], exclude="now")
    # a: its latest (real); b: a drop among its kinds, elsewhere; c: another kind; the incident told about is not its own record.
    assert (track.here, track.anywhere) == ((1, 1), (1, 2))
    assert track_record(newest_first, "asset:BTC", ["sentiment_surge"]) is None
    member = {"scope": "asset:BTC", "kind": "sentiment_drop", "firing": True, "severity": "warning", "onset": None,
              "metric": "negative_share", "value": 0.5, "baseline": 0.2}
    notice = Notice("now", "asset:BTC", "firing", "new", "warning", "2026-10-02T12:20:00Z", "2026-10-02T12:00:00Z", False, [member])
    text = message.notice_body(notice, track=track)
    assert ("Earlier sentiment_drop incidents, as judged (30 days): on asset:BTC 1 real, 1 false alarm; "
            "anywhere 1 real, 2 false alarms") in text
    elsewhere = track_record(newest_first, "asset:SOL", ["sentiment_drop", "volume_spike"])
    assert message.track_line(elsewhere) == "Earlier sentiment_drop or volume_spike incidents, as judged (30 days): anywhere 2 real, 3 false alarms"
    assert track_record([{"action": "verdict"}, *newest_first], "asset:BTC", ["sentiment_drop"]) is not None  # a malformed entry is passed over
    assert "as judged" not in message.notice_body(Notice(**{**notice.to_json(), "state": "resolved", "reason": "resolved"}), track=track)


def test_text_from_operators_and_posts_is_shown_as_written_not_read_as_markup(redis_server):
    """A reason with `[/]` made every table that listed it raise (Rich read it as a closing tag)."""
    r = redis.Redis.from_url(redis_server, decode_responses=True)
    r.flushdb()
    reason = "[/] rumour [bold]not bold[/bold]"
    assert cli(["silence", "channel:[x]", "--for", "1h", "--reason", reason, "--by", "[erin]"], redis_server).returncode == 0
    env = {**os.environ, "REDIS_URL": redis_server, "SENTINEL_BASE": "lexicon", "COLUMNS": "300"}
    for args in (["silences"], ["audit"]):
        shown = subprocess.run([sys.executable, "-m", "sentinel.cli", *args], env=env, capture_output=True, text=True, timeout=120)
        assert shown.returncode == 0 and reason in shown.stdout and "[erin]" in shown.stdout and "channel:[x]" in shown.stdout, shown.stderr[-800:]
    classified = subprocess.run([sys.executable, "-m", "sentinel.cli", "classify", "[/] $BTC to the moon [red]"], env=env,
                                capture_output=True, text=True, timeout=120)
    assert classified.returncode == 0 and "[/] $BTC to the moon [red]" in classified.stdout, classified.stderr[-800:]


def test_silences_and_the_audit_log_show_ids_and_times_whole_on_80_columns(redis_server):
    """The until and at (UTC) columns were cut to "2026-12-06T15:05:…" on 80 columns, as incidents' were."""
    r = redis.Redis.from_url(redis_server, decode_responses=True)
    r.flushdb()
    made = cli(["silence", "asset:BTC", "--for", "1h", "--reason", "rumour about an exchange hack", "--by", "alice"], redis_server)
    assert made.returncode == 0, made.stderr
    (stored,) = lines(cli(["silences", "--json"], redis_server))
    env = {**os.environ, "REDIS_URL": redis_server, "SENTINEL_BASE": "lexicon", "COLUMNS": "80"}
    for args in (["silences"], ["audit"]):
        shown = subprocess.run([sys.executable, "-m", "sentinel.cli", *args], env=env, capture_output=True, text=True, timeout=120)
        assert shown.returncode == 0 and max(map(len, shown.stdout.splitlines())) <= 80, shown.stdout
        assert "…" not in shown.stdout, shown.stdout  # folded onto the next line, not cut
        assert stored["id"] in shown.stdout, shown.stdout
    listed = subprocess.run([sys.executable, "-m", "sentinel.cli", "silences"], env=env, capture_output=True, text=True, timeout=120)
    assert "| " + stored["id"] + " |" in listed.stdout.replace("\u2502", "|"), listed.stdout  # the id on one line, for `unsilence`


def test_operator_input_the_command_line_refuses_is_refused_before_anything_is_stored(redis_server):
    """A silence that could never match, a reason over the limit or with a bidi override: one line
    saying what is accepted, nothing stored or logged. A pattern no scope matches yet is kept, with a warning."""
    r = redis.Redis.from_url(redis_server, decode_responses=True)
    r.flushdb()
    r.hset(INCIDENTS_KEY, "36ae68f000a534b25d04", json.dumps({"incident_id": "36ae68f000a534b25d04", "root_scope": "asset:ETH", "state": "open",
                                                               "acked": None, "opened": 100, "members": []}))
    for args, says in ((["silence", "Nonexistent:scope"], "asset:, channel: or source:"), (["silence", "<img src=x onerror=alert(1)>"], "asset:ETH, asset:*"),
                       (["silence", "asset:E\u202eTH"], "control or invisible"), (["silence", "all", "--reason", "x" * 501], "--reason: at most 500"),
                       (["silence", "all", "--reason", "ok \u202eevil"], "--reason: holds a control"),
                       (["verdict", "36ae68f000a534b25d04", "real", "--reason", "y" * 5000], "--reason: at most 500"),
                       (["ack", "36ae68f000a534b25d04", "--reason", "\u2067"], "--reason: holds a control")):
        refused = cli(args, redis_server)
        assert refused.returncode == 2 and says in refused.stderr and "Traceback" not in refused.stderr, (args, refused.stderr)
    assert r.hlen(SILENCES_KEY) == 0 and r.xlen(AUDIT_KEY) == 0 and r.hget("sentinel:{alerts}:acks", "36ae68f000a534b25d04") is None

    made = cli(["silence", "ALL", "--for", "1h", "--reason", "  two\n lines "], redis_server)
    assert made.returncode == 0 and "silenced all " in made.stdout
    assert "warning: no scope seen so far matches all" in made.stderr  # no posts at all yet: kept, but said
    (stored,) = lines(cli(["silences", "--json"], redis_server))
    assert (stored["scope"], stored["reason"]) == ("all", "two lines")


def test_an_empty_by_is_the_login_name_and_an_incident_is_named_by_a_unique_start_of_its_id(redis_server):
    r = redis.Redis.from_url(redis_server, decode_responses=True)
    r.flushdb()
    ids = ["36ae68f000a534b25d04", "36ae68f111a534b25d04", "9c01d2e3f4a5b6c7d8e9"]
    for ident in ids:
        r.hset(INCIDENTS_KEY, ident, json.dumps({"incident_id": ident, "root_scope": "asset:ETH", "state": "open", "acked": None, "opened": 100,
                                                 "severity": "warning", "market": False, "at": 100,
                                                 "members": [{"scope": "asset:ETH", "kind": "sentiment_drop"}]}))
        r.zadd(INCIDENTS_INDEX_KEY, {ident: 100})
    env = {**os.environ, "REDIS_URL": redis_server, "SENTINEL_BASE": "lexicon", "LOGNAME": "carol", "USER": "carol", "COLUMNS": "80"}

    def run_cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "sentinel.cli", *args], env=env, capture_output=True, text=True, timeout=120)

    listed = run_cli("incidents")
    assert listed.returncode == 0 and all(ident in listed.stdout for ident in ids), listed.stdout  # whole on 80 columns
    assert max(map(len, listed.stdout.splitlines())) <= 80
    assert "…" not in listed.stdout, listed.stdout  # every cell whole, folded: it was "ass…", "ope…"
    top = next(line for line in listed.stdout.splitlines() if line.lstrip().startswith("┏"))
    assert top.endswith("┓"), listed.stdout  # every column there: rich crops a table too wide, silently
    # Each incident's fields read whole, one a line beside its id: nine columns on 80 folded the
    # root into four-character pieces ("asse", "t:ET", "H").
    cells = [line.split("│")[2].strip() for line in listed.stdout.splitlines() if line.count("│") == 3]
    assert cells.count("asset:ETH") == 3 and cells.count("open, warning, opened 1970-01-01T00:01:40Z") == 3, listed.stdout
    assert cells.count("kinds: sentiment_drop") == 3, listed.stdout
    judged = run_cli("verdict", "9c01d2", "real", "--by", "")
    assert judged.returncode == 0 and "incident 9c01d2e3f4a5b6c7d8e9: real" in judged.stdout, judged.stderr
    assert run_cli("ack", "36ae68f0", "--by", "  ").returncode == 0
    ambiguous = run_cli("ack", "36ae68")
    assert ambiguous.returncode == 2 and "36ae68f000a534b25d04, 36ae68f111a534b25d04" in ambiguous.stderr
    assert "6 characters" in run_cli("verdict", "9c01", "real").stderr
    logged = lines(run_cli("audit", "--json", "--by", ""))  # a blank filter is no filter
    assert [(e["action"], e["target"], e["by"]) for e in logged] == [("acknowledge", "36ae68f000a534b25d04", "carol"),
                                                                     ("verdict", "9c01d2e3f4a5b6c7d8e9", "carol")]


def test_incidents_matching_nothing_say_so_in_a_line(redis_server):
    """`--open` or `--since 1h` matching nothing printed an empty table and nothing else."""
    r = redis.Redis.from_url(redis_server, decode_responses=True)
    r.flushdb()
    r.hset(STATS_KEY, "watermark", 1772625660 + 7200)
    ident = "cc08e3ebdfdb671ccafc"
    r.hset(INCIDENTS_KEY, ident, json.dumps({"incident_id": ident, "root_scope": "asset:ETH", "state": "resolved", "acked": None,
                                             "opened": 1772625660, "at": 1772630700, "severity": "critical", "market": False,
                                             "members": [{"scope": "asset:ETH", "kind": "sentiment_drop"}]}))
    r.zadd(INCIDENTS_INDEX_KEY, {ident: 1772625660})
    for args, said in ((["--open"], "no open incidents opened in the last 7d"), (["--since", "1h"], "no incidents opened in the last 1h")):
        done = cli(["incidents", *args], redis_server)
        assert done.returncode == 0 and done.stdout.startswith(said) and "incidents\n" not in done.stdout, done.stdout
        assert lines(cli(["incidents", "--json", *args], redis_server)) == []  # --json stays lines only
    assert ident in cli(["incidents", "--since", "3h"], redis_server).stdout


def test_incidents_with_no_posts_yet_do_not_claim_a_span(redis_server):
    """With no watermark everything stored is listed, yet the line said "in the last 7d"."""
    r = redis.Redis.from_url(redis_server, decode_responses=True)
    r.flushdb()
    for args, said in (([], "no incidents at all (no posts counted yet, so --since 7d bounds nothing)"),
                       (["--open", "--since", "1h"], "no open incidents at all (no posts counted yet, so --since 1h bounds nothing)")):
        done = cli(["incidents", *args], redis_server)
        assert done.returncode == 0 and done.stdout.startswith(said) and "in the last" not in done.stdout, done.stdout


def test_silences_and_the_audit_log_with_none_say_so_in_a_line(redis_server):
    """With no silence in force, or no action logged, they printed an empty table and nothing else."""
    r = redis.Redis.from_url(redis_server, decode_responses=True)
    r.flushdb()
    for args, said in ((["silences"], "no silences in force: `sentinel silence SCOPE --for 1h`"),
                       (["audit"], "no actions in the audit log in the last 7d (wall clock)"),
                       (["audit", "--by", "[dana]", "--action", "verdict"], "no actions by [dana] (verdict) in the audit log in the last 7d")):
        done = cli(args, redis_server)
        assert done.returncode == 0 and done.stdout.startswith(said) and "┏" not in done.stdout, done.stdout
        assert lines(cli([*args, "--json"], redis_server)) == []  # --json stays lines only
    assert cli(["silence", "asset:BTC", "--for", "1h", "--by", "erin"], redis_server).returncode == 0
    for args in (["silences"], ["audit"]):
        assert "erin" in cli(args, redis_server).stdout


def test_acknowledging_a_resolved_incident_says_it_is_over_and_how_to_judge_it(redis_server):
    """The first notice's `sentinel ack <id>`, pasted after the incident resolved, answered "no open
    incident with id ...", which read as a wrong id. It now names the incident, says it is over and
    when (event time), and gives the verdict command; nothing is acknowledged or logged. An unknown
    id is still said to be unknown."""
    r = redis.Redis.from_url(redis_server, decode_responses=True)
    r.flushdb()
    ident = "cc08e3ebdfdb671ccafc"
    r.hset(INCIDENTS_KEY, ident, json.dumps({"incident_id": ident, "root_scope": "asset:ETH", "state": "resolved", "acked": None,
                                             "opened": 1772625660, "at": 1772630700, "severity": "critical", "market": False,
                                             "members": [{"scope": "asset:ETH", "kind": "sentiment_drop"}]}))
    r.zadd(INCIDENTS_INDEX_KEY, {ident: 1772625660})
    refused = cli(["ack", "cc08e3", "--reason", "desk is on it"], redis_server)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr, refused.stderr
    said = " ".join(refused.stderr.split())
    assert said.startswith(f"error: incident {ident} is resolved (declared over 2026-03-04T13:25:00Z, event time): nothing to acknowledge"), said
    assert f"sentinel verdict {ident} real (or false-alarm)" in said and "no open incident" not in said, said
    assert r.hget("sentinel:{alerts}:acks", ident) is None and r.xlen(AUDIT_KEY) == 0
    unknown = cli(["ack", "ffffffff"], redis_server)
    assert unknown.returncode == 2 and "no open incident with id 'ffffffff'" in unknown.stderr, unknown.stderr


def test_with_grouping_off_ack_and_verdict_say_why_an_alerts_id_is_no_incidents(redis_server):
    """SENTINEL_ALERT_GROUPING=none: an alert's title ends with its own id's start ("[a1b2c3d4]"),
    as an incident's does, and `sentinel ack a1b2c3d4` answered "no open incident with id", as if
    the id were mistyped. It now says that ungrouped alerts are no incidents and what stops their
    notices; with grouping on an unknown id reads as before."""
    r = redis.Redis.from_url(redis_server, decode_responses=True)
    r.flushdb()
    env = {**os.environ, "REDIS_URL": redis_server, "SENTINEL_BASE": "lexicon", "SENTINEL_ALERT_GROUPING": "none"}
    for args, said in ((["ack", "a1b2c3d4"], "no open incident with id 'a1b2c3d4'"),
                       (["verdict", "a1b2c3d4", "real"], "no incident with id 'a1b2c3d4' in the history (SENTINEL_RETENTION)")):
        done = subprocess.run([sys.executable, "-m", "sentinel.cli", *args], env=env, capture_output=True, text=True, timeout=120)
        text = " ".join(done.stderr.split())
        assert done.returncode == 2 and text == (f"error: {said}; with SENTINEL_ALERT_GROUPING=none alerts are not grouped into incidents, "
                                                 "which ack and verdict act on: an alert's notice gives the command that stops its notices "
                                                 "(sentinel silence SCOPE --kind KIND --for 2h)"), done.stderr
        grouped = cli(args, redis_server)
        assert grouped.returncode == 2 and " ".join(grouped.stderr.split()) == f"error: {said}", grouped.stderr
    assert r.xlen(AUDIT_KEY) == 0


def test_lifting_a_silence_that_has_ended_says_so_and_logs_nothing(redis_server):
    """A silence past its end stays in the hash until the delivery loop's next purge (with no
    worker running, as after `sentinel run --console`, until one starts). `sentinel unsilence` of it
    said "lifted" and logged an `unsilence` after its end, as if someone had cut it short."""
    r = redis.Redis.from_url(redis_server, decode_responses=True)
    r.flushdb()
    now = time.time()
    r.hset(SILENCES_KEY, "e0d0e0d0", json.dumps({"id": "e0d0e0d0", "scope": "asset:SOL", "kind": None, "until": now - 60,
                                                  "reason": "", "created_at": now - 3660}))
    refused = cli(["unsilence", "e0d0e0d0", "--by", "frank"], redis_server)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr, refused.stderr
    said = " ".join(refused.stderr.split())
    assert f"silence e0d0e0d0 over asset:SOL already ended at {shown(now - 60)} (wall clock): nothing to lift" in said, said
    assert r.xlen(AUDIT_KEY) == 0 and "lifted" not in refused.stdout
    assert cli(["unsilence", "nope"], redis_server).returncode == 2  # unknown, as before


def test_windows_of_one_scope_take_a_ticker_in_any_case_and_refuse_a_scope_with_no_posts(redis_server):
    from sentinel.run import open_store
    from stream.contracts import Post
    from stream.settings import Settings
    from stream.store import Scored

    redis.Redis.from_url(redis_server).flushdb()
    # Nothing counted yet: one line saying so, not an empty table.
    empty = cli(["windows"], redis_server)
    assert empty.returncode == 0 and " ".join(empty.stdout.split()) == "no windows yet: no posts counted (the workers write them as posts arrive)", empty.stdout
    assert cli(["windows", "--json"], redis_server).stdout == ""

    async def write() -> None:
        store = open_store(Settings(redis_url=redis_server))
        try:
            posts = [Scored(Post(f"p{i}", "$ETH up", 1_800_000_000 + i, ("ETH",), source="forum", channel="general"), "positive", 0.5)
                     for i in range(3)]
            await store.apply(posts, {}, posts[-1].post.created_at)
        finally:
            await store.close()

    asyncio.run(write())
    shown = lines(cli(["windows", "--scope", "asset:eth", "--json"], redis_server))
    assert shown and {row["scope"] for row in shown} == {"asset:ETH"} and max(row["posts"] for row in shown) == 3
    # The table says up to when: the newest post's event time, not the clock (a backlog or a replay is behind it).
    table = cli(["windows", "--scope", "asset:eth"], redis_server)
    assert table.returncode == 0 and f"each window ends {iso(shown[0]['end'])} (event time: through the newest post counted, of any scope)" in " ".join(
        table.stdout.split()), table.stdout
    for scope in ("nonexistent", "channel:General", "asset:BTC"):
        refused = cli(["windows", "--scope", scope], redis_server)
        assert refused.returncode != 0 and "no posts for scope" in refused.stderr and "posts" not in refused.stdout, (scope, refused.stdout)
    said = cli(["windows", "--scope", "channel:General"], redis_server)
    assert said.returncode == 1 and "(known scopes: channel:general, all, asset:ETH, source:forum)" in said.stderr, said.stderr
    assert "no posts for scope nonexistent (known scopes: all, asset:ETH, channel:general, source:forum)" in cli(
        ["windows", "--scope", "nonexistent"], redis_server).stderr


def test_a_resolution_says_the_verdict_given_while_the_incident_was_open(redis_server):
    """Through the delivery, on a real redis-server and a local webhook: a verdict given while the
    incident was open (`give_verdict`, as `sentinel verdict` and the console write it) is said in
    its resolution instead of asking for one, and in its later firing notices; an incident without
    one (no field, or none of the verdicts) is still asked."""
    from stream.alerts.delivery import AlertDelivery
    from stream.alerts.grouping import Notice
    from stream.alerts.notify import Notifier, build_apprise
    from stream.alerts.verdicts import give_verdict
    from stream.keys import VERDICTS_KEY
    from stream.store import WindowStore
    from workers import Hook

    r = redis.Redis.from_url(redis_server, decode_responses=True)
    r.flushdb()
    member = {"scope": "asset:ETH", "kind": "sentiment_drop", "firing": False, "severity": "warning"}
    for ident in ("judged1", "unjudged1", "garbled1"):
        r.hset(INCIDENTS_KEY, ident, json.dumps({"incident_id": ident, "root_scope": "asset:ETH", "state": "firing", "acked": None,
                                                 "opened": 100, "at": 200, "market": False, "severity": "warning", "members": [member]}))
    hook = Hook()

    assert run(redis_server, lambda c: give_verdict(c, "judged1", "false-alarm", "bot spam", by="dana", via="cli",
                                                    clock=lambda: epoch("2026-03-04T12:30:00Z")))
    r.hset(VERDICTS_KEY, "garbled1", json.dumps({"verdict": "maybe"}))

    async def go() -> None:
        store = WindowStore.from_url(redis_server, retention_s=48 * 3600)
        try:
            delivery = AlertDelivery(store, Notifier(build_apprise(hook.url, None)), lambda record: None, consumer="t", chart=False)
            for ident in ("judged1", "unjudged1", "garbled1"):
                notice = Notice(ident, "asset:ETH", "resolved", "resolved", "warning", "2026-03-04T13:10:00Z", "2026-03-04T12:01:00Z",
                                False, [member])
                assert await delivery._notify_notice(notice, [], ["warning"])
            for ident in ("judged1", "unjudged1"):  # while it fires, later notices: said there too
                notice = Notice(ident, "asset:ETH", "firing", "update", "warning", "2026-03-04T12:50:00Z", "2026-03-04T12:01:00Z",
                                False, [{**member, "firing": True}])
                assert await delivery._notify_notice(notice, [], ["warning"])
        finally:
            await store.close()

    try:
        asyncio.run(go())
    finally:
        hook.close()
    judged, unjudged, garbled, judged_firing, unjudged_firing = (sent["message"].splitlines() for sent in hook.accepted)
    given = 'verdict given: false-alarm, 2026-03-04T12:30:00Z (wall clock), by dana via cli ("bot spam"); to change it: sentinel verdict judged1 real'
    assert given in judged_firing and "acknowledge (no more reminders): sentinel ack judged1" in judged_firing, judged_firing
    assert not any("verdict" in line for line in unjudged_firing), unjudged_firing
    assert ('verdict given: false-alarm, 2026-03-04T12:30:00Z (wall clock), by dana via cli ("bot spam"); '
            "to change it: sentinel verdict judged1 real") in judged
    assert not any(line.startswith("verdict: ") for line in judged)
    for lines_, ident in ((unjudged, "unjudged1"), (garbled, "garbled1")):
        assert f"verdict: sentinel verdict {ident} real, or: sentinel verdict {ident} false-alarm" in lines_
        assert not any(line.startswith("verdict given") for line in lines_)
