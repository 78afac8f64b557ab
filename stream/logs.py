"""Structured logging: key=value context on every line (or JSON), and secrets redacted."""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

# Not context: the record's own attributes, and uvicorn's terminal-coloured copy of its message.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName", "color_message"}
# user:password@ in URLs, and secret-like key=value pairs, never reach a log line. The key match is
# a suffix (`access_token=`, `-token=`, `+Authorization=`): Apprise's privacy URLs mask passwords
# but print a service's custom headers (`+Authorization=Bearer...`) and query params verbatim.
_SECRET_KEY = r"[\w.+-]*?(?:password|passwd|pwd|token|secret|api[_-]?key|key|authorization|auth|signature|sig|credentials?)"
_SECRET_PATTERNS = [
    (re.compile(r"(?<=://)([^:/@\s]*):([^@/\s]+)@"), r"\1:***@"),
    (re.compile(rf"(?i)((?<![\w.+-]){_SECRET_KEY}=)[^&\s]+"), r"\1***"),
]


def redact(text: str) -> str:
    for pattern, repl in _SECRET_PATTERNS:
        text = pattern.sub(repl, text)
    return text


# A key=value value that needs no quoting; anything else (spaces, newlines, quotes, control or
# non-ASCII characters) is written as a JSON string, so a post id with a newline in it cannot start a
# forged line in a plain-text log.
_PLAIN = re.compile(r"^[A-Za-z0-9_.:/@+,()\[\]-]*$")
_LINE_BREAKS = str.maketrans({"\n": "\\n", "\r": "\\r", "\u2028": "\\u2028", "\u2029": "\\u2029"})


def _kv(value: Any) -> str:
    text = str(value)
    return text if _PLAIN.match(text) else json.dumps(text)


def _context(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


class KeyValueFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage().translate(_LINE_BREAKS)
        base = f"{self.formatTime(record, '%Y-%m-%dT%H:%M:%S')} {record.levelname:<7} {record.name}: {message}"
        ctx = " ".join(f"{k}={_kv(v)}" for k, v in _context(record).items())
        text = f"{base} {ctx}" if ctx else base
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return redact(text)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
            **_context(record),
        }
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        return redact(json.dumps(payload, default=str))


# A line of a worker's log that says something went wrong: an ERROR or CRITICAL record in either
# format above, a traceback, or the CLI's own `error:` line (a setting refused at start-up).
_ERROR_LINE = re.compile(r'^(?:\S+ (?:ERROR|CRITICAL) |\{"ts": "[^"]*", "level": "(?:ERROR|CRITICAL)"|Traceback \(most recent call last\):|error: )')


# What stream.processor logs at WARNING of one post the input got wrong (a line that is no post, a
# dead letter cut to fit): the input's own fault, which a finished run's summary names, and no word
# on why a run stood still (worth_keeping). The demo stream's two bad lines log one each.
DEAD_LETTERED = "dead-lettered"
DEAD_LETTER_CUT = "dead letter cut to fit the producer's max request size"
# What stream.worker logs at WARNING at start of each alert service that sends in clear text
# (stream.alerts.notify.cleartext): the configuration's choice, said at every start, and no word on
# why a run stood still either; a plain-http relay made every stopped run keep its log (session 57).
CLEARTEXT_SERVICE = "alert service sends in clear text"
# The periodic count of the dead letters of one reason that logged no line of their own (DeadLetterLog).
DEAD_LETTERS_HELD = "dead letters held back"


@dataclass
class _Reason:
    opened: float  # when this reason's window began (its first dead letter since the last summary)
    shown: int = 0  # lines of its own in this window
    held: int = 0  # dead letters past `first` in this window, logged by count only
    example: str | None = None  # the first held one's post id (None: it had none, or none held)


@dataclass(frozen=True)
class HeldLetters:
    """One reason's summary: how many dead letters logged no line of their own over `window_s`."""

    reason: str
    held_back: int
    example_post_id: str | None
    window_s: float


