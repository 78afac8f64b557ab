"""Would a prior shift on the labels make the shipped adapter fit crypto chatter? (issue 17)

A cheap alternative to training: add a constant to the log-probability of `negative` and of
`positive` (a change of the label prior, renormalised), chosen on the selection split to maximise the
in-domain macro F1 while the TFNS rows of that split lose at most 0.01 of weighted F1, then applied
once to the test splits. Reads the predictions `sentinel eval --predictions` writes:

    for f in select test-discord test-voices test-tfns; do
      .venv/bin/sentinel eval --data SPLITS/$f.csv --format csv --adapter default --predictions PREDS/$f.jsonl
    done
    .venv/bin/python bench/label_bias.py SPLITS PREDS

The rows of select.csv are matched to their predictions in order (the labels are checked), which
gives each its source (tfns, discord, voices).
"""

from __future__ import annotations

import csv
import itertools
import json
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model.labels import LABELS  # noqa: E402
from model.report import classification_report  # noqa: E402

GRID = [x / 10 for x in range(0, 41, 2)]
TFNS_LOSS = 0.01


def shifted(rows: list[dict], negative: float, positive: float) -> list[str]:
    shift = {"negative": negative, "positive": positive, "neutral": 0.0}
    return [max(LABELS, key=lambda k: math.log(max(r["probs"][k], 1e-12)) + shift[k]) for r in rows]


def report(rows: list[dict], negative: float = 0.0, positive: float = 0.0) -> dict:
    return classification_report([r["label"] for r in rows], shifted(rows, negative, positive))


def summary(rep: dict) -> dict:
    return {"f1_weighted": round(rep["f1_weighted"], 3), "f1_macro": round(rep["f1_macro"], 3),
            **{f"{k}_precision_recall": [round(rep["per_class"][k]["precision"], 2), round(rep["per_class"][k]["recall"], 2)] for k in LABELS}}


def main() -> None:
    splits, preds = Path(sys.argv[1]), Path(sys.argv[2])

    def load(name: str) -> list[dict]:
        return [json.loads(line) for line in (preds / f"{name}.jsonl").read_text().splitlines()]

    select = load("select")
    with (splits / "select.csv").open(newline="", encoding="utf-8") as handle:
        sources = [row["source"] for row in csv.DictReader(handle)]
    if len(sources) != len(select):
        raise SystemExit(f"select.csv has {len(sources)} rows but {len(select)} predictions")
    tfns = [r for r, s in zip(select, sources) if s == "tfns"]
    indomain = [r for r, s in zip(select, sources) if s != "tfns"]
    floor = report(tfns)["f1_weighted"] - TFNS_LOSS
    allowed = [(n, p) for n, p in itertools.product(GRID, GRID) if report(tfns, n, p)["f1_weighted"] >= floor]
    negative, positive = max(allowed, key=lambda b: (report(indomain, *b)["f1_macro"], -b[0] - b[1]))
    out = {"chosen_on_select": {"negative": negative, "positive": positive,
                                "select_indomain_f1_macro": [round(report(indomain)["f1_macro"], 3), round(report(indomain, negative, positive)["f1_macro"], 3)],
                                "select_tfns_f1_weighted": [round(report(tfns)["f1_weighted"], 3), round(report(tfns, negative, positive)["f1_weighted"], 3)]},
           # Without a shift, per source: what chooses between adapters (docs/results/indomain/README.md, session 14).
           "select_without_shift": {source: summary(report([r for r, s in zip(select, sources) if s == source]))
                                    for source in ("tfns", "discord", "voices")},
           "test": {}}
    for name in ("test-discord", "test-voices", "test-tfns"):
        rows = load(name)
        out["test"][name] = {"without": summary(report(rows)), "with": summary(report(rows, negative, positive))}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
