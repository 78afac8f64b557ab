"""Convert the research's Discord export (meritcircle_cleaned_discord.csv) into forum posts (pure).

The export's text was written as UTF-8, read back as Latin-1 and written again as UTF-8, in both
columns we read:
- `Date_original` holds times like `2022/2/14 上午9:12`, a 12-hour clock whose AM/PM marker
  (上午 = AM, 下午 = PM) arrives garbled;
- `Content` carries its emoji as that residue: "Congrats 👏" is stored as "Congrats ð\x9f\x91\x8f".
`repair_mojibake` reverses the round (ftfy's `fix_encoding`, which also mends a message that mixes
garbled and intact text) and drops an emoji whose last byte the export lost, which no repair can
restore. Post ids hash the stored content, so they are the same before and after the repair and the
label files' keys stay valid. The export carries no time zone; times are taken as UTC.
"""

from __future__ import annotations

import csv
import hashlib
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import ftfy

from model.prompt import has_visible_text
from model.csvquotes import quote_fault
from training.data import discord_row  # importing training.data raises the csv field limit for this reader too

_TIME = re.compile(r"^\s*(\d{4})/(\d{1,2})/(\d{1,2})\s*(上午|下午)?\s*(\d{1,2}):(\d{2})\s*$")


# A UTF-8 sequence whose last byte the export lost: an emoji's lead (F0) with one or two of its three
# continuation bytes, or a symbol's (E0-EF) with one of two. No repair can restore it, and left in
# place ftfy would read the space after it as a lost 0xA0 byte and invent an emoji (😠 from 😂's
# neighbour). Genuine text never puts a C1 control after these letters, so nothing real matches.
_TRUNCATED = re.compile("(?:ð[\x80-\xbf]{1,2}|[à-ï][\x80-\x9f])(?![\x80-\xbf])")


def repair_mojibake(text: str) -> str:
    """Undo the export's UTF-8-read-as-Latin-1 round; text that was not garbled comes back unchanged."""
    return ftfy.fix_encoding(_TRUNCATED.sub("", text))


def parse_discord_time(raw: str) -> datetime:
    """'2022/2/14 <garbled 下午>9:12' -> 2022-02-14T21:12:00Z. Raises ValueError."""
    match = _TIME.match(repair_mojibake(raw))
    if not match:
        raise ValueError(f"unrecognised time {raw[:40]!r}")
    year, month, day, marker, hour, minute = match.groups()
    h = int(hour)
    if marker and not 1 <= h <= 12:
        raise ValueError(f"hour {h} on a 12-hour clock")
    if marker == "上午":
        h = 0 if h == 12 else h
    elif marker == "下午":
        h = 12 if h == 12 else h + 12
    return datetime(int(year), int(month), int(day), h, int(minute), tzinfo=timezone.utc)


@dataclass
class ImportReport:
    converted: int = 0
    failed: list[tuple[int, str]] = field(default_factory=list)  # (line, reason)

    def reasons(self) -> Counter:
        return Counter(reason.split(":")[0] for _, reason in self.failed)


def discord_posts(path: Path, report: ImportReport, channel: str = "meritcircle", repair: bool = True) -> Iterator[dict[str, Any]]:
    """Posts in file order. Ids are stable (a hash of author, time and content, plus an occurrence
    number for exact repeats), so importing the same file twice gives the same ids. `repair=False`
    yields the text as stored, garbled emoji and all: what the ids hash."""
    seen: Counter = Counter()
    with path.open(encoding="utf-8", newline="") as handle:
        lines = handle.readlines()
    reader = csv.reader(lines)
    try:
        header = next(reader, [])
        missing = {"Author", "Date_original", "Content"} - set(header)
        if missing:
            raise ValueError(f"{path}: not a Discord export, missing columns {sorted(missing)}")
        looks_like_row = discord_row(header)
        line = reader.line_num + 1
        for record in reader:
            start, line = line, reader.line_num + 1  # a multi-line Content spans several lines
            if fault := quote_fault(lines, start, reader.line_num, looks_like_row):
                # Rows after the quote were read into this one's text (to the end of the file, or to
                # another stray quote): the import would be missing them without a word.
                raise ValueError(f"{path}:{fault.opened}: {fault.reason}")
            if len(record) != len(header):
                report.failed.append((start, f"wrong_fields: expected {len(header)} fields, got {len(record)}"))
                continue
            row = dict(zip(header, record))
            stored = row.get("Content") or ""
            content = stored.strip()  # what the post id hashes, as it always has: every label keeps its key
            if not content:
                report.failed.append((start, "empty_content: no text (attachment or reaction only)"))
                continue
            # Repaired before it is stripped: read as Latin-1, an emoji's last byte 0x85 or 0xA0 is a
            # next-line or no-break space to `strip`, which cut it from a message it ended (😅, 😠, 🎅).
            repaired = repair_mojibake(stored).strip()
            if not has_visible_text(repaired):
                report.failed.append((start, "empty_content: no visible text once its garbled characters are repaired"))
                continue
            try:
                when = parse_discord_time(row.get("Date_original") or "")
            except ValueError as exc:
                report.failed.append((start, f"bad_time: {exc}"))
                continue
            author = (row.get("Author") or "").strip()
            stamp = when.isoformat().replace("+00:00", "Z")
            digest = hashlib.sha1(f"{author}\x1f{stamp}\x1f{content}".encode()).hexdigest()[:16]
            seen[digest] += 1
            post_id = f"discord-{digest}" + (f"-{seen[digest]}" if seen[digest] > 1 else "")
            report.converted += 1
            yield {"id": post_id, "text": repaired if repair else content, "created_at": stamp, "source": "discord", "channel": channel, "author": author or None}
    except csv.Error as exc:
        raise ValueError(f"{path}:{reader.line_num}: unreadable CSV: {exc}") from None
