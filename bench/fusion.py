"""Does fusing the shipped adapter's probabilities with a second, cheap signal lift the Discord flag
curve? (issue 17)

The flag curve (`bench/flag_curve.py`) ranks messages by p(neutral), lowest first, and counts the
positive and negative ones ranked above the N-th neutral message flagged. This script fuses the
shipped adapter's three label probabilities with a second signal by a per-class log-linear pool,

    log p_fused(c) = log p_model(c) + w * log p_second(c) + const      (c in LABELS)

and measures the fused model's curve and report. Second signals, each built from the training
splits only (`train-*.csv`, the shipped recipe's files; never `select`, never `test`):
- `lexicon`: `model/lexicon.py`'s keyword probabilities, as they are (nothing trained);
- `bow`: a class-balanced logistic regression on hashed word 1-2-grams and character 2-5-grams
  (torch, an EmbeddingBag as a sparse linear layer), trained on every training split of the recipe;
- `bow-indomain`: the same trained on the in-domain training splits only (Discord and voices);
- `probe`: a class-balanced logistic regression on the adapter's last-token hidden state (the state
  its label logits are read from), trained on the training splits.
For each signal, w is chosen on `select.csv` by two rules fixed before any test figure was read:
- rule A: on select's Discord and voices rows, the most positive and negative messages found before
  the 6th neutral one flagged, ties by their macro F1, then the smaller w;
- rule B: rule A among the w that keep select's TFNS rows within 0.01 of the model's weighted F1.
w = 0 is the shipped model alone, so "no lift" can be chosen. The test splits are read only at the
chosen w (once per rule where the rules differ). The second models' settings are fixed (constants
below), not tuned. Predicted label: the fused argmax; the flag curve ranks by fused p(neutral).
Also written (added after the first read of the test splits; rules, settings and w unchanged): for each fused variant, a paired bootstrap against the model alone on the Discord test
split (found at 6 neutral flagged, macro F1), and the `bow` variant again at two more seeds of its
own training (w chosen by rule A each time), to see whether its figures are the seed's.

    .venv/bin/python bench/fusion.py score SPLITS CACHE      # the adapter's probs and hidden states (once)
    .venv/bin/python bench/fusion.py fuse SPLITS CACHE --out docs/results/indomain/fusion.json

SPLITS is `sentinel splits`'s folder. `score` runs the shipped adapter (`model.classifier.Classifier`,
the settings and the batches `sentinel eval` uses, so its probabilities equal `sentinel eval
--predictions`'s) on every split and writes CACHE/<split>.npz (probs [n, 3] in LABELS order, hidden
[n, d]). `fuse` needs no model: it reads SPLITS and CACHE only, and prints a markdown table.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from model.fusion import fuse  # noqa: E402
from model.labels import LABELS  # noqa: E402
from model.ngram import NgramHead  # noqa: E402
from model.report import classification_report  # noqa: E402
from training.ngram import (  # noqa: E402  the product's head, training, report and rule (no copies here)
    BATCH as BOW_BATCH, BUCKETS, DECAY as BOW_DECAY, EPOCHS as BOW_EPOCHS, LR as BOW_LR, SELECT_BUDGET, SEED,
    WEIGHTS, class_weights, choose_weight, flag_curve, label_ids, report, sweep_weights, train_head,
)

# The training splits, each once: the shipped recipe's files (model/adapters/default/model_card.json)
# and both third rounds (session 15), which the adapter never trained on. Never select, never a test split.
TRAIN_SPLITS = ("train-tfns", "train-indomain", "train-discord-round2", "train-discord-round3",
                "train-voices-round2", "train-voices-round3")
INDOMAIN_TRAIN = TRAIN_SPLITS[1:]
EVAL_SPLITS = ("select", "test-discord", "test-voices", "test-tfns")
# The second models' settings, fixed a priori (the n-gram head's, `bow`, are training/ngram.py's).
PROBE_EPOCHS, PROBE_LR, PROBE_BATCH, PROBE_DECAY = 30, 0.01, 128, 1e-3
BOW_OTHER_SEEDS = (43, 44)

@dataclass
class Split:
    texts: list[str]
    labels: list[str]
    sources: list[str]


# ---------------------------------------------------------------------------------------------- data


def read_split(splits: Path, name: str) -> Split:
    """A split's texts, gold labels and sources, as `sentinel eval --format csv` reads them."""
    from training.data import load_examples

    examples = load_examples(splits / f"{name}.csv", "csv").examples
    with (splits / f"{name}.csv").open(newline="") as handle:
        sources = [row["source"] for row in csv.DictReader(handle)]
    if len(sources) != len(examples):
        raise SystemExit(f"{name}: {len(examples)} examples but {len(sources)} csv rows")
    return Split([e.text for e in examples], [e.label for e in examples], sources)


