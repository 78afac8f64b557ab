"""Kafka, in one place: connection options for every client (Faust's and aiokafka's), the
project's topics, publishing a batch's results (`publish_records`), and what arrives on the input
topic whatever producer sent it.

Connections: `broker_url` and `broker_credentials` for the worker's Faust app, `kafka_client_kwargs` for
the aiokafka clients of replay, record, `sentinel run` and the benchmarks; SSL and SASL are built
once (`ssl_context`), from the `SENTINEL_KAFKA_*` settings.

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

import asyncio
import logging
import ssl
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping, Sequence

from stream.settings import Settings

if TYPE_CHECKING:
    import faust

log = logging.getLogger(__name__)


def worker_topics(settings: Settings) -> list[str]:
    """The topics a worker reads and writes, in the order they are created."""
    return [settings.topic_posts, settings.topic_sentiment, settings.topic_dlq, settings.topic_alerts]


def broker_url(settings: Settings) -> str:
    if not settings.kafka_broker:
        raise ValueError("no Kafka broker configured (KAFKA_BROKER)")
    return ";".join(f"kafka://{host.strip()}" for host in settings.kafka_broker.split(","))


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    if settings.kafka_security_protocol not in ("SSL", "SASL_SSL"):
        return None
    return ssl.create_default_context(cafile=str(settings.kafka_ssl_cafile) if settings.kafka_ssl_cafile else None)


def _sasl_password(settings: Settings) -> str | None:
    return settings.kafka_sasl_password.get_secret_value() if settings.kafka_sasl_password else None


def broker_credentials(settings: Settings) -> "faust.types.auth.CredentialsT | None":
    """Faust credentials for SSL / SASL; None for PLAINTEXT."""
    import faust

    protocol = settings.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return None
    if protocol.startswith("SASL"):
        return faust.SASLCredentials(username=settings.kafka_sasl_username or "", password=_sasl_password(settings) or "",
                                     mechanism=settings.kafka_sasl_mechanism, ssl_context=ssl_context(settings))
    return faust.SSLCredentials(ssl_context(settings))


def max_request_bytes(settings: Settings) -> int:
    """The largest record the worker's producer sends (its max_request_size): SENTINEL_KAFKA_MAX_REQUEST_BYTES,
    else 1 MiB (Kafka's default message.max.bytes is 1 MiB and some bytes), or twice the input's byte cap."""
    return settings.kafka_max_request_bytes or max(1_048_576, settings.max_message_bytes * 2)


def record_bytes(key: bytes | None, value: bytes | None) -> int:
    """A record's size as the producer measures it against max_request_size: alone in a record
    batch, headers and all (aiokafka's own estimate, which `AIOKafkaProducer.send` checks)."""
    from aiokafka.record.default_records import DefaultRecordBatchBuilder

    return int(DefaultRecordBatchBuilder.estimate_size_in_bytes(key, value, []))


def kafka_client_kwargs(settings: Settings) -> dict[str, Any]:
    """aiokafka connection options (bootstrap servers, SSL, SASL)."""
    options: dict[str, Any] = {"bootstrap_servers": settings.kafka_broker, "security_protocol": settings.kafka_security_protocol}
    context = ssl_context(settings)
    if context is not None:
        options["ssl_context"] = context
    if settings.kafka_security_protocol.startswith("SASL"):
        options.update(sasl_mechanism=settings.kafka_sasl_mechanism, sasl_plain_username=settings.kafka_sasl_username,
                       sasl_plain_password=_sasl_password(settings))
    return options


async def ensure_topics(settings: Settings, names: list[str]) -> None:
    """Create the project's topics if they are missing (production creates them with Strimzi)."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(**kafka_client_kwargs(settings))
    try:  # closed when its start fails too (no broker), or its client is left open
        await admin.start()
        existing = set(await admin.list_topics())
        missing = [NewTopic(n, num_partitions=settings.partitions, replication_factor=1) for n in names if n not in existing]
        if missing:
            await admin.create_topics(missing)
    finally:
        await admin.close()


def group_member(generation: int, member_id: str) -> bool:
    """Whether a consumer is a member of its group, by its coordinator's state: it holds a member id
    and a generation (aiokafka resets the two to "" and -1, DEFAULT_GENERATION_ID, when it is not
    one). Generation 0 is a member too: Tansu numbers a group's first generation 0, Kafka 1. This is
    Kafka's Java client's rule for sending LeaveGroup (a member id is known), not aiokafka's
    (`generation > 0`), which on Tansu never leaves a group that formed in one go."""
    return member_id != "" and generation >= 0


async def leave_group(coordinator: Any) -> bool:
    """Close aiokafka's group coordinator (`GroupCoordinator`, aiokafka 0.11-0.14) of a group member
    (`group_member`) and make sure a LeaveGroup went out for it: aiokafka's close sends one past
    generation 0 only, so for a generation-0 member (Tansu) it is sent here, after the close (the
    heartbeat, stopped by then, would otherwise answer the broker's "unknown member" by joining
    again). True when the leave was sent (past generation 0 aiokafka sends it and logs a refusal);
    False when the broker refused it."""
    from aiokafka.errors import for_code
    from aiokafka.protocol.group import LeaveGroupRequest

    generation, member_id = coordinator.generation, coordinator.member_id
    await coordinator.close()
    if generation > 0:
        return True  # aiokafka sent it
    response = await coordinator._send_req(LeaveGroupRequest(coordinator.group_id, member_id))  # noqa: SLF001 - aiokafka has no public call for it
    if response.error_code:
        log.warning("the broker refused LeaveGroup", extra={"error": for_code(response.error_code).__name__})
        return False
    return True


async def every_topic(consumer: Any) -> Any:
    """The broker's metadata for every topic, read now (aiokafka's ClusterMetadata: `topics()`,
    `partitions_for_topic`). Not `consumer.topics()` then `consumer.partitions_for_topic`: that reads
    into a copy and leaves the consumer's own view as bootstrap fetched it, which on Apache Kafka is
    no topic at all (an empty topic list asks for none from MetadataRequest v1 on; Tansu answers it
    with every topic, so the embedded stack never showed it). Asking for every topic creates none."""
    return await consumer._client.fetch_all_metadata()  # noqa: SLF001 - aiokafka has no public call for it


async def partition_count(settings: Settings, topic: str) -> int | None:
    """How many partitions `topic` has on the broker (None: no such topic)."""
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(**kafka_client_kwargs(settings), group_id=None, enable_auto_commit=False)
    try:  # stopped when its start fails too, or asyncio reports it unclosed
        await consumer.start()
        partitions = (await every_topic(consumer)).partitions_for_topic(topic)
        return len(partitions) if partitions else None
    finally:
        await consumer.stop()


class _Holding(logging.Handler):
    def __init__(self, held: list[logging.LogRecord]) -> None:
        super().__init__()
        self.held = held

    def emit(self, record: logging.LogRecord) -> None:
        self.held.append(record)


@contextmanager
def held_logs(name: str = "aiokafka") -> Iterator[list[logging.LogRecord]]:
    """The records `name`'s loggers write inside the block, held back instead of written. For a
    probe whose failure is said in one line of our own: aiokafka logs each refused connection as an
    ERROR of its own first, so a dead broker read as two errors. Only for the block: a running
    worker's aiokafka lines are written as usual. `release_logs` writes what a probe that passed held."""
    logger = logging.getLogger(name)
    held: list[logging.LogRecord] = []
    handler, propagate = _Holding(held), logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield held
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate


def release_logs(held: Sequence[logging.LogRecord]) -> None:
    """Write held records as they would have been (a probe that passed after a refused host, say)."""
    for record in held:
        logging.getLogger(record.name).handle(record)


def held_messages(held: Sequence[logging.LogRecord]) -> str:
    """The held records' messages, each once, for the one line that reports the failure."""
    return "; ".join(dict.fromkeys(record.getMessage() for record in held))


class RecordsNotDelivered(Exception):
    """The producer gave up on records (after its retries, `producer_request_timeout`)."""


class Deliveries:
    """Record batches handed to the producer whose fate is not known yet.

    A flush waits for the producer's queue to empty, and a batch the producer gives up on leaves
    that queue one event-loop step before its `on_lost` runs: a commit right behind a flush started
    in that step would commit the batch's offsets without its records. `settled` waits for the
    batches themselves, so their `on_lost` has run when it returns."""

    def __init__(self) -> None:
        self._pending: set[asyncio.Future[Any]] = set()

    def track(self, futures: Sequence[asyncio.Future[Any]]) -> None:
        for future in futures:
            self._pending.add(future)
            future.add_done_callback(self._pending.discard)

    async def settled(self, timeout_s: float) -> bool:
        """Whether every batch tracked so far was delivered or reported lost within timeout_s."""
        pending = list(self._pending)
        if not pending:
            return True
        await asyncio.wait(pending, timeout=max(timeout_s, 0.0))
        # A batch that completed in the loop pass where the timeout fired has its callbacks (the
        # on_lost check, then the discard) queued behind this wakeup: let them run, and trust the
        # discard, which comes after the check.
        await asyncio.sleep(0)
        return not any(future in self._pending for future in pending)


async def publish_records(producer: "faust.types.ProducerT", topic: str, records: Sequence[tuple[bytes | None, bytes]],
                          on_lost: Callable[[RecordsNotDelivered], None] | None = None) -> list[asyncio.Future[Any]]:
    """Hand `records` (key, value) to the producer as one record batch per partition (more when a
    batch fills), partitioned by key as a single send would be. Returns once they are queued, not
    delivered, with each record batch's delivery future (for `Deliveries`): Faust flushes the
    producer before it commits offsets, as for its own sends.

    A batch the producer gives up on is logged and passed to `on_lost`, from the batch's own done
    callback. That runs before a flush waiting on the batch resumes (asyncio runs a future's
    callbacks in the order they were added, and the flush's resumption is queued behind this one),
    so a worker that exits there has committed none of the batch's offsets.

    A batch's results went through Faust's `Topic.send`, record by record, which wraps each in two
    message objects, a callback and a sensor call: 13.7% of a worker's CPU samples at 64 records a batch
    (`docs/results/publish_batches.json`). This builds aiokafka's record batches directly. It
    reaches the aiokafka producer inside Faust's (`_ensure_producer`, faust-streaming 0.15,
    pinned); `tests/test_publish.py` holds it to a plain send's partitions and order.

    A record over the producer's max_request_size is refused before any record of the call is
    queued, as `AIOKafkaProducer.send` refuses it (send_batch checks nothing): the broker would
    refuse it anyway, after the batch's offsets may have moved on. The processor fits its records
    under that size first (`BatchProcessor`'s max_record_bytes), so this is a backstop."""
    if not records:
        return []
    kafka = producer._ensure_producer()  # type: ignore[attr-defined]
    for key, value in records:
        if (size := record_bytes(key, value)) > kafka._max_request_size:  # noqa: SLF001 - the producer's own setting
            from aiokafka.errors import MessageSizeTooLargeError

            raise MessageSizeTooLargeError(f"a record of {size} bytes to {topic} is over the producer's max_request_size "
                                           f"({kafka._max_request_size}); nothing of this call was queued")
    await kafka.partitions_for(topic)  # the partitioner needs the topic's metadata
    by_partition: dict[int, list[tuple[bytes | None, bytes]]] = {}
    sent: list[asyncio.Future[Any]] = []
    for key, value in records:
        by_partition.setdefault(producer.key_partition(topic, key).partition, []).append((key, value))
    for partition, rows in by_partition.items():
        batch, count = kafka.create_batch(), 0
        for key, value in rows:
            if batch.append(key=key, value=value, timestamp=None) is None:  # full: send it, start the next
                sent.append(await _send_batch(kafka, batch, topic, partition, count, on_lost))
                batch, count = kafka.create_batch(), 0
                batch.append(key=key, value=value, timestamp=None)  # an empty batch takes any one record
            count += 1
        sent.append(await _send_batch(kafka, batch, topic, partition, count, on_lost))
    return sent


async def _send_batch(kafka: Any, batch: Any, topic: str, partition: int, count: int,
                      on_lost: Callable[[RecordsNotDelivered], None] | None) -> asyncio.Future[Any]:
    delivered = await kafka.send_batch(batch, topic, partition=partition)

    def check(future: Any) -> None:
        if future.cancelled() or future.exception() is None:
            return
        log.error("records not delivered", extra={"topic": topic, "partition": partition, "records": count,
                                                   "error": repr(future.exception())})
        if on_lost is not None:
            on_lost(RecordsNotDelivered(f"{count} records to {topic}[{partition}] not delivered: {future.exception()!r}"))

    delivered.add_done_callback(check)
    return delivered


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


# The guard's own reasons are under 350 characters.
UNDECODABLE_REASON_CHARS = 512


# Faust's aiokafka consumer has the broker hold a fetch up to 1.5 s when nothing new is there
# (`fetch_max_wait_ms=1500` in `AIOKafkaConsumerThread._create_worker_consumer`), so a quiet
# partition's first fetch response comes up to that long after its first fetch request.
FAUST_FETCH_MAX_WAIT_S = 1.5
# Before that first request: the group's committed offsets are looked up, and the partition's
# leader may need a new connection.
FIRST_FETCH_REQUEST_S = 1.0
# How long a partition's first fetch response may take after its assignment: the stall clock starts that far past it.
FIRST_RESPONSE_DUE_S = FAUST_FETCH_MAX_WAIT_S + FIRST_FETCH_REQUEST_S


def stall_checks_from_assignment(app: "faust.App") -> None:
    """Make Faust's "since start" stall checks count from the latest assignment, not the process start.

    Faust (0.15, `AIOKafkaConsumerThread._verify_aiokafka_event_path`) checks each assigned
    partition every 2.5 commit intervals outside rebalances, and logs `Aiokafka has not sent fetch
    request for TP(...) since start` at ERROR when aiokafka has had no fetch response for it and the
    consumer thread's `time_started` is more than `stream_processing_timeout` ago. aiokafka keeps a
    partition's last response in state it makes anew at every assignment, so after a rebalance every
    partition of a worker up longer than the timeout was an ERROR until its first response came
    (faust-streaming/faust#503): a false page on every rollout of long-running pods. Restarting the
    clock when partitions are assigned (Faust sends this signal before the rebalance ends, so no
    check runs in between) keeps the check for a partition that really gets no response within
    the timeout of its assignment. Faust's other "since start" checks read the same clock and count
    from the assignment too: no highwater (aiokafka's state, new at each assignment as well), and a
    partition with posts waiting that has never had an event or a commit in this process (the
    earliest this worker could have had one). `time_started` has no other reader in Faust.

    The clock starts `FIRST_RESPONSE_DUE_S` (2.5 s) past the assignment, the time a first response
    may take: the broker holds a fetch with nothing new for Faust's 1.5 s, and the first fetch
    follows the committed-offset lookup. Started at the assignment itself, a timeout under about 2 s
    logged the ERROR for a quiet partition at an assignment whenever the check (every 2.5 s) came
    before that response. The checks so fire `stream_processing_timeout` after that point.
    """
    missing: list[bool] = []  # said once a process: the signal comes at every rebalance

    @app.on_partitions_assigned.connect
    async def restart_stall_clock(_app: "faust.App", assigned: Any, **_: Any) -> None:
        thread = getattr(app.consumer, "_thread", None)  # aiokafka's consumer thread; absent in other transports
        if thread is not None and isinstance(getattr(thread, "time_started", None), float):
            # Past now (Faust reads `now - time_started`): a quiet partition's first response takes that long.
            thread.time_started = time.monotonic() + FIRST_RESPONSE_DUE_S
            return
        # Faust's internals moved (a version other than the one pinned): the checks count from the
        # process start again, and a rebalance on a pod older than the timeout pages falsely. Said,
        # not silent, so that the ERROR lines after it are read as what they are.
        if not missing:
            missing.append(True)
            log.warning("Faust's stall-check clock not found; its 'has not sent fetch request' ERROR lines count from the "
                        "process start, not the assignment", extra={"consumer_thread": type(thread).__name__, "faust": _faust_version()})


def _faust_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("faust-streaming")
    except PackageNotFoundError:
        return "unknown"


def undecodable_reason(headers: Any) -> str | None:
    """The guard's reason when a consumed message is its stand-in, else None. Cut to
    UNDECODABLE_REASON_CHARS: a producer can set the header itself, as large as the broker takes,
    and the reason is the dead letter's `message`. Whole, 400 KB of header made a 1.2 MB dead letter
    the producer refused, and the worker stopped on that message after every restart."""
    pairs = headers.items() if isinstance(headers, Mapping) else (headers or ())
    for name, value in pairs:
        if name == UNDECODABLE_HEADER:
            reason = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
            return reason[:UNDECODABLE_REASON_CHARS]
    return None
