"""Silences: a scope pattern (and optionally a kind) whose transitions are still recorded but not
notified until a wall-clock time. The matching is pure; the rest is their Redis hash
(`keys.SILENCES_KEY`: silence id -> JSON)."""

from __future__ import annotations

import fnmatch
import json
import secrets
import time
from dataclasses import asdict, dataclass
from typing import Any, Mapping, Sequence

import redis.asyncio as aioredis

from stream.alerts.grouping import root_kinds
from stream.keys import SILENCES_KEY


@dataclass(frozen=True)
class Silence:
    id: str
    scope: str  # a scope or a glob pattern (asset:*)
    kind: str | None
    until: float  # wall clock, epoch seconds
    reason: str
    created_at: float

    def matches(self, scope: str, kind: str, now: float) -> bool:
        return now < self.until and fnmatch.fnmatchcase(scope, self.scope) and (self.kind is None or self.kind == kind)


MAX_SILENCE_S = 30 * 86400  # longer is a configuration change, not a silence


def silence_request(scope: str, duration_s: int) -> str:
    """The scope pattern a silence is stored with, or ValueError. Asset tickers are upper case in
    every scope (`asset:BTC`), and a silence matches case-sensitively, so `asset:btc` would
    silence nothing: the ticker part is upper-cased. Channel and source names keep their case."""
    scope = scope.strip()
    if not scope or len(scope) > 200:
        raise ValueError("scope: a scope or pattern such as asset:ETH or asset:*")
    if not 0 < duration_s <= MAX_SILENCE_S:
        raise ValueError("duration: more than zero and at most 30d")
    prefix, sep, rest = scope.partition(":")
    return f"{prefix}{sep}{rest.upper()}" if prefix == "asset" and sep else scope


def silenced_by(silences: list[Silence], scope: str, kind: str, now: float) -> Silence | None:
    return next((s for s in silences if s.matches(scope, kind, now)), None)


def silence_of_incident(silences: list[Silence], root_scope: str, members: Sequence[Mapping[str, Any]], now: float) -> Silence | None:
    """The silence holding an incident's notices back: one over its root, for a kind the incident is
    about (`grouping.root_kinds`). Delivery applies it; the console shows it."""
    return next((found for kind in root_kinds(root_scope, members) if (found := silenced_by(silences, root_scope, kind, now))), None)


async def add_silence(client: aioredis.Redis, scope: str, duration_s: int, kind: str | None, reason: str) -> Silence:
    """Store a silence; ValueError for a request `silence_request` refuses."""
    scope = silence_request(scope, duration_s)
    now = time.time()
    silence = Silence(secrets.token_hex(4), scope, kind, now + duration_s, reason, now)
    await client.hset(SILENCES_KEY, silence.id, json.dumps(asdict(silence)))
    await _expire_with_the_last(client)
    return silence


async def _expire_with_the_last(client: aioredis.Redis) -> None:
    """The hash goes when its longest silence ends (expired ones are purged before that)."""
    current = await list_silences(client)
    if current:
        await client.expireat(SILENCES_KEY, int(current[-1].until) + 60)


async def list_silences(client: aioredis.Redis, *, include_expired: bool = False) -> list[Silence]:
    """Reads only: expired silences go in `purge_expired`."""
    now = time.time()
    found = [Silence(**json.loads(v)) for v in (await client.hgetall(SILENCES_KEY)).values()]
    return sorted((s for s in found if include_expired or s.until > now), key=lambda s: s.until)


async def purge_expired(client: aioredis.Redis) -> int:
    """Drop silences whose time is up; the delivery loop calls this once per drain."""
    now = time.time()
    expired = [s.id for s in await list_silences(client, include_expired=True) if s.until <= now]
    return await client.hdel(SILENCES_KEY, *expired) if expired else 0


async def remove_silence(client: aioredis.Redis, silence_id: str) -> bool:
    return bool(await client.hdel(SILENCES_KEY, silence_id))
