"""Log lines: one event is one line whatever a post id holds, and secrets stay out."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from functools import partial
from pathlib import Path

import pytest

from stream.logs import JsonFormatter, KeyValueFormatter, RepeatFilter, worth_keeping


def record(msg: str, **extra) -> logging.LogRecord:
    rec = logging.LogRecord("stream.processor", logging.WARNING, __file__, 1, msg, (), None)
    rec.__dict__.update(extra)
    return rec


def test_a_post_id_with_a_newline_cannot_forge_a_plain_text_line():
    forged = 'x\n2026-01-01T00:00:00 ERROR   stream.worker: batch failed reason=fake'
    line = KeyValueFormatter().format(record("dead-lettered", post_id=forged, partition=3, reason="invalid_json"))
    assert "\n" not in line and "\r" not in line
    assert 'post_id="x\\n2026-01-01T00:00:00 ERROR' in line and "partition=3 reason=invalid_json" in line


def test_plain_values_stay_unquoted_and_odd_ones_are_json_strings():
    line = KeyValueFormatter().format(record("batch done", batch=7, partitions=[1, 3], offset=12, note='say "hi"\u2028there'))
    assert "batch=7" in line and 'partitions="[1, 3]"' in line and "offset=12" in line
    assert 'note="say \\"hi\\"\\u2028there"' in line


def test_a_message_with_a_line_break_stays_on_one_line():
    assert "\n" not in KeyValueFormatter().format(record("first\nsecond"))


def test_json_lines_escape_by_construction_and_redact():
    line = JsonFormatter().format(record("connect", post_id="a\nb", url="redis://user:hunter2@redis:6379/0"))
    assert "\n" not in line and json.loads(line)["post_id"] == "a\nb" and "hunter2" not in line


def library_record(msg: str, name: str = "aiokafka", level: int = logging.ERROR) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, msg, (), None)


def test_a_log_holds_an_error_where_a_record_traceback_or_error_line_says_one():
    """`sentinel run` keeps its temp worker log after a stop where it says an error (cli.run), at any
    point of it (`worth_keeping`; a warning only before the stop, below)."""
    def at(level: int, msg: str, **extra) -> logging.LogRecord:
        rec = record(msg, **extra)
        rec.levelno, rec.levelname = level, logging.getLevelName(level)
        return rec

    calm = [KeyValueFormatter().format(at(logging.INFO, "shutting down", grace_s=45.0)),
            JsonFormatter().format(at(logging.WARNING, "SIGTERM: stopping what this command started")),
            "terminated", "terminated before the command started",
            # an ERROR only inside a value or a message: one a post could carry
            KeyValueFormatter().format(at(logging.INFO, "error: not one", post_id="x\n2026-01-01T00:00:00 ERROR   y"))]
    assert not worth_keeping(line + "\n" for line in calm)
    for formatter in (KeyValueFormatter(), JsonFormatter()):
        for level in (logging.ERROR, logging.CRITICAL):
            assert worth_keeping([*calm, formatter.format(at(level, "batch failed"))]), (formatter, level)
    assert worth_keeping([*calm, "Traceback (most recent call last):\n", '  File "x.py", line 1\n'])
    assert worth_keeping(["error: SENTINEL_REDIS_URL: not a redis:// URL\n"])  # the CLI's refusal, a worker's start-up
    assert not worth_keeping([])


def test_a_stopped_runs_log_is_kept_where_it_warned_before_the_stop():
    """`sentinel run` stopped by the user keeps its temp worker log where the log says an error, or
    a WARNING before the stop began: a run stopped because it looked stuck (the worker logging
    `dependency unreachable` while the progress line stood still) lost the one log that said why
    until session 55. Warnings the stop itself brings (after `shutting down`, or the SIGTERM line
    of a command still starting) keep nothing."""
    def at(level: int, msg: str, name: str = "stream.worker", **extra) -> logging.LogRecord:
        rec = logging.LogRecord(name, level, __file__, 1, msg, (), None)
        for key, value in extra.items():
            setattr(rec, key, value)
        return rec

    for formatter in (KeyValueFormatter(), JsonFormatter()):
        calm = [formatter.format(at(logging.INFO, "partitions assigned", partitions=[0, 1]))]
        stuck = formatter.format(at(logging.WARNING, "dependency unreachable", "stream.ops.http", dependency="redis", error="ConnectionError"))
        stopping = formatter.format(at(logging.INFO, "shutting down", grace_s=45.0, batch_in_flight=True))
        left = formatter.format(at(logging.WARNING, "could not leave the consumer group; the others take over after the session timeout"))
        sigterm = formatter.format(at(logging.WARNING, "SIGTERM: stopping what this command started", "stream.tools.services"))
        assert worth_keeping(line + "\n" for line in [*calm, stuck, stopping, left]), formatter
        assert not worth_keeping(line + "\n" for line in [*calm, stopping, left]), formatter
        assert not worth_keeping(line + "\n" for line in [sigterm, left]), formatter
        assert not worth_keeping(line + "\n" for line in calm), formatter
        # A library's warning in a calm run (Faust's, at a first assignment) is not the worker's word.
        faust = formatter.format(at(logging.WARNING, "[^-App]: Missing sensor state for rebalance #1", "faust.app.base"))
        assert not worth_keeping(line + "\n" for line in [*calm, faust, stopping]), formatter
        assert worth_keeping([*calm, stopping, formatter.format(at(logging.ERROR, "batch failed"))]), formatter  # an error anywhere
    assert not worth_keeping(["terminated before the command started\n"])
    # A WARNING inside a value (a post's text) is no record's level.
    assert not worth_keeping([KeyValueFormatter().format(at(logging.INFO, "post", text="x\n2026-01-01T00:00:00 WARNING y"))])


def _formatted_line(formatter: logging.Formatter, level: int, msg: str, name: str, **extra: object) -> str:
    """One log line as `formatter` writes it, `extra` as the record's fields."""
    rec = logging.LogRecord(name, level, __file__, 1, msg, (), None)
    for key, value in extra.items():
        setattr(rec, key, value)
    return formatter.format(rec) + "\n"


