"""Generated acceptance streams for the early-warning tests (pure; no servers).

A stream is a list of `GenPost`: event time, asset, channel and the label the post is built to get.
Posts arrive as a Poisson process; each post's label is drawn from the label mix in force at its
time, so the stream has real sampling noise. Texts are attached later (`to_posts`) by a callback
that returns a text the classifier under test labels as asked.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Callable

T0 = 1_790_812_800  # 2026-10-01T00:00:00Z: a midnight, in the past, so the validator accepts it

BASE_MIX = {"positive": 0.3, "negative": 0.2, "neutral": 0.5}
SWING_MIX = {"positive": 0.1, "negative": 0.6, "neutral": 0.3}


@dataclass(frozen=True)
class Episode:
    """From `start` (seconds after T0) for `duration` seconds: `asset`'s posts follow `mix`, and
    its rate is multiplied by `volume`."""

    asset: str
    start: int
    duration: int = 3600
    mix: dict[str, float] | None = None
    volume: float = 1.0

    def covers(self, t: float, asset: str) -> bool:
        return asset == self.asset and T0 + self.start <= t < T0 + self.start + self.duration


@dataclass(frozen=True)
class Scenario:
    days: int = 7
    per_minute: dict[str, float] = field(default_factory=lambda: {"BTC": 2.0, "ETH": 1.0, "SOL": 1.0})
    mix: dict[str, float] = field(default_factory=lambda: dict(BASE_MIX))
    episodes: tuple[Episode, ...] = ()
    channels: tuple[str, ...] = ("general", "trading")


@dataclass(frozen=True)
class GenPost:
    id: str
    created_at: float
    asset: str
    label: str
    channel: str


def generate(scenario: Scenario, seed: int) -> list[GenPost]:
    rng = random.Random(seed)
    end = T0 + scenario.days * 86400
    posts: list[GenPost] = []
    for asset, rate in scenario.per_minute.items():
        t = float(T0)
        while True:
            boost = next((e.volume for e in scenario.episodes if e.covers(t, asset)), 1.0)
            t += rng.expovariate(rate * boost / 60.0)
            if t >= end:
                break
            episode = next((e for e in scenario.episodes if e.covers(t, asset) and e.mix), None)
            mix = episode.mix if episode else scenario.mix
            label = rng.choices(list(mix), weights=list(mix.values()))[0]
            posts.append(GenPost("", round(t, 3), asset, label, rng.choice(scenario.channels)))
    posts.sort(key=lambda p: (p.created_at, p.asset))
    return [GenPost(f"p{seed}-{i:06d}", p.created_at, p.asset, p.label, p.channel) for i, p in enumerate(posts)]


def to_posts(stream: list[GenPost], text_for: Callable[[str, str, random.Random], str], seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    return [
        {"id": p.id, "text": text_for(p.asset, p.label, rng), "created_at": p.created_at, "source": "forum", "channel": p.channel}
        for p in stream
    ]


SCORES = {"positive": 0.6, "negative": -0.6, "neutral": 0.0}


def simulate(stream: list[GenPost], config, scores: dict[str, float] = SCORES) -> list:
    """Judge every scope of a generated stream at every boundary, as the worker would, from
    in-memory step-wide slices instead of Redis. Returns the alert records in event-time order."""
    _, _, _, records = _judge_all(stream, config, scores, pairs=False)
    return records


def _judge_all(stream: list[GenPost], config, scores: dict[str, float], pairs: bool):
    """(tables by scope, first slice start, the boundaries, the records of every judged scope):
    step-wide slice tables of every scope (and, with `pairs`, of the hidden pair scopes that incident
    grouping reads), and every scope judged at every boundary."""
    import numpy as np

    from stream.alerts.judging import boundaries, judge_sequential, judge_series, read_span, scope_history_start, table_bins

    end = max(p.created_at for p in stream)
    todo = boundaries(T0, end, config.step_s)
    first, count = read_span(todo, config)
    tables: dict[str, np.ndarray] = {}
    for p in stream:
        i = int((p.created_at - first) // config.step_s)
        if i >= count:
            continue
        s = scores[p.label]
        row = np.array([1, p.label == "positive", p.label == "negative", p.label == "neutral", s, s * s], dtype=float)
        asset = f"asset:{p.asset}"
        scopes = ["all", asset, f"channel:{p.channel}", "source:forum"]
        if pairs:
            scopes += [f"channel:{p.channel}|{asset}", f"source:forum|{asset}"]
        for scope in scopes:
            tables.setdefault(scope, np.zeros((count, 6)))[i] += row
    # Each scope's history begins at its first post (its earliest one-minute bucket), never before
    # the stream's first post: the worker's rule (judging.scope_history_start).
    stream_start = min(p.created_at for p in stream)
    records = []
    for scope, table in tables.items():
        if "|" in scope:
            continue  # a pair scope: read by grouping, never judged
        used = np.flatnonzero(table[:, 0])
        start = scope_history_start(float(first + used[0] * config.step_s) if len(used) else None, stream_start)
        if config.detector == "sequential":
            records += judge_sequential(scope, {}, None, table_bins(table, first, config.step_s, start), todo, config, "-")[2]
        else:
            records += judge_series(scope, {}, table, first, todo, start, config, "-")[1]
    return tables, first, todo, sorted(records, key=lambda r: (r.window_end, r.scope, r.kind))


def judged_share(stream: list[GenPost], asset: str, config) -> float:
    """The share of a generated week's boundaries (after the first day's baseline) at which
    `asset`'s current window holds enough effective posts for its label mix to be judged at all.
    A quiet week proves little about a scope that was never judged."""
    import numpy as np

    from stream.alerts.judging import _weighted

    per_window = config.window_s // config.step_s
    steps = int((max(p.created_at for p in stream) - T0) // config.step_s) + 1
    table = np.zeros((steps, 6))
    for p in stream:
        if p.asset == asset:
            table[int((p.created_at - T0) // config.step_s), 0] += 1
    weights = 0.5 ** (np.arange(per_window - 1, -1, -1) * config.step_s / config.half_life_s)
    first = (config.window_s + config.baseline_s) // config.step_s
    judged = [_weighted(table, end - per_window, end, weights).n_eff >= config.thresholds.min_posts for end in range(first, steps)]
    return float(np.mean(judged))


def simulate_incidents(stream: list[GenPost], config, group, scores: dict[str, float] = SCORES) -> tuple[list, list]:
    """`simulate`, then the transitions grouped into incidents as the correlator groups them
    (stream/alerts/grouping.py), the explanations read from in-memory tables of every scope and
    pair scope. Returns (records as published, notices)."""
    from stream.alerts import grouping
    from stream.timefmt import epoch

    tables, first, todo, records = _judge_all(stream, config, scores, pairs=True)
    end = max(p.created_at for p in stream)
    column = {"negative": 2, "positive": 1, "n": 0}

    def total(scope: str, start: int, stop: int, col: int) -> float:
        table = tables.get(scope)
        if table is None:
            return 0.0
        lo, hi = max((start - first) // config.step_s, 0), max((stop - first) // config.step_s, 0)
        return float(table[lo:hi, col].sum())

    def counts(q, scope):
        col, ref = column[grouping.LABEL_OF_KIND[q.kind]], group.reference_s
        return grouping.Counts(total(scope, q.onset - ref, q.onset, col), total(scope, *q.span(), col))

    by_boundary: dict[int, list] = {}
    for r in records:
        by_boundary.setdefault(int(epoch(r.window_end)), []).append(r)
    state, published, notices = grouping.GroupState(), [], []
    after = min(by_boundary) - config.step_s if by_boundary else int(end)
    limit = int(end // config.step_s) * config.step_s
    boundary = grouping.next_boundary(state, by_boundary, after, limit, config.step_s, group)
    while boundary is not None:
        now = [r for b in sorted(by_boundary) if b <= boundary for r in by_boundary.pop(b)]
        asked = grouping.questions(state, boundary, now, group, [s for s in tables if s.startswith("asset:") and "|" not in s])
        answers = grouping.explanations(asked, counts, group)
        state, entries, _ = grouping.advance(state, boundary, now, answers, group)
        for e in entries:
            published += [{**r, "notified": e.notice is not None} for r in e.records]
            if e.notice is not None:
                notices.append(e.notice)
        boundary = grouping.next_boundary(state, by_boundary, boundary, limit, config.step_s, group)
    state, entries, _ = grouping.flush(state, limit)
    for e in entries:
        published += [{**r, "notified": True} for r in e.records]
        notices.append(e.notice)
    return published, notices


def through_confusion(stream: list[GenPost], confusion: dict[str, dict[str, int]], seed: int) -> list[GenPost]:
    """The stream as a real classifier would label it: each post's label redrawn from the row of a
    measured confusion matrix (true label -> predicted label -> count), e.g. the `confusion` of an
    evaluation JSON in docs/results/. Seeded, so a run is repeatable."""
    from dataclasses import replace as _replace

    rng = random.Random(seed * 7919 + 17)
    rows = {true: ([p for p in row], [row[p] for p in row]) for true, row in confusion.items()}
    return [_replace(p, label=rng.choices(*rows[p.label])[0]) for p in stream]
