"""How often the detector cries wolf, and how fast it sees a swing, on generated streams.

Runs the worker's own judging code (stream/alerts/judging.py) over in-memory streams from
tests/scenarios.py: N stationary weeks (false alarms), N weeks with one asset's negative share going
from 20% to 60% for an hour (detection delay), N weeks with a 5x volume burst. Defaults as shipped.

    .venv/bin/python bench/alert_sizing.py --seeds 10
    .venv/bin/python bench/alert_sizing.py --seeds 6 --first-seed 6 --rates BTC=1,ETH=1,SOL=1   # other volumes
    .venv/bin/python bench/alert_sizing.py --half-life 10m --for 10m   # other settings
    .venv/bin/python bench/alert_sizing.py --detector sequential   # the CUSUM detector (stream/alerts/sequential.py)
    .venv/bin/python bench/alert_sizing.py --seeds 4 --z-spread   # also the z's spread on stationary weeks
    .venv/bin/python bench/alert_sizing.py --detector sequential --stationary-only --seeds 16   # which charts cry wolf

Each seed's swing delay is in `swing_delays_min`, so runs split over processes can be pooled.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from dataclasses import replace
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from scenarios import SWING_MIX, T0, Episode, Scenario, generate, simulate, through_confusion  # noqa: E402

import stream.alerts.judging as judging  # noqa: E402
from stream.alerts.judging import AlertConfig  # noqa: E402
from stream.timefmt import parse_duration  # noqa: E402

AT = 5 * 86400 + 12 * 3600
SELL_OFF_MIX = {"positive": 0.1, "negative": 0.65, "neutral": 0.25}


def minutes_after(iso: str) -> float:
    return (datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() - (T0 + AT)) / 60


class ZSpread:
    """Every z the detector computes while active, per kind, at the boundaries where that kind is
    judged at all (enough data): the worker's own `signals`, wrapped."""

    def __init__(self) -> None:
        self.sums: dict[str, list[float]] = {}  # kind -> [n, sum, sum of squares, count |z| >= 3]
        self.active = False
        self._signals = judging.signals
        judging.signals = self._wrapped

    def _wrapped(self, *args, **kwargs):
        judged = self._signals(*args, **kwargs)
        if self.active:
            for kind, signal in judged.items():
                if signal.enough_data:
                    acc = self.sums.setdefault(kind, [0, 0.0, 0.0, 0])
                    acc[0] += 1
                    acc[1] += signal.zscore
                    acc[2] += signal.zscore * signal.zscore
                    acc[3] += abs(signal.zscore) >= 3
        return judged

    def summary(self) -> dict:
        def stats(n: float, total: float, squares: float, over: float) -> dict:
            mean = total / n
            return {"judged": int(n), "mean": round(mean, 3), "sd": round(((squares - n * mean * mean) / (n - 1)) ** 0.5, 3), "share_abs_z_ge_3": round(over / n, 5)}

        out = {kind: stats(*acc) for kind, acc in sorted(self.sums.items())}
        shares = [self.sums[k] for k in ("sentiment_drop", "sentiment_surge") if k in self.sums]
        if shares:
            out["label_shares_pooled"] = stats(*(sum(acc[i] for acc in shares) for i in range(4)))
        return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--first-seed", type=int, default=0, help="to split a long run over processes")
    parser.add_argument("--rates", default="BTC=2,ETH=1,SOL=1", help="posts per minute per asset; BTC swings, ETH bursts")
    parser.add_argument("--half-life", help="override SENTINEL_ALERT_HALF_LIFE, e.g. 10m")
    parser.add_argument("--for", dest="for_", help="override SENTINEL_ALERT_FOR, e.g. 10m")
    parser.add_argument("--detector", choices=("zscore", "sequential"), default="zscore", help="SENTINEL_ALERT_DETECTOR")
    parser.add_argument("--threshold-nats", type=float, help="sequential: override SENTINEL_ALERT_THRESHOLD_NATS")
    parser.add_argument("--confirm-z", type=float, help="sequential: override SENTINEL_ALERT_CONFIRM_Z")
    parser.add_argument("--confusion", type=Path, help="label every post through this evaluation JSON's confusion matrix "
                        "(a realistic classifier's errors), e.g. docs/results/indomain/warm-both-tfns.json")
    parser.add_argument("--z-spread", action="store_true", help="also report the mean and standard deviation of z on the stationary weeks, per kind")
    parser.add_argument("--stationary-only", action="store_true", help="run the stationary weeks alone (false alarms, and which chart raised each)")
    args = parser.parse_args()
    rates = {asset: float(rate) for asset, rate in (item.split("=") for item in args.rates.split(","))}
    config = AlertConfig()
    if args.half_life:
        config = replace(config, half_life_s=parse_duration(args.half_life))
    if args.for_:
        config = replace(config, for_s=parse_duration(args.for_))
    config = replace(config, detector=args.detector)
    if args.threshold_nats is not None:
        config = replace(config, sequential=replace(config.sequential, threshold_nats=args.threshold_nats))
    if args.confirm_z is not None:
        config = replace(config, sequential=replace(config.sequential, confirm_z=args.confirm_z))
    calm, delays, missed, bursts, burst_drops, selloffs = [], [], 0, [], [], []
    false_alarms: list[dict] = []
    confusion = json.loads(args.confusion.read_text())["confusion"] if args.confusion else None

    def make(scenario: Scenario, seed: int) -> list:
        stream = generate(scenario, seed)
        return through_confusion(stream, confusion, seed) if confusion else stream

    spread = ZSpread() if args.z_spread else None
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        if spread:
            spread.active = True
        fired = [r for r in simulate(make(Scenario(per_minute=rates), seed), config) if r.state == "firing" and not r.repeat]
        calm.append(len(fired))
        false_alarms += [{"seed": seed, "scope": r.scope, "kind": r.kind, "metric": r.metric, "value": r.value, "baseline": r.baseline,
                          "posts": r.posts, "onset": r.onset, "window_end": r.window_end} for r in fired]
        if spread:
            spread.active = False
        if args.stationary_only:
            print(f"seed {seed}: false alarms {calm[-1]}", file=sys.stderr)
            continue
        records = simulate(make(Scenario(per_minute=rates, episodes=(Episode("BTC", AT, mix=SWING_MIX),)), seed), config)
        fired = [minutes_after(r.window_end) for r in records if (r.scope, r.kind, r.state) == ("asset:BTC", "sentiment_drop", "firing") and minutes_after(r.window_end) > 0]
        if fired:
            delays.append(fired[0])
        else:
            missed += 1
        records = simulate(make(Scenario(per_minute=rates, episodes=(Episode("ETH", AT, volume=5.0),)), seed), config)
        bursts.append(any((r.scope, r.kind) == ("asset:ETH", "volume_spike") and 0 < minutes_after(r.window_end) <= 60 for r in records))
        burst_drops.append(any((r.scope, r.kind, r.state) == ("asset:ETH", "sentiment_drop", "firing") for r in records))
        # A low-volume asset (0.1 posts/min) whose posts jump fivefold for an hour, 65% of them negative.
        selloff = Scenario(per_minute={**rates, "LOW": 0.1}, episodes=(Episode("LOW", AT, mix=SELL_OFF_MIX, volume=5.0),))
        records = simulate(make(selloff, seed), config)
        selloffs.append(any((r.scope, r.kind, r.state) == ("asset:LOW", "sentiment_drop", "firing") and 0 < minutes_after(r.window_end) <= 30
                            for r in records))
        print(f"seed {seed}: false alarms {calm[-1]}, swing seen after {fired[0] if fired else None} min, burst seen {bursts[-1]}", file=sys.stderr)
    result = {
        "weeks": args.seeds,
        "seeds": [args.first_seed, args.first_seed + args.seeds - 1],
        "detector": config.detector,
        **({"threshold_nats": config.sequential.threshold_nats, "b_nats": round(config.sequential.b, 2),
            "confirm_z": config.sequential.confirm_z} if config.detector == "sequential" else {}),
        "labels": f"through the confusion matrix of {args.confusion}" if args.confusion else "perfect (as generated)",
        "half_life_s": config.half_life_s,
        "for_s": config.for_s,
        "stream": ", ".join(f"{asset} {rate:g}/min" for asset, rate in rates.items()) + "; 2 channels; labels 30/20/50 positive/negative/neutral",
        "stationary_weeks_with_a_false_alarm": sum(c > 0 for c in calm),
        "false_alarms_total": sum(calm),
        "false_alarms": false_alarms,
        "swing_detected": len(delays),
        "swing_missed": missed,
        "swing_delay_min": {"median": statistics.median(delays), "max": max(delays), "within_30": sum(d <= 30 for d in delays)} if delays else None,
        "swing_delays_min": delays,
        "burst_detected_within_60_min": sum(bursts),
        "burst_called_a_drop": sum(burst_drops),
        "low_volume_selloff_drop_within_30_min": sum(selloffs),
    }
    if args.stationary_only:
        for key in ("swing_detected", "swing_missed", "swing_delay_min", "swing_delays_min", "burst_detected_within_60_min",
                    "burst_called_a_drop", "low_volume_selloff_drop_within_30_min"):
            del result[key]
    if spread:
        result["stationary_z"] = spread.summary()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
