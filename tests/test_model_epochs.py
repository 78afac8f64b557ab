"""A classifier switch (stream/alerts/epochs.py, docs/operations.md "Roll out a new adapter"): the
sentiment kinds are judged against the buckets the current classifier labelled alone, volume
against the whole history. Pure tests of the epoch rule and the clipped baseline, then a switch on
a real redis-server: no sentiment kind fires while the new classifier warms up, a volume spike does."""

from __future__ import annotations

import asyncio
import math
import random
from dataclasses import replace
from typing import Callable

import numpy as np
import pytest
import redis

from scenarios import T0, Episode, Scenario, generate
from stream.alerts.engine import AlertEngine
from stream.alerts.epochs import REASSERT_S, ROLLOUT_S, Epoch, claim, first_bucket, label_since, model_identity, parse, warm_until
from stream.alerts.judging import AlertConfig, judge_series
from stream.alerts.sequential import SeqConfig, _ring_sums, advance, verdicts
from stream.contracts import Post
from stream.store import Scored, WindowStore
from stream.timefmt import epoch
from stream.windows import SLICE_FIELDS, SliceCol

SCORES = {"positive": 0.6, "negative": -0.6, "neutral": 0.0}
NOW = 2_000_000_000.0


# --- the epoch rule ---------------------------------------------------------------------------

def test_the_identity_is_what_each_record_names_its_model_by() -> None:
    assert model_identity("smollm2", "default+ngram") == "smollm2+default+ngram"
    assert model_identity("lexicon", None) == "lexicon"
    assert model_identity("smollm2", "default") != model_identity("smollm2", "default+ngram")  # the head changes labels


def test_the_docs_claim_no_unmeasured_label_shares_for_what_the_identity_leaves_out() -> None:
    """Quantisation, device and dtype are left out of the identity; only bf16's batch shapes were
    measured (docs/benchmarks.md), so the docs must not say 4-bit moves labels at the margin only."""
    from pathlib import Path

    text = " ".join((Path(__file__).resolve().parents[1] / "docs/alerts.md").read_text(encoding="utf-8").split())
    assert "(they move a label at the margin, not the shares," not in text
    assert "8-bit or 4-bit quantisation against full precision, and a GPU's kernels against a CPU's, are not measured" in text


def test_the_first_epoch_covers_the_history_and_a_worker_of_the_newest_model_appends_none() -> None:
    first = claim([], "lexicon", 600.0, NOW)
    assert first is not None and first.since == -math.inf
    assert label_since([first]) == -math.inf  # a replay on a fresh Redis, or an upgrade: nothing clipped
    assert claim([first], "lexicon", 9_000.0, NOW + 10) is None
    assert parse([first.to_json(), "not json", '{"since": 1}']) == [first]  # foreign entries are ignored


def test_a_switch_starts_an_epoch_at_the_first_bucket_it_labels() -> None:
    old = Epoch("lexicon", -math.inf, NOW - 86400)
    new = claim([old], "smollm2+default+ngram", 7_200.0, NOW)
    assert new == Epoch("smollm2+default+ngram", 7_200.0, NOW)
    assert label_since([old, new]) == 7_200.0


def test_a_rolling_update_that_flaps_clips_history_once_and_a_later_rollback_clips_again() -> None:
    old = Epoch("lexicon", -math.inf, NOW - 86400)
    new = Epoch("smollm2", 7_200.0, NOW)
    # An old-model pod (re)starting during the rollout keeps the new epoch's start: no second reset...
    flap = claim([old, new], "lexicon", 7_260.0, NOW + 300)
    assert flap == Epoch("lexicon", 7_200.0, NOW + 300)
    # ... nor does the new model's next pod, nor any after it while the rollout flaps.
    assert claim([old, new], "smollm2", 7_320.0, NOW + 400) is None
    again = claim([old, new, flap], "smollm2", 7_380.0, NOW + 500)
    assert again == Epoch("smollm2", 7_200.0, NOW + 500)
    assert claim([old, new, flap, again], "lexicon", 7_440.0, NOW + 600).since == 7_200.0
    # A rollback after the rollout is a switch of its own.
    back = claim([old, new], "lexicon", 90_000.0, NOW + ROLLOUT_S + 1)
    assert back == Epoch("lexicon", 90_000.0, NOW + ROLLOUT_S + 1)
    # After a quick rollback (the flap above), the new model rolled out again later is a switch.
    assert claim([old, new, flap], "smollm2", 95_000.0, NOW + 300 + ROLLOUT_S + 1).since == 95_000.0
    # An epoch never starts before the newest (a lagging partition's old post).
    assert claim([old, new], "third", 60.0, NOW + 10).since == 7_200.0


