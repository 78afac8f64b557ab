"""Fusing a scorer's label probabilities with the n-gram head's (SENTINEL_NGRAM_HEAD; by default the
shipped head with the shipped model only).

A per-class log-linear pool, log p(c) = log p_model(c) + w log p_head(c) + const, renormalised: at
w = 0 it is the model alone. `bench/fusion.py` measured it (docs/results/indomain/fusion.json); the
head's card names the w chosen on select (training/ngram.py, choose_weight). Pure: numpy only, so
the lexicon path stays torch-free.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from model.labels import LABELS
from model.ngram import NgramHead
from model.scorer import Judgement, ModelInfo, Scorer, judgement_from_probs

HEAD_TAG = "ngram"


def fuse(p_model: np.ndarray, p_head: np.ndarray, w: float) -> np.ndarray:
    """The per-class log-linear pool of two [n, 3] probability arrays, renormalised (clipped at 1e-12
    so a zero probability cannot make a row all -inf)."""
    z = np.log(np.clip(p_model, 1e-12, 1)) + w * np.log(np.clip(p_head, 1e-12, 1))
    z -= z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


def head_tag(head: NgramHead) -> str:
    """The head's name in the model id: HEAD_TAG for the packaged head (SENTINEL_NGRAM_HEAD auto or
    default: stored results and the docs say smollm2+default+ngram) and for a head never read from
    disk; for a head from any other directory HEAD_TAG-<the first 8 hex of its ngram_head.npz's
    sha256>, so results from two heads are told apart. Its content, never its path: a setting's
    value must not show in ids, logs or metric labels."""
    if head.packaged or head.sha256 is None:
        return HEAD_TAG
    return f"{HEAD_TAG}-{head.sha256[:8]}"


def fused_info(info: ModelInfo, tag: str = HEAD_TAG) -> ModelInfo:
    """The wrapped scorer's info with the head (its head_tag) named in its adapter, so ModelInfo.id
    (the `model` field of every result, `sentinel eval`'s report, the Prometheus label) says which
    head is on: smollm2+default -> smollm2+default+ngram; lexicon -> lexicon+ngram-1a2b3c4d."""
    adapter = f"{info.adapter}+{tag}" if info.adapter else tag
    return dataclasses.replace(info, adapter=adapter)


class FusedScorer:
    """Any scorer (the Classifier interface) with its probabilities pooled with an n-gram head's."""

    def __init__(self, scorer: Scorer, head: NgramHead, w: float | None = None):
        self.scorer = scorer
        self.head = head
        self.w = head.w if w is None else w
        self.info = fused_info(scorer.info, head_tag(head))  # once: the hash was taken at load, not per batch

    def classify(self, texts: Sequence[str]) -> list[Judgement]:
        return self.pool(self.scorer.classify(texts), texts)

    def pool(self, judged: Sequence[Judgement], texts: Sequence[str]) -> list[Judgement]:
        """The model's judgements of `texts` pooled with the head's: all the head adds to the model's
        pass (`sentinel bench classify` times it apart)."""
        p_model = np.array([[j.probs[label] for label in LABELS] for j in judged], dtype=np.float64).reshape(-1, len(LABELS))
        return [judgement_from_probs(row) for row in fuse(p_model, self.head.probs(texts), self.w)]
