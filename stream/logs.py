"""Structured logging: key=value context on every line (or JSON), and secrets redacted."""

from __future__ import annotations

import json
import logging
import re
import sys
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


def setup_logging(level: str = "INFO", as_json: bool = False) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if as_json else KeyValueFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Library chatter (transformers' load reports, kafka internals) only at WARNING and above.
    for noisy in ("transformers", "peft", "urllib3", "aiokafka", "kafka", "faust", "mode", "httpx", "filelock", "bitsandbytes"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    # bitsandbytes warns on every CPU import that an optional 4-bit CPU kernel package is absent.
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    # transformers' per-tensor progress bars on every model load.
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except ImportError:
        pass
