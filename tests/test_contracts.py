"""forum-posts validation: every reason the validator can give, and the output records."""

import base64
import json

import pytest

from stream.assets import detect_assets
from model.scorer import Judgement
from stream.contracts import REASONS, Limits, Post, Rejection, dlq_record, encode_value, parse_post, sentiment_record

NOW = 1_767_000_000.0
GOOD = {"id": "p1", "text": "BTC to the moon", "created_at": "2025-01-01T00:00:00Z"}


def parse(obj_or_bytes, **kw):
    raw = obj_or_bytes if isinstance(obj_or_bytes, bytes) else json.dumps(obj_or_bytes).encode()
    return parse_post(raw, now=NOW, **kw)


def reason(result):
    assert isinstance(result, Rejection), result
    return result.reason


def test_good_post_with_defaults():
    post = parse({**GOOD, "channel": " trading ", "source": "discord"})
    assert isinstance(post, Post)
    assert post.created_at == 1_735_689_600.0 and post.created_at_iso == "2025-01-01T00:00:00Z"
    assert post.assets == ("BTC",) and post.channel == "trading" and post.source == "discord" and post.author is None


def test_epoch_seconds_and_offsets():
    assert parse({**GOOD, "created_at": 1_735_689_600}).created_at == 1_735_689_600.0
    assert parse({**GOOD, "created_at": "2025-01-01T02:00:00+02:00"}).created_at == 1_735_689_600.0


def test_explicit_assets_override_detection():
    assert parse({**GOOD, "assets": ["$eth", "sol "]}).assets == ("ETH", "SOL")


CASES = [
    (b"x" * 70_000, "too_large"),
    (b'{"id": "a", "text": "\xff\xfe"}', "invalid_utf8"),
    (b"not json", "invalid_json"),
    (b'{"id": "a", "text": "x", "created_at": NaN}', "invalid_json"),
    (b'{"id": "a", "text": "x", "created_at": Infinity}', "invalid_json"),
    (b"[" * 1000 + b"]" * 1000, "invalid_json"),
    (b'["a list"]', "not_an_object"),
    (b'"a string"', "not_an_object"),
    ({"text": "x", "created_at": 1_700_000_000}, "missing_field"),
    ({"id": "a", "created_at": 1_700_000_000}, "missing_field"),
    ({"id": "a", "text": "x"}, "missing_field"),
    ({"id": "a", "text": None, "created_at": 1_700_000_000}, "missing_field"),
    ({"id": 5, "text": "x", "created_at": 1_700_000_000}, "invalid_field"),
    ({"id": "a", "text": ["x"], "created_at": 1_700_000_000}, "invalid_field"),
    ({"id": "a", "text": "x", "created_at": "yesterday"}, "invalid_field"),
    ({"id": "a", "text": "x", "created_at": "2025-01-01T00:00:00"}, "invalid_field"),  # no offset
    ({"id": "a", "text": "x", "created_at": True}, "invalid_field"),
    ({"id": "a", "text": "x", "created_at": 1_700_000_000, "channel": 7}, "invalid_field"),
    ({"id": "a", "text": "x", "created_at": 1_700_000_000, "assets": "BTC"}, "invalid_field"),
    ({"id": "a", "text": " \n\t ", "created_at": 1_700_000_000}, "empty_text"),
    ({"id": "a", "text": "x" * 10_001, "created_at": 1_700_000_000}, "text_too_long"),
    ({"id": "a", "text": "x", "created_at": 100}, "timestamp_out_of_range"),
    ({"id": "a", "text": "x", "created_at": "2999-01-01T00:00:00Z"}, "timestamp_out_of_range"),
    ({"id": "a", "text": "x", "created_at": 1_700_000_000, "assets": [f"T{i}" for i in range(21)]}, "too_many_assets"),
    ({"id": "a", "text": "x", "created_at": 1_700_000_000, "assets": ["X" * 33]}, "invalid_field"),
]


@pytest.mark.parametrize("raw,expected", CASES)
def test_each_rejection_reason(raw, expected):
    assert reason(parse(raw)) == expected


def test_every_documented_reason_is_tested():
    # classification_failed: see test_processor; undecodable (a corrupt batch): see test_producers
    tested = {expected for _, expected in CASES} | {"classification_failed", "undecodable"}
    assert tested == set(REASONS)


