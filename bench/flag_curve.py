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

BUDGETS = (3, 6, 10, 15, 20, 30)


def curve(rows: list[dict], budgets: tuple[int, ...] = BUDGETS) -> dict[str, dict[str, int]]:
    """For each budget of neutral messages flagged, how many non-neutral ones rank above it."""
    ranked = sorted(rows, key=lambda r: r["probs"]["neutral"])
    out: dict[str, dict[str, int]] = {}
    found = right = flagged = 0
    for row in ranked:
        if row["label"] == "neutral":
            flagged += 1
            if flagged in budgets:
                out[str(flagged)] = {"found": found, "right_sign": right}
            continue
        found += 1
        other = "negative" if row["label"] == "positive" else "positive"
        right += row["probs"][row["label"]] > row["probs"][other]
    return out


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
