"""How long after a swing ends does the sequential detector resolve it? Two-day generated streams
(BTC 2 posts a minute, ETH and SOL 1), a one-hour BTC swing from 20% to 60% negative on day 2;
prints, per seed, the minutes from the swing's end to the resolution of BTC's sentiment_drop and the
number of times it fired (1 = no flap).

    .venv/bin/python bench/swing_resolution.py [--seeds 8]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from scenarios import SWING_MIX, T0, Episode, Scenario, generate, simulate  # noqa: E402
from stream.alerts.judging import AlertConfig  # noqa: E402
from stream.timefmt import epoch  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=8)
    args = parser.parse_args()
    config = replace(AlertConfig(), detector="sequential")
    rows = []
    for seed in range(args.seeds):
        records = simulate(generate(Scenario(days=2, episodes=(Episode("BTC", 36 * 3600, mix=SWING_MIX),)), seed), config)
        drop = [r for r in records if (r.scope, r.kind) == ("asset:BTC", "sentiment_drop")]
        resolved = [r for r in drop if r.state == "resolved"]
        rows.append({"seed": seed, "resolved_min_after_end": (epoch(resolved[0].window_end) - T0 - 37 * 3600) / 60 if resolved else None,
                     "fired": sum(r.state == "firing" and not r.repeat for r in drop)})
    after = [r["resolved_min_after_end"] for r in rows if r["resolved_min_after_end"] is not None]
    print(json.dumps({"command": "bench/swing_resolution.py", "rows": rows, "median_min": statistics.median(after) if after else None}, indent=1))


if __name__ == "__main__":
    main()