def test_how_far_ahead_of_the_clock_a_post_may_be_dated_is_a_limit():
    post = json.dumps({"id": "a", "text": "x", "created_at": 1_700_000_000 + 1200}).encode()
    short = Limits(max_future_s=600)  # SENTINEL_MAX_FUTURE=10m, as a 2 h dedupe window wants
    assert reason(parse_post(post, limits=short, now=1_700_000_000)) == "timestamp_out_of_range"
    assert isinstance(parse_post(post, now=1_700_000_000), Post)  # a day by default


def test_none_value_is_rejected():
    assert reason(parse_post(None)) == "invalid_json"


def test_caps_are_configurable():
    assert reason(parse({**GOOD, "text": "x" * 50}, limits=Limits(max_text_chars=10))) == "text_too_long"


def test_dlq_record_keeps_the_original_value():
    rej = Rejection("invalid_utf8", "not UTF-8 at byte 0")
    rec = dlq_record(b"\xff\x00", rej, topic="forum-posts", partition=2, offset=17, at=NOW)
    assert rec["value_encoding"] == "base64" and base64.b64decode(rec["value"]) == b"\xff\x00"
    assert (rec["reason"], rec["source_topic"], rec["source_partition"], rec["source_offset"]) == ("invalid_utf8", "forum-posts", 2, 17)
    assert rec["at"].endswith("Z") and rec["message"]
    assert encode_value(b"plain") == {"value": "plain", "value_encoding": "utf-8"}


def test_sentiment_record_fields():
    post = parse(GOOD)
    rec = sentiment_record(post, Judgement("positive", {"positive": 0.9, "negative": 0.05, "neutral": 0.05}, 0.85),
                           base="smollm2", adapter=None, processed_at=NOW)
    assert set(rec) == {"id", "created_at", "assets", "source", "channel", "label", "probs", "score", "model", "processed_at"}
    assert rec["model"] == {"base": "smollm2", "adapter": None} and rec["assets"] == ["BTC"]


@pytest.mark.parametrize(
    "text,assets",
    [
        ("$BTC and $eth pumping", ["BTC", "ETH"]),
        ("Bitcoin and ethereum", ["BTC", "ETH"]),
        ("shiba inu and dogecoin", ["DOGE", "SHIB"]),
        ("merit circle guild", ["MC"]),
        ("nothing here, only one link to a dot", []),
        ("price$5 is not a cashtag", []),
    ],
)
def test_asset_detection(text, assets):
    assert detect_assets(text) == assets


# --- hostile input (issue 6): each of these crashed the worker, or gave a reason that depended on
# where parse_post was called from, before stream/contracts.py handled it.


@pytest.mark.parametrize("depth", [33, 500, 999, 1000, 5000])
def test_deep_nesting_is_invalid_json_at_any_depth_over_the_cap(depth):
    # 500 levels parse fine at the top of a test's stack but overflow inside a busy worker: the
    # explicit cap makes the reason the same everywhere.
    assert reason(parse(b"[" * depth + b"]" * depth)) == "invalid_json"
    assert reason(parse(b'{"a":' * depth + b"1" + b"}" * depth)) == "invalid_json"
    hidden = json.dumps({**GOOD, "extra": 0}).encode().replace(b"0}", b"[" * depth + b"]" * depth + b"}")
    assert reason(parse(hidden)) == "invalid_json"


def test_nesting_within_the_cap_and_brackets_inside_strings_are_fine():
    nested: object = 1
    for _ in range(Limits().max_json_depth - 1):  # the post object itself is the outermost level
        nested = [nested]
    assert isinstance(parse({**GOOD, "extra": nested}), Post)
    assert isinstance(parse({**GOOD, "text": "BTC " + "[{" * 3000 + '\\"'}), Post)


def test_too_large_is_decided_before_decoding_or_parsing(monkeypatch):
    def no_parsing(*args, **kwargs):
        raise AssertionError("json.loads ran on an oversized message")

    monkeypatch.setattr(json, "loads", no_parsing)
    # 10 MB that is not UTF-8 either: decoding first would say invalid_utf8.
    assert reason(parse_post(b"\xff" * 10_000_000, now=NOW)) == "too_large"


@pytest.mark.parametrize("created_at", [10**400, -(10**400)])
def test_integer_beyond_float_range_is_invalid_field_not_an_overflow(created_at):
    assert reason(parse({**GOOD, "created_at": created_at})) == "invalid_field"


