"""Does judging cost grow with the number of scopes? The whole pipeline (`sentinel run`, embedded
stack, lexicon scorer so the model is not the bottleneck) on the same number of posts spread over
few scopes and over many, for each alert detector, side by side in one run.

Each case reports posts/s end to end and, from the worker's own "batch done" log lines, the share of
batch time spent judging alerts (`alerts_s / total_s`) and windows (`windows_s / total_s`).

    .venv/bin/python bench/scopes.py --posts 20000 --cases 3x3,300x100 --detectors zscore,sequential
    .venv/bin/python bench/scopes.py --posts 20000 --cases 3x3,300x100,900x100,4900x100 --detectors sequential --per-minute 60,30000

The event-time rate decides how often a scope crosses a minute boundary, where the sequential
detector does its work: at 60 posts a minute that is once per 60 posts (far more judging per post
than any live deployment), at 30,000 (500 posts/s, stamped as they arrive) once per 30,000.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import subprocess
import sys
import tempfile
from pathlib import Path

T0 = 1_790_812_800  # 2026-10-01T00:00:00Z


def write_posts(path: Path, posts: int, assets: int, channels: int, per_minute: float, seed: int = 1) -> None:
    """`posts` posts at `per_minute` in event time over `assets` tickers and `channels` channels."""
    rng = random.Random(seed)
    words = {"positive": "pump moon breakout", "negative": "dump crash rekt", "neutral": "update thread"}
    t = float(T0)
    with path.open("w") as handle:
        for i in range(posts):
            t += rng.expovariate(per_minute / 60.0)
            label = rng.choices(list(words), weights=(0.3, 0.2, 0.5))[0]
            asset = f"A{rng.randrange(assets):04d}"
            handle.write(json.dumps({"id": f"b{i}", "text": f"{words[label]} {i}", "created_at": round(t, 3), "assets": [asset],
                                     "channel": f"c{rng.randrange(channels):03d}", "source": "forum"}) + "\n")


def batch_shares(log: str) -> dict[str, float]:
    totals = {"alerts_s": 0.0, "windows_s": 0.0, "total_s": 0.0}
    for line in log.splitlines():
        if "batch done" not in line:
            continue
        for name in totals:
            match = re.search(rf"{name}=([0-9.]+)", line)
            if match:
                totals[name] += float(match.group(1))
    total = totals["total_s"] or 1.0
    return {"alerts_share": round(totals["alerts_s"] / total, 3), "windows_share": round(totals["windows_s"] / total, 3),
            "batch_s": round(totals["total_s"], 1)}


def run_case(posts: int, assets: int, channels: int, detector: str, per_minute: float, workdir: Path, grouping: str = "incidents") -> dict:
    data = workdir / f"posts-{assets}x{channels}.jsonl"
    if not data.exists():
        write_posts(data, posts, assets, channels, per_minute)
    summary, log = workdir / "summary.json", workdir / f"worker-{assets}x{channels}-{detector}-{grouping}.log"
    env = {**os.environ, "SENTINEL_BASE": "lexicon", "SENTINEL_ALERT_DETECTOR": detector, "SENTINEL_ALERT_GROUPING": grouping,
           "SENTINEL_LOG_JSON": "false"}
    env.pop("KAFKA_BROKER", None)
    env.pop("REDIS_URL", None)
    done = subprocess.run([sys.executable, "-m", "sentinel.cli", "run", str(data), "--summary-json", str(summary), "--worker-log", str(log)],
                          env=env, capture_output=True, text=True, timeout=3600)
    if done.returncode != 0:
        raise SystemExit(done.stdout[-2000:] + done.stderr[-2000:])
    result = json.loads(summary.read_text())
    return {"scopes": f"{assets} assets x {channels} channels", "detector": detector, "grouping": grouping, "posts": result["processed"],
            "posts_per_s": result["posts_per_s"], "alerts": result["alerts"], **batch_shares(log.read_text())}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--posts", type=int, default=20000)
    parser.add_argument("--cases", default="3x3,300x100", help="assets x channels, comma-separated")
    parser.add_argument("--detectors", default="zscore,sequential")
    parser.add_argument("--per-minute", default="60", help="event-time post rates (posts per minute), comma-separated: 60 crosses a "
                        "minute boundary every 60 posts (a stress test of per-boundary judging); 30000 is 500 posts/s stamped as they arrive")
    parser.add_argument("--grouping", default="incidents", help="SENTINEL_ALERT_GROUPING values, comma-separated (none,incidents)")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for per_minute in (float(x) for x in args.per_minute.split(",")):
            workdir = Path(tmp) / f"{per_minute:g}"
            workdir.mkdir()
            for case in args.cases.split(","):
                assets, channels = (int(x) for x in case.split("x"))
                for detector in args.detectors.split(","):
                    for grouping in args.grouping.split(","):
                        rows.append({"per_minute": per_minute,
                                     **run_case(args.posts, assets, channels, detector, per_minute, workdir, grouping)})
                        print(json.dumps(rows[-1]), file=sys.stderr)
    print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
