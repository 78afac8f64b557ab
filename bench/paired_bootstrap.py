"""Is one adapter really better than another on a test split, or is it the split's noise? (issue 17)

Reads two `sentinel eval --predictions` files written on the same data file, checks that they hold
the same rows with the same gold labels, and resamples the rows (the same resample for both
adapters, so the comparison is paired) to give a 95% interval of the difference in weighted and
macro F1 and in each class's recall and precision (B minus A):

    .venv/bin/sentinel eval --data SPLITS/test-tfns.csv --format csv --adapter A --predictions a.jsonl
    .venv/bin/sentinel eval --data SPLITS/test-tfns.csv --format csv --adapter B --predictions b.jsonl
    .venv/bin/python bench/paired_bootstrap.py a.jsonl b.jsonl [--resamples 2000] [--seed 0]

A difference whose interval holds 0 is within what this split can tell apart.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model.labels import LABELS  # noqa: E402
from model.report import classification_report  # noqa: E402


def load(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def figures(gold: list[str], pred: list[str]) -> dict[str, float]:
    rep = classification_report(gold, pred)
    out = {"f1_weighted": rep["f1_weighted"], "f1_macro": rep["f1_macro"]}
    for k in LABELS:
        out[f"{k}_recall"] = rep["per_class"][k]["recall"]
        out[f"{k}_precision"] = rep["per_class"][k]["precision"]
    return out


def compare(a: list[dict], b: list[dict], resamples: int, seed: int) -> dict:
    if [(r["line"], r["label"]) for r in a] != [(r["line"], r["label"]) for r in b]:
        raise SystemExit("the two prediction files do not hold the same rows with the same gold labels")
    gold = [r["label"] for r in a]
    pa, pb = [r["predicted"] for r in a], [r["predicted"] for r in b]
    fa, fb = figures(gold, pa), figures(gold, pb)
    rng = random.Random(seed)
    n = len(gold)
    diffs: dict[str, list[float]] = {k: [] for k in fa}
    for _ in range(resamples):
        idx = [rng.randrange(n) for _ in range(n)]
        g = [gold[i] for i in idx]
        ra, rb = figures(g, [pa[i] for i in idx]), figures(g, [pb[i] for i in idx])
        for k in diffs:
            diffs[k].append(rb[k] - ra[k])
    out = {}
    for k, values in diffs.items():
        values.sort()
        out[k] = {"a": round(fa[k], 3), "b": round(fb[k], 3), "b_minus_a": round(fb[k] - fa[k], 3),
                  "ci95": [round(values[int(0.025 * resamples)], 3), round(values[int(0.975 * resamples) - 1], 3)]}
    return {"rows": n, "resamples": resamples, "seed": seed, "figures": out}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", type=Path)
    parser.add_argument("b", type=Path)
    parser.add_argument("--resamples", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    result = compare(load(args.a), load(args.b), args.resamples, args.seed)
    print(json.dumps({"a": str(args.a), "b": str(args.b), **result}, indent=2))


if __name__ == "__main__":
    main()
