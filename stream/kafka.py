"""Kafka as the worker reads it: what arrives on the input topic, whatever producer sent it.

Codecs: aiokafka decodes gzip itself and snappy, lz4 and zstd through its `snappy`, `lz4` and
`zstd` extras (cramjam), which `pyproject.toml` declares, so both images have them.

Undecodable record batches. aiokafka checks a batch's CRC and decompresses it while a fetch is
iterated; a batch that fails (corrupt bytes, or a codec it has no library for) raises out of the
consumer, and the consumer fetches the same batch again after every restart: the partition stops
for good and the worker crash-loops. `guard_undecodable_batches()` wraps aiokafka's per-partition
record reader so that such a batch comes out as one stand-in record instead, at the batch's last
offset, with no value and the header `UNDECODABLE_HEADER` naming why. The processor dead-letters it
with reason `undecodable` and the offset is committed like any other; the log line names topic,
partition and offsets. The records inside that batch are lost (nobody can read them); the ones
after it are not.

This reaches into aiokafka's `PartitionRecords` (aiokafka 0.11-0.14), the one place a fetched
batch is decoded; a test with a real corrupt batch on a real broker keeps it honest across upgrades.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping

log = logging.getLogger(__name__)

# A header only the guard sets. A producer that sets it itself only dead-letters its own message.
UNDECODABLE_HEADER = "sentinel-undecodable"


@dataclass
class _StandIn:
    """What aiokafka's fetcher reads from a record (`PartitionRecords._consumer_record`)."""

    offset: int
    headers: list[tuple[str, bytes]]
    timestamp: int = -1
    timestamp_type: int = 0
    key: bytes | None = None
    value: bytes | None = None
    checksum: int | None = None


@dataclass
class _Checked:
    """A batch already decoded, replayed to the fetcher record by record (it iterates a batch
    once, or calls next() once on a control batch)."""

    batch: Any
    records: list[Any]
    _it: Iterator[Any] = field(init=False)

    def __post_init__(self) -> None:
        self._it = iter(self.records)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.batch, name)

    def validate_crc(self) -> bool:
        return True  # checked before it got here

    def __iter__(self) -> "_Checked":
        return self

    def __next__(self) -> Any:
        return next(self._it)


@dataclass
class _Undecodable:
    """A batch that could not be read, standing in as one record at its last offset."""

    base_offset: int
    next_offset: int
    reason: str
    producer_id: None = None
    is_control_batch: bool = False
    is_transactional: bool = False

    def validate_crc(self) -> bool:
        return True

    def __iter__(self) -> Iterator[_StandIn]:
        yield _StandIn(offset=self.next_offset - 1, headers=[(UNDECODABLE_HEADER, self.reason.encode())])


class _GuardedRecords:
    """aiokafka's MemoryRecords, but every batch is checked (CRC, then decoded) before the fetcher
    sees it, and one that fails is replaced by an `_Undecodable`."""

    def __init__(self, records: Any, topic: str, partition: int, check_crcs: bool) -> None:
        self._records, self._topic, self._partition, self._check_crcs = records, topic, partition, check_crcs

    def has_next(self) -> bool:
        return self._records.has_next()

    def next_batch(self) -> Any:
        batch = self._records.next_batch()
        if batch is None:  # a partial batch at the end of the fetch: aiokafka fetches it again
            return None
        try:
            if self._check_crcs and not batch.validate_crc():
                raise ValueError("invalid CRC")
            return _Checked(batch, list(batch))
        except Exception as exc:  # any failure to read a batch: codec, CRC, truncated or garbled bytes
            return self._undecodable(batch, exc)

    def _undecodable(self, batch: Any, exc: Exception) -> _Undecodable:
        try:
            base, after = int(batch.base_offset), int(batch.next_offset)
        except Exception:  # a header too garbled to give its offsets: nothing safe to skip to
            raise exc from None
        reason = f"record batch at offsets {base}-{after - 1} could not be decoded: {type(exc).__name__}: {str(exc)[:200]}"
        log.error("undecodable record batch dead-lettered",
                  extra={"topic": self._topic, "partition": self._partition, "offset": after - 1, "first_offset": base, "reason": reason})
        return _Undecodable(base, after, reason)


def guard_undecodable_batches() -> None:
    """Install the guard in this process (idempotent). Call before the consumer starts."""
    from aiokafka.consumer import fetcher

    cls = fetcher.PartitionRecords
    if getattr(cls, "_sentinel_guarded", False):
        return
    original = cls.__init__

    def __init__(self: Any, tp: Any, records: Any, *args: Any, **kwargs: Any) -> None:
        check_crcs = args[4] if len(args) > 4 else kwargs.get("check_crcs", True)
        original(self, tp, _GuardedRecords(records, tp.topic, tp.partition, check_crcs), *args, **kwargs)

    cls.__init__ = __init__
    cls._sentinel_guarded = True


def undecodable_reason(headers: Any) -> str | None:
    """The guard's reason when a consumed message is its stand-in, else None."""
    pairs = headers.items() if isinstance(headers, Mapping) else (headers or ())
    for name, value in pairs:
        if name == UNDECODABLE_HEADER:
            return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    return None
