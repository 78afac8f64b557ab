"""Sequential change detection (pure, no I/O): CUSUM charts updated once per event-time step bin,
so judging a scope costs O(1) in its history. `SENTINEL_ALERT_DETECTOR=sequential` selects it; the
window z-score detector (detector.py) stays the default until this one's figures are in.

Per scope, one state (`SeqState`) of a few numbers, updated from each new step bin:

- the baseline: rolling sums over the trailing `baseline` lagged by the `window` (posts, negative,
  positive, sum of squared bin counts), updated by the bin entering it and the one leaving it;
  p0 = smoothed label share, lambda = posts per bin, phi = the bins' Pearson dispersion (forum
  traffic is burstier than Poisson). The baseline used for judging is frozen while the scope has
  an open incident, so the swing does not teach the detector that it is normal.
- for each direction (negative for `sentiment_drop`, positive for `sentiment_surge`), a bank of
  Bernoulli CUSUMs on the label share (odds multipliers 2, 4, 8) and a bank of Poisson CUSUMs on the
  rate of that label's posts (multipliers 2, 4, 8, 16), and for `volume_spike` a Poisson bank on all
  posts (2, 3, 5). Page's recursion S <- max(0, S + log-likelihood ratio of the bin), in nats.
- a kind fires when its statistic reaches `b` nats; `sentiment_drop`/`surge` fire on the share
  chart alone, or on the rate chart when the label's share among the posts since the rate chart's
  onset is `confirm_z` standard errors above the baseline share and the share chart holds at least
  `confirm_nats` (both must lean the same way): a sell-off brings more posts and
  more negative ones, and its negative rate moves far faster than its share, while a pure volume
  spike with an unchanged mix moves the rate but not the share. Once a kind has fired on the
  confirmed rate chart, the confirmation holds at half those bars (`confirmed`) until the change
  ends: a share z hovering at the bar (3.6, 3.4, 3.6) made a firing drop resolve and fire again
  within minutes.

False alarms: a CUSUM's run length to a false alarm is at least e^b observations (Lorden), and a
bank of K charts costs about ln K. With M scope-directions sharing one budget, each needs about
b + ln M; `b = threshold + ln(streams)` with `streams` a setting, so the same input gives the same
records whatever the number of workers (never the number of scopes seen so far).

The statistic maps onto the incident lifecycle's thresholds (incidents.step): strength = S / b x
fire_z, so the default fire 3 / resolve 1.5 / critical 6 mean fire at b, resolve below b/2 and
critical at 2b. A chart is capped at 2b; once it has fired, a reverse CUSUM (`ended`) weighs the
baseline against (most of the way to) the post-change estimate bin by bin, and at b nats for the baseline the
direction's charts restart, so the incident resolves soon after the swing ends (a chart left to
drain on its own would take hours: its weakest alternative is the one that holds on).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from stream.alerts.detector import Kind, Signal
from stream.windows import SliceCol

SHARE_ODDS = (2.0, 4.0, 8.0)
RATE_MULTIPLIERS = (2.0, 4.0, 8.0, 16.0)
VOLUME_MULTIPLIERS = (2.0, 3.0, 5.0)
# Prior pseudo-posts for a share: a scope with no history starts from a quarter, and a handful of
# posts cannot make a share of exactly 0 (which would make one post infinitely surprising).
PRIOR_POSTS, PRIOR_SHARE = 4.0, 0.25


@dataclass(frozen=True)
class SeqConfig:
    threshold_nats: float = 11.0  # per chart, before the ln(streams) correction
    streams: int = 20  # scope-directions expected to share the false-alarm budget
    # A rate alarm counts as a drop (surge) only if the label's share among the posts since its onset
    # is this many standard errors above the baseline share: a volume spike with an unchanged mix
    # raises the negative rate, not the share.
    confirm_z: float = 3.5
    confirm_nats: float = 3.0  # ... and the share chart must hold at least this much evidence
    min_posts: int = 3  # posts since the estimated onset before a sentiment kind can fire

    @property
    def b(self) -> float:
        return self.threshold_nats + math.log(max(self.streams, 1))


@dataclass
class Bank:
    """One CUSUM per alternative, with Page's onset estimate (the last step the sum was zero) and
    the posts and hits counted since then."""

    s: list[float]
    zero_at: list[int]
    posts: list[float]
    hits: list[float]

    @classmethod
    def new(cls, k: int, at: int) -> "Bank":
        return cls([0.0] * k, [at] * k, [0.0] * k, [0.0] * k)

    def update(self, increments: Sequence[float], n: float, hits: float, at: int, cap: float) -> None:
        for i, inc in enumerate(increments):
            value = self.s[i] + inc
            if value <= 0.0:
                self.s[i], self.zero_at[i], self.posts[i], self.hits[i] = 0.0, at, 0.0, 0.0
            else:
                self.s[i], self.posts[i], self.hits[i] = min(value, cap), self.posts[i] + n, self.hits[i] + hits

    def best(self) -> int:
        """The strongest alternative (the first of equals)."""
        s = self.s
        return s.index(max(s))


@dataclass
class SeqState:
    # Rolling baseline sums: posts, negative, positive, sum of squared bin counts, bins seen.
    base: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0, 0.0, 0.0])
    frozen: dict[str, float] | None = None
    banks: dict[str, Bank] = field(default_factory=dict)
    # The end of a change (`ended`): per direction and for volume, the post-change estimate taken
    # when the charts first held half the threshold, and the reverse CUSUM's evidence that the
    # stream is back at its baseline.
    after: dict[str, float] = field(default_factory=dict)
    back: dict[str, float] = field(default_factory=dict)
    # Directions whose rate chart fired confirmed: the confirmation holds at half its bars until the
    # charts fall back under b/2 or `ended` restarts them.
    latched: list[str] = field(default_factory=list)

    @classmethod
    def fresh(cls, at: int) -> "SeqState":
        return cls(banks={name: Bank.new(len(alternatives), at) for name, alternatives in (
            ("negative_share", SHARE_ODDS), ("negative_rate", RATE_MULTIPLIERS), ("positive_share", SHARE_ODDS),
            ("positive_rate", RATE_MULTIPLIERS), ("volume", VOLUME_MULTIPLIERS))})

    def to_json(self) -> dict[str, Any]:
        # By hand, not dataclasses.asdict: its deep copy was a sixth of judging's time with many scopes.
        banks = {k: {"s": v.s, "zero_at": v.zero_at, "posts": v.posts, "hits": v.hits} for k, v in self.banks.items()}
        return {"base": self.base, "frozen": self.frozen, "banks": banks, "after": self.after, "back": self.back, "latched": self.latched}

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> "SeqState | None":
        if not data:
            return None
        return cls(list(data["base"]), data.get("frozen"), {k: Bank(**v) for k, v in data["banks"].items()},
                   dict(data.get("after") or {}), dict(data.get("back") or {}), list(data.get("latched") or []))


def baseline_params(base: Sequence[float]) -> dict[str, float]:
    """p0 for each label share, posts per bin and the dispersion, from the rolling sums over the
    baseline bins known so far (a bin before the stream began is unknown, not quiet)."""
    n, neg, pos, squares, seen = base
    seen = max(seen, 1.0)
    bins = seen
    rate = max(n, 0.5) / bins  # never zero: a scope silent for a day still has a finite surprise
    mean = n / seen
    variance = (squares - n * n / seen) / (seen - 1) if seen > 1 else mean
    return {
        "p_negative": (neg + PRIOR_POSTS * PRIOR_SHARE) / (n + PRIOR_POSTS),
        "p_positive": (pos + PRIOR_POSTS * PRIOR_SHARE) / (n + PRIOR_POSTS),
        "rate": rate,
        "rate_negative": max(neg, 0.5) / bins,
        "rate_positive": max(pos, 0.5) / bins,
        "phi": max(1.0, variance / mean) if mean > 0 else 1.0,
        "posts": n,
    }


def share_increments(p0: float, hits: float, n: float) -> list[float]:
    out = []
    for r in SHARE_ODDS:
        q = r * p0 / (1 - p0 + r * p0)
        out.append(hits * math.log(q / p0) + (n - hits) * math.log((1 - q) / (1 - p0)))
    return out


def rate_increments(rate: float, count: float, phi: float, multipliers: Sequence[float]) -> list[float]:
    return [(count * math.log(rho) - (rho - 1) * rate) / phi for rho in multipliers]


DIRECTIONS: tuple[tuple[Kind, str, int], ...] = (("sentiment_drop", "negative", SliceCol.NEGATIVE),
                                                  ("sentiment_surge", "positive", SliceCol.POSITIVE))


def advance(state: SeqState | None, new: np.ndarray, entering: np.ndarray | None, leaving: np.ndarray | None, *,
            at: int, baseline_bins: int, config: SeqConfig, frozen: bool, min_coverage: float = 0.75, step_s: int = 60) -> SeqState:
    """One step: the bin ending at `at` (`new`), the bin entering the baseline and the one leaving it
    (None where the bin is before the stream began: unknown, not counted). `frozen`: the scope has
    an open incident. The charts start once `min_coverage` of the baseline's bins are known."""
    state = state or SeqState.fresh(at)
    for row, sign in ((entering, 1.0), (leaving, -1.0)):
        if row is not None:
            n_row = float(row[SliceCol.N])
            state.base = [state.base[0] + sign * n_row, state.base[1] + sign * float(row[SliceCol.NEGATIVE]),
                          state.base[2] + sign * float(row[SliceCol.POSITIVE]), state.base[3] + sign * n_row * n_row,
                          state.base[4] + sign]
    if state.base[4] < min_coverage * baseline_bins:
        for bank in state.banks.values():  # no baseline yet: nothing to compare with, no onset
            bank.zero_at = [at] * len(bank.s)
        return state
    live = baseline_params(state.base)
    if frozen and state.frozen is None:
        state.frozen = live
    elif not frozen:
        state.frozen = None
    p = state.frozen or live
    cap = 2 * config.b
    n = float(new[SliceCol.N])
    for _, label, col in DIRECTIONS:
        hits = float(new[col])
        if n > 0:
            state.banks[f"{label}_share"].update(share_increments(p[f"p_{label}"], hits, n), n, hits, at, cap)
        state.banks[f"{label}_rate"].update(rate_increments(p[f"rate_{label}"], hits, p["phi"], RATE_MULTIPLIERS), n, hits, at, cap)
    state.banks["volume"].update(rate_increments(p["rate"], n, p["phi"], VOLUME_MULTIPLIERS), n, n, at, cap)
    ended(state, new, p, at, config, step_s)
    _latch(state, p, config)
    return state


