"""What every scorer returns and promises (pure: no torch), so the stream, the lexicon scorer and the
tests can use a scorer without loading one.

A scorer is the torch `model.classifier.Classifier` (an LM with a LoRA adapter) or the keyword
`model.lexicon.LexiconClassifier`; both satisfy `Scorer`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Protocol, Sequence

from model.labels import LABELS, Label


@dataclass(frozen=True)
class ModelInfo:
    """What is loaded, for logs, metrics and the `model` field of every result."""

    base: str
    adapter: str | None
    device: str
    dtype: str
    quantize: str
    load_s: float

    @property
    def id(self) -> str:
        return f"{self.base}+{self.adapter}" if self.adapter else self.base


@dataclass(frozen=True)
class Judgement:
    label: Label
    probs: dict[str, float]
    score: float  # p(positive) - p(negative), in [-1, 1]

    def as_dict(self) -> dict[str, Any]:
        return {"label": self.label, "probs": dict(self.probs), "score": self.score}


def finite_judgement(judgement: Judgement) -> bool:
    """Whether every number of a judgement is finite (a half-precision overflow gives NaN or inf)."""
    return all(math.isfinite(p) for p in judgement.probs.values()) and math.isfinite(judgement.score)


def judgement_from_probs(row: Sequence[float]) -> Judgement:
    """Probabilities in LABELS order -> the judgement (the most probable label, and the score)."""
    probs: dict[str, float] = {label: float(p) for label, p in zip(LABELS, row)}
    label = max(LABELS, key=lambda name: probs[name])
    return Judgement(label=label, probs=probs, score=probs["positive"] - probs["negative"])


class ModelGone(RuntimeError):
    """The model's process is gone (stream/model_process.py): a lost dependency, not bad input, so
    the batch is neither split nor dead-lettered; the worker stops with it unacked."""


class Scorer(Protocol):
    info: ModelInfo

    def classify(self, texts: Sequence[str]) -> Sequence[Judgement]: ...
