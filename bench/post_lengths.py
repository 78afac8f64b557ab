"""Are crypto-chatter posts cut by the token budget? (issue 17: "consider what the domain needs:
longer posts")

Training keeps a post's first 128 tokens (`sentinel train --max-length`, the shipped card's
`max_length`) and the worker its first 192 (`SENTINEL_MAX_POST_TOKENS`). This counts, per split file
and label, the posts whose tokens, as the prompt encodes them (`PromptCodec.post_ids`), pass
each budget, with the base's own tokenizer:

    .venv/bin/python bench/post_lengths.py SPLITS/test-discord.csv SPLITS/select.csv ... [--out F]

Reads CSV files with `text` and `label` columns (what `sentinel splits` writes). Needs no model
weights beyond the converted base's tokenizer (built on first use, as `sentinel eval` does).
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model.base import ensure_converted_base, load_tokenizer  # noqa: E402
from model.prompt import EmptyTextError, PromptCodec  # noqa: E402
from stream.settings import Settings  # noqa: E402

TRAIN_BUDGET = 128
SERVE_BUDGET = 192
UNCUT = 1_000_000  # count every token: the budgets are applied here, not by the codec


def lengths(tokenizer: Any, path: Path) -> dict[str, list[int]]:
    """Token counts of each row's post as the prompt encodes it (cleaned, untruncated), by label."""
    codec = PromptCodec.for_tokenizer(tokenizer, max_post_tokens=UNCUT)
    found: dict[str, list[int]] = defaultdict(list)
    with path.open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            try:
                found[row["label"]].append(len(codec.post_ids(tokenizer, row["text"])))
            except EmptyTextError:
                continue
    return dict(found)


def summary(counts: list[int]) -> dict[str, float | int]:
    ordered = sorted(counts)
    return {
        "posts": len(ordered),
        "median_tokens": statistics.median(ordered),
        "p95_tokens": ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))],
        "max_tokens": ordered[-1],
        f"over_{TRAIN_BUDGET}": sum(n > TRAIN_BUDGET for n in ordered),
        f"over_{SERVE_BUDGET}": sum(n > SERVE_BUDGET for n in ordered),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args()
    tokenizer = load_tokenizer(str(ensure_converted_base(Settings().cache_dir)))
    result = {
        "budgets": {"train": TRAIN_BUDGET, "serve": SERVE_BUDGET},
        "files": {path.name: {label: summary(n) for label, n in sorted(lengths(tokenizer, path).items())} for path in args.files},
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
