"""What operators type (a silence's scope, a reason, an incident id, `--by`), checked without a
server: the rules the console's API and the command line share."""

from __future__ import annotations

import pytest

from stream.alerts import audit
from stream.alerts.silences import SCOPE_FORMS, scope_name, silence_request, unmatched


@pytest.mark.parametrize("typed, stored", [
    ("asset:eth", "asset:ETH"), ("Asset:eth", "asset:ETH"), (" ASSET:btc ", "asset:BTC"), ("ALL", "all"), ("all", "all"),
    ("asset:*", "asset:*"), ("Channel:General", "channel:General"),  # channel names keep their case, as posts give them
    ("channel:[EN] general", "channel:[EN] general"), ("SOURCE:reddit", "source:reddit"), ("source:red*", "source:red*"),
    # A channel or source name as a post's is counted (contracts.normal_name): look-alikes, no invisible characters.
    ("channel:gen\u200beral", "channel:general"), ("channel:a|asset:ETH", "channel:a\u00a6asset:ETH"), ("source:{x}", "source:(x)"),
])
def test_a_silence_scope_is_all_or_a_known_prefix_and_a_name_normalised(typed, stored):
    assert scope_name(typed) == stored == silence_request(typed, 3600)


@pytest.mark.parametrize("typed", [
    "nonexistent:scope", "<img src=x onerror=alert(1)>", "asset:", "asset: ", "BTC", "*", "alll", ":ETH",
    "asset:E\u202eTH", "asset:B|TC", "asset:{ETH}", "asset:\x07", "channel:" + "x" * 129,
])
def test_a_scope_that_could_never_match_is_refused_saying_what_is_accepted(typed):
    with pytest.raises(ValueError) as refused:
        silence_request(typed, 3600)
    said = str(refused.value)
    assert said.startswith("scope:") and (SCOPE_FORMS in said or "the name after" in said), said


def test_a_pattern_that_matches_no_scope_seen_yet_is_said_with_a_near_miss_named():
    known = ["all", "asset:BTC", "channel:general"]
    assert unmatched("asset:*", known) is None and unmatched("all", known) is None and unmatched("channel:general", known) is None
    said = unmatched("channel:General", known)
    assert said is not None and "channel:General" in said and "did you mean channel:general" in said
    assert "did you mean" not in (unmatched("asset:ETH", known) or "") and unmatched("asset:ETH", known)
    assert unmatched("asset:ETH", []) is not None  # nothing seen yet: every pattern is said


def test_a_reason_is_one_line_of_at_most_the_limit_without_control_or_bidi_characters():
    assert audit.reason_text("  desk\n is\ton it ") == "desk is on it"
    assert audit.reason_text("x" * audit.MAX_REASON_CHARS) == "x" * audit.MAX_REASON_CHARS
    assert audit.reason_text("\U0001f468\u200d\U0001f4bb on it") == "\U0001f468\u200d\U0001f4bb on it"  # an emoji's joiner is kept
    for bad in ("x" * (audit.MAX_REASON_CHARS + 1), "evil \u202eti no", "a\u2066b", "bell\x07", "soft\u00adhyphen"):
        with pytest.raises(ValueError, match="^reason:"):
            audit.reason_text(bad)


def test_the_audit_pages_description_is_the_command_lines_in_parts():
    verdict = {"action": "verdict", "target": "36ae68f000a534b25d04", "scope": "asset:ETH", "kind": "sentiment_drop,volume_spike",
               "verdict": "false-alarm"}
    assert audit.what_parts(verdict) == ("incident", "36ae68f000a534b25d04", " over asset:ETH (sentiment_drop,volume_spike): false-alarm")
    assert audit.what(verdict) == "incident 36ae68f000a534b25d04 over asset:ETH (sentiment_drop,volume_spike): false-alarm"
    silenced = {"action": "silence", "target": "1a2b", "scope": "asset:*", "kind": "", "until": "2026-12-05T10:00:00Z"}
    assert audit.what(silenced) == "silence 1a2b over asset:* until 2026-12-05T10:00:00Z"


