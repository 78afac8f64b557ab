"""Does it matter which thread loads the model? Voluntary context switches and cores busy, measured.

Two ways to use the classifier from a worker, each in a fresh process (an OpenMP pool, once made,
lives as long as its thread, so the two cannot share a process):

- `split`: the model is loaded on the main thread (its prefix cache is a forward pass, which makes
  the main thread's OpenMP pool) and every batch runs on another thread, as the worker did before
  `stream/model_thread.py`;
- `one_thread`: one thread loads the model and runs every batch (what `ModelThread` does now).

Each process loads the classifier as `sentinel bench classify` does (the environment's settings),
classifies 64 warm-up posts, then `--posts` synthetic 40-word posts (sentinel/synthetic.py) in
micro-batches of 64 on the classifying thread, as the worker calls it. Over that timed part it
reports, from getrusage(RUSAGE_SELF) (all threads of the process): voluntary and involuntary
context switches per second and cores busy (user + system CPU seconds per wall second), and per
thread (/proc/self/task) the CPU and voluntary switches of the busiest threads. The modes
alternate, `--pairs` times each, one process at a time.

    .venv/bin/python bench/model_threads.py --pairs 2 > docs/results/model_threads.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

MODES = ("one_thread", "split")


def thread_stats() -> dict[int, dict[str, Any]]:
    """Per thread of this process: name, CPU seconds, voluntary context switches."""
    ticks = os.sysconf("SC_CLK_TCK")
    out = {}
    for task in Path("/proc/self/task").iterdir():
        try:
            stat = (task / "stat").read_text()
            status = (task / "status").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        cpu = (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
        voluntary = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("voluntary_ctxt_switches"))
        out[int(task.name)] = {"name": name, "cpu_s": cpu, "voluntary": voluntary}
    return out


def measure(mode: str, posts: int, batch: int) -> dict[str, Any]:
    from model.classifier import Classifier
    from sentinel.synthetic import synthetic_posts
    from stream.settings import Settings, get_settings

    settings = Settings.model_validate({**get_settings().model_dump(), "batch_size": batch})
    texts = synthetic_posts(posts, words=40)
    warm = synthetic_posts(batch, words=40, seed=1)
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="classify")
    main_tid = threading.get_native_id()

    def classify_all() -> None:
        for i in range(0, len(texts), batch):
            classifier.classify(texts[i : i + batch])

    if mode == "split":
        classifier = Classifier.load(settings)
    else:
        classifier = pool.submit(Classifier.load, settings).result()
    pool.submit(classifier.classify, warm).result()
    classify_tid = pool.submit(threading.get_native_id).result()

    threads0, usage0, t0 = thread_stats(), resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
    pool.submit(classify_all).result()
    wall = time.monotonic() - t0
    usage1, threads1 = resource.getrusage(resource.RUSAGE_SELF), thread_stats()

    per_thread = []
    for tid, after in threads1.items():
        before = threads0.get(tid, {"cpu_s": 0.0, "voluntary": 0})
        role = "main" if tid == main_tid else "classifying" if tid == classify_tid else "other"
        per_thread.append({"tid": tid, "name": after["name"], "role": role,
                           "cores": round((after["cpu_s"] - before["cpu_s"]) / wall, 2),
                           "voluntary_switches": after["voluntary"] - before["voluntary"]})
    per_thread.sort(key=lambda t: t["cores"], reverse=True)
    import torch

    return {
        "mode": mode,
        "posts": posts,
        "wall_s": round(wall, 2),
        "posts_per_s": round(posts / wall, 2),
        "voluntary_switches_per_s": round((usage1.ru_nvcsw - usage0.ru_nvcsw) / wall, 1),
        "involuntary_switches_per_s": round((usage1.ru_nivcsw - usage0.ru_nivcsw) / wall, 1),
        "cores_busy": round((usage1.ru_utime + usage1.ru_stime - usage0.ru_utime - usage0.ru_stime) / wall, 3),
        "busiest_threads": per_thread[:4],
        "threads_in_process": len(threads1),
        "torch_threads": torch.get_num_threads(),
        "dtype": classifier.info.dtype,
        "model": classifier.info.id,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--posts", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--pairs", type=int, default=2, help="runs of each mode, alternating")
    parser.add_argument("--mode", choices=MODES, help=argparse.SUPPRESS)  # one measurement, in this process
    args = parser.parse_args()
    if args.mode:
        print(json.dumps(measure(args.mode, args.posts, args.batch_size)))
        return
    from sentinel.benchmarks import ensure_base_out_of_process
    from stream.settings import get_settings

    settings = get_settings()
    ensure_base_out_of_process(settings.base, settings.cache_dir)
    runs = []
    for pair in range(args.pairs):
        for mode in (MODES if pair % 2 == 0 else MODES[::-1]):
            done = subprocess.run([sys.executable, __file__, "--mode", mode, "--posts", str(args.posts), "--batch-size", str(args.batch_size)],
                                  check=True, capture_output=True, text=True)
            runs.append({"pair": pair + 1, **json.loads(done.stdout.strip().splitlines()[-1])})
            print(f"{mode}: {runs[-1]['posts_per_s']} posts/s, {runs[-1]['voluntary_switches_per_s']} voluntary switches/s, "
                  f"{runs[-1]['cores_busy']} cores busy", file=sys.stderr)
    summary = {}
    for mode in MODES:
        mine = [r for r in runs if r["mode"] == mode]
        summary[mode] = {key: [min(r[key] for r in mine), max(r[key] for r in mine)]
                         for key in ("posts_per_s", "voluntary_switches_per_s", "cores_busy")}
    from sentinel.benchmarks import cpu_description

    print(json.dumps({"command": " ".join(["bench/model_threads.py", *sys.argv[1:]]), "cpu": cpu_description(),
                      "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "summary_min_max": summary, "runs": runs}, indent=1))


if __name__ == "__main__":
    main()