@pytest.mark.parametrize("field", ["id", "text", "channel", "source", "author", "assets"])
def test_unpaired_surrogate_escapes_are_invalid_field(field):
    lone = "BTC \ud800 moon"
    obj = {**GOOD, field: [lone] if field == "assets" else lone}
    result = parse(obj)  # json.dumps writes the escape \ud800, which json.loads accepts
    assert reason(result) == "invalid_field" and result.field == field
    assert result.post_id is None or result.post_id.encode()  # the DLQ key must encode


def test_a_surrogate_pair_is_a_character():
    post = parse({**GOOD, "text": "BTC \ud83d\ude80"})
    assert isinstance(post, Post) and post.text == "BTC \U0001F680"


@pytest.mark.parametrize("text", ["\x00\x01\x02", "\u200b\u200b", "\u202e\u2066", "\x1b\x7f \t", "\ufeff"])
def test_control_or_invisible_only_text_is_empty_text(text):
    from model.prompt import EmptyTextError, clean_text

    with pytest.raises(EmptyTextError):  # the classifier would fail on it: reject it up front
        clean_text(text)
    assert reason(parse({**GOOD, "text": text})) == "empty_text"


def test_control_characters_inside_real_text_keep_the_post():
    text = "\x1b[31m $BTC\x1b[0m \x00 moon \u202egnp\u202c \r\n \x07"
    post = parse({**GOOD, "text": text})
    assert isinstance(post, Post) and post.text == text and post.assets == ("BTC",)


def test_dlq_record_cuts_an_oversized_value_to_the_cap():
    rej = Rejection("too_large", "over the cap")
    raw = ("é" * 6_000_000).encode()  # 12 MB of two-byte characters
    rec = dlq_record(raw, rej, topic="t", partition=0, offset=1, at=NOW, max_value_bytes=65_537)
    assert rec["value_truncated"] is True and rec["value_bytes"] == len(raw)
    # The odd cap splits a character: it is dropped, so the value stays text.
    assert rec["value_encoding"] == "utf-8" and rec["value"] == "é" * 32_768
    small = dlq_record(b"not json", Rejection("invalid_json", "x"), topic="t", partition=0, offset=2, at=NOW, max_value_bytes=65_536)
    assert (small["value"], small["value_truncated"], small["value_bytes"]) == ("not json", False, 8)


@pytest.mark.parametrize("text", ["\u2060\u2060", "\u00ad", "\u3164\u3164", "\u2800", "\ufe0f", "\U000e0041\U000e0042", "\u0301\u0301", " \u3000 "])
def test_text_a_reader_would_see_as_blank_is_empty_text(text):
    # These pass the model's cleaning (it keeps them, so the prompt is unchanged) but show nothing:
    # counted, such a post would be one more neutral message in every window it touches.
    assert reason(parse({**GOOD, "text": text})) == "empty_text"


@pytest.mark.parametrize("text", ["a\u0301", "\U0001fae8", "\u2800 BTC", "\U0001F680\ufe0f"])
def test_visible_text_beside_invisible_characters_keeps_the_post(text):
    # A combining accent on a letter, an emoji newer than Python's Unicode tables (unassigned to it).
    assert isinstance(parse({**GOOD, "text": text}), Post)


@pytest.mark.parametrize(("field", "value", "counted_as"), [
    ("channel", "trading|asset:ETH", "trading\u00a6asset:ETH"),  # never the hidden pair scope of trading and ETH
    ("source", "Crypto | Signals", "Crypto \u00a6 Signals"),
    ("channel", "{all}", "(all)"),  # no hash tag in the scope's keys
    ("channel", "general\nchat", "general chat"),
    ("source", "a\x00b", "a b"),
    ("channel", "hidden\u2066 \u202eevil", "hidden evil"),  # nothing that reorders the text around it
    ("channel", "\U0001F468\u200d\U0001F4BB-dev", "\U0001F468\u200d\U0001F4BB-dev"),  # an emoji's joiner stays
])
def test_a_source_or_channel_name_is_counted_under_a_name_that_can_be_a_scope(field, value, counted_as):
    # Not dead-lettered: the post still belongs in `all` and its assets, and the name is the producer's.
    post = parse({**GOOD, field: value})
    assert isinstance(post, Post) and getattr(post, field) == counted_as


def test_a_name_too_long_to_be_a_scope_is_invalid_field():
    result = parse({**GOOD, "channel": "x" * 129})
    assert reason(result) == "invalid_field" and result.field == "channel" and result.post_id == GOOD["id"]
    assert isinstance(parse({**GOOD, "channel": "x" * 128}), Post)