def test_a_stopped_runs_log_is_not_kept_for_a_post_dead_lettered_before_the_stop():
    """A line of the input that is no post logs `dead-lettered` at WARNING (the demo stream has
    two): a notice of the input's own fault, which a finished run's summary names, not why a run
    stood still. Taken for one, every Ctrl-C of `make demo` past its line 1001 kept the temp worker
    log and named it (session 55's first cut), where session 54 kept only a log that says an error."""
    from stream.logs import DEAD_LETTER_CUT, DEAD_LETTERED, DEAD_LETTERS_HELD

    for formatter in (KeyValueFormatter(), JsonFormatter()):
        line = partial(_formatted_line, formatter)

        calm = line(logging.INFO, "partitions assigned", "stream.worker", partitions=[0, 1])
        bad = line(logging.WARNING, DEAD_LETTERED, "stream.processor", reason="invalid_json", post_id=None, partition=0, offset=1000)
        cut = line(logging.WARNING, DEAD_LETTER_CUT, "stream.processor", post_id="p1", bytes=2_000_000)
        stopping = line(logging.INFO, "shutting down", "stream.worker", grace_s=45.0, batch_in_flight=False)
        assert not worth_keeping([calm, bad, cut, stopping]), formatter
        # Nor the count of a flood's dead letters held back (session 57): the same notice, summed.
        held = line(logging.WARNING, DEAD_LETTERS_HELD, "stream.processor", reason="invalid_json", held_back=4995, example_post_id="x5")
        assert not worth_keeping([calm, bad, held, stopping]), formatter
        # A warning that says what went wrong beside them still keeps it.
        stuck = line(logging.WARNING, "dependency unreachable", "stream.ops.http", dependency="redis", error="ConnectionError")
        assert worth_keeping([calm, bad, stuck, stopping]), formatter
        # Only the project's loggers: one whose name merely begins as theirs is a library's.
        assert not worth_keeping([calm, line(logging.WARNING, "x", "streamlit"), stopping]), formatter


def test_a_stopped_runs_log_is_not_kept_for_an_alert_service_in_clear_text():
    """The worker names at every start an alert service that sends in clear text (a plain-http
    relay): the configuration's choice, which says nothing of why a run stood still. Taken for such
    a word, every Ctrl-C of `sentinel run` with that relay kept the temp worker log and named it."""
    from stream.logs import CLEARTEXT_SERVICE

    for formatter in (KeyValueFormatter(), JsonFormatter()):
        line = partial(_formatted_line, formatter)

        clear = line(logging.WARNING, CLEARTEXT_SERVICE, "stream.worker", service="json://relay.internal/hook: a webhook over plain http")
        stopping = line(logging.INFO, "shutting down", "stream.worker", grace_s=45.0, batch_in_flight=False)
        assert not worth_keeping([clear, stopping]), formatter
        stuck = line(logging.WARNING, "dependency unreachable", "stream.ops.http", dependency="redis", error="ConnectionError")
        assert worth_keeping([clear, stuck, stopping]), formatter