class DeadLetterLog:
    """Which dead letters log a line of their own: the first `first` of each reason in a window of
    `window_s`, then only a count, said once the window has passed (`due`). A flood of 50,000 bad
    messages logged 50,000 WARNING lines, one per message (until session 57): log volume linear in
    hostile input, which buried every other line and filled the node's disk. The DLQ and the
    metric (sentinel_posts_dead_lettered_total) still count every one; the log names a few, and an
    example post id of the rest, to start reading the DLQ from. Pure: the caller logs (stream.processor)."""

    def __init__(self, first: int = 5, window_s: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.first = first
        self.window_s = window_s
        self.clock = clock
        self._reasons: dict[str, _Reason] = {}

    def admit(self, reason: str, post_id: str | None) -> bool:
        """Whether this dead letter logs its own line; if not, it is counted for the summary.
        Call `due` first: a window that has passed starts over."""
        state = self._reasons.setdefault(reason, _Reason(self.clock()))
        if state.shown < self.first:
            state.shown += 1
            return True
        if not state.held:
            state.example = post_id
        state.held += 1
        return False

    def due(self, *, final: bool = False) -> list[HeldLetters]:
        """The summaries of every reason whose window has passed (`final`: all, the worker is
        stopping), each reason's window starting over at its next dead letter. A reason that held
        none back has no summary: its lines said it all."""
        now, said = self.clock(), []
        for reason, state in list(self._reasons.items()):
            if final or now - state.opened >= self.window_s:
                del self._reasons[reason]
                if state.held:
                    said.append(HeldLetters(reason, state.held, state.example, round(now - state.opened, 3)))
        return said


# A WARNING record of the project's own loggers in either format (a library's, such as Faust's
# "Missing sensor state for rebalance" in a calm run, says nothing of why a run stood still); and a
# line that says a stop began: the worker's `shutting down` (worker.Shutdown), the SIGTERM line of a
# command still starting (tools.services), a bare `interrupted`/`terminated` (sentinel.main).
_OWN = r"(?:stream|sentinel)(?:\.[\w.]+)?"
_INPUT_NOTICE = "|".join(re.escape(text) for text in (DEAD_LETTERED, DEAD_LETTER_CUT, DEAD_LETTERS_HELD, CLEARTEXT_SERVICE))
_WARNING_LINE = re.compile(rf'^(?:\S+ WARNING {_OWN}: (?!(?:{_INPUT_NOTICE})(?: |$))'
                           rf'|\{{"ts": "[^"]*", "level": "WARNING", "logger": "{_OWN}", "msg": "(?!(?:{_INPUT_NOTICE})"))')
_STOPPING = r"(?:shutting down|SIGTERM: stopping what this command started)"
_STOP_LINE = re.compile(rf'^(?:\S+ (?:INFO|WARNING) +\S+: {_STOPPING}\b|\{{"ts": "[^"]*", "level": "[A-Z]+", "logger": "[^"]*", "msg": "{_STOPPING}"'
                        r'|(?:interrupted|terminated)\b)')


def worth_keeping(lines: Iterable[str]) -> bool:
    """Whether `sentinel run` keeps its temp worker log after the user stopped an unfinished run:
    where it says an error, or a WARNING of its own before the worker's stop began. A stop is the user's, no
    failure, so a calm log goes; but a run stopped because it looked stuck (the progress line
    standing still while the worker logs `dependency unreachable` or `redis unavailable,
    retrying`) stopped on exactly what those lines say, and deleting them left nothing to read
    (until session 55). Warnings the stop itself causes (leaving the group as the broker goes)
    come after `shutting down` and do not count, nor do the notices of posts the input got wrong
    (DEAD_LETTERED: the demo stream logs two), nor the start's CLEARTEXT_SERVICE; an ordinary run
    logs no other WARNING."""
    stopping = False
    for line in lines:
        if _ERROR_LINE.match(line):
            return True
        stopping = stopping or bool(_STOP_LINE.match(line))
        if not stopping and _WARNING_LINE.match(line):
            return True
    return False


NOISY = ("transformers", "peft", "urllib3", "aiokafka", "kafka", "faust", "mode", "httpx", "filelock", "bitsandbytes")


class RepeatFilter(logging.Filter):
    """Each distinct library line once per `window_s`; the next one after it says how many were held back.

    While the broker is away aiokafka logs every failed connect, metadata refresh and fetch, about
    100 ERROR lines a second per worker on the same few texts (`bench/scale_out.py`): a 20-minute
    outage would write over 100,000, burying the worker's own lines and any log-based alert. A line
    is keyed by its logger, level and text, so a different error still shows at once. A count whose
    repeats stopped is said by the next line through the handler (any logger's) once its window has
    passed: the line again with `held_back` and `held_until` (the last one's time), so a burst is
    never read as one failure, nor an outage as ended at its last shown line. So is the count of a
    line forgotten for `max_keys` (texts that embed changing values crowd the table), and every
    count still held when the process ends (`CountingHandler`)."""

    def __init__(self, window_s: float = 60.0, libraries: tuple[str, ...] = NOISY, clock: Callable[[], float] = time.monotonic,
                 max_keys: int = 512) -> None:
        super().__init__()
        self.window_s = window_s
        self.libraries = libraries
        self.clock = clock
        self.max_keys = max_keys
        # key -> (when last shown, held back since, the last held line's record.created)
        self._shown: dict[tuple[str, int, str], tuple[float, int, float]] = {}
        self._swept = clock()
        # Handler.handle filters before it takes the handler's lock, and Apprise and the model log
        # from threads of their own.
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "_repeat_summary", False):
            return True
        key = None
        if record.name.split(".", 1)[0] in self.libraries:
            try:
                key = (record.name, record.levelno, record.getMessage())
            except Exception:  # noqa: BLE001 - Handler.handle runs filters outside its error handling: emit reports it
                pass
        self._say_ended(key)  # this line's own count, if any, goes on it below
        return key is None or self._first_in_window(key, record)

    def _first_in_window(self, key: tuple[str, int, str], record: logging.LogRecord) -> bool:
        now = self.clock()
        forgotten = []
        with self._lock:
            shown_at, held, _ = self._shown.pop(key, (None, 0, 0.0))
            if shown_at is not None and now - shown_at < self.window_s:
                self._shown[key] = (shown_at, held + 1, record.created)
                return False
            self._shown[key] = (now, 0, record.created)
            while len(self._shown) > self.max_keys:  # texts that embed changing values: forget the oldest
                oldest = next(iter(self._shown))
                _, oldest_held, last = self._shown.pop(oldest)
                if oldest_held:  # its count is said now, or never
                    forgotten.append((oldest, oldest_held, last))
        self._say(forgotten)
        if held:
            record.held_back = held  # lines like this one not logged since it was last shown
        return True

    def _say_ended(self, current: tuple[str, int, str] | None) -> None:
        """Log the held-back count of each line whose window has passed with no line of it since,
        but `current`'s, at most once a second (a sweep of the table)."""
        now = self.clock()
        if now - self._swept < min(1.0, self.window_s):
            return
        with self._lock:
            self._swept = now
            due = [(key, held, last) for key, (shown_at, held, last) in self._shown.items() if held and now - shown_at >= self.window_s and key != current]
            for key, _, last in due:
                self._shown[key] = (now, 0, last)  # shown now: repeats from here are held for a window again
        self._say(due)

    def say_held(self) -> None:
        """Log every count still held, window passed or not: the process is ending, and no later
        line would say them (`CountingHandler.close`)."""
        with self._lock:
            held = [(key, count, last) for key, (_, count, last) in self._shown.items() if count]
            self._shown.clear()
        self._say(held)

    @staticmethod
    def _say(counts: list[tuple[tuple[str, int, str], int, float]]) -> None:
        """Each held line again, with its count and the last one's time (never held itself)."""
        for (name, level, text), held, last in counts:
            logging.getLogger(name).log(level, "%s", text, extra={"held_back": held, "held_until": _iso(last), "_repeat_summary": True})