def test_an_incident_is_named_by_its_id_or_a_unique_start_of_six_characters_or_more():
    from stream.alerts.incidents import incident_by_prefix

    ids = ["36ae68f000a534b25d04", "36ae68f111a534b25d04", "9c01d2e3f4a5b6c7d8e9", "inc7"]
    assert incident_by_prefix("inc7", ids) == "inc7"  # a whole id, however short
    assert incident_by_prefix("9c01d2", ids) == "9c01d2e3f4a5b6c7d8e9"
    assert incident_by_prefix("36ae68f0", ids) == "36ae68f000a534b25d04"
    assert incident_by_prefix("ffffff", ids) == "ffffff"  # none: the caller says no such incident
    with pytest.raises(ValueError, match="36ae68f000a534b25d04, 36ae68f111a534b25d04"):
        incident_by_prefix("36ae68", ids)
    with pytest.raises(ValueError, match="6 characters"):
        incident_by_prefix("9c01", ids)


def test_an_empty_or_blank_by_is_the_login_name(monkeypatch):
    import getpass

    from sentinel.cli import operator_name

    monkeypatch.setattr(getpass, "getuser", lambda: "carol")
    assert operator_name(None) == operator_name("") == operator_name("   ") == "carol"
    assert operator_name(" dana ") == "dana"


@pytest.mark.parametrize("by, words", [("mallory\u202eecila", "control or invisible formatting"), ("x" * 101, "at most 100 characters"),
                                       ("eve\nalice", None)])
def test_a_by_is_held_to_the_rules_of_a_reason(by, words, capsys):
    # A right-to-left override in --by reversed the rest of the row in `sentinel audit`.
    import typer

    from sentinel.cli import operator_name

    if words is None:
        assert operator_name(by) == "eve alice"  # one line, as a reason
        return
    with pytest.raises(typer.Exit):
        operator_name(by)
    assert words in " ".join(capsys.readouterr().err.split())


def test_a_scope_with_no_posts_names_the_known_ones_same_name_in_another_case_first():
    from sentinel.cli import no_posts_for

    known = [f"asset:A{i:02d}" for i in range(20)] + ["channel:general"]
    said = no_posts_for("channel:General", known)
    assert said.startswith("no posts for scope channel:General (known scopes: channel:general, asset:A00") and "and 11 more" in said
    assert "none for any scope" in no_posts_for("all", [])


def test_a_restored_silence_keeps_the_rules_a_made_one_has():
    """`sentinel restore-silences` reads a file anyone could have edited: a line may not hold a
    silence that `sentinel silence` or the console would refuse (longer than 30 days, an author
    with a bidi override), or a restore would be the way around those rules. Such a line is a bad
    line: nothing is restored."""
    import json

    from stream.alerts.silences import MAX_SILENCE_S, restorable

    now = 1_767_225_600.0
    made = {"id": "1a2b3c4d", "scope": "asset:BTC", "kind": None, "until": now + 3600, "reason": "maintenance",
            "created_at": now - 60, "by": "erin", "via": "cli"}
    assert restorable([json.dumps(made)], now)[0][0].by == "erin"
    longest = {**made, "created_at": now - 3600, "until": now - 3600 + MAX_SILENCE_S}  # the longest a silence is made
    assert len(restorable([json.dumps(longest)], now)[0]) == 1
    for bad in ({**made, "until": now + 10 * 365 * 86400},  # a decade of silence, once a config change
                {**made, "created_at": now + 9 * 365 * 86400, "until": now + 9 * 365 * 86400 + 3600},  # its start put later too
                {**made, "by": "mallory\u202e"}):
        with pytest.raises(ValueError, match="line 2"):
            restorable([json.dumps(made), json.dumps(bad)], now)
