"""How short a text the text cap (SENTINEL_TEXT_CAP) should leave alone, measured on real chatter.

For each threshold (texts shorter than it once normalised, `stream.windows.normalised_text`, are
never text-capped): the share of posts it exempts, and how many posts a cap of N a text per label
and event-time UTC hour would hold back in one scope (the export is one channel and one source, so
`all`, the channel and the source hold the same posts), with the texts held back most. Labels are
the keyword scorer's (`SENTINEL_BASE=lexicon`, what the figures in docs/alerts.md were run with).
This counts the text cap alone, not the author cap before it.

Only posts before 2023 are read: the export's messages from 2023 on are held-out evaluation data.

    .venv/bin/sentinel import-discord ../shared/data/seed/meritcircle_cleaned_discord.csv --out d.jsonl
    .venv/bin/python bench/text_cap_threshold.py d.jsonl --out docs/results/text_cap_threshold_pre2023.json
"""

from __future__ import annotations

import argparse
import collections
import json
from pathlib import Path

from model.lexicon import judge
from stream.windows import normalised_text

HELD_OUT_FROM = "2023-01-01"


def measure(posts: list[dict], thresholds: list[int], caps: list[int], top: int = 8) -> dict:
    keyed = [(p["created_at"][:13], judge(p["text"]).label, normalised_text(p["text"])) for p in posts]
    groups = collections.Counter(keyed)
    lengths = collections.Counter(len(words) for _, _, words in keyed)
    total = len(posts)
    rows = []
    for threshold in thresholds:
        exempt = sum(n for length, n in lengths.items() if length < threshold)
        row: dict = {"min_chars": threshold, "exempt_posts": exempt, "exempt_share": round(exempt / total, 4), "caps": {}}
        for cap in caps:
            held = collections.Counter()
            for (_, _, words), n in groups.items():
                if len(words) >= threshold and n > cap:
                    held[words] += n - cap
            count = sum(held.values())
            row["caps"][str(cap)] = {"held_back": count, "held_back_share": round(count / total, 4),
                                     "texts": [{"text": t, "held_back": n} for t, n in held.most_common(top)]}
        rows.append(row)
    return {"posts": total, "thresholds": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("posts", type=Path, help="JSONL from `sentinel import-discord` (rows from 2023 on are skipped)")
    ap.add_argument("--thresholds", default="0,8,12,16,20,24,32")
    ap.add_argument("--caps", default="3,5,10")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    with args.posts.open(encoding="utf-8") as f:  # by "\n" alone: a text may hold U+2028, which splitlines splits at
        posts = [p for p in map(json.loads, f) if p["created_at"] < HELD_OUT_FROM]
    result = {
        "command": "bench/text_cap_threshold.py (sentinel import-discord ../shared/data/seed/meritcircle_cleaned_discord.csv; "
                   f"rows before {HELD_OUT_FROM} only)",
        **measure(posts, [int(x) for x in args.thresholds.split(",")], [int(x) for x in args.caps.split(",")]),
    }
    text = json.dumps(result, indent=1, ensure_ascii=False)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")
    for row in result["thresholds"]:
        caps = ", ".join(f"cap {c}: {v['held_back']} ({v['held_back_share']:.2%})" for c, v in row["caps"].items())
        print(f"min {row['min_chars']:>2} chars: {row['exempt_share']:.1%} of posts exempt; held back at {caps}")


if __name__ == "__main__":
    main()
