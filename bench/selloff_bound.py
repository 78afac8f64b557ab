"""How soon could anything see issue 14's low-volume sell-off? An oracle that knows the change
exactly (Page's CUSUM with the true before/after rates, the best any detector can do at the same
threshold) on the scenario of bench/alert_sizing.py: an asset at 0.1 posts a minute, 20% negative,
whose posts jump fivefold for an hour, 65% negative. Reports the share of runs in which the oracle
reaches b nats within 30 minutes, on the negative posts alone and on negative and other posts.

    .venv/bin/python bench/selloff_bound.py [--runs 20000] [--b 14,11,7]
"""

from __future__ import annotations

import argparse
import json

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20000)
    parser.add_argument("--b", default="14,11,7", help="thresholds in nats (the shipped b is 11 + ln 20 = 14)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    before, after = 0.1, 0.5  # posts per minute
    r0, r1 = before * 0.2, after * 0.65  # negative posts per minute
    o0, o1 = before * 0.8, after * 0.35  # other posts per minute
    rows = []
    for b in (float(x) for x in args.b.split(",")):
        neg = rng.poisson(r1, (args.runs, 30))
        other = rng.poisson(o1, (args.runs, 30))
        llr_neg = np.cumsum(neg * np.log(r1 / r0) - (r1 - r0), axis=1)
        llr_joint = llr_neg + np.cumsum(other * np.log(o1 / o0) - (o1 - o0), axis=1)
        rows.append({"b_nats": b, "runs": args.runs, "negatives_within_30_min": round(float((llr_neg >= b).any(axis=1).mean()), 3),
                     "negatives_and_others_within_30_min": round(float((llr_joint >= b).any(axis=1).mean()), 3)})
    print(json.dumps({"command": "bench/selloff_bound.py", "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
