"""GPU benchmark of the classifier on a Llama-2-7B-shaped model with random weights (nothing downloaded).

Run on a CUDA machine from the repository root:
    python bench/gpu_llama7b.py TOKENIZER_DIR OUT_DIR
TOKENIZER_DIR is any saved tokenizer (we use the default base's, so token counts match the CPU bench).
The decoder has Llama-2-7B's shape (4096 hidden, 11008 MLP, 32 layers, 32 heads); only the
vocabulary follows the tokenizer, which changes nothing but the embedding table. It is benchmarked in
bf16 and in 4-bit NF4 through the project's own loading path (model.base.load_model).
"""

from __future__ import annotations

import gc
import json
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model.classifier import Classifier  # noqa: E402
from sentinel.benchmarks import measure_classify, scorer_rate, timed  # noqa: E402
from sentinel.synthetic import synthetic_posts  # noqa: E402


def build_random_llama7b(tokenizer_dir: str, target: Path) -> None:
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = LlamaConfig(
        hidden_size=4096,
        intermediate_size=11008,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=32,
        vocab_size=len(tok),
        max_position_embeddings=4096,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.eos_token_id,
    )
    torch.manual_seed(0)
    torch.set_default_dtype(torch.bfloat16)
    with torch.device("cuda"):
        model = LlamaForCausalLM(config)
    torch.set_default_dtype(torch.float32)
    model.save_pretrained(target)
    tok.save_pretrained(target)
    del model
    gc.collect()
    torch.cuda.empty_cache()


def main() -> None:
    tokenizer_dir, out_dir = sys.argv[1], Path(sys.argv[2])
    out_dir.mkdir(parents=True, exist_ok=True)
    target = Path("/tmp/llama2-7b-shaped")
    started = time.perf_counter()
    build_random_llama7b(tokenizer_dir, target)
    print(f"built and saved in {time.perf_counter() - started:.1f}s", flush=True)
    posts = synthetic_posts(1024, words=40)
    results = []
    for quantize in ("none", "4bit"):
        settings = SimpleNamespace(
            base=str(target), adapter="none", device="cuda", dtype="bfloat16", quantize=quantize,
            batch_size=64, max_post_tokens=192, cache_dir=Path("/tmp/cache"),
        )
        torch.cuda.reset_peak_memory_stats()
        classifier, load_s = timed(lambda settings=settings: Classifier.load(settings), torch.device("cuda"))
        result = measure_classify(classifier, posts, naive_posts=32, load_s=load_s)
        suffixes = [classifier.codec.suffix_ids(classifier.tokenizer, t) for t in posts]
        for batch in (16, 256):
            result[f"scorer_posts_per_s_batch{batch}"] = round(scorer_rate(classifier, suffixes, batch)[1], 1)
        result["gpu"] = torch.cuda.get_device_name()
        result["peak_gpu_mem_mb"] = round(torch.cuda.max_memory_allocated() / 2**20)
        print(json.dumps(result), flush=True)
        results.append(result)
        del classifier
        gc.collect()
        torch.cuda.empty_cache()
    (out_dir / "gpu_llama7b.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
