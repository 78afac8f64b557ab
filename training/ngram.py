"""Training the n-gram head (model/ngram.py) and choosing its fusion weight (model/fusion.py).

Both are `bench/fusion.py`'s, moved here so the product and the bench run the same code:
- train_head: a class-balanced multinomial logistic regression on the hashed features, trained as
  a torch EmbeddingBag (a sparse linear layer) with Adam; the settings were fixed a priori, not tuned;
- choose_weight: rule B, fixed before any test figure was read. On select's Discord and voices rows,
  the w that finds the most positive and negative messages before the SELECT_BUDGET-th neutral one
  is flagged (ranked by fused p(neutral)), ties by their macro F1, then the smaller w; among the w
  that keep select's TFNS rows within TFNS_GUARD weighted F1 of w = 0 (the model alone).
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from model.fusion import fuse
from model.labels import LABELS
from model.ngram import BUCKETS, NgramHead, features
from model.scorer import ModelInfo
from model.report import BUDGETS, classification_report
from model.report import flag_curve as flag_counts
from training.data import DataError, Example, load_examples
from training.indomain import sha256

EPOCHS, LR, BATCH, DECAY = 8, 0.02, 64, 1e-6
SEED = 42
WEIGHTS = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0)
SELECT_BUDGET = 6
TFNS_GUARD = 0.01


def label_ids(labels: Sequence[str]) -> np.ndarray:
    return np.array([LABELS.index(label) for label in labels])  # type: ignore[arg-type]


def class_weights(y: np.ndarray) -> torch.Tensor:
    """Inverse class frequency (n / (3 * count)): neutral is most of every split."""
    counts = np.bincount(y, minlength=3)
    return torch.tensor(len(y) / (3 * np.maximum(counts, 1)), dtype=torch.float32)


def bag_rows(rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """EmbeddingBag inputs (flat ids, offsets, per-id weights) with each row L2-normalised, as
    NgramHead.logits applies them."""
    ids = torch.tensor([i for row in rows for i in row], dtype=torch.long)
    offsets = torch.tensor(np.cumsum([0] + [len(r) for r in rows[:-1]]), dtype=torch.long)
    weights = torch.cat([torch.full((len(r),), 1 / math.sqrt(len(r))) for r in rows])
    return ids, offsets, weights


def train_head(texts: Sequence[str], labels: Sequence[str], seed: int = SEED, buckets: int = BUCKETS,
               on_epoch: Callable[[int], None] | None = None) -> NgramHead:
    """Train the head (weights start at zero; the seed orders the batches). `on_epoch(i)` after each
    epoch, for a progress bar. The card is the caller's to fill."""
    torch.manual_seed(seed)
    model = torch.nn.EmbeddingBag(buckets, 3, mode="sum")
    torch.nn.init.zeros_(model.weight)
    bias = torch.nn.Parameter(torch.zeros(3))
    rows = [features(t, buckets) for t in texts]
    y = label_ids(labels)
    loss_fn = torch.nn.CrossEntropyLoss(weight=class_weights(y))
    opt = torch.optim.Adam([model.weight, bias], lr=LR, weight_decay=DECAY)
    target = torch.tensor(y)
    for epoch in range(EPOCHS):
        for batch in torch.randperm(len(rows)).split(BATCH):
            ids, offsets, weights = bag_rows([rows[i] for i in batch.tolist()])
            loss = loss_fn(model(ids, offsets, per_sample_weights=weights) + bias, target[batch])
            opt.zero_grad()
            loss.backward()
            opt.step()
        if on_epoch:
            on_epoch(epoch + 1)
    return NgramHead(weights=model.weight.detach().numpy().copy(), bias=bias.detach().numpy().copy())


def flag_curve(probs: np.ndarray, labels: Sequence[str], budgets: Sequence[int] = BUDGETS) -> dict[str, int]:
    """model.report.flag_curve's `found` alone: non-neutral messages ranked (by p(neutral)) above the N-th neutral."""
    return {budget: counts["found"] for budget, counts in flag_counts(probs, labels, budgets).items()}


def report(probs: np.ndarray, labels: Sequence[str]) -> dict:
    """Flag curve, per-class precision/recall/F1, macro and weighted F1, neutral flagged."""
    pred = [LABELS[i] for i in probs.argmax(1)]
    full = classification_report(list(labels), pred)
    per_class = {c: {k: round(v, 4) for k, v in full["per_class"][c].items() if k in ("precision", "recall", "f1")}
                 | {"support": full["per_class"][c]["support"]} for c in LABELS}
    flagged = sum(g == "neutral" and p != "neutral" for g, p in zip(labels, pred))
    return {"found_at_neutral_flagged": flag_curve(probs, labels), "f1_macro": round(full["f1_macro"], 4),
            "f1_weighted": round(full["f1_weighted"], 4), "per_class": per_class, "neutral_flagged": flagged,
            "non_neutral": sum(g != "neutral" for g in labels), "n": len(labels)}


INDOMAIN_SOURCES = ("discord", "voices")


def select_parts(sources: Sequence[str]) -> dict[str, np.ndarray]:
    """select's row indices by the rule's parts: in-domain (Discord and voices), Discord, TFNS."""
    def rows(keep: Callable[[str], bool]) -> np.ndarray:
        return np.array([i for i, s in enumerate(sources) if keep(s)], dtype=int)

    return {"indomain": rows(lambda s: s in INDOMAIN_SOURCES), "discord": rows(lambda s: s == "discord"),
            "tfns": rows(lambda s: s == "tfns")}


