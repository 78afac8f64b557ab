"""How long after a swing ends does the sequential detector resolve it? Two-day generated streams
(BTC 2 posts a minute, ETH and SOL 1), a one-hour BTC swing from 20% to 60% negative on day 2, at
its usual volume or `--volume` times it, with perfect labels or every label redrawn through a
measured confusion matrix (`--confusion`, the real classifier's errors); prints, per seed, the
minutes from the swing's end to the resolution of BTC's sentiment_drop, the number of times it
fired (1 = no flap), and the same for every scope the swing touches (`all`, the source, the
channels), whose resolution decides when a grouped incident ends.

    .venv/bin/python bench/swing_resolution.py [--seeds 8]
    .venv/bin/python bench/swing_resolution.py --seeds 24 --volume 3 --confusion docs/results/indomain/fresh-r8-voices.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from scenarios import SWING_MIX, T0, Episode, Scenario, generate, simulate, through_confusion  # noqa: E402
from stream.alerts.judging import AlertConfig  # noqa: E402
from stream.timefmt import epoch  # noqa: E402

START, END = 36 * 3600, 37 * 3600
SCOPES = ("asset:BTC", "all", "source:forum", "channel:general", "channel:trading")


def drop_story(records: list, scope: str) -> tuple[float | None, int]:
    """(minutes from the swing's end to the last resolution of `scope`'s sentiment_drop, or None if
    it never resolved; the times it fired, repeats not counted), from the swing's start on."""
    drop = [r for r in records if (r.scope, r.kind) == (scope, "sentiment_drop") and epoch(r.window_end) >= T0 + START]
    resolved = [r for r in drop if r.state == "resolved"]
    fired = sum(r.state == "firing" and not r.repeat for r in drop)
    return ((epoch(resolved[-1].window_end) - T0 - END) / 60 if resolved else None), fired


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--volume", type=float, default=1.0, help="the swing's volume, times the usual")
    parser.add_argument("--confusion", type=Path, help="evaluation JSON whose `confusion` relabels the posts")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    config = replace(AlertConfig(), detector="sequential")
    confusion = json.loads(args.confusion.read_text())["confusion"] if args.confusion else None
    rows = []
    for seed in range(args.seeds):
        stream = generate(Scenario(days=2, episodes=(Episode("BTC", START, mix=SWING_MIX, volume=args.volume),)), seed)
        records = simulate(through_confusion(stream, confusion, seed) if confusion else stream, config)
        after, fired = drop_story(records, "asset:BTC")
        row = {"seed": seed, "resolved_min_after_end": after, "fired": fired}
        if args.volume != 1.0 or confusion:
            row["scopes"] = {scope: dict(zip(("resolved_min_after_end", "fired"), drop_story(records, scope))) for scope in SCOPES}
        rows.append(row)
    out = {"command": " ".join(["bench/swing_resolution.py", *sys.argv[1:]]), **summarise(rows)}
    text = json.dumps(out, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


def summarise(rows: list[dict]) -> dict:
    """The rows and, over seeds, BTC's median minutes to resolution; with per-scope stories, the
    last scope to clear (median and most) and the streams that flapped or never resolved."""
    after = [r["resolved_min_after_end"] for r in rows if r["resolved_min_after_end"] is not None]
    out: dict = {"rows": rows, "median_min": statistics.median(after) if after else None}
    if any("scopes" in r for r in rows):
        fired = [[s["resolved_min_after_end"] for s in r["scopes"].values() if s["fired"]] for r in rows]
        # A scope that fired and never resolved has no minutes to count: it is counted apart.
        out["never_resolved"] = sum(None in ends for ends in fired)
        last = [max(ends) for ends in fired if ends and None not in ends]
        out["last_scope_median_min"] = statistics.median(last) if last else None
        out["last_scope_max_min"] = max(last) if last else None
        out["flapped"] = sum(any(s["fired"] > 1 for s in r["scopes"].values()) for r in rows)
    return out


if __name__ == "__main__":
    main()
