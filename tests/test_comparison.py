"""`sentinel compare-alerts`: two runs' incidents side by side (stream/alerts/comparison.py, pure;
stream/tools/alert_records.py, the files)."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from stream.alerts.comparison import change_row, changed, compare, episodes, grouping_differs, pair_change, spans_differ, summary
from stream.timefmt import iso
from stream.tools.alert_records import read_alert_records, read_verdicts

T0 = 1_790_000_000 // 3600 * 3600


def rec(incident: str, scope: str, minute: int, state: str = "firing", kind: str = "sentiment_drop", root: str | None = None,
        notified: bool = False) -> dict:
    return {"alert_id": f"{incident}-{scope}-{kind}", "scope": scope, "kind": kind, "state": state, "severity": "warning",
            "window_start": iso(T0 + minute * 60 - 3600), "window_end": iso(T0 + minute * 60), "value": 0.5, "baseline": 0.2,
            "zscore": 4.0, "posts": 40, "sample_post_ids": [], "notified": notified, "fired_at": iso(T0), "incident_id": incident,
            "root_scope": root or scope, "onset": iso(T0), "acknowledged": ""}


# Baseline: a BTC drop with `all` as a member (told at 10, over at 70), an ETH spike (100-130), a
# SOL drop (200-240) and a resolution of something older than the recording.
BASELINE = [rec("b1", "asset:BTC", 10, notified=True), rec("b1", "all", 15, root="asset:BTC"), rec("b1", "asset:BTC", 70, "resolved"),
            rec("b1", "all", 75, "resolved", root="asset:BTC"),
            rec("b2", "asset:ETH", 100, kind="volume_spike", notified=True), rec("b2", "asset:ETH", 130, "resolved", kind="volume_spike"),
            rec("b3", "asset:SOL", 200), rec("b3", "asset:SOL", 240, "resolved"),
            rec("b0", "asset:XRP", 5, "resolved")]
# Candidate: the same BTC event told 4 minutes earlier but rooted at `all` (BTC never fired alone),
# the ETH spike 3 minutes later, no SOL, and a new DOGE drop.
CANDIDATE = [rec("c1", "all", 6), rec("c1", "all", 66, "resolved"),
             rec("c2", "asset:ETH", 103, kind="volume_spike"), rec("c2", "asset:ETH", 131, "resolved", kind="volume_spike"),
             rec("c4", "asset:DOGE", 300)]


def test_incidents_are_paired_by_time_and_a_shared_alert_whatever_their_root():
    base, cand = episodes(BASELINE), episodes(CANDIDATE)
    assert [e.incident_id for e in base.episodes] == ["b1", "b2", "b3"]  # b0 only resolves: it fired before the records begin
    b1 = base.episodes[0]
    assert (b1.root_scope, b1.alerts, b1.kinds, b1.first, b1.last) == (
        "asset:BTC", frozenset({("asset:BTC", "sentiment_drop"), ("all", "sentiment_drop")}), ("sentiment_drop",), T0 + 600, T0 + 75 * 60)
    assert base.grouped and (base.start, base.end) == (T0 + 300, T0 + 240 * 60)
    assert cand.episodes[-1].last == cand.end  # DOGE still firing: its span runs to the end of the records
    result = compare(base, cand, T0, T0 + 400 * 60)
    assert [(b.incident_id, c.incident_id) for b, c in result.matched] == [("b1", "c1"), ("b2", "c2")]
    assert [e.incident_id for e in result.lost] == ["b3"] and [e.incident_id for e in result.new] == ["c4"]
    figures = summary(result, {"b1": "real", "b3": "false-alarm", "b9": "real"})
    assert figures["fired_later_min"] == {"median": -0.5, "min": -4.0, "max": 3.0} and (figures["earlier"], figures["later"]) == (1, 1)
    assert figures["verdicts"] == {"both": {"real": 1, "false-alarm": 0, "unjudged": 1}, "only_baseline": {"real": 0, "false-alarm": 1, "unjudged": 0}}
    assert summary(result)["verdicts"] is None and summary(result, {})["verdicts"]["only_baseline"]["unjudged"] == 1
    # A span keeps the incidents that reach into it: to 150 minutes, SOL (200) and DOGE (300) are out.
    early = compare(base, cand, T0, T0 + 150 * 60)
    assert len(early.matched) == 2 and early.lost == [] and early.new == []
    assert compare(base, cand).new == result.new  # no span: everything
    assert not spans_differ(base, cand)
    year_of_production = episodes([rec("p0", "asset:BTC", -400 * 24 * 60), rec("p0", "asset:BTC", -400 * 24 * 60 + 30, "resolved"), *BASELINE])
    assert spans_differ(year_of_production, cand)
    # Same time, no shared alert: two events, not one.
    other = episodes([rec("x1", "asset:ADA", 10), rec("x1", "asset:ADA", 70, "resolved")])
    assert compare(episodes(BASELINE[:4]), other).matched == []


def test_as_many_events_pair_as_possible_the_nearest_first():
    # b1 overlaps both candidates, b2 only the first: a greedy pairing of b1 with its nearest left b2 alone.
    base = episodes([rec("b1", "all", 10), rec("b1", "all", 100, "resolved"), rec("b2", "all", 30), rec("b2", "all", 45, "resolved")])
    cand = episodes([rec("c1", "all", 12), rec("c1", "all", 40, "resolved"), rec("c2", "all", 50), rec("c2", "all", 90, "resolved")])
    result = compare(base, cand, T0, T0 + 86400)
    assert sorted((b.incident_id, c.incident_id) for b, c in result.matched) == [("b1", "c2"), ("b2", "c1")]
    # One partner for two: the nearer takes it.
    base = episodes([rec("b1", "all", 10), rec("b1", "all", 40, "resolved"), rec("b2", "all", 30), rec("b2", "all", 60, "resolved")])
    cand = episodes([rec("c1", "all", 28), rec("c1", "all", 70, "resolved")])
    result = compare(base, cand, T0, T0 + 86400)
    assert [(b.incident_id, c.incident_id) for b, c in result.matched] == [("b2", "c1")] and [e.incident_id for e in result.lost] == ["b1"]


def test_kinds_pair_with_their_own_kind_and_a_split_tail_keeps_its_first_firing():
    # Without grouping, a drop and a spike on one scope: each pairs with its own kind, not the nearer other.
    base = episodes([rec("d", "asset:BTC", 10), rec("s", "asset:BTC", 12, kind="volume_spike"),
                     rec("d", "asset:BTC", 60, "resolved"), rec("s", "asset:BTC", 60, "resolved", kind="volume_spike")])
    cand = episodes([rec("d2", "asset:BTC", 13), rec("s2", "asset:BTC", 11, kind="volume_spike"),
                     rec("d2", "asset:BTC", 60, "resolved"), rec("s2", "asset:BTC", 60, "resolved", kind="volume_spike")])
    result = compare(base, cand, T0, T0 + 86400)
    assert sorted((b.incident_id, c.incident_id, (c.first - b.first) / 60) for b, c in result.matched) == [("d", "d2", 3.0), ("s", "s2", -1.0)]
    # A member still firing when its root resolved splits off under a new incident id but its own
    # alert id: its first firing is the earlier one, and a split-off that only resolves still counts.
    tail = [rec("i1", "asset:ETH", 10, root="asset:ETH"), rec("i1", "channel:x", 12, root="asset:ETH"),
            rec("i1", "asset:ETH", 60, "resolved", root="asset:ETH")]
    split = {**rec("i2", "channel:x", 90, "resolved"), "alert_id": tail[1]["alert_id"]}
    run = episodes([*tail, split])
    assert [(e.incident_id, e.first) for e in run.episodes] == [("i1", T0 + 600), ("i2", T0 + 720)]


def write(path: Path, items: list) -> Path:
    path.write_text("".join(json.dumps(i) + "\n" for i in items), encoding="utf-8")
    return path


def test_files_from_run_and_from_record_read_alike_and_a_bad_line_is_named(tmp_path):
    plain = write(tmp_path / "a.jsonl", BASELINE)
    recorded = write(tmp_path / "r.jsonl", [{"topic": "sentiment-alerts", "partition": 0, "offset": i, "timestamp": 0, "key": r["alert_id"],
                                             "value": json.dumps(r), "value_encoding": "utf-8"} for i, r in enumerate(BASELINE)])
    assert read_alert_records(plain) == read_alert_records(recorded) == BASELINE
    tombstone = write(tmp_path / "t.jsonl", [{"topic": "sentiment-alerts", "partition": 0, "offset": 0, "key": "a", "value": None, "value_encoding": None}])
    assert read_alert_records(tombstone) == []  # a deleted key carries no alert
    for line, says in (("{bad", "not JSON"), ("[1]", "not a JSON object"), (json.dumps({"scope": "all"}), "not an alert record (no alert_id, kind"),
                       (json.dumps({**BASELINE[0], "state": "pending"}), "neither firing nor resolved"),
                       (json.dumps({**BASELINE[0], "window_end": "yesterday"}), "not an ISO 8601 time"),
                       (json.dumps({**BASELINE[0], "window_end": "2026-03-04"}), "not an ISO 8601 time"),
                       (json.dumps({"topic": "t", "value": "{no", "value_encoding": "utf-8"}), "recorded value is not JSON"),
                       (json.dumps({"topic": "t", "value": "AAEC", "value_encoding": "base64"}), "not UTF-8 JSON text")):
        bad = tmp_path / "bad.jsonl"
        bad.write_text(json.dumps(BASELINE[0]) + "\n\n" + line + "\n", encoding="utf-8")
        with pytest.raises(ValueError, match=re.escape("bad.jsonl:3: ") + ".*" + re.escape(says)):
            read_alert_records(bad)
    audit = write(tmp_path / "v.jsonl", [{"action": "verdict", "target": "b1", "verdict": "real"}, {"action": "verdict", "target": "b1", "verdict": "false-alarm"}])
    listed = write(tmp_path / "i.jsonl", [{"incident_id": "b3", "verdict": {"verdict": "false-alarm"}}, {"incident_id": "b2", "verdict": None}])
    assert read_verdicts(audit) == {"b1": "real"} and read_verdicts(listed) == {"b3": "false-alarm"}  # the newest audit entry wins
    with pytest.raises(ValueError, match="v2.jsonl:1: neither a verdict"):
        read_verdicts(write(tmp_path / "v2.jsonl", [{"action": "silence", "target": "x"}]))


def test_sentinel_compare_alerts_prints_what_a_change_loses_and_gains(tmp_path):
    base, cand = write(tmp_path / "base.jsonl", BASELINE), write(tmp_path / "cand.jsonl", CANDIDATE)
    verdicts = write(tmp_path / "verdicts.jsonl", [{"action": "verdict", "target": "b3", "verdict": "false-alarm", "by": "dana"}])
    env = {**os.environ, "SENTINEL_BASE": "lexicon", "COLUMNS": "200"}
    run = lambda *args: subprocess.run([sys.executable, "-m", "sentinel.cli", "compare-alerts", *map(str, args)],  # noqa: E731
                                       env=env, capture_output=True, text=True, timeout=120)
    done = run(base, cand, "--verdicts", verdicts, "--json")
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)
    assert (shown["both"], shown["only_baseline"], shown["only_candidate"]) == (2, 1, 1) and shown["from"] is None
    assert shown["only_baseline_incidents"] == [{"incident_id": "b3", "root_scope": "asset:SOL", "kinds": ["sentiment_drop"],
                                                 "first": iso(T0 + 200 * 60), "last": iso(T0 + 240 * 60), "verdict": "false-alarm"}]
    assert shown["verdicts"]["only_baseline"] == {"real": 0, "false-alarm": 1, "unjudged": 0}
    assert [(r["baseline_incident"], r["candidate_incident"], r["members_gained"], r["members_lost"]) for r in shown["both_incidents"]] == [
        ("b1", "c1", [], [["asset:BTC", "sentiment_drop"]]), ("b2", "c2", [], [])]
    assert shown["members"]["lost"] == 1 and shown["resolution"]["earlier"] == 1 and shown["max_shift"] == "2h"
    text = run(base, cand, "--verdicts", verdicts, "--from", iso(T0), "--until", iso(T0 + 400 * 60))
    assert text.returncode == 0 and f"2 in both, 1 only in {base}, 1 only in {cand}" in text.stdout, text.stdout
    assert "lost (only in the baseline): 0 real, 1 false alarm, 0 unjudged" in text.stdout and "asset:DOGE" in text.stdout
    assert "one run grouped" not in text.stdout and "different stretches" not in text.stdout
    assert "the candidate's members (scope, kind): 0 gained, 1 lost, in 1 incident" in text.stdout
    assert "the candidate's resolved 1 earlier, 1 later" in text.stdout and "in both, changed" in text.stdout
    assert f"incidents reaching into {iso(T0)} .. {iso(T0 + 400 * 60)}" in text.stdout
    narrow = subprocess.run([sys.executable, "-m", "sentinel.cli", "compare-alerts", str(base), str(cand)], env={**env, "COLUMNS": "80"},
                            capture_output=True, text=True, timeout=120)
    tables = narrow.stdout[narrow.stdout.index("in both, changed"):]
    assert narrow.returncode == 0 and "…" not in tables and "b3" in tables, narrow.stdout  # nine columns folded, not cut to "b1…"
    # Under 160 columns, as `sentinel incidents`: each pair's ids and its changes one a line (the nine columns folded to
    # "asset: / BTC -> / all", a few characters a line).
    assert max(map(len, tables.splitlines())) <= 80 and "root: asset:BTC -> all" in tables, tables
    assert "members lost: asset:BTC sentiment_drop" in tables and "resolved: earlier (-9.0 min), at " in tables, tables
    assert "critical:" not in tables and "members gained:" not in tables, tables  # nothing to say: left out
    old = write(tmp_path / "production.jsonl", [rec("p0", "asset:BTC", -3 * 24 * 60), *BASELINE])
    assert "cover different stretches" in run(old, cand).stdout
    ungrouped = write(tmp_path / "ungrouped.jsonl", [{**r, "incident_id": r["alert_id"]} for r in CANDIDATE])
    assert "one run grouped transitions into incidents and the other did not" in run(base, ungrouped).stdout
    assert "--from noon: not an ISO 8601 time" in run(base, cand, "--from", "noon").stderr
    bad_day = run(base, cand, "--until", "2026-13-01")  # said the bare "month must be in 1..12", naming neither
    assert bad_day.returncode == 2 and bad_day.stderr.strip() == "error: --until 2026-13-01: month must be in 1..12", bad_day.stderr
    (tmp_path / "broken.jsonl").write_text(json.dumps(BASELINE[0]) + "\nnot json\n")
    refused = run(tmp_path / "broken.jsonl", cand)
    assert refused.returncode != 0 and "broken.jsonl:2: not JSON" in refused.stderr and "Traceback" not in refused.stderr


def test_the_change_table_keeps_whole_ids_and_one_change_a_line_under_160_columns():
    from rich.console import Console

    from sentinel.cli import changes_table

    ids = {"b1": "36ae68f000a534b25d04", "c1": "9f1c0d2e3b4a59687766"}  # as long as real ones
    base = episodes([{**r, "incident_id": ids.get(r["incident_id"], r["incident_id"])} for r in BASELINE])
    cand = episodes([{**r, "incident_id": ids.get(r["incident_id"], r["incident_id"])} for r in CANDIDATE])
    rows = [change_row(pc) for pc in (pair_change(b, c) for b, c in compare(base, cand).matched) if changed(pc)]

    def shown(width: int) -> str:
        console = Console(width=width, record=True, file=io.StringIO())
        console.print(changes_table(rows, width))
        return console.export_text()

    narrow = shown(80)
    assert ids["b1"] in narrow and ids["c1"] in narrow and max(map(len, narrow.splitlines())) <= 80, narrow
    assert "members resolved: all sentiment_drop: -9 min" in narrow, narrow
    wide = shown(160)
    assert ids["b1"] in wide and ids["c1"] in wide and any("root" in line and "members resolved" in line for line in wide.splitlines()), wide  # a column each


def test_a_free_partner_is_taken_before_anyone_is_moved():
    # b1 (4) and b2 (10) both overlap c1 (5) and c3 (16); c1 is nearest to both, c3 is free for b2.
    base = episodes([rec("b1", "all", 4), rec("b1", "all", 70, "resolved"), rec("b2", "all", 10), rec("b2", "all", 30, "resolved")])
    cand = episodes([rec("c1", "all", 5), rec("c1", "all", 40, "resolved"), rec("c2", "all", 60), rec("c2", "all", 80, "resolved"),
                     rec("c3", "all", 16), rec("c3", "all", 30, "resolved")])
    result = compare(base, cand)
    assert sorted((b.incident_id, c.incident_id) for b, c in result.matched) == [("b1", "c1"), ("b2", "c3")]
    assert [e.incident_id for e in result.new] == ["c2"]


DEEP = "[" * 100_000 + "]" * 100_000


@pytest.mark.parametrize("line, says", [
    (json.dumps({**BASELINE[0], "window_end": "9999-12-31T23:59:59-23:59"}), "window_end '9999-12-31T23:59:59-23:59' is out of range"),
    (json.dumps({**BASELINE[0], "window_end": "0001-01-01T00:00:00+14:00"}), "window_end '0001-01-01T00:00:00+14:00' is out of range"),
    (DEEP, "not JSON (nested too deeply)"),
    (json.dumps({"topic": "t", "partition": 0, "offset": 0, "value": DEEP, "value_encoding": "utf-8"}), "the recorded value is not JSON (nested too deeply)"),
    ('{"alert_id": ' + "9" * 5000 + "}", "not JSON (Exceeds the limit (4300 digits)"),
])
def test_a_hostile_alert_line_is_an_error_naming_it(tmp_path, line, says):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(BASELINE[0]) + "\n" + line + "\n", encoding="utf-8")
    with pytest.raises(ValueError) as info:
        read_alert_records(bad)
    assert str(info.value).startswith(f"{bad}:2: ") and says in str(info.value), info.value


def test_a_deeply_nested_verdicts_line_is_an_error_naming_it(tmp_path):
    bad = tmp_path / "v.jsonl"
    bad.write_text(json.dumps({"action": "verdict", "target": "b1", "verdict": "real"}) + "\n" + DEEP + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match=re.escape(f"{bad}:2: not JSON (nested too deeply)")):
        read_verdicts(bad)


def test_compare_alerts_names_an_out_of_range_window_end_without_a_traceback(tmp_path):
    base = write(tmp_path / "a.jsonl", BASELINE)
    bad = write(tmp_path / "b.jsonl", [{**BASELINE[0], "window_end": "9999-12-31T23:59:59-23:59"}])
    done = subprocess.run([sys.executable, "-m", "sentinel.cli", "compare-alerts", str(base), str(bad)], capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert f"{bad}:1: window_end" in " ".join(done.stderr.split()), done.stderr


def test_compare_alerts_says_a_from_time_out_of_range_without_a_traceback(tmp_path):
    base = write(tmp_path / "a.jsonl", BASELINE)
    done = subprocess.run([sys.executable, "-m", "sentinel.cli", "compare-alerts", str(base), str(base), "--from", "9999-12-31T23:59:59-23:59"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert "--from/--until: out of range" in " ".join(done.stderr.split()), done.stderr


def test_a_severity_change_is_reported_per_incident_and_counted():
    # The same BTC drop: warning throughout in the baseline; critical from minute 14 in the candidate.
    base = episodes([rec("b1", "asset:BTC", 10), rec("b1", "asset:BTC", 60, "resolved")])
    cand = episodes([rec("c1", "asset:BTC", 10), {**rec("c1", "asset:BTC", 14), "severity": "critical"}, rec("c1", "asset:BTC", 60, "resolved")])
    assert (base.episodes[0].severity, cand.episodes[0].severity, cand.episodes[0].critical_at) == ("warning", "critical", T0 + 14 * 60)
    result = compare(base, cand)
    pc = pair_change(*result.matched[0])
    assert (pc.severity, pc.critical, pc.critical_shift) == (("warning", "critical"), "newly", None) and changed(pc)
    assert change_row(pc)["critical_at"] == {"baseline": None, "candidate": iso(T0 + 14 * 60)}
    figures = summary(result)
    assert figures["severity"] == {"raised": 1, "lowered": 0, "critical_newly": 1, "critical_no_longer": 0, "critical_earlier": 0,
                                   "critical_later": 0, "critical_same": 0}
    assert (figures["earlier"], figures["later"]) == (0, 0)  # first fired at the same minute: only the severity moved
    back = pair_change(*compare(cand, base).matched[0])
    assert (back.critical, summary(compare(cand, base))["severity"]["lowered"]) == ("no longer", 1)
    sooner = episodes([{**rec("s1", "asset:BTC", 10), "severity": "critical"}, rec("s1", "asset:BTC", 60, "resolved")])
    pc = pair_change(*compare(cand, sooner).matched[0])
    assert (pc.severity, pc.critical, pc.critical_shift) == (("critical", "critical"), "earlier", -240.0)


def test_members_gained_and_lost_and_resolutions_moved_are_reported():
    # Baseline: BTC with channel:x as a member, resolved at 60 (BTC) and 50 (channel:x). Candidate:
    # BTC without channel:x but with all, BTC resolving at 75; a second event resolved in the
    # baseline still fires at the candidate's end.
    base = episodes([rec("b1", "asset:BTC", 10), rec("b1", "channel:x", 12, root="asset:BTC"), rec("b1", "channel:x", 50, "resolved", root="asset:BTC"),
                     rec("b1", "asset:BTC", 60, "resolved"), rec("b2", "asset:ETH", 100), rec("b2", "asset:ETH", 130, "resolved")])
    cand = episodes([rec("c1", "asset:BTC", 10), rec("c1", "all", 20, root="asset:BTC"), rec("c1", "all", 70, "resolved", root="asset:BTC"),
                     rec("c1", "asset:BTC", 75, "resolved"), rec("c2", "asset:ETH", 100), rec("c2", "asset:ETH", 160)])
    assert base.episodes[0].resolved == T0 + 3600 and cand.episodes[1].resolved is None
    result = compare(base, cand)
    btc, eth = (pair_change(b, c) for b, c in result.matched)
    assert (btc.gained, btc.lost) == ((("all", "sentiment_drop"),), (("channel:x", "sentiment_drop"),))
    assert (btc.resolution, btc.resolution_shift) == ("later", 15 * 60.0)
    assert btc.member_ends == (("asset:BTC", "sentiment_drop", T0 + 3600, T0 + 75 * 60),)
    assert (eth.gained, eth.lost, eth.resolution, eth.resolution_shift) == ((), (), "never", None)
    assert change_row(eth)["member_resolutions"] == [{"scope": "asset:ETH", "kind": "sentiment_drop", "baseline": iso(T0 + 130 * 60),
                                                      "candidate": None, "later_min": None}]
    figures = summary(result)
    assert figures["members"] == {"gained": 1, "lost": 1, "incidents_changed": 1, "resolution_moved": 2, "resolution_moved_max_min": 15.0}
    assert figures["resolution"] == {"earlier": 0, "later": 1, "same": 0, "never": 1, "newly": 0, "neither": 0}
    assert summary(compare(cand, base))["resolution"]["newly"] == 1


def test_an_incident_days_older_is_not_the_same_event():
    # Production's ETH drop fired 2.7 days before the stretch and still fires through it; the
    # replay of the stretch raises ETH anew at minute 10. They overlap and share an alert, but
    # one is not the other: lost and new, not "in both, 3,900 minutes later".
    old = -int(2.7 * 24 * 60)
    base = episodes([rec("p0", "asset:ETH", old), *(rec("p0", "asset:ETH", m) for m in range(old + 60, 61, 60 * 24)), rec("p0", "asset:ETH", 60)])
    cand = episodes([rec("c1", "asset:ETH", 10), rec("c1", "asset:ETH", 50, "resolved")])
    result = compare(base, cand, T0, T0 + 86400)
    assert result.matched == [] and [e.incident_id for e in result.lost] == ["p0"] and [e.incident_id for e in result.new] == ["c1"]
    # Within the bound (2 h by default, or as given) the same pair is one event, the nearest first.
    assert len(compare(base, cand, T0, T0 + 86400, max_shift_s=3 * 86400).matched) == 1
    near = episodes([rec("b1", "asset:ETH", -100), rec("b1", "asset:ETH", 40, "resolved"), rec("b2", "asset:ETH", 5), rec("b2", "asset:ETH", 45, "resolved")])
    paired = compare(near, cand)
    assert [(b.incident_id, c.incident_id) for b, c in paired.matched] == [("b2", "c1")] and [e.incident_id for e in paired.lost] == ["b1"]


def test_an_empty_file_is_said_to_hold_no_records_not_to_differ_in_grouping(tmp_path):
    empty, grouped = episodes([]), episodes(BASELINE)
    assert empty.records == 0 and grouped.records == len(BASELINE)
    assert not grouping_differs(empty, grouped) and not grouping_differs(grouped, empty)
    ungrouped = episodes([{**r, "incident_id": r["alert_id"]} for r in CANDIDATE])
    assert grouping_differs(grouped, ungrouped)
    base, cand = write(tmp_path / "empty.jsonl", []), write(tmp_path / "cand.jsonl", CANDIDATE)
    done = subprocess.run([sys.executable, "-m", "sentinel.cli", "compare-alerts", str(base), str(cand)],
                          env={**os.environ, "COLUMNS": "300"}, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and f"{base} holds no alert records" in done.stdout, done.stdout
    assert "one run grouped" not in done.stdout


def test_compare_alerts_refuses_a_from_after_its_until(tmp_path):
    # Swapped, the stretch held no event time: both files read "0 incidents", as two quiet runs would.
    base = write(tmp_path / "a.jsonl", BASELINE)
    done = subprocess.run([sys.executable, "-m", "sentinel.cli", "compare-alerts", str(base), str(base),
                           "--from", iso(T0 + 400 * 60), "--until", iso(T0)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr and not done.stdout, (done.stdout, done.stderr)
    assert f"--from {iso(T0 + 400 * 60)} is after --until {iso(T0)}" in " ".join(done.stderr.split()), done.stderr
    same = subprocess.run([sys.executable, "-m", "sentinel.cli", "compare-alerts", str(base), str(base), "--json",
                           "--from", iso(T0 + 10 * 60), "--until", iso(T0 + 10 * 60)], capture_output=True, text=True, timeout=120)
    assert same.returncode == 0 and json.loads(same.stdout)["both"] >= 1, same.stderr  # an instant is a stretch: what fires then