@pytest.mark.parametrize("assets", [["B|TC"], ["{ETH}"], ["ETH\u200d"]])  # a joiner: a ticker that looks like ETH
def test_an_asset_that_cannot_be_a_scope_name_is_invalid_field(assets):
    result = parse({**GOOD, "assets": assets})
    assert reason(result) == "invalid_field" and result.field == "assets"


@pytest.mark.parametrize("ticker", ["\u0415\u0422\u041d",  # Cyrillic ЕТН
                                    "\u0395\u03a4\u0397",  # Greek ΕΤΗ
                                    "\ua4f0\ua4d4\ua4e7",  # Lisu ꓰꓔꓧ
                                    "\u0395TH",  # a Greek Ε and a Latin TH
                                    "ETH\u0323", "ETH\u0338", "\u00c9TH",  # a mark on ETH, or an accented letter
                                    "\u15f7\u144e\u15f7",  # Canadian syllabics ᗷᑎᗷ (BNB)
                                    "\U0001f171\U0001f183\U0001f172",  # 🅱🆃🅲, Latin letters drawn as symbols
                                    "\u5e01\u5b89\u4eba\u751f2\u0338"])  # a mark on a digit
def test_an_explicit_ticker_that_could_pass_for_another_is_invalid_field(ticker):
    """A hostile producer's `"assets": ["ЕТН"]` (Cyrillic) made a scope `asset:ЕТН` of its own, which every
    notification and the console showed exactly as `asset:ETH`: a fake crash of ETH for the risk team."""
    result = parse({**GOOD, "assets": [ticker]})
    assert reason(result) == "invalid_field" and result.field == "assets" and "could pass for" in result.message


@pytest.mark.parametrize("ticker", ["\uff25\uff34\uff28", "\uff04eth", "\U0001d404\U0001d413\U0001d407"])  # ＥＴＨ, ＄eth, 𝐄𝐓𝐇
def test_an_explicit_tickers_compatibility_form_counts_as_the_ticker(ticker):
    post = parse({**GOOD, "assets": [ticker, "ETH"]})
    assert isinstance(post, Post) and post.assets == ("ETH",)


def test_an_explicit_tickers_cap_holds_once_it_is_normalised():
    """Compatibility forms expand under NFKC (`㎒` is `MHZ`): 11 of them were under the 32-character
    cap as given, and made a ticker of 33 as counted; 32 `ﷺ`s one of 576."""
    result = parse({**GOOD, "assets": ["\u3392" * 11]})
    assert reason(result) == "invalid_field" and result.field == "assets" and "33 characters once normalised" in result.message
    post = parse({**GOOD, "assets": ["\u3392" * 10 + "XY"]})  # 32 once normalised: at the cap
    assert isinstance(post, Post) and post.assets == ("MHZ" * 10 + "XY",)


@pytest.mark.parametrize("ticker", ["\u5e01\u5b89\u4eba\u751f", "\u30df\u30fc\u30e0", "1INCH", "BTC.B",  # 币安人生, ミーム
                                    "\u5e01\u5b89\u4eba\u751f2", "\U0001f438"])  # 币安人生2 (a digit is no Latin letter), 🐸
def test_explicit_tickers_in_other_scripts_are_their_own(ticker):
    post = parse({**GOOD, "assets": [ticker]})
    assert isinstance(post, Post) and post.assets == (ticker,)


@pytest.mark.parametrize("channel", ["💰-price talk", "[EN] general", "wen moon?", "x" * 100, "général", "العربية",
                                     "a  b", "a\u00a0b", "東京\u3000チャット"])  # spaces as given: a scope before stays that scope
def test_names_real_communities_use_are_scopes(channel):
    post = parse({**GOOD, "channel": channel})
    assert isinstance(post, Post) and post.channel == channel


def test_a_missing_field_still_names_the_post_when_its_id_could_be_read():
    assert parse({"id": "m1", "text": "x"}).post_id == "m1"
    assert parse({"id": 5, "text": "x"}).post_id is None
    assert parse({"text": "x", "created_at": GOOD["created_at"]}).post_id is None


@pytest.mark.parametrize(("created_at", "shown"), [(100, "created_at 100 is"), (1_790_000_000_123, "created_at 1790000000123 is"),
                                                   (1e300, "created_at 1e+300 is")])
def test_an_out_of_range_time_is_named_in_a_few_digits(created_at, shown):
    rejected = parse_post(json.dumps({"id": "a", "text": "x", "created_at": created_at}).encode(), now=1_700_000_000)
    assert reason(rejected) == "timestamp_out_of_range" and rejected.message.startswith(shown) and len(rejected.message) < 120