def _latch(state: SeqState, p: dict[str, float], config: SeqConfig) -> None:
    """Latch a direction whose rate chart holds b nats on a full confirmation; release it once its
    rate chart is under b/2 (the incident resolves there) or was restarted."""
    for _, label, _ in DIRECTIONS:
        rate = state.banks[f"{label}_rate"]
        j = rate.best()
        if rate.s[j] < config.b / 2:
            if label in state.latched:
                state.latched.remove(label)
        elif label not in state.latched and rate.s[j] >= config.b and confirmed(state, label, p[f"p_{label}"], config):
            state.latched.append(label)


def confirmed(state: SeqState, label: str, p0: float, config: SeqConfig) -> bool:
    """Do the share among the rate chart's posts and the share chart lean the same way as the rate
    chart? At `confirm_z` and `confirm_nats`; at half of each once the direction is latched."""
    share, rate = state.banks[f"{label}_share"], state.banks[f"{label}_rate"]
    j = rate.best()
    scale = 0.5 if label in state.latched else 1.0
    return _share_z(rate.hits[j], rate.posts[j], p0) >= scale * config.confirm_z and max(share.s) >= scale * config.confirm_nats


def ended(state: SeqState, new: np.ndarray, p: dict[str, float], at: int, config: SeqConfig, step_s: int) -> None:
    """Has the change ended? Page's CUSUM run the other way: once a direction's charts reached b
    (fired), and while they hold at least b/2 (enough to keep the incident firing), each bin adds the log-likelihood ratio of the
    baseline against a share (rate) most of the way to the post-change estimate (`_midway`); at b
    nats of that evidence the direction's charts
    restart from zero, so the incident resolves. Without it a chart capped at 2b only drains at the
    rate the baseline contradicts its weakest alternative: hours for a swing of one hour.

    The share's estimate is first taken when the charts fire and rises with the evidence while this
    test holds none (the change is still on); it never falls. A three-fold sell-off fires its rate
    chart on its first few posts, at a share well under the swing's (0.39 against 0.49, through the
    shipped adapter's errors), and weighed against that the baseline took up to three hours to end
    a one-hour swing."""
    # Ending early costs a flap (resolved, then firing again), so the reverse test needs the same
    # evidence as the forward one: b nats. (At b/2 a single bin of nine posts with one negative ended
    # a 60% sell-off halfway through.) Its charts stay in play while they hold b/2.
    level, enough, n = config.b / 2, config.b, float(new[SliceCol.N])
    for _, label, col in DIRECTIONS:
        share, rate = state.banks[f"{label}_share"], state.banks[f"{label}_rate"]
        p0 = p[f"p_{label}"]
        if max(max(share.s), max(rate.s)) < level:
            state.after.pop(label, None)
            state.back.pop(label, None)
            continue
        if label not in state.after and max(max(share.s), max(rate.s)) < config.b:
            continue  # not fired: detection alone decides until then
        if not state.back.get(label):
            bank = share if max(share.s) >= max(rate.s) else rate
            k = bank.best()
            estimate = bank.hits[k] / bank.posts[k] if bank.posts[k] else p0
            state.after[label] = max(estimate, state.after.get(label, 0.0))
        q = _midway(p0, state.after[label])
        if n <= 0 or q <= p0 or q >= 1:
            continue
        hits = float(new[col])
        llr = hits * math.log(p0 / q) + (n - hits) * math.log((1 - p0) / (1 - q))
        state.back[label] = max(0.0, state.back.get(label, 0.0) + llr)
        if state.back[label] >= enough:
            for bank in (share, rate):
                bank.s, bank.zero_at = [0.0] * len(bank.s), [at] * len(bank.s)
                bank.posts, bank.hits = [0.0] * len(bank.s), [0.0] * len(bank.s)
            state.after.pop(label, None)
            state.back.pop(label, None)
    vol = state.banks["volume"]
    if max(vol.s) < level:
        state.after.pop("volume", None)
        state.back.pop("volume", None)
        return
    rate0 = p["rate"]
    if "volume" not in state.after:
        if max(vol.s) < config.b:
            return
        k = vol.best()
        state.after["volume"] = vol.posts[k] / max((at - vol.zero_at[k]) / step_s, 1.0)  # posts per bin since the onset
    lam = rate0 ** (1 - BACK_TOWARD) * state.after["volume"] ** BACK_TOWARD  # in log rate, as _midway
    if lam <= rate0:
        return
    llr = (n * math.log(rate0 / lam) - (rate0 - lam)) / p["phi"]
    state.back["volume"] = max(0.0, state.back.get("volume", 0.0) + llr)
    if state.back["volume"] >= enough:
        vol.s, vol.zero_at = [0.0] * len(vol.s), [at] * len(vol.s)
        vol.posts, vol.hits = [0.0] * len(vol.s), [0.0] * len(vol.s)
        state.after.pop("volume", None)
        state.back.pop("volume", None)


