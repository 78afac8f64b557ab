"""Issue 17's whole check for one candidate adapter, in one command: train an adapter card's recipe
(on any base), evaluate it on the four held-out splits, and say which of the issue's targets it meets.

    .venv/bin/sentinel splits --out SPLITS --tfns ../shared/data/tfns/sent_train.csv \\
        --export ../shared/data/seed/meritcircle_cleaned_discord.csv --research ../shared/data/seed/dataset.json
    .venv/bin/python bench/indomain_run.py SPLITS RUN                  # the shipped recipe on the default base
    .venv/bin/python bench/indomain_run.py SPLITS RUN --base /models/Llama-2-7b-hf --quantize 4bit --device cuda
    .venv/bin/python bench/indomain_run.py SPLITS RUN --adapter DIR    # an adapter trained before: evaluate only

The recipe is the `sentinel train` line of the card's `commands` (`--card`, the shipped adapter's by
default), with SPLITS and ADAPTER_DIR filled in; `--base`, `--quantize`, `--device` and `--dtype`
are added to training and to every evaluation, and `--train-arg` adds anything else to training
(`--train-arg=--seed=43`). Writes under RUN:
- `adapter/` (unless `--adapter`) and `train.log`;
- `<split>.json` (`sentinel eval --json`) and `<split>.jsonl` (`--predictions`) for select,
  test-tfns, test-discord and test-voices;
- `label-bias.json` (`bench/label_bias.py`: the select figures per source), `flag-curve.json`
  (`bench/flag_curve.py` on test-discord);
- `targets.json`: each target, its measured value and whether it is met.
A step whose output exists is not run again, so an interrupted run resumes where it stopped; an
interrupted training resumes from its last checkpoint (every `--eval-every` steps) with `--resume`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import shlex
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.flag_curve import summary as flag_summary  # noqa: E402

SPLITS = ("select", "test-tfns", "test-discord", "test-voices")
SHIPPED_CARD = ROOT / "model" / "adapters" / "default" / "model_card.json"
MODEL_OPTIONS = ("base", "quantize", "device", "dtype")


@dataclass(frozen=True)
class Target:
    name: str
    split: str  # the test split whose `sentinel eval --json` report holds it
    path: tuple[str, ...]  # where in that report
    floor: float


# Issue 17's targets, on the held-out test splits.
TARGETS = (
    Target("Discord negative precision", "test-discord", ("per_class", "negative", "precision"), 0.6),
    Target("Discord negative recall", "test-discord", ("per_class", "negative", "recall"), 0.6),
    Target("Discord positive precision", "test-discord", ("per_class", "positive", "precision"), 0.6),
    Target("Discord positive recall", "test-discord", ("per_class", "positive", "recall"), 0.6),
    Target("Discord macro F1", "test-discord", ("f1_macro",), 0.65),
    Target("Discord neutral precision", "test-discord", ("per_class", "neutral", "precision"), 0.95),
    Target("TFNS weighted F1", "test-tfns", ("f1_weighted",), 0.87),
)


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a proportion k/n (95% by default): honest at n = 8 or 10."""
    p = k / n
    centre, half = p + z * z / (2 * n), z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (centre - half) / (1 + z * z / n), (centre + half) / (1 + z * z / n)


def counts(report: dict[str, Any], label: str, kind: str) -> tuple[int, int] | None:
    """(hits, trials) behind a per-class precision or recall, from the report's confusion matrix
    (gold label -> predicted label -> count)."""
    confusion = report.get("confusion")
    if not confusion or label not in confusion:
        return None
    hits = confusion[label][label]
    trials = sum(confusion[label].values()) if kind == "recall" else sum(row.get(label, 0) for row in confusion.values())
    return hits, trials


def check(reports: dict[str, dict[str, Any]], targets: tuple[Target, ...] = TARGETS) -> list[dict[str, Any]]:
    """Each target with its measured value (None where the report lacks it), whether it is met, and
    for a precision or recall the counts behind it and their 95% Wilson interval."""
    out = []
    for target in targets:
        report = reports.get(target.split, {})
        value: Any = report
        for key in target.path:
            value = value.get(key) if isinstance(value, dict) else None
        found = asdict(target) | {"value": value, "met": value is not None and value >= target.floor}
        if target.path[0] == "per_class" and (hk := counts(report, target.path[1], target.path[2])) and hk[1]:
            found |= {"hits": hk[0], "of": hk[1], "interval_95": [round(x, 3) for x in wilson(*hk)]}
        out.append(found)
    return out


def recipe(card: dict[str, Any], splits: Path, adapter: Path) -> list[str]:
    """The card's `sentinel train` command as arguments, SPLITS and ADAPTER_DIR filled in."""
    lines = [c for c in card.get("commands", []) if c.startswith("sentinel train ")]
    if len(lines) != 1:
        raise SystemExit(f"the card's commands hold {len(lines)} `sentinel train` lines; one is needed")
    words = shlex.split(lines[0])[2:]
    return [str(adapter) if w == "ADAPTER_DIR" else str(splits / w[len("SPLITS/"):]) if w.startswith("SPLITS/") else w for w in words]


