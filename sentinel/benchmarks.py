"""`sentinel bench ...`: throughput measured side by side in one run, reported as one JSON object."""

from __future__ import annotations

import multiprocessing
import os
import resource
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import psutil
import torch

from model.base import DEFAULT_BASE, ensure_converted_base
from model.classifier import Classifier
from model.fusion import FusedScorer
from model.naive import generate_labels
from model.scorer import Judgement, Scorer
from stream.settings import Settings


def matmul_peak_gflops(dtype: torch.dtype, device: torch.device, size: int | None = None, repeats: int = 20) -> float:
    """The best observed rate of a square matmul: the roofline our utilisation is measured against."""
    size = size or (8192 if device.type == "cuda" else 2048)
    a = torch.randn(size, size, dtype=dtype, device=device)
    b = torch.randn(size, size, dtype=dtype, device=device)
    best = float("inf")
    # Half a second of warm-up: AMX and GPU clocks ramp up, and a cold probe under-reads the peak
    # (which would flatter the utilisation). Best of the repeats, for the same reason.
    warm_until = time.perf_counter() + 0.5
    while time.perf_counter() < warm_until:
        a @ b
    _sync(device)
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


def bench_classify(
    settings: Settings, posts: Sequence[str], naive_posts: int, max_new_tokens: int = 8,
    pool: Callable[[Classifier], Scorer] | None = None,
) -> dict[str, Any]:
    """Load the model as configured, then measure it (see measure_classify). `pool` wraps the model
    as the commands that load it do (sentinel.cli.with_ngram_head): where that pools an n-gram
    head, the head's cost is measured beside the model's (head_figures)."""
    ensure_base_out_of_process(settings.base, settings.cache_dir)
    # Python imports (about 4 s for torch and transformers) are process start-up, not model load.
    from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: F401

    classifier, load_s = timed(lambda: Classifier.load(settings), torch.device("cpu"))
    pooled = pool(classifier) if pool else classifier
    head = pooled if isinstance(pooled, FusedScorer) else None
    return measure_classify(classifier, posts, naive_posts, load_s=load_s, max_new_tokens=max_new_tokens, head=head)


def scorer_rate(classifier: Classifier, suffixes: Sequence[Sequence[int]], batch: int) -> tuple[list[Any], float]:
    """(judgements, posts/s) of the batched scorer in steady state.

    The warm-up is a whole pass: every padded width is a new shape, and the first call of each
    shape pays kernel selection (cuBLAS heuristics, oneDNN primitives) that a worker pays once.
    """
    classifier.classify_encoded(suffixes, batch)
    judgements, seconds = timed(lambda: classifier.classify_encoded(suffixes, batch), classifier.device)
    return judgements, len(suffixes) / seconds


def head_figures(fused: FusedScorer, judged: Sequence[Judgement], posts: Sequence[str], scorer_posts_per_s: float) -> dict[str, Any]:
    """The n-gram head's cost beside the model, on the same posts in the same run (FusedScorer.pool,
    all that classify adds to the model's pass). FusedScorer runs
    the head after the model, one after the other in the model's thread, so the pair's rate is the
    model's pass plus the head's (both measured here); the head is numpy on the CPU whatever the
    model's device, so beside a fast GPU its share grows (docs/benchmarks.md)."""
    fused.pool(judged, posts)  # warm-up: numpy's first calls allocate
    _, head_s = timed(lambda: fused.pool(judged, posts), torch.device("cpu"))
    scorer_s = len(posts) / scorer_posts_per_s
    return {
        "head": fused.info.id,
        "head_w": fused.w,
        "head_us_per_post": round(head_s / len(posts) * 1e6, 1),
        "head_posts_per_s": round(len(posts) / head_s, 1),
        "scorer_with_head_posts_per_s": round(len(posts) / (scorer_s + head_s), 2),
        "head_share_of_time": round(head_s / (scorer_s + head_s), 4),
    }


def measure_classify(
    classifier: Classifier, posts: Sequence[str], naive_posts: int, *, load_s: float, max_new_tokens: int = 8,
    head: FusedScorer | None = None,
) -> dict[str, Any]:
    """Our scorer and the naive per-post generate baseline on the same posts and the same weights;
    with `head`, the n-gram head's cost beside the scorer (head_figures)."""
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
        # SENTINEL_NGRAM_HEAD's head, where the commands that load this model pool one (none: the model alone)
        **(head_figures(head, ours, posts, ours_rate) if head else {"head": None}),
    }
    if device.type == "cuda":
        result["peak_gpu_mem_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20)
    return result


# ---------------------------------------------------------------------------- the pipeline


def _percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))] if ordered else float("nan")