BACK_TOWARD = 0.75  # how far towards the post-change estimate (in log odds or log rate) the reverse test looks


def _midway(p0: float, q: float) -> float:
    """The share BACK_TOWARD of the way from the baseline to the post-change estimate, in log odds.
    The estimate is taken when a chart fires, so it is biased high (charts fire on lucky runs);
    weighing the baseline against it would call a change that merely settled a little lower "over"
    and flap. Halfway is safer still but took 2-3 hours to resolve a one-hour swing."""
    if not 0 < q < 1 or q <= p0:
        return q
    logit = (1 - BACK_TOWARD) * math.log(p0 / (1 - p0)) + BACK_TOWARD * math.log(q / (1 - q))
    return 1 / (1 + math.exp(-logit))


def quiet(state: SeqState, config: SeqConfig, fire_z: float) -> bool:
    """Can no kind fire at this boundary? Every verdict's strength is its statistic / b x fire_z,
    and no statistic exceeds the largest chart, so if that is under the bar (computed the same way,
    and rounding is monotone), a scope with no incident gets no transition from `verdicts`. Almost
    every scope is quiet at almost every boundary; its verdicts were a twelfth of a worker's CPU
    with hundreds of scopes (docs/results/judging_pyspy.json)."""
    top = max(max(bank.s) for bank in state.banks.values())
    return top / config.b * fire_z < fire_z


