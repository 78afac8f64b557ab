"""The in-domain labelled set (crypto community chatter) and the splits every adapter is trained,
selected and tested on.

Two sources, labelled with the rubric in docs/labelling.md by two independent annotators and an
adjudication of their disagreements:
- `labels/discord-pre2023.csv`: messages from the research's Discord export dated before 2023, by key
  (the post id `sentinel import-discord` gives: a hash of author, time and content). The texts are not
  committed; `load_discord_labels` rebuilds them from the export. Messages dated 2023 or later are
  held out for evaluation by others and are never labelled here.
- `labels/discord-pre2023-round2.csv`, `labels/discord-pre2023-round3.csv`: later rounds of pre-2023
  messages, each chosen by `label_pool` (the messages the adapter then shipped finds least neutral,
  plus a random sample), all `train`.
- `labels/discord-emoji-relabel.csv`: every message of those rounds whose emoji the export had
  garbled, labelled again with its emoji in view; its label replaces the earlier round's (`label_before`).
- `labels/community-voices.jsonl`: posts the team wrote in the voices of crypto communities
  (Discord, Telegram, forums; English, Taglish, Tagalog), texts included.

Each row carries its split (`train`, `select`, `test`), fixed once, stratified by label. `select`
chooses checkpoints and settings; `test` is only ever reported. TFNS gets the same three-way cut:
`test` is the stratified 10% (seed 42) the shipped TFNS adapter held out, `select` a further 5%.
"""

from __future__ import annotations

import csv
import hashlib
import json
import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from model.labels import normalize_label
from model.prompt import EmptyTextError, clean_text
from training.data import DataError, Example, load_examples
from training.discord import ImportReport, discord_posts
from training.split import stratified_split

LABELS_DIR = Path(__file__).resolve().parent / "labels"
DISCORD_LABELS = LABELS_DIR / "discord-pre2023.csv"
DISCORD_LABELS_ROUND2 = LABELS_DIR / "discord-pre2023-round2.csv"
DISCORD_LABELS_ROUND3 = LABELS_DIR / "discord-pre2023-round3.csv"
DISCORD_ROUNDS = {DISCORD_LABELS: 1, DISCORD_LABELS_ROUND2: 2, DISCORD_LABELS_ROUND3: 3}
# Labels given again to messages of the rounds above, each superseding the round's own: the
# annotators of the rounds read the export's garbled emoji (docs/labelling.md).
EMOJI_RELABEL = LABELS_DIR / "discord-emoji-relabel.csv"
# Those of them whose last emoji the import had cut (session 46), read again with it; each row
# replaces the label EMOJI_RELABEL gave.
TRAILING_EMOJI_RELABEL = LABELS_DIR / "discord-trailing-emoji-relabel.csv"
DISCORD_RELABELS = (EMOJI_RELABEL, TRAILING_EMOJI_RELABEL)
VOICES = LABELS_DIR / "community-voices.jsonl"
SPLITS = ("train", "select", "test")
HELD_OUT_FROM = "2023-01-01"  # Discord messages from this date on are never labelled, trained or tuned on
TFNS_TEST_FRACTION, TFNS_SELECT_FRACTION, TFNS_SEED = 0.1, 0.05, 42


@dataclass(frozen=True)
class Labelled:
    example: Example
    source: str  # tfns | discord | voices
    split: str
    round: int = 1  # the labelling round (docs/labelling.md); each later round is kept in a file of its own


def load_discord_labels(export: Path, rounds: dict[Path, int] | None = None,
                        relabels: Sequence[Path] | None = None) -> list[Labelled]:
    """The labelled Discord messages of every round with their texts rebuilt from the export. A key
    the export does not hold (another export, or an edited one), or one labelled twice, is an error
    naming the label file's line. `relabels` (by default `DISCORD_RELABELS`, with the default rounds)
    give some keys a later label; each row names the label it replaces (`label_before`), so a
    relabel that no longer matches its round, or names a key no round holds, is an error too."""
    if rounds is None:
        rounds, relabels = DISCORD_ROUNDS, DISCORD_RELABELS if relabels is None else relabels
    later = read_relabels(relabels or ())
    posts = {p["id"]: p for p in discord_posts(export, ImportReport())}
    out: list[Labelled] = []
    seen: set[str] = set()
    for labels, number in rounds.items():
        with labels.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            for row in reader:
                line = reader.line_num
                post = posts.get(row["key"])
                if post is None:
                    raise DataError(labels, line, f"key {row['key']} is not in {export}: is it the research's export?")
                if post["created_at"] >= HELD_OUT_FROM:
                    raise DataError(labels, line, f"key {row['key']} is dated {post['created_at']}: held out, never labelled")
                if row["key"] in seen:
                    raise DataError(labels, line, f"key {row['key']} is labelled twice")
                seen.add(row["key"])
                label = row["label"]
                if row["key"] in later:
                    relabel = later[row["key"]]
                    if relabel.before != label:
                        raise DataError(relabel.path, relabel.line,
                                        f"key {row['key']} replaces {relabel.before!r}, but {labels.name} labels it {label!r}")
                    label = relabel.label
                example = Example(clean_text(post["text"]), normalize_label(label), line)
                out.append(Labelled(example, "discord", row["split"], number))
    for key, relabel in later.items():
        if key not in seen:
            raise DataError(relabel.path, relabel.line, f"key {key} is in no labelling round")
    return out