def _with_children(pids: Sequence[int]) -> list[list[int]]:
    """Each worker's pid with its children's: the model runs in a child (stream/model_process.py)."""
    return [[pid, *(c.pid for c in psutil.Process(pid).children(recursive=True))] for pid in pids]


def _process_memory_mb(pids: Sequence[int]) -> dict[str, int]:
    """The largest worker's RSS and peak RSS, its model process included (each worker holds its own model)."""
    rss = peak = 0
    for group in _with_children(pids):
        group_rss = group_peak = 0
        for pid in group:
            for line in open(f"/proc/{pid}/status"):
                key, _, value = line.partition(":")
                if key == "VmRSS":
                    group_rss += int(value.split()[0]) // 1024
                elif key == "VmHWM":
                    group_peak += int(value.split()[0]) // 1024
        rss, peak = max(rss, group_rss), max(peak, group_peak)
    return {"worker_rss_mb": rss, "worker_peak_rss_mb": peak}


class _CpuSplit:
    """CPU time of the workers (their model processes included) and of the rest of the machine,
    between construction and stop()."""

    def __init__(self, pids: Sequence[int]):
        self.procs = [psutil.Process(pid) for group in _with_children(pids) for pid in group]
        self.t0 = time.monotonic()
        self.machine0 = self._busy(psutil.cpu_times())
        self.proc0 = self._own()

    @staticmethod
    def _busy(times: Any) -> float:
        return times.user + times.system + getattr(times, "nice", 0.0) + getattr(times, "irq", 0.0) + getattr(times, "softirq", 0.0)

    def _own(self) -> float:
        times = [p.cpu_times() for p in self.procs]
        return sum(t.user + t.system + t.children_user + t.children_system for t in times)

    def stop(self) -> dict[str, float]:
        import os

        import psutil

        wall = time.monotonic() - self.t0
        cores = os.cpu_count() or 1
        machine = self._busy(psutil.cpu_times()) - self.machine0
        own = self._own() - self.proc0
        return {"cpu_cores": cores, "worker_cpu_fraction": round(own / (wall * cores), 3), "other_cpu_fraction": round(max(machine - own, 0.0) / (wall * cores), 3)}


def classifier_alone_rate(classifier: Classifier, texts: Sequence[str], batch: int) -> float:
    """Posts/s of the classifier called as the worker calls it: `classify` on consecutive
    micro-batches of raw texts (tokenising included), in steady state."""
    _, seconds = timed(lambda: [classifier.classify(texts[i : i + batch]) for i in range(0, len(texts), batch)], classifier.device)
    return len(texts) / seconds


