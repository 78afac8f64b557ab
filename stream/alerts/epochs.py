"""Model epochs (pure): which classifier labelled which buckets, so that the sentiment kinds are
judged only against buckets the current classifier labelled.

A switch of classifier moves every label share at once (docs/results/model_switch_s56.json: the
keyword scorer to the shipped classifier raised a market-wide incident of 13 members, open 27 h 52
min after the switch), because a baseline of the old model's labels is no baseline for the new
one's. The posts themselves do not change: volume keeps its whole history.

The epochs are a list, oldest first, in one Redis key (keys.MODEL_EPOCHS_KEY): each the identity of
a classifier and the start of the first bucket it labelled. A worker appends one at its first batch,
and at each check after (REASSERT_S), when its identity differs from the newest (`claim`); judging clips the sentiment kinds' history to
the newest epoch's start (`label_since`), and the coverage rule (min_baseline_coverage) keeps them
unjudged until the new classifier has labelled enough of a baseline (`warm_until`).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from stream.windows import bucket_start

# A worker of the model before the newest epoch's that starts within this long (wall clock) of that
# epoch being recorded is the old side of a rolling update (a pod restarted, or not yet replaced):
# its epoch keeps the newest one's start, so a rollout that flaps between the two models for minutes
# clips history once, not at every restart. A rollback later than this is a switch of its own.
ROLLOUT_S = 3600.0

# A worker checks its classifier against the newest epoch at its first batch and again this often
# (wall clock) while it labels, so that the newest epoch names a classifier that runs: while two
# models label side by side (a rollout, a canary) the newest alternates between them, each record
# well within ROLLOUT_S of the one before, so history is clipped once however long they share; and
# once one side is gone the other is the newest within this long. Checked only at the first batch,
# the newest could name a model no worker ran any more (an old pod restarted during the rollout,
# a canary removed), and a later switch to it went unrecorded.
REASSERT_S = ROLLOUT_S / 4


@dataclass(frozen=True)
class Epoch:
    identity: str  # model_identity of the classifier
    since: float  # start of the first bucket it labelled; -inf for the first epoch recorded
    at: float  # wall clock when it was recorded

    def to_json(self) -> str:
        # -inf is no JSON number: the first epoch is written with since null.
        since = None if math.isinf(self.since) else self.since
        return json.dumps({"identity": self.identity, "since": since, "at": self.at}, sort_keys=True)

    @classmethod
    def from_json(cls, raw: str | bytes) -> "Epoch | None":
        """An epoch as to_json wrote it; None for anything else (a hand-edited or foreign entry is
        ignored, never a crash)."""
        try:
            data: Any = json.loads(raw)
            since = float("-inf") if data.get("since") is None else float(data["since"])
            return cls(str(data["identity"]), since, float(data.get("at") or 0.0))
        except (ValueError, TypeError, KeyError, AttributeError):
            return None


def model_identity(base: str, adapter: str | None) -> str:
    """What decides the labels: the base model and the adapter, whose name carries the n-gram head's
    tag (`+ngram`, `+ngram-<sha>`: model/fusion.py), exactly as every post-sentiment record names
    its model. Device, dtype, quantisation and the token limit are left out, so that a move from
    CPU to GPU does not blind the sentiment kinds for a day; that they move labels at the margin
    alone is measured for bf16's batch shapes only (docs/benchmarks.md), not for 8-bit or 4-bit
    quantisation (docs/alerts.md says what an operator checks first)."""
    return f"{base}+{adapter}" if adapter else base


def first_bucket(first_post: float, stats: Mapping[str, float], bucket_s: int, now: float) -> float:
    """Where a switch starts: the bucket of the batch's earliest post, but never before the newest
    post any partition has written (pwm:<p> in the stats hash): a bucket before that holds the
    labels other workers (the old model's) wrote there, and a worker that reads a lagging
    partition, or a replay's old posts, must not count those as its own. Nor after `now` (wall
    clock): a first batch of one source stamping hours ahead (SENTINEL_MAX_AHEAD lets such posts
    in) would leave the new classifier's labels until then out of its baseline and the sentiment
    kinds blind that much longer."""
    written = max((v for k, v in stats.items() if k.startswith("pwm:")), default=float("-inf"))
    return float(bucket_start(min(max(first_post, written), now), bucket_s))


def parse(raw: Sequence[str | bytes]) -> list[Epoch]:
    return [epoch for epoch in (Epoch.from_json(r) for r in raw) if epoch is not None]


def claim(epochs: Sequence[Epoch], identity: str, first_bucket: float, now: float, rollout_s: float = ROLLOUT_S) -> Epoch | None:
    """The epoch a worker labelling with `identity` must append before its first batch, or at a
    check after (REASSERT_S), whose earliest post is in the bucket starting `first_bucket`,, or None where the newest one is its own.

    - no epoch yet: the first covers the whole history (since -inf): a fresh Redis, a replay, or
      the first start of this version on data labelled before it, which is taken to be this model's
      (switch the model after the upgrade, not with it: docs/operations.md);
    - newest of another identity: a switch, since the first bucket this worker labels;
    - but the identity of the epoch before the newest, recorded less than `rollout_s` ago: the
      other side of a rolling update or a canary. Its epoch starts where the newest does (no second
      reset of the history), and is recorded all the same, so that the newest names a classifier
      that runs (the two alternate while both label): once one side is gone, switching to it
      again is seen as a switch."""
    if not epochs:
        return Epoch(identity, float("-inf"), now)
    newest = epochs[-1]
    if newest.identity == identity:
        return None
    if len(epochs) >= 2 and epochs[-2].identity == identity and now - newest.at < rollout_s:
        return Epoch(identity, newest.since, now)
    return Epoch(identity, max(float(first_bucket), newest.since), now)


def label_since(epochs: Sequence[Epoch]) -> float:
    """Where the current labels' history begins: the newest epoch's start (-inf: none recorded, or
    only the first, which covers everything)."""
    return epochs[-1].since if epochs else float("-inf")


def warm_until(since: float, window_s: int, baseline_s: int, coverage: float, bin_s: int) -> float:
    """The first boundary at which the sentiment kinds are judged again after a switch at `since`
    (-inf: never blind): the baseline lags the current window, so the new classifier's bins
    (`bin_s` wide: the step for the sequential detector, the window for the window detector) enter
    it a window after `since`, and `coverage` of a baseline of them must have entered."""
    if math.isinf(since):
        return since
    return since + window_s + math.ceil(coverage * baseline_s / bin_s - 1e-9) * bin_s

