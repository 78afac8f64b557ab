"""The in-domain labelled set (crypto community chatter) and the splits every adapter is trained,
selected and tested on.

Two sources, labelled with the rubric in docs/labelling.md by two independent annotators and an
adjudication of their disagreements:
- `labels/discord-pre2023.csv`: messages from the research's Discord export dated before 2023, by key
  (the post id `sentinel import-discord` gives: a hash of author, time and content). The texts are not
  committed; `load_discord_labels` rebuilds them from the export. Messages dated 2023 or later are
  held out for evaluation by others and are never labelled here.
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
VOICES = LABELS_DIR / "community-voices.jsonl"
SPLITS = ("train", "select", "test")
HELD_OUT_FROM = "2023-01-01"  # Discord messages from this date on are never labelled, trained or tuned on
TFNS_TEST_FRACTION, TFNS_SELECT_FRACTION, TFNS_SEED = 0.1, 0.05, 42


@dataclass(frozen=True)
class Labelled:
    example: Example
    source: str  # tfns | discord | voices
    split: str
    round: int = 1  # voices: the writing round (docs/labelling.md); round 2 is kept in a file of its own


def load_discord_labels(export: Path, labels: Path = DISCORD_LABELS) -> list[Labelled]:
    """The labelled Discord messages with their texts rebuilt from the export. A key the export does
    not hold (another export, or an edited one) is an error naming the label file's line."""
    posts = {p["id"]: p for p in discord_posts(export, ImportReport())}
    out: list[Labelled] = []
    with labels.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        for row in reader:
            line = reader.line_num
            post = posts.get(row["key"])
            if post is None:
                raise DataError(labels, line, f"key {row['key']} is not in {export}: is it the research's export?")
            if post["created_at"] >= HELD_OUT_FROM:
                raise DataError(labels, line, f"key {row['key']} is dated {post['created_at']}: held out, never labelled")
            out.append(Labelled(Example(clean_text(post["text"]), normalize_label(row["label"]), line), "discord", row["split"]))
    return out


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
    examples = load_examples(path, "tfns").examples
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
    first_seen: dict[str, str] = {}
    for post in discord_posts(export, ImportReport()):
        key = _fold(post["text"])
        first_seen[key] = min(first_seen.get(key, post["created_at"]), post["created_at"])
    kept: list[Labelled] = []
    dropped = Counter()
    for example in load_examples(dataset, "alpaca", skip_bad=True).examples:
        messages = [_fold(m) for m in example.text.split(";") if m.strip()]
        if any(first_seen.get(m, "") >= HELD_OUT_FROM for m in messages):
            dropped["held_out_period"] += 1
        elif any(m in held for m in messages):
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
    - train-voices-round2.csv: the second round of community voices (all `train`), apart from every
      other file: it did not help on Discord (docs/results/indomain/README.md), and the shipped
      adapter's recipe reads train-indomain.csv as it was before it.
    Texts in a test or select file are removed from the training files. Returns the manifest."""
    rows = tfns_splits(tfns) + load_discord_labels(export) + load_voices()
    held = {_fold(r.example.text) for r in rows if r.split != "train"}
    round2 = [r for r in rows if r.round == 2 and r.split == "train" and _fold(r.example.text) not in held]
    rows = [r for r in rows if r.round != 2]
    train = [r for r in rows if r.split == "train" and _fold(r.example.text) not in held]
    files = {
        "train.csv": train,
        "train-tfns.csv": [r for r in train if r.source == "tfns"],
        "train-indomain.csv": [r for r in train if r.source != "tfns"],
        **{f"train-{s}.csv": [r for r in train if r.source == s] for s in ("discord", "voices")},
        "select.csv": [r for r in rows if r.split == "select"],
        "select-tfns.csv": [r for r in rows if r.split == "select" and r.source == "tfns"],
        **{f"test-{s}.csv": [r for r in rows if r.split == "test" and r.source == s] for s in ("tfns", "discord", "voices")},
        "train-voices-round2.csv": round2,
    }
    inputs = [tfns, export, DISCORD_LABELS, VOICES]
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


def _fold(text: str) -> str:
    return " ".join(text.lower().split())
