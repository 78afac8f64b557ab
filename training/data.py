"""Labelled-text loaders shared by `sentinel eval` and `sentinel train`.

Formats:
- `tfns`: the Twitter Financial News Sentiment CSV, `text,label` with 0=negative, 1=positive, 2=neutral.
- `alpaca`: Alpaca JSON (an array) or JSONL of `{instruction, input, output}`; output is the label.
- `csv` / `jsonl`: any text and label columns, with an optional label map (`0=negative,1=positive`).
- `seed-discord`: the research's raw Discord export (meritcircle_cleaned_discord.csv) with its
  per-author score file (meritcircle_user_sentiment.csv beside it, or `scores_path`), labelled the
  way the research built dataset.json: each author's messages joined with "; " (plus a final ";"),
  kept when 255 characters or fewer, labelled by the sign of the author's average score.
- `auto`: by file extension (`.json` is Alpaca, `.jsonl` JSONL, anything else CSV).

A malformed row raises DataError naming the file and line, unless skip_bad is set, in which case it
is skipped and reported in `LoadResult.skipped`. A `.jsonl` file is read line by line, each line one
object, whatever its first character. Three faults end the read even with skip_bad, as the rows
after them cannot be read or trusted: a CSV quote that is never closed (it swallowed the rest of
the file), one closed only by a later stray quote, so that a line inside its field reads as a row of
its own (model/csvquotes.py: for a labelled file, a whole record of the header's width with a label
in its label column; for the Discord export, a line that starts with an id, an author and a date),
and a CSV the reader cannot parse at all. Each names the line where the quote opened.
"""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Literal, Mapping

from model.csvquotes import quote_fault, whole_record
from model.labels import LABELS, Label, normalize_label
from model.prompt import EmptyTextError, clean_text

Format = Literal["auto", "tfns", "alpaca", "csv", "jsonl", "seed-discord"]
FORMATS: tuple[str, ...] = ("auto", "tfns", "alpaca", "csv", "jsonl", "seed-discord")
SEED_MAX_CHARS = 255
TFNS_LABEL_MAP: dict[str, str] = {"0": "negative", "1": "positive", "2": "neutral"}
# The csv module refuses a field over 131,072 characters by default. A long text is a row like any
# other (too long for a post, the model's cleaning cuts it): the file is in memory already.
CSV_FIELD_LIMIT = 64 * 1024 * 1024
csv.field_size_limit(max(csv.field_size_limit(), CSV_FIELD_LIMIT))
# A row of the research's Discord export starts with its AuthorID (3.03515e+17), the author (quoted
# when it holds a comma) and Date_original (2022/2/14 ...): a line inside a quoted field that starts
# so is a row a stray quote swallowed (every row of the export does; no line of a real multi-line
# message does).
DISCORD_ROW_START = re.compile(r'\d[\d.]*(?:[eE][+-]?\d+)?,(?:"(?:[^"]|"")*"|[^",\r\n]*),\d{4}/\d{1,2}/\d{1,2}\b')
# The header -> whether a line, on its own, reads as a row of that file (model/csvquotes.py).
RowShape = Callable[[list[str]], Callable[[str], bool]]


def discord_row(_header: list[str]) -> Callable[[str], bool]:
    """A line that starts as a row of the Discord export does (DISCORD_ROW_START)."""
    return lambda line: DISCORD_ROW_START.match(line) is not None


class DataError(ValueError):
    """A row that cannot be used, with where it is."""

    def __init__(self, path: Path, line: int, reason: str):
        super().__init__(f"{path}:{line}: {reason}")
        self.path, self.line, self.reason = path, line, reason


@dataclass(frozen=True)
class Example:
    text: str
    label: Label
    line: int


@dataclass
class LoadResult:
    examples: list[Example] = field(default_factory=list)
    skipped: list[DataError] = field(default_factory=list)


def parse_label_map(spec: str | None) -> dict[str, str] | None:
    """'0=negative,1=positive,2=neutral' -> {'0': 'negative', ...}. The spec is the --label-map
    flag's: an error names the flag and the entry, which a long map would otherwise leave to find."""
    if not spec:
        return None
    mapping: dict[str, str] = {}
    given: dict[str, str] = {}  # raw value -> the entry that mapped it, for the error on a repeat
    for part in spec.split(","):
        raw, sep, label = part.partition("=")
        entry, raw = part.strip(), raw.strip()
        if not sep:
            raise ValueError(f"--label-map {entry}: not RAW=LABEL")
        # An empty RAW would map only empty labels, and a repeat silently took the last entry.
        if not raw:
            raise ValueError(f"--label-map {entry}: empty RAW (RAW=LABEL maps a value of the label column)")
        if raw in given:
            raise ValueError(f"--label-map {entry}: {raw!r} is mapped twice (also {given[raw]})")
        try:
            mapping[raw] = normalize_label(label)
        except ValueError as exc:
            raise ValueError(f"--label-map {entry}: {exc}") from None
        given[raw] = entry
    return mapping