@dataclass(frozen=True)
class Relabel:
    label: str
    before: str  # the round's label it replaces
    path: Path
    line: int


def read_relabels(paths: Iterable[Path]) -> dict[str, Relabel]:
    """key -> its latest label, from files of key, label, annotator_1, annotator_2, adjudicated and
    label_before, read in order: a later file may label a key again, replacing the label an earlier
    file gave it (its `label_before`), and the result still names the round's label it replaces. A key
    twice in one file, or a `label_before` that is not the label it replaces, is an error naming its line."""
    out: dict[str, Relabel] = {}
    for path in paths:
        seen: set[str] = set()
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            for row in reader:
                key, line = row["key"], reader.line_num
                if key in seen:
                    raise DataError(path, line, f"key {key} is relabelled twice")
                seen.add(key)
                earlier = out.get(key)
                if earlier is not None and earlier.label != row["label_before"]:
                    raise DataError(path, line, f"key {key} replaces {row['label_before']!r}, but {earlier.path.name} labels it {earlier.label!r}")
                out[key] = Relabel(row["label"], earlier.before if earlier else row["label_before"], path, line)
    return out


def unlabelled_posts(export: Path, rounds: dict[Path, int] | None = None) -> list[tuple[str, str]]:
    """(key, text) of every pre-2023 message not yet labelled, in export order, one per text:
    exact repeats (after folding case and spaces) and repeats of a labelled text are left out."""
    labelled: set[str] = set()
    for labels in rounds or DISCORD_ROUNDS:
        with labels.open(newline="", encoding="utf-8") as handle:
            labelled.update(row["key"] for row in csv.DictReader(handle))
    posts = list(discord_posts(export, ImportReport()))
    seen = {fold(p["text"]) for p in posts if p["id"] in labelled}
    out: list[tuple[str, str]] = []
    for post in posts:
        folded = fold(post["text"])
        if post["created_at"] >= HELD_OUT_FROM or post["id"] in labelled or folded in seen:
            continue
        seen.add(folded)
        try:
            out.append((post["id"], clean_text(post["text"])))
        except EmptyTextError:
            continue
    return out


def label_pool(keys: Sequence[str], p_neutral: Sequence[float], top: int, sample: int, seed: int) -> list[tuple[int, str]]:
    """Which messages to label next: the `top` an adapter finds least neutral (where its mistakes and
    the rare positive and negative posts are), plus `sample` drawn at random from the rest (what
    the ranking misses), shuffled so an annotator cannot tell one from the other.
    Returns (index into keys, "model-ranked" | "random")."""
    order = sorted(range(len(keys)), key=lambda i: (p_neutral[i], keys[i]))
    rest = sorted(order[top:], key=lambda i: keys[i])
    rng = random.Random(seed)
    chosen = [(i, "model-ranked") for i in order[:top]] + [(i, "random") for i in rng.sample(rest, min(sample, len(rest)))]
    rng.shuffle(chosen)
    return chosen


def load_voices(path: Path = VOICES) -> list[Labelled]:
    out: list[Labelled] = []
    for line, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        row = json.loads(raw)
        try:
            text = clean_text(row["text"])
        except EmptyTextError:
            raise DataError(path, line, "empty text") from None
        out.append(Labelled(Example(text, normalize_label(row["label"]), line), "voices", row["split"], int(row.get("round", 1))))
    return out


def tfns_splits(path: Path) -> list[Labelled]:
    examples = load_examples(path, "tfns", flags=False).examples
    rest = stratified_split(examples, TFNS_TEST_FRACTION, TFNS_SEED)
    train = stratified_split(rest.train, TFNS_SELECT_FRACTION, TFNS_SEED)
    return ([Labelled(ex, "tfns", "test") for ex in rest.validation]
            + [Labelled(ex, "tfns", "select") for ex in train.validation]
            + [Labelled(ex, "tfns", "train") for ex in train.train])


