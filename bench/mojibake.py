"""How much of the Discord export's text is garbled emoji (docs/labelling.md), per split file:

    .venv/bin/python bench/mojibake.py EXPORT SPLITS [--out docs/results/indomain/mojibake.json]

A raw message is garbled when `repair_mojibake` changes it; a split file's text (already through
`clean_text`, which drops the control bytes, so it no longer repairs) when it carries the residue's
lead characters, `ð` (4-byte emoji) or `â` (symbols such as ❤ and ™).
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("export", type=Path)
    parser.add_argument("splits", type=Path)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    earlier = [p for p in discord_posts(args.export, ImportReport()) if p["created_at"] < HELD_OUT_FROM]
    result: dict = {"pre2023_messages": len(earlier), "pre2023_repairable": sum(repair_mojibake(p["text"]) != p["text"] for p in earlier)}
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
