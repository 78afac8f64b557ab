"""What the n-gram head costs a post, and what its word cache and batch sum saved: the shipped head
(`model/ngram.py`) against the same head applied as session 43 shipped it (every gram hashed for
every post, one gather per post), on the same texts in one process, rounds alternated.

    .venv/bin/python bench/ngram_head_speed.py SPLITS/test-discord.csv [--synthetic 256] [--rounds 5] [--out F]

Per file: microseconds a post for each, the best of the rounds: the shipped head twice, `cold` with
its word cache emptied first (each round pays its misses), `warm` straight after with the file's
words cached (a worker's steady state: its chatter's common words stay in the cache); the ratios, and how far the two disagree (largest probability change,
labels changed). `--synthetic N` adds `sentinel bench classify`'s N synthetic 40-word posts. Reads
CSVs with a `text` column (what `sentinel splits` writes).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
import zlib
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model import ngram  # noqa: E402
from model.ngram import MAX_CHARS, PACKAGED_HEAD_DIR, NgramHead, softmax  # noqa: E402
from sentinel.synthetic import synthetic_posts  # noqa: E402


def features_uncached(text: str, buckets: int) -> list[int]:
    """model.ngram.features as session 43 wrote it: every gram of every post hashed."""
    words = [w.lower() for w in ngram._TOKEN.findall(text[:MAX_CHARS])]
    grams = [f"w:{w}" for w in words] + [f"b:{a} {b}" for a, b in zip(words, words[1:])]
    for word in words:
        padded = f"<{word}>"
        grams += [f"c:{padded[i:i + n]}" for n in range(2, 6) for i in range(len(padded) - n + 1)]
    return sorted({zlib.crc32(g.encode()) % buckets for g in grams}) or [0]


def probs_per_post(head: NgramHead, texts: Sequence[str]) -> np.ndarray:
    """NgramHead.probs as session 43 wrote it: one gather and sum per post."""
    out = np.empty((len(texts), 3), dtype=np.float32)
    for row, text in enumerate(texts):
        ids = features_uncached(text, head.buckets)
        out[row] = head.weights[ids].sum(0) * np.float32(1 / np.sqrt(len(ids)))
    return softmax(out + head.bias).astype(np.float64)


def timed_us(fn: Callable[[], Any], posts: int) -> float:
    started = time.perf_counter()
    fn()
    return (time.perf_counter() - started) / posts * 1e6


def measure(head: NgramHead, texts: list[str], rounds: int) -> dict[str, Any]:
    shipped, before = head.probs(texts), probs_per_post(head, texts)
    # Rounds alternate the two, so a noisy neighbour on the VM slows both alike; the best round of
    # each is kept. The cache starts empty in every round: each pays its own misses.
    then, cold, warm = [], [], []
    for _ in range(rounds):
        then.append(timed_us(lambda: probs_per_post(head, texts), len(texts)))
        ngram._word_ids.cache_clear()
        cold.append(timed_us(lambda: head.probs(texts), len(texts)))
        warm.append(timed_us(lambda: head.probs(texts), len(texts)))
    return {"posts": len(texts), "chars_per_post": round(sum(map(len, texts)) / len(texts), 1),
            "us_per_post_session43": round(min(then), 1), "us_per_post_shipped_cold": round(min(cold), 1),
            "us_per_post_shipped_warm": round(min(warm), 1), "speedup_cold": round(min(then) / min(cold), 2),
            "speedup_warm": round(min(then) / min(warm), 2), "max_prob_change": float(np.abs(shipped - before).max()),
            "labels_changed": int((shipped.argmax(1) != before.argmax(1)).sum())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", type=Path, nargs="*")
    parser.add_argument("--synthetic", type=int, default=0, help="add this many of bench classify's synthetic 40-word posts")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    head = NgramHead.load(PACKAGED_HEAD_DIR)
    sets = {str(f): [row["text"] for row in csv.DictReader(f.open(newline="", encoding="utf-8"))] for f in args.files}
    if args.synthetic:
        sets[f"synthetic {args.synthetic} x 40 words"] = list(synthetic_posts(args.synthetic, words=40))
    result = {"command": "python " + " ".join(sys.argv), "rounds": args.rounds,
              "results": {name: measure(head, texts, args.rounds) for name, texts in sets.items()}}
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
