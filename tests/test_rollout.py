"""A classifier rollout (docs/operations.md, "Roll out a new adapter"). Since session 57 the model
epochs judge the sentiment kinds on the new classifier's buckets alone: the measured switch raised
no record (docs/results/model_switch_s57.json) and a volume spike during the warm-up was told as
with no switch, so the runbook's silences are needed only where a worker before session 57 judges.
For that case, the silences the runbook has operators set before a switch hold back every alert
the session 56 switch raised (docs/results/model_switch_s56.json, bench/model_switch.py), for as
long as the baselines mix the two models, and no volume spike; and the figures the runbook states
are those runs'. Pure: the runbook's own commands are parsed and matched as delivery matches
silences."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

from stream.alerts.silences import Silence, silence_of_incident, silence_request, silenced_by
from stream.settings import Settings
from stream.timefmt import parse_duration

ROOT = Path(__file__).resolve().parents[1]
RUN = json.loads((ROOT / "docs/results/model_switch_s56.json").read_text())
RUN57 = json.loads((ROOT / "docs/results/model_switch_s57.json").read_text())
NOW = 1_000_000.0


def rollout_section(text: str) -> str:
    start = text.index("## Roll out a new adapter")
    return text[start:text.index("\n## ", start + 1)]


def runbook_silences(section: str, now: float = NOW) -> list[Silence]:
    """The silences the runbook's `for scope ... for kind ... sentinel silence` loop makes."""
    loop = re.search(r"for scope in (.+?); do\s+for kind in (.+?); do\s+(sentinel silence .+?)\n", section)
    if loop is None:
        return []
    command = shlex.split(loop.group(3))
    duration = parse_duration(command[command.index("--for") + 1])
    return [Silence(id=f"{scope}/{kind}", scope=silence_request(scope, duration), kind=kind, until=now + duration,
                    reason="rollout", created_at=now)
            for scope in shlex.split(loop.group(1)) for kind in shlex.split(loop.group(2))]


def _section() -> str:
    return rollout_section((ROOT / "docs/operations.md").read_text(encoding="utf-8"))


def test_the_runbook_silences_every_alert_the_measured_switch_raised() -> None:
    silences = runbook_silences(_section())
    members = [dict(zip(("scope", "kind"), key.split(" "))) for key in RUN["switch_members"]]
    assert len(members) == 13
    unheld = [m for m in members if silenced_by(silences, m["scope"], m["kind"], NOW) is None]
    assert unheld == []
    (incident,) = RUN["compare_alerts"]["only_candidate_incidents"]
    assert silence_of_incident(silences, incident["root_scope"], members, NOW) is not None


def test_the_runbook_silences_hold_while_baselines_mix_and_leave_volume_spikes_told() -> None:
    silences = runbook_silences(_section())
    settings = Settings()
    mixed_s = parse_duration(settings.alert_baseline) + parse_duration(settings.alert_window)
    assert silenced_by(silences, "asset:ETH", "sentiment_drop", NOW + mixed_s - 60) is not None
    assert silenced_by(silences, "asset:ETH", "sentiment_drop", NOW + mixed_s + 60) is None
    assert silenced_by(silences, "asset:ETH", "volume_spike", NOW) is None
    assert silenced_by(silences, "all", "volume_spike", NOW) is None


def test_a_runbook_without_the_loop_silences_nothing() -> None:
    assert runbook_silences("## Roll out a new adapter\nset SENTINEL_ADAPTER and apply\n") == []


@pytest.mark.parametrize("figure", [
    lambda run: f"{run['switch']['alert_records']} alert records",
    lambda run: f"{len(run['switch_members'])} (scope, kind) members",
    lambda run: "{negative} of {total} posts negative and {positive} positive".format(
        total=sum(run["switch"]["labels_per_model"]["smollm2+default+ngram"].values()), **run["switch"]["labels_per_model"]["smollm2+default+ngram"]),
    lambda run: "called {negative} of {total} and {positive}".format(
        total=sum(run["switch"]["labels_per_model"]["lexicon+None"].values()), **run["switch"]["labels_per_model"]["lexicon+None"]),
    lambda run: f"the webhook got {len(run['runbook']['without_silences']['notices'])} notices",
])
def test_the_runbooks_switch_figures_are_the_stored_run(figure) -> None:
    assert RUN["no_switch"]["alert_records"] == 0
    assert figure(RUN) in " ".join(_section().split())


def test_the_runbooks_silences_held_back_every_notice_of_the_stored_run() -> None:
    assert RUN["runbook"]["without_silences"]["notices"]
    assert RUN["runbook"]["with_runbook_silences"]["runbook_silences"] is True
    assert RUN["runbook"]["with_runbook_silences"]["notices"] == []
    # A silence holds notices back, never records: the two runs judged the same lines alike.
    plain, silenced = RUN["runbook"]["without_silences"], RUN["runbook"]["with_runbook_silences"]
    assert (plain["alert_records"], plain["incidents"]) == (silenced["alert_records"], silenced["incidents"])


