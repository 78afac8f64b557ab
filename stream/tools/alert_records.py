"""Alert records and verdicts from files, for `sentinel compare-alerts`: what `sentinel run
--alerts-out` writes (one record a line), what `sentinel record --topic sentiment-alerts` writes (the
record's `value`), and verdicts as `sentinel audit --action verdict --json` or `sentinel incidents
--json` print them. A line that is none of these is an error naming its file and line."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from stream.timefmt import epoch

REQUIRED = ("alert_id", "scope", "kind", "state", "window_end")


def _objects(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise ValueError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    for n, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        item = _json(path, n, line, "not JSON")
        if not isinstance(item, dict):
            raise ValueError(f"{path}:{n}: not a JSON object")
        yield n, item


def _json(path: Path, n: int, text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}:{n}: {what} ({exc.msg})") from None
    except RecursionError:
        raise ValueError(f"{path}:{n}: {what} (nested too deeply)") from None
    except ValueError as exc:  # an integer over the interpreter's digit limit
        raise ValueError(f"{path}:{n}: {what} ({str(exc).split(':')[0]})") from None


def _utc_time(text: str) -> float:
    """epoch(text) for a time whose UTC date a datetime can hold: an offset can carry year 9999 into
    10000 (or year 1 into 0), which reads but cannot be written back. Raises ValueError."""
    if "T" not in text:
        raise ValueError("a date without a time")
    t = epoch(text)
    try:
        datetime.fromtimestamp(t, timezone.utc)
    except (ValueError, OverflowError, OSError):
        raise ValueError("out of range") from None
    return t


def read_alert_records(path: Path) -> list[dict[str, Any]]:
    records = []
    for n, item in _objects(path):
        if "topic" in item and "value" in item:  # `sentinel record`: the alert is the record's value
            if item["value"] is None:
                continue  # a tombstone (a key deleted): no alert in it
            if item.get("value_encoding") not in (None, "utf-8") or not isinstance(item["value"], str):
                raise ValueError(f"{path}:{n}: a recorded value that is not UTF-8 JSON text")
            item = _json(path, n, item["value"], "the recorded value is not JSON")
            if not isinstance(item, dict):
                raise ValueError(f"{path}:{n}: the recorded value is not a JSON object")
        missing = [f for f in REQUIRED if not isinstance(item.get(f), str) or not item[f]]
        if missing:
            raise ValueError(f"{path}:{n}: not an alert record (no {', '.join(missing)})")
        if item["state"] not in ("firing", "resolved"):
            raise ValueError(f"{path}:{n}: state {item['state']!r} is neither firing nor resolved")
        try:
            _utc_time(item["window_end"])
        except ValueError as exc:
            what = "is out of range (in UTC, before year 1 or after 9999)" if str(exc) == "out of range" else "is not an ISO 8601 time"
            raise ValueError(f"{path}:{n}: window_end {item['window_end']!r} {what}") from None
        records.append(item)
    return records


def read_verdicts(path: Path) -> dict[str, str]:
    """Incident id -> its latest verdict. Audit entries come newest first (the first one of an
    incident wins); `sentinel incidents --json` lines carry the latest already."""
    found: dict[str, str] = {}
    for n, item in _objects(path):
        if item.get("action") == "verdict" and isinstance(item.get("target"), str):
            found.setdefault(item["target"], str(item.get("verdict", "")))
        elif isinstance(item.get("incident_id"), str) and "verdict" in item:
            if isinstance(item["verdict"], dict):
                found.setdefault(item["incident_id"], str(item["verdict"].get("verdict", "")))
        else:
            raise ValueError(f"{path}:{n}: neither a verdict from `sentinel audit --action verdict --json` nor an incident from `sentinel incidents --json`")
    return found
