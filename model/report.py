"""Classification metrics over the closed label set (pure; used by `sentinel eval` and training)."""

from __future__ import annotations

from typing import Any, Sequence

from model.labels import LABELS


def confusion(gold: Sequence[str], pred: Sequence[str]) -> dict[str, dict[str, int]]:
    """confusion[gold][pred] = count, over LABELS in order."""
    if len(gold) != len(pred):
        raise ValueError(f"{len(gold)} gold labels but {len(pred)} predictions")
    table = {g: {p: 0 for p in LABELS} for g in LABELS}
    for g, p in zip(gold, pred):
        table[g][p] += 1
    return table


def _ratio(num: float, den: float) -> float:
    return num / den if den else 0.0


def classification_report(gold: Sequence[str], pred: Sequence[str]) -> dict[str, Any]:
    """accuracy, f1_macro, f1_weighted, per_class {precision, recall, f1, support}, confusion, n."""
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
    # As scikit-learn does: average over the labels that occur in gold or predictions.
    present = [label for label in LABELS if table[label][label] or sum(table[label].values()) or any(table[g][label] for g in LABELS)]
    return {
        "accuracy": _ratio(sum(table[label][label] for label in LABELS), n),
        "f1_macro": _ratio(sum(per_class[label]["f1"] for label in present), len(present)),
        "f1_weighted": _ratio(sum(per_class[label]["f1"] * per_class[label]["support"] for label in LABELS), n),
        "per_class": per_class,
        "confusion": table,
        "n": n,
    }
