"""The data a batch carries through the worker (pure): what came off the topic, what was prepared,
and what happened to it. Shared by the processor, the worker and the metrics, so none of them has to
import another for its types."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from model.scorer import Judgement
from stream.contracts import Post


@dataclass(frozen=True)
class RawMessage:
    value: bytes | None
    topic: str
    partition: int
    offset: int
    # Set when the consumer could not decode the record batch this stands in for (stream/kafka.py).
    undecodable: str | None = None
    # The partition's end offset as the consumer knew it when the batch was taken (None: not known):
    # what is left to read after it (partition_lags), so a partition with a backlog is never taken
    # as idle (windows.frontier).
    highwater: int | None = None


def partition_lags(messages: Sequence[RawMessage]) -> dict[int, int | None]:
    """Per input partition of the batch, the messages left to read after its last one there:
    highwater - (offset + 1), never below 0 (a highwater read before a later fetch); None where the
    highwater is not known."""
    last: dict[int, RawMessage] = {}
    for msg in messages:
        if msg.partition not in last or msg.offset >= last[msg.partition].offset:
            last[msg.partition] = msg
    return {p: None if m.highwater is None else max(m.highwater - (m.offset + 1), 0) for p, m in last.items()}


@dataclass
class BatchOutcome:
    consumed: int = 0
    valid: int = 0
    dlq: int = 0
    late_dropped: int = 0
    ahead: int = 0  # valid posts stamped further ahead of their partition's watermark than SENTINEL_MAX_AHEAD (windows.PartitionClock)
    processed: int = 0
    duplicates: int = 0
    capped: int = 0  # processed, but over their author's hourly cap in `all` (not in its windows)
    text_capped: int = 0  # processed, but over their text's hourly cap in `all` (some over both caps)
    classify_s: float = 0.0
    windows_s: float = 0.0
    alerts: int = 0
    alerts_s: float = 0.0
    replicas_s: float = 0.0  # waiting for Redis replicas (SENTINEL_REDIS_WAIT_REPLICAS)
    replicas_short: bool = False  # some master had fewer replicas than asked when the wait timed out
    commit_s: float = 0.0  # the half after the model: windows, judging, replicas, publishing
    total_s: float = 0.0


@dataclass
class Admitted:
    """A validated batch waiting for the model: bad messages dead-lettered, late posts dropped."""

    number: int
    messages: Sequence[RawMessage]
    posts: list[tuple[Post, RawMessage]]  # every valid post, late ones included
    on_time: list[tuple[Post, RawMessage]]  # what the model will judge
    watermark: float
    outcome: BatchOutcome
    started: float
    horizon: float = float("-inf")  # where its write may trim buckets (BatchProcessor.horizon when it was admitted)
    marks: dict[int, float] = field(default_factory=dict)  # each partition's watermark after the batch's posts
    # Each on-time post's id -> its worker's partitions' newest watermark once it was read: the event-time frontier a
    # ScopeBudget counts its hour by, which a post stamped ahead of its partition's clock does not move.
    frontiers: dict[str, float] = field(default_factory=dict)


@dataclass
class Prepared:
    """A classified batch waiting for its windows, alerts and outputs."""

    number: int
    messages: Sequence[RawMessage]
    # Every valid post, late ones included: their partitions' watermarks count even though they
    # change no window.
    posts: list[tuple[Post, RawMessage]]
    scored: list[tuple[Post, Judgement]]  # the on-time posts the model judged
    watermark: float
    outcome: BatchOutcome
    started: float
    horizon: float = float("-inf")  # where its write may trim buckets (BatchProcessor.horizon when it was admitted)
    marks: dict[int, float] = field(default_factory=dict)  # each partition's watermark after the batch's posts
    # Each on-time post's id -> its worker's partitions' newest watermark once it was read: the event-time frontier a
    # ScopeBudget counts its hour by, which a post stamped ahead of its partition's clock does not move.
    frontiers: dict[str, float] = field(default_factory=dict)
