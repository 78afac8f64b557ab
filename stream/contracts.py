"""Message contracts for the three topics, enforced here and nowhere else (pure). See docs/contracts.md.

- forum-posts (input): one JSON object per message; `parse_post` turns raw bytes into a Post or a
  Rejection with a machine-readable reason.
- post-sentiment (output): `sentiment_record`.
- forum-posts-dlq: `dlq_record`.
"""

from __future__ import annotations

import base64
import json
import math
import re
import unicodedata
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Mapping

from model.prompt import has_visible_text
from model.scorer import Judgement
from stream.assets import DEFAULT_ALIASES, AliasTable, detect_assets, lookalike_problem, normalize_assets
from stream.timefmt import iso

# Every reason the validator can give. Other tools match on these strings: keep them stable.
REASONS: dict[str, str] = {
    "too_large": "the message is larger than the byte cap",
    "invalid_utf8": "the message is not valid UTF-8",
    "invalid_json": "the message is not valid JSON (NaN and Infinity are not JSON either)",
    "not_an_object": "the message is JSON but not an object",
    "missing_field": "a required field (id, text, created_at) is absent or null",
    "invalid_field": "a field has the wrong type or an unusable value",
    "empty_text": "text is empty once whitespace and control/invisible characters are removed",
    "text_too_long": "text is longer than the character cap",
    "timestamp_out_of_range": "created_at is before the earliest or after the latest accepted time",
    "too_many_assets": "an explicit assets list names more assets than the cap (each is a scope the post is counted in)",
    "classification_failed": "the classifier failed on this post on its own (after batch splitting)",
    "undecodable": "the consumer could not decode the record batch (corrupt bytes or an unknown codec); one dead letter stands for the whole batch",
}

OPTIONAL_STRINGS = ("source", "channel", "author")
# Source and channel names become scopes (`channel:<name>`), Redis keys and alert targets.
SCOPE_NAMED = ("source", "channel")
MAX_ID_CHARS = 256
MAX_NAME_CHARS = 128  # Telegram's longest group title; Discord's channel names stop at 100
# Characters a scope name cannot hold, and the look-alikes a source or channel name gets instead, so
# "Crypto | Signals" still counts as itself: `|` joins a channel or source to an asset in the hidden
# pair scopes (`channel:x|asset:ETH`, which a name holding `|asset:` would write into), and braces
# are Redis Cluster hash tags in every key of the scope.
_NAME_LOOKALIKES = str.maketrans({"|": "\u00a6", "{": "(", "}": ")"})
_NAME_RESERVED = frozenset(map(chr, _NAME_LOOKALIKES))
# Joiners are format characters that emoji sequences (👨\u200d💻) and some scripts need in a name.
_JOINERS = frozenset("\u200c\u200d")
# A dead letter keeps at most this much of the original value. JSON escaping can grow a value
# sixfold (a control character becomes \u0001), and 6 x 128 KiB still fits Kafka's default 1 MiB
# message size, whatever SENTINEL_MAX_MESSAGE_BYTES is set to.
DLQ_MAX_VALUE_BYTES = 131_072


@dataclass(frozen=True)
class Limits:
    max_message_bytes: int = 65_536
    max_text_chars: int = 10_000
    min_created_at: float = 1_230_768_000.0  # 2009-01-01, before which no crypto forum existed
    max_future_s: float = 86_400.0  # created_at may run ahead of the wall clock by at most a day
    # Nesting cap checked before json.loads. Without it the interpreter's recursion limit decides,
    # and that depends on how deep the caller's stack already is: the same message could be
    # invalid_json in the worker and a missing_field in a test. A post is 1-2 levels deep.
    max_json_depth: int = 32
    # Every asset is one more scope written per post: an explicit list of thousands would turn one
    # message into thousands of Redis writes and scopes. Real posts name a handful.
    max_assets: int = 20
    max_ticker_chars: int = 32


@dataclass(frozen=True)
class Post:
    id: str
    text: str
    created_at: float  # epoch seconds, UTC: the event time
    assets: tuple[str, ...] = ()
    source: str | None = None
    channel: str | None = None
    author: str | None = None

    @property
    def created_at_iso(self) -> str:
        return iso(self.created_at)


@dataclass(frozen=True)
class Rejection:
    reason: str
    message: str
    field: str | None = None
    post_id: str | None = None