def test_a_library_line_repeated_within_the_window_is_held_back_and_counted():
    now = [0.0]
    repeats = RepeatFilter(window_s=60, clock=lambda: now[0])
    refused = "Unable connect to node with id 111: [Errno 111] Connect call failed ('127.0.0.1', 9092)"
    kept = []
    for second in range(120):  # a broker away for two minutes, 100 failed connects a second
        now[0] = float(second)
        for _ in range(100):
            line = library_record(refused)
            if repeats.filter(line):
                kept.append((second, getattr(line, "held_back", 0)))
    assert kept == [(0, 0), (60, 5999)]
    # A different error, or the same text from our own code, is never held back.
    assert repeats.filter(library_record("Unable to update metadata from [111]"))
    assert all(repeats.filter(library_record(refused, name="stream.worker")) for _ in range(3))


def test_the_held_back_count_is_on_the_line_and_the_key_table_stays_bounded():
    repeats = RepeatFilter(window_s=60, clock=lambda: 0.0, max_keys=4)
    for port in range(10):  # texts that embed a changing value
        assert repeats.filter(library_record(f"connect to {port} failed"))
    assert len(repeats._shown) == 4
    line = library_record("x")
    line.held_back = 7
    assert "held_back=7" in KeyValueFormatter().format(line)


class Caught(logging.Handler):
    """A handler with the worker's filter, keeping what it would have written."""

    def __init__(self, repeats: RepeatFilter) -> None:
        super().__init__()
        self.lines: list[logging.LogRecord] = []
        self.addFilter(repeats)

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record)


def test_a_held_back_count_is_said_when_the_repeats_stop():
    # A burst that ends within the window: without a later line of the same text its count was never
    # said, and one line read as one failure. The next line through the handler says it.
    now = [0.0]
    repeats = RepeatFilter(window_s=60, clock=lambda: now[0])
    caught = Caught(repeats)
    library, own = logging.getLogger("aiokafka.test-repeats"), logging.getLogger("stream.test-repeats")
    for logger in (library, own):
        logger.addHandler(caught)
        logger.propagate = False
    try:
        for second in range(10):
            now[0] = float(second)
            for _ in range(100):
                library.error("Unable connect to node with id %s", 111)
        assert len(caught.lines) == 1
        now[0] = 30.0
        own.warning("still in the window")  # nothing to say yet: the repeats may go on
        assert [r.getMessage() for r in caught.lines] == ["Unable connect to node with id 111", "still in the window"]
        now[0] = 75.0
        own.warning("partitions assigned")
        summary = caught.lines[-2]
        assert (summary.name, summary.levelno, summary.getMessage()) == ("aiokafka.test-repeats", logging.ERROR, "Unable connect to node with id 111")
        assert summary.held_back == 999 and "held_back=999" in KeyValueFormatter().format(summary)
        assert "held_until=" in KeyValueFormatter().format(summary)
        assert caught.lines[-1].getMessage() == "partitions assigned"
        now[0] = 200.0
        own.warning("later")  # said once, not again
        assert len(caught.lines) == 5
    finally:
        for logger in (library, own):
            logger.removeHandler(caught)
            logger.propagate = True


def test_a_library_line_that_cannot_be_formatted_is_left_to_the_handler():
    # Handler.handle runs filters outside its error handling: a filter that raised would raise in
    # aiokafka's own call, where the handler only writes "--- Logging error ---".
    broken = logging.LogRecord("aiokafka", logging.ERROR, __file__, 1, "%d failed", ("not a number",), None)
    assert RepeatFilter().filter(broken)


def test_a_held_back_count_is_said_when_its_line_is_forgotten_for_the_table_bound():
    repeats = RepeatFilter(window_s=60, clock=lambda: 0.0, max_keys=2)
    caught = Caught(repeats)
    library = logging.getLogger("aiokafka.test-forgotten")
    library.addHandler(caught)
    library.propagate = False
    try:
        for _ in range(6):
            library.error("Unable to update metadata")
        library.error("connect to 1 failed")
        library.error("connect to 2 failed")  # a third text: the first, held 5 times, is forgotten
        said = [(r.getMessage(), getattr(r, "held_back", 0)) for r in caught.lines]
        assert ("Unable to update metadata", 5) in said, said
        assert len(repeats._shown) == 2
    finally:
        library.removeHandler(caught)
        library.propagate = True


