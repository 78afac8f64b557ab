"""Where a worker's threads spent a py-spy recording (`bench/gpu_pipeline.py --py-spy`).

    python bench/pyspy_summary.py OUT_DIR/pyspy-*.txt [--top 12] [--json OUT.json]

Reads py-spy's raw collapsed stacks (`--threads --format raw`: `thread (TID): NAME;frame;...;frame COUNT`)
and prints per file the samples per thread and, per thread, the leaf frames and the innermost frames
of the project's own code that took the most samples. A `--gil` recording holds only samples where
some thread held the interpreter lock, so its total against duration x rate is how busy the lock was.

    python bench/pyspy_summary.py PROFILE.txt ... --inclusive 'AlertEngine.judge (' --inclusive 'verdicts ('

`--inclusive PATTERN` (repeatable) instead prints, per file, the share of all samples whose stack
holds a frame containing PATTERN (a function with everything it calls); it reads recordings made
with or without `--threads`.
"""

from __future__ import annotations

import argparse
import json
import re
from collections import Counter
from pathlib import Path

_LINE = re.compile(r"^thread \((?P<tid>\d+)\): (?P<name>[^;]*);(?P<stack>.*) (?P<count>\d+)$")
_OWN = ("stream/", "model/", "sentinel/", "training/")


def frame_name(frame: str) -> str:
    """'Classifier.classify (model/classifier.py:81)' -> 'Classifier.classify (model/classifier.py)': lines split one function."""
    return re.sub(r":\d+\)$", ")", frame)


def summarise(text: str, top: int = 12) -> dict[str, dict]:
    threads: dict[str, dict[str, Counter]] = {}
    for line in text.splitlines():
        match = _LINE.match(line)
        if match is None:
            continue
        name, count = match["name"], int(match["count"])
        frames = [frame_name(f) for f in match["stack"].split(";")]
        entry = threads.setdefault(name, {"samples": Counter(), "leaf": Counter(), "own": Counter()})
        entry["samples"]["all"] += count
        entry["leaf"][frames[-1]] += count
        own = [f for f in frames if any(f"({p}" in f for p in _OWN)]
        entry["own"][own[-1] if own else "(none of the project's frames)"] += count
    return {
        name: {"samples": e["samples"]["all"], "leaf": e["leaf"].most_common(top), "own": e["own"].most_common(top)}
        for name, e in sorted(threads.items(), key=lambda kv: -kv[1]["samples"]["all"])
    }


def inclusive(text: str, patterns: list[str]) -> dict:
    """Samples in all, and per pattern the share of them whose stack holds a frame containing it."""
    total, hits = 0, dict.fromkeys(patterns, 0)
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        total += int(count)
        for pattern in patterns:
            if pattern in stack:
                hits[pattern] += int(count)
    return {"samples": total, "share": {pattern: round(n / max(total, 1), 3) for pattern, n in hits.items()}}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--top", type=int, default=12)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--inclusive", action="append", default=[], help="share of samples with a frame containing this")
    args = parser.parse_args()
    out = {}
    if args.inclusive:
        out = {path.name: inclusive(path.read_text(), args.inclusive) for path in args.files}
        print(json.dumps(out, indent=1))
        if args.json:
            args.json.write_text(json.dumps(out, indent=1))
        return
    for path in args.files:
        summary = summarise(path.read_text(), args.top)
        out[path.name] = summary
        total = sum(t["samples"] for t in summary.values())
        print(f"== {path.name}: {total} samples")
        for name, thread in summary.items():
            print(f"  {name}: {thread['samples']} ({thread['samples'] / total:.0%})")
            for label, rows in (("leaf", thread["leaf"]), ("own code", thread["own"])):
                print(f"    {label}:")
                for frame, count in rows:
                    print(f"      {count / thread['samples']:6.1%}  {frame}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
