"""The operators' audit log: who acknowledged an incident or gave it a verdict, silenced a scope or
lifted a silence, when, through what (console or cli) and why.

One Redis stream (`keys.AUDIT_KEY`). Each action is appended by the write that makes it, in the
same script or transaction, so the log holds exactly the actions that took effect. An entry's id is
the Redis server's clock in milliseconds: one clock for every console and command line, whatever
their own clocks say. The stream keeps the latest AUDIT_ENTRIES (trimmed approximately, as Redis
does cheaply), years of actions at human pace; it does not expire with the incidents, whose own
acknowledgement log (`correlator.acknowledgements`) does.
"""

from __future__ import annotations

import math
import time
from datetime import datetime, timezone
from typing import Any, Sequence

from stream.contracts import has_hidden_characters
from stream.keys import AUDIT_KEY

AUDIT_ENTRIES = 100_000
ACTIONS = ("acknowledge", "silence", "unsilence", "verdict")
READ_CHUNK = 1000  # entries per XREVRANGE while filtering
MAX_AUTHOR_CHARS = 100  # who acted, as --by gives it
MAX_REASON_CHARS = 500  # an operator's reason (acknowledge, verdict, silence): the console's forms, its API and the CLI


def reason_text(reason: str) -> str:
    """An operator's reason as stored: its whitespace (line breaks, tabs) collapsed to single
    spaces; ValueError when it is over MAX_REASON_CHARS or holds a control or invisible formatting
    character (a right-to-left override reversed the rest of a table row wherever it was shown)."""
    return _operator_text("reason", reason, MAX_REASON_CHARS)


def author_text(by: str) -> str:
    """Who acted (`--by`), as stored and shown in the audit log: the same rules as a reason, at
    most MAX_AUTHOR_CHARS."""
    return _operator_text("--by", by, MAX_AUTHOR_CHARS)


def _operator_text(what: str, value: str, cap: int) -> str:
    text = " ".join(value.split())
    if len(text) > cap:
        raise ValueError(f"{what}: at most {cap} characters (this one has {len(text)})")
    if has_hidden_characters(text):
        raise ValueError(f"{what}: holds a control or invisible formatting character (a bidi override, say)")
    return text


def entry(action: str, *, by: str, via: str, target: str, scope: str, reason: str, kind: str = "", until: str = "",
          verdict: str = "") -> dict[str, str]:
    """The stream fields of one action. `target` is the incident or silence id; `kind` a silence's
    kind or an incident's root kinds (comma-separated); `until` (ISO, wall clock) a silence's end;
    `verdict` an incident's (`verdicts.VERDICTS`)."""
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r}")
    fields = {"action": action, "by": by, "via": via, "target": target, "scope": scope, "kind": kind, "until": until, "reason": reason}
    return fields | ({"verdict": verdict} if verdict else {})


def flat(fields: dict[str, str]) -> list[str]:
    """Field, value, field, value...: the form a Lua script's XADD takes."""
    return [part for pair in fields.items() for part in pair]


def parsed(entry_id: str, fields: dict[str, str]) -> dict[str, Any]:
    """One entry as readers get it: `at` (ISO, wall clock, from the entry id, always to the
    millisecond so a fixed format parses every one) first."""
    at = datetime.fromtimestamp(int(entry_id.split("-")[0]) / 1000, tz=timezone.utc).isoformat(timespec="milliseconds")
    return {"at": at.replace("+00:00", "Z"), "id": entry_id, **fields}


def what(entry: dict[str, Any]) -> str:
    """What an entry acted on, in a few words: `incident inc7 over asset:BTC`, `silence 1a2b over
    asset:* (volume_spike) until 2026-12-05T10:00:00Z`, `incident inc7 over asset:BTC
    (sentiment_drop): false-alarm`."""
    noun, target, rest = what_parts(entry)
    return f"{noun} {target}{rest}"


def what_parts(entry: dict[str, Any]) -> tuple[str, str, str]:
    """`what` in three parts, the noun (`incident` or `silence`), the id and the rest, for the
    console's audit page to link an incident's id to its page."""
    noun = "silence" if entry["action"] in ("silence", "unsilence") else "incident"
    kind = f" ({entry['kind']})" if entry.get("kind") else ""
    until = f" until {entry['until']}" if entry.get("until") else ""
    verdict = f": {entry['verdict']}" if entry.get("verdict") else ""
    return noun, entry["target"], (f" over {entry['scope']}" if entry.get("scope") else "") + kind + until + verdict


async def verdicts_within(client: Any, seconds: float) -> list[dict[str, Any]]:
    """Every verdict entry of the last `seconds` (wall clock), newest first: what the precision
    and a notice's track record count (the log holds far more actions than a span's verdicts)."""
    return await read(client, since=time.time() - seconds, actions=["verdict"], limit=AUDIT_ENTRIES)


async def read(client: Any, *, since: float | None = None, until: float | None = None, by: str | None = None,
               actions: Sequence[str] = (), limit: int = 200) -> list[dict[str, Any]]:
    """Entries newest first: from wall-clock `since` (epoch seconds) on and before `until` (the
    span is half-open, so one day's export and the next's neither overlap nor leave a gap), by one
    person, of the given actions, at most `limit`. A `client` that decodes responses."""
    # A span longer than the epoch (`--since 30000d`) reads everything; a negative id is an error.
    # The first whole millisecond from `since` on: a bound between two milliseconds (`--from
    # ...00.0005Z`) takes neither the one before it, as `--until` at the same bound does not.
    oldest = f"{max(0, math.ceil(since * 1000))}" if since is not None else "-"
    # The last millisecond before `until`, inclusive: `(ms` would still take entries `ms-0`, `ms-1`...
    newest = "+" if until is None else f"{max(0, math.ceil(until * 1000) - 1)}"
    if until is not None and until <= 0:
        return []
    found: list[dict[str, Any]] = []
    while len(found) < limit:
        chunk = await client.xrevrange(AUDIT_KEY, max=newest, min=oldest, count=READ_CHUNK)
        for entry_id, fields in chunk:
            if (by is None or fields.get("by") == by) and (not actions or fields.get("action") in actions):
                found.append(parsed(entry_id, fields))
        if len(chunk) < READ_CHUNK:
            break
        newest = f"({chunk[-1][0]}"  # exclusive: the next chunk starts below the last entry read
    return found[:limit]
