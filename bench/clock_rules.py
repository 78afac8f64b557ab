"""Watermark rules side by side on post files, without servers: how far judging's frontier trails
the newest post, and how many posts land in a bin already judged, under each rule
(docs/reliability.md, "Event time when clocks disagree").

    .venv/bin/python bench/clock_rules.py /tmp/chatter/tz_skew8.jsonl /tmp/chatter/hourly_scraper.jsonl ...

Posts go to partitions as `sentinel run` sends them (the id as the key, aiokafka's murmur2
partitioner, SENTINEL_PARTITIONS), and the partitions are read in file order, one post at a time:
a simulation of the worker, which reads a batch at a time and partitions unevenly. Rules:
- newest: a partition's watermark is its newest post (the rule before PartitionClock);
- least source: the least of the newest posts of the sources among the partition's latest 128
  posts (per-source watermarks combined as Flink combines splits);
- majority: stream.windows.PartitionClock's reference alone, what sources holding most of the
  partition's latest posts agree on (the worker's watermark from e4d58d6 to 84ef92c);
- vote: stream.windows.PartitionClock's watermark (the worker's rule): the newest clock of a source
  that agrees with the reference.
A post is late when its minute bin is before the frontier (the least partition watermark) less the
grace, as it arrives. The lag is the newest post so far less the frontier, after each post. Where a
clock runs fast, the newest post is the fast one's: `--skew tz_skew8.jsonl:telegram=28800` takes
that file's telegram posts back by their skew for the lag (not for the rules), so the lag is behind
the true newest post."""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections import deque
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aiokafka.partitioner import murmur2  # noqa: E402

from stream.contracts import parse_created_at  # noqa: E402
from stream.windows import PartitionClock  # noqa: E402

INF = float("inf")


def partition_of(post_id: str, partitions: int) -> int:
    return (murmur2(post_id.encode()) & 0x7FFFFFFF) % partitions


class Newest:
    def __init__(self) -> None:
        self.mark = -INF

    def observe(self, created_at: float, source: str | None) -> int:
        self.mark = max(self.mark, created_at)
        return 0


class LeastSource:
    def __init__(self, posts: int = 128) -> None:
        self.mark, self.recent, self.newest = -INF, deque(maxlen=posts), {}

    def observe(self, created_at: float, source: str | None) -> int:
        self.recent.append(source or "")
        self.newest[source or ""] = max(self.newest.get(source or "", -INF), created_at)
        self.mark = max(self.mark, min(self.newest[s] for s in set(self.recent)))
        return 0


class Vote:
    def __init__(self, max_ahead_s: float, reference: bool = False) -> None:
        self.clock = PartitionClock(max_ahead_s)
        self.reference = reference

    @property
    def mark(self) -> float:
        return self.clock.reference if self.reference else self.clock.mark

    def observe(self, created_at: float, source: str | None) -> int:
        return len(self.clock.observe(created_at, source))


def run(posts: list[tuple[float, str | None, int, float]], make: Callable[[], object], partitions: int, grace_s: float) -> dict[str, float]:
    clocks = [make() for _ in range(partitions)]
    late = ahead = 0
    newest, lags = -INF, []
    for created_at, source, partition, true_at in posts:
        frontier = min(c.mark for c in clocks)  # type: ignore[attr-defined]
        late += frontier > -INF and created_at // 60 * 60 < frontier - grace_s
        ahead += clocks[partition].observe(created_at, source)  # type: ignore[attr-defined]
        newest = max(newest, true_at)
        frontier = min(c.mark for c in clocks)  # type: ignore[attr-defined]
        if frontier > -INF:
            lags.append(newest - frontier)
    lags.sort()
    return {"late": late, "ahead": ahead, "lag_median_min": round(statistics.median(lags) / 60, 1) if lags else None,
            "lag_p95_min": round(lags[int(0.95 * (len(lags) - 1))] / 60, 1) if lags else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--grace", type=float, default=120.0, help="SENTINEL_ALERT_GRACE, seconds")
    parser.add_argument("--max-ahead", type=float, default=3600.0, help="SENTINEL_MAX_AHEAD, seconds")
    parser.add_argument("--skew", action="append", default=[], metavar="FILE:SOURCE=SECONDS",
                        help="a source's known skew in a file (its name), taken off its posts for the lag only; repeat as needed")
    parser.add_argument("--out", type=Path, help="also write the figures here as JSON")
    args = parser.parse_args()
    skews = {tuple(name.split(":", 1)): float(seconds) for name, seconds in (s.rsplit("=", 1) for s in args.skew)}
    rules: dict[str, Callable[[], object]] = {"newest": Newest, "least source": LeastSource,
                                              "majority": lambda: Vote(args.max_ahead, reference=True), "vote": lambda: Vote(args.max_ahead)}
    figures = {}
    for path in args.files:
        posts = []
        for line in path.open():
            post = json.loads(line)
            created_at = parse_created_at(post["created_at"])
            skew = skews.get((path.name, post.get("source") or ""), 0.0)
            posts.append((created_at, post.get("source"), partition_of(post["id"], args.partitions), created_at - skew))
        figures[path.name] = {name: run(posts, make, args.partitions, args.grace) for name, make in rules.items()}
        print(path.name, "  ".join(f"{name}: late {f['late']} ahead {f['ahead']} lag {f['lag_median_min']} / {f['lag_p95_min']} min"
                                   for name, f in figures[path.name].items()))
    if args.out:
        args.out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "figures": figures}, indent=1) + "\n")


if __name__ == "__main__":
    main()
