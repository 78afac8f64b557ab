"""How far does a post's result move with its batch-mates? The shipped adapter over a labelled file,
scored three ways in one process: batches of 32, batches of 8, and the file reversed (the batches
are cut after a stable sort by length, so reversing reorders posts of equal length: some batches
of 32 hold other posts). Per pair: the largest and the 99th-percentile
change of any label probability, the median, and how many labels flip.

    .venv/bin/python bench/batch_invariance.py SPLITS/select.csv [--dtype bfloat16 --dtype float32] [--out F]

In bf16 the CPU kernels round differently for different batch shapes (docs/benchmarks.md); fp32 is
the reference. Reads a CSV with a `text` column (what `sentinel splits` writes).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path
from typing import Any, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model.base import load_model  # noqa: E402
from model.classifier import Classifier  # noqa: E402
from model.labels import LABELS  # noqa: E402
from model.scorer import Judgement  # noqa: E402
from stream.settings import Settings  # noqa: E402


def moved(x: Sequence[Judgement], y: Sequence[Judgement]) -> dict[str, Any]:
    """The change between two scorings of the same posts."""
    d = sorted(max(abs(p.probs[k] - q.probs[k]) for k in LABELS) for p, q in zip(x, y))
    return {"max": round(d[-1], 4), "p99": round(d[int(0.99 * (len(d) - 1))], 4), "median": round(d[len(d) // 2], 5),
            "label_flips": sum(p.label != q.label for p, q in zip(x, y))}


def measure(texts: list[str], dtype: str) -> dict[str, Any]:
    settings = Settings()
    model, tokenizer, info = load_model(settings.base, settings.adapter, device="cpu", dtype=dtype, cache_dir=settings.cache_dir)
    classifier = Classifier(model, tokenizer, info, batch_size=32)
    started = time.perf_counter()
    by32 = classifier.classify(texts, batch_size=32)
    by8 = classifier.classify(texts, batch_size=8)
    reversed32 = classifier.classify(texts[::-1], batch_size=32)[::-1]
    return {"model": info.id, "dtype": info.dtype, "posts": len(texts), "batch_32_vs_8": moved(by32, by8),
            "batch_32_vs_32_reversed": moved(by32, reversed32), "seconds": round(time.perf_counter() - started, 1)}


def cpu() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("file", type=Path)
    parser.add_argument("--dtype", action="append", choices=["bfloat16", "float32"])
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    with args.file.open(newline="") as handle:
        texts = [row["text"] for row in csv.DictReader(handle)]
    result = {"file": args.file.name, "cpu": cpu(), "runs": [measure(texts, dtype) for dtype in args.dtype or ["bfloat16", "float32"]]}
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
