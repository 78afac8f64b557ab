"""Where the CPU time of one classifier batch (or one training step) goes, by torch.profiler.

Default: the classifier loaded as `sentinel bench classify` loads it (the environment's settings,
`SENTINEL_*`; default base, shipped adapter, dtype auto, batch 64), one warm-up pass, then one batch
of 64 synthetic 40-word posts (sentinel/synthetic.py) through `Classifier.label_probs` under the
profiler. Prints one JSON object: the step's wall time and each op's share of the self CPU time of
all ops (`top_ops`), plus the shares of a few groups (matmul, attention, elementwise, copies).

`--train-step`: one optimizer step of `training.trainer.Trainer` (forward, backward, AdamW; batch
16 of synthetic posts, LoRA r=16 on every projection, as `sentinel bench train`) for each
`--dropout` value, with the share of the ops LoRA dropout runs (Bernoulli masks and the dropout
itself: `dropout_forward_inclusive_share`, aten::dropout and its children) and the step's wall time
without the profiler (median of `--steps`).

    .venv/bin/python bench/profile_batch.py > docs/results/profile_batch.json
    .venv/bin/python bench/profile_batch.py --train-step --dropout 0.05,0 > docs/results/profile_train_step.json

Shares are of the ops the profiler sees on the calling thread (each op's time includes the
OpenMP helper threads working for it). The profiler adds a small cost per op, so shares of the
many small elementwise ops read a little high.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from torch.profiler import ProfilerActivity, profile  # noqa: E402

GROUPS = {
    "matmul": ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::_weight_int4pack_mm"),
    "attention": ("aten::_scaled_dot_product_flash_attention_for_cpu", "aten::_flash_attention_forward",
                  "aten::_scaled_dot_product_flash_attention_for_cpu_backward", "aten::_softmax", "aten::_softmax_backward_data"),
    "elementwise_mul": ("aten::mul", "aten::mul_"),
    "copies": ("aten::copy_", "aten::clone", "aten::contiguous", "aten::to", "aten::_to_copy"),
    "dropout": ("aten::bernoulli_", "aten::bernoulli", "aten::native_dropout", "aten::native_dropout_backward"),
}


def op_shares(prof: Any, top: int) -> dict[str, Any]:
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in events)
    events.sort(key=lambda e: e.self_cpu_time_total, reverse=True)
    by_name = {e.key: e.self_cpu_time_total for e in events}
    groups = {name: round(sum(by_name.get(op, 0) for op in ops) / total, 4) for name, ops in GROUPS.items()}
    # aten::dropout's own time plus its children (Bernoulli mask, scaling, multiply): the forward's dropout.
    dropout = sum(e.cpu_time_total for e in prof.key_averages() if e.key in ("aten::dropout", "aten::feature_dropout"))
    return {
        "profiled_self_cpu_ms": round(total / 1000, 1),
        "dropout_forward_inclusive_share": round(dropout / total, 4),
        "top_ops": [{"op": e.key, "share": round(e.self_cpu_time_total / total, 4), "calls": e.count} for e in events[:top]],
        "groups": groups,
        "not_matmul_share": round(1 - groups["matmul"], 4),
    }


def profiled(fn: Callable[[], Any]) -> tuple[Any, float]:
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        started = time.perf_counter()
        fn()
        wall = time.perf_counter() - started
    return prof, wall


def settings_for(batch_size: int) -> Any:
    from stream.settings import Settings, get_settings

    base = get_settings()
    return Settings.model_validate({**base.model_dump(), "batch_size": batch_size})


def profile_batch(batch_size: int, words: int, top: int) -> dict[str, Any]:
    from model.classifier import Classifier
    from sentinel.benchmarks import ensure_base_out_of_process
    from sentinel.synthetic import synthetic_posts

    settings = settings_for(batch_size)
    ensure_base_out_of_process(settings.base, settings.cache_dir)
    classifier = Classifier.load(settings)
    suffixes = [classifier.codec.suffix_ids(classifier.tokenizer, t) for t in synthetic_posts(batch_size, words=words)]
    classifier.label_probs(suffixes)  # warm-up: first call of this shape pays kernel selection
    prof, wall = profiled(lambda: classifier.label_probs(suffixes))
    return {
        "what": "one batch through Classifier.label_probs (after one warm-up pass of the same batch)",
        "model": classifier.info.id, "device": classifier.info.device, "dtype": classifier.info.dtype,
        "threads": torch.get_num_threads(), "batch_size": len(suffixes), "words_per_post": words,
        "suffix_tokens_per_post": round(sum(map(len, suffixes)) / len(suffixes), 1),
        "wall_s_under_profiler": round(wall, 3),
        **op_shares(prof, top),
    }


def profile_train_step(dropouts: list[float], batch_size: int, words: int, steps: int, top: int) -> dict[str, Any]:
    from model.labels import LABELS
    from sentinel.benchmarks import ensure_base_out_of_process
    from sentinel.synthetic import synthetic_post
    from training.data import Example
    from training.trainer import TrainConfig, Trainer

    settings = settings_for(64)
    ensure_base_out_of_process(settings.base, settings.cache_dir)
    rng = random.Random(0)
    count = batch_size * (steps + 3)
    examples = [Example(synthetic_post(rng, LABELS[i % 3], "BTC", words), LABELS[i % 3], i + 1) for i in range(count)]
    result: dict[str, Any] = {"what": "one optimizer step of training.trainer.Trainer (loss, backward, AdamW step)",
                              "batch_size": batch_size, "words_per_post": words, "runs": []}
    for dropout in dropouts:
        cfg = TrainConfig(base=settings.base, device=settings.device, dtype=settings.dtype, quantize=settings.quantize,
                          cache_dir=settings.cache_dir, batch_size=batch_size, dropout=dropout)
        with tempfile.TemporaryDirectory() as tmp:
            trainer = Trainer(cfg, examples, examples[:3], Path(tmp))
            trainer._setup(resume=False)  # noqa: SLF001 - as sentinel bench train: the step alone
            batches = [trainer.encoded[i : i + batch_size] for i in range(0, len(trainer.encoded), batch_size)]

            def step(batch: Any, trainer: Trainer = trainer) -> None:  # bound now: the loop rebinds the name
                trainer.loss(batch).backward()
                trainer.optimizer.step()
                trainer.optimizer.zero_grad(set_to_none=True)

            step(batches[0])  # warm-up
            times = []
            for batch in batches[1 : 1 + steps]:
                started = time.perf_counter()
                step(batch)
                times.append(time.perf_counter() - started)
            prof, wall = profiled(lambda batches=batches: step(batches[1 + steps]))
            shares = op_shares(prof, top)
            result["runs"].append({
                "lora_dropout": dropout, "shared_prefix": trainer.shared_prefix, "dtype": trainer.info.dtype,
                "step_s_median": round(statistics.median(times), 3), "step_s": [round(t, 3) for t in times],
                "wall_s_under_profiler": round(wall, 3), **shares,
            })
            del trainer
    medians = {run["lora_dropout"]: run["step_s_median"] for run in result["runs"]}
    if len(medians) == 2:
        (hi, t_hi), (lo, t_lo) = sorted(medians.items(), reverse=True)
        result[f"step_time_saved_by_dropout_{lo:g}_vs_{hi:g}"] = round(1 - t_lo / t_hi, 3)
    result["threads"] = torch.get_num_threads()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", type=int, help="posts in the profiled batch (default 64; 16 with --train-step)")
    parser.add_argument("--words", type=int, default=40, help="words per synthetic post")
    parser.add_argument("--top", type=int, default=15, help="ops listed")
    parser.add_argument("--train-step", action="store_true", help="profile one training step instead of one classifier batch")
    parser.add_argument("--dropout", default="0.05,0", help="with --train-step: LoRA dropout values, comma-separated")
    parser.add_argument("--steps", type=int, default=3, help="with --train-step: unprofiled steps timed per dropout value")
    args = parser.parse_args()
    if args.train_step:
        out = profile_train_step([float(d) for d in args.dropout.split(",")], args.batch_size or 16, args.words, args.steps, args.top)
    else:
        out = profile_batch(args.batch_size or 64, args.words, args.top)
    out["command"] = " ".join(["bench/profile_batch.py", *sys.argv[1:]])
    from sentinel.benchmarks import cpu_description

    out["cpu"] = cpu_description()
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