def resuming(adapter: Path) -> list[str]:
    """`--resume` where an interrupted training left a checkpoint: a run on a slow CPU can be stopped
    and taken up again (in a later session) from its last validation, ending as one run would."""
    from training.trainer import checkpoint_to_resume

    return ["--resume"] if checkpoint_to_resume(adapter) is not None else []


def sentinel(args: list[str], log: Path, stdout: Path | None = None) -> None:
    """Run one `sentinel` command: its messages go to `log`, its output to `stdout` (else `log`)."""
    print("+ sentinel " + shlex.join(args), flush=True)
    run_into([sys.executable, "-m", "sentinel.cli", *args], log, stdout, name=f"sentinel {args[0]}")


def run_into(command: list[str], log: Path, stdout: Path | None = None, name: str = "") -> None:
    """Run `command` from the project's root, its stderr appended to `log` and its stdout written to
    `stdout` (else `log`). The output is written aside (`.part`) and renamed into place once the
    command succeeds, so a run killed meanwhile leaves no half report to be taken for a finished step."""
    partial = stdout.with_name(stdout.name + ".part") if stdout else None
    with log.open("a") as err, (partial.open("w") if partial else contextlib.nullcontext(err)) as out:
        done = subprocess.run(command, cwd=ROOT, stdout=out, stderr=err)
    if done.returncode:
        if partial:
            partial.unlink(missing_ok=True)
        raise SystemExit(f"{name or command[0]} failed (exit {done.returncode}); see {log}")
    if partial and stdout:
        partial.replace(stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("splits", type=Path, help="the folder `sentinel splits` wrote")
    parser.add_argument("run", type=Path, help="where this run's outputs go")
    parser.add_argument("--card", type=Path, default=SHIPPED_CARD, help="the adapter card whose recipe is trained")
    parser.add_argument("--adapter", type=Path, help="evaluate this adapter instead of training one")
    parser.add_argument("--train-arg", action="append", default=[], help="one more `sentinel train` argument (repeatable)")
    for name in MODEL_OPTIONS:
        parser.add_argument(f"--{name}", help=f"`sentinel train/eval --{name}`")
    args = parser.parse_args()
    args.splits, args.run = args.splits.resolve(), args.run.resolve()  # the commands run from the project's root
    missing = [s for s in SPLITS if not (args.splits / f"{s}.csv").is_file()]
    if missing:
        raise SystemExit(f"{args.splits} lacks {', '.join(s + '.csv' for s in missing)}: run the card's `sentinel splits` first")
    args.run.mkdir(parents=True, exist_ok=True)
    model = [f"--{name}={getattr(args, name)}" for name in MODEL_OPTIONS if getattr(args, name)]

    adapter = args.adapter.resolve() if args.adapter else args.run / "adapter"
    if args.adapter is None and not (adapter / "model_card.json").is_file():
        card = json.loads(args.card.read_text())
        sentinel(["train", *recipe(card, args.splits, adapter), *model, *args.train_arg, *resuming(adapter)], args.run / "train.log")

    reports = {}
    for split in SPLITS:
        report, predictions = args.run / f"{split}.json", args.run / f"{split}.jsonl"
        if not report.is_file() or not predictions.is_file():
            sentinel(["eval", "--data", str(args.splits / f"{split}.csv"), "--format", "csv", "--adapter", str(adapter), "--json",
                      "--predictions", str(predictions), *model], args.run / f"{split}.err", stdout=report)
        reports[split] = json.loads(report.read_text())

    bias = subprocess.run([sys.executable, str(ROOT / "bench" / "label_bias.py"), str(args.splits), str(args.run)],
                          cwd=ROOT, capture_output=True, text=True, check=True).stdout
    (args.run / "label-bias.json").write_text(bias)
    rows = [json.loads(line) for line in (args.run / "test-discord.jsonl").read_text().splitlines()]
    curve = flag_summary(rows)
    (args.run / "flag-curve.json").write_text(json.dumps(curve, indent=1) + "\n")
    results = check(reports)
    (args.run / "targets.json").write_text(json.dumps({"adapter": str(adapter), "targets": results}, indent=1) + "\n")

    width = max(len(t["name"]) for t in results)
    for t in results:
        shown = "absent" if t["value"] is None else f"{t['value']:.3f}"
        if "of" in t:
            shown += f" ({t['hits']} of {t['of']}; 95% {t['interval_95'][0]:.2f}-{t['interval_95'][1]:.2f})"
        print(f"{t['name']:<{width}}  needed {t['floor']:.2f}  measured {shown}  {'met' if t['met'] else 'NOT met'}")
    found = {budget: c["found"] for budget, c in curve["by_neutral_flagged"].items()}
    print(f"Discord positive and negative messages found ({curve['non_neutral']} in all), by neutral ones flagged: {found}")
    print(f"{sum(t['met'] for t in results)} of {len(results)} targets met; outputs in {args.run}")


if __name__ == "__main__":
    main()