@dataclass(frozen=True)
class Verdict:
    """What a kind's charts say now, as a detector.Signal for the incident lifecycle, plus the
    estimated onset (event time) of the change."""

    signal: Signal
    onset: int


def verdicts(state: SeqState, *, at: int, step_s: int, per_window: int, config: SeqConfig, fire_z: float) -> dict[Kind, Verdict]:
    """Posts and rates are given per window (per_window steps), as the window detector gives them."""
    p = state.frozen or baseline_params(state.base)
    out: dict[Kind, Verdict] = {}
    for kind, label, _ in DIRECTIONS:
        share, rate = state.banks[f"{label}_share"], state.banks[f"{label}_rate"]
        i, j = share.best(), rate.best()
        s_share, s_rate = share.s[i], rate.s[j]
        p0 = p[f"p_{label}"]
        counted = s_rate if confirmed(state, label, p0, config) else 0.0
        stat = max(s_share, counted)
        bank, k = (share, i) if s_share >= counted else (rate, j)
        posts, hits = bank.posts[k], bank.hits[k]
        value = hits / posts if posts else p0
        z = _share_z(hits, posts, p0)
        enough = posts >= config.min_posts
        out[kind] = Verdict(_signal(kind, f"{label}_share", value, p0, z, stat, config, fire_z, enough, int(posts), p["posts"]),
                            bank.zero_at[k])
    vol = state.banks["volume"]
    k = vol.best()
    steps = max((at - vol.zero_at[k]) / step_s, 1.0)
    value, rate = vol.posts[k] / steps, p["rate"]
    z = (value - rate) / math.sqrt(p["phi"] * rate / steps)
    out["volume_spike"] = Verdict(_signal("volume_spike", "posts", value * per_window, rate * per_window, z, vol.s[k], config, fire_z, True,
                                          int(vol.posts[k]), p["posts"]), vol.zero_at[k])
    return out


def _share_z(hits: float, posts: float, p0: float) -> float:
    return (hits / posts - p0) / math.sqrt(p0 * (1 - p0) / posts) if posts else 0.0


def _signal(kind: Kind, metric: str, value: float, baseline: float, z: float, stat: float, config: SeqConfig, fire_z: float,
            enough: bool, posts: int, baseline_posts: float) -> Signal:
    return Signal(kind=kind, metric=metric, value=value, baseline=baseline, zscore=z, strength=stat / config.b * fire_z,
                  effect_ok=True, enough_data=enough, posts=posts, baseline_posts=int(baseline_posts))