def bench_pipeline(
    settings: Settings, posts: Sequence[str], latency_posts: int, rounds: int = 2, latency_rate_fraction: float = 0.5, workers: int = 1,
    on_round: Callable[[int, list[int]], object] | None = None, spread: tuple[int, int] | None = None,
) -> dict[str, Any]:
    """End-to-end `run` throughput against the classifier alone, on the same posts, in one run;
    then produce-to-window-update latency at a steady rate below capacity.

    With `workers` > 1 that many worker processes share the input's partitions (and the machine's
    accelerator), each with its own model, and the pipeline rate is theirs together.

    The two are interleaved (classifier, pipeline, classifier, pipeline, ..., classifier) with the
    worker up throughout, and each pipeline round is compared with the classifier rounds on either
    side of it: a shared machine drifts in speed by tens of percent over minutes, and a single
    before/after pair would measure the drift.

    `spread` (assets, channels) tags each post with one of that many assets and channels at random,
    so the windows and judging work of many scopes runs beside the model; by default every post is in
    channel `bench` with the assets its text names.

    `on_round(round, worker_pids)` is called as each pipeline round starts (a profiler attaches there)."""
    import json
    import random
    import statistics
    import tempfile

    from sentinel.run import connected, free_ports, open_store, start_worker, stop_workers, wait_processed
    from stream.tools.services import run_async
    from stream.kafka import ensure_topics, worker_topics
    from stream.tools.replay import replay

    ensure_base_out_of_process(settings.base, settings.cache_dir)
    classifier = Classifier.load(settings)
    batch = settings.max_batch
    classifier_alone_rate(classifier, posts, batch)  # warm-up: every padded width is a new shape

    def write_posts(path: Path, prefix: str, texts: Sequence[str], t0: float) -> None:
        rng = random.Random(prefix)
        with path.open("w") as handle:
            for i, text in enumerate(texts):
                post: dict[str, Any] = {"id": f"{prefix}-{i}", "text": text, "created_at": t0 + i, "channel": "bench"}
                if spread is not None:
                    post |= {"assets": [f"A{rng.randrange(spread[0]):04d}"], "channel": f"c{rng.randrange(spread[1]):03d}"}
                handle.write(json.dumps(post) + "\n")

    async def measure(live: Any, embedded: bool, workdir: Path) -> dict[str, Any]:
        topics = worker_topics(live)
        await ensure_topics(live, topics)
        store = open_store(live)
        ports = free_ports(workers)
        procs = [start_worker(live, embedded, workdir / f"worker{i}.log", web_port=port) for i, port in enumerate(ports)]
        alone: list[float] = []
        piped: list[float] = []
        classify_s = pipeline_s = 0.0
        cpu_splits: list[dict[str, float]] = []
        batch_sizes: list[float] = []
        stage_ms: list[dict[str, float]] = []
        try:
            base = 1_767_225_600.0
            warm, paced = workdir / "warm.jsonl", workdir / "paced.jsonl"
            # The worker's warm-up is a whole pass too, as the classifier's above: on a GPU each new
            # padded width costs a slow first call, and without it the first round ran 0.63-0.68 of
            # the classifier against 0.71-0.76 for the second (session 30, one H200).
            write_posts(warm, "warm", posts, base)
            write_posts(paced, "paced", posts[:latency_posts], base + 10_000 * (rounds + 2))
            before = await store.stats()
            sent = await replay(live, warm, live.topic_posts, None)
            before = await wait_processed(live, store, before, sent, procs, 600)
            await _wait_partitions_shared(ports, live.partitions, procs)
            for r in range(rounds):
                alone.append(classifier_alone_rate(classifier, posts, batch))  # the worker is idle meanwhile
                main = workdir / f"main{r}.jsonl"
                write_posts(main, f"main{r}", posts, base + 10_000 * (r + 1))
                cpu = _CpuSplit([w.pid for w in procs])
                sums0 = await _metric_sums(ports)
                if on_round is not None:
                    on_round(r, [w.pid for w in procs])
                started = time.monotonic()
                sent = await replay(live, main, live.topic_posts, None)
                after = await wait_processed(live, store, before, sent, procs, 1800)
                seconds = time.monotonic() - started
                cpu_splits.append(cpu.stop())
                sums = {name: value - sums0.get(name, 0.0) for name, value in (await _metric_sums(ports)).items()}
                batches = sums.get("sentinel_batch_size_count", 0.0) or 1.0
                batch_sizes.append(sums.get("sentinel_batch_size_sum", 0.0) / batches)
                stage_ms.append({stage: round(1000 * sums.get(f"sentinel_{stage}_seconds_sum", 0.0) / batches, 1) for stage in ("classify", "commit")})
                piped.append(sent / seconds)
                pipeline_s += seconds
                classify_s += (after.get("classify_ms", 0) - before.get("classify_ms", 0)) / 1000
                before = after
            alone.append(classifier_alone_rate(classifier, posts, batch))
            # Latency: one post a tick at a fraction of the measured capacity, so queues stay short.
            rate = max(1.0, latency_rate_fraction * statistics.median(piped))
            paced_started = time.time()
            count = await replay(live, paced, live.topic_posts, rate)
            await wait_processed(live, store, before, count, procs, 600)
            latencies = await _latencies(live, "paced-", paced_started)
            memory = _process_memory_mb([w.pid for w in procs])
        finally:
            stop_workers(procs)  # together: one after the other, each waits out the rebalance the last one's leave began
            await store.close()
        cpu_split = {key: round(statistics.mean(s[key] for s in cpu_splits), 3) for key in cpu_splits[0]}
        return {"alone": alone, "piped": piped, "pipeline_s": pipeline_s, "classify_s": classify_s, "rate": rate, "batch_sizes": batch_sizes,
                "stage_ms": stage_ms,
                "latencies": latencies, **memory, **cpu_split}

    with connected(settings) as (live, embedded), tempfile.TemporaryDirectory() as tmp:
        m = run_async(measure(live, embedded, Path(tmp)))
    alone, piped = m["alone"], m["piped"]
    ratios = [p / ((alone[i] + alone[i + 1]) / 2) for i, p in enumerate(piped)]
    lat = m["latencies"]
    return {
        "posts": len(posts),
        "rounds": rounds,
        "workers": workers,
        "spread": f"{spread[0]} assets x {spread[1]} channels" if spread else None,
        "partitions": settings.partitions,
        "batch_size": batch,
        "classifier_posts_per_s": round(statistics.median(alone), 2),
        "pipeline_posts_per_s": round(statistics.median(piped), 2),
        # Each pipeline round against the mean of the classifier rounds just before and after it.
        "pipeline_vs_classifier": round(statistics.median(ratios), 3),
        "rounds_classifier_posts_per_s": [round(a, 2) for a in alone],
        "rounds_pipeline_posts_per_s": [round(p, 2) for p in piped],
        "rounds_ratio": [round(r, 3) for r in ratios],
        # Measured inside the worker during the pipeline rounds: the share of wall time the model was working.
        "worker_classify_busy_fraction": round(m["classify_s"] / (m["pipeline_s"] * workers), 3),
        # Messages per micro-batch the workers took (their sentinel_batch_size histogram): a batch
        # short of the maximum wastes the accelerator's width.
        "rounds_mean_batch": [round(b, 1) for b in m["batch_sizes"]],
        # Per micro-batch, the model's call and the half after it (windows, judging, publishing):
        # each batch waits for both, so the longer one sets the worker's pace.
        "rounds_stage_ms": m["stage_ms"],
        "latency_posts": len(lat),
        "latency_rate_posts_per_s": round(m["rate"], 2),
        "latency_p50_ms": round(_percentile(lat, 0.5) * 1000),
        "latency_p99_ms": round(_percentile(lat, 0.99) * 1000),
        "worker_rss_mb": m["worker_rss_mb"],
        "worker_peak_rss_mb": m["worker_peak_rss_mb"],
        # Where the machine's CPU went during the pipeline rounds: the worker, and everything else
        # (the embedded broker and redis-server, this process's replay and polling). On a small
        # machine the second share is taken straight from the model.
        "cpu_cores": m["cpu_cores"],
        "worker_cpu_fraction": m["worker_cpu_fraction"],
        "other_cpu_fraction": m["other_cpu_fraction"],
        "dtype": settings.dtype,
    }