@pytest.mark.parametrize("exit_by", ["interpreter", "worker"])
def test_a_held_back_count_is_said_when_the_process_ends_with_nothing_logged_after(exit_by):
    """A count is said by a later line; a process whose last lines were a library's repeats (the
    broker away, then SIGTERM) never said it. The handler's close says it: at the interpreter's
    exit, and on the worker's own way out (`logging.shutdown()`, then `os._exit`)."""
    end = "import os; logging.shutdown(); os._exit(3)" if exit_by == "worker" else "pass"
    code = ("import logging\n"
            "from stream.logs import setup_logging\n"
            "setup_logging('INFO')\n"
            "for _ in range(5):\n"
            "    logging.getLogger('aiokafka.conn').error('Unable connect to node with id %s', 111)\n"
            f"{end}\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            cwd=Path(__file__).resolve().parent.parent)
    assert result.returncode == (3 if exit_by == "worker" else 0), result.stderr
    lines = [line for line in result.stderr.splitlines() if "Unable connect to node with id 111" in line]
    assert len(lines) == 2, result.stderr
    assert "held_back" not in lines[0] and "held_back=4" in lines[1] and "held_until=" in lines[1], result.stderr


@pytest.mark.parametrize("level", ["INFO", "WARNING"])
def test_a_fetch_offset_out_of_range_is_said_as_a_warning_and_the_fetchers_chatter_stays_hidden(level):
    """The topic recreated, its records deleted, or retention past a worker down for days: aiokafka
    resets the position (the worker's `auto.offset.reset` is earliest) and says so at INFO, which
    the worker hid with the rest of the library's chatter until session 57: offsets jumped and posts
    came again or went missing with nothing in the log. The line is aiokafka's own text (checked
    against its source below, so an upgrade that rewords it fails here)."""
    import inspect

    from aiokafka.consumer import fetcher

    source = inspect.getsource(fetcher)
    assert '"Fetch offset %s is out of range for partition %s,"' in source and '" resetting offset"' in source
    code = ("import logging\n"
            "from stream.logs import setup_logging\n"
            f"setup_logging({level!r})\n"
            "fetcher = logging.getLogger('aiokafka.consumer.fetcher')\n"
            "fetcher.info('Fetch offset %s is out of range for partition %s, resetting offset', 1000, 'TopicPartition(topic=forum-posts, partition=0)')\n"
            "fetcher.info('Adding fetch request for partition %s at offset %d', 0, 5)\n"
            "fetcher.debug('chatter')\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            cwd=Path(__file__).resolve().parent.parent)
    lines = result.stderr.splitlines()
    assert result.returncode == 0 and len(lines) == 1, result.stderr
    assert " WARNING aiokafka.consumer.fetcher: Fetch offset 1000 is out of range for partition TopicPartition(topic=forum-posts, partition=0)" in lines[0]
    assert "the topic recreated" in lines[0] and "Backup and disaster recovery" in lines[0], lines[0]


def test_dead_letters_log_the_first_few_per_reason_then_one_count_per_window():
    """Pure: the first `first` of a reason each log a line, the rest only a count with the first
    held one's post id, said once the window has passed; each reason on its own."""
    from stream.logs import DeadLetterLog, HeldLetters

    now = [0.0]
    letters = DeadLetterLog(first=3, window_s=60, clock=lambda: now[0])
    shown = [letters.admit("invalid_json", None) for _ in range(3)]
    held = [letters.admit("invalid_json", f"p{i}") for i in range(1000)]
    assert shown == [True] * 3 and not any(held)
    assert letters.admit("empty_text", "e1")  # another reason has lines of its own
    now[0] = 59.9
    assert letters.due() == []  # not before the window has passed
    now[0] = 60.0
    assert letters.due() == [HeldLetters("invalid_json", 1000, "p0", 60.0)]  # empty_text held none: no summary
    assert letters.due() == []  # said once
    # The next window starts over: a few lines again, then counts, all said at the end.
    assert [letters.admit("invalid_json", "q") for _ in range(4)] == [True, True, True, False]
    now[0] = 61.0
    assert letters.due(final=True) == [HeldLetters("invalid_json", 1, "q", 1.0)]  # over the second it ran
