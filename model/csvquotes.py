"""A stray double quote in a CSV file, found where it opened (pure). One rule for every reader of
CSV that people write or export by hand: training's labelled files and the research's Discord
export (training/data.py, training/discord.py) and the report's price file
(stream/reporting/prices.py). It lives here because `model` is the one package below both
`stream` and `training`.

The csv module's default dialect reads a `"` at the start of a field as the start of a quoted
field, which runs, newlines and all, to the next lone `"`. A stray one (a message that begins with a
quote, written without the doubling CSV needs) therefore reads every line after it into one field:

- to the end of the file, when no other quote closes it: the rows after it cannot be read;
- or to the next stray quote, which may be hundreds of rows on: the rows between are one field of
  one row, and the reader sees nothing wrong.

A quoted field may hold newlines (a Discord message can), so a field that spans lines is no fault
by itself. It is one when a line whose start lies inside the field reads as a row of the file: the
reader says what its rows look like (`looks_like_row`: a Discord export row starts with its id,
author and date; a price row with its date; a labelled file's row is, on its own, a whole record of
the header's width with a label in its label column). The fault names the line where the quote
opened, the line to fix.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from typing import Callable, Sequence

QUOTE = '"'
DELIMITER = ","


@dataclass(frozen=True)
class QuoteFault:
    opened: int  # the line the quote opened on (1-based, as the csv module counts lines)
    swallowed: int | None = None  # a line inside the field that reads as a row of its own; None: never closed

    @property
    def reason(self) -> str:
        if self.swallowed is None:
            return "a quote opened here is never closed (the rows after it cannot be read)"
        return (f"a quote opened here runs on over line {self.swallowed}, which reads as a row of its own "
                "(the rows between were read as one field)")


def quote_fault(lines: Sequence[str], first: int, last: int, looks_like_row: Callable[[str], bool]) -> QuoteFault | None:
    """The fault in the record the csv module read from lines first..last (1-based, inclusive:
    `lines` as the reader was given them, one line an item), reading as its default dialect does;
    None when there is none. Costs nothing for a record on one line before the last."""
    if first >= last and last < len(lines):
        return None  # one line, and not the file's last: no quoted field in it spans lines
    state, opened = "start", 0  # start of a field, unquoted, quoted, a quote inside a quoted field
    swallowed: QuoteFault | None = None  # the first line inside a quoted field that reads as a row
    for number in range(first, last + 1):
        text = lines[number - 1]
        if swallowed is None and number > first and state == "quoted" and looks_like_row(text):
            swallowed = QuoteFault(opened, number)
        for char in text:
            if state == "quoted":
                if char == QUOTE:
                    state = "quote"
            elif char in "\r\n" or char == DELIMITER:
                state = "start"
            elif state == "start" and char == QUOTE:
                state, opened = "quoted", number
            elif state == "quote" and char == QUOTE:
                state = "quoted"  # a doubled quote
            else:
                state = "unquoted"
    if state == "quoted" and last == len(lines):
        return QuoteFault(opened)  # never closed: the more telling of the two where both hold
    return swallowed


def whole_record(line: str, fields: int) -> list[str] | None:
    """The line's fields when it is, on its own, one well-formed record of exactly `fields` fields:
    every quoted field closed on it and followed by a delimiter or the line's end, no quote inside
    an unquoted field. The closing line of a genuine multi-line field (`end of it",1`) is not one."""
    state = "start"
    for char in line.rstrip("\r\n"):
        if state == "quoted":
            if char == QUOTE:
                state = "quote"
        elif char == DELIMITER:
            state = "start"
        elif state == "start" and char == QUOTE:
            state = "quoted"
        elif state == "quote" and char == QUOTE:
            state = "quoted"
        elif state == "quote" or char == QUOTE or char in "\r\n":
            return None  # text after a closing quote, a quote inside an unquoted field, a lone \r
        else:
            state = "unquoted"
    if state == "quoted":
        return None
    try:
        cells = next(csv.reader([line]), [])
    except csv.Error:  # a field over the csv module's size limit, a NUL
        return None
    return cells if len(cells) == fields else None
