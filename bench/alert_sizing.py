"""How often the detector cries wolf, and how fast it sees a swing, on generated streams.

Runs the worker's own judging code (stream/alerts/judging.py) over in-memory streams from
tests/scenarios.py: N stationary weeks (false alarms), N weeks with one asset's negative share going
from 20% to 60% for an hour (detection delay), N weeks with a 5x volume burst. Defaults as shipped.

    .venv/bin/python bench/alert_sizing.py --seeds 10
    .venv/bin/python bench/alert_sizing.py --seeds 6 --first-seed 6 --rates BTC=1,ETH=1,SOL=1   # other volumes
    .venv/bin/python bench/alert_sizing.py --half-life 10m --for 10m   # other settings
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

from scenarios import SWING_MIX, T0, Episode, Scenario, generate, simulate  # noqa: E402

from stream.alerts.judging import AlertConfig  # noqa: E402
from stream.timefmt import parse_duration  # noqa: E402

AT = 5 * 86400 + 12 * 3600


def minutes_after(iso: str) -> float:
    return (datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() - (T0 + AT)) / 60


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--first-seed", type=int, default=0, help="to split a long run over processes")
    parser.add_argument("--rates", default="BTC=2,ETH=1,SOL=1", help="posts per minute per asset; BTC swings, ETH bursts")
    parser.add_argument("--half-life", help="override SENTINEL_ALERT_HALF_LIFE, e.g. 10m")
    parser.add_argument("--for", dest="for_", help="override SENTINEL_ALERT_FOR, e.g. 10m")
    args = parser.parse_args()
    rates = {asset: float(rate) for asset, rate in (item.split("=") for item in args.rates.split(","))}
    config = AlertConfig()
    if args.half_life:
        config = replace(config, half_life_s=parse_duration(args.half_life))
    if args.for_:
        config = replace(config, for_s=parse_duration(args.for_))
    calm, delays, missed, bursts = [], [], 0, []
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        calm.append(sum(r.state == "firing" and not r.repeat for r in simulate(generate(Scenario(per_minute=rates), seed), config)))
        records = simulate(generate(Scenario(per_minute=rates, episodes=(Episode("BTC", AT, mix=SWING_MIX),)), seed), config)
        fired = [minutes_after(r.window_end) for r in records if (r.scope, r.kind, r.state) == ("asset:BTC", "sentiment_drop", "firing") and minutes_after(r.window_end) > 0]
        if fired:
            delays.append(fired[0])
        else:
            missed += 1
        records = simulate(generate(Scenario(per_minute=rates, episodes=(Episode("ETH", AT, volume=5.0),)), seed), config)
        bursts.append(any((r.scope, r.kind) == ("asset:ETH", "volume_spike") and 0 < minutes_after(r.window_end) <= 60 for r in records))
        print(f"seed {seed}: false alarms {calm[-1]}, swing seen after {fired[0] if fired else None} min, burst seen {bursts[-1]}", file=sys.stderr)
    print(json.dumps({
        "weeks": args.seeds,
        "seeds": [args.first_seed, args.first_seed + args.seeds - 1],
        "half_life_s": config.half_life_s,
        "for_s": config.for_s,
        "stream": ", ".join(f"{asset} {rate:g}/min" for asset, rate in rates.items()) + "; 2 channels; labels 30/20/50 positive/negative/neutral",
        "stationary_weeks_with_a_false_alarm": sum(c > 0 for c in calm),
        "false_alarms_total": sum(calm),
        "swing_detected": len(delays),
        "swing_missed": missed,
        "swing_delay_min": {"median": statistics.median(delays), "max": max(delays), "within_30": sum(d <= 30 for d in delays)} if delays else None,
        "burst_detected_within_60_min": sum(bursts),
    }, indent=2))


if __name__ == "__main__":
    main()
