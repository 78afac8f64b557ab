"""When and how a scope is judged (pure): on a fixed event-time grid, and only once every partition is past it.

A boundary B (a multiple of the step) is judged when the slowest input partition's event time is
at least B + grace. Partitions are consumed at different paces (a replay at full speed can put one
partition hours of event time ahead of another), so judging on one worker's newest event time would
make the alerts depend on consumption order. Judging on the slowest partition makes them a function
of the input alone, for input that is in event-time order within each partition (disorder up to the
grace is absorbed). A partition with nothing left to read that has reported nothing for `idle_s`
of wall time does not hold the others back (Flink's idle sources), so one silent partition cannot
mute every alert; one whose last write left posts unread (consumer lag) holds them back while it is
read, up to `lagging_idle_s` (Kafka Streams' rule: a catch-up reads partitions a chunk at a time).

The frontier (stream.windows.frontier, imported here) is also where the buckets' retention is
counted from (windows.trim_horizon): the worker trims a retention behind it, never behind the newest
post of any partition, so the baselines a boundary reads are whole however far apart the partitions
are read, and a slower partition's posts are not dropped as late.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Callable, Mapping, Sequence

import numpy as np

from stream.alerts.detector import KINDS, Current, Signal, Thresholds, override_problems, signals, thresholds_for
from stream.alerts.incidents import AlertRecord, Incident, step
from stream.alerts.sequential import SeqConfig, SeqState, advance, quiet, verdicts
# frontier lives with the windows: the batch processor trims buckets by the same partitions it counts.
from stream.windows import LAGGING_IDLE_S, SLICE_FIELDS, Kept, SliceCol, frontier  # noqa: F401 - judging's rule, imported from here too


# The kinds judged from the labels, which a classifier switch moves (volume is the posts': it does not).
SENTIMENT_KINDS = tuple(kind for kind in KINDS if kind != "volume_spike")


def silent(stats: Mapping[str, float], now: float, quiet_s: float) -> bool:
    """No partition has had a batch written for `quiet_s` of wall-clock time (pseen:<p>): the
    stream has paused, and event time, which every group wait counts in, stands still."""
    seen = [v for k, v in stats.items() if k.startswith("pseen:")]
    return bool(seen) and now - max(seen) > quiet_s


def boundaries(after: int, until: float, step_s: int, limit: int | None = None) -> list[int]:
    """Grid points B with after < B <= until (B a multiple of step_s)."""
    first = (after // step_s + 1) * step_s
    out = list(range(first, int(until // step_s) * step_s + 1, step_s))
    return out[:limit] if limit else out


@dataclass(frozen=True)
class AlertConfig:
    window_s: int = 3600
    baseline_s: int = 86400
    step_s: int = 60
    grace_s: int = 120
    repeat_s: int = 3600
    for_s: int = 480  # how long the firing condition must hold (Prometheus `for:`)
    half_life_s: int = 900  # recency weighting inside the current window (detector.Current)
    idle_s: float = 60.0
    lagging_idle_s: float = LAGGING_IDLE_S  # a partition with posts left to read waits this long (windows.frontier)
    thresholds: Thresholds = Thresholds()
    overrides: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    detector: str = "sequential"  # sequential (sequential.py) | zscore (detector.py, the older window detector)
    sequential: SeqConfig = SeqConfig()

    def __post_init__(self) -> None:
        for name in ("window_s", "baseline_s", "step_s", "half_life_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"alert {name[:-2].replace('_', ' ')} must be longer than zero")
        if min(self.grace_s, self.repeat_s, self.for_s) < 0:
            raise ValueError("alert grace, repeat and for must not be negative")
        if self.thresholds.resolve_z >= self.thresholds.fire_z:
            raise ValueError("the resolve z must be below the fire z (hysteresis), e.g. fire 3, resolve 1.5")
        problems = override_problems(self.thresholds, self.overrides)
        if problems:
            raise ValueError("; ".join(problems))
        if self.detector == "sequential":
            for pattern, values in self.overrides.items():
                if values.get("min_baseline_coverage") == 0:
                    raise ValueError(f"SENTINEL_ALERT_OVERRIDES: override min_baseline_coverage for {pattern!r} must be above 0 with the "
                                     "sequential detector (its charts would start with no baseline bin known); 0 is for "
                                     "SENTINEL_ALERT_DETECTOR=zscore, where it means one known bin is enough")
        for name in ("window_s", "baseline_s"):
            if getattr(self, name) % self.step_s:
                raise ValueError(f"alert {name[:-2]} must be a multiple of the step ({self.step_s} s)")
        if self.baseline_s % self.window_s:
            raise ValueError("the alert baseline must be a whole number of windows (e.g. 24h for a 1h window)")
        if self.detector not in ("zscore", "sequential"):
            raise ValueError(f"unknown alert detector {self.detector!r}; use zscore or sequential")

    @property
    def bins(self) -> int:
        return self.baseline_s // self.window_s

    @property
    def lookback_s(self) -> int:
        """History one boundary needs: the window and the baseline before it."""
        return self.window_s + self.baseline_s


def scope_history_start(first_bucket: float | None, stream_start: float, trimmed: float = float("-inf")) -> float:
    """Where a scope's own history begins, for the baseline's coverage rule ("bins before the
    stream began are left out; 75% of them must exist"), applied per scope: a channel, source or
    cashtag that first posts on day 3 has no history before that, not a quiet one.

    `first_bucket`: the start of the scope's earliest bucket (None: none kept); `stream_start`: the
    stream's first post (the stats' `first_event`); `trimmed`: how far any write has trimmed buckets
    (the stats' `trimmed`). A scope whose earliest bucket is at or before that line may have had
    older buckets trimmed away, so it is older than the retention and its history is the stream's.
    Read once a scope is first judged, when every post before the boundary is written, and kept
    with its state (the rolling baseline must drop exactly the bins it took)."""
    if first_bucket is None or first_bucket <= trimmed:
        return stream_start
    return max(float(first_bucket), stream_start)


def known_bin(start: float, step_s: int, history_start: float) -> bool:
    """A bin [start, start + step) is inside the observed history if any of it is at or after
    `history_start`; one that ends at or before it is unknown, not quiet."""
    return start + step_s > history_start


def read_span(boundaries_: Sequence[int], config: AlertConfig) -> tuple[int, int]:
    """(first slice start, slice count) of step-wide slices that judging these boundaries needs."""
    first = boundaries_[0] - config.lookback_s
    return first, (boundaries_[-1] - first) // config.step_s


def judge_series(
    scope: str,
    incidents: dict[str, Incident],
    slices: np.ndarray,
    first: int,
    boundaries_: Sequence[int],
    history_start: float,
    config: AlertConfig,
    now_iso: str,
    label_since: float = float("-inf"),
) -> tuple[dict[str, Incident], list[AlertRecord]]:
    """Judge one scope at each boundary in order, from step-wide slices starting at `first` (a slice
    table, windows.SLICE_FIELDS, as WindowStore.slices returns it). `label_since`: where the current
    classifier's labels begin (epochs.label_since): the sentiment kinds are judged against the
    baseline bins it labelled whole, volume against all.

    Returns the incidents after the last boundary and the records of every transition."""
    th = thresholds_for(scope, config.thresholds, config.overrides)
    table = slices
    sums = _prefix_sums(table)
    per_window = config.window_s // config.step_s
    # Newest slice weight 1, halving every half-life back: the recency weighting of detector.Current.
    ages = np.arange(per_window - 1, -1, -1, dtype=np.float64) * config.step_s
    weights = 0.5 ** (ages / config.half_life_s)
    incidents = dict(incidents)
    records: list[AlertRecord] = []
    for boundary in boundaries_:
        end = (boundary - first) // config.step_s
        current = _weighted(table, end - per_window, end, weights)
        his = end - per_window * np.arange(1, config.bins + 1)
        los = his - per_window
        # Bins before the scope's history began (scope_history_start) are unknown, not quiet: leave them out.
        known = (first + los * config.step_s + config.step_s > history_start) & (los >= 0)
        bins = sums[his[known]] - sums[los[known]]
        judged: dict[str, Signal] = dict(signals(current, bins, th, expected_bins=config.bins).items())  # keyed by Kind, read as str
        if math.isfinite(label_since) and boundary > label_since:
            # A bin that straddles the switch holds both classifiers' labels: only whole bins count.
            # A window that ends by the switch holds the old classifier's labels alone, and is
            # judged as they were (judging lags the newest posts, by the grace at least: the
            # boundaries it catches up on when the switch is recorded are mostly before it).
            labelled = known & (first + los * config.step_s >= label_since)
            clipped = signals(current, sums[his[labelled]] - sums[los[labelled]], th, expected_bins=config.bins)
            judged.update({kind: clipped[kind] for kind in SENTIMENT_KINDS})
        records += _step_kinds(scope, incidents, judged, {}, th, boundary, config, config.for_s, now_iso)
    return incidents, records


def _step_kinds(
    scope: str, incidents: dict[str, Incident], judged: Mapping[str, Signal], onsets: Mapping[str, int], th: Thresholds,
    boundary: int, config: AlertConfig, for_s: int, now_iso: str,
) -> list[AlertRecord]:
    """Move every kind's incident one judgement on (in place); the records of its transitions."""
    records = []
    for kind in KINDS:
        after, record = step(
            scope, incidents.get(kind), judged[kind], th, boundary=boundary, window_s=config.window_s,
            repeat_s=config.repeat_s, for_s=for_s, now_iso=now_iso, onset=onsets.get(kind),
        )
        if after is None:
            incidents.pop(kind, None)
        else:
            incidents[kind] = after
        if record is not None:
            records.append(record)
    return records


def measured(signal: Signal, th: Thresholds) -> Signal:
    """A label share is judged only against a baseline that measured it: at least
    `min_baseline_posts` posts (the window detector's rule, detector.signals). Below that the
    sequential detector's baseline share is mostly its prior (sequential.PRIOR_SHARE, 25%, worth
    four posts), and a record would show that guess as the baseline ("negative share 100.0%
    against 25.0%" for a source with no posts in its day). Volume is measured whatever the count:
    a known-quiet day is a baseline of zero posts."""
    if signal.kind == "volume_spike" or signal.baseline_posts >= th.min_baseline_posts:
        return signal
    return replace(signal, enough_data=False)


def _prefix_sums(table: np.ndarray) -> np.ndarray:
    sums = np.zeros((len(table) + 1, len(SLICE_FIELDS)), dtype=np.float64)
    sums[1:] = np.cumsum(table, axis=0)
    return sums


def _weighted(table: np.ndarray, lo: int, hi: int, weights: np.ndarray) -> Current:
    block = table[max(lo, 0) : hi]
    w = weights[len(weights) - len(block) :]
    n = block[:, SliceCol.N]
    total = float(w @ n)
    if total <= 0:
        return Current(0, 0.0, {"positive": 0.0, "negative": 0.0, "neutral": 0.0}, 0.0)
    sums = w @ block
    n_eff = total * total / float((w * w) @ n)
    shares = {label: sums[SliceCol[label.upper()]] / total for label in ("positive", "negative", "neutral")}
    return Current(int(round(n.sum())), n_eff, shares, float(sums[SliceCol.SCORE_SUM] / total))


BinAt = Callable[[int], "np.ndarray | None"]


def table_bins(slices: np.ndarray, first: int, step_s: int, history_start: float) -> BinAt:
    """The bin starting at a given time, from step-wide slices starting at `first`; None for a bin
    outside them or before the scope's history began (`known_bin`: unknown, not quiet)."""

    def bin_at(start: int) -> np.ndarray | None:
        i = (start - first) // step_s
        if i < 0 or i >= len(slices) or not known_bin(start, step_s, history_start):
            return None
        return slices[i]

    return bin_at


def sequential_reads(todo: Sequence[int], config: AlertConfig) -> list[tuple[int, int]]:
    """(first slice start, count) of the step-wide slices a scope with state needs to judge `todo`:
    its new bins, the bins entering the baseline and those leaving it, whatever its history."""
    step_s, count = config.step_s, len(todo)
    new = todo[0] - step_s
    return [(new, count), (new - config.window_s, count), (new - config.window_s - config.baseline_s, count)]


def judge_sequential(
    scope: str,
    incidents: dict[str, Incident],
    state: SeqState | None,
    bin_at: BinAt,
    boundaries_: Sequence[int],
    config: AlertConfig,
    now_iso: str,
    label_since: float = float("-inf"),
) -> tuple[dict[str, Incident], SeqState | None, list[AlertRecord]]:
    """judge_series for the sequential detector: the state moves one step bin per boundary. A scope
    without state first takes its whole baseline (so `bin_at` must then cover the lookback); after
    that each boundary needs three bins, the new one, the one entering the baseline and the one
    leaving it (`sequential_reads`), so the cost does not grow with the history. `label_since` as
    for judge_series (sequential.advance)."""
    th = thresholds_for(scope, config.thresholds, config.overrides)
    step_s, per_window, base_bins = config.step_s, config.window_s // config.step_s, config.baseline_s // config.step_s
    seq = config.sequential
    if th.critical_z / th.fire_z != seq.critical_ratio:  # the scope's critical level, for the charts' cap
        seq = replace(seq, critical_ratio=th.critical_z / th.fire_z)
    incidents = dict(incidents)
    records: list[AlertRecord] = []
    empty = np.zeros(len(SLICE_FIELDS))
    for boundary in boundaries_:
        # As in judge_series: a window that ends by the switch is the old classifier's alone.
        clip = label_since if boundary > label_since else float("-inf")
        new_start = boundary - step_s
        entering = new_start - config.window_s
        leaving = bin_at(entering - config.baseline_s)
        if state is None:  # take the whole baseline once: every known bin of it enters now
            state, leaving = SeqState.fresh(boundary), None
            for start in range(entering - config.baseline_s + step_s, entering, step_s):
                state = advance(state, empty, bin_at(start), None, at=boundary, baseline_bins=base_bins,
                                config=seq, frozen=False, min_coverage=2.0, step_s=step_s, label_since=clip,
                                entering_start=start)
        is_open = any(not inc.pending for inc in incidents.values())
        new = bin_at(new_start)
        state = advance(state, new if new is not None else empty, bin_at(entering), leaving,
                        at=boundary, baseline_bins=base_bins, config=seq, frozen=is_open,
                        min_coverage=th.min_baseline_coverage, step_s=step_s, label_since=clip,
                        entering_start=entering)
        if not incidents and quiet(state, seq, th.fire_z):
            continue
        judged = verdicts(state, at=boundary, step_s=step_s, per_window=per_window, config=seq, fire_z=th.fire_z)
        # The charts are the evidence over time: no `for:` on top of them.
        records += _step_kinds(scope, incidents, {k: measured(v.signal, th) for k, v in judged.items()},
                               {k: v.onset for k, v in judged.items()}, th, boundary, config, 0, now_iso)
    return incidents, state, records


def kept_lines(judged: Mapping[str, float | str | None], cursor: float | str | None, lookback_s: int, retention_s: int,
               pair_retention_s: int) -> Kept:
    """windows.Kept from each scope's last boundary judged (None: never judged, nothing to keep
    for it) and the correlation cursor (None: no grouping, or it has not run yet)."""
    scopes = {scope: float(done) - lookback_s for scope, done in judged.items() if done is not None}
    if cursor is None:
        return Kept(scopes)
    return Kept(scopes, every=float(cursor) - retention_s, pairs=float(cursor) - pair_retention_s)