def load_examples(
    path: str | Path,
    fmt: str = "auto",
    *,
    text_col: str = "text",
    label_col: str = "label",
    label_map: Mapping[str, str] | None = None,
    skip_bad: bool = False,
    limit: int | None = None,
    scores_path: str | Path | None = None,
    flags: bool = True,
) -> LoadResult:
    """The file's examples in `fmt`. `flags`: whether the caller reads the file with the
    --format and --label-map flags, which a label that does not read is then pointed to; False
    where it does not (`sentinel splits`, `train-ngram --select`), so no hint names a flag the
    command lacks."""
    path = Path(path)
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
    if scores_path is not None and fmt != "seed-discord":
        # Said, not ignored: a score file given with another format labels nothing.
        raise ValueError(f"a per-author score file (--scores) is read only with the seed-discord format, not {fmt}")
    if fmt == "seed-discord":
        return load_seed_discord(path, scores_path, skip_bad=skip_bad, limit=limit)
    if fmt == "auto":
        fmt = {".json": "alpaca", ".jsonl": "jsonl"}.get(path.suffix.lower(), "csv")
    # What a label that does not read is told against: TFNS's own numbers, the map given, or the words.
    expects = "label-map" if label_map else fmt if fmt in ("tfns", "csv") else "json"
    if fmt == "tfns":
        label_map = label_map or TFNS_LABEL_MAP
    if fmt == "alpaca":
        text_col, label_col = "input", "output"
    rows = (_json_rows(path, array_ok=fmt == "alpaca", flags=flags) if fmt in ("alpaca", "jsonl")
            else _csv_rows(path, labelled_row(label_col, label_map), required=(text_col, label_col)))
    result = LoadResult()
    for line, row in rows:
        try:
            result.examples.append(_example(path, line, row, text_col, label_col, label_map, expects, flags))
        except DataError as err:
            if not skip_bad:
                raise
            result.skipped.append(err)
        if limit is not None and len(result.examples) >= limit:
            break
    return result


def _example(path: Path, line: int, row: Any, text_col: str, label_col: str, label_map: Mapping[str, str] | None,
             expects: str = "csv", flags: bool = True) -> Example:
    if isinstance(row, DataError):
        raise row
    if not isinstance(row, dict):
        raise DataError(path, line, f"expected an object, got {type(row).__name__}")
    for col in (text_col, label_col):
        if col not in row:
            raise DataError(path, line, f"missing column {col!r}")
        if row[col] is None:  # JSON's null: the key is there, so "missing" sent people looking for a typo
            raise DataError(path, line, f"{col!r} is null")
    raw_text, raw_label = row[text_col], str(row[label_col]).strip()
    if not isinstance(raw_text, str):
        raise DataError(path, line, f"{text_col!r} must be a string")
    if not _encodable(raw_text):  # a JSON escape of half a surrogate pair: the tokenizer would fail on it
        raise DataError(path, line, "text holds an unpaired surrogate")
    try:
        text = clean_text(raw_text)
    except EmptyTextError:
        raise DataError(path, line, f"{text_col!r} is empty") from None
    if len(raw_label) > 64:  # no label is this long; the error must not echo a 5000-digit number
        raise DataError(path, line, f"{label_col!r} is {len(raw_label)} characters long, not a label")
    mapped = label_map.get(raw_label) if label_map else raw_label
    try:
        if mapped is None:
            raise ValueError(raw_label)
        label = normalize_label(mapped)
    except ValueError:
        raise DataError(path, line, unknown_label(raw_label, expects, label_map, flags)) from None
    return Example(text=text, label=label, line=line)


