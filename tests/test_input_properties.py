"""Property tests of the input path: bad input never crashes anything (hypothesis; pure, no servers).

The ground rule (docs/contracts.md): bad input gets a clear error and nothing else is lost. A bad
message is a `Rejection` with a documented reason (the dead-letter topic's record); a bad line of a
file is reported with its line number; nothing on the way raises. Every property drives the real
project functions with generated input and checks what the contract says must hold of the result:

- `parse_post` on any bytes, on any JSON value, and on objects holding the contract's fields with
  values of any type returns a Post that meets the contract, or a Rejection whose dead letter can be
  published (JSON, UTF-8, a key that encodes); never an exception.
- The nesting cap agrees with the real depth of any JSON value.
- A source's or channel's name as its scope holds it (`normal_name`), asset detection, the text
  cap's normalisation and the classifier's cleaning never raise, and are idempotent where used so.
- Every Redis key a valid post leads to keeps its scope as the one hash tag, on one line.
- Replay (`sentinel run FILE`) sends any line, a record line's fields holding anything included,
  and names each by its line; the training reader reports every bad JSONL or CSV row by its line,
  and a bad price file is an error naming its line.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import string
import time
from datetime import datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from model.prompt import EmptyTextError, clean_text, has_visible_text, render
from model.scorer import Judgement
from stream.alerts import message
from stream.assets import detect_assets, normalize_assets
from stream.contracts import (
    MAX_ID_CHARS,
    MAX_NAME_CHARS,
    REASONS,
    Limits,
    Post,
    Rejection,
    dlq_record,
    has_hidden_characters,
    is_unicode,
    name_problem,
    nesting_exceeds,
    normal_name,
    parse_post,
    sentiment_record,
)
from stream.batch import RawMessage
from stream.kafka import UNDECODABLE_HEADER, UNDECODABLE_REASON_CHARS, max_request_bytes, record_bytes, undecodable_reason
from stream.keys import bucket_key, cap_cells_prefix, index_key, rollup_index_key, scope_of_index, seen_key
from stream.processor import BatchProcessor
from stream.reporting.prices import PriceError, parse_prices
from stream.settings import Settings
from stream.timefmt import iso
from stream.tools.replay import is_record, pace_time, read_replay_file, replay_item
from stream import assets, windows
from stream.windows import author_key, channel_member, normalised_text, pair_scopes_for, scopes_for, text_key
from training.data import DataError, load_examples

NOW = 1_790_812_800.0  # 2026-10-01T00:00:00Z: the wall clock every parse is judged against
LIMITS = Limits()
# The contract's own reasons for a message: `classification_failed` and `undecodable` are given
# elsewhere (the model, the consumer), never by the parser.
PARSER_REASONS = set(REASONS) - {"classification_failed", "undecodable"}

# SENTINEL_FUZZ_SCALE=20 for a deeper hunt; the default keeps the file to a few seconds.
SCALE = int(os.environ.get("SENTINEL_FUZZ_SCALE", "1"))
SLOW_OK = [HealthCheck.too_slow, HealthCheck.data_too_large]
FAST = settings(max_examples=150 * SCALE, deadline=None, suppress_health_check=SLOW_OK)
QUICK = settings(max_examples=60 * SCALE, deadline=None, suppress_health_check=SLOW_OK)

any_text = st.text(alphabet=st.characters(), max_size=40)
# Unpaired surrogates too: JSON's `\ud800` escape puts one in a parsed string.
surrogate_text = st.text(alphabet=st.one_of(st.characters(), st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)), max_size=40)
# Characters the input path treats specially, or that break naive handling: controls, bidi, joiners, hash-tag braces,
# the pair scopes' `|`, line and paragraph separators, blank glyphs, combining marks, case-changers.
tricky_chars = st.sampled_from(list(
    "\x00\x01\x07\x0b\x0c\r\n\t\x1b\x7f\x85\xa0\xad\u034f\u200b\u200c\u200d\u200e\u202e\u2028\u2029\u2066"
    "\u2800\u3164\ufeff\ufffd{}|$@:#*?[]\\\"' ,.-/\u0301\u0130\u0131\u017f\u212a\u00df\ufb03\u0390\ufdfa"
    "\U0001f468\U0001f4bb\ud800\udfff"
))
tricky_text = st.text(alphabet=st.one_of(tricky_chars, st.characters(), st.sampled_from(string.ascii_letters + string.digits)),
                      max_size=60)
# The same without unpaired surrogates: strings a producer could send as UTF-8.
tricky_unicode = tricky_text.map(lambda t: "".join(c for c in t if not 0xD800 <= ord(c) <= 0xDFFF))
huge_ints = st.one_of(st.integers(), st.integers(min_value=10**300, max_value=10**400), st.integers(min_value=-10**400, max_value=-10**300))
floats = st.floats(allow_nan=True, allow_infinity=True)
json_scalars = st.one_of(st.none(), st.booleans(), huge_ints, floats, surrogate_text, tricky_text)
json_values = st.recursive(json_scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                                  st.dictionaries(surrogate_text, inner, max_size=4)), max_leaves=20)


def _iso_variants(dt: Any) -> list[str]:
    base = dt.isoformat()
    return [base, base.replace("+00:00", "Z"), base.replace("+00:00", "z"), base.replace("T", " "), f"  {base}  ",
            dt.strftime("%Y-%m-%d"), dt.strftime("%Y%m%dT%H%M%S%z"), base[:-6] if len(base) > 6 else base, base.lower(),
            str(dt.timestamp()) if dt.tzinfo else base]


odd_times = st.one_of(
    st.datetimes(timezones=st.timezones()).flatmap(lambda dt: st.sampled_from(_iso_variants(dt))),
    st.datetimes().map(lambda dt: dt.isoformat()),
    st.from_regex(r"\A[0-9+\-:TZz. ]{0,30}\Z"),
    st.sampled_from(["0001-01-01T00:00:00+23:59", "9999-12-31T23:59:59-23:59", "2026-13-01T00:00:00Z", "2026-10-01T24:00:00Z",
                     "2026-10-01T00:00:00+24:00", "2026-W40-1T00:00Z", "2026-274T00:00Z", "+002026-10-01T00:00:00Z",
                     "\uff12\uff10\uff12\uff16-10-01T00:00:00Z", "2026-10-01T00:00:00\ud800Z", "Z", "", " ", "NaN", "1e400"]),
    huge_ints, floats, st.booleans(), st.just(NOW - 3600), st.lists(st.integers(), max_size=2),
)


def field_values(usable: st.SearchStrategy[Any], odd: st.SearchStrategy[Any] | None = None) -> st.SearchStrategy[Any]:
    """A contract field's value: one of its own kind three times in four (so that most posts are
    nearly valid and every check is reached), anything otherwise, its own kind with an unpaired
    surrogate in it among them."""
    odd = st.one_of(usable.map(with_surrogate), odd if odd is not None else st.one_of(
        json_values, st.text(min_size=200, max_size=400), st.sampled_from(["", " ", "\u200b"])))
    # Not one_of(usable, usable, usable, odd): hypothesis flattens nested one_of into equal branches.
    return st.integers(0, 3).flatmap(lambda pick: odd if pick == 0 else usable)


def with_surrogate(value: Any) -> Any:
    """A string (or a list's first string) with half a surrogate pair in it, as a `\\ud800` escape sends."""
    if isinstance(value, str):
        return value[:1] + "\ud800" + value[1:]
    if isinstance(value, list) and value and isinstance(value[0], str):
        return [with_surrogate(value[0]), *value[1:]]
    return value


# A time the contract accepts, as a number or ISO-8601 with any offset, in any of its spellings.
usable_times = st.one_of(
    st.floats(min_value=LIMITS.min_created_at, max_value=NOW),
    st.integers(min_value=int(LIMITS.min_created_at), max_value=int(NOW)),
    st.datetimes(min_value=datetime(2009, 1, 2), max_value=datetime(2026, 9, 29), timezones=st.timezones())
    .flatmap(lambda dt: st.sampled_from(_iso_variants(dt))),
)
# Text with something to see in it, and the characters the input path treats specially around it.
usable_texts = st.tuples(tricky_unicode, st.sampled_from(["gm", "BTC", "$eth", "\U0001f680", "\u4e2d", "x"]), tricky_unicode).map("".join)


# An explicit ticker as producers write them: cashtags, padding, the odd blank or invisible character.
ticker_like = st.tuples(
    st.sampled_from(["", "$", "$$", " $", "$ ", "$\xa0", "$\u3000", "$\u200b", "\t$", "\u2028"]),
    st.one_of(st.sampled_from(["btc", "ETH", "sol", "\u00df", "\ufb03", "\u0131", "a b", "{x}", "a|b", ""]), tricky_unicode),
    st.sampled_from(["", " ", "\n", "\u3000", "$"]),
).map("".join)

post_objects = st.fixed_dictionaries(
    {"id": field_values(tricky_unicode.filter(str.strip)), "text": field_values(usable_texts),
     "created_at": field_values(usable_times, odd_times)},
    optional={
        "source": field_values(tricky_unicode), "channel": field_values(tricky_unicode), "author": field_values(tricky_unicode),
        "assets": field_values(st.lists(ticker_like, max_size=22), st.one_of(st.lists(json_values, max_size=3), json_values)),
        "extra": json_values,
    },
)


def encoded(value: Any, ascii_only: bool) -> bytes:
    """JSON as a producer may send it: ASCII with escapes (where surrogates can travel), or UTF-8."""
    text = json.dumps(value, ensure_ascii=ascii_only)
    return text.encode("utf-8", "surrogatepass")  # a raw surrogate: invalid UTF-8, as a broken producer sends it


def assert_meets_contract(post: Post, limits: Limits = LIMITS) -> None:
    """What every consumer of a Post relies on (docs/contracts.md, forum-posts)."""
    assert isinstance(post.id, str) and post.id.strip() and len(post.id) <= MAX_ID_CHARS and is_unicode(post.id)
    assert isinstance(post.text, str) and len(post.text) <= limits.max_text_chars and is_unicode(post.text)
    assert has_visible_text(post.text)
    clean_text(post.text)  # the classifier's cleaning leaves something: never an EmptyTextError later
    assert isinstance(post.created_at, float) and math.isfinite(post.created_at)
    assert limits.min_created_at <= post.created_at <= NOW + limits.max_future_s
    iso(post.created_at)
    assert len(post.assets) <= limits.max_assets and list(post.assets) == sorted(set(post.assets))
    for ticker in post.assets:
        assert ticker and ticker == ticker.strip() and name_problem(ticker) is None, ticker
    for name in (post.source, post.channel):
        if name is not None:
            assert name and name == normal_name(name) and name_problem(name, joiners=True) is None, name
    if post.author is not None:
        assert post.author.strip() == post.author and post.author and is_unicode(post.author)
    record = sentiment_record(post, Judgement("neutral", {"positive": 0.2, "negative": 0.2, "neutral": 0.6}, 0.0),
                              base="b", adapter=None, processed_at=NOW)
    json.dumps(record, ensure_ascii=False, allow_nan=False).encode("utf-8")
    for scope in [*scopes_for(post), *pair_scopes_for(post)]:
        assert_key_layout(scope)
    if (member := channel_member(post)) is not None:
        assert member.count("|") == (2 if post.source else 1)
    key = author_key(post)
    assert key is None or (len(key) == 16 and all(c in string.hexdigits for c in key))
    text_key(post.text)


def assert_key_layout(scope: str) -> None:
    """A scope's keys carry it as their one Redis Cluster hash tag, on one line, and read back."""
    for key in (bucket_key(scope, 0), index_key(scope), seen_key(scope), cap_cells_prefix(scope), rollup_index_key(scope, "h")):
        assert key.count("{") == 1 and key.count("}") == 1, key
        assert key[key.index("{") + 1: key.index("}")] == scope  # the tag Redis Cluster hashes: the whole scope
        assert not has_hidden_characters(key, joiners=True), key
        key.encode("utf-8")
    assert scope_of_index(index_key(scope)) == scope


def assert_dead_letter(raw: bytes | None, rejection: Rejection) -> None:
    """A rejection the worker can publish: a known reason, a message for humans, and a dead letter
    that is JSON, encodes as UTF-8, and has a key that encodes (processor._dead_letter_value)."""
    assert rejection.reason in PARSER_REASONS, rejection
    assert isinstance(rejection.message, str) and rejection.message.strip(), rejection
    # One line of the run's report, and never the whole input echoed back (the longest: a float's 309 digits).
    assert "\n" not in rejection.message and len(rejection.message) <= 500, rejection
    if rejection.post_id is not None:
        rejection.post_id.encode("utf-8")
    record = dlq_record(raw, rejection, topic="forum-posts", partition=0, offset=1, at=NOW, max_value_bytes=131_072)
    json.dumps(record, ensure_ascii=False, allow_nan=False).encode("utf-8")
    assert record["reason"] == rejection.reason


def check(raw: bytes | None, limits: Limits = LIMITS) -> Post | Rejection:
    result = parse_post(raw, limits=limits, now=NOW)
    if isinstance(result, Post):
        assert_meets_contract(result, limits)
    else:
        assert isinstance(result, Rejection), result
        assert_dead_letter(raw, result)
    return result


# -- the message parser ----------------------------------------------------------------------------


@FAST
@given(st.binary(max_size=300), st.integers(min_value=1, max_value=400))
@example(b"", 65_536)
@example(b"\xff", 65_536)
@example(b'{"id": "\xed\xa0\x80", "text": "x", "created_at": 1}', 65_536)  # a surrogate encoded as UTF-8: not UTF-8
def test_any_bytes_give_a_post_or_a_rejection(raw: bytes, cap: int) -> None:
    result = check(raw, Limits(max_message_bytes=cap))
    if len(raw) > cap:  # the byte cap comes before any decoding or parsing
        assert isinstance(result, Rejection) and result.reason == "too_large"
    elif not _utf8(raw):
        assert isinstance(result, Rejection) and result.reason == "invalid_utf8"


def _utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


@FAST
@given(json_values, st.booleans())
def test_any_json_value_gives_a_post_or_a_rejection(value: Any, ascii_only: bool) -> None:
    result = check(encoded(value, ascii_only))
    if not isinstance(value, dict):  # NaN, Infinity and raw surrogates make it no JSON, or no UTF-8, first
        assert isinstance(result, Rejection) and result.reason in {"not_an_object", "invalid_json", "invalid_utf8"}


@settings(max_examples=300 * SCALE, deadline=None, suppress_health_check=SLOW_OK)
@given(post_objects, st.booleans())
def test_contract_fields_of_any_type_and_value_give_a_post_or_a_rejection(obj: dict[str, Any], ascii_only: bool) -> None:
    check(encoded(obj, ascii_only))


@FAST
# Letters, digits, punctuation and symbols, less the few that show nothing (a Hangul filler).
@given(tricky_text, st.text(alphabet=st.characters(categories=["L", "N", "P", "S"]), min_size=1, max_size=5).filter(has_visible_text),
       st.datetimes(min_value=datetime(2009, 1, 2), max_value=datetime(2026, 9, 29), timezones=st.timezones()))
def test_a_valid_post_with_any_visible_text_and_any_offset_is_accepted(around: str, visible: str, when: datetime) -> None:
    """The other half: the parser does not reject what the contract admits."""
    around = "".join(c for c in around if is_unicode(c))
    text = around + visible + around
    created = when.timestamp()
    result = check(encoded({"id": "p1", "text": text, "created_at": when.isoformat()}, True))
    assert isinstance(result, Post) and result.created_at == created


@QUICK
@given(json_values)
def test_the_nesting_cap_counts_the_real_depth(value: Any) -> None:
    def depth(v: Any) -> int:
        if isinstance(v, list):
            return 1 + max(map(depth, v), default=0)
        if isinstance(v, dict):
            return 1 + max(map(depth, v.values()), default=0)
        return 0

    text = json.dumps(value, ensure_ascii=False)
    for limit in (0, 1, 2, 3):
        assert nesting_exceeds(text, limit) == (depth(value) > limit)


# -- names, assets, texts --------------------------------------------------------------------------


@FAST
@given(st.one_of(tricky_text, surrogate_text))
def test_a_name_as_its_scope_holds_it_is_a_scope_name(name: str) -> None:
    named = normal_name(name)
    assert normal_name(named) == named  # a stored scope name read again is the same scope
    assert named == named.strip() and not {"|", "{", "}"} & set(named)
    assert not has_hidden_characters(named, joiners=True) or not is_unicode(name)
    if is_unicode(name) and named and len(named) <= MAX_NAME_CHARS:
        assert name_problem(named, joiners=True) is None
        assert_key_layout(f"channel:{named}")


@FAST
@given(tricky_text)
def test_asset_detection_never_raises_and_names_scopes(text: str) -> None:
    found = detect_assets(text)
    assert found == sorted(set(found)) == detect_assets(text)
    for ticker in found:
        assert ticker and ticker == ticker.strip() and name_problem(ticker) is None, ticker
        assert_key_layout(f"asset:{ticker}")


@FAST
@given(st.lists(ticker_like, max_size=5))
@example(["$ x"])  # was " X": a scope `asset: X` beside `asset:X`
@example(["$\xa0btc", "$ $eth"])  # were "\xa0BTC" and "$ETH"
def test_normalised_explicit_assets_are_stable(values: list[str]) -> None:
    tickers = normalize_assets(values)
    assert normalize_assets(tickers) == tickers
    assert all(t and t == t.strip() and not t.startswith("$") for t in tickers), tickers


@FAST
@given(tricky_text)
def test_text_normalisation_never_raises_and_is_idempotent(text: str) -> None:
    words = normalised_text(text)
    assert normalised_text(words) == words
    assert words == " ".join(words.split(" ")) and "  " not in words and words == words.strip()


@FAST
@given(st.one_of(tricky_text, any_text))
def test_the_classifiers_cleaning_is_idempotent_and_agrees_with_the_visibility_check(text: str) -> None:
    try:
        cleaned = clean_text(text)
    except EmptyTextError:
        assert not has_visible_text(text)
        return
    assert clean_text(cleaned) == cleaned
    assert render(text).endswith("### Response:\n")


# -- cost: a text at the cap is read in linear time ----------------------------------------------

# The text cap's link pattern before it was made linear: the reference for what a link is.
QUADRATIC_TEXT_LINK = re.compile(r"(?:https?://|www\.)\S+|\b[\w-]+(?:\.[\w-]+)+/\S*", re.IGNORECASE)
link_text = st.one_of(
    st.text(alphabet=st.sampled_from(list("ab-._/ @+:hwtpsK\u017f1")), max_size=30),
    st.lists(st.sampled_from(["a", "-", ".", "/", " ", "@", "+", "www.", "http://", "co", "x@y.io", "..", "-.", "_", "\u00e9"]),
             max_size=14).map("".join),
)


@settings(max_examples=500 * SCALE, deadline=None, suppress_health_check=SLOW_OK)
@given(link_text)
@example("--.a.b/x")  # a name after hyphen-only labels: a link, as before
@example("-.--.abc/x")  # no dot after the first word: not a link, as before
def test_the_text_caps_links_are_the_words_they_were(text: str) -> None:
    assert normalised_text(text) == _with_pattern(windows, "_LINK", QUADRATIC_TEXT_LINK, normalised_text, text)


def _with_pattern(module: Any, name: str, pattern: re.Pattern[str], call: Any, text: str) -> Any:
    """`call(text)` with the module's pattern swapped for the reference one."""
    kept = getattr(module, name)
    setattr(module, name, pattern)
    try:
        return call(text)
    finally:
        setattr(module, name, kept)


# Asset detection's link pattern before it was made linear.
QUADRATIC_ASSET_LINK = re.compile(r"(?:https?://|www\.)\S+|[\w.+-]+@[\w-]+(?:\.[\w-]+)*\.[A-Za-z]{2,}\b", re.IGNORECASE)


@settings(max_examples=500 * SCALE, deadline=None, suppress_health_check=SLOW_OK)
@given(st.one_of(link_text, link_text.map(lambda t: t.replace("a", "eth").replace("b", "BTC"))))
@example("a@b.io+eth@d.io")  # an address glued on to another's end: blanked, as before
@example("eth.a@b.io")
def test_asset_detection_blanks_the_addresses_it_did(text: str) -> None:
    assert _blanked(assets._LINK, text) == _blanked(QUADRATIC_ASSET_LINK, text)  # the very characters
    assert detect_assets(text) == _with_pattern(assets, "_LINK", QUADRATIC_ASSET_LINK, detect_assets, text)


def _blanked(pattern: re.Pattern[str], text: str) -> str:
    """The text asset detection reads once the pattern's links and addresses are blanked."""
    return pattern.sub(lambda m: " " * len(m.group(0)), text)


CAP = LIMITS.max_text_chars
BYTE_CAP = LIMITS.max_message_bytes
# A 4 times longer input costs under 8 times as much: a linear read 4, a pattern tried at each
# position with each try reading to the end 16. A ratio of two timings in one run, each the least of
# a few, not a time: a busy machine slows both, and an absolute bound would be a timed test. The
# slack absorbs the noise of timings a few milliseconds long.
GROWTH, SLACK_S = 8.0, 0.005


def _cost(call: Any, arg: Any) -> float:
    started = time.perf_counter()
    call(arg)
    return time.perf_counter() - started


def assert_linear(call: Any, make: Any, n: int, repeats: int = 5) -> None:
    small_arg, large_arg = make(n), make(4 * n)
    small = min(_cost(call, small_arg) for _ in range(repeats))
    bound = GROWTH * small + SLACK_S
    large = math.inf
    for _ in range(repeats):
        large = min(large, _cost(call, large_arg))
        # Under the bound once is enough; far over it is no pause of a busy machine (and a
        # quadratic read, tried again, costs seconds each time).
        if large < bound or large > 4 * bound:
            break
    assert large < bound, f"4x the input cost {large / small:.1f}x ({small * 1e3:.1f} ms -> {large * 1e3:.1f} ms)"


def _run(unit: str) -> Any:
    """A text of `n` characters: `unit` repeated."""
    return lambda n: (unit * (n // len(unit) + 1))[:n]


# One run of a name's or an address's characters, as long as the text cap allows: each once cost
# 0.3-1.7 s at the cap in one regex (tried at each of its 10,000 positions, each try reading to its end).
HOSTILE_TEXTS = {"a-": _run("a-"), "a.": _run("a."), "ab-": _run("ab-"), "a.a@": lambda n: _run("a.")(n - 1) + "@",
                 "a": _run("a"), "_": _run("_"), "A": _run("A"), "a1": _run("a1"), "a_.": _run("a_.")}


@pytest.mark.parametrize("name", sorted(HOSTILE_TEXTS))
def test_a_text_at_the_cap_is_normalised_in_linear_time_whatever_its_characters(name: str) -> None:
    """A worker's event loop reads every post's text when the text cap is on."""
    assert_linear(normalised_text, HOSTILE_TEXTS[name], CAP)


@pytest.mark.parametrize("name", sorted(HOSTILE_TEXTS))
def test_assets_are_found_in_linear_time_whatever_the_texts_characters(name: str) -> None:
    """As above, for the asset detection every post without `assets` gets in parse_post."""
    assert_linear(detect_assets, HOSTILE_TEXTS[name], CAP)


# Runs that make a domain's or an address's pattern read on to the text's end: a chain of labels
# ending in no TLD (`a.a.a...`, with `%2E` or an ignored character beside each dot), one long label,
# a long run of ignored characters in a link's host. Each cost 5.6 s at 10,000 characters in
# `message.defang` when its domain pattern was tried at each position.
HOSTILE_HOSTS = {"a.": _run("a."), "a%2E": _run("a%2E"), "a%252E": _run("a%252E"), "0x": _run("0x0."), "[1:": _run("[1:"),
                 "http://0x": lambda n: "http://0x" + "1" * (n - 9), "http://": _run("http://x"), "1.": _run("1."), "a": _run("a"), "a-": _run("a-"),
                 "a\ufe0f.": _run("a\ufe0f."), "a.\u00ad": _run("a.\u00ad"), "xn--": _run("xn--"),
                 "1.1.1.1.": _run("1.1.1.1."), "http:// and ignored": lambda n: "http://" + "\ufe0f" * (n - 7)}


@pytest.mark.parametrize("name", sorted(HOSTILE_HOSTS))
def test_links_are_defanged_in_linear_time_whatever_the_texts_characters(name: str) -> None:
    """A scope's name and a sample post are short today, but `defang` takes any text: the larger
    of the two sizes measured is a whole post at the text cap."""
    assert_linear(message.defang, HOSTILE_HOSTS[name], CAP // 4)


# Messages of `n` bytes built to make the nesting check, which runs before json.loads, slow: a
# string never closed, full of escaped quotes, then more brackets than the cap. The first cost 12 s
# at the byte cap when each escaped quote restarted the search for the string's end.
HOSTILE_MESSAGES = {
    "escaped quotes": lambda n: '"' + '\\"' * (n // 3) + "[" * 33,
    "text and escaped quotes": lambda n: '"' + 'a\\"' * (n // 4) + "[" * 33,
    "quotes and backslashes": lambda n: '\\""' * (n // 4) + "[" * 33,
    "brackets in an open string": lambda n: "[" * 20 + '"' + "[{" * (n // 3),
    "a post with an open string": lambda n: '{"id": "p1", "created_at": 1790000000, "text": "' + '\\"[' * (n // 4),
}
# Room for the 4 times longer messages: the caps are not what is measured.
ROOMY = Limits(max_message_bytes=8 * BYTE_CAP, max_text_chars=8 * CAP)


@pytest.mark.parametrize("name", sorted(HOSTILE_MESSAGES))
def test_a_message_at_the_byte_cap_is_judged_in_linear_time(name: str) -> None:
    make = HOSTILE_MESSAGES[name]
    raw = make(BYTE_CAP).encode()
    assert len(raw) <= BYTE_CAP
    result = check(raw)
    assert isinstance(result, Rejection) and result.reason == "invalid_json"
    assert_linear(lambda text: check(text.encode(), ROOMY), make, BYTE_CAP)


# A short run of characters repeated to the cap: where a pattern is tried at each position and each
# try reads to the end, this is what makes it quadratic.
repeated_units = st.lists(st.sampled_from([*'ab-._/ @+:$#<>!&[]{}"\\\nAZ019K\u017f\u200b\u0301', "www.", "http://", "BTC", "USDT", "eth"]),
                          min_size=1, max_size=5).map("".join)


@settings(max_examples=25 * SCALE, deadline=None, suppress_health_check=SLOW_OK)
@given(repeated_units, st.booleans())
@example("a-", True)
@example("a.", True)
@example("_", True)
@example('\\"', False)
def test_any_run_repeated_to_the_cap_is_read_in_linear_time(unit: str, as_text: bool) -> None:
    """As a post's text up to the character cap, or as the whole message up to the byte cap: the
    parse, and the text cap's normalisation of the same text, grow linearly with it."""
    def read(n: int) -> None:
        if as_text:
            text = _run(unit)(n)
            raw = json.dumps({"id": "p1", "text": text, "created_at": NOW - 60}).encode()
        else:
            raw = (unit * (n // len(unit.encode()) + 1)).encode()[:n]
            text = raw.decode("utf-8", "ignore")[:n]
        check(raw, ROOMY)
        normalised_text(text)

    assert_linear(read, lambda n: n, CAP if as_text else BYTE_CAP, repeats=3)


# -- dead letters -----------------------------------------------------------------------------


def _processor(limit: int) -> BatchProcessor:
    """A processor for its dead letters only: no model, store or producer is reached."""
    return BatchProcessor(lambda texts: [], None, None, sentiment_topic="out", dlq_topic="dlq", model_base="m",  # type: ignore[arg-type]
                          model_adapter=None, max_record_bytes=limit)


@settings(max_examples=30 * SCALE, deadline=None, suppress_health_check=SLOW_OK)
@given(st.lists(st.tuples(st.sampled_from([UNDECODABLE_HEADER, "trace-id", ""]), st.one_of(st.none(), st.binary(max_size=8))),
                max_size=3), st.binary(min_size=1, max_size=4), st.integers(min_value=0, max_value=400_000))
@example([], b"\xff", 400_000)  # 400 KB of header made a 1.2 MB dead letter, over the producer's 1 MiB
def test_a_producers_undecodable_header_of_any_size_gives_a_dead_letter_that_can_be_published(
        headers: list[tuple[str, bytes | None]], unit: bytes, repeats: int) -> None:
    """A producer may set the guard's header itself, up to what the broker takes (1 MiB): the
    message is dead-lettered as `undecodable` and its dead letter fits the producer's limit."""
    headers = [*headers, (UNDECODABLE_HEADER, unit * repeats)]
    reason = undecodable_reason(headers)
    assert reason is not None and len(reason) <= UNDECODABLE_REASON_CHARS
    limit = max_request_bytes(Settings())
    msg = RawMessage(b'{"id": "p1"}', "forum-posts", 0, 7, undecodable=reason)
    dead = _processor(limit)._dead_letter_value(msg, Rejection("undecodable", reason))
    assert record_bytes(None, dead) <= limit
    assert json.loads(dead)["reason"] == "undecodable"


# -- files -------------------------------------------------------------------------------------


lines = st.lists(st.one_of(st.binary(max_size=60), json_values.map(lambda v: encoded(v, False)),
                           post_objects.map(lambda o: encoded(o, True))), min_size=1, max_size=8)


# A line `sentinel record` wrote, with its fields holding anything.
record_lines = st.fixed_dictionaries(
    {"topic": json_values, "partition": st.one_of(st.integers(-2, 3), huge_ints, json_values), "offset": json_values,
     "value": st.one_of(tricky_text, surrogate_text, json_values)},
    optional={"value_encoding": st.one_of(st.sampled_from(["utf-8", "base64", "gzip"]), json_values),
              "key": json_values, "key_b64": st.one_of(st.text(alphabet="AQID=+/x", max_size=8), json_values),
              "timestamp": st.one_of(huge_ints, floats, json_values),
              "headers": st.one_of(st.lists(st.fixed_dictionaries({"key": json_values}, optional={"value": json_values, "value_b64": json_values}),
                                            max_size=2), json_values)},
).map(lambda obj: encoded(obj, True))


@FAST
@given(st.one_of(st.binary(max_size=200), record_lines, post_objects.map(lambda o: encoded(o, False))))
def test_any_line_is_an_item_to_send(line: bytes) -> None:
    """Replay sends every line (a bad one reaches the DLQ like any bad message): a post or a line it
    cannot use goes out as it is, a usable record line as the message it recorded."""
    item = replay_item(line)
    try:
        recorded = is_record(json.loads(line))
    except (ValueError, RecursionError):
        recorded = False
    if not recorded:
        assert item.value == line and item.partition is None and item.headers == ()
    assert item.value is None or isinstance(item.value, bytes)
    assert item.key is None or isinstance(item.key, bytes)
    assert item.partition is None or 0 <= item.partition < 2**31
    pace_time(item.event_time, NOW)  # a time to pace by, or None; never an exception


@QUICK
@given(lines, st.sampled_from([b"\n", b"\r\n"]))
def test_replay_names_every_line_it_sends(tmp_path_factory: pytest.TempPathFactory, rows: list[bytes], end: bytes) -> None:
    rows = [r.replace(b"\n", b" ").replace(b"\r", b" ") for r in rows]  # one line each
    path = tmp_path_factory.mktemp("replay") / "posts.jsonl"
    path.write_bytes(end.join(rows) + end)
    items = list(read_replay_file(path))
    assert [i.line for i in items] == [n for n, r in enumerate(rows, start=1) if r.strip()]


@QUICK
@given(lines)
@example([b"\xef\xbb\xbf", b"{}"])  # a file's byte-order mark, alone on its first line: a blank line, neither read nor reported
def test_every_bad_training_line_is_reported_by_its_number(tmp_path_factory: pytest.TempPathFactory, rows: list[bytes]) -> None:
    rows = [r.replace(b"\n", b" ") for r in rows]
    path = tmp_path_factory.mktemp("train") / "examples.jsonl"
    path.write_bytes(b"\n".join(rows) + b"\n")
    try:
        result = load_examples(path, "jsonl", skip_bad=True)
    except DataError as err:  # a fault that ends the read (bytes that are not UTF-8): it names its line
        assert 1 <= err.line <= len(rows) and err.reason
        return
    numbers = sorted([e.line for e in result.examples] + [e.line for e in result.skipped])
    # The reader drops the byte-order mark that starts a file (`_read_text`, as spreadsheets write
    # one): not the first line's text. One anywhere else is a line's, and reported.
    rows[:1] = [r.removeprefix(b"\xef\xbb\xbf") for r in rows[:1]]
    assert numbers == [n for n, r in enumerate(rows, start=1) if r.decode("utf-8").strip()]


csv_cells = st.one_of(tricky_text, st.sampled_from(["positive", "negative", "neutral", "0", "1", "2", '"', '""', '"x', 'x"', "\r", ""]))


@QUICK
@given(st.lists(st.lists(csv_cells, min_size=1, max_size=3).map(",".join), min_size=1, max_size=8), st.booleans())
def test_every_bad_training_csv_row_is_reported_by_its_line(tmp_path_factory: pytest.TempPathFactory, rows: list[str], bom: bool) -> None:
    path = tmp_path_factory.mktemp("train") / "examples.csv"
    content = "text,label\n" + "\n".join(rows) + "\n"
    path.write_bytes(("\ufeff" * bom + content).encode("utf-8", "surrogatepass"))
    total = len(io.StringIO(content, newline="").readlines())  # a lone \r ends a line too, as in the csv module
    try:
        result = load_examples(path, "csv", skip_bad=True)
    except DataError as err:  # a fault that ends the read (a stray quote, bytes that are not UTF-8)
        assert 1 <= err.line <= total + 1 and err.reason
        return
    for line in [e.line for e in result.examples] + [e.line for e in result.skipped]:
        assert 2 <= line <= total
    for err in result.skipped:
        assert str(err).startswith(f"{path}:{err.line}: ") and err.reason


@QUICK
@given(st.lists(st.lists(st.one_of(csv_cells, st.sampled_from(["2026-10-01", "BTC", "$eth", "61234.5", "-1", "nan", "1e400"])),
                         min_size=1, max_size=4).map(",".join), max_size=6))
def test_a_bad_price_file_is_an_error_naming_its_line(rows: list[str]) -> None:
    try:
        closes = parse_prices("date,asset,close\n" + "\n".join(rows))
    except PriceError as err:
        assert " line " in str(err)
        return
    for ticker, days in closes.items():
        assert ticker and ticker == ticker.upper()
        assert all(math.isfinite(c) and c > 0 for c in days.values())