# ------------------------------------------------------------------------------------- scoring


def score(splits: Path, cache: Path, names: Sequence[str]) -> dict[str, float]:
    """Run the shipped adapter once over each split; cache its probabilities and last hidden states."""
    from model.classifier import Classifier, suffix_hidden
    from stream.settings import Settings

    classifier = Classifier.load(Settings())
    cache.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}
    for name in names:
        start = time.perf_counter()
        probs, hidden = score_texts(classifier, suffix_hidden, read_split(splits, name).texts)
        np.savez(cache / f"{name}.npz", probs=probs, hidden=hidden)
        seconds[name] = round(time.perf_counter() - start, 1)
        print(f"{name}: {len(probs)} rows, {seconds[name]} s", file=sys.stderr)
    (cache / "score-info.json").write_text(json.dumps({"model": classifier.info.id, "dtype": classifier.info.dtype, "seconds": seconds}))
    return seconds


@torch.inference_mode()
def score_texts(classifier: Any, suffix_hidden: Callable, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities over LABELS (as `Classifier.label_probs`) and the hidden state they are read from."""
    suffixes = classifier.codec.suffix_ids_many(classifier.tokenizer, texts)
    probs = np.zeros((len(texts), 3), dtype=np.float32)
    hidden = np.zeros((len(texts), classifier._label_head.shape[1]), dtype=np.float32)
    for chunk in eval_batches([len(s) for s in suffixes], classifier.batch_size):
        state = suffix_hidden(classifier._decoder, classifier._prefix_kv, [suffixes[i] for i in chunk],
                              classifier.tokenizer.pad_token_id, classifier.device).float()
        probs[chunk] = torch.softmax(state @ classifier._label_head.T, dim=-1).cpu().numpy()
        hidden[chunk] = state.cpu().numpy()
    return probs, hidden


def eval_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """The batches `sentinel eval` makes (cli.classify_all, then Classifier.classify_encoded): the file
    cut into chunks of 4 batches in file order, each sorted by length. In bf16 a post's probabilities
    move with its batch-mates' padding, so the same batches are needed to reproduce its figures."""
    batches = []
    for first in range(0, len(lengths), batch_size * 4):
        chunk = sorted(range(first, min(first + batch_size * 4, len(lengths))), key=lambda i: lengths[i])
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    return batches


def load_cache(cache: Path, name: str) -> tuple[np.ndarray, np.ndarray]:
    data = np.load(cache / f"{name}.npz")
    return data["probs"].astype(np.float64), data["hidden"]


# ------------------------------------------------------------------------------ second signals


def lexicon_probs(texts: Sequence[str]) -> np.ndarray:
    from model.lexicon import judge

    return np.array([[judge(t).probs[label] for label in LABELS] for t in texts])


def train_bow(texts: list[str], y: np.ndarray, seed: int = SEED) -> Callable[[Sequence[str]], np.ndarray]:
    """The n-gram head (training/ngram.py's train_head, the product's); returns its predict_proba."""
    head: NgramHead = train_head(texts, [LABELS[i] for i in y], seed)
    return head.probs


def train_probe(hidden: np.ndarray, y: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """A class-balanced logistic regression on standardised hidden states; returns its predict_proba."""
    torch.manual_seed(SEED)
    mean, std = hidden.mean(0), hidden.std(0) + 1e-6
    x = torch.tensor((hidden - mean) / std, dtype=torch.float32)
    layer = torch.nn.Linear(x.shape[1], 3)
    loss_fn = torch.nn.CrossEntropyLoss(weight=class_weights(y))
    opt = torch.optim.Adam(layer.parameters(), lr=PROBE_LR, weight_decay=PROBE_DECAY)
    target = torch.tensor(y)
    for _ in range(PROBE_EPOCHS):
        for batch in torch.randperm(len(x)).split(PROBE_BATCH):
            loss = loss_fn(layer(x[batch]), target[batch])
            opt.zero_grad()
            loss.backward()
            opt.step()

    @torch.no_grad()
    def predict(states: np.ndarray) -> np.ndarray:
        z = torch.tensor((states - mean) / std, dtype=torch.float32)
        return torch.softmax(layer(z), dim=-1).double().numpy()

    return predict


# ------------------------------------------------------------------------------------ measuring


def rows_of(split: Split, keep: Callable[[str], bool]) -> np.ndarray:
    return np.array([i for i, s in enumerate(split.sources) if keep(s)])


def paired_bootstrap(p_a: np.ndarray, p_b: np.ndarray, labels: Sequence[str], resamples: int = 2000) -> dict:
    """95% intervals of B minus A (found at 6 neutral flagged, macro F1), rows resampled the same for both."""
    rng = np.random.default_rng(0)
    gold = np.array(labels)
    diffs: dict[str, list[float]] = {"found_at_6": [], "f1_macro": []}
    for _ in range(resamples):
        idx = rng.integers(0, len(gold), len(gold))
        ra, rb = (report_light(p[idx], gold[idx]) for p in (p_a, p_b))
        for key in diffs:
            diffs[key].append(rb[key] - ra[key])
    return {k: {"mean": round(float(np.mean(v)), 3), "ci95": [round(float(np.percentile(v, q)), 3) for q in (2.5, 97.5)]}
            for k, v in diffs.items()}


def report_light(probs: np.ndarray, gold: np.ndarray) -> dict[str, float]:
    pred = [LABELS[i] for i in probs.argmax(1)]
    return {"found_at_6": flag_curve(probs, list(gold), (SELECT_BUDGET,)).get(str(SELECT_BUDGET), 0),
            "f1_macro": classification_report(list(gold), pred)["f1_macro"]}


def bow_seeds(splits: Path, data: dict[str, Split], model: dict[str, np.ndarray], seeds: Sequence[int]) -> dict:
    """The `bow` variant again at other seeds of its own training (rule A on select each time)."""
    train = {n: read_split(splits, n) for n in TRAIN_SPLITS}
    texts = [t for n in TRAIN_SPLITS for t in train[n].texts]
    y = label_ids([l for n in TRAIN_SPLITS for l in train[n].labels])
    out = {}
    for seed in seeds:
        bow = train_bow(texts, y, seed)
        p2 = {n: bow(data[n].texts) for n in EVAL_SPLITS}
        sweep = sweep_weights(model["select"], p2["select"], data["select"].labels, data["select"].sources)
        w = choose_weight(sweep, False)
        fused = {n: fuse(model[n], p2[n], w) for n in EVAL_SPLITS[1:]}
        out[str(seed)] = {"w": w, "select": next(s for s in sweep if s["w"] == w),
                          **{n: report(fused[n], data[n].labels) for n in EVAL_SPLITS[1:]}}
    return out


def timed_per_post(fn: Callable[[], object], n: int) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) / n * 1e6


# --------------------------------------------------------------------------------------- main


def build_signals(splits: Path, cache: Path, data: dict[str, Split]) -> tuple[dict[str, dict[str, np.ndarray]], dict]:
    """Each second signal's probabilities on select and the test splits, and its build facts."""
    train = {n: read_split(splits, n) for n in TRAIN_SPLITS}
    texts = [t for n in TRAIN_SPLITS for t in train[n].texts]
    y = label_ids([l for n in TRAIN_SPLITS for l in train[n].labels])
    in_texts = [t for n in INDOMAIN_TRAIN for t in train[n].texts]
    in_y = label_ids([l for n in INDOMAIN_TRAIN for l in train[n].labels])
    hidden = np.concatenate([load_cache(cache, n)[1] for n in TRAIN_SPLITS])
    facts: dict = {"train_rows": len(texts), "train_rows_indomain": len(in_texts),
                   "train_label_counts": np.bincount(y, minlength=3).tolist()}
    start = time.perf_counter()
    bow = train_bow(texts, y)
    facts["bow_train_s"] = round(time.perf_counter() - start, 1)
    start = time.perf_counter()
    bow_in = train_bow(in_texts, in_y)
    facts["bow_indomain_train_s"] = round(time.perf_counter() - start, 1)
    start = time.perf_counter()
    probe = train_probe(hidden, y)
    facts["probe_train_s"] = round(time.perf_counter() - start, 1)
    signals: dict[str, dict[str, np.ndarray]] = {"lexicon": {}, "bow": {}, "bow-indomain": {}, "probe": {}}
    for name, split in data.items():
        signals["lexicon"][name] = lexicon_probs(split.texts)
        signals["bow"][name] = bow(split.texts)
        signals["bow-indomain"][name] = bow_in(split.texts)
        signals["probe"][name] = probe(load_cache(cache, name)[1])
    sample, states = data["test-discord"].texts, load_cache(cache, "test-discord")[1]
    facts["cost_us_per_post_on_test_discord"] = {  # one thread of this machine, the whole split as one batch
        "lexicon": round(timed_per_post(lambda: lexicon_probs(sample), len(sample)), 1),
        "bow": round(timed_per_post(lambda: bow(sample), len(sample)), 1),
        "probe": round(timed_per_post(lambda: probe(states), len(sample)), 1),
    }
    return signals, facts


def run_fuse(splits: Path, cache: Path) -> dict:
    data = {n: read_split(splits, n) for n in EVAL_SPLITS}
    model = {n: load_cache(cache, n)[0] for n in EVAL_SPLITS}
    signals, facts = build_signals(splits, cache, data)
    sel = data["select"]
    indomain = rows_of(sel, lambda s: s in ("discord", "voices"))
    discord = rows_of(sel, lambda s: s == "discord")
    tfns = rows_of(sel, lambda s: s == "tfns")
    out: dict = {"what": __doc__.split("\n\n")[0], "settings": {
        "weights_swept": WEIGHTS, "select_budget": SELECT_BUDGET, "train_splits": TRAIN_SPLITS,
        "bow": {"buckets": BUCKETS, "epochs": BOW_EPOCHS, "lr": BOW_LR, "batch": BOW_BATCH, "weight_decay": BOW_DECAY},
        "probe": {"epochs": PROBE_EPOCHS, "lr": PROBE_LR, "batch": PROBE_BATCH, "weight_decay": PROBE_DECAY}, "seed": SEED},
        "build": facts, "variants": {}}
    info = cache / "score-info.json"
    out["score"] = json.loads(info.read_text()) if info.exists() else None
    out["commands"] = [line.strip() for line in __doc__.splitlines() if line.strip().startswith(".venv/bin/python bench/fusion.py")]
    variants = {"model": None, **signals}
    for name, signal in variants.items():
        p2 = signal or {n: np.full_like(model[n], 1 / 3) for n in EVAL_SPLITS}
        sweep = sweep_weights(model["select"], p2["select"], sel.labels, sel.sources) if signal else []
        entry: dict = {"select_sweep": sweep}
        for rule, guard in (("rule_a", False), ("rule_b_tfns_guard", True)):
            w = choose_weight(sweep, guard) if signal else 0.0
            if rule == "rule_b_tfns_guard" and (not signal or w == entry["rule_a"]["w"]):
                entry[rule] = {"w": w, "same_as_rule_a": True}
                continue
            fused = {n: fuse(model[n], p2[n], w) for n in EVAL_SPLITS}
            entry[rule] = {"w": w, **{f"select_{k}": report(fused["select"][idx], [sel.labels[i] for i in idx])
                                      for k, idx in (("indomain", indomain), ("discord", discord), ("tfns", tfns))},
                           **{n: report(fused[n], data[n].labels) for n in EVAL_SPLITS[1:]}}
            if signal is not None and w > 0:
                entry[rule]["bootstrap_test_discord_vs_model"] = paired_bootstrap(
                    model["test-discord"], fused["test-discord"], data["test-discord"].labels)
        if signal is not None:  # the second signal alone, on select only (the test splits are read at the chosen w alone)
            entry["alone_select"] = {k: report(p2["select"][idx], [sel.labels[i] for i in idx])
                                     for k, idx in (("indomain", indomain), ("discord", discord), ("tfns", tfns))}
        out["variants"][name] = entry
    out["bow_other_seeds"] = bow_seeds(splits, data, model, BOW_OTHER_SEEDS)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("step", choices=("score", "fuse"))
    parser.add_argument("splits", type=Path)
    parser.add_argument("cache", type=Path)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--only", nargs="*", help="score: these splits only")
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    if args.step == "score":
        score(args.splits, args.cache, args.only or (*EVAL_SPLITS, *TRAIN_SPLITS))
        return
    start = time.perf_counter()
    result = run_fuse(args.splits, args.cache)
    result["build"]["fuse_wall_s"] = round(time.perf_counter() - start, 1)
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(table(result))


def table(result: dict) -> str:
    """One markdown row per variant and rule: w, select figures, then the test figures."""
    head = ("| variant | w | select in-domain found@6 / macro F1 | select Discord found@6 | Discord found at 3/6/10/15/20/30 "
            "| Discord pos P/R | Discord neg P/R | Discord neutral P | Discord macro F1 | neutral flagged | voices found@3/6 "
            "| voices macro F1 | TFNS wF1 |\n" + "|---" * 13 + "|")
    lines = [head]
    for name, entry in result["variants"].items():
        for rule in ("rule_a", "rule_b_tfns_guard"):
            r = entry[rule]
            if r.get("same_as_rule_a"):
                continue
            d, v, t = r["test-discord"], r["test-voices"], r["test-tfns"]
            pc = d["per_class"]
            lines.append(" | ".join([
                f"| {name} ({rule[:6]})", f"{r['w']}",
                f"{r['select_indomain']['found_at_neutral_flagged']['6']} / {r['select_indomain']['f1_macro']:.3f}",
                f"{r['select_discord']['found_at_neutral_flagged']['6']}",
                "/".join(str(x) for x in d["found_at_neutral_flagged"].values()),
                f"{pc['positive']['precision']:.2f}/{pc['positive']['recall']:.2f}",
                f"{pc['negative']['precision']:.2f}/{pc['negative']['recall']:.2f}", f"{pc['neutral']['precision']:.3f}",
                f"{d['f1_macro']:.3f}", f"{d['neutral_flagged']}",
                f"{v['found_at_neutral_flagged']['3']}/{v['found_at_neutral_flagged']['6']}", f"{v['f1_macro']:.3f}",
                f"{t['f1_weighted']:.3f} |"]))
    for seed, r in result.get("bow_other_seeds", {}).items():
        d = r["test-discord"]
        lines.append(f"| bow seed {seed} (rule_a) | {r['w']} | {r['select']['found_at_6']} / {r['select']['f1_macro']:.3f} "
                     f"| {r['select']['discord_found_at_6']} | {'/'.join(str(x) for x in d['found_at_neutral_flagged'].values())} "
                     f"| | | {d['per_class']['neutral']['precision']:.3f} | {d['f1_macro']:.3f} | {d['neutral_flagged']} | "
                     f"| {r['test-voices']['f1_macro']:.3f} | {r['test-tfns']['f1_weighted']:.3f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
