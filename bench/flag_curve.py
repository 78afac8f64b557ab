"""How well does an adapter tell price talk from chatter, whatever its threshold? (issue 17)

A label shift, class weights or more neutral examples each move an adapter along one curve: fewer
neutral messages flagged, fewer positive and negative ones found. This prints that curve from the
predictions `sentinel eval --predictions` writes: the messages are ranked by p(neutral), lowest
first, and for each budget of neutral messages flagged it counts the positive and negative ones
ranked above the budget's last flag (`found`), and those of them whose more likely sentiment is the
right one (`right_sign`). Two adapters with the same curve differ only in where they sit on it.

    .venv/bin/sentinel eval --data SPLITS/test-discord.csv --format csv --adapter A --predictions A.jsonl
    .venv/bin/python bench/flag_curve.py A.jsonl B.jsonl ...
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from model.labels import LABELS  # noqa: E402
from model.report import BUDGETS, flag_curve  # noqa: E402


def curve(rows: list[dict], budgets: tuple[int, ...] = BUDGETS) -> dict[str, dict[str, int]]:
    """For each budget of neutral messages flagged, how many non-neutral ones rank above it
    (model.report.flag_curve, which the n-gram head's weight rule counts with too)."""
    return flag_curve([[row["probs"][label] for label in LABELS] for row in rows], [row["label"] for row in rows], budgets)


def summary(rows: list[dict]) -> dict:
    flagged = sum(r["label"] == "neutral" and r["predicted"] != "neutral" for r in rows)
    return {"non_neutral": sum(r["label"] != "neutral" for r in rows), "neutral": sum(r["label"] == "neutral" for r in rows),
            "at_the_adapters_own_labels": {"neutral_flagged": flagged,
                                           "found": sum(r["label"] != "neutral" and r["predicted"] != "neutral" for r in rows)},
            "by_neutral_flagged": curve(rows)}


def main() -> None:
    print(json.dumps({path: summary([json.loads(line) for line in Path(path).read_text().splitlines()]) for path in sys.argv[1:]}, indent=1))


if __name__ == "__main__":
    main()
