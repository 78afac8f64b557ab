"""The undecodable-batch guard on aiokafka's own record reader, with batches built byte by byte
(no broker: a real broker refuses an unknown codec at produce time, so this is the only way to get one
to a consumer here). tests/test_producers.py runs the guard in a worker against a real corrupt batch."""

from __future__ import annotations

import struct

from aiokafka import TopicPartition
from aiokafka.consumer.fetcher import PartitionRecords
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from aiokafka.record.memory_records import MemoryRecords
from aiokafka.record.util import calc_crc32c

from stream.kafka import UNDECODABLE_HEADER, guard_undecodable_batches, undecodable_reason


def batch(base_offset: int, values: list[bytes], codec: int | None = None, flip_last_byte: bool = False) -> bytes:
    builder = DefaultRecordBatchBuilder(magic=2, compression_type=0, is_transactional=False, producer_id=-1,
                                        producer_epoch=-1, base_sequence=-1, batch_size=1 << 20)
    for i, value in enumerate(values):
        builder.append(i, timestamp=None, key=None, value=value, headers=[])
    data = bytearray(builder.build())
    struct.pack_into(">q", data, 0, base_offset)
    if codec is not None:  # the attributes' codec bits, then a CRC that matches again
        attributes = struct.unpack_from(">h", data, 21)[0]
        struct.pack_into(">h", data, 21, (attributes & ~0x07) | codec)
        struct.pack_into(">I", data, 17, calc_crc32c(bytes(data[21:])))
    if flip_last_byte:
        data[-1] ^= 0xFF
    return bytes(data)


def read(raw: bytes) -> list:
    guard_undecodable_batches()
    records = PartitionRecords(TopicPartition("posts", 3), MemoryRecords(raw), [], 0, None, None, True, 0)
    return list(records)


def test_a_batch_with_an_unknown_codec_becomes_one_stand_in_and_the_next_batch_is_read():
    out = read(batch(0, [b"a", b"b"]) + batch(2, [b"c", b"d", b"e"], codec=7) + batch(5, [b"f"]))
    assert [(r.offset, r.value) for r in out] == [(0, b"a"), (1, b"b"), (4, None), (5, b"f")]
    reason = undecodable_reason(out[2].headers)
    assert reason is not None and reason.startswith("record batch at offsets 2-4 could not be decoded")
    assert all(undecodable_reason(r.headers) is None for r in (out[0], out[1], out[3]))


def test_a_batch_with_a_bad_crc_becomes_one_stand_in(caplog):
    out = read(batch(10, [b"x"]) + batch(11, [b"y", b"z"], flip_last_byte=True))
    assert [r.offset for r in out] == [10, 12]
    assert "invalid CRC" in undecodable_reason(out[1].headers)
    (line,) = [r for r in caplog.records if r.getMessage() == "undecodable record batch dead-lettered"]
    assert (line.topic, line.partition, line.offset, line.first_offset) == ("posts", 3, 12, 11)


def test_installing_twice_wraps_once():
    from aiokafka.consumer.fetcher import PartitionRecords

    guard_undecodable_batches()
    installed = PartitionRecords.__init__
    guard_undecodable_batches()
    assert PartitionRecords.__init__ is installed  # a second wrap would check every batch twice
    assert [r.value for r in read(batch(0, [b"only"]))] == [b"only"]


def test_a_producer_header_of_another_name_is_not_a_stand_in():
    assert undecodable_reason([("trace-id", b"t1"), ("empty", None)]) is None
    assert undecodable_reason({UNDECODABLE_HEADER: b"why"}) == "why"
