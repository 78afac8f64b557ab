"""The whole pipeline on a GPU: `sentinel bench pipeline` with a Llama-2-7B-shaped model (random weights).

Run on a CUDA machine from the repository root, with the project's dependencies importable:
    python bench/gpu_pipeline.py TOKENIZER_DIR OUT_DIR [--posts N] [--rounds R] [--runs 64x1,64x2,256x1]
        [--tiny] [--py-spy S]
It builds the decoder as `bench/gpu_llama7b.py` does (nothing downloaded), then runs the pipeline
benchmark once per run (micro-batch size x worker processes, optionally posts spread over many
scopes, `64x1/300x100` for 300 assets x 100 channels, and extra environment for the workers,
`64x1@NAME=VALUE`): the embedded Tansu broker and redis-server, worker processes with the model
on the GPU, classifier-alone rounds interleaved with pipeline rounds on the same posts. Weights
are random, so labels mean nothing; the work per post (tokens, forward passes, window writes,
judging, publishing) is what a trained 7B adapter would do. `--tiny` builds a
small model instead (`--tiny-shape`, hidden size x layers), to try the script on a CPU; with
OMP_NUM_THREADS=1 its forward passes run on one core outside the interpreter lock, a stand-in for
an accelerator that a 2-core machine can compare code changes with. `--py-spy S` samples the first
worker's threads for S seconds from the start of each pipeline round (py-spy on PATH; with the
model in its own process, SENTINEL_MODEL_PROCESS, that is the worker's side only): round 1 only
the thread holding the interpreter lock (`--gil`), later rounds every thread, waiting or not
(`--idle`); collapsed stacks in OUT_DIR/pyspy-RUN-rROUND.txt (`bench/pyspy_summary.py` reads them).
`--worker-alone 3x3,300x100` first measures the worker's own side on this host with the keyword
scorer (`bench/scopes.py`), to tell the host's share of a gap from the model's; `--judging
3x3,300x100` measures judging alone in one process (`bench/judging.py`: CPU per scope judged), to
set this host's CPU beside another's.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("tokenizer_dir")
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--posts", type=int, default=8192)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--runs", default="64x1,64x2,256x1", help="micro-batch size x worker processes, one pipeline benchmark each")
    parser.add_argument("--deadline-s", type=float, default=420.0, help="start no new run after this many seconds")
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--tiny-shape", default="64x2", help="hidden size x layers of the --tiny model")
    parser.add_argument("--py-spy", type=float, default=0.0, help="sample the first worker for this many seconds each round")
    parser.add_argument("--worker-alone", default="", help="ASSETSxCHANNELS cases, comma-separated: the worker's own side with the "
                        "keyword scorer on this host first (bench/scopes.py, 1 post a second of event time, as the pipeline's posts)")
    parser.add_argument("--worker-alone-posts", type=int, default=20000)
    parser.add_argument("--judging", default="", help="ASSETSxCHANNELS cases, comma-separated: bench/judging.py on this host first")
    parser.add_argument("--judging-warmup", type=int, default=1500, help="bench/judging.py's --warmup (batches)")
    args = parser.parse_args()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()

    import torch

    target = Path("/tmp/llama2-7b-shaped")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.tiny:
        hidden, layers = (int(x) for x in args.tiny_shape.split("x"))
        build_tiny(args.tokenizer_dir, target, hidden, layers)
    else:
        from gpu_llama7b import build_random_llama7b

        build_random_llama7b(args.tokenizer_dir, target)
    print(f"model built and saved in {time.monotonic() - started:.1f}s", flush=True)

    from sentinel.benchmarks import bench_pipeline
    from sentinel.synthetic import synthetic_posts
    from stream.logs import setup_logging
    from stream.settings import Settings

    setup_logging("WARNING", False)
    posts = synthetic_posts(args.posts, words=40)
    results = []
    # The host: a sandboxed kernel (gVisor reports 4.4.0) makes every loopback round trip dearer.
    host = {"kernel": platform.release(), "cpus": os.cpu_count()}
    for case in filter(None, args.judging.split(",")):
        from judging import run_case as judging_case

        results.append({"run": f"judging {case}", **host, **judging_case(case, 300, 64, args.judging_warmup)})
        print(json.dumps(results[-1]), flush=True)
        (args.out_dir / "gpu_pipeline.json").write_text(json.dumps(results, indent=2))
    for case in filter(None, args.worker_alone.split(",")):
        results.append({"run": f"worker alone {case}", **host, **worker_alone(case, args.worker_alone_posts)})
        print(json.dumps(results[-1]), flush=True)
        (args.out_dir / "gpu_pipeline.json").write_text(json.dumps(results, indent=2))
    applied: dict[str, str] = {}
    for run in filter(None, args.runs.split(",")):
        if results and time.monotonic() - started > args.deadline_s:
            print(f"deadline: {run} not run", flush=True)
            break
        # "64x2" or "64x2@NAME=VALUE@...": extra environment for that run's workers (an A/B of a setting).
        # "64x1/300x100": that run's posts spread over 300 assets and 100 channels (bench_pipeline's `spread`).
        shape, *extra = run.split("@")
        shape, _, spread_text = shape.partition("/")
        batch, workers = (int(x) for x in shape.split("x"))
        spread = tuple(int(x) for x in spread_text.split("x")) if spread_text else None
        for name in applied:
            os.environ.pop(name, None)
        applied = dict(item.split("=", 1) for item in extra)
        # The worker processes read their settings from the environment (worker_env copies it).
        env = {"SENTINEL_BASE": str(target), "SENTINEL_ADAPTER": "none", "SENTINEL_DEVICE": device, "SENTINEL_DTYPE": "bfloat16",
               "SENTINEL_MAX_BATCH": str(batch), "SENTINEL_BATCH_SIZE": str(batch), "SENTINEL_LOG_LEVEL": "WARNING"}
        os.environ.update(env | applied)
        settings = Settings()
        t0 = time.monotonic()
        on_round = sampler(args.out_dir, run, args.py_spy) if args.py_spy else None
        result = bench_pipeline(settings, posts, latency_posts=400, rounds=args.rounds, workers=workers, on_round=on_round, spread=spread)
        result.update(run=run, seconds=round(time.monotonic() - t0, 1), device=device, model="llama2-7b-shaped" if not args.tiny else "tiny",
                      gpu=torch.cuda.get_device_name() if device == "cuda" else None, torch=torch.__version__, **host)
        print(json.dumps(result), flush=True)
        results.append(result)
        (args.out_dir / "gpu_pipeline.json").write_text(json.dumps(results, indent=2))
    print(f"done in {time.monotonic() - started:.1f}s", flush=True)


def worker_alone(case: str, posts: int) -> dict:
    """How fast this host's worker does its own side (windows, judging, publishing) with no model."""
    import tempfile

    from scopes import run_case

    assets, channels = (int(x) for x in case.split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        return run_case(posts, assets, channels, "sequential", 60.0, Path(tmp))


def sampler(out_dir: Path, run: str, seconds: float):
    """An on_round hook that starts py-spy on the first worker; it stops by itself after `seconds`."""
    binary = shutil.which("py-spy")
    if binary is None:
        raise SystemExit("--py-spy: no py-spy on PATH")
    name = run.replace("@", "_").replace("=", "-").replace("/", "_")

    def on_round(round_index: int, pids: list[int]) -> None:
        mode = "--gil" if round_index == 0 else "--idle"
        out = out_dir / f"pyspy-{name}-r{round_index + 1}.txt"
        # Non-blocking: pausing the worker for each sample would slow what is being measured.
        subprocess.Popen([binary, "record", "--pid", str(pids[0]), "--duration", str(int(seconds)), "--rate", "100", "--threads",
                          "--nonblocking", mode, "--format", "raw", "--output", str(out)], stdout=subprocess.DEVNULL)

    return on_round


def build_tiny(tokenizer_dir: str, target: Path, hidden: int = 64, layers: int = 2) -> None:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = LlamaConfig(hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=4,
                         vocab_size=len(tok), bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.eos_token_id)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(target)
    tok.save_pretrained(target)


if __name__ == "__main__":
    main()
