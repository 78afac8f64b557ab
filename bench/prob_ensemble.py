"""What an ensemble of adapters would score, from their saved predictions: the mean of their label
probabilities per example, without running any model again (issue 17).

An ensemble runs the model once per member, so it is not something the worker would ship; it is
the yardstick for `sentinel soup`, which averages the members' weights instead and runs once. If
the soup scores like this ensemble, the members' errors were partly independent and the soup keeps
that for free; if it scores below, the weight average lost it.

    .venv/bin/python bench/prob_ensemble.py OUT.jsonl A/test-discord.jsonl B/test-discord.jsonl ...

Writes OUT.jsonl in `sentinel eval --predictions`'s format (so `bench/flag_curve.py` reads it) and
prints the ensemble's report (`model/report.py`'s figures) as JSON.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from model.labels import LABELS  # noqa: E402
from model.report import classification_report  # noqa: E402


def mean_rows(members: list[list[dict]]) -> list[dict]:
    """Each example's probabilities averaged over the members; the predicted label is the most likely."""
    first = members[0]
    for i, rows in enumerate(members[1:], start=2):
        if [(r["line"], r["label"]) for r in rows] != [(r["line"], r["label"]) for r in first]:
            raise ValueError(f"member {i} holds other examples than member 1: not predictions on the same file")
    out = []
    for index, row in enumerate(first):
        probs = {label: sum(rows[index]["probs"][label] for rows in members) / len(members) for label in LABELS}
        out.append({"line": row["line"], "label": row["label"], "predicted": max(LABELS, key=probs.__getitem__), "probs": probs})
    return out


def main() -> None:
    if len(sys.argv) < 4:
        raise SystemExit(__doc__)
    out, paths = Path(sys.argv[1]), [Path(p) for p in sys.argv[2:]]
    rows = mean_rows([[json.loads(line) for line in p.read_text().splitlines()] for p in paths])
    out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    report = classification_report([r["label"] for r in rows], [r["predicted"] for r in rows])
    print(json.dumps({"members": [str(p) for p in paths], **report}, indent=1))


if __name__ == "__main__":
    main()