def unknown_label(raw: str, expects: str, label_map: Mapping[str, str] | None, flags: bool = True) -> str:
    """Why `raw` is not a label, against what the format expects (`expects`: "tfns", TFNS's numbers;
    "label-map", the map given; "csv" or "json", the label words), and how it would read, if it
    would: a word in a TFNS file is what the csv format reads, a number in a CSV may be TFNS's.
    Without `flags` (the command has no --format or --label-map for this file) no flag is named:
    a word in a TFNS file says the file is not TFNS's own."""
    if expects == "tfns":
        said = f"label {raw!r} is not a TFNS label: the tfns format reads 0 (negative: TFNS's Bearish), 1 (positive: Bullish) and 2 (neutral)"
        if not _is_label(raw, None):
            return said
        if not flags:
            return said + f"; {raw!r} is a label word, so this is not TFNS's own file (sent_train.csv), which is labelled in those numbers"
        return said + f"; {raw!r} is a label word, which --format csv (or jsonl) reads as it is"
    if expects == "label-map":
        return f"label {raw!r} is not in the label map (it maps {', '.join(repr(key) for key in label_map or {})})"
    said = f"unknown label {raw!r}; expected one of {', '.join(LABELS)}"  # normalize_label's words
    if raw not in TFNS_LABEL_MAP or not flags:
        return said
    if expects == "csv":
        return said + f"; {raw!r} is a TFNS number, which --format tfns reads (0=negative, 1=positive, 2=neutral), or give a --label-map"
    return said + "; numbers need a --label-map (e.g. 0=negative,1=positive,2=neutral)"


def _read_text(path: Path) -> str:
    """The file's text; a byte that is not UTF-8 is an error naming its line. A byte-order mark
    (spreadsheets' "CSV UTF-8") is dropped, or it would be part of the first column's name."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        # exc.object: the bytes decoded, after any byte-order mark, which exc.start counts in
        raise DataError(path, exc.object[: exc.start].count(b"\n") + 1, "not UTF-8 text") from None


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def whole_row(header: list[str]) -> Callable[[str], bool]:
    """A line that is, on its own, a whole record of the header's width."""
    return lambda line: whole_record(line, len(header)) is not None


def labelled_row(label_col: str, label_map: Mapping[str, str] | None) -> RowShape:
    """A line that is, on its own, a whole record of the header's width with a label in its label
    column (TFNS: `text,1`); a line of a genuine multi-line text rarely is both."""
    def shape(header: list[str]) -> Callable[[str], bool]:
        if label_col not in header:
            return whole_row(header)
        index = header.index(label_col)

        def looks_like_row(line: str) -> bool:
            cells = whole_record(line, len(header))
            return cells is not None and _is_label(cells[index].strip(), label_map)

        return looks_like_row

    return shape


def _is_label(raw: str, label_map: Mapping[str, str] | None) -> bool:
    mapped = label_map.get(raw) if label_map else raw
    if mapped is None:
        return False
    try:
        normalize_label(mapped)
    except ValueError:
        return False
    return True


def _csv_rows(path: Path, shape: RowShape = whole_row, required: tuple[str, ...] = ()) -> Iterator[tuple[int, Any]]:
    """Each record as a dict by the header's names. A `required` column the header lacks is fatal,
    skip_bad or not: every row would lack it, so skipping them all would only bury the cause."""
    with io.StringIO(_read_text(path), newline="") as handle:
        lines = handle.readlines()  # as the reader splits them, so a line number indexes this list
    reader = csv.reader(lines)
    try:
        header = next(reader, None)
        if header is None:
            raise DataError(path, 1, "empty file, expected a header row")
        _check_header(path, header, required)
        looks_like_row = shape(header)
        _check_quotes(path, lines, 1, reader.line_num, looks_like_row)
        line = reader.line_num + 1
        for record in reader:
            _check_quotes(path, lines, line, reader.line_num, looks_like_row)
            if not "".join(lines[line - 1:reader.line_num]).strip():
                # A blank line is no row (a doubled last line break, say), as in a JSONL file. Judged
                # on the line, not the fields: `""` and `,` are rows of empty fields, named.
                pass
            elif len(record) != len(header):
                yield line, DataError(path, line, f"expected {len(header)} fields, got {len(record)}")
            else:
                yield line, dict(zip(header, record))
            line = reader.line_num + 1  # a quoted field can span several lines
    except csv.Error as exc:
        raise DataError(path, reader.line_num, f"unreadable CSV: {exc}") from None


def _check_header(path: Path, header: list[str], required: tuple[str, ...]) -> None:
    if missing := [col for col in dict.fromkeys(required) if col not in header]:
        names = ", ".join(repr(col) for col in missing)
        # No flag named: `splits` and train-head's --select read CSVs too, and have no --text-col.
        has = ", ".join(repr(col) for col in header[:20]) + (f" and {len(header) - 20} more" if len(header) > 20 else "")
        plural = "s" if len(missing) > 1 else ""
        raise DataError(path, 1, f"no {names} column{plural} in the header (it has {has})")


