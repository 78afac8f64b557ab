"""Times and durations as the project writes them (pure): ISO-8601 UTC stamps and `15m`-style durations."""

from __future__ import annotations

import re
from datetime import datetime, timezone

_DURATION = re.compile(r"^\s*(\d+)\s*([smhd])\s*$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).isoformat().replace("+00:00", "Z")


def shown(ts: float) -> str:
    """For people: `iso`, or the number itself when no date can hold it (a silence stored by an
    older version for 3,000,000 days broke every page that listed it)."""
    try:
        return iso(round(ts))
    except (ValueError, OverflowError, OSError):
        return f"{ts:.0f} (epoch seconds)"


def epoch(text: str) -> float:
    """The inverse of `iso` (an offset-less time is taken as UTC)."""
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)).timestamp()


def parse_duration(spec: str) -> int:
    """'15m' -> 900. Units s, m, h, d."""
    match = _DURATION.match(spec)
    if not match:
        raise ValueError(f"bad duration {spec!r}; use a number and one of s, m, h, d (e.g. 15m)")
    return int(match.group(1)) * _UNIT_S[match.group(2)]


def setting_duration(field: str, spec: str) -> int:
    """parse_duration for the setting `field` (e.g. "alert_window"): an error names its variable."""
    try:
        return parse_duration(spec)
    except ValueError as exc:
        raise ValueError(f"SENTINEL_{field.upper()}: {exc}") from None


def format_duration(seconds: int) -> str:
    for unit in ("d", "h", "m"):
        if seconds % _UNIT_S[unit] == 0:
            return f"{seconds // _UNIT_S[unit]}{unit}"
    return f"{seconds}s"
