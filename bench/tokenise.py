"""Tokenising posts one call each against one call per micro-batch (`PromptCodec.suffix_ids_many`).

    .venv/bin/python bench/tokenise.py [--posts 4096] [--batch 64] [--pairs 3] [--out FILE]

The default base's tokenizer, synthetic 40-word posts; the two ways alternate `--pairs` times in
one process, and both must give the same tokens. CPU seconds of this thread per post, which is
what a worker's interpreter spends on it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model.base import ensure_converted_base, load_tokenizer  # noqa: E402
from model.prompt import PromptCodec  # noqa: E402
from sentinel.synthetic import synthetic_posts  # noqa: E402
from stream.settings import Settings  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--posts", type=int, default=4096)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    tokenizer = load_tokenizer(str(ensure_converted_base(Settings().cache_dir)))
    codec = PromptCodec.for_tokenizer(tokenizer)
    posts = synthetic_posts(args.posts, words=40)
    chunks = [posts[i : i + args.batch] for i in range(0, len(posts), args.batch)]

    def one_by_one() -> list[list[int]]:
        return [codec.suffix_ids(tokenizer, t) for t in posts]

    def batched() -> list[list[int]]:
        return [ids for chunk in chunks for ids in codec.suffix_ids_many(tokenizer, chunk)]

    if one_by_one() != batched():
        raise SystemExit("the two ways gave different tokens")
    rows = []
    for _ in range(args.pairs):
        for name, way in (("one_call_per_post", one_by_one), ("one_call_per_batch", batched)):
            started = time.thread_time()
            way()
            rows.append({"way": name, "cpu_us_per_post": round((time.thread_time() - started) / len(posts) * 1e6, 1)})
    result = {"posts": len(posts), "batch": args.batch, "words": 40, "rows": rows}
    for name in ("one_call_per_post", "one_call_per_batch"):
        result[f"{name}_median_us"] = sorted(r["cpu_us_per_post"] for r in rows if r["way"] == name)[args.pairs // 2]
    print(json.dumps(result))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
