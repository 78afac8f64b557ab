"""Stratified train/validation split and class weights (pure)."""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from model.labels import LABELS
from training.data import DataError, Example, LoadResult, load_examples


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


def load_files(paths: Sequence[Path], limit: int | None = None, **loader: Any) -> tuple[list[tuple[Path, Example]], list[DataError]]:
    """Every file's examples, one file after another in the order given, each with its file (an
    example's line is its file's); and the rows skipped. `sentinel train` splits this list and
    `sentinel eval --holdout` splits the same list, so several files give the same split in both.
    `limit`: the first that many examples in all."""
    examples: list[tuple[Path, Example]] = []
    skipped: list[DataError] = []
    for path in paths:
        if limit is not None and len(examples) >= limit:
            break
        loaded: LoadResult = load_examples(path, limit=None if limit is None else limit - len(examples), **loader)
        examples += [(Path(path), ex) for ex in loaded.examples]
        skipped += loaded.skipped
    return examples, skipped


def training_split(
    paths: Sequence[Path], val_path: Path | None, val_fraction: float, seed: int, **loader: Any
) -> tuple[Split, list[DataError]]:
    """(split, skipped rows) for `sentinel train`: an explicit validation file, or a stratified split.
    The skipped rows are the loader's errors, each naming its file and line."""
    loaded, skipped = load_files(paths, **loader)
    examples = [ex for _, ex in loaded]
    if val_path is None:
        return stratified_split(examples, val_fraction, seed), skipped
    validation = load_examples(val_path, **loader)
    return remove_overlap(examples, validation.examples), skipped + validation.skipped


def holdout_mismatch(card: dict[str, Any], files: Sequence[tuple[Path, str]], val_fraction: float, seed: int) -> str | None:
    """Why `sentinel eval --holdout` on `files` ((path, sha256), in the order given) would not be the
    split the adapter's own training held out, by its model card; None when it is, or when the card
    records no split (no card, or written before cards recorded one). The split is drawn over the
    files' rows one file after another: other files, another order, seed or fraction draw another
    split, and its rows include ones the adapter trained on. An adapter trained with --val-data
    held out no split at all (its card's `val_fraction` is null): every row of its --data files
    trained it, and its validation file is what there is to evaluate."""
    split, data = card.get("split") or {}, card.get("data") or []
    if "val_fraction" in split and split["val_fraction"] is None:
        named = [entry.get("path") for entry in data if entry.get("role") == "validation"]
        file = named[0] if named else "FILE"  # a card from before the validation file was listed does not name it
        return (f"--holdout: the adapter was trained with --val-data {file} and held out no split of its --data files (it trained "
                f"on all their rows); evaluate its validation file instead: sentinel eval --data {file}")
    if split.get("val_fraction") is None or split.get("seed") is None or not data:
        return None
    if [sha for _, sha in files] != [entry.get("sha256") for entry in data] or (split["val_fraction"], split["seed"]) != (val_fraction, seed):
        theirs = " ".join(f"--data {entry.get('path')}" for entry in data) + f" --holdout {split['val_fraction']:g} --seed {split['seed']}"
        return (f"--holdout: the adapter held out a split of other data or settings (its card: {theirs}); this one is not that "
                "split and may hold rows it trained on: give those --data files in that order, with that --holdout and --seed "
                "(or, to evaluate files it never saw, leave out --holdout)")
    return None


def class_weights(examples: Sequence[Example]) -> dict[str, float]:
    """Inverse-frequency weights normalised to mean 1 over the labels present."""
    counts = Counter(ex.label for ex in examples)
    present = [label for label in LABELS if counts[label]]
    raw = {label: 1.0 / counts[label] for label in present}
    mean = sum(raw.values()) / len(present)
    return {label: raw[label] / mean if label in raw else 0.0 for label in LABELS}