async def _metric_sums(ports: Sequence[int]) -> dict[str, float]:
    """The workers' histogram sums and counts so far (batch size, model and commit seconds), added
    over the workers, from their /metrics."""
    import asyncio
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    wanted = {"sentinel_batch_size", "sentinel_classify_seconds", "sentinel_commit_seconds"}

    def read(port: int) -> dict[str, float]:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
        return {s.name: s.value for f in text_string_to_metric_families(text) if f.name in wanted for s in f.samples
                if s.name.endswith(("_sum", "_count"))}

    totals: dict[str, float] = {}
    for port in ports:
        for name, value in (await asyncio.to_thread(read, port)).items():
            totals[name] = totals.get(name, 0.0) + value
    return totals


async def _wait_partitions_shared(ports: Sequence[int], partitions: int, procs: Sequence[Any], timeout: float = 120.0) -> None:
    """Until every worker reports partitions of its own on /readyz and together they hold all of
    them: a round measured while the group still rebalances would measure the rebalance."""
    import asyncio
    import json
    import re
    import urllib.error
    import urllib.request

    def owned(port: int) -> list[int]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as resp:
                body = json.loads(resp.read())
        except urllib.error.HTTPError as exc:  # 503 while a check fails: the body still says which
            body = json.loads(exc.read() or b"{}")
        except (urllib.error.URLError, ConnectionError, TimeoutError, ValueError):
            return []
        found = re.search(r"\[([\d, ]*)\]", body.get("checks", {}).get("partitions", {}).get("detail", ""))
        return [int(x) for x in found.group(1).split(",") if x.strip()] if found else []

    deadline = time.monotonic() + timeout
    while True:
        held = [await asyncio.to_thread(owned, port) for port in ports]
        if all(held) and sorted(sum(held, [])) == list(range(partitions)):
            return
        if any(p.poll() is not None for p in procs):
            raise RuntimeError("a worker exited while the group formed")
        if time.monotonic() > deadline:
            raise RuntimeError(f"the workers' partitions never covered all {partitions}: {held}")
        await asyncio.sleep(0.5)


