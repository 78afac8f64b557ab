"""One result shared by every request of a console process, recomputed only when it is both out of
date and old enough.

The overview's scope rows are the console's one read that grows with the number of scopes (one
server-side script call per scope, about 0.3 ms each with the page's work), and every open overview
refreshes whenever a batch is written. Without sharing, ten open pages over 10,000 scopes would
ask Redis for ten full reads every few seconds, beside the workers. Shared, the rows are read again
only when the data changed (a new version) and the last read is older than `max_age_s`, or than
`duty` times that read's own duration if longer (at most `MAX_STRETCH_S`), so the reads take at most
about 1/`duty` of the console's time however many pages poll. Concurrent requests wait for the one
read in flight, and share its failure too: behind a Redis that times out, each answers after one
timeout, not after a queue of them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

T = TypeVar("T")

DUTY = 10  # a read that takes 1 s is reused for at least 10 s
MAX_STRETCH_S = 60.0  # however slow one read was (a stalled Redis), the next may start a minute on


@dataclass(frozen=True)
class Cached(Generic[T]):
    value: T
    version: str  # the data's version when the read started
    started: float  # monotonic seconds
    took: float


def reusable(cached: Cached[T] | None, version: str, now: float, max_age_s: float, duty: float = DUTY) -> bool:
    """Nothing changed since the read, or the read is young enough to stand for the new data."""
    if cached is None:
        return False
    if cached.version == version:
        return True
    return now - cached.started < max(max_age_s, min(duty * cached.took, MAX_STRETCH_S))


class SharedResult(Generic[T]):
    def __init__(self, max_age_s: float, duty: float = DUTY, clock: Callable[[], float] = time.monotonic):
        self.max_age_s = max_age_s
        self.duty = duty
        self.clock = clock
        self.cached: Cached[T] | None = None
        self.reads = 0  # how many times `compute` ran (the tests count it)
        self._inflight: asyncio.Future[Cached[T]] | None = None

    def _fresh(self, version: str) -> Cached[T] | None:
        cached = self.cached
        return cached if cached is not None and reusable(cached, version, self.clock(), self.max_age_s, self.duty) else None

    async def get(self, version: str, compute: Callable[[], Awaitable[T]]) -> Cached[T]:
        """The shared result for data at `version`: reused, or computed once for every caller that
        asks while it runs (they all get its result or its error). A failed computation is not kept.
        With a maximum age of 0 nothing is shared: every call computes."""
        if self.max_age_s <= 0:
            return await self._compute(version, compute)
        if found := self._fresh(version):
            return found
        if self._inflight is None or self._inflight.done():
            self._inflight = asyncio.ensure_future(self._compute(version, compute))
            self._inflight.add_done_callback(_retrieved)
        # Shielded: a caller that goes away (a closed page) does not cancel the others' read.
        return await asyncio.shield(self._inflight)

    async def _compute(self, version: str, compute: Callable[[], Awaitable[T]]) -> Cached[T]:
        started = self.clock()
        value = await compute()
        self.reads += 1
        self.cached = Cached(value, version, started, self.clock() - started)
        return self.cached


def _retrieved(task: asyncio.Future[Any]) -> None:
    """Read a finished read's error, so that one every caller left logs no "never retrieved"."""
    if not task.cancelled():
        task.exception()