class CountingHandler(logging.StreamHandler):
    """The worker's handler: on close, its RepeatFilters say the counts they still hold. A count is
    otherwise said by a later line, and a process that logs nothing more (a broker outage, then a
    shutdown) never said that its last shown line had been repeated N times. `logging.shutdown`
    closes every handler: at the interpreter's exit (atexit), and in the worker's own exits, which
    call it before `os._exit` (stream/worker.py)."""

    def close(self) -> None:
        for repeats in [f for f in self.filters if isinstance(f, RepeatFilter)]:
            repeats.say_held()  # through the loggers, while this handler still writes
        super().close()


def _iso(created: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(created))


# aiokafka says at INFO, hidden with the rest of its chatter, that a partition's fetch offset was out
# of range and it reset the position (`auto.offset.reset`, earliest for the worker): the topic was
# deleted and recreated, its records deleted, or retention passed a worker down for days. The
# group then reads from the log's start, with nothing else said.
OUT_OF_RANGE_LOGGER = "aiokafka.consumer.fetcher"
OUT_OF_RANGE_EXPLAINED = ("; the group's committed offset lies outside the partition's log (the topic recreated, records deleted, "
                          "or retention passed it): reading on from the log's first offset, posts already counted are not "
                          "counted again (docs/operations.md, \"Backup and disaster recovery\")")


class OutOfRangeFilter(logging.Filter):
    """Lets through, raised to WARNING and explained, aiokafka's line that a fetch offset was out of
    range (OUT_OF_RANGE_LOGGER's other lines below WARNING stay hidden, as the library's chatter is)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING:
            return True
        if not (isinstance(record.msg, str) and record.msg.startswith("Fetch offset") and "out of range" in record.msg):
            return False
        if not record.msg.endswith(OUT_OF_RANGE_EXPLAINED):
            record.msg += OUT_OF_RANGE_EXPLAINED
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


def setup_logging(level: str = "INFO", as_json: bool = False) -> None:
    handler = CountingHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if as_json else KeyValueFormatter())
    handler.addFilter(RepeatFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Library chatter (transformers' load reports, kafka internals) only at WARNING and above.
    for noisy in NOISY:
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    fetcher = logging.getLogger(OUT_OF_RANGE_LOGGER)
    fetcher.setLevel(logging.INFO if root.level <= logging.WARNING else root.level)
    fetcher.filters[:] = [f for f in fetcher.filters if not isinstance(f, OutOfRangeFilter)] + [OutOfRangeFilter()]
    # bitsandbytes warns on every CPU import that an optional 4-bit CPU kernel package is absent.
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    # transformers' per-tensor progress bars on every model load.
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except ImportError:
        pass