def _reject_constant(token: str) -> Any:
    raise ValueError(f"{token} is not valid JSON")


# A JSON string (escapes included) or one bracket; strings are matched whole so brackets inside
# them are skipped. Unrolled-loop form: linear time on long strings. The closing quote is optional:
# a string never closed runs to the end of the text (which is then no JSON: json.loads says so).
# Required, a failed try at an unclosed string was retried from each escaped quote inside it, each
# try reading to the end: 42 KB of `"\"\"\"...` then 33 brackets cost 12 s of the event loop.
_JSON_TOKEN = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"?|[\[\]{}]', re.DOTALL)


def nesting_exceeds(text: str, limit: int) -> bool:
    """Whether JSON text nests arrays/objects deeper than limit (pure; no parsing)."""
    if text.count("[") + text.count("{") <= limit:
        return False  # cannot nest deeper than it has openers: the common case, counted in C
    depth = 0
    for match in _JSON_TOKEN.finditer(text):
        char = match.group()[0]
        if char in "[{":
            depth += 1
            if depth > limit:
                return True
        elif char in "]}":
            depth -= 1
    return False


def is_unicode(value: str) -> bool:
    """False for strings holding an unpaired surrogate: JSON lets `\\ud800` through as an escape,
    but it is not a character, and encoding it (Redis, Kafka, logs) would raise downstream."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def normal_name(name: str) -> str:
    """A source's or channel's name as its scope holds it: the reserved characters as look-alikes
    (`|` as `¦`, braces as parentheses), line breaks and other controls as spaces, invisible
    formatting (bidi overrides, marks) dropped but the joiners an emoji sequence needs. Spaces are
    left as they are (a name that was a scope before stays that scope). A name is shown on the
    console and in every notification about its scope: nothing in it may hide or reorder the text
    around it."""
    if name.isprintable() and not _NAME_RESERVED.intersection(name):
        return name.strip()  # every post's names pass here: the common case, without a loop in Python
    kept = []
    for char in name.translate(_NAME_LOOKALIKES):
        category = unicodedata.category(char)
        if category in ("Cc", "Zl", "Zp"):
            kept.append(" ")
        elif category not in ("Cf", "Cs") or char in _JOINERS:
            kept.append(char)
    return "".join(kept).strip()


def name_problem(name: str, *, joiners: bool = False) -> str | None:
    """Why a name cannot be a scope's as it is, or None when it can. `joiners`: a channel's or
    source's name may hold the zero-width joiners of an emoji sequence (`normal_name` keeps them);
    a ticker may not (`ETH` and `ETH` with a joiner would look alike)."""
    if len(name) > MAX_NAME_CHARS:
        return f"is {len(name)} characters, over the cap of {MAX_NAME_CHARS}"
    reserved = sorted(_NAME_RESERVED.intersection(name))
    if reserved:
        return f"holds {' '.join(reserved)}, reserved in scope names"
    if has_hidden_characters(name, joiners=joiners):
        return "holds a control or invisible formatting character"
    return None


def has_hidden_characters(text: str, *, joiners: bool = True) -> bool:
    """A control or invisible formatting character (a line break, a bidi override) in a name or an
    operator's text, which would hide or reorder what is shown around it; the zero-width joiners of
    an emoji sequence are allowed where `joiners`."""
    return any(unicodedata.category(char) in ("Cc", "Cf", "Cs", "Zl", "Zp") and not (joiners and char in _JOINERS) for char in text)


def parse_created_at(value: Any) -> float:
    """ISO-8601 with an offset (or Z), or epoch seconds as a number. Raises ValueError."""
    if isinstance(value, bool):
        raise ValueError("created_at must be an ISO-8601 string or epoch seconds, not a boolean")
    if isinstance(value, (int, float)):
        try:
            ts = float(value)
        except OverflowError:  # an integer beyond float range (JSON allows 400-digit numbers)
            raise ValueError("created_at is out of any representable range") from None
        if not math.isfinite(ts):
            raise ValueError("created_at must be finite")
        return ts
    if isinstance(value, str):
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(f"created_at {value[:40]!r} is not ISO-8601") from None
        if parsed.tzinfo is None:
            raise ValueError("created_at must carry a UTC offset (e.g. 2024-01-01T12:00:00Z)")
        return parsed.timestamp()
    raise ValueError(f"created_at must be an ISO-8601 string or epoch seconds, not {type(value).__name__}")


def seconds_shown(ts: float) -> str:
    """Epoch seconds for a dead letter's message: whole, as far as a date can be (milliseconds sent
    as seconds included); past that in six figures, since 1e300 written out is 301 digits."""
    return f"{ts:.0f}" if abs(ts) < 1e15 else f"{ts:.6g}"


def parse_post(
    raw: bytes | None,
    *,
    limits: Limits = Limits(),
    aliases: AliasTable | Mapping[str, str] = DEFAULT_ALIASES,
    now: float | None = None,
) -> Post | Rejection:
    """Validate one raw message. Size caps come first, before any decoding or parsing."""
    if raw is None:
        return Rejection("invalid_json", "the message has no value (a tombstone)")
    if len(raw) > limits.max_message_bytes:
        return Rejection("too_large", f"{len(raw)} bytes is over the cap of {limits.max_message_bytes}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Rejection("invalid_utf8", f"not UTF-8 at byte {exc.start}")
    if nesting_exceeds(text, limits.max_json_depth):
        return Rejection("invalid_json", f"JSON nested deeper than {limits.max_json_depth} levels")
    try:
        obj = json.loads(text, parse_constant=_reject_constant)
    except RecursionError:  # a backstop: the depth check above comes first
        return Rejection("invalid_json", "JSON nested too deeply")
    except ValueError as exc:
        return Rejection("invalid_json", str(exc)[:200])
    if not isinstance(obj, dict):
        return Rejection("not_an_object", f"expected a JSON object, got {type(obj).__name__}")
    return _post_from_object(obj, limits, aliases, now)


def _usable_id(value: Any) -> str | None:
    """The post id when it could be read: a dead letter names its post wherever it can."""
    ok = isinstance(value, str) and bool(value.strip()) and len(value) <= MAX_ID_CHARS and is_unicode(value)
    return value if ok else None


def _post_from_object(
    obj: dict[str, Any], limits: Limits, aliases: AliasTable | Mapping[str, str], now: float | None
) -> Post | Rejection:
    for name in ("id", "text", "created_at"):
        if obj.get(name) is None:
            return Rejection("missing_field", f"{name} is required", field=name, post_id=_usable_id(obj.get("id")))
    post_id = obj["id"]
    if not isinstance(post_id, str) or not post_id.strip() or len(post_id) > MAX_ID_CHARS:
        return Rejection("invalid_field", f"id must be a non-empty string of at most {MAX_ID_CHARS} characters", field="id")
    if not is_unicode(post_id):
        # post_id stays unset: the DLQ uses it as the message key, which must encode.
        return Rejection("invalid_field", "id holds an unpaired surrogate escape", field="id")
    text = obj["text"]
    if not isinstance(text, str):
        return Rejection("invalid_field", f"text must be a string, not {type(text).__name__}", field="text", post_id=post_id)
    if len(text) > limits.max_text_chars:
        return Rejection("text_too_long", f"{len(text)} characters is over the cap of {limits.max_text_chars}", field="text", post_id=post_id)
    if not is_unicode(text):
        return Rejection("invalid_field", "text holds an unpaired surrogate escape", field="text", post_id=post_id)
    if not has_visible_text(text):
        return Rejection("empty_text", "text is empty, whitespace or control characters only", field="text", post_id=post_id)
    try:
        created_at = parse_created_at(obj["created_at"])
    except ValueError as exc:
        return Rejection("invalid_field", str(exc), field="created_at", post_id=post_id)
    latest = (now if now is not None else datetime.now(timezone.utc).timestamp()) + limits.max_future_s
    if not limits.min_created_at <= created_at <= latest:
        return Rejection(
            "timestamp_out_of_range",
            f"created_at {seconds_shown(created_at)} is outside [{iso(limits.min_created_at)}, now + {limits.max_future_s:.0f} s]",
            field="created_at",
            post_id=post_id,
        )
    optional: dict[str, str | None] = {}
    for name in OPTIONAL_STRINGS:
        value = obj.get(name)
        if value is not None and not (isinstance(value, str) and is_unicode(value)):
            return Rejection("invalid_field", f"{name} must be a string of Unicode characters", field=name, post_id=post_id)
        optional[name] = value.strip() or None if isinstance(value, str) else None
    for name in SCOPE_NAMED:
        # A name with a reserved or invisible character is counted under its `normal_name`, not
        # dead-lettered: the post still belongs in `all` and its assets, and the name is the producer's.
        given = optional[name]
        optional[name] = named = (normal_name(given) or None) if given else None
        if named and len(named) > MAX_NAME_CHARS:
            return Rejection("invalid_field", f"{name} is {len(named)} characters, over the cap of {MAX_NAME_CHARS}",
                             field=name, post_id=post_id)
    assets = obj.get("assets")
    if assets is None:
        tickers = detect_assets(text, aliases)
    elif isinstance(assets, list) and len(assets) > limits.max_assets:
        return Rejection("too_many_assets", f"{len(assets)} assets is over the cap of {limits.max_assets}", field="assets", post_id=post_id)
    elif isinstance(assets, list) and all(isinstance(a, str) and is_unicode(a) and len(a) <= limits.max_ticker_chars for a in assets):
        tickers = normalize_assets(assets)
        # The cap holds for the ticker as counted, too: compatibility forms expand under NFKC (`㎒`
        # is `MHZ`, `ﷺ` 18 characters), and 32 of them made a scope name of up to 576 characters.
        # The cap before normalising bounds the work; this one, the name.
        problem = next((f"asset {t[:limits.max_ticker_chars]!r}... is {len(t)} characters once normalised (NFKC), "
                        f"over the cap of {limits.max_ticker_chars}" for t in tickers if len(t) > limits.max_ticker_chars), None)
        problem = problem or next((f"asset {t!r} {p}" for t in tickers if (p := name_problem(t) or lookalike_problem(t))), None)
        if problem:
            return Rejection("invalid_field", problem, field="assets", post_id=post_id)
    else:
        return Rejection("invalid_field", f"assets must be a list of strings of at most {limits.max_ticker_chars} characters",
                         field="assets", post_id=post_id)
    return Post(id=post_id, text=text, created_at=created_at, assets=tuple(tickers), **optional)


def encode_value(raw: bytes | None) -> dict[str, str | None]:
    """The original message value for the DLQ: as text when it is UTF-8, else base64."""
    if raw is None:
        return {"value": None, "value_encoding": None}
    try:
        return {"value": raw.decode("utf-8"), "value_encoding": "utf-8"}
    except UnicodeDecodeError:
        return {"value": base64.b64encode(raw).decode("ascii"), "value_encoding": "base64"}


def utf8_head(raw: bytes, cap: int) -> bytes:
    """The first cap bytes, less a multi-byte character the cut split (so UTF-8 stays text)."""
    head = raw[:cap]
    for cut in range(len(head), max(len(head) - 4, 0), -1):
        try:
            head[:cut].decode("utf-8")
            return head[:cut]
        except UnicodeDecodeError:
            continue
    return head


def dlq_record(
    raw: bytes | None, rejection: Rejection, *, topic: str, partition: int, offset: int, at: float, max_value_bytes: int | None = None
) -> dict[str, Any]:
    """The dead letter. A value over max_value_bytes (a too_large message) is cut to that many
    bytes: a 10 MB message copied whole would be over the producer's request size, the publish
    would fail, and the worker would exit on the same message again after every restart."""
    size = len(raw) if raw is not None else 0
    truncated = raw is not None and max_value_bytes is not None and size > max_value_bytes
    kept = utf8_head(raw, max_value_bytes) if truncated else raw  # type: ignore[arg-type]
    return {
        **encode_value(kept),
        "value_bytes": size,
        "value_truncated": truncated,
        "reason": rejection.reason,
        "message": rejection.message,
        "field": rejection.field,
        "post_id": rejection.post_id,
        "source_topic": topic,
        "source_partition": partition,
        "source_offset": offset,
        "at": iso(at),
    }


def sentiment_record(post: Post, judgement: Judgement, *, base: str, adapter: str | None, processed_at: float) -> dict[str, Any]:
    return {
        "id": post.id,
        "created_at": post.created_at_iso,
        "assets": list(post.assets),
        "source": post.source,
        "channel": post.channel,
        "label": judgement.label,
        "probs": dict(judgement.probs),
        "score": judgement.score,
        "model": {"base": base, "adapter": adapter},
        "processed_at": iso(processed_at),
    }
