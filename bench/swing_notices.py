"""What a risk team is told about one sell-off, grouped as the worker groups it: generated weeks
(BTC 2 posts a minute, ETH and SOL 1; two channels, one source), a one-hour BTC swing from 20% to
60% negative on day 6, at its usual volume and at three times it, every post's label redrawn
through a measured confusion matrix (the real classifier's errors dilute a swing). Runs the
worker's own judging (sequential detector) and grouping code (`tests/scenarios.simulate_incidents`)
and counts the incidents and notices from an hour before the swing to twelve after it, and the
minutes from the swing's end to the last resolved notice (when the risk team is told it is over).

    .venv/bin/python bench/swing_notices.py --seeds 24 --out docs/results/swing_notices.json
    PYTHONPATH=/path/to/older/checkout .venv/bin/python bench/swing_notices.py ...   # an older grouping, same streams
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from scenarios import SWING_MIX, T0, Episode, Scenario, generate, simulate_incidents, through_confusion  # noqa: E402
import stream.alerts.grouping as grouping  # noqa: E402
from stream.alerts.grouping import GroupConfig  # noqa: E402
from stream.alerts.judging import AlertConfig  # noqa: E402
from stream.timefmt import iso  # noqa: E402

AT = 5 * 86400 + 12 * 3600
SWING_S = 3600
CONFUSION = ROOT / "docs" / "results" / "indomain" / "fresh-r8-voices.json"


def one(seed: int, volume: float, confusion: dict, config: AlertConfig) -> dict:
    scenario = Scenario(days=7, episodes=(Episode("BTC", AT, duration=SWING_S, mix=SWING_MIX, volume=volume),))
    records, notices = simulate_incidents(through_confusion(generate(scenario, seed), confusion, seed), config, GroupConfig())
    lo, hi = iso(T0 + AT - 3600), iso(T0 + AT + 12 * 3600)
    told = [(n.reason, n.root_scope, n.at[11:16]) for n in notices if lo <= n.at <= hi]
    incidents = {r["incident_id"] for r in records if lo <= r["window_end"] <= hi}
    return {"seed": seed, "volume": volume, "incidents": len(incidents), "notices": len(told), "told": told}


def last_resolved_min(told: list) -> float | None:
    """Minutes from the swing's end to the last resolved notice (`told` gives times of day, HH:MM):
    when the risk team is told it is over."""
    times = [at for reason, _, at in told if reason == "resolved"]
    if not times:
        return None
    hours, minutes = (int(x) for x in max(times).split(":"))
    return hours * 60 + minutes - (AT + SWING_S) % 86400 // 60


def summarise(rows: list[dict]) -> dict:
    summary = {}
    for volume in (1.0, 3.0):
        mine = [r for r in rows if r["volume"] == volume]
        counts = [r["notices"] for r in mine]
        ends = [m for m in (last_resolved_min(r["told"]) for r in mine) if m is not None]
        summary[f"volume_{volume:g}x"] = {
            "swings": len(mine), "incidents": sum(r["incidents"] for r in mine), "notices": sum(counts),
            "notices_median": statistics.median(counts), "notices_max": max(counts),
            "swings_with_more_than_one_incident": sum(r["incidents"] > 1 for r in mine), "swings_not_told": counts.count(0),
            "resolved_min_after_end_median": statistics.median(ends) if ends else None, "resolved_min_after_end_max": max(ends, default=None),
        }
    return summary


def checkout(module: Path) -> str:
    """The commit of the code that grouped (it may be an older checkout on PYTHONPATH), '+' if changed since."""
    git = ["git", "-C", str(module.parent)]
    commit = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run([*git, "status", "--porcelain", "--", "stream", "tests"], capture_output=True, text=True).stdout.strip()
    return commit + ("+" if dirty else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=24)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--confusion", type=Path, default=CONFUSION, help="evaluation JSON whose `confusion` relabels the posts")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    confusion = json.loads(args.confusion.read_text())["confusion"]
    config = replace(AlertConfig(), detector="sequential")
    rows = []
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        for volume in (1.0, 3.0):
            rows.append(one(seed, volume, confusion, config))
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    summary = summarise(rows)
    result = {"command": " ".join(["bench/swing_notices.py", *sys.argv[1:]]), "grouping_code": checkout(Path(grouping.__file__)),
              "confusion": str(args.confusion.relative_to(ROOT) if args.confusion.is_relative_to(ROOT) else args.confusion),
              "summary": summary, "runs": rows}
    print(json.dumps(summary, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