def test_the_switch_bench_replays_the_rest_only_once_the_new_worker_holds_every_partition(tmp_path: Path) -> None:
    """The stored run without silences first replayed the rest while the new worker held partitions
    0 and 1 only (4 min, a rebalance behind its classifying): 2 and 3, caught up at their last
    write, went idle after 60 s and the switch was judged from half the posts (44 records, 2
    incidents, against 72 and 1 for the same lines with silences)."""
    from bench.model_switch import holds, wait_holds_all

    half = 'INFO stream.worker: partitions assigned worker=w topic=forum-posts partitions="[0, 1]"\n'
    log = tmp_path / "worker-second.log"
    log.write_text(half)
    assert holds(half) == {0, 1}
    with pytest.raises(SystemExit, match="does not hold all 4 partitions"):
        wait_holds_all(tmp_path, "second", 4, timeout=0.5)
    log.write_text(half + half.replace("[0, 1]", "[0, 1, 2, 3]"))
    wait_holds_all(tmp_path, "second", 4, timeout=5)


def test_the_runbook_keeps_silencing_while_the_switchs_incident_is_open() -> None:
    """25 h (baseline plus window) is when the baselines hold only the new model's labels, not when
    the switch's incident closes: run on past it, `all` was still firing critical. Its repeats and
    updates go out once the 25 h silences lapse, so the runbook must send the operator to look
    for the open incident and silence on while it is open."""
    from stream.timefmt import epoch

    switch = epoch(RUN["switch"]["first_post_after_split"])
    mixed_s = parse_duration(Settings().alert_baseline) + parse_duration(Settings().alert_window)
    still = [member for member, last in RUN["past_25h"]["last_record"].items()
             if last["state"] == "firing" and epoch(last["window_end"]) > switch + mixed_s]
    assert "all sentiment_drop" in still and "all sentiment_surge" in still
    section = _section()
    silences = runbook_silences(section)
    assert silenced_by(silences, "all", "sentiment_drop", NOW + mixed_s + 60) is None  # one round of the loop has lapsed
    text = " ".join(section.split())
    assert "sentinel incidents --open" in text
    assert "run the loop again" in text


def test_a_volume_spike_under_the_runbooks_silences_tells_the_switchs_incident() -> None:
    """The runbook silences two kinds; an incident is held only while the silences cover every kind
    its root fired (`silence_of_incident`). A real swing's volume spike joined the switch's
    incident rooted at `all` in the measured run and it was told with the switch's members, so the
    runbook must not say that nobody is told of a real move while the silences hold."""
    run = RUN["real_swing_under_silences"]
    members = [dict(zip(("scope", "kind"), key.split(" "))) for key in run["switch_incident_members"]]
    silences = runbook_silences(_section())
    assert silence_of_incident(silences, "all", members, NOW) is None
    held = [m for m in members if m["kind"] != "volume_spike"]
    assert silence_of_incident(silences, "all", held, NOW) is not None
    assert any("market-wide sentiment_drop, volume_spike" in notice for notice in run["notices"])
    text = " ".join(_section().split())
    assert "a real sentiment move is recorded and shown in the console but nobody is told" not in text
    assert "`real_swing_under_silences`" in text


def test_with_the_model_epochs_the_measured_switch_raised_nothing_and_its_volume_spike_was_told() -> None:
    """The session 56 switch again (the same labels per model): no record where session 56 had 192,
    and a real swing during the warm-up kept every volume record of the run with no switch, losing
    only its sentiment drop, which the runbook must state as the price."""
    switch, before = RUN57["switch"], RUN["switch"]
    assert switch["labels_per_model"] == before["labels_per_model"] and before["alert_records"] == 192
    assert switch["alert_records"] == 0 == RUN57["no_switch"]["alert_records"]
    assert "model switch: sentiment kinds warm up" in switch["switch_log"]
    swing = RUN57["volume_during_warm_up"]
    volume = lambda records: [r for r in records if " volume_spike " in r]  # noqa: E731
    assert volume(swing["switch"]["records"]) == volume(swing["no_switch"]["records"]) != []
    assert [r for r in swing["switch"]["records"] if " volume_spike " not in r] == []
    lost = [r for r in swing["no_switch"]["records"] if " sentiment_drop " in r]
    assert swing["compare_alerts"]["members"]["lost"] == 5 and len(lost) == 8
    text = " ".join(_section().split())
    assert "0 alert records, where session 56 had 192" in text
    assert f"the same {len(volume(swing['switch']['records'])) - 5} firing and 5 resolved records" in text
    assert f"its sentiment drop ({len(lost)} records, 5 members with no switch) was not judged" in text


def test_the_runbook_makes_the_silences_optional_and_says_when_they_are_needed() -> None:
    text = " ".join(_section().split())
    assert "So a switch needs no silences" in text
    assert "(the silences loop, optional otherwise)" in text
    assert "with every worker at session 57 or later it is unnecessary" in text
    assert "tell the risk team" in text and "sentinel_sentiment_judged_from_seconds" in text
