"""The best any detector could do: how fast a 20% -> 60% negative swing can be seen at a given
post rate while a stationary week stays quiet.

The yardstick is Page's CUSUM told the exact label mixes before and after the swing (30/20/50 and
10/60/30 positive/negative/neutral, as in tests/scenarios.py). With both mixes known it is the
optimal detector (Lorden; Moustakides): no real detector, which must not assume the size or
direction of the swing, sees it sooner at the same false-alarm rate. The threshold is set from
simulated stationary weeks of one scope, then the delay is measured from the swing's onset.

    .venv/bin/python bench/alert_bound.py --rates 0.6,1,2 --weeks 400
    .venv/bin/python bench/alert_bound.py --quiet 0.99,0.994,0.996,0.998 --weeks 5000 --swing-minutes 60   # at a deployment's budget
"""

from __future__ import annotations

import argparse
import json

import numpy as np

BASE = np.array([0.3, 0.2, 0.5])
SWING = np.array([0.1, 0.6, 0.3])
LLR = np.log(SWING / BASE)  # evidence per post, by label


def week_maxima(rng: np.random.Generator, rate_per_min: float, weeks: int) -> np.ndarray:
    """The largest CUSUM value reached in each of `weeks` stationary weeks."""
    out = np.empty(weeks)
    for w in range(weeks):
        steps = LLR[rng.choice(3, size=rng.poisson(rate_per_min * 7 * 1440), p=BASE)]
        walk = np.concatenate([[0.0], np.cumsum(steps)])
        out[w] = np.max(walk - np.minimum.accumulate(walk))  # Lindley: S_k = C_k - min_{j<=k} C_j
    return out


def delays(rng: np.random.Generator, rate_per_min: float, threshold: float, trials: int, limit_min: float = 180.0,
           swing_min: float | None = None) -> np.ndarray:
    """Minutes from the onset until the CUSUM crosses `threshold`, starting from its stationary state.
    With `swing_min` the swing ends then (as the generated weeks' one-hour swing does) and the posts
    follow the base mix again; without, it lasts until it is seen."""
    out = np.empty(trials)
    for i in range(trials):
        walk = np.concatenate([[0.0], np.cumsum(LLR[rng.choice(3, size=2000, p=BASE)])])
        s, t = walk[-1] - walk.min(), 0.0
        while s < threshold and t < limit_min:
            t += rng.exponential(1 / rate_per_min)
            mix = BASE if swing_min is not None and t >= swing_min else SWING
            s = max(0.0, s + LLR[rng.choice(3, p=mix)])
        out[i] = t
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rates", default="0.6,1,2", help="posts per minute on the swinging scope")
    parser.add_argument("--weeks", type=int, default=400, help="simulated weeks per rate (and swings)")
    parser.add_argument("--quiet", default="0.9,0.97", help="shares of stationary weeks that must stay quiet")
    parser.add_argument("--swing-minutes", type=float, help="the swing ends after this long (the generated weeks' is 60); default: until seen")
    args = parser.parse_args()
    rng = np.random.default_rng(1)
    rows = []
    for rate in (float(r) for r in args.rates.split(",")):
        maxima = week_maxima(rng, rate, args.weeks)
        for quiet in (float(q) for q in args.quiet.split(",")):
            threshold = float(np.quantile(maxima, quiet))
            d = delays(rng, rate, threshold, args.weeks, swing_min=args.swing_minutes)
            rows.append({"posts_per_min": rate, "quiet_weeks": quiet, "threshold": round(threshold, 2),
                         **({"swing_minutes": args.swing_minutes} if args.swing_minutes else {}),
                         "median_delay_min": round(float(np.median(d)), 1), "within_30_min": round(float(np.mean(d <= 30)), 2),
                         "within_60_min": round(float(np.mean(d <= 60)), 2)})
    print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