def _fleet(checks: list[tuple[float, str]]) -> list[Epoch]:
    """Workers checking their classifier against the newest epoch (claim) at these wall times, in
    order; event time keeps up with the wall clock."""
    epochs: list[Epoch] = []
    for at, identity in sorted(checks):
        found = claim(epochs, identity, at // 60 * 60, at)
        if found is not None:
            epochs.append(found)
    return epochs


def _running(identity: str, start: float, stop: float, every: float | None = REASSERT_S) -> list[tuple[float, str]]:
    """A worker's checks: at its first batch, then every `every` (None: the first batch alone) while it labels."""
    if every is None:
        return [(start, identity)]
    return [(start + k * every, identity) for k in range(int((stop - start) // every) + 1)]


def test_a_canary_removed_and_rolled_out_later_clips_history_once_each_and_the_newest_names_a_running_model() -> None:
    """A fleet of the old model, a canary of the new one for six hours (an old pod restarting two
    hours in), then, two days later, the new model rolled out to all. Checked at the first batch
    alone the newest epoch went on naming the canary's model after it was removed, and the rollout
    two days later recorded nothing: the sentiment kinds were judged on the old model's baseline
    against the new one's labels (session 56's market-wide incident), with no warning. An old pod
    restarting more than an hour into the canary clipped history a second time."""
    old, new = "lexicon", "smollm2+default+ngram"
    first = Epoch(old, -math.inf, NOW - 86400)
    canary = NOW - NOW % 60
    rollout, end = canary + 2 * 86400, canary + 3 * 86400

    def fleet(every: float | None, restart: bool) -> list[Epoch]:
        checks = _running(old, canary - 3600, rollout + 600, every) + _running(old, canary - 3600, rollout + 600, every)
        if restart:  # an old pod restarted two hours into the canary
            checks += _running(old, canary + 2 * 3600, rollout + 600, every)
        checks += _running(new, canary, canary + 6 * 3600, every)  # the canary, removed six hours on
        checks += _running(new, rollout, end, every) + _running(new, rollout + 300, end, every)
        return _fleet([(first.at, old)] + checks)

    # Checked at the first batch alone: the rollout recorded nothing...
    assert [e.since for e in fleet(None, restart=False)[1:]] == [canary]
    # ... or an old pod's restart clipped history a second time during the canary.
    assert [e.since for e in fleet(None, restart=True)[1:]] == [canary, canary + 2 * 3600, rollout]

    for restart in (False, True):
        epochs = fleet(REASSERT_S, restart)
        assert sorted({e.since for e in epochs[1:]}) == [canary, rollout]  # once for the canary, once for the rollout
        between = [e for e in epochs if e.at < rollout]
        assert between[-1].identity == old  # the canary gone, the newest names the model that runs
        assert epochs[-1].identity == new and label_since(epochs) == rollout


def test_a_new_pod_restarting_hours_after_a_flapping_rollout_does_not_clip_history_again() -> None:
    """The rollout's old pod restarted ten minutes in (recorded with the switch's start), then the
    old pods went; a new pod restarting three hours later found the old model newest and, checked
    at the first batch alone, clipped history a second time (19 h more of warm-up)."""
    old, new = "lexicon", "smollm2+default+ngram"
    first = Epoch(old, -math.inf, NOW - 86400)
    switch = NOW - NOW % 60

    def fleet(every: float | None) -> list[Epoch]:
        checks = _running(old, switch - 3600, switch + 1200, every) + _running(old, switch + 600, switch + 1200, every)
        checks += _running(new, switch, switch + 6 * 3600, every) + _running(new, switch + 3 * 3600, switch + 6 * 3600, every)
        return _fleet([(first.at, old)] + checks)

    assert [e.since for e in fleet(None)[1:]] == [switch, switch, switch + 3 * 3600]
    epochs = fleet(REASSERT_S)
    assert {e.since for e in epochs[1:]} == {switch} and epochs[-1].identity == new


def test_a_switch_never_starts_before_what_the_partitions_have_written() -> None:
    """A worker of the new model whose first batch is a lagging partition's (or a replay's)
    hours-old posts: the buckets since then hold the old model's labels on every other partition."""
    stats = {"pwm:0": NOW, "pwm:1": NOW - 5 * 3600, "pseen:0": NOW, "processed": 10.0}
    assert first_bucket(NOW - 5 * 3600 + 7, stats, 60, NOW + 30) == NOW // 60 * 60
    assert first_bucket(NOW + 61, stats, 60, NOW + 90) == (NOW + 61) // 60 * 60  # a worker ahead of all: its own post
    assert first_bucket(NOW - 100, {}, 60, NOW) == (NOW - 100) // 60 * 60  # nothing written yet


def test_a_switch_never_starts_after_the_wall_clock() -> None:
    """A new-model worker whose first batch is one source's posts stamped five hours ahead (let in
    up to a day: SENTINEL_MAX_FUTURE; counted as `ahead`)."""
    stats = {"pwm:0": NOW - 20}
    assert first_bucket(NOW + 5 * 3600, stats, 60, NOW) == NOW // 60 * 60


def test_the_sentiment_kinds_wait_a_window_and_three_quarters_of_a_baseline() -> None:
    assert warm_until(3600.0, 3600, 86400, 0.75, 60) == 3600 + 3600 + 0.75 * 86400
    assert warm_until(-math.inf, 3600, 86400, 0.75, 60) == -math.inf


# --- the clipped baseline (sequential.advance) -------------------------------------------------

def _bin(n: int, neg: int, pos: int) -> np.ndarray:
    row = np.zeros(len(SLICE_FIELDS))
    row[SliceCol.N], row[SliceCol.NEGATIVE], row[SliceCol.POSITIVE] = n, neg, pos
    return row


def _noisy_bins(rng: np.random.Generator) -> Callable[[float, float], np.ndarray]:
    """A bin of 8-12 posts drawn with these negative and positive shares, scores to match."""

    def noisy(share_neg: float, share_pos: float) -> np.ndarray:
        n = int(rng.integers(8, 13))
        neg = int(rng.binomial(n, share_neg))
        row = _bin(n, neg, pos := int(rng.binomial(n - neg, share_pos / (1 - share_neg))))
        row[SliceCol.NEUTRAL] = n - neg - pos
        row[SliceCol.SCORE_SUM], row[SliceCol.SCORE_SQ] = 0.6 * (pos - neg), 0.36 * (pos + neg)
        return row

    return noisy


def _run(switch_at: int, clip: bool, bins: int = 3000) -> tuple[list[float], list[int], object]:
    """Step bins of 10 posts, 2 negative / 3 positive before `switch_at` (the bin's start, in steps)
    and 4 / 5 after it (a classifier that calls far fewer posts neutral); a baseline of 1440 steps
    lagged by a 60-step window. Returns the sentiment charts' maxima per step, the steps where the
    volume chart moved, and the final state."""
    step, window, base_bins = 60, 3600, 1440
    config = SeqConfig()
    state = None
    sentiment, volume = [], []
    since = switch_at * step if clip else -math.inf
    for k in range(window // step + 1, bins):
        at = k * step
        new_start = at - step
        entering = new_start - window
        new = _bin(10, 4, 5) if new_start >= switch_at * step else _bin(10, 2, 3)
        enter = None if entering < 0 else (_bin(10, 4, 5) if entering >= switch_at * step else _bin(10, 2, 3))
        if k in range(2600, 2660):  # an hour of three times the posts, the new mix
            new = _bin(30, 12, 15)
        state = advance(state, new, enter, None, at=at, baseline_bins=base_bins, config=config, frozen=False,
                        label_since=since, entering_start=entering)
        sentiment.append(max(max(state.banks[b].s) for b in ("negative_share", "negative_rate", "positive_share", "positive_rate")))
        volume.append(max(state.banks["volume"].s))
    return sentiment, volume, state


def test_after_a_switch_the_sentiment_charts_stay_at_zero_and_volume_is_judged() -> None:
    switch = 1600  # steps: a full baseline of the old mix, then the new one
    clipped, volume, state = _run(switch, clip=True)
    first = 61  # the index of step k is k - 61
    b = SeqConfig().b
    # The label shares moved at the switch: judged against the old labels, the charts fire.
    unclipped, _, _ = _run(switch, clip=False)
    assert max(unclipped[switch - first:]) >= b
    # Clipped: nothing from the switch until 75% of a baseline of the new labels has entered.
    warm = switch + 60 + math.ceil(0.75 * 1440)
    assert max(clipped[switch - first:warm - first]) == 0.0
    # The hour of three times the posts (steps 2600-2659, inside the warm-up) still fires volume.
    assert max(volume[2600 - first:2660 - first]) >= b
    # The label sums are those of the baseline's bins the new classifier labelled.
    # At the last step (k = 2999) the baseline holds the bins starting at steps 1499-2938, 1339 of them the new classifier's.
    labelled = 2938 - switch + 1
    assert state.labels_since == switch * 60 and state.base[4] == 1440
    assert state.labels == [10.0 * labelled, 4.0 * labelled, 5.0 * labelled, 100.0 * labelled, float(labelled)]
    # What a verdict (and the console's evidence) names as the baseline share is the new labels' too,
    # not the whole baseline's (101 bins of 20% negative among them).
    found = verdicts(state, at=2999 * 60, step_s=60, per_window=60, config=SeqConfig(), fire_z=3.0)
    assert found["sentiment_drop"].signal.baseline == pytest.approx((4 * labelled + 1) / (10 * labelled + 4))
    assert found["sentiment_drop"].signal.baseline_posts == 10 * labelled


def test_a_state_that_missed_the_switch_takes_its_label_sums_from_the_ring() -> None:
    """A state written back by a worker before the epochs (no `labels`) or judged first after
    the switch reached the baseline: its ring says which bins the new classifier labelled."""
    _, _, full = _run(1600, clip=False, bins=2000)
    # At the last step (k=1999) the bin entering started at (1999 - 1 - 60) * 60; bins from step 1600 on are the new mix.
    entering = (1999 - 1 - 60) * 60
    from stream.alerts.sequential import _relabel
    _relabel(full, 1600 * 60, entering + 60, 60)
    count = (entering + 60 - 1600 * 60) // 60
    assert full.labels == [10.0 * count, 4.0 * count, 5.0 * count, 100.0 * count, float(count)]
    assert _ring_sums(full.ring, newest=count) == full.labels


# --- the window detector (judging.judge_series) -------------------------------------------------

def test_the_window_detector_judges_sentiment_on_the_new_labels_alone() -> None:
    config = replace(AlertConfig(), detector="zscore")
    step, first = config.step_s, 0
    switch = 30 * 3600
    rng = np.random.default_rng(3)

    noisy = _noisy_bins(rng)

    # The new classifier calls many neutral posts negative: a drop, by share and by score.
    slices = np.array([noisy(0.45, 0.3) if first + i * step >= switch else noisy(0.2, 0.3) for i in range(36 * 60)])
    boundary = list(range(34 * 3600, 35 * 3600 + 1, step))
    _, unclipped = judge_series("all", {}, slices, first, boundary, 0.0, replace(config, for_s=0), "now")
    assert {r.kind for r in unclipped if r.state == "firing"} & {"sentiment_drop", "sentiment_surge"}
    _, clipped = judge_series("all", {}, slices, first, boundary, 0.0, replace(config, for_s=0), "now", label_since=switch)
    assert not [r for r in clipped if r.kind != "volume_spike"]


@pytest.mark.parametrize("detector", ["sequential", "zscore"])
def test_a_window_that_ends_before_the_switch_is_judged_on_the_old_labels(detector: str) -> None:
    """Judging lags the newest posts (the grace, a lagging partition), so when a switch is recorded
    the boundaries it catches up on are before it: their windows hold the old classifier's labels
    alone. Judged with the switch's clip, a real drop there went unjudged (nothing fired), and a
    drop already firing resolved at a boundary before the switch."""
    from stream.alerts.judging import judge_sequential

    config = replace(AlertConfig(), detector=detector, for_s=0)
    rng = np.random.default_rng(5)

    noisy = _noisy_bins(rng)

    drop, switch = 28 * 3600, 31 * 3600  # a real drop from hour 28; the classifier switched at hour 31
    slices = np.array([noisy(0.5, 0.15) if i * 60 >= drop else noisy(0.2, 0.3) for i in range(36 * 60)])
    before = list(range(drop + 60, switch + 1, 60))  # every window ends by the switch

    def judge(since: float) -> list:
        if detector == "zscore":
            return judge_series("all", {}, slices, 0, before, 0.0, config, "now", label_since=since)[1]
        bin_at = lambda start: slices[start // 60] if 0 <= start // 60 < len(slices) else None  # noqa: E731
        return judge_sequential("all", {}, None, bin_at, before, config, "now", label_since=since)[2]

    def sentiment(records: list) -> list:
        return [(r.kind, r.state, r.window_end) for r in records if r.kind != "volume_spike"]

    unclipped = sentiment(judge(-math.inf))
    assert ("sentiment_drop", "firing") in {(k, s) for k, s, _ in unclipped}
    assert sentiment(judge(switch)) == unclipped


def test_a_sentiment_incident_open_at_the_switch_is_told_resolved_though_the_move_goes_on_and_the_runbook_says_so() -> None:
    """The drop goes on past the switch, but it is no longer judged: the incident resolves at the
    first boundary past the switch (a [RESOLVED] notice, against the new classifier's baseline of no
    bins). Not an all-clear, which the docs and the runbook must say to the risk team."""
    from pathlib import Path

    config = replace(AlertConfig(), detector="zscore", for_s=0)
    rng = np.random.default_rng(3)

    noisy = _noisy_bins(rng)

    drop, switch = 28 * 3600, 30 * 3600
    slices = np.array([noisy(0.5, 0.15) if drop <= i * 60 < 36 * 3600 else noisy(0.2, 0.3) for i in range(37 * 60)])
    opened, _ = judge_series("all", {}, slices, 0, list(range(drop + 3600, switch + 1, 60)), 0.0, config, "now", label_since=switch)
    assert not opened["sentiment_drop"].pending
    _, after = judge_series("all", opened, slices, 0, list(range(switch + 60, switch + 3601, 60)), 0.0, config, "now", label_since=switch)
    (resolved,) = [r for r in after if r.kind == "sentiment_drop"]
    assert (resolved.state, epoch(resolved.window_end)) == ("resolved", switch + 60)
    assert resolved.value > 0.45 and resolved.baseline == 0.0  # the drop goes on; no baseline measured it
    root = Path(__file__).resolve().parents[1]
    alerts = " ".join((root / "docs/alerts.md").read_text(encoding="utf-8").split())
    runbook = " ".join((root / "docs/operations.md").read_text(encoding="utf-8").split())
    assert "It stopped being judged; it was not judged over." in alerts
    assert "that notice is no all-clear" in runbook


# --- a switch on a real redis-server ----------------------------------------------------------

SWITCH_H, SPIKE_H, END_H = 30, 34, 40


def relabelled(stream: list, switch: float, seed: int = 11) -> list:
    """The posts after `switch` as a classifier that calls most neutral posts positive or negative
    labels them (as the shipped classifier did the keyword scorer's: docs/results/model_switch_s56.json)."""
    rng = random.Random(seed)
    out = []
    for p in stream:
        if p.created_at >= switch and p.label == "neutral" and rng.random() < 0.7:
            p = replace(p, label=rng.choice(("positive", "negative")))
        out.append(p)
    return out


@pytest.mark.parametrize("detector", ["sequential", "zscore"])
def test_a_switch_fires_no_sentiment_kind_while_a_volume_spike_still_fires(redis_server, detector) -> None:
    redis.Redis.from_url(redis_server).flushdb()
    switch = T0 + SWITCH_H * 3600
    scenario = Scenario(days=2, episodes=(Episode("ETH", SPIKE_H * 3600, volume=5.0),))
    stream = relabelled([p for p in generate(scenario, seed=7) if p.created_at < T0 + END_H * 3600], switch)
    config = replace(AlertConfig(), detector=detector)

    async def go() -> list:
        store = WindowStore.from_url(redis_server, retention_s=48 * 3600)
        engine = AlertEngine(store, config, partitions=1, samples=0)
        committed: list = []
        epochs: list[Epoch] = []

        async def claim_as(identity: str, first_post: float) -> None:
            # What BatchProcessor._claim_epoch does at a worker's first batch.
            found = claim(parse(await store.epochs()), identity, first_post // 60 * 60, NOW)
            if found is not None:
                raw = await store.epochs()
                assert await store.append_epoch(found.to_json(), raw[-1] if raw else None)
                epochs.append(found)

        for i in range(0, len(stream), 200):
            batch = stream[i:i + 200]
            old = [p for p in batch if p.created_at < switch]
            for part, identity in ((old, "lexicon"), ([p for p in batch if p.created_at >= switch], "smollm2+default+ngram")):
                if not part:
                    continue
                await claim_as(identity, part[0].created_at)
                items = [Scored(Post(p.id, f"${p.asset} {p.label} #{p.id}", p.created_at, (p.asset,), "forum", p.channel), p.label,
                                SCORES[p.label]) for p in part]
                await store.apply(items, {}, part[-1].created_at, {0: part[-1].created_at})
                touched: dict[str, float] = {}
                for p in part:
                    for scope in ("all", "source:forum", f"asset:{p.asset}", f"channel:{p.channel}"):
                        touched[scope] = max(touched.get(scope, 0.0), p.created_at)
                committed += await engine.judge(touched)
        assert [e.identity for e in epochs] == ["lexicon", "smollm2+default+ngram"]
        assert epochs[1].since == switch
        await store.close()
        return committed

    committed = asyncio.run(go())
    firing = {(r.scope, r.kind) for r in committed if r.state == "firing"}
    sentiment = sorted((r.scope, r.kind, r.window_end) for r in committed if r.kind != "volume_spike" and r.state == "firing")
    assert sentiment == []
    assert ("asset:ETH", "volume_spike") in firing
    spikes = [epoch(r.window_end) for r in committed if (r.scope, r.kind, r.state) == ("asset:ETH", "volume_spike", "firing")]
    assert min(spikes) >= T0 + SPIKE_H * 3600


def test_each_worker_records_its_classifier_at_its_first_batch(redis_server, caplog) -> None:
    """Through the batch processor: the first worker's classifier covers the history, a worker of
    another classifier starts an epoch at its first post's bucket and says so in a warning, and an
    old-model worker restarting during the rollout starts none."""
    import json
    import logging

    from model.scorer import judgement_from_probs
    from stream.batch import RawMessage
    from stream.processor import BatchProcessor

    redis.Redis.from_url(redis_server).flushdb()

    async def discard(topic, records):
        pass

    shown: list[float | None] = []  # what each worker's sentinel_sentiment_judged_from_seconds says

    class Metrics:
        def observe_batch(self, outcome) -> None:
            pass

        def dead_lettered(self, reason) -> None:
            pass

        def alert(self, record) -> None:
            pass

        def sentiment_judged_from(self, at: float | None) -> None:
            shown.append(at)

    def worker(store: WindowStore, base: str, adapter: str | None, engine: AlertEngine | None = None) -> BatchProcessor:
        return BatchProcessor(lambda texts: [judgement_from_probs([0.1, 0.8, 0.1]) for _ in texts], store, discard, sentiment_topic="out",
                              dlq_topic="dlq", model_base=base, model_adapter=adapter, alerts=engine, metrics=Metrics())

    def post(i: int, ts: float) -> RawMessage:
        return RawMessage(json.dumps({"id": f"p{i}", "text": "post", "created_at": ts}).encode(), "forum-posts", 0, i)

    async def go() -> list[Epoch]:
        store = WindowStore.from_url(redis_server)
        engine = AlertEngine(store, AlertConfig(), partitions=1, samples=0)
        for i, (base, adapter) in enumerate((("lexicon", None), ("lexicon", None), ("smollm2", "default+ngram"), ("lexicon", None))):
            proc = worker(store, base, adapter, engine)
            await proc.start()
            await proc.handle([post(i, T0 + 3600 * i + 61)])
            await proc.handle([post(10 + i, T0 + 3600 * i + 120)])  # once per worker: a second batch reads nothing
        found = parse(await store.epochs())
        await store.close()
        return found

    with caplog.at_level(logging.WARNING, logger="stream.processor"):
        found = asyncio.run(go())
    # The old-model worker restarting within the hour keeps the switch's start (a rolling update flapping).
    assert [(e.identity, e.since) for e in found] == [("lexicon", -math.inf), ("smollm2+default+ngram", T0 + 2 * 3600 + 60),
                                                      ("lexicon", T0 + 2 * 3600 + 60)]
    (switch,) = [r for r in caplog.records if r.getMessage().startswith("model switch")]
    assert switch.model == "smollm2+default+ngram" and switch.previous_model == "lexicon"
    assert switch.sentiment_judged_from == "2026-10-01T21:01:00Z"  # 19 h after 02:01: a window and 75% of a day
    # The metric, once per worker: none before the switch; the switch's end on the new worker and on
    # the old-model worker that restarted during the rollout.
    assert shown == [None, None, epoch("2026-10-01T21:01:00Z"), epoch("2026-10-01T21:01:00Z")]


def test_a_worker_checks_its_classifier_again_and_a_switch_starts_after_what_is_written(redis_server) -> None:
    """Through the batch processor. A new-model worker whose first batch is a lagging partition's
    five-hour-old posts starts the epoch where the old model's worker had written to, not at its
    own old posts. An old-model pod restarting during the rollout records itself as the newest;
    the new-model worker, checking again while it labels, records itself back, so the newest epoch
    names the model that runs (checked at its first batch alone, it named the old one for good)."""
    import json

    from model.scorer import judgement_from_probs
    from stream.batch import RawMessage
    from stream.processor import BatchProcessor

    redis.Redis.from_url(redis_server).flushdb()

    async def discard(topic, records):
        pass

    def worker(store: WindowStore, base: str, adapter: str | None) -> BatchProcessor:
        return BatchProcessor(lambda texts: [judgement_from_probs([0.1, 0.8, 0.1]) for _ in texts], store, discard, sentiment_topic="out",
                              dlq_topic="dlq", model_base=base, model_adapter=adapter)

    def post(i: int, ts: float, partition: int) -> RawMessage:
        return RawMessage(json.dumps({"id": f"p{i}", "text": "post", "created_at": ts}).encode(), "forum-posts", partition, i)

    async def go() -> list[list[Epoch]]:
        store = WindowStore.from_url(redis_server)
        seen = []
        old = worker(store, "lexicon", None)
        await old.start()
        await old.handle([post(i, T0 + 6 * 3600 - 60 + i, 0) for i in range(50)])
        assert (await store.stats())["pwm:0"] >= T0 + 6 * 3600 - 20  # partition 0 is written to the sixth hour
        new = worker(store, "smollm2", "default+ngram")
        await new.start()
        await new.handle([post(100, T0 + 3600 + 5, 1)])  # partition 1, five hours behind
        seen.append(parse(await store.epochs()))
        restarted = worker(store, "lexicon", None)
        await restarted.start()
        await restarted.handle([post(101, T0 + 6 * 3600 + 65, 0)])
        seen.append(parse(await store.epochs()))
        new.epoch_reassert_s = 0.0  # its next check is due
        await new.handle([post(102, T0 + 3600 + 65, 1)])
        seen.append(parse(await store.epochs()))
        await store.close()
        return seen

    switched, flapped, rechecked = asyncio.run(go())
    assert [(e.identity, e.since) for e in switched] == [("lexicon", -math.inf), ("smollm2+default+ngram", T0 + 6 * 3600 - 60)]
    assert flapped[-1].identity == "lexicon" and flapped[-1].since == T0 + 6 * 3600 - 60  # the rollout flaps: no second reset
    assert rechecked[-1].identity == "smollm2+default+ngram" and label_since(rechecked) == T0 + 6 * 3600 - 60


def test_the_blind_spot_is_on_metrics() -> None:
    from stream.ops.prometheus import WorkerMetrics

    m = WorkerMetrics()
    def shown() -> float:
        (line,) = [x for x in m.render().decode().splitlines() if x.startswith("sentinel_sentiment_judged_from_seconds ")]
        return float(line.split()[1])

    assert shown() == 0.0  # no switch recorded
    m.sentiment_judged_from(float(T0 + 19 * 3600))
    assert shown() == T0 + 19 * 3600
    m.sentiment_judged_from(None)
    assert shown() == 0.0