def _check_quotes(path: Path, lines: list[str], first: int, last: int, looks_like_row: Callable[[str], bool]) -> None:
    """A stray quote in the record on lines first..last swallowed rows after it (to the end of the
    file, or to another stray quote): fatal, skip_bad or not, named where the quote opened."""
    if fault := quote_fault(lines, first, last, looks_like_row):
        raise DataError(path, fault.opened, fault.reason)


def _csv_hint(line: str, flags: bool = True) -> str:
    """What to add to the JSON error of a file's first line when that line reads as a CSV row of
    several fields (a header such as `text,label`): the file is likely a CSV given as JSON, which
    said only "invalid JSON: Expecting value". "" for any other line. `flags`: as load_examples'."""
    try:
        fields = next(csv.reader([line]), [])
    except csv.Error:  # not even a CSV row
        return ""
    if len(fields) < 2 or line.lstrip()[:1] in ("{", "["):  # JSON gone wrong, not a CSV
        return ""
    said = f"; the line reads as a CSV row of {len(fields)} fields, so this is likely a CSV file"
    return said + (": --format csv reads it" if flags else ", not JSON")


def _json_rows(path: Path, array_ok: bool = True, flags: bool = True) -> Iterator[tuple[int, Any]]:
    """An Alpaca file's records (array_ok: one JSON array, or one object a line); a JSONL file's,
    one a line, where a line that is an array is that line's error."""
    text = _read_text(path)
    if array_ok and text.lstrip().startswith("["):
        try:
            records = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(path, exc.lineno, f"invalid JSON: {exc.msg}") from None
        except RecursionError:
            raise DataError(path, 1, "invalid JSON: nested too deeply") from None
        except ValueError as exc:  # an integer over the interpreter's digit limit
            raise DataError(path, 1, f"invalid JSON: {str(exc).split(':')[0]}") from None
        # A JSON array has no per-record lines; records are numbered from 1 instead.
        yield from enumerate(records, start=1)
        return
    # Lines end at \n only: splitlines() also breaks at U+2028 and U+0085, which JSON writers
    # leave raw inside strings (ensure_ascii=False).
    first = True
    for number, raw in enumerate(text.split("\n"), start=1):
        if not raw.strip():
            continue
        try:
            row = json.loads(raw)
        except json.JSONDecodeError as exc:
            row = DataError(path, number, f"invalid JSON: {exc.msg}" + (_csv_hint(raw, flags) if first else ""))
        except RecursionError:
            row = DataError(path, number, "invalid JSON: nested too deeply")
        except ValueError as exc:  # an integer over the interpreter's digit limit (4300)
            row = DataError(path, number, f"invalid JSON: {str(exc).split(':')[0]}")
        first = False
        yield number, row


def load_seed_discord(path: Path, scores_path: str | Path | None = None, *, skip_bad: bool = False, limit: int | None = None) -> LoadResult:
    """The research's labelling of its Discord export (see the module docstring)."""
    scores_file = Path(scores_path) if scores_path else path.with_name("meritcircle_user_sentiment.csv")
    result = LoadResult()

    def bad(file: Path, line: int, reason: str) -> None:
        err = DataError(file, line, reason)
        if not skip_bad:
            raise err
        result.skipped.append(err)

    if not scores_file.is_file():
        raise ValueError(f"{scores_file}: not found; seed-discord needs the research's per-author scores "
                         "(meritcircle_user_sentiment.csv beside the export, or --scores)")
    scores: dict[str, float] = {}
    for line, row in _csv_rows(scores_file):
        if isinstance(row, DataError):
            bad(row.path, row.line, row.reason)
            continue
        try:
            scores[row["AuthorID"]] = float(row["Average_Sentiment_Score"])
        except (KeyError, ValueError):
            bad(scores_file, line, "expected AuthorID and a numeric Average_Sentiment_Score")
    messages: dict[str, list[str]] = {}
    first_line: dict[str, int] = {}
    for line, row in _csv_rows(path, discord_row):
        if isinstance(row, DataError):
            bad(row.path, row.line, row.reason)
            continue
        author = row.get("AuthorID")
        if not author or "Content" not in row:
            bad(path, line, "expected AuthorID and Content columns")
            continue
        messages.setdefault(author, []).append(row["Content"])
        first_line.setdefault(author, line)
    for author, msgs in messages.items():
        joined = "; ".join(msgs) + ";"
        if len(joined) > SEED_MAX_CHARS or author not in scores:
            continue
        score = scores[author]
        label: Label = "positive" if score > 0 else "negative" if score < 0 else "neutral"
        try:
            result.examples.append(Example(text=clean_text(joined), label=label, line=first_line[author]))
        except EmptyTextError:
            continue
        if limit is not None and len(result.examples) >= limit:
            break
    return result
