"""`sentinel bench ...`: throughput measured side by side in one run, reported as one JSON object."""

from __future__ import annotations

import multiprocessing
import resource
import time
from typing import Any, Callable, Sequence

import psutil
import torch

from model.base import DEFAULT_BASE, ensure_converted_base
from model.classifier import Classifier
from model.naive import generate_labels


def matmul_peak_gflops(dtype: torch.dtype, device: torch.device, size: int | None = None, repeats: int = 8) -> float:
    """The best observed rate of a square matmul: the roofline our utilisation is measured against."""
    size = size or (8192 if device.type == "cuda" else 2048)
    a = torch.randn(size, size, dtype=dtype, device=device)
    b = torch.randn(size, size, dtype=dtype, device=device)
    best = float("inf")
    for _ in range(3):
        a @ b
    for _ in range(repeats):
        _sync(device)
        started = time.perf_counter()
        a @ b
        _sync(device)
        best = min(best, time.perf_counter() - started)
    return 2 * size**3 / best / 1e9


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def linear_flops_per_token(model: Any) -> int:
    """2 x (weights of every linear layer in the decoder): the matmul FLOPs one token costs."""
    decoder = model.get_decoder()
    total = 0
    for module in decoder.modules():
        if isinstance(module, torch.nn.Linear):  # bitsandbytes and LoRA layers subclass it too
            total += module.in_features * module.out_features
    return 2 * total


def attention_flops(config: Any, prefix_len: int, suffix_len: int) -> int:
    """QK^T and AV FLOPs for suffix tokens attending to the cached prefix and to each other."""
    heads_dim = config.num_attention_heads * getattr(config, "head_dim", config.hidden_size // config.num_attention_heads)
    context = suffix_len * prefix_len + suffix_len * (suffix_len + 1) // 2
    return 4 * heads_dim * context * config.num_hidden_layers


def timed(fn: Callable[[], Any], device: torch.device) -> tuple[Any, float]:
    _sync(device)
    started = time.perf_counter()
    out = fn()
    _sync(device)
    return out, time.perf_counter() - started


def _convert(cache_dir: str) -> None:
    ensure_converted_base(cache_dir)  # type: ignore[arg-type]


def ensure_base_out_of_process(base: str, cache_dir: Any) -> None:
    """Convert the GGUF in a child process, so its ~2 GB dequantising peak is not counted in our RSS."""
    if base != DEFAULT_BASE:
        return
    ctx = multiprocessing.get_context("spawn")
    proc = ctx.Process(target=_convert, args=(str(cache_dir),))
    proc.start()
    proc.join()
    if proc.exitcode != 0:
        raise RuntimeError(f"converting the default base failed (exit {proc.exitcode})")


def bench_classify(settings: Any, posts: Sequence[str], naive_posts: int, max_new_tokens: int = 8) -> dict[str, Any]:
    """Load the model as configured, then measure it (see measure_classify)."""
    ensure_base_out_of_process(settings.base, settings.cache_dir)
    # Python imports (about 4 s for torch and transformers) are process start-up, not model load.
    from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: F401

    classifier, load_s = timed(lambda: Classifier.load(settings), torch.device("cpu"))
    return measure_classify(classifier, posts, naive_posts, load_s=load_s, max_new_tokens=max_new_tokens)


def scorer_rate(classifier: Classifier, suffixes: Sequence[Sequence[int]], batch: int) -> tuple[list[Any], float]:
    """(judgements, posts/s) of the batched scorer in steady state.

    The warm-up is a whole pass: every padded width is a new shape, and the first call of each
    shape pays kernel selection (cuBLAS heuristics, oneDNN primitives) that a worker pays once.
    """
    classifier.classify_encoded(suffixes, batch)
    judgements, seconds = timed(lambda: classifier.classify_encoded(suffixes, batch), classifier.device)
    return judgements, len(suffixes) / seconds


def measure_classify(
    classifier: Classifier, posts: Sequence[str], naive_posts: int, *, load_s: float, max_new_tokens: int = 8
) -> dict[str, Any]:
    """Our scorer and the naive per-post generate baseline on the same posts and the same weights."""
    model, tokenizer, device = classifier.model, classifier.tokenizer, classifier.device
    batch = classifier.batch_size
    suffixes = [classifier.codec.suffix_ids(tokenizer, t) for t in posts]
    ours, ours_rate = scorer_rate(classifier, suffixes, batch)
    subset = list(posts[: min(naive_posts, len(posts))])
    naive, naive_s = timed(lambda: generate_labels(model, tokenizer, subset, max_new_tokens), device)
    naive_rate = len(subset) / naive_s

    prefix_len = len(classifier.codec.prefix_ids)
    per_token = linear_flops_per_token(model)
    flops_per_post = sum(per_token * len(s) + attention_flops(model.config, prefix_len, len(s)) for s in suffixes) / len(suffixes)
    achieved = flops_per_post * ours_rate / 1e9
    run_dtype = torch.bfloat16 if classifier.info.quantize != "none" else next(model.parameters()).dtype
    peak_fp32 = matmul_peak_gflops(torch.float32, device)
    peak_run = peak_fp32 if run_dtype == torch.float32 else matmul_peak_gflops(run_dtype, device)
    agree = sum(1 for j, n in zip(ours, naive) if j.label == n) / len(subset)
    result: dict[str, Any] = {
        "model": classifier.info.id,
        "device": classifier.info.device,
        "dtype": classifier.info.dtype,
        "quantize": classifier.info.quantize,
        "threads": torch.get_num_threads(),
        "posts": len(posts),
        "naive_posts": len(subset),
        "batch_size": batch,
        "tokens_per_post": round(sum(prefix_len + len(s) for s in suffixes) / len(suffixes), 1),
        "suffix_tokens_per_post": round(sum(len(s) for s in suffixes) / len(suffixes), 1),
        "prefix_tokens": prefix_len,
        "gflop_per_post": round(flops_per_post / 1e9, 2),
        "naive_posts_per_s": round(naive_rate, 2),
        "scorer_posts_per_s": round(ours_rate, 2),
        "speedup": round(ours_rate / naive_rate, 1),
        "label_agreement": round(agree, 3),
        "naive_unparsed": sum(1 for n in naive if n is None),
        "achieved_gflops": round(achieved, 1),
        "peak_fp32_gflops": round(peak_fp32, 1),
        "utilisation_vs_fp32_peak": round(achieved / peak_fp32, 3),
        f"peak_{str(run_dtype).removeprefix('torch.')}_gflops": round(peak_run, 1),
        "utilisation_vs_run_dtype_peak": round(achieved / peak_run, 3),
        "rss_mb": round(psutil.Process().memory_info().rss / 2**20),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "load_s": round(load_s, 2),
    }
    if device.type == "cuda":
        result["peak_gpu_mem_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20)
    return result
