"""Event-time buckets, scopes, rolling windows and the Redis key layout (pure).

A post lands in one bucket (default 1 minute) of each of its scopes: `all`, `asset:<TICKER>`,
`channel:<name>`, `source:<name>`. A bucket holds the count per label, the post count and the sum of
scores. Rolling windows (15 m, 1 h, 24 h by default) are sums of the buckets they cover.

Redis keys put the scope in a hash tag, `sentinel:{<scope>}:...`, so every key one scope's update
touches is in one Redis Cluster slot and the per-scope Lua script is cluster-safe.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from model.labels import LABELS
from stream.contracts import Post

KEY_PREFIX = "sentinel"
STATS_KEY = f"{KEY_PREFIX}:{{all}}:stats"  # in the `all` slot: updated by the same script
_DURATION = re.compile(r"^\s*(\d+)\s*([smhd])\s*$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


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


def check_window_settings(settings: Any) -> None:
    """Parse SENTINEL_BUCKET, SENTINEL_RETENTION and SENTINEL_WINDOWS; a bad one raises ValueError naming it."""
    for field in ("bucket", "retention", "windows"):
        for spec in getattr(settings, field).split(","):
            setting_duration(field, spec)


def format_duration(seconds: int) -> str:
    for unit in ("d", "h", "m"):
        if seconds % _UNIT_S[unit] == 0:
            return f"{seconds // _UNIT_S[unit]}{unit}"
    return f"{seconds}s"


def scopes_for(post: Post) -> list[str]:
    scopes = ["all", *(f"asset:{a}" for a in post.assets)]
    if post.channel:
        scopes.append(f"channel:{post.channel}")
    if post.source:
        scopes.append(f"source:{post.source}")
    return scopes


def bucket_start(ts: float, bucket_s: int) -> int:
    return int(ts // bucket_s) * bucket_s


def bucket_key(scope: str, bucket: int) -> str:
    return f"{KEY_PREFIX}:{{{scope}}}:b:{bucket}"


def bucket_prefix(scope: str) -> str:
    return f"{KEY_PREFIX}:{{{scope}}}:b:"


def index_key(scope: str) -> str:
    """Sorted set of the scope's bucket starts (member = score = bucket start)."""
    return f"{KEY_PREFIX}:{{{scope}}}:idx"


def seen_key(scope: str) -> str:
    """Sorted set of post ids counted in this scope (score = event time), for idempotence."""
    return f"{KEY_PREFIX}:{{{scope}}}:seen"


def is_late(created_at: float, watermark: float, retention_s: int) -> bool:
    """Older than retention behind the newest event time seen: its buckets may be gone already."""
    return created_at < watermark - retention_s


@dataclass(frozen=True)
class WindowStats:
    scope: str
    window_s: int
    start: int
    end: int
    posts: int
    positive: int
    negative: int
    neutral: int
    score_sum: float

    @property
    def mean_score(self) -> float:
        return self.score_sum / self.posts if self.posts else 0.0

    def share(self, label: str) -> float:
        return getattr(self, label) / self.posts if self.posts else 0.0

    def as_dict(self) -> dict[str, object]:
        return {
            "scope": self.scope,
            "window": format_duration(self.window_s),
            "start": self.start,
            "end": self.end,
            "posts": self.posts,
            "labels": {label: getattr(self, label) for label in LABELS},
            "mean_score": round(self.mean_score, 6),
        }


def aggregate(scope: str, window_s: int, end: int, buckets: Iterable[Mapping[str, str]]) -> WindowStats:
    """Sum bucket hashes (as Redis returns them: field -> string) into one window."""
    totals = {"n": 0, "positive": 0, "negative": 0, "neutral": 0}
    score = 0.0
    for bucket in buckets:
        for name in totals:
            totals[name] += int(bucket.get(name, 0) or 0)
        score += float(bucket.get("score_sum", 0.0) or 0.0)
    return WindowStats(scope, window_s, end - window_s, end, totals["n"], totals["positive"], totals["negative"], totals["neutral"], score)