def write_csv(path: Path, rows: Iterable[Labelled]) -> int:
    count = 0
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label", "source"])
        for row in rows:
            writer.writerow([row.example.text, row.example.label, row.source])
            count += 1
    return count


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def research_records(dataset: Path, export: Path, held: set[str]) -> tuple[list[Labelled], dict[str, int]]:
    """The research's `dataset.json` made fit to train on beside the splits. Each record joins one
    author's messages with ';' and carries that author's weak label. A record is dropped when one of
    its messages is known only from 2023 or later (held out for evaluation) or is a select or test
    text, so training on it neither sees the held-out period nor leaks the splits."""
    # The research kept only ASCII (its messages carry no emoji), so messages are matched with every
    # other character dropped: matched as they stand, a message whose export copy had emoji found none.
    first_seen: dict[str, str] = {}
    for post in discord_posts(export, ImportReport()):
        key = ascii_fold(post["text"])
        first_seen[key] = min(first_seen.get(key, post["created_at"]), post["created_at"])
    held_keys = {ascii_fold(t) for t in held} - {""}
    kept: list[Labelled] = []
    dropped: Counter[str] = Counter()
    loaded = load_examples(dataset, "alpaca", skip_bad=True, flags=False)
    if loaded.skipped and not loaded.examples:  # not the research's file at all (a CSV, another JSON): say so, write nothing
        first = loaded.skipped[0]
        raise DataError(first.path, first.line, f"no research record read ({len(loaded.skipped)} unreadable, the first: "
                                                f"{first.reason}); --research takes the research's dataset.json")
    if loaded.skipped:  # counted beside the records dropped, so the manifest says where each went
        dropped["unreadable"] = len(loaded.skipped)
    for example in loaded.examples:
        messages = [ascii_fold(m) for m in example.text.split(";") if m.strip()]
        if any(first_seen.get(m, "") >= HELD_OUT_FROM for m in messages):
            dropped["held_out_period"] += 1
        elif any(m in held_keys for m in messages):
            dropped["select_or_test_text"] += 1
        else:
            kept.append(Labelled(example, "research", "train"))
    return kept, dict(dropped)


def write_splits(out: Path, tfns: Path, export: Path, research: Path | None = None) -> dict:
    """Write the files `sentinel train` and `sentinel eval` take (CSV: text, label, source):
    - train.csv, select.csv: all three sources; train-tfns.csv, select-tfns.csv: TFNS alone;
      train-indomain.csv: Discord and voices (repeat `--data` to weight it); train-discord.csv and
      train-voices.csv: each alone, to measure what each source adds;
    - test-tfns.csv, test-discord.csv, test-voices.csv: reported apart, never trained or selected on;
    - with `research` (the research's dataset.json): train-research.csv, see `research_records`;
    - train-{source}-round{N}.csv (train-voices-round2.csv, train-discord-round2.csv, ...): each
      source's later rounds (all `train`), one file per round apart from every other file, so an
      adapter's recipe reads train-indomain.csv as it was before them
      (docs/results/indomain/README.md says what each round did).
    Texts in a test or select file are removed from the training files. Returns the manifest."""
    rows = tfns_splits(tfns) + load_discord_labels(export) + load_voices()
    held = {fold(r.example.text) for r in rows if r.split != "train"}
    if any(r.round > 1 and r.split != "train" for r in rows):
        raise ValueError("a later-round label is not in train: the select and test splits are fixed")
    later = [r for r in rows if r.round > 1 and fold(r.example.text) not in held]
    rows = [r for r in rows if r.round == 1]
    train = [r for r in rows if r.split == "train" and fold(r.example.text) not in held]
    files = {
        "train.csv": train,
        "train-tfns.csv": [r for r in train if r.source == "tfns"],
        "train-indomain.csv": [r for r in train if r.source != "tfns"],
        **{f"train-{s}.csv": [r for r in train if r.source == s] for s in ("discord", "voices")},
        "select.csv": [r for r in rows if r.split == "select"],
        "select-tfns.csv": [r for r in rows if r.split == "select" and r.source == "tfns"],
        **{f"test-{s}.csv": [r for r in rows if r.split == "test" and r.source == s] for s in ("tfns", "discord", "voices")},
        **{f"train-{s}-round{n}.csv": [r for r in later if (r.source, r.round) == (s, n)]
           for s, n in sorted({(r.source, r.round) for r in later})},
    }
    inputs = [tfns, export, *DISCORD_ROUNDS, *DISCORD_RELABELS, VOICES]
    research_dropped = None
    if research is not None:
        files["train-research.csv"], research_dropped = research_records(research, export, held)
        inputs.append(research)
    out.mkdir(parents=True, exist_ok=True)
    manifest = {
        "inputs": {str(p): sha256(p) for p in inputs},
        "removed_from_train_as_held_out": sum(r.split == "train" for r in rows) - len(train),
        **({"research_records_dropped": research_dropped} if research_dropped is not None else {}),
        "files": {name: counts(chosen) for name, chosen in files.items()},
    }
    for name, chosen in files.items():
        write_csv(out / name, chosen)
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def counts(rows: Sequence[Labelled]) -> dict[str, dict[str, int]]:
    by: dict[str, Counter] = {}
    for r in rows:
        by.setdefault(r.source, Counter())[r.example.label] += 1
    return {source: dict(sorted(c.items())) for source, c in sorted(by.items())}


def fold(text: str) -> str:
    return " ".join(text.lower().split())


def ascii_fold(text: str) -> str:
    """`fold` with every non-ASCII character dropped first: how a message matches its copy in the
    research's dataset.json, which kept ASCII only."""
    return fold(text.encode("ascii", "ignore").decode("ascii"))
