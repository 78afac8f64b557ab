"""The closed label set. Every judgement the system makes is one of these three."""

from __future__ import annotations

from typing import Literal

Label = Literal["positive", "negative", "neutral"]

# Order matters: it is the column order of probability tensors everywhere.
LABELS: tuple[Label, ...] = ("positive", "negative", "neutral")

_ALIASES: dict[str, Label] = {
    "positive": "positive",
    "bullish": "positive",
    "pos": "positive",
    "negative": "negative",
    "bearish": "negative",
    "neg": "negative",
    "neutral": "neutral",
    "neu": "neutral",
}


def normalize_label(raw: str) -> Label:
    """Map a dataset's label spelling (case-insensitive, a few synonyms) onto the closed set."""
    key = raw.strip().strip(".").lower()
    try:
        return _ALIASES[key]
    except KeyError:
        raise ValueError(f"unknown label {raw!r}; expected one of {', '.join(LABELS)}") from None


def score_of(probs: dict[str, float]) -> float:
    """The signed sentiment score in [-1, 1]: p(positive) - p(negative)."""
    return probs["positive"] - probs["negative"]
