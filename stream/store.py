"""Redis adapter for the windows and the worker's counters.

One batch is one round trip: a pipeline of one Lua call per touched scope (each call stays inside
its scope's hash slot) plus one for the global counters. Each per-scope call is atomic and
idempotent per post id: a post id already in the scope's `seen` set is counted as a duplicate and
changes nothing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import redis.asyncio as aioredis

from stream.contracts import Post
from stream.windows import (
    STATS_KEY,
    WindowStats,
    aggregate,
    bucket_key,
    bucket_prefix,
    bucket_start,
    index_key,
    scopes_for,
    seen_key,
)

# KEYS: idx, seen[, stats]. ARGV: bucket prefix, ttl, trim-before, watermark, counters (JSON),
# then (id, bucket, label, score, ts)*. Only the `all` scope passes the stats key: it lives in the
# same slot, so the batch's counters, duplicates and watermark move atomically with its windows.
_APPLY_SCOPE = """
local idx, seen, stats = KEYS[1], KEYS[2], KEYS[3]
local prefix, ttl, trim_before = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local added, dups = 0, 0
for i = 6, #ARGV, 5 do
  local id, bucket, label, score, ts = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
  if redis.call('ZADD', seen, 'NX', ts, id) == 1 then
    local key = prefix .. bucket
    redis.call('HINCRBY', key, 'n', 1)
    redis.call('HINCRBY', key, label, 1)
    redis.call('HINCRBYFLOAT', key, 'score_sum', score)
    redis.call('EXPIRE', key, ttl)
    redis.call('ZADD', idx, bucket, bucket)
    if stats then redis.call('HINCRBY', stats, 'label:' .. label, 1) end
    added = added + 1
  else
    dups = dups + 1
  end
end
redis.call('ZREMRANGEBYSCORE', seen, '-inf', '(' .. trim_before)
-- Buckets that fell out of retention (in event time) go now, not when their wall-clock TTL ends,
-- so replaying a long history keeps only the retention's worth of buckets.
for _, old in ipairs(redis.call('ZRANGEBYSCORE', idx, '-inf', '(' .. trim_before)) do
  redis.call('DEL', prefix .. old)
end
redis.call('ZREMRANGEBYSCORE', idx, '-inf', '(' .. trim_before)
if added > 0 then
  redis.call('EXPIRE', seen, ttl)
  redis.call('EXPIRE', idx, ttl)
end
if stats then
  local wm = tonumber(ARGV[4])
  local old = tonumber(redis.call('HGET', stats, 'watermark') or '-1')
  if wm > old then redis.call('HSET', stats, 'watermark', ARGV[4]) end
  for name, value in pairs(cjson.decode(ARGV[5])) do
    if value ~= 0 then redis.call('HINCRBY', stats, name, value) end
  end
  if dups > 0 then redis.call('HINCRBY', stats, 'duplicates', dups) end
  if added > 0 then redis.call('HINCRBY', stats, 'processed', added) end
end
return {added, dups}
"""

COUNTERS = ("consumed", "valid", "dlq", "duplicates", "late_dropped", "processed")


@dataclass(frozen=True)
class Scored:
    post: Post
    label: str
    score: float


@dataclass(frozen=True)
class ApplyResult:
    added: int  # posts newly counted (in scope `all`)
    duplicates: int


class WindowStore:
    def __init__(self, client: aioredis.Redis, *, bucket_s: int = 60, retention_s: int = 2 * 86400):
        self.redis = client
        self.bucket_s = bucket_s
        self.retention_s = retention_s
        self._apply_scope = client.register_script(_APPLY_SCOPE)

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> "WindowStore":
        return cls(aioredis.Redis.from_url(url, decode_responses=True), **kwargs)

    async def close(self) -> None:
        await self.redis.aclose()

    async def watermark(self) -> float:
        value = await self.redis.hget(STATS_KEY, "watermark")
        return float(value) if value is not None else float("-inf")

    async def stats(self) -> dict[str, float]:
        raw = await self.redis.hgetall(STATS_KEY)
        out: dict[str, float] = {name: 0 for name in COUNTERS}
        out.update({k: float(v) if k == "watermark" else int(v) for k, v in raw.items()})
        return out

    async def apply(self, scored: Sequence[Scored], counters: Mapping[str, int], watermark: float) -> ApplyResult:
        """Write a batch's windows and counters in one round trip (duplicates and processed are counted here)."""
        by_scope: dict[str, list[str]] = {"all": []}
        for item in scored:
            bucket = str(bucket_start(item.post.created_at, self.bucket_s))
            row = [item.post.id, bucket, item.label, repr(item.score), repr(item.post.created_at)]
            for scope in scopes_for(item.post):
                by_scope.setdefault(scope, []).extend(row)
        ttl = self.retention_s + self.bucket_s
        has_wm = watermark > float("-inf")
        trim_before = int(watermark - self.retention_s) if has_wm else 0
        head = [ttl, trim_before, repr(watermark) if has_wm else "-1", json.dumps(dict(counters))]
        async with self.redis.pipeline(transaction=False) as pipe:
            for scope, rows in by_scope.items():
                keys = [index_key(scope), seen_key(scope)] + ([STATS_KEY] if scope == "all" else [])
                await self._apply_scope(keys=keys, args=[bucket_prefix(scope), *head, *rows], client=pipe)
            results = await pipe.execute()
        added, dups = results[0]
        return ApplyResult(added=int(added), duplicates=int(dups))

    async def scopes(self, pattern: str = "*") -> list[str]:
        found = set()
        async for key in self.redis.scan_iter(match=f"sentinel:{{{pattern}}}:idx", count=500):
            found.add(key[len("sentinel:{") : -len("}:idx")])
        return sorted(found)

    async def window(self, scope: str, window_s: int, end: float | None = None) -> WindowStats:
        """The window [end - window_s, end) over whole buckets; end defaults to the watermark."""
        if end is None:
            wm = await self.watermark()
            end = wm if wm > float("-inf") else 0
        end_bucket = bucket_start(end, self.bucket_s) + self.bucket_s
        start = end_bucket - window_s
        starts = await self.redis.zrangebyscore(index_key(scope), start, f"({end_bucket}")
        async with self.redis.pipeline(transaction=False) as pipe:
            for b in starts:
                pipe.hgetall(bucket_key(scope, int(b)))
            buckets = await pipe.execute() if starts else []
        return aggregate(scope, window_s, end_bucket, buckets)


