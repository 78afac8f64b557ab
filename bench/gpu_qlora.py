"""QLoRA throughput on a Llama-2-7B-shaped model with random weights (nothing downloaded), on CUDA.

    python bench/gpu_qlora.py TOKENIZER_DIR OUT_DIR [STEPS] [MODES]

MODES is a comma list of `shared` (shared prefix, no checkpointing) and `checkpointing` (plain
batches with gradient checkpointing); both by default.

Builds the same random 7B-shaped checkpoint as gpu_llama7b.py, then runs the project's Trainer
with --quantize 4bit (NF4 base, bf16 compute, LoRA r=16 on every attention and MLP projection) for
STEPS optimizer steps of 16 synthetic ~40-word posts, and records samples/s and peak GPU memory.
"""

from __future__ import annotations

import json
import random
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.gpu_llama7b import build_random_llama7b  # noqa: E402
from model.labels import LABELS  # noqa: E402
from sentinel.synthetic import synthetic_post  # noqa: E402
from training.data import Example  # noqa: E402
from training.trainer import TrainConfig, Trainer  # noqa: E402


def main() -> None:
    tokenizer_dir, out_dir = sys.argv[1], Path(sys.argv[2])
    steps = int(sys.argv[3]) if len(sys.argv) > 3 else 200
    modes = sys.argv[4].split(",") if len(sys.argv) > 4 else ["shared", "checkpointing"]
    out_dir.mkdir(parents=True, exist_ok=True)
    target = Path("/tmp/llama2-7b-shaped")
    if not (target / "config.json").is_file():
        build_random_llama7b(tokenizer_dir, target)
    rng = random.Random(0)
    batch = 16
    examples = [Example(synthetic_post(rng, LABELS[i % 3], "BTC", 40), LABELS[i % 3], i + 1) for i in range(batch * steps)]
    results = []
    for checkpointing in [mode == "checkpointing" for mode in modes]:
        cfg = TrainConfig(
            base=str(target), quantize="4bit", device="cuda", dtype="bfloat16", r=16, alpha=32, batch_size=batch,
            max_steps=steps, eval_every=10**9, gradient_checkpointing=checkpointing, cache_dir=Path("/tmp/cache"),
        )
        torch.cuda.reset_peak_memory_stats()
        marks: list[tuple[int, float]] = []
        trainer = Trainer(cfg, examples, examples[:32], out_dir / f"adapter-{checkpointing}")
        started = time.perf_counter()
        result = trainer.run(progress=lambda e, marks=marks: marks.append((e["step"], time.perf_counter())) if "eval" not in e else None)
        # Steady state: from step 10 to the last step (the first steps pay kernel selection).
        (s0, t0), (s1, t1) = marks[9], marks[-1]
        row = {
            "model": "llama-2-7b-shaped (random weights)",
            "gpu": torch.cuda.get_device_name(),
            "quantize": "4bit-nf4", "compute_dtype": "bfloat16", "lora_r": 16, "batch_size": batch,
            "gradient_checkpointing": checkpointing, "shared_prefix": trainer.shared_prefix,
            "steps": result.state.step,
            "samples_per_s": round((s1 - s0) * batch / (t1 - t0), 2),
            "peak_gpu_mem_mb": round(torch.cuda.max_memory_allocated() / 2**20),
            "wall_s": round(time.perf_counter() - started, 1),
            "tokens_per_post": round(sum(len(trainer.codec.prefix_ids) + len(s) for s, _ in trainer.encoded) / len(trainer.encoded), 1),
        }
        print(json.dumps(row), flush=True)
        results.append(row)
        del trainer
        torch.cuda.empty_cache()
    (out_dir / "gpu_qlora.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