async def _latencies(settings: Settings, id_prefix: str, since: float) -> list[float]:
    """Produce time (the input's Kafka timestamp) to window update (post-sentiment's processed_at)."""
    import json
    from datetime import datetime

    from stream.tools.replay import consume_records

    produced: dict[str, float] = {}
    async for rec in consume_records(settings, settings.topic_posts, max_idle=2.0):
        if rec["key"] and rec["key"].startswith(id_prefix):
            produced[rec["key"]] = rec["timestamp"] / 1000
    out = []
    async for rec in consume_records(settings, settings.topic_sentiment, max_idle=2.0):
        body = json.loads(rec["value"])
        if body["id"] in produced:
            done = datetime.fromisoformat(body["processed_at"].replace("Z", "+00:00")).timestamp()
            out.append(done - produced[body["id"]])
    return out


# ---------------------------------------------------------------------------- training


def bench_train(settings: Settings, steps: int, batch_size: int, words: int) -> dict[str, Any]:
    """Training samples/s of one optimizer step (forward, backward, AdamW), shared prefix vs plain, side by side."""
    import random
    import tempfile

    from model.labels import LABELS
    from sentinel.synthetic import synthetic_post
    from training.data import Example
    from training.trainer import TrainConfig, Trainer

    ensure_base_out_of_process(settings.base, settings.cache_dir)
    rng = random.Random(0)
    examples = []
    for i in range(batch_size * (steps + 2)):
        label = LABELS[i % 3]
        examples.append(Example(synthetic_post(rng, label, "BTC", words), label, i + 1))
    result: dict[str, Any] = {"batch_size": batch_size, "steps": steps, "words_per_post": words}
    for mode, shared in (("shared_prefix", True), ("full_sequence", False)):
        cfg = TrainConfig(base=settings.base, device=settings.device, dtype=settings.dtype, quantize=settings.quantize,
                          cache_dir=settings.cache_dir, batch_size=batch_size, shared_prefix=shared)
        with tempfile.TemporaryDirectory() as tmp:
            trainer = Trainer(cfg, examples, examples[:3], Path(tmp))
            trainer._setup(resume=False)  # noqa: SLF001 - the bench times the step itself, not validation
            device = trainer.device
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            batches = [trainer.encoded[i : i + batch_size] for i in range(0, len(trainer.encoded), batch_size)]

            def step(batch: Any, trainer: Trainer = trainer) -> None:
                trainer.loss(batch).backward()
                trainer.optimizer.step()
                trainer.optimizer.zero_grad(set_to_none=True)

            def steps_timed(batches: list[Any] = batches) -> None:
                for batch in batches[2 : 2 + steps]:
                    step(batch)

            for batch in batches[:2]:  # warm-up
                step(batch)
            _, seconds = timed(steps_timed, device)
            result[f"{mode}_samples_per_s"] = round(steps * batch_size / seconds, 2)
            if device.type == "cuda":
                result[f"{mode}_peak_gpu_mem_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20)
            result.update(device=trainer.info.device, dtype=trainer.info.dtype, quantize=trainer.info.quantize,
                          tokens_per_post=round(sum(len(trainer.codec.prefix_ids) + len(s) for s, _ in trainer.encoded) / len(trainer.encoded), 1))
    result["shared_prefix_speedup"] = round(result["shared_prefix_samples_per_s"] / result["full_sequence_samples_per_s"], 2)
    result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return result


def cpu_description() -> str:
    """The CPU model and the matmul-relevant instruction sets it has (bf16 speed depends on them)."""
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "unknown")
    flags = next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), [])
    wanted = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile") if f in flags]
    return f"{model}, {os.cpu_count()} cores, {' '.join(wanted) or 'no AVX2'}"
