"""Incident grouping (stream/alerts/grouping.py): pure, no servers. Transitions are built by hand;
explanations are given as the correlator would compute them."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Callable

from scenarios import SWING_MIX, T0, Episode, Scenario, generate, simulate_incidents
from stream.alerts.grouping import (
    Counts,
    Explanation,
    GroupConfig,
    GroupState,
    Question,
    advance,
    explain,
    explanations,
    flush,
    history_status,
    nests,
    next_boundary,
    parts_readable,
    questions,
    readable,
    sole_source,
    still_tail,
    tail_questions,
    unchanged,
    within,
)
from stream.alerts.correlator import entry_json
from stream.alerts.incidents import AlertRecord
from stream.alerts.judging import AlertConfig
from stream.timefmt import iso

CONFIG = GroupConfig(group_wait_s=300, group_interval_s=900, repeat_interval_s=4 * 3600)
B0 = T0 + 36 * 3600
MIN = 60


def transition(scope: str, kind: str, state: str, at: int, severity: str = "warning", repeat: bool = False) -> AlertRecord:
    return AlertRecord(
        alert_id=f"{scope}-{kind}", scope=scope, kind=kind, state=state, severity=severity, window_start=iso(at - 3600),
        window_end=iso(at), value=0.6, baseline=0.2, zscore=5.0, posts=40, sample_post_ids=[], notified=False, fired_at="-",
        onset=iso(at - 10 * MIN), metric="negative_share", repeat=repeat,
    )


def run(events: dict[int, list[AlertRecord]], answers: dict[tuple[str, str], Explanation] | None = None, until: int | None = None,
        acks: dict[str, str] | None = None, tail: Callable[[Question], Explanation] | None = None,
        rewrite: Callable[[int, GroupState], GroupState] | None = None):
    """Drive `advance` over the boundaries as the correlator does; returns (records, notices, state).
    `answers` answer the questions about parents; `tail` the tail checks (`tail_questions`), which
    without it find nothing explained; `rewrite` takes the state after each boundary (another
    worker's rewrite of it). Every boundary looked at is kept in `run.boundaries`, every
    entry with a notice in `run.told`."""
    state, records, notices = GroupState(), [], []
    pending = dict(events)
    after = min(pending) - MIN
    until = until if until is not None else max(pending) + 6 * 3600
    boundary = next_boundary(state, pending, after, until, MIN, CONFIG)
    run.boundaries, run.told = [], []
    while boundary is not None:
        run.boundaries.append(boundary)
        now = [t for b in sorted(pending) if b <= boundary for t in pending.pop(b)]
        tails = {(q.parent, q.kind): (tail(q) if tail else Explanation()) for q in tail_questions(state, boundary, CONFIG)}
        state, entries, _ = advance(state, boundary, now, {**(answers or {}), **tails}, CONFIG, acks)
        for entry in entries:
            records += [{**r, "notified": entry.notice is not None} for r in entry.records]
            if entry.notice is not None:
                notices.append(entry.notice)
                run.told.append(entry)
        if rewrite is not None:
            state = rewrite(boundary, state)
        boundary = next_boundary(state, pending, boundary, until, MIN, CONFIG)
    return records, notices, state


def test_a_cascade_is_one_incident_rooted_at_the_asset_and_notified_once():
    explained = Explanation(asset="asset:ETH")
    events = {
        B0: [transition("asset:ETH", "sentiment_drop", "firing", B0)],
        B0 + 2 * MIN: [transition("all", "sentiment_drop", "firing", B0 + 2 * MIN), transition("channel:trading", "sentiment_drop", "firing", B0 + 2 * MIN)],
        B0 + 3 * MIN: [transition("asset:ETH", "volume_spike", "firing", B0 + 3 * MIN)],
        B0 + 20 * MIN: [transition("source:forum", "sentiment_drop", "firing", B0 + 20 * MIN)],
        B0 + 60 * MIN: [transition(s, k, "resolved", B0 + 60 * MIN) for s, k in (("asset:ETH", "sentiment_drop"), ("asset:ETH", "volume_spike"),
                                                                                ("all", "sentiment_drop"), ("channel:trading", "sentiment_drop"),
                                                                                ("source:forum", "sentiment_drop"))],
    }
    answers = {(s, "sentiment_drop"): explained for s in ("all", "channel:trading", "source:forum")}
    records, notices, state = run(events, answers)
    assert len(records) == 10 and len({r["incident_id"] for r in records}) == 1
    assert {r["root_scope"] for r in records} == {"asset:ETH"}
    assert [(n.reason, n.state) for n in notices] == [("new", "firing"), ("resolved", "resolved")]
    first = notices[0]
    # The wait let the parents and the second kind join before anyone was told.
    assert {(m["scope"], m["kind"]) for m in first.members} == {
        ("asset:ETH", "sentiment_drop"), ("asset:ETH", "volume_spike"), ("all", "sentiment_drop"), ("channel:trading", "sentiment_drop")}
    assert first.at == iso(B0 + 5 * MIN)
    # Members are never notified themselves; the root's firing records ride on the first notice.
    assert all(not r["notified"] for r in records if r["scope"] != "asset:ETH")
    assert [r["kind"] for r in records if r["notified"]] == ["sentiment_drop", "volume_spike"]
    assert not state.incidents


def test_a_grouped_notice_gives_each_members_z_and_baseline_posts_as_a_single_alert_does():
    """A single alert's notice says "z +6.8 over 57 posts (1200 in the baseline)"; an incident's said
    the root's level and the posts behind it but neither its z nor how many posts its baseline held,
    and a risk analyst could not tell a move of 8 sigma over a thick baseline from 3 over a thin one.
    Each member's are kept with its level (`Incident.judged`) and said in its line, where known."""
    from stream.alerts import message

    def weighed(scope: str, kind: str, at: int, z: float, baseline_posts: int) -> AlertRecord:
        return replace(transition(scope, kind, "firing", at), zscore=z, baseline_posts=baseline_posts)

    events = {B0: [weighed("asset:ETH", "sentiment_drop", B0, 6.8, 1200)],
              B0 + 2 * MIN: [weighed("channel:trading", "sentiment_drop", B0 + 2 * MIN, 3.1, 140)]}
    _, notices, state = run(events, {("channel:trading", "sentiment_drop"): Explanation(asset="asset:ETH")}, until=B0 + 10 * MIN)
    (first,) = notices
    root, member = first.members
    assert (root["zscore"], root["baseline_posts"], member["zscore"], member["baseline_posts"]) == (6.8, 1200, 3.1, 140)
    lines = message.notice_body(first).splitlines()
    assert any(line.startswith("sentiment_drop on asset:ETH (warning, firing): ") and line.endswith(
        f"(40 posts by {iso(B0)}; z +6.8, 1200 in the baseline)") for line in lines), lines
    assert any(line.startswith("- sentiment_drop on channel:trading ") and line.endswith("; z +3.1, 140 in the baseline)")
               for line in lines), lines
    # Stored with the incident (a restart keeps them), and an entry from before session 57 (two
    # elements) still reads: level and posts, no z.
    (incident,) = GroupState.from_json(state.to_json()).incidents.values()
    assert incident.judged["asset:ETH|sentiment_drop"] == [iso(B0), 40, 6.8, 1200]
    old = {**root, "judged": iso(B0), "posts": 40}
    del old["zscore"], old["baseline_posts"]
    assert message.judged_text(old, weight=True) == f" (40 posts by {iso(B0)})"


def test_a_parent_not_explained_by_the_asset_is_its_own_incident():
    events = {B0: [transition("asset:ETH", "sentiment_drop", "firing", B0)],
              B0 + MIN: [transition("channel:general", "sentiment_drop", "firing", B0 + MIN)]}
    records, notices, _ = run(events, {("channel:general", "sentiment_drop"): Explanation()}, until=B0 + 30 * MIN)
    assert {(r["scope"], r["root_scope"]) for r in records} == {("asset:ETH", "asset:ETH"), ("channel:general", "channel:general")}
    assert len({r["incident_id"] for r in records}) == 2 and len(notices) == 2


def test_a_market_wide_move_is_one_incident_rooted_at_all():
    events = {B0: [transition("asset:BTC", "sentiment_drop", "firing", B0), transition("asset:ETH", "sentiment_drop", "firing", B0)],
              B0 + MIN: [transition("all", "sentiment_drop", "firing", B0 + MIN), transition("asset:SOL", "sentiment_drop", "firing", B0 + MIN)]}
    market = Explanation(market=("asset:BTC", "asset:ETH"))
    records, notices, _ = run(events, {("all", "sentiment_drop"): market}, until=B0 + 30 * MIN)
    assert {r["root_scope"] for r in records} == {"all"} and len({r["incident_id"] for r in records}) == 1
    assert len(notices) == 1 and notices[0].market
    assert {m["scope"] for m in notices[0].members} == {"all", "asset:BTC", "asset:ETH", "asset:SOL"}


def test_parents_that_fire_before_the_assets_of_a_market_wide_move_join_it():
    """`all`, a source and a channel fire first; BTC and ETH a minute later. Nobody was told yet, so
    `all` becomes the market-wide root and the parents it explains join."""
    events = {B0: [transition(s, "sentiment_drop", "firing", B0) for s in ("all", "source:forum", "channel:trading")],
              B0 + MIN: [transition(a, "sentiment_drop", "firing", B0 + MIN) for a in ("asset:BTC", "asset:ETH")]}
    market = Explanation(market=("asset:BTC", "asset:ETH"))
    answers = {(s, "sentiment_drop"): market for s in ("all", "source:forum", "channel:trading")}
    records, notices, _ = run(events, answers, until=B0 + 30 * MIN)
    assert len(notices) == 1 and notices[0].market and notices[0].root_scope == "all"
    assert {r["incident_id"] for r in records} == {notices[0].incident_id} and len(records) == 5
    # The incidents folded away are reported as merged (the history drops them), the rest as they are.
    state, _, touched = advance(GroupState(), B0, events[B0], answers, CONFIG)
    assert {i.root: i.merged_into for i in touched} == {"all": None, "source:forum": state.rooted_at("all").id,
                                                        "channel:trading": state.rooted_at("all").id}
    assert list(state.incidents) == [state.rooted_at("all").id] and not state.merged


def test_parents_an_asset_explains_before_it_fires_are_one_incident_that_the_asset_roots_when_it_fires():
    """A real classifier dilutes a sell-off, so `all` and the source (more posts) fire well before the
    asset does. The explain test already names the asset: one incident, rooted at the asset once it
    fires, told as an update; nobody gets three incidents for one event."""
    events = {B0: [transition("all", "sentiment_drop", "firing", B0), transition("source:forum", "sentiment_drop", "firing", B0)],
              B0 + 10 * MIN: [transition("asset:BTC", "sentiment_drop", "firing", B0 + 10 * MIN)],
              B0 + 70 * MIN: [transition(s, "sentiment_drop", "resolved", B0 + 70 * MIN) for s in ("asset:BTC", "all", "source:forum")]}
    answers = {(s, "sentiment_drop"): Explanation(asset="asset:BTC") for s in ("all", "source:forum")}
    records, notices, state = run(events, answers)
    assert [(n.reason, n.root_scope, n.at) for n in notices] == [
        ("new", "source:forum", iso(B0 + 5 * MIN)), ("update", "asset:BTC", iso(B0 + 20 * MIN)), ("resolved", "asset:BTC", iso(B0 + 70 * MIN))]
    assert {r["incident_id"] for r in records} == {notices[0].incident_id} and not state.incidents
    assert {m["scope"] for m in notices[1].members} == {"asset:BTC", "all", "source:forum"}
    # Records keep the root they were published with: the parents' first ones, before the asset fired.
    assert [(r["scope"], r["state"], r["root_scope"]) for r in records] == [
        ("all", "firing", "source:forum"), ("source:forum", "firing", "source:forum"), ("asset:BTC", "firing", "asset:BTC"),
        ("asset:BTC", "resolved", "asset:BTC"), ("source:forum", "resolved", "asset:BTC"), ("all", "resolved", "asset:BTC")]
    # Within the wait, the asset simply roots it: one notice about the asset.
    early = {**events, B0 + 10 * MIN: [], B0 + 3 * MIN: [transition("asset:BTC", "sentiment_drop", "firing", B0 + 3 * MIN)]}
    _, told, _ = run(early, answers)
    assert [(n.reason, n.root_scope) for n in told] == [("new", "asset:BTC"), ("resolved", "asset:BTC")]
    # A parent the asset does not explain stays apart.
    apart = {**answers, ("source:forum", "sentiment_drop"): Explanation()}
    _, separate, _ = run(events, apart)
    assert {n.root_scope for n in separate if n.reason == "new"} == {"all", "source:forum"}


def test_a_member_still_firing_when_its_root_resolves_becomes_its_own_incident():
    events = {B0: [transition("asset:ETH", "sentiment_drop", "firing", B0)],
              B0 + MIN: [transition("all", "sentiment_drop", "firing", B0 + MIN)],
              B0 + 40 * MIN: [transition("asset:ETH", "sentiment_drop", "resolved", B0 + 40 * MIN)],
              B0 + 120 * MIN: [transition("all", "sentiment_drop", "resolved", B0 + 120 * MIN)]}
    records, notices, state = run(events, {("all", "sentiment_drop"): Explanation(asset="asset:ETH")})
    first, second = notices[0].incident_id, notices[2].incident_id
    assert [(n.reason, n.root_scope) for n in notices] == [
        ("new", "asset:ETH"), ("resolved", "asset:ETH"), ("new", "all"), ("resolved", "all")]
    # The root's incident resolves group_interval after the root did; `all` is announced on its own.
    assert notices[1].at == iso(B0 + 55 * MIN) and notices[2].at == iso(B0 + 60 * MIN)
    assert [r["incident_id"] for r in records if r["scope"] == "all"] == [first, second]
    assert first != second and not state.incidents


def test_a_member_still_firing_after_its_root_is_the_events_tail_and_the_incident_is_told_over_without_it():
    """A channel's detector clears later than its asset's (its swing is diluted by the other
    assets' posts). While the channel has not moved on its own since the asset resolved, it is the
    event's tail: one incident, told over at the first check after the asset resolved, and the
    channel's own resolution published under it later, with no notice."""
    events = {B0: [transition("asset:ETH", "sentiment_drop", "firing", B0)],
              B0 + MIN: [transition("channel:general", "sentiment_drop", "firing", B0 + MIN)],
              B0 + 40 * MIN: [transition("asset:ETH", "sentiment_drop", "resolved", B0 + 40 * MIN)],
              B0 + 90 * MIN: [transition("channel:general", "sentiment_drop", "resolved", B0 + 90 * MIN)]}
    answers = {("channel:general", "sentiment_drop"): Explanation(asset="asset:ETH")}
    asked: list[Question] = []
    records, notices, state = run(events, answers, tail=lambda q: asked.append(q) or Explanation(asset="asset:ETH"))
    assert [(n.reason, n.root_scope, n.at) for n in notices] == [("new", "asset:ETH", iso(B0 + 5 * MIN)),
                                                                 ("resolved", "asset:ETH", iso(B0 + 55 * MIN))]
    assert [m["firing"] for m in notices[1].members] == [False, True]  # the root, then the tail still clearing
    assert {r["incident_id"] for r in records} == {notices[0].incident_id} and not state.incidents
    assert [(r["scope"], r["state"], r["notified"]) for r in records if r["window_end"] == iso(B0 + 90 * MIN)] == [
        ("channel:general", "resolved", False)]
    # While the tail clears, the history says resolved: that is what the risk team was told.
    _, _, told_over = run(events, answers, until=B0 + 60 * MIN, tail=lambda q: Explanation(asset="asset:ETH"))
    (incident,) = told_over.incidents.values()
    assert history_status(told_over, incident) == "resolved" and incident.firing()[0].scope == "channel:general"
    _, _, before = run(events, answers, until=B0 + 50 * MIN, tail=lambda q: Explanation(asset="asset:ETH"))
    assert history_status(before, next(iter(before.incidents.values()))) == "open"
    # Checked since the root resolved, against the rate before the member's onset, each group_interval.
    assert [(q.parent, q.candidates, q.onset, q.since, q.boundary) for q in asked] == [
        ("channel:general", ("asset:ETH",), B0 - 9 * MIN, B0 + 40 * MIN, B0 + t * MIN) for t in (55, 70, 85)]
    assert B0 + 56 * MIN not in run.boundaries  # a tail costs a boundary per check, not one per step


def test_a_resolution_says_when_its_root_resolved_and_when_the_incident_was_declared_over():
    """Session 45's walkthrough: a resolution told over at the tail check said 'as of' the check's
    time (15 minutes after ETH resolved here), which read as when the move ended. Its root members
    carry `root_resolved`, and the text names both times where they differ."""
    from stream.alerts import message

    events = {B0: [transition("asset:ETH", "sentiment_drop", "firing", B0)],
              B0 + MIN: [transition("channel:general", "sentiment_drop", "firing", B0 + MIN)],
              B0 + 40 * MIN: [transition("asset:ETH", "sentiment_drop", "resolved", B0 + 40 * MIN)],
              B0 + 90 * MIN: [transition("channel:general", "sentiment_drop", "resolved", B0 + 90 * MIN)]}
    answers = {("channel:general", "sentiment_drop"): Explanation(asset="asset:ETH")}
    _, notices, _ = run(events, answers, tail=lambda q: Explanation(asset="asset:ETH"))
    over = notices[-1]
    assert over.at == iso(B0 + 55 * MIN) and [m.get("root_resolved") for m in over.members] == [iso(B0 + 40 * MIN), None]
    text = message.notice_body(over)
    assert f"opened {iso(B0)}; root resolved {iso(B0 + 40 * MIN)}; declared over {iso(B0 + 55 * MIN)} (event time)" in text
    assert "as of" not in text and "as of" in message.notice_body(notices[0])
    assert not any("root_resolved" in m for m in notices[0].members)  # a firing notice has none
    # The root resolving last closes the incident then: one time, said as such.
    last = {**events, B0 + 90 * MIN: [transition("asset:ETH", "sentiment_drop", "resolved", B0 + 90 * MIN)],
            B0 + 40 * MIN: [transition("channel:general", "sentiment_drop", "resolved", B0 + 40 * MIN)]}
    closed = run(last, answers)[1][-1]
    assert f"opened {iso(B0)}; resolved {iso(B0 + 90 * MIN)} (event time)" in message.notice_body(closed)
    # A resolution written before root_resolved existed (an older worker's outbox entry) claims no root time.
    older = replace(over, members=[{k: v for k, v in m.items() if k != "root_resolved"} for m in over.members])
    assert f"opened {iso(B0)}; declared over {iso(B0 + 55 * MIN)} (event time)" in message.notice_body(older)


def test_a_tail_that_moves_on_its_own_leaves_as_its_own_incident():
    events = {B0: [transition("asset:ETH", "sentiment_drop", "firing", B0)],
              B0 + MIN: [transition("channel:general", "sentiment_drop", "firing", B0 + MIN),
                         transition("channel:trading", "sentiment_drop", "firing", B0 + MIN)],
              B0 + 40 * MIN: [transition("asset:ETH", "sentiment_drop", "resolved", B0 + 40 * MIN)],
              B0 + 100 * MIN: [transition("channel:general", "sentiment_drop", "resolved", B0 + 100 * MIN)],
              B0 + 110 * MIN: [transition("channel:trading", "sentiment_drop", "resolved", B0 + 110 * MIN)]}
    answers = {(c, "sentiment_drop"): Explanation(asset="asset:ETH") for c in ("channel:general", "channel:trading")}
    # General stays quiet after the asset; trading moves on its own by the second check.
    tail = lambda q: Explanation(asset="asset:ETH") if q.parent == "channel:general" or q.boundary < B0 + 70 * MIN else Explanation()  # noqa: E731
    records, notices, _ = run(events, answers, tail=tail)
    assert [(n.reason, n.root_scope, n.at) for n in notices] == [
        ("new", "asset:ETH", iso(B0 + 5 * MIN)), ("resolved", "asset:ETH", iso(B0 + 55 * MIN)),
        ("new", "channel:trading", iso(B0 + 75 * MIN)), ("resolved", "channel:trading", iso(B0 + 110 * MIN))]
    by_scope = {r["scope"]: r["incident_id"] for r in records if r["state"] == "resolved"}
    assert by_scope["channel:general"] == notices[0].incident_id and by_scope["channel:trading"] == notices[2].incident_id


def test_a_member_that_leaves_an_incident_takes_its_judged_level_along():
    """Session 45's walkthrough: a member that split off at the tail check, or fired anew after its
    incident was told over, left its `judged` entry ("(N posts by T)") in the old incident's stored
    state until that closed. It goes with the member; the new incident has it."""
    events = {B0: [transition("asset:ETH", "sentiment_drop", "firing", B0)],
              B0 + MIN: [transition("channel:general", "sentiment_drop", "firing", B0 + MIN),
                         transition("channel:general", "volume_spike", "firing", B0 + MIN),
                         transition("channel:trading", "sentiment_drop", "firing", B0 + MIN)],
              B0 + 40 * MIN: [transition("asset:ETH", "sentiment_drop", "resolved", B0 + 40 * MIN)],
              B0 + 60 * MIN: [transition("channel:general", "volume_spike", "resolved", B0 + 60 * MIN)],
              B0 + 65 * MIN: [transition("channel:general", "volume_spike", "firing", B0 + 65 * MIN)],
              B0 + 200 * MIN: [transition(c, k, "resolved", B0 + 200 * MIN) for c, k in
                               (("channel:general", "sentiment_drop"), ("channel:general", "volume_spike"), ("channel:trading", "sentiment_drop"))]}
    answers = {(c, k): Explanation(asset="asset:ETH") for c in ("channel:general", "channel:trading") for k in ("sentiment_drop", "volume_spike")}
    # At the check at 55 general is the tail and trading has moved on its own: it splits off.
    tail = lambda q: Explanation(asset="asset:ETH") if q.parent == "channel:general" else Explanation()  # noqa: E731
    _, notices, state = run(events, answers, until=B0 + 66 * MIN, tail=tail)
    assert [(n.reason, n.root_scope) for n in notices] == [("new", "asset:ETH"), ("resolved", "asset:ETH"), ("new", "channel:trading")]
    stored = GroupState.from_json(state.to_json()).incidents
    old = stored[notices[0].incident_id]
    assert old.over_told is not None and set(old.judged) == set(old.members) == {"asset:ETH|sentiment_drop", "channel:general|sentiment_drop"}
    trading = stored[notices[2].incident_id]
    assert trading.judged == {"channel:trading|sentiment_drop": [iso(B0 + MIN), 40, 5.0, 0]}
    (anew,) = [i for i in stored.values() if i.root == "channel:general"]  # the volume spike fired again at 65: news
    assert set(anew.judged) == set(anew.members) == {"channel:general|volume_spike"}


def test_a_root_that_fires_again_after_its_incident_was_told_over_is_a_new_incident():
    """The team heard the event end while a channel still cleared: the asset firing again is news
    (a new incident), the old incident takes only its tail's records, and the channel, once it
    resolved and fired again, joins the new event as the asset explains it now."""
    events = {B0: [transition("asset:ETH", "sentiment_drop", "firing", B0)],
              B0 + MIN: [transition("channel:general", "sentiment_drop", "firing", B0 + MIN)],
              B0 + 40 * MIN: [transition("asset:ETH", "sentiment_drop", "resolved", B0 + 40 * MIN)],
              B0 + 80 * MIN: [transition("asset:ETH", "sentiment_drop", "firing", B0 + 80 * MIN)],
              B0 + 90 * MIN: [transition("channel:general", "sentiment_drop", "resolved", B0 + 90 * MIN)],
              B0 + 100 * MIN: [transition("channel:general", "sentiment_drop", "firing", B0 + 100 * MIN)],
              B0 + 130 * MIN: [transition("asset:ETH", "sentiment_drop", "resolved", B0 + 130 * MIN),
                               transition("channel:general", "sentiment_drop", "resolved", B0 + 130 * MIN)]}
    answers = {("channel:general", "sentiment_drop"): Explanation(asset="asset:ETH")}
    records, notices, state = run(events, answers, tail=lambda q: Explanation(asset="asset:ETH"))
    assert [(n.reason, n.root_scope, n.at) for n in notices] == [
        ("new", "asset:ETH", iso(B0 + 5 * MIN)), ("resolved", "asset:ETH", iso(B0 + 55 * MIN)),
        ("new", "asset:ETH", iso(B0 + 85 * MIN)), ("resolved", "asset:ETH", iso(B0 + 130 * MIN))]
    first, second = notices[0].incident_id, notices[2].incident_id
    assert first != second and not state.incidents
    general = [(r["window_end"], r["state"], r["incident_id"]) for r in records if r["scope"] == "channel:general"]
    assert general == [(iso(B0 + MIN), "firing", first), (iso(B0 + 90 * MIN), "resolved", first),
                       (iso(B0 + 100 * MIN), "firing", second), (iso(B0 + 130 * MIN), "resolved", second)]


def _market_move(after: dict[int, list[AlertRecord]] | None = None) -> tuple[dict[int, list[AlertRecord]], dict[tuple[str, str], Explanation]]:
    """ETH and DOGE sell off together: `all` fires market-wide, the assets and a channel join. `all`
    resolves at 60 min, the assets and the channel (slower to clear) are still firing then."""
    market = Explanation(market=("asset:DOGE", "asset:ETH"))
    events = {B0: [transition(a, "sentiment_drop", "firing", B0) for a in ("asset:DOGE", "asset:ETH")],
              B0 + MIN: [transition(s, "sentiment_drop", "firing", B0 + MIN) for s in ("all", "channel:trading")],
              B0 + 60 * MIN: [transition("all", "sentiment_drop", "resolved", B0 + 60 * MIN)],
              B0 + 200 * MIN: [transition(s, "sentiment_drop", "resolved", B0 + 200 * MIN) for s in ("asset:DOGE", "asset:ETH", "channel:trading")],
              **(after or {})}
    return events, {(s, "sentiment_drop"): market for s in ("all", "channel:trading")}


def test_the_assets_of_a_market_wide_move_still_firing_after_all_resolved_are_its_tail_not_new_incidents():
    """two_assets.jsonl (audit 39, finding 6): `all` resolved first, and 15 minutes later the
    market-wide incident was told resolved without the assets and the channel still firing, which
    were paged 5 minutes after that as four new incidents of the same event ("opened 17:40, since
    12:00"). They are checked as the tail of an asset's incident is: quiet since `all` resolved,
    they stay with the incident, listed as still firing in its one resolved notice, and their
    resolutions go out under its id without a notice."""
    events, answers = _market_move()
    asked: list[Question] = []
    records, notices, state = run(events, answers, tail=lambda q: asked.append(q) or still_tail(q, Counts(36, 3), CONFIG))
    ident = notices[0].incident_id
    assert [(n.reason, n.root_scope, n.at) for n in notices] == [("new", "all", iso(B0 + 6 * MIN)), ("resolved", "all", iso(B0 + 75 * MIN))]
    assert {r["incident_id"] for r in records} == {ident} and not state.incidents
    assert [(m["scope"], m["firing"]) for m in notices[1].members] == [
        ("all", False), ("asset:DOGE", True), ("asset:ETH", True), ("channel:trading", True)]
    assert [(r["scope"], r["notified"]) for r in records if r["window_end"] == iso(B0 + 200 * MIN)] == [
        ("asset:DOGE", False), ("asset:ETH", False), ("channel:trading", False)]
    # Each member asked whether it moved on its own since `all` resolved, as an asset's tail is.
    assert sorted({(q.parent, q.candidates, q.since) for q in asked}) == [
        (s, ("all",), B0 + 60 * MIN) for s in ("asset:DOGE", "asset:ETH", "channel:trading")]
    # One that did move leaves as an incident of its own; the rest stay.
    moved = lambda q: Explanation() if q.parent == "asset:ETH" else Explanation(asset=q.candidates[0])  # noqa: E731
    _, split, _ = run(events, answers, tail=moved)
    assert [(n.reason, n.root_scope, n.at) for n in split] == [
        ("new", "all", iso(B0 + 6 * MIN)), ("resolved", "all", iso(B0 + 75 * MIN)),
        ("new", "asset:ETH", iso(B0 + 80 * MIN)), ("resolved", "asset:ETH", iso(B0 + 200 * MIN))]


def test_a_parent_rooted_incident_keeps_its_tail_too():
    """Parents an asset explains before it fires (here it never does) share an incident rooted at
    one of them. The root resolving first leaves the other as its tail, checked as any root's."""
    events = {B0: [transition("all", "sentiment_drop", "firing", B0), transition("source:forum", "sentiment_drop", "firing", B0)],
              B0 + 60 * MIN: [transition("source:forum", "sentiment_drop", "resolved", B0 + 60 * MIN)],
              B0 + 150 * MIN: [transition("all", "sentiment_drop", "resolved", B0 + 150 * MIN)]}
    answers = {(s, "sentiment_drop"): Explanation(asset="asset:BTC") for s in ("all", "source:forum")}
    records, notices, _ = run(events, answers, tail=lambda q: Explanation(asset=q.candidates[0]))
    assert [(n.reason, n.root_scope, n.at) for n in notices] == [("new", "source:forum", iso(B0 + 5 * MIN)),
                                                                 ("resolved", "source:forum", iso(B0 + 75 * MIN))]
    assert {r["incident_id"] for r in records} == {notices[0].incident_id}


def test_news_never_joins_a_market_wide_incident_told_over():
    """Told over, the market-wide incident takes only its tail's records. A new move (BTC drops at
    100 min; `all` fires again at 110 min, moved by BTC and ETH) is a new incident with its own
    notices, not records published under an incident nobody is told of any more."""
    later = {B0 + 100 * MIN: [transition("asset:BTC", "sentiment_drop", "firing", B0 + 100 * MIN)],
             B0 + 110 * MIN: [transition("all", "sentiment_drop", "firing", B0 + 110 * MIN)],
             B0 + 150 * MIN: [transition(s, "sentiment_drop", "resolved", B0 + 150 * MIN) for s in ("all", "asset:BTC")]}
    events, answers = _market_move(later)
    records, notices, state = run(events, {**answers, ("all", "sentiment_drop"): Explanation(market=("asset:BTC", "asset:ETH"))},
                                  tail=lambda q: Explanation(asset=q.candidates[0]))
    first = notices[0].incident_id
    assert [(n.reason, n.root_scope, n.at, n.incident_id == first) for n in notices] == [
        ("new", "all", iso(B0 + 6 * MIN), True), ("resolved", "all", iso(B0 + 75 * MIN), True),
        ("new", "asset:BTC", iso(B0 + 105 * MIN), False), ("new", "all", iso(B0 + 115 * MIN), False),
        ("resolved", "asset:BTC", iso(B0 + 150 * MIN), False), ("resolved", "all", iso(B0 + 150 * MIN), False)]
    fresh = [r for r in records if r["window_end"] >= iso(B0 + 100 * MIN) and r["scope"] in ("asset:BTC", "all")]
    assert len(fresh) == 4 and all(r["incident_id"] != first and r["notified"] for r in fresh)
    # The old incident's tail still goes out under its id.
    assert {r["incident_id"] for r in records if r["scope"] in ("asset:DOGE", "asset:ETH", "channel:trading")} == {first}
    assert not state.incidents


def test_no_reminder_goes_once_the_root_resolved():
    """The repeat falls due 4 h after the first notice; the root resolved 5 min before it, a member
    still fires. Neither the member left nor the tail is told as the root 'still firing'."""
    events = {B0: [transition("asset:ETH", "sentiment_drop", "firing", B0, severity="critical")],
              B0 + MIN: [transition("channel:general", "sentiment_drop", "firing", B0 + MIN)],
              B0 + 240 * MIN: [transition("asset:ETH", "sentiment_drop", "resolved", B0 + 240 * MIN)],
              B0 + 300 * MIN: [transition("channel:general", "sentiment_drop", "resolved", B0 + 300 * MIN)]}
    answers = {("channel:general", "sentiment_drop"): Explanation(asset="asset:ETH")}
    _, split, _ = run(events, answers)
    assert [(n.reason, n.root_scope, n.at) for n in split] == [
        ("new", "asset:ETH", iso(B0 + 5 * MIN)), ("resolved", "asset:ETH", iso(B0 + 255 * MIN)),
        ("new", "channel:general", iso(B0 + 260 * MIN)), ("resolved", "channel:general", iso(B0 + 300 * MIN))]
    _, tailed, _ = run(events, answers, tail=lambda q: Explanation(asset="asset:ETH"))
    assert [(n.reason, n.at) for n in tailed] == [("new", iso(B0 + 5 * MIN)), ("resolved", iso(B0 + 255 * MIN))]


def test_updates_come_for_news_only_and_repeats_stop_when_acknowledged():
    events = {B0: [transition("asset:ETH", "sentiment_drop", "firing", B0)],
              B0 + 10 * MIN: [transition("all", "sentiment_drop", "firing", B0 + 10 * MIN)],
              B0 + 12 * MIN: [transition("asset:ETH", "sentiment_drop", "firing", B0 + 12 * MIN, severity="critical", repeat=True)]}
    answers = {("all", "sentiment_drop"): Explanation(asset="asset:ETH")}
    records, notices, state = run(events, answers, until=B0 + 9 * 3600)
    # A parent joining is not news; a higher severity is (after group_interval); then a repeat every 4 h.
    assert [(n.reason, n.severity, n.at) for n in notices] == [
        ("new", "warning", iso(B0 + 5 * MIN)), ("update", "critical", iso(B0 + 20 * MIN)),
        ("repeat", "critical", iso(B0 + 260 * MIN)), ("repeat", "critical", iso(B0 + 500 * MIN))]
    ident = notices[0].incident_id
    acked_records, acked, _ = run(events, answers, until=B0 + 9 * 3600, acks={ident: "on it"})
    assert [n.reason for n in acked] == ["new", "update"] and acked[-1].acked == "on it"
    # The acknowledgement is in the records too (here it came before any of them was published).
    assert {r["acknowledged"] for r in records} == {""}
    assert acked_records and {r["acknowledged"] for r in acked_records} == {"on it"}


def test_the_update_that_the_root_turned_critical_carries_the_record_that_made_it_so():
    # Its record (and so its sample posts) rides on the update notice, not published beside it.
    events = {B0: [transition("asset:ETH", "sentiment_drop", "firing", B0)],
              B0 + 12 * MIN: [transition("asset:ETH", "sentiment_drop", "firing", B0 + 12 * MIN, severity="critical", repeat=True)]}
    records, notices, _ = run(events, until=B0 + 60 * MIN)
    assert [(n.reason, n.severity) for n in notices] == [("new", "warning"), ("update", "critical")]
    critical = [r for r in records if r["severity"] == "critical"]
    assert len(critical) == 1 and critical[0]["notified"] is True


def test_a_parent_that_fires_first_is_re_rooted_at_the_asset_before_anyone_is_told():
    events = {B0: [transition("all", "volume_spike", "firing", B0)],
              B0 + 2 * MIN: [transition("asset:ETH", "volume_spike", "firing", B0 + 2 * MIN)]}
    state = GroupState()
    state, _, _ = advance(state, B0, events[B0], {}, CONFIG)
    asked = questions(state, B0 + 2 * MIN, events[B0 + 2 * MIN], CONFIG)
    assert asked == [Question("all", "volume_spike", B0 - 10 * MIN, B0 + 2 * MIN, ("asset:ETH",))]
    records, notices, _ = run(events, {("all", "volume_spike"): Explanation(asset="asset:ETH")}, until=B0 + 30 * MIN)
    assert len(notices) == 1 and notices[0].root_scope == "asset:ETH"
    assert {r["incident_id"] for r in records} == {notices[0].incident_id}


def test_an_incident_over_within_its_wait_is_still_told_then_resolved_and_flush_announces_the_waiting():
    events = {B0: [transition("asset:SOL", "sentiment_surge", "firing", B0)], B0 + 2 * MIN: [transition("asset:SOL", "sentiment_surge", "resolved", B0 + 2 * MIN)]}
    _, notices, _ = run(events)
    assert [n.reason for n in notices] == ["new", "resolved"]
    state, _, _ = advance(GroupState(), B0, events[B0], {}, CONFIG)
    state, entries, _ = flush(state, B0 + MIN)
    assert [e.notice.reason for e in entries] == ["new"] and entries[0].records[0]["root_scope"] == "asset:SOL"


def test_a_tail_check_asks_whether_the_member_moved_since_the_root_resolved():
    """36 negatives in the 6 h before the onset (one in 10 minutes): 3 expected in the half hour
    since the root resolved. 3 seen is the tail; 20 is a move of its own. Hours later, the rate's
    own noise counts: 122 in 4 h against 125 in the 6 h before (83 expected) is z 3.3, not 4.2."""
    q = Question("channel:general", "sentiment_drop", B0 - 6 * 3600, B0, ("asset:ETH",), since=B0 - 30 * MIN)
    assert q.span() == (B0 - 30 * MIN, B0) and replace(q, since=None).span() == (B0 - 6 * 3600, B0)
    assert still_tail(q, Counts(36, 3), CONFIG) == Explanation(asset="asset:ETH")
    moved = still_tail(q, Counts(36, 20), CONFIG)
    assert moved == Explanation() and moved.rest_z == 9.43  # 17 over sqrt(3 + 36 / 12**2)
    late = replace(q, since=B0 - 4 * 3600)
    assert still_tail(late, Counts(125, 122), CONFIG).rest_z == 3.28 and still_tail(late, Counts(125, 122), CONFIG).asset
    # The same through `explanations`, which reads only the member for a tail check.
    read: list[str] = []
    assert explanations([q], lambda question, scope: read.append(scope) or Counts(36, 3), CONFIG) == {
        ("channel:general", "sentiment_drop"): Explanation(asset="asset:ETH")}
    assert read == ["channel:general"]


def test_explain_takes_the_asset_that_carries_the_excess_and_leaves_the_rest_quiet():
    q = Question("all", "sentiment_drop", B0, B0 + 20 * MIN, ("asset:BTC", "asset:ETH"))
    ref = CONFIG.reference_s
    per_20 = 20 * MIN / ref
    # all: 60 negatives expected in 20 minutes (from 1080 in 6 h), 110 seen; ETH carries 45 of the 50 extra.
    parent = Counts(1080, 110)
    eth, btc = Counts(360, 65), Counts(360, 22)
    assert abs(360 * per_20 - 20) < 1e-9
    found = explain(q, parent, {"asset:BTC": btc, "asset:ETH": eth}, CONFIG)
    assert found == Explanation(asset="asset:ETH")
    # Why, for the log: 50 extra, ETH's 45 of them, and the rest of `all` at 45 against 40 expected.
    assert (found.excess, found.top, found.share, found.rest_z) == (50.0, "asset:ETH", 0.9, 0.79)
    # The same, but the rest of `all` also jumped (40 extra beyond ETH): not explained by ETH alone.
    jumped = explain(q, Counts(1080, 150), {"asset:BTC": btc, "asset:ETH": eth}, CONFIG)
    assert jumped.asset == "" and (jumped.excess, jumped.top, jumped.share) == (90.0, "asset:ETH", 0.5)
    # Two assets sharing the move: market-wide.
    assert explain(q, Counts(1080, 120), {"asset:BTC": Counts(360, 50), "asset:ETH": Counts(360, 50)}, CONFIG) == Explanation(
        market=("asset:BTC", "asset:ETH"))
    # A channel moved by several assets joins a market-wide incident if there is one (grouping decides).
    assert explain(replace(q, parent="channel:general"), Counts(1080, 120), {"asset:BTC": Counts(360, 50), "asset:ETH": Counts(360, 50)},
                   CONFIG).market == ("asset:BTC", "asset:ETH")
    # No excess explains nothing.
    assert explain(q, Counts(1080, 50), {"asset:ETH": eth}, CONFIG) == Explanation()


def test_a_question_older_than_the_pair_scopes_is_read_from_the_earliest_kept_onset():
    q = Question("channel:general", "sentiment_drop", B0, B0 + 20 * MIN, ("asset:ETH",))
    assert within(q, B0) is q and within(q, B0 - MIN) is q
    assert within(q, B0 + 5 * MIN) == replace(q, onset=B0 + 5 * MIN)  # the move's last 15 minutes
    assert within(q, B0 + 30 * MIN).onset == B0 + 20 * MIN  # never past the boundary: nothing since, nothing explained
    assert explain(within(q, B0 + 30 * MIN), Counts(1080, 0), {"asset:ETH": Counts(360, 0)}, CONFIG) == Explanation()


def test_what_a_question_reads_is_a_function_of_its_boundary_alone():
    """grouping.readable: no further back than a retention before the boundary, a pair retention
    where a pair scope is read (a channel's or a source's share of an asset), whatever the writes
    had trimmed when it was asked (that made two replays of one input answer differently)."""
    day, hours = 24 * 3600, 3600
    old = Question("channel:general", "sentiment_drop", B0 - 2 * day, B0, ("asset:ETH",))
    assert readable(old, 2 * day, 12 * hours, CONFIG).onset == B0 - 12 * hours + CONFIG.reference_s  # reads a pair scope
    assert readable(replace(old, parent="all"), 2 * day, 12 * hours, CONFIG).onset == B0 - 2 * day + CONFIG.reference_s  # its parts' own
    recent = replace(old, onset=B0 - 2 * hours)
    assert readable(recent, 2 * day, 12 * hours, CONFIG) == recent
    # A tail check reads its parent alone: its reference from a retention back, its span since the
    # root resolved from there at the latest.
    tail = Question("channel:general", "sentiment_drop", B0 - 3 * day, B0, ("asset:ETH",), since=B0 - 3 * day + hours)
    assert readable(tail, 2 * day, 12 * hours, CONFIG) == replace(tail, onset=B0 - 2 * day + CONFIG.reference_s, since=B0 - 2 * day)


def test_a_generated_cascade_gives_one_incident_and_few_notices():
    """The sequential detector on a generated ETH sell-off (3x volume, 60% negative) that moves its
    channels and `all`: every record of the event carries one incident id, and the risk team gets
    at most two firing notices and one resolved before the first repeat."""
    config = replace(AlertConfig(), detector="sequential")
    scenario = Scenario(days=2, episodes=(Episode("ETH", 36 * 3600, mix=SWING_MIX, volume=3.0),))
    for seed in range(3):
        records, notices = simulate_incidents(generate(scenario, seed), config, CONFIG)
        eth = [r for r in records if r["window_end"] < iso(T0 + 37 * 3600 + 1800)]
        assert len(eth) >= 4 and {r["root_scope"] for r in eth} == {"asset:ETH"} and len({r["incident_id"] for r in eth}) == 1
        about = [n for n in notices if n.incident_id == eth[0]["incident_id"]]
        firing = [n for n in about if n.state == "firing" and n.reason != "repeat"]
        assert 1 <= len(firing) <= 2 and sum(n.state == "resolved" for n in about) == 1


def test_the_state_reads_back_and_a_field_from_a_newer_version_is_dropped():
    """A worker left behind in a rolling upgrade reads a newer worker's state instead of failing
    every correlation round on a field it does not know."""
    events = {B0: [transition("asset:ETH", "sentiment_drop", "firing", B0)],
              B0 + MIN: [transition("channel:general", "sentiment_drop", "firing", B0 + MIN)],
              B0 + 40 * MIN: [transition("asset:ETH", "sentiment_drop", "resolved", B0 + 40 * MIN)]}
    answers = {("channel:general", "sentiment_drop"): Explanation(asset="asset:ETH")}
    _, _, state = run(events, answers, until=B0 + 60 * MIN, tail=lambda q: Explanation(asset="asset:ETH"))
    data = state.to_json()
    assert GroupState.from_json(data) == state and next(iter(state.incidents.values())).over_told == B0 + 55 * MIN
    for incident in data["incidents"].values():
        incident["from_the_future"] = 1
    assert GroupState.from_json(data) == state


def test_a_resolved_incident_closed_when_the_team_was_told_not_when_its_tail_cleared():
    from stream.alerts.correlator import summary
    from stream.alerts.grouping import Incident

    told = Incident("inc1", "asset:ETH", B0, over_told=B0 + 60 * MIN)
    assert summary(told, "resolved", B0 + 150 * MIN)["at"] == B0 + 60 * MIN  # the channel cleared 90 min later
    assert summary(told, "open", B0 + 150 * MIN)["at"] == B0 + 150 * MIN
    assert summary(Incident("inc2", "asset:ETH", B0), "resolved", B0 + 30 * MIN)["at"] == B0 + 30 * MIN


# --- a channel or a source explains its parents when no asset does --------------------------------

CHANNEL, SOURCE = "channel:meritcircle", "source:discord"


def run_asking(events: dict[int, list[AlertRecord]], counts: Callable[[Question, str], Counts], active: tuple[str, ...] = ()):
    """`run`, with every question answered by the explain-away test on `counts(question, scope)`,
    as the correlator answers them (scopes read: the parent, pair scopes, parts' own)."""
    state, records, notices = GroupState(), [], []
    pending = dict(events)
    until = max(pending) + 6 * 3600
    boundary = next_boundary(state, pending, min(pending) - MIN, until, MIN, CONFIG)
    while boundary is not None:
        now = [t for b in sorted(pending) if b <= boundary for t in pending.pop(b)]
        answers = explanations(questions(state, boundary, now, CONFIG, active), counts, CONFIG)
        state, entries, _ = advance(state, boundary, now, answers, CONFIG)
        for entry in entries:
            records += [{**r, "notified": entry.notice is not None} for r in entry.records]
            notices += [entry.notice] if entry.notice is not None else []
        boundary = next_boundary(state, pending, boundary, until, MIN, CONFIG)
    return records, notices, state


def test_a_channel_its_source_and_all_moving_on_the_same_posts_are_one_incident_rooted_at_the_channel():
    """One channel of one source (the research's Discord export): the three scopes hold the same
    posts, fire together and, before, were three incidents and three pages per event."""
    scopes = (CHANNEL, SOURCE, "all")
    events = {B0: [transition(s, "volume_spike", "firing", B0) for s in scopes],
              B0 + 60 * MIN: [transition(s, "volume_spike", "resolved", B0 + 60 * MIN) for s in scopes]}
    same = lambda q, scope: Counts(60, 80)  # noqa: E731 - 10 an hour before the onset, 80 in the 10 minutes since
    records, notices, state = run_asking(events, same)
    assert {r["incident_id"] for r in records} == {notices[0].incident_id} and not state.incidents
    assert {r["root_scope"] for r in records} == {CHANNEL}
    assert [(n.reason, n.root_scope) for n in notices] == [("new", CHANNEL), ("resolved", CHANNEL)]
    assert {m["scope"] for m in notices[0].members} == set(scopes)


def test_the_explain_test_asks_channels_and_sources_only_when_no_asset_explains():
    q = Question("all", "sentiment_drop", B0, B0 + 10 * MIN, ("asset:ETH", CHANNEL, SOURCE))
    moved, quiet = Counts(60, 80), Counts(30, 5)
    by = lambda table: lambda q, scope: table.get(scope, quiet)  # noqa: E731
    # The asset carries the move: it explains, as before (a channel never outranks an asset).
    assert explanations([q], by({"all": moved, "asset:ETH": moved, CHANNEL: moved, SOURCE: moved}), CONFIG)[("all", "sentiment_drop")].asset == "asset:ETH"
    # No asset does: the channel before the source, though both carry all of it.
    assert explanations([q], by({"all": moved, CHANNEL: moved, SOURCE: moved}), CONFIG)[("all", "sentiment_drop")].asset == CHANNEL
    # The channel carries a third, the source all: the source.
    third = Counts(20, 26)
    assert explanations([q], by({"all": moved, CHANNEL: third, SOURCE: moved}), CONFIG)[("all", "sentiment_drop")].asset == SOURCE
    # Two channels each with half are no market-wide move: nothing explains it.
    half = Counts(30, 40)
    two = replace(q, candidates=(CHANNEL, "channel:trading"))
    assert explanations([two], by({"all": moved, CHANNEL: half, "channel:trading": half}), CONFIG)[("all", "sentiment_drop")] == Explanation(
        excess=round(80 - 60 / 6 / 6, 1))
    # Which parts may explain which parent.
    assert nests("all", CHANNEL) and nests("all", SOURCE) and nests(SOURCE, CHANNEL)
    assert not nests(CHANNEL, SOURCE) and not nests(CHANNEL, "channel:trading") and not nests(SOURCE, "source:telegram")
    assert not nests("all", "asset:ETH") and not nests(SOURCE, SOURCE)


def test_questions_name_the_channels_and_sources_firing_as_candidates_of_their_parents():
    now = [transition(s, "volume_spike", "firing", B0) for s in (CHANNEL, SOURCE, "all")]
    asked = {q.parent: q.candidates for q in questions(GroupState(), B0, now, CONFIG, ("asset:MC",))}
    assert asked == {CHANNEL: ("asset:MC",), SOURCE: ("asset:MC", CHANNEL), "all": ("asset:MC", CHANNEL, SOURCE)}  # a channel: assets alone
    assert questions(GroupState(), B0, now[:1], CONFIG) == []  # the channel alone: nothing to ask


def test_a_channel_explains_a_source_only_while_its_posts_are_that_sources_alone():
    """`channel:general` is one scope for every source with a `general`: its own counts are a
    source's share only when none of its posts in the hours read came from elsewhere."""
    h = 1_790_812_800
    alone = [f"{h}|source:discord|channel:general", f"{h + 3600}|source:discord|channel:general", f"{h}|source:discord|channel:trading"]
    assert sole_source(alone, "channel:general") == "source:discord"
    assert sole_source(alone + [f"{h + 3600}|source:telegram|channel:general"], "channel:general") is None
    assert sole_source(alone + [f"{h}|channel:general"], "channel:general") is None  # a post that named no source
    assert sole_source(alone, "channel:offtopic") is None  # no posts in the hours read
    q = Question("source:discord", "volume_spike", B0, B0 + 10 * MIN, ("asset:ETH", "channel:general", "channel:trading"))
    assert parts_readable(q, alone) == q
    both = alone + [f"{h}|source:telegram|channel:general"]
    assert parts_readable(q, both).candidates == ("asset:ETH", "channel:trading")
    assert parts_readable(replace(q, parent="all"), both) == replace(q, parent="all")  # `all` holds every source's posts


def test_a_source_on_two_channels_is_not_explained_by_the_channel_whose_name_another_source_shares():
    """Discord's #general and a Telegram group called general move together: the Discord source's
    move is not #general's (read from its own scope it would be Telegram's too), so it is an
    incident of its own, while `all` joins the channel's."""
    events = {B0: [transition(s, "volume_spike", "firing", B0) for s in ("channel:general", SOURCE, "all")]}
    moved = lambda q, scope: Counts(60, 80)  # noqa: E731
    unreadable = lambda qs: [parts_readable(q, [f"{B0 // 3600 * 3600}|source:telegram|channel:general"]) for q in qs]  # noqa: E731
    state, boundary = GroupState(), B0
    answers = explanations(unreadable(questions(state, boundary, events[B0], CONFIG)), moved, CONFIG)
    state, _, _ = advance(state, boundary, events[B0], answers, CONFIG)
    roots = sorted((i.root, sorted(m.scope for m in i.members.values())) for i in state.incidents.values())
    assert roots == [("channel:general", ["all", "channel:general"]), (SOURCE, [SOURCE])]


def test_a_channel_firing_after_its_source_and_all_becomes_the_root_of_their_incident():
    """The source and `all` fire two minutes before the channel (a source with other, quiet
    channels has more posts): `all` joins the source's incident and its record goes out. When the
    channel fires, before anyone is told, it folds in and roots the incident; records published
    before keep the root they carried."""
    events = {B0: [transition(s, "volume_spike", "firing", B0) for s in (SOURCE, "all")],
              B0 + 2 * MIN: [transition(CHANNEL, "volume_spike", "firing", B0 + 2 * MIN)],
              B0 + 60 * MIN: [transition(s, "volume_spike", "resolved", B0 + 60 * MIN) for s in (CHANNEL, SOURCE, "all")]}
    records, notices, state = run_asking(events, lambda q, scope: Counts(60, 80))
    assert len({r["incident_id"] for r in records}) == 1 and not state.incidents
    assert [(r["scope"], r["root_scope"]) for r in records if r["state"] == "firing"][0] == ("all", SOURCE)
    assert [(n.reason, n.root_scope) for n in notices] == [("new", CHANNEL), ("resolved", CHANNEL)]



def test_a_notices_members_say_when_and_on_how_many_posts_their_level_was_judged():
    """A member's level comes from its own last record: the demo's update at 13:01 said of ETH's
    volume spike '330 posts per 1h since 12:00', the level judged at 12:02 on 11 posts (an hour
    later it was 138). Each notice member now carries when its level was judged and on how many
    posts; a member that folds in or splits off keeps them, and the state reads back with them."""
    events = {B0: [transition("asset:ETH", "sentiment_drop", "firing", B0)],
              B0 + 2 * MIN: [replace(transition("asset:ETH", "volume_spike", "firing", B0 + 2 * MIN), posts=11)],
              B0 + 61 * MIN: [replace(transition("asset:ETH", "sentiment_drop", "firing", B0 + 61 * MIN, severity="critical", repeat=True),
                                      posts=149)]}
    _, notices, state = run(events, until=B0 + 80 * MIN)
    assert [n.reason for n in notices] == ["new", "update"]
    judged = {n.reason: {m["kind"]: (m["judged"], m["posts"]) for m in n.members} for n in notices}
    assert judged["new"] == {"sentiment_drop": (iso(B0), 40), "volume_spike": (iso(B0 + 2 * MIN), 11)}
    assert judged["update"] == {"sentiment_drop": (iso(B0 + 61 * MIN), 149), "volume_spike": (iso(B0 + 2 * MIN), 11)}
    assert GroupState.from_json(state.to_json()) == state
    # Assets whose incidents fold into a market-wide one keep their own judgements.
    events = {B0: [transition("asset:BTC", "sentiment_drop", "firing", B0), transition("asset:ETH", "sentiment_drop", "firing", B0)],
              B0 + MIN: [transition("all", "sentiment_drop", "firing", B0 + MIN)]}
    _, notices, _ = run(events, {("all", "sentiment_drop"): Explanation(market=("asset:BTC", "asset:ETH"))}, until=B0 + 20 * MIN)
    assert notices[0].market
    assert {m["scope"]: m["judged"] for m in notices[0].members} == {"all": iso(B0 + MIN), "asset:BTC": iso(B0), "asset:ETH": iso(B0)}


def test_an_incidents_summary_says_when_and_on_how_many_posts_each_member_was_judged():
    """What `sentinel incidents --json` and the console read: the console's incident page and
    overview said of ETH's volume spike "330 posts per 1h against 10" an hour into the incident, a
    level judged at 12:02 on 11 posts, as the notices did before they gained the same two fields."""
    from stream.alerts.correlator import summary

    events = {B0: [transition("asset:ETH", "sentiment_drop", "firing", B0)],
              B0 + 2 * MIN: [replace(transition("asset:ETH", "volume_spike", "firing", B0 + 2 * MIN), posts=11)]}
    _, _, state = run(events, until=B0 + 20 * MIN)
    (incident,) = state.incidents.values()
    members = {m["kind"]: (m["judged"], m["posts"]) for m in summary(incident, "open", B0 + 20 * MIN)["members"]}
    assert members == {"sentiment_drop": (iso(B0), 40), "volume_spike": (iso(B0 + 2 * MIN), 11)}


def _critical_root_with_a_warning_tail() -> tuple[dict[int, list[AlertRecord]], dict[tuple[str, str], Explanation]]:
    """The demo's shape: ETH's drop turns critical and resolves at +40 min while the channel it
    explains, a warning, still clears until +90."""
    events = {B0: [transition("asset:ETH", "sentiment_drop", "firing", B0)],
              B0 + MIN: [transition("channel:general", "sentiment_drop", "firing", B0 + MIN)],
              B0 + 12 * MIN: [transition("asset:ETH", "sentiment_drop", "firing", B0 + 12 * MIN, severity="critical", repeat=True)],
              B0 + 40 * MIN: [transition("asset:ETH", "sentiment_drop", "resolved", B0 + 40 * MIN, severity="critical")],
              B0 + 90 * MIN: [transition("channel:general", "sentiment_drop", "resolved", B0 + 90 * MIN)]}
    answers = {("channel:general", "sentiment_drop"): Explanation(asset="asset:ETH")}
    return events, answers


def test_a_critical_incident_told_over_while_its_tail_clears_resolves_as_critical():
    """The demo: ETH's drop turned critical (the update went to the services critical alerts reach),
    then the incident was told over while its channels, warning, still cleared. The resolution went
    out as warning, the tail's severity, so a `critical=pagerduty://` service never heard it end,
    while the console and `sentinel incidents` said critical. A resolution goes out with the
    severity of the incident it resolves (operations.md), its highest."""
    events, answers = _critical_root_with_a_warning_tail()
    _, notices, _ = run(events, answers, tail=lambda q: Explanation(asset="asset:ETH"))
    assert [(n.reason, n.severity) for n in notices] == [("new", "warning"), ("update", "critical"), ("resolved", "critical")]
    assert [m["firing"] for m in notices[-1].members] == [False, True]  # told over with the tail still firing


def test_a_resolved_incidents_summary_says_when_its_root_resolved_beside_when_it_was_told_over():
    """The console's page of a resolved incident said "last change" at the declaration alone, where
    its resolution says when the root resolved too: the summary keeps that time for it."""
    from stream.alerts.correlator import summary
    from stream.alerts.grouping import history_status
    from stream.alerts.message import notice_body, over_words

    events, answers = _critical_root_with_a_warning_tail()
    _, notices, state = run(events, answers, until=B0 + 80 * MIN, tail=lambda q: Explanation(asset="asset:ETH"))
    (incident,) = state.incidents.values()  # told over, its tail still clearing
    said = summary(incident, history_status(state, incident), B0 + 80 * MIN)
    assert (said["state"], said["root_resolved"]) == ("resolved", B0 + 40 * MIN) and said["at"] > said["root_resolved"], said
    resolution = notice_body(notices[-1])
    assert f"; {over_words(iso(said['root_resolved']), iso(said['at']))} (event time)" in resolution, resolution


def test_an_incident_whose_critical_member_splits_off_at_the_tail_check_still_resolves_as_critical():
    """Review 45: a member that has moved on its own when the root resolved leaves the incident
    (`_split`) before its resolved notice is built, so the notice's peak severity left out the
    critical member the incident's earlier notices were routed by: the resolution went out as
    warning and a `critical=` service heard the incident begin but never end."""
    events = {B0: [transition("asset:ETH", "sentiment_drop", "firing", B0)],
              B0 + MIN: [transition("channel:general", "sentiment_drop", "firing", B0 + MIN)],
              B0 + 12 * MIN: [transition("channel:general", "sentiment_drop", "firing", B0 + 12 * MIN, severity="critical", repeat=True)],
              B0 + 40 * MIN: [transition("asset:ETH", "sentiment_drop", "resolved", B0 + 40 * MIN)],
              B0 + 200 * MIN: [transition("channel:general", "sentiment_drop", "resolved", B0 + 200 * MIN, severity="critical")]}
    answers = {("channel:general", "sentiment_drop"): Explanation(asset="asset:ETH")}
    _, notices, _ = run(events, answers)  # the tail check finds the channel moved on its own: it splits off
    first = notices[0].incident_id
    mine = [(n.reason, n.severity) for n in notices if n.incident_id == first]
    assert any(sev == "critical" for reason, sev in mine if reason != "resolved"), mine
    assert mine[-1] == ("resolved", "critical"), mine


def test_a_member_that_calms_from_critical_to_warning_does_not_lower_the_resolutions_severity():
    """ETH's drop went out critical, resolved, then fired again as a warning while the incident
    stayed open on its volume spike: the member's severity is its latest firing's, so the
    resolution took warning, and the services that heard the critical notice never heard it end.
    A resolution goes to every service a notice of the incident reached (`Incident.routed`)."""
    events = {B0: [transition("asset:ETH", "sentiment_drop", "firing", B0, severity="critical"),
                   transition("asset:ETH", "volume_spike", "firing", B0)],
              B0 + 30 * MIN: [transition("asset:ETH", "sentiment_drop", "resolved", B0 + 30 * MIN, severity="critical")],
              B0 + 40 * MIN: [transition("asset:ETH", "sentiment_drop", "firing", B0 + 40 * MIN)],
              B0 + 90 * MIN: [transition("asset:ETH", "sentiment_drop", "resolved", B0 + 90 * MIN),
                              transition("asset:ETH", "volume_spike", "resolved", B0 + 90 * MIN)]}
    _, notices, _ = run(events)
    assert len({n.incident_id for n in notices}) == 1
    assert notices[0].severity == "critical"
    assert notices[-1].reason == "resolved" and notices[-1].severity == "critical", [(n.reason, n.severity) for n in notices]
    assert {m["severity"] for m in notices[-1].members} == {"warning"}  # no member holds critical any more


def routes_told(notices_run) -> list[tuple[str, str, tuple[str, ...]]]:
    """(reason, severity, severities routed for) of each notice `run` produced."""
    return [(e.notice.reason, e.notice.severity, e.route_severities) for e in notices_run]


def test_a_resolution_is_routed_for_every_severity_a_firing_notice_of_it_went_out_at():
    """`warning=` Slack and `critical=` a pager: the incident opened as a warning (Slack heard it),
    turned critical (the pager heard it), resolved. The resolution went out at the peak alone, so
    Slack never heard it end. Its entry now names both severities (`Entry.route_severities`, beside
    the notice: a worker before session 46 refuses a notice field it does not know); the notice
    still says critical. One that opened critical resolves to critical alone."""
    events, answers = _critical_root_with_a_warning_tail()
    run(events, answers, tail=lambda q: Explanation(asset="asset:ETH"))
    assert routes_told(run.told) == [("new", "warning", ()), ("update", "critical", ()), ("resolved", "critical", ("warning", "critical"))]
    # Closed by its last member's resolution (`_close`), not told over at the tail check (`_split`).
    run({B0: [transition("asset:ETH", "sentiment_drop", "firing", B0)],
         B0 + 12 * MIN: [transition("asset:ETH", "sentiment_drop", "firing", B0 + 12 * MIN, severity="critical", repeat=True)],
         B0 + 40 * MIN: [transition("asset:ETH", "sentiment_drop", "resolved", B0 + 40 * MIN, severity="critical")]})
    assert routes_told(run.told)[-1] == ("resolved", "critical", ("warning", "critical"))
    run({B0: [transition("asset:ETH", "sentiment_drop", "firing", B0, severity="critical")],
         B0 + 40 * MIN: [transition("asset:ETH", "sentiment_drop", "resolved", B0 + 40 * MIN, severity="critical")]})
    assert routes_told(run.told) == [("new", "critical", ()), ("resolved", "critical", ("critical",))]


def test_a_resolution_says_when_each_severity_was_first_told():
    """A warning-only channel heard the incident as a warning and then "resolved" at critical: its
    entry carries when the first notice at each severity went out (`Entry.told_at`, event time),
    which the resolution says (`message.escalation_lines`)."""
    run({B0: [transition("asset:ETH", "sentiment_drop", "firing", B0)],
         B0 + 12 * MIN: [transition("asset:ETH", "sentiment_drop", "firing", B0 + 12 * MIN, severity="critical", repeat=True)],
         B0 + 40 * MIN: [transition("asset:ETH", "sentiment_drop", "resolved", B0 + 40 * MIN, severity="critical")]})
    firing = [e.notice for e in run.told if e.notice.state == "firing"]
    resolved = run.told[-1]
    assert [n.severity for n in firing][:2] == ["warning", "critical"]
    assert resolved.told_at == (("warning", firing[0].at), ("critical", firing[1].at)), resolved.told_at
    assert json.loads(entry_json(resolved))["told_at"] == {"warning": firing[0].at, "critical": firing[1].at}



def test_a_resolution_carries_when_its_incidents_latest_firing_notice_was_made():
    """Delivery's told marks keep the latest firing notice they saw; a resolution whose incident
    notified later (a worker that keeps no marks delivered that notice) counts them as unknown
    (`incidents.marks_behind`). The entry says when: the latest firing notice's time, not its own."""
    run({B0: [transition("asset:ETH", "sentiment_drop", "firing", B0)],
         B0 + 12 * MIN: [transition("asset:ETH", "sentiment_drop", "firing", B0 + 12 * MIN, severity="critical", repeat=True)],
         B0 + 40 * MIN: [transition("asset:ETH", "sentiment_drop", "resolved", B0 + 40 * MIN, severity="critical")]})
    firing = [e.notice for e in run.told if e.notice.state == "firing"]
    resolved = run.told[-1]
    assert resolved.notice.state == "resolved" and resolved.last_notified == firing[-1].at != resolved.notice.at, (resolved, firing)
    assert json.loads(entry_json(resolved))["last_notified"] == firing[-1].at
    assert "last_notified" not in json.loads(entry_json(run.told[0]))  # a firing notice's entry: as before
    # Told over at the tail check (`_split`), the resolution carries it too.
    run({B0: [transition("asset:ETH", "sentiment_drop", "firing", B0)],
         B0 + MIN: [transition("channel:general", "sentiment_drop", "firing", B0 + MIN)],
         B0 + 40 * MIN: [transition("asset:ETH", "sentiment_drop", "resolved", B0 + 40 * MIN)],
         B0 + 90 * MIN: [transition("channel:general", "sentiment_drop", "resolved", B0 + 90 * MIN)]},
        {("channel:general", "sentiment_drop"): Explanation(asset="asset:ETH")}, tail=lambda q: Explanation(asset="asset:ETH"))
    (first, over) = run.told
    assert over.notice.state == "resolved" and over.notice.at == iso(B0 + 55 * MIN) and over.last_notified == first.notice.at, over

def test_a_resolution_counts_its_incidents_firing_notices_unless_an_older_worker_dropped_the_count():
    """Delivery routes a resolution per service only where its marks account for every firing notice
    of the incident: the entry says how many were made (`Entry.firing_notices`: new, then the
    critical update). A worker before session 50 drops the count (`notices`) when it rewrites the
    state, and may have made a notice meanwhile: the count stays unknown (None, no entry field),
    and delivery routes the resolution per severity, as before."""
    run({B0: [transition("asset:ETH", "sentiment_drop", "firing", B0)],
         B0 + 12 * MIN: [transition("asset:ETH", "sentiment_drop", "firing", B0 + 12 * MIN, severity="critical", repeat=True)],
         B0 + 40 * MIN: [transition("asset:ETH", "sentiment_drop", "resolved", B0 + 40 * MIN, severity="critical")]})
    firing = [e for e in run.told if e.notice.state == "firing"]
    resolved = run.told[-1]
    assert len(firing) == 2 and resolved.firing_notices == 2 and json.loads(entry_json(resolved))["firing_notices"] == 2, run.told
    assert "firing_notices" not in json.loads(entry_json(firing[0]))
    state, _, _ = advance(GroupState(), B0, [transition("asset:ETH", "sentiment_drop", "firing", B0)], {}, CONFIG)
    state, entries, _ = advance(state, B0 + 5 * MIN, [], {}, CONFIG)
    stored = state.to_json()
    (incident,) = stored["incidents"].values()
    assert [e.notice.reason for e in entries] == ["new"] and incident["notices"] == 1
    del incident["notices"]  # an older worker rewrote the state
    state = GroupState.from_json(stored)
    notices = []
    moves = {B0 + 12 * MIN: [transition("asset:ETH", "sentiment_drop", "firing", B0 + 12 * MIN, severity="critical", repeat=True)],
             B0 + 40 * MIN: [transition("asset:ETH", "sentiment_drop", "resolved", B0 + 40 * MIN, severity="critical")]}
    for at in range(B0 + 6 * MIN, B0 + 41 * MIN, MIN):
        state, entries, _ = advance(state, at, moves.get(at, []), {}, CONFIG)
        notices += [e for e in entries if e.notice]
    # This worker's critical update is counted on nothing: the notices before it are unknown.
    assert [e.notice.reason for e in notices] == ["update", "resolved"], notices
    assert notices[-1].firing_notices is None and "firing_notices" not in json.loads(entry_json(notices[-1])), notices[-1]


def test_a_resolution_of_an_incident_a_worker_without_the_list_told_is_routed_as_before():
    """During a rolling upgrade a worker that keeps no `told_severities` (one before this; any
    worker before session 46 drops an incident field it does not know when it rewrites the state)
    may have told the incident: its resolution is routed for `routed`, the highest told, as before."""
    state, _, _ = advance(GroupState(), B0, [transition("asset:ETH", "sentiment_drop", "firing", B0)], {}, CONFIG)
    state, entries, _ = advance(state, B0 + 5 * MIN, [], {}, CONFIG)
    assert [e.notice.reason for e in entries] == ["new"]
    stored = state.to_json()
    (incident,) = stored["incidents"].values()
    assert incident["told_severities"] == ["warning"]
    del incident["told_severities"]
    incident["routed"] = "critical"  # an older worker told it critical since
    state = GroupState.from_json(stored)
    _, entries, _ = advance(state, B0 + 40 * MIN, [transition("asset:ETH", "sentiment_drop", "resolved", B0 + 40 * MIN)], {}, CONFIG)
    assert [(e.notice.reason, e.route_severities) for e in entries if e.notice] == [("resolved", ("critical",))]


def test_a_member_critical_for_a_while_no_notice_told_still_makes_the_resolution_say_critical():
    """Earlier note: a member that fires critical, resolves and fires again as a warning lowers the
    incident's peak. Fixed (`routed`) where a notice had told critical; not where none had: within
    the group wait, or between updates, the member's severity became warning again and the
    resolution, and `sentinel incidents`, said warning of an incident that reached critical. The
    resolution says its peak (`reached`), and goes to the services its notices reached: warning."""
    events = {B0: [transition("asset:ETH", "sentiment_drop", "firing", B0, severity="critical"),
                   transition("asset:ETH", "volume_spike", "firing", B0)],
              B0 + MIN: [transition("asset:ETH", "sentiment_drop", "resolved", B0 + MIN, severity="critical")],
              B0 + 2 * MIN: [transition("asset:ETH", "sentiment_drop", "firing", B0 + 2 * MIN)],
              B0 + 90 * MIN: [transition("asset:ETH", "sentiment_drop", "resolved", B0 + 90 * MIN),
                              transition("asset:ETH", "volume_spike", "resolved", B0 + 90 * MIN)]}
    run(events)
    assert routes_told(run.told) == [("new", "warning", ()), ("resolved", "critical", ("warning",))]


def test_a_warning_a_worker_without_the_list_told_still_hears_the_resolution_after_a_newer_one_tells_critical():
    """A rolling upgrade, run (session 47): an older worker told the incident as a warning (its state
    keeps `routed` = warning and no list), then a newer worker told it critical and resolved it. The
    newer worker raised `routed` to critical before the warning it held was in the list, so the
    resolution went to the critical services alone and the warning channel never heard it end."""
    state, _, _ = advance(GroupState(), B0, [transition("asset:ETH", "sentiment_drop", "firing", B0)], {}, CONFIG)
    state, entries, _ = advance(state, B0 + 5 * MIN, [], {}, CONFIG)
    assert [(e.notice.reason, e.notice.severity) for e in entries if e.notice] == [("new", "warning")]
    stored = state.to_json()
    (incident,) = stored["incidents"].values()
    del incident["told_severities"], incident["reached"]  # as a worker before session 47 writes it
    assert incident["routed"] == "warning"
    state = GroupState.from_json(stored)
    told = []
    for at, now in ((B0 + 12 * MIN, [transition("asset:ETH", "sentiment_drop", "firing", B0 + 12 * MIN, severity="critical", repeat=True)]),
                    (B0 + 20 * MIN, []),
                    (B0 + 40 * MIN, [transition("asset:ETH", "sentiment_drop", "resolved", B0 + 40 * MIN, severity="critical")])):
        state, entries, _ = advance(state, at, now, {}, CONFIG)
        told += [(e.notice.reason, e.notice.severity, e.route_severities) for e in entries if e.notice]
    assert told == [("update", "critical", ()), ("resolved", "critical", ("warning", "critical"))]


def test_sentinel_incidents_gives_a_resolved_incident_the_severity_its_resolution_went_out_with():
    """Review 45: told over while its warning tail still cleared, the incident's resolution went out
    as critical (its peak) but its summary (`sentinel incidents`, the console's history) said
    warning, the tail's, until the tail resolved."""
    from stream.alerts.correlator import summary

    events, answers = _critical_root_with_a_warning_tail()
    _, notices, state = run(events, answers, until=B0 + 60 * MIN, tail=lambda q: Explanation(asset="asset:ETH"))
    (incident,) = state.incidents.values()
    assert incident.firing() and notices[-1].reason == "resolved"
    assert summary(incident, "resolved", B0 + 60 * MIN)["severity"] == notices[-1].severity == "critical"
    assert summary(incident, "open", B0 + 60 * MIN)["severity"] == "warning"  # open: what fires now, as before


def _member(scope: str, kind: str) -> dict[str, str]:
    return {"scope": scope, "kind": kind}


def test_an_update_says_what_changed_since_the_last_notice_and_a_reminder_that_nothing_did():
    """Session 53: an update said the incident's state alone, and the team compared it with the
    previous notice to find the news. Each update and reminder entry now carries what changed since
    the incident's previous notice (`since_last`): members that joined (a parent the root explains
    too, though it sends no update of its own), fired again or resolved, severities that rose."""
    events = {B0: [transition("asset:ETH", "sentiment_drop", "firing", B0), transition("channel:trading", "sentiment_drop", "firing", B0)],
              B0 + 10 * MIN: [transition("asset:ETH", "volume_spike", "firing", B0 + 10 * MIN),
                              transition("all", "sentiment_drop", "firing", B0 + 10 * MIN)],
              B0 + 11 * MIN: [transition("channel:trading", "sentiment_drop", "resolved", B0 + 11 * MIN)],
              B0 + 12 * MIN: [transition("asset:ETH", "sentiment_drop", "firing", B0 + 12 * MIN, severity="critical", repeat=True)]}
    answers = {(s, "sentiment_drop"): Explanation(asset="asset:ETH") for s in ("all", "channel:trading")}
    _, notices, state = run(events, answers, until=B0 + 5 * 3600)
    assert [(n.reason, n.at) for n in notices] == [("new", iso(B0 + 5 * MIN)), ("update", iso(B0 + 20 * MIN)),
                                                    ("repeat", iso(B0 + 260 * MIN))]
    first, update, repeat = (entry.since_last for entry in run.told)
    assert first is None  # nothing was told before the first notice
    assert update == {
        "at": iso(B0 + 5 * MIN), "root": {"from": "asset:ETH", "to": "asset:ETH"}, "severity": {"from": "warning", "to": "critical"},
        "joined": [_member("asset:ETH", "volume_spike"), _member("all", "sentiment_drop")], "fired": [],
        "resolved": [_member("channel:trading", "sentiment_drop")],
        "escalated": [{**_member("asset:ETH", "sentiment_drop"), "from": "warning", "to": "critical"}], "eased": []}
    assert repeat == {"at": iso(B0 + 20 * MIN), "root": {"from": "asset:ETH", "to": "asset:ETH"},
                      "severity": {"from": "critical", "to": "critical"}, "joined": [], "fired": [], "resolved": [], "escalated": [],
                      "eased": []}
    # On the outbox entry beside the notice, and in the state, which reads back and stays JSON.
    assert json.loads(entry_json(run.told[1]))["since_last"] == update and "since_last" not in json.loads(entry_json(run.told[0]))
    assert GroupState.from_json(json.loads(json.dumps(state.to_json()))) == state
    # A member that fires again after the update is said as such.
    again = {**events, B0 + 30 * MIN: [transition("channel:trading", "sentiment_drop", "firing", B0 + 30 * MIN)],
             B0 + 31 * MIN: [transition("asset:ETH", "sentiment_drop", "firing", B0 + 31 * MIN, severity="critical")]}
    run(again, answers, until=B0 + 40 * MIN)
    assert [e.notice.reason for e in run.told] == ["new", "update", "update"]
    assert run.told[2].since_last is not None and run.told[2].since_last["fired"] == [_member("channel:trading", "sentiment_drop")]


def test_a_member_whose_severity_fell_while_the_incident_stayed_critical_is_said_as_eased():
    """ETH's drop and channel:trading's (explained by ETH) fire critical; at 10 minutes the channel's
    drop falls to a warning while ETH's stays critical, and a volume spike joins the root (news). The
    update said the spike joined and nothing of the channel: the incident was critical before and
    after, so the team still counted the channel's drop among the critical ones. It is named as eased,
    with its severities; a reminder where that alone changed is no news for an update of its own."""
    events = {B0: [transition("asset:ETH", "sentiment_drop", "firing", B0, severity="critical"),
                   transition("channel:trading", "sentiment_drop", "firing", B0, severity="critical")],
              B0 + 10 * MIN: [transition("channel:trading", "sentiment_drop", "firing", B0 + 10 * MIN, repeat=True),
                              transition("asset:ETH", "volume_spike", "firing", B0 + 10 * MIN)]}
    _, notices, _ = run(events, {("channel:trading", "sentiment_drop"): Explanation(asset="asset:ETH")}, until=B0 + 30 * MIN)
    assert [(n.reason, n.severity) for n in notices] == [("new", "critical"), ("update", "critical")]
    since = run.told[1].since_last
    assert since is not None and since["severity"] == {"from": "critical", "to": "critical"}, since
    assert since["joined"] == [_member("asset:ETH", "volume_spike")] and since["escalated"] == [], since
    assert since["eased"] == [{**_member("channel:trading", "sentiment_drop"), "from": "critical", "to": "warning"}], since
    assert unchanged({**since, "joined": []})  # a member easing alone sends no update, as a fall never did


def test_an_asset_that_joins_a_market_wide_move_is_said_as_new_in_the_update():
    events = {B0: [transition(a, "sentiment_drop", "firing", B0) for a in ("asset:DOGE", "asset:ETH")],
              B0 + MIN: [transition("all", "sentiment_drop", "firing", B0 + MIN)],
              B0 + 12 * MIN: [transition("asset:SOL", "sentiment_drop", "firing", B0 + 12 * MIN)]}
    _, notices, _ = run(events, {("all", "sentiment_drop"): Explanation(market=("asset:DOGE", "asset:ETH"))}, until=B0 + 30 * MIN)
    assert [(n.reason, n.market) for n in notices] == [("new", True), ("update", True)]
    assert run.told[1].since_last is not None and run.told[1].since_last["joined"] == [_member("asset:SOL", "sentiment_drop")]


def test_the_first_update_after_an_upgrade_from_session_53_says_nothing_of_what_changed_and_the_next_does():
    """A session-53 worker's state has no record of the previous notice (`last_told`), nor does one
    it rewrote during a rolling upgrade (it drops the field): that incident's next notice carries
    no `since_last`, and the one after does."""
    def session_53(boundary: int, state: GroupState) -> GroupState:
        if boundary > B0 + 5 * MIN:
            return state
        data = json.loads(json.dumps(state.to_json()))
        for incident in data["incidents"].values():
            incident.pop("last_told", None)
        return GroupState.from_json(data)

    events = {B0: [transition("asset:ETH", "sentiment_drop", "firing", B0)],
              B0 + 10 * MIN: [transition("asset:ETH", "volume_spike", "firing", B0 + 10 * MIN)],
              B0 + 25 * MIN: [transition("asset:ETH", "sentiment_drop", "firing", B0 + 25 * MIN, severity="critical", repeat=True)]}
    _, notices, _ = run(events, until=B0 + 40 * MIN, rewrite=session_53)
    assert [n.reason for n in notices] == ["new", "update", "update"]
    assert run.told[1].since_last is None and "since_last" not in json.loads(entry_json(run.told[1]))
    assert run.told[2].since_last is not None and run.told[2].since_last["severity"] == {"from": "warning", "to": "critical"}
    _, same, _ = run(events, until=B0 + 40 * MIN)  # what is told is the same either way; only the line differs
    assert same == notices


def test_an_update_whose_news_undid_itself_within_the_group_interval_is_not_sent():
    """ETH's drop turns critical at 12 minutes and back to a warning at 14: the rise made the
    incident `changed`, and its update at 20 minutes said "Unchanged since the last notice", a
    message with nothing in it. No update goes; the critical record it held is still published,
    and a later real change
    still sends an update that says what changed since the notice the team had."""
    events = {B0: [transition("asset:ETH", "sentiment_drop", "firing", B0)],
              B0 + 12 * MIN: [transition("asset:ETH", "sentiment_drop", "firing", B0 + 12 * MIN, severity="critical", repeat=True)],
              B0 + 14 * MIN: [transition("asset:ETH", "sentiment_drop", "firing", B0 + 14 * MIN, repeat=True)],
              B0 + 60 * MIN: [transition("asset:ETH", "volume_spike", "firing", B0 + 60 * MIN)]}
    records, notices, _ = run(events, until=B0 + 5 * 3600)
    assert [(n.reason, n.at) for n in notices] == [("new", iso(B0 + 5 * MIN)), ("update", iso(B0 + 60 * MIN)),
                                                    ("repeat", iso(B0 + 300 * MIN))]
    drops = sorted((r for r in records if r["kind"] == "sentiment_drop"), key=lambda r: r["window_end"])
    assert [(r["severity"], r["notified"]) for r in drops] == [("warning", True), ("critical", False), ("warning", False)]
    assert run.told[1].since_last is not None and run.told[1].since_last["at"] == iso(B0 + 5 * MIN)
    assert run.told[1].since_last["joined"] == [_member("asset:ETH", "volume_spike")]
    # Unknown (a session-53 worker's state): the update goes, as before.
    def session_53(boundary: int, state: GroupState) -> GroupState:
        for incident in state.incidents.values():
            incident.last_told = None
        return state

    _, old, _ = run({k: v for k, v in events.items() if k < B0 + 60 * MIN}, until=B0 + 30 * MIN, rewrite=session_53)
    assert [n.reason for n in old] == ["new", "update"]