def sweep_weights(p_model: np.ndarray, p_head: np.ndarray, labels: Sequence[str], sources: Sequence[str],
                  weights: Sequence[float] = WEIGHTS) -> list[dict]:
    """Each w's figures on select: in-domain rows found at SELECT_BUDGET and macro F1, Discord rows,
    TFNS weighted F1. A part with no rows is left out of the figures (0 found, F1 0)."""
    parts = select_parts(sources)
    sweep = []
    for w in weights:
        fused = fuse(p_model, p_head, w)
        r: dict[str, Any] = {k: report(fused[idx], [labels[i] for i in idx]) if len(idx) else None for k, idx in parts.items()}
        found = lambda k, r=r: r[k]["found_at_neutral_flagged"].get(str(SELECT_BUDGET), 0) if r[k] else 0  # noqa: E731
        sweep.append({"w": w, "found_at_6": found("indomain"), "f1_macro": r["indomain"]["f1_macro"] if r["indomain"] else 0.0,
                      "neutral_flagged": r["indomain"]["neutral_flagged"] if r["indomain"] else 0,
                      "discord_found_at_6": found("discord"), "discord_f1_macro": r["discord"]["f1_macro"] if r["discord"] else 0.0,
                      "tfns_f1_weighted": r["tfns"]["f1_weighted"] if r["tfns"] else 0.0})
    return sweep


def choose_weight(sweep: list[dict], tfns_guard: bool = True) -> float:
    """Rule B (tfns_guard): most found at SELECT_BUDGET on select's in-domain rows, ties by in-domain
    macro F1, then the smaller w, among the w whose select TFNS weighted F1 is at most TFNS_GUARD
    under w = 0's (sweep[0], which must be w = 0). Rule A (no guard): the same over every w."""
    if not sweep or sweep[0]["w"] != 0:
        raise ValueError("the sweep must start at w = 0, the model alone")
    floor = sweep[0]["tfns_f1_weighted"] - TFNS_GUARD
    allowed = [s for s in sweep if not tfns_guard or s["tfns_f1_weighted"] >= floor]
    return max(allowed, key=lambda s: (s["found_at_6"], s["f1_macro"], -s["w"]))["w"]


def read_select(path: Path) -> tuple[list[Example], list[str]]:
    """select's examples (read as `sentinel eval --format csv` reads them, so a bad row names its
    line) and each row's `source` (discord, voices, tfns: the rule judges them apart), as `sentinel
    splits` writes select.csv."""
    examples = load_examples(path, "csv", flags=False).examples
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if "source" not in (reader.fieldnames or []):
            raise DataError(path, 1, "no source column (each row's discord, voices or tfns; sentinel splits's select.csv has one)")
        sources = [row["source"] for row in reader]
    if len(sources) != len(examples):
        raise DataError(path, 1, f"{len(examples)} examples but {len(sources)} csv rows")
    if not any(source in INDOMAIN_SOURCES for source in sources):
        # Every w would score 0 there and w = 0 would be "chosen": a head that does nothing, said to be chosen.
        raise DataError(path, 1, "no discord or voices rows: the fusion weight is chosen on them")
    return examples, sources


def head_card(*, w: float, sweep: list[dict], select: Path, scored_with: str, files: Sequence[Path], fmt: str,
              labels: Sequence[str], seed: int, buckets: int, select_rows: int, text_col: str, label_col: str,
              label_map: str | None, scorer_info: ModelInfo, batch_size: int) -> dict[str, Any]:
    """ngram_head.json: what the head is, the fusion weight and how it was chosen (select's figures
    at every w), and what it was trained on, so a head can be checked against its recipe. The files'
    reading options (`label_map` as given on the command line) and how select was scored (device,
    dtype, quantize, batch size: they move the model's probabilities, so the chosen w) are recorded
    beside them, so the head can be rebuilt from its card alone."""
    chosen = next(s for s in sweep if s["w"] == w)
    return {
        "what": "n-gram head: class-balanced logistic regression on hashed word 1-2-grams and character 2-5-grams "
                "(model/ngram.py), pooled with the model's probabilities: log p = log p_model + w log p_head (model/fusion.py)",
        "fusion": {"w": w, "rule": f"B: on select's discord+voices rows the most non-neutral found before the {SELECT_BUDGET}th neutral "
                   f"flagged, ties by their macro F1 then the smaller w, among the w keeping select's tfns rows within {TFNS_GUARD} "
                   "weighted F1 of w=0 (training/ngram.py choose_weight)",
                   "weights_swept": list(WEIGHTS), "scored_with": scored_with,
                   "scoring": {"device": scorer_info.device, "dtype": scorer_info.dtype, "quantize": scorer_info.quantize,
                               "batch_size": batch_size},
                   "select": {"path": str(select), "sha256": sha256(select), "rows": select_rows},
                   "select_at_w": chosen, "select_at_0": sweep[0], "select_sweep": sweep},
        "training": {"files": [{"path": str(f), "sha256": sha256(f)} for f in files], "format": fmt, "text_col": text_col,
                     "label_col": label_col, "label_map": label_map, "rows": len(labels),
                     "label_counts": {label: int(sum(l == label for l in labels)) for label in LABELS},
                     "seed": seed, "epochs": EPOCHS, "lr": LR, "batch": BATCH, "weight_decay": DECAY},
        "buckets": buckets, "labels": list(LABELS),
    }
