"""The in-domain labelled set: keys rebuild into texts from the research export, nothing held out is
labelled, the splits are fixed and disjoint, and the agreement figures in docs/labelling.md hold."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import pytest

from conftest import shared_file
from training.data import DataError
from training.indomain import (
    DISCORD_LABELS,
    DISCORD_LABELS_ROUND2,
    DISCORD_LABELS_ROUND3,
    DISCORD_ROUNDS,
    EMOJI_RELABEL,
    TRAILING_EMOJI_RELABEL,
    VOICES,
    label_pool,
    load_discord_labels,
    load_voices,
    unlabelled_posts,
    write_splits,
)


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


# Round 2 of Discord is 99.6% raw agreement, but with 10 non-neutral messages in 1,700 every
# disagreement weighs heavily on kappa (docs/labelling.md).
# Round 3 (2,000 messages, 2 not neutral) is 99.95% raw agreement: its one disagreement sets kappa.
@pytest.mark.parametrize("path,minimum", [(DISCORD_LABELS, 0.80), (DISCORD_LABELS_ROUND2, 0.70), (DISCORD_LABELS_ROUND3, 0.60),
                                          (EMOJI_RELABEL, 0.90), (TRAILING_EMOJI_RELABEL, 0.90),
                                          (VOICES, 0.99)])
def test_two_annotators_agree_and_disagreements_were_adjudicated(path, minimum):
    rows = annotations(path)
    assert kappa([(r["annotator_1"], r["annotator_2"]) for r in rows]) >= minimum
    for r in rows:
        agreed = r["annotator_1"] == r["annotator_2"]
        assert str(r["adjudicated"]).lower() in (("no", "false") if agreed else ("yes", "true"))
        if agreed:
            assert r["label"] == r["annotator_1"]


def test_the_labelled_files_hold_no_discord_text_and_keys_are_unique():
    rows = [row for path in DISCORD_ROUNDS for row in annotations(path)]
    for path in DISCORD_ROUNDS:
        assert set(annotations(path)[0]) == {"key", "label", "annotator_1", "annotator_2", "adjudicated", "pool", "split"}
    assert len({r["key"] for r in rows}) == len(rows)
    assert len({r["key"] for r in annotations(VOICES)}) == len(annotations(VOICES))


def test_the_emoji_relabel_replaces_only_labels_the_rounds_hold_and_says_which():
    rounds = {r["key"]: r["label"] for path in DISCORD_ROUNDS for r in annotations(path)}
    relabels = annotations(EMOJI_RELABEL)
    assert set(relabels[0]) == {"key", "label", "annotator_1", "annotator_2", "adjudicated", "label_before"}
    assert len({r["key"] for r in relabels}) == len(relabels) == 713
    assert all(rounds[r["key"]] == r["label_before"] for r in relabels)
    # docs/labelling.md: with the emoji in view, one label changed (a test message, negative -> neutral).
    changed = [(r["label_before"], r["label"]) for r in relabels if r["label"] != r["label_before"]]
    assert changed == [("negative", "neutral")]


def test_the_emoji_relabel_holds_every_labelled_message_the_repair_changes():
    from training.discord import ImportReport, discord_posts

    export = shared_file("seed", "meritcircle_cleaned_discord.csv")
    stored = {p["id"]: p["text"] for p in discord_posts(export, ImportReport(), repair=False)}
    repaired = {p["id"]: p["text"] for p in discord_posts(export, ImportReport())}
    labelled = {r["key"] for path in DISCORD_ROUNDS for r in annotations(path)}
    assert {key for key in labelled if stored[key] != repaired[key]} == {r["key"] for r in annotations(EMOJI_RELABEL)}


def test_the_trailing_emoji_relabel_holds_every_labelled_message_ending_in_an_emoji_the_import_cut():
    """Session 46: the import stripped a message before repairing it, and so cut a last emoji whose
    last byte reads as a space in Latin-1 (0x85, 0xA0). Every labelled message ending in one now was
    read again with it, after the emoji relabel, whose label each row replaces; none changed."""
    from training.discord import ImportReport, discord_posts

    export = shared_file("seed", "meritcircle_cleaned_discord.csv")
    texts = {p["id"]: p["text"] for p in discord_posts(export, ImportReport())}
    labelled = {r["key"] for path in DISCORD_ROUNDS for r in annotations(path)}
    ending = {key for key in labelled if texts[key][-1].encode()[-1] in (0x85, 0xA0)}
    rows = annotations(TRAILING_EMOJI_RELABEL)
    assert {r["key"] for r in rows} == ending and len(rows) == 24
    emoji = {r["key"]: r["label"] for r in annotations(EMOJI_RELABEL)}
    assert all(emoji[r["key"]] == r["label_before"] == r["label"] for r in rows)


@pytest.mark.parametrize("path", [DISCORD_LABELS_ROUND2, DISCORD_LABELS_ROUND3])
def test_the_later_discord_rounds_are_all_train(path):
    rows = annotations(path)
    assert {r["split"] for r in rows} == {"train"} and {r["pool"] for r in rows} == {"model-ranked", "random"}


def test_at_least_300_non_neutral_examples_in_all():
    labels = [r["label"] for r in annotations(DISCORD_LABELS)] + [r["label"] for r in annotations(VOICES)]
    assert sum(label != "neutral" for label in labels) >= 300


def test_discord_keys_rebuild_from_the_export_and_none_is_held_out():
    export = shared_file("seed", "meritcircle_cleaned_discord.csv")
    rows = load_discord_labels(export)
    assert Counter(r.round for r in rows) == {number: len(annotations(path)) for path, number in DISCORD_ROUNDS.items()}
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
    # Each source's later rounds are files of their own: the other training files are as before them.
    voices = [r for r in load_voices() if r.round > 1]
    voice_rounds = sorted({r.round for r in voices})
    assert voice_rounds == list(range(2, 2 + len(voice_rounds)))
    for number in voice_rounds:
        written = {" ".join(r.example.text.lower().split()) for r in voices if r.round == number}
        assert texts(f"train-voices-round{number}.csv") == written and not written & texts("train.csv")
        for held in ("select.csv", "test-voices.csv"):
            assert not written & texts(held), (number, held)
    discord_rounds = [n for n in DISCORD_ROUNDS.values() if n > 1]
    assert {name for name in files if "round" in name} == {f"train-voices-round{n}.csv" for n in voice_rounds} | {
        f"train-discord-round{n}.csv" for n in discord_rounds}
    for number in discord_rounds:
        name = f"train-discord-round{number}.csv"
        assert files[name]["discord"]["neutral"] > 1000 and not texts(name) & texts("train.csv"), name
        for held in ("select.csv", "test-discord.csv"):
            assert not texts(name) & texts(held), (name, held)


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


def test_splits_given_a_word_labelled_file_as_tfns_says_it_is_not_tfns_own_and_names_no_flag_it_lacks(tmp_path):
    """`splits` reads --tfns in the tfns format and has no --format: a word label there was told
    "which --format csv (or jsonl) reads", a flag the command does not take."""
    import subprocess
    import sys

    words = tmp_path / "words.csv"
    words.write_text("text,label\n$BTC up,1\nETH dumping,negative\n", encoding="utf-8")
    export = tmp_path / "export.csv"
    export.write_text("", encoding="utf-8")  # --tfns is read first: the export is never reached
    done = subprocess.run([sys.executable, "-m", "sentinel.cli", "splits", "--out", str(tmp_path / "out"), "--tfns", str(words),
                           "--export", str(export)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and done.stdout == "", done.stderr
    assert f"{words}:3: label 'negative' is not a TFNS label" in done.stderr, done.stderr
    assert "'negative' is a label word, so this is not TFNS's own file (sent_train.csv)" in done.stderr, done.stderr
    assert "--format" not in done.stderr and "Traceback" not in done.stderr and not (tmp_path / "out").exists(), done.stderr


def test_research_records_drop_the_held_out_period_and_split_texts(tmp_path):
    """A record is kept only when none of its messages is known only from 2023 on, or is held out."""
    from test_discord import PM, garble, write_export

    from training.indomain import research_records

    export = tmp_path / "export.csv"
    write_export(export, [
        ["1.0e+17", "a", f"2022/3/1 {PM}1:00", "2022/3/1", "MC pumping", "", "", ""],
        ["1.0e+17", "a", f"2023/2/1 {PM}1:00", "2023/2/1", "MC dumping hard", "", "", ""],
        ["1.0e+17", "a", f"2022/3/1 {PM}1:00", "2022/3/1", "gm", "", "", ""],
        ["1.0e+17", "a", f"2023/3/1 {PM}1:00", "2023/3/1", "gm", "", "", ""],  # seen before 2023 too: kept
        # The research kept ASCII only: its copy of this 2023 message has no emoji, and still matches.
        ["1.0e+17", "a", f"2023/3/2 {PM}1:00", "2023/3/2", garble("sell now 📉📉"), "", "", ""],
    ])
    dataset = tmp_path / "dataset.json"
    dataset.write_text(json.dumps([
        {"instruction": "i", "input": "MC pumping; gm;", "output": "Positive"},
        {"instruction": "i", "input": "gm; MC  dumping hard;", "output": "Negative"},
        {"instruction": "i", "input": "a test text;", "output": "Neutral"},
        {"instruction": "i", "input": "gm; sell now ;", "output": "Negative"},
        {"instruction": "i", "input": "gm; wen moon;", "output": "Positive"},
    ]))
    kept, dropped = research_records(dataset, export, held={"a test text", "wen moon 🌕"})
    assert [(r.example.text, r.example.label, r.source) for r in kept] == [("MC pumping; gm;", "positive", "research")]
    assert dropped == {"held_out_period": 2, "select_or_test_text": 2}



def test_a_research_file_with_no_readable_record_is_an_error_and_unreadable_records_are_counted(tmp_path):
    """--research given the wrong file (the TFNS CSV, say) once wrote an empty train-research.csv and
    said nothing dropped; a record that cannot be read was neither kept nor counted."""
    from test_discord import PM, write_export

    from training.data import DataError
    from training.indomain import research_records

    export = tmp_path / "export.csv"
    write_export(export, [["1.0e+17", "a", f"2022/3/1 {PM}1:00", "2022/3/1", "MC pumping", "", "", ""]])
    wrong = tmp_path / "sent_train.csv"
    wrong.write_text("text,label\nBTC up,1\nETH down,0\n")
    with pytest.raises(DataError) as info:
        research_records(wrong, export, held=set())
    assert info.value.line == 1 and info.value.reason.startswith("no research record read (3 unreadable, the first: invalid JSON"), info.value
    dataset = tmp_path / "dataset.jsonl"
    dataset.write_text(json.dumps([{"instruction": "i", "input": "MC pumping;", "output": "Positive"},
                                   {"instruction": "i", "input": "gm;", "output": "bullish-ish"}]))
    kept, dropped = research_records(dataset, export, held=set())
    assert [r.example.text for r in kept] == ["MC pumping;"] and dropped == {"unreadable": 1}


def _label_file(path: Path, rows: list[tuple[str, str]]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["key", "label", "annotator_1", "annotator_2", "adjudicated", "pool", "split"])
        writer.writerows([key, label, label, label, "no", "random", "train"] for key, label in rows)
    return path


def test_the_pool_holds_each_unlabelled_pre_2023_text_once(tmp_path):
    from test_discord import PM, write_export

    from training.discord import ImportReport, discord_posts

    export = tmp_path / "export.csv"
    write_export(export, [
        ["1.0e+17", "a", f"2022/3/1 {PM}1:00", "2022/3/1", "MC pumping", "", "", ""],
        ["1.0e+17", "b", f"2022/3/1 {PM}2:00", "2022/3/1", "mc  PUMPING", "", "", ""],  # a repeat of a labelled text
        ["1.0e+17", "a", f"2022/3/2 {PM}1:00", "2022/3/2", "gm", "", "", ""],
        ["1.0e+17", "b", f"2022/3/2 {PM}2:00", "2022/3/2", "GM", "", "", ""],  # a repeat of an unlabelled one
        ["1.0e+17", "a", f"2023/2/1 {PM}1:00", "2023/2/1", "MC dumping hard", "", "", ""],  # held out
        ["1.0e+17", "a", f"2022/3/3 {PM}1:00", "2022/3/3", "why down?", "", "", ""],
    ])
    keys = [p["id"] for p in discord_posts(export, ImportReport())]
    labels = _label_file(tmp_path / "labels.csv", [(keys[0], "positive")])
    assert unlabelled_posts(export, {labels: 1}) == [(keys[2], "gm"), (keys[5], "why down?")]


def test_a_key_labelled_in_two_rounds_is_an_error_naming_its_line(tmp_path):
    from test_discord import PM, write_export

    from training.discord import ImportReport, discord_posts

    export = tmp_path / "export.csv"
    write_export(export, [["1.0e+17", "a", f"2022/3/1 {PM}1:00", "2022/3/1", "MC pumping", "", "", ""]])
    key = next(discord_posts(export, ImportReport()))["id"]
    first, second = _label_file(tmp_path / "one.csv", [(key, "positive")]), _label_file(tmp_path / "two.csv", [(key, "neutral")])
    with pytest.raises(DataError, match=r"two.csv:2: .*labelled twice"):
        load_discord_labels(export, {first: 1, second: 2})


def _relabel_file(path: Path, rows: list[tuple[str, str, str]]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["key", "label", "annotator_1", "annotator_2", "adjudicated", "label_before"])
        writer.writerows([key, label, label, label, "no", before] for key, label, before in rows)
    return path


def test_a_relabel_replaces_its_rounds_label_and_a_stale_or_stray_one_is_an_error_naming_its_line(tmp_path):
    from test_discord import PM, write_export

    from training.discord import ImportReport, discord_posts

    export = tmp_path / "export.csv"
    write_export(export, [
        ["1.0e+17", "a", f"2022/3/1 {PM}1:00", "2022/3/1", "lost profit", "", "", ""],
        ["1.0e+17", "a", f"2022/3/2 {PM}1:00", "2022/3/2", "gm", "", "", ""],
    ])
    lost, gm = (p["id"] for p in discord_posts(export, ImportReport()))
    rounds = {_label_file(tmp_path / "labels.csv", [(lost, "negative"), (gm, "neutral")]): 1}
    relabel = _relabel_file(tmp_path / "relabel.csv", [(lost, "neutral", "negative")])
    loaded = load_discord_labels(export, rounds, [relabel])
    assert [(r.example.text, r.example.label) for r in loaded] == [("lost profit", "neutral"), ("gm", "neutral")]
    assert [r.example.label for r in load_discord_labels(export, rounds)] == ["negative", "neutral"]
    stale = _relabel_file(tmp_path / "stale.csv", [(gm, "positive", "neutral"), (lost, "neutral", "positive")])
    with pytest.raises(DataError, match=r"stale.csv:3: .*replaces 'positive', but labels.csv labels it 'negative'"):
        load_discord_labels(export, rounds, [stale])
    stray = _relabel_file(tmp_path / "stray.csv", [(gm, "positive", "neutral"), ("discord-0000000000000000", "neutral", "negative")])
    with pytest.raises(DataError, match=r"stray.csv:3: key discord-0+ is in no labelling round"):
        load_discord_labels(export, rounds, [stray])
    # A later file labels a key again, replacing the earlier file's label (not the round's)...
    again = _relabel_file(tmp_path / "again.csv", [(lost, "positive", "neutral")])
    assert [r.example.label for r in load_discord_labels(export, rounds, [relabel, again])] == ["positive", "neutral"]
    stale_again = _relabel_file(tmp_path / "stale_again.csv", [(lost, "neutral", "negative")])
    with pytest.raises(DataError, match=r"stale_again.csv:2: .*replaces 'negative', but relabel.csv labels it 'neutral'"):
        load_discord_labels(export, rounds, [relabel, stale_again])
    # ... but one file labels a key once.
    twice = _relabel_file(tmp_path / "twice.csv", [(lost, "neutral", "negative"), (lost, "positive", "negative")])
    with pytest.raises(DataError, match=r"twice.csv:3: .*relabelled twice"):
        load_discord_labels(export, rounds, [twice])


def test_the_label_pool_takes_the_least_neutral_and_a_random_sample_of_the_rest():
    keys = [f"k{i:02d}" for i in range(20)]
    p_neutral = [i / 20 for i in range(20)][::-1]  # k19 is the least neutral
    chosen = label_pool(keys, p_neutral, top=3, sample=4, seed=7)
    ranked = {keys[i] for i, pool in chosen if pool == "model-ranked"}
    sampled = [i for i, pool in chosen if pool == "random"]
    assert ranked == {"k19", "k18", "k17"} and len(sampled) == 4 and not {keys[i] for i in sampled} & ranked
    assert chosen == label_pool(keys, p_neutral, top=3, sample=4, seed=7)
    assert len({i for i, _ in chosen}) == 7
    assert chosen != sorted(chosen)  # shuffled: an annotator cannot read the pool from the order
    # With the rest only as large as the sample, a draw from anywhere but the rest would show.
    squeezed = label_pool(keys, p_neutral, top=16, sample=4, seed=7)
    assert {keys[i] for i, pool in squeezed if pool == "random"} == {"k00", "k01", "k02", "k03"}


@pytest.mark.parametrize("round_", [2, 3])
def test_a_later_round_outside_train_is_an_error(tmp_path, monkeypatch, round_):
    import training.indomain as indomain
    from training.data import Example

    stray = indomain.Labelled(Example("MC to the moon", "positive", 1), "voices", "select", round_)
    monkeypatch.setattr(indomain, "tfns_splits", lambda path: [])
    monkeypatch.setattr(indomain, "load_discord_labels", lambda export: [])
    monkeypatch.setattr(indomain, "load_voices", lambda: [stray])
    with pytest.raises(ValueError, match="later-round label is not in train"):
        write_splits(tmp_path / "out", tmp_path / "tfns.csv", tmp_path / "export.csv")
    assert not (tmp_path / "out").exists()
