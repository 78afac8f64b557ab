"""How much of the Discord export's text is garbled emoji (docs/labelling.md), and how much of
it is left in each split file:

    .venv/bin/python bench/mojibake.py EXPORT SPLITS [--out docs/results/indomain/mojibake.json]

A stored message is garbled when `repair_mojibake` changes it (`discord_posts` repairs every
message). A split file's text still carries the residue when it holds the residue's lead
characters, `ð` (4-byte emoji) or `â` (symbols such as ❤ and ™): splits written before the repair
did, for every garbled message.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from training.discord import ImportReport, discord_posts, repair_mojibake  # noqa: E402
from training.indomain import HELD_OUT_FROM  # noqa: E402

FILES = ("test-discord", "select", "train-discord", "train-discord-round2", "train-discord-round3")


def stored_before(export: Path, before: str) -> list[str]:
    """The export's message texts as stored (not repaired), of the messages dated before `before`."""
    return [p["text"] for p in discord_posts(export, ImportReport(), repair=False) if p["created_at"] < before]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("export", type=Path)
    parser.add_argument("splits", type=Path)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    earlier = stored_before(args.export, HELD_OUT_FROM)
    result: dict = {"pre2023_messages": len(earlier), "pre2023_repairable": sum(repair_mojibake(t) != t for t in earlier)}
    for name in FILES:
        path = args.splits / f"{name}.csv"
        if not path.is_file():
            continue
        rows = [r for r in csv.DictReader(path.open(newline="", encoding="utf-8")) if r["source"] == "discord"]
        garbled = [r for r in rows if "ð" in r["text"] or "â" in r["text"]]
        result[name] = {"messages": len(rows), "garbled": len(garbled),
                        "non_neutral": sum(r["label"] != "neutral" for r in rows),
                        "non_neutral_garbled": sum(r["label"] != "neutral" for r in garbled)}
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
