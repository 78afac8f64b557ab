"""Stratified train/validation split and class weights (pure)."""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from model.labels import LABELS
from training.data import DataError, Example, load_examples


@dataclass(frozen=True)
class Split:
    train: list[Example]
    validation: list[Example]
    overlap_removed: int  # training examples dropped because their text is also in validation


def _key(text: str) -> str:
    return " ".join(text.lower().split())


def stratified_split(examples: Sequence[Example], val_fraction: float, seed: int) -> Split:
    """Per label, a seeded shuffle and a cut. Texts that also occur in validation leave training,
    so the validation score never rewards memorised duplicates."""
    if not 0 < val_fraction < 1:
        raise ValueError("val_fraction must be between 0 and 1")
    rng = random.Random(seed)
    by_label: dict[str, list[Example]] = defaultdict(list)
    for ex in examples:
        by_label[ex.label].append(ex)
    train: list[Example] = []
    validation: list[Example] = []
    for label in LABELS:
        group = by_label.get(label, [])
        rng.shuffle(group)
        cut = round(len(group) * val_fraction)
        validation.extend(group[:cut])
        train.extend(group[cut:])
    split = remove_overlap(train, validation)
    rng.shuffle(split.train)
    rng.shuffle(split.validation)
    return split


def remove_overlap(train: Sequence[Example], validation: Sequence[Example]) -> Split:
    """Drop training examples whose text (case and spacing folded) is also a validation text."""
    seen = {_key(ex.text) for ex in validation}
    kept = [ex for ex in train if _key(ex.text) not in seen]
    return Split(kept, list(validation), len(train) - len(kept))


def training_split(
    paths: Sequence[Path], val_path: Path | None, val_fraction: float, seed: int, **loader: Any
) -> tuple[Split, list[DataError]]:
    """(split, skipped rows) for `sentinel train`: an explicit validation file, or a stratified split.
    The skipped rows are the loader's errors, each naming its file and line."""
    examples: list[Example] = []
    skipped: list[DataError] = []
    for path in paths:
        loaded = load_examples(path, **loader)
        examples += loaded.examples
        skipped += loaded.skipped
    if val_path is None:
        return stratified_split(examples, val_fraction, seed), skipped
    validation = load_examples(val_path, **loader)
    return remove_overlap(examples, validation.examples), skipped + validation.skipped


def class_weights(examples: Sequence[Example]) -> dict[str, float]:
    """Inverse-frequency weights normalised to mean 1 over the labels present."""
    counts = Counter(ex.label for ex in examples)
    present = [label for label in LABELS if counts[label]]
    raw = {label: 1.0 / counts[label] for label in present}
    mean = sum(raw.values()) / len(present)
    return {label: raw[label] / mean if label in raw else 0.0 for label in LABELS}
