"""The in-domain labelled set: keys rebuild into texts from the research export, nothing held out is
labelled, the splits are fixed and disjoint, and the agreement figures in docs/labelling.md hold."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import pytest

from conftest import shared_file
from training.indomain import DISCORD_LABELS, VOICES, load_discord_labels, load_voices, write_splits


def kappa(pairs: list[tuple[str, str]]) -> float:
    n = len(pairs)
    observed = sum(a == b for a, b in pairs) / n
    first, second = Counter(a for a, _ in pairs), Counter(b for _, b in pairs)
    expected = sum(first[label] * second[label] for label in first) / n / n
    return (observed - expected) / (1 - expected)


def annotations(path: Path) -> list[dict]:
    if path.suffix == ".csv":
        with path.open(newline="") as handle:
            return list(csv.DictReader(handle))
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize("path,minimum", [(DISCORD_LABELS, 0.80), (VOICES, 0.99)])
def test_two_annotators_agree_and_disagreements_were_adjudicated(path, minimum):
    rows = annotations(path)
    assert kappa([(r["annotator_1"], r["annotator_2"]) for r in rows]) >= minimum
    for r in rows:
        agreed = r["annotator_1"] == r["annotator_2"]
        assert str(r["adjudicated"]).lower() in (("no", "false") if agreed else ("yes", "true"))
        if agreed:
            assert r["label"] == r["annotator_1"]


def test_the_labelled_files_hold_no_discord_text_and_keys_are_unique():
    rows = annotations(DISCORD_LABELS)
    assert set(rows[0]) == {"key", "label", "annotator_1", "annotator_2", "adjudicated", "pool", "split"}
    assert len({r["key"] for r in rows}) == len(rows)
    assert len({r["key"] for r in annotations(VOICES)}) == len(annotations(VOICES))


def test_at_least_300_non_neutral_examples_in_all():
    labels = [r["label"] for r in annotations(DISCORD_LABELS)] + [r["label"] for r in annotations(VOICES)]
    assert sum(label != "neutral" for label in labels) >= 300


def test_discord_keys_rebuild_from_the_export_and_none_is_held_out():
    export = shared_file("seed", "meritcircle_cleaned_discord.csv")
    rows = load_discord_labels(export)
    assert len(rows) == len(annotations(DISCORD_LABELS))
    assert Counter(r.split for r in rows).keys() == {"train", "select", "test"}


def test_splits_are_disjoint_and_written_with_a_manifest(tmp_path):
    export = shared_file("seed", "meritcircle_cleaned_discord.csv")
    tfns = shared_file("tfns", "sent_train.csv")
    manifest = write_splits(tmp_path, tfns, export)

    def texts(name: str) -> set[str]:
        with (tmp_path / name).open(newline="") as handle:
            return {" ".join(r["text"].lower().split()) for r in csv.DictReader(handle)}

    train = texts("train.csv")
    for held in ("select.csv", "test-tfns.csv", "test-discord.csv", "test-voices.csv"):
        assert not train & texts(held), held
    assert manifest["files"]["test-tfns.csv"]["tfns"] == {"negative": 144, "neutral": 618, "positive": 192}
    assert set(manifest["inputs"]) >= {str(tfns), str(export)}
    # The per-source training files partition the in-domain one.
    files = manifest["files"]
    assert set(files["train-discord.csv"]) == {"discord"} and set(files["train-voices.csv"]) == {"voices"}
    assert texts("train-discord.csv") | texts("train-voices.csv") == texts("train-indomain.csv")
    # The second round of voices is a file of its own: the other training files are as before it.
    second = {" ".join(r.example.text.lower().split()) for r in load_voices() if r.round == 2}
    assert texts("train-voices-round2.csv") == second and not second & texts("train.csv")
    for held in ("select.csv", "test-voices.csv"):
        assert not second & texts(held), held


def test_voices_load_with_their_splits():
    rows = load_voices()
    assert {r.source for r in rows} == {"voices"} and {r.split for r in rows} == {"train", "select", "test"}


def test_splits_command_writes_the_same_files_twice(tmp_path):
    import subprocess
    import sys

    export = shared_file("seed", "meritcircle_cleaned_discord.csv")
    tfns = shared_file("tfns", "sent_train.csv")
    for name in ("a", "b"):
        done = subprocess.run([sys.executable, "-m", "sentinel.cli", "splits", "--out", str(tmp_path / name), "--tfns", str(tfns),
                               "--export", str(export)], capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
    assert "test-discord.csv: discord 434" in done.stdout
    for path in sorted((tmp_path / "a").iterdir()):
        assert path.read_bytes() == (tmp_path / "b" / path.name).read_bytes(), path.name


def test_research_records_drop_the_held_out_period_and_split_texts(tmp_path):
    """A record is kept only when none of its messages is known only from 2023 on, or is held out."""
    from test_discord import PM, write_export

    from training.indomain import research_records

    export = tmp_path / "export.csv"
    write_export(export, [
        ["1.0e+17", "a", f"2022/3/1 {PM}1:00", "2022/3/1", "MC pumping", "", "", ""],
        ["1.0e+17", "a", f"2023/2/1 {PM}1:00", "2023/2/1", "MC dumping hard", "", "", ""],
        ["1.0e+17", "a", f"2022/3/1 {PM}1:00", "2022/3/1", "gm", "", "", ""],
        ["1.0e+17", "a", f"2023/3/1 {PM}1:00", "2023/3/1", "gm", "", "", ""],  # seen before 2023 too: kept
    ])
    dataset = tmp_path / "dataset.json"
    dataset.write_text(json.dumps([
        {"instruction": "i", "input": "MC pumping; gm;", "output": "Positive"},
        {"instruction": "i", "input": "gm; MC  dumping hard;", "output": "Negative"},
        {"instruction": "i", "input": "a test text;", "output": "Neutral"},
    ]))
    kept, dropped = research_records(dataset, export, held={"a test text"})
    assert [(r.example.text, r.example.label, r.source) for r in kept] == [("MC pumping; gm;", "positive", "research")]
    assert dropped == {"held_out_period": 1, "select_or_test_text": 1}
