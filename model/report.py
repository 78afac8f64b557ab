"""Classification metrics over the closed label set (pure; used by `sentinel eval` and training)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Collection, Sequence

from model.labels import LABELS

if TYPE_CHECKING:
    import numpy as np


def confusion(gold: Sequence[str], pred: Sequence[str]) -> dict[str, dict[str, int]]:
    """confusion[gold][pred] = count, over LABELS in order."""
    if len(gold) != len(pred):
        raise ValueError(f"{len(gold)} gold labels but {len(pred)} predictions")
    table: dict[str, dict[str, int]] = {g: {p: 0 for p in LABELS} for g in LABELS}
    for g, p in zip(gold, pred):
        table[g][p] += 1
    return table


def _ratio(num: float, den: float) -> float:
    return num / den if den else 0.0


def averaged(table: dict[str, dict[str, int]]) -> list[str]:
    """The labels macro F1 averages, as scikit-learn does: those that occur in gold or predictions.
    A label in neither has no precision, recall or F1 (0/0); its report figures are 0.0, not averaged."""
    return [label for label in LABELS if sum(table[label].values()) or any(table[g][label] for g in LABELS)]


def classification_report(gold: Sequence[str], pred: Sequence[str]) -> dict[str, Any]:
    """accuracy, f1_macro (over `f1_macro_labels`, see `averaged`), f1_weighted, per_class
    {precision, recall, f1, support}, confusion, n."""
    table = confusion(gold, pred)
    n = len(gold)
    per_class: dict[str, dict[str, float]] = {}
    for label in LABELS:
        tp = table[label][label]
        predicted = sum(table[g][label] for g in LABELS)
        support = sum(table[label].values())
        precision, recall = _ratio(tp, predicted), _ratio(tp, support)
        per_class[label] = {
            "precision": precision,
            "recall": recall,
            "f1": _ratio(2 * precision * recall, precision + recall),
            "support": support,
        }
    present = averaged(table)
    return {
        "accuracy": _ratio(sum(table[label][label] for label in LABELS), n),
        "f1_macro": _ratio(sum(per_class[label]["f1"] for label in present), len(present)),
        "f1_weighted": _ratio(sum(per_class[label]["f1"] * per_class[label]["support"] for label in LABELS), n),
        "per_class": per_class,
        "confusion": table,
        "n": n,
        # Added after the rest: which classes f1_macro averaged (a class absent from gold and
        # predictions keeps its keys, at 0.0, as readers of per_class expect numbers).
        "f1_macro_labels": present,
    }


BUDGETS = (3, 6, 10, 15, 20, 30)  # neutral messages flagged: the flag curve's points


def flag_curve(probs: Sequence[Sequence[float]] | np.ndarray, gold: Sequence[str], budgets: Collection[int] = BUDGETS) -> dict[str, dict[str, int]]:
    """How well a scorer tells price talk from chatter, whatever its threshold (bench/flag_curve.py,
    the n-gram head's weight rule): messages ranked by p(neutral), lowest first, ties in the order
    given; for each budget N of neutral messages flagged, the positive and negative ones ranked
    above the N-th neutral (`found`) and those of them whose more likely sentiment is the gold one
    (`right_sign`). `probs`: each message's probabilities in LABELS order. A budget past the
    neutral messages there are has no point."""
    positive, negative, neutral = (LABELS.index(label) for label in ("positive", "negative", "neutral"))
    out: dict[str, dict[str, int]] = {}
    found = right = flagged = 0
    for i in sorted(range(len(gold)), key=lambda i: probs[i][neutral]):
        if gold[i] == "neutral":
            flagged += 1
            if flagged in budgets:
                out[str(flagged)] = {"found": found, "right_sign": right}
            continue
        found += 1
        sign, other = (positive, negative) if gold[i] == "positive" else (negative, positive)
        right += bool(probs[i][sign] > probs[i][other])
    return out
