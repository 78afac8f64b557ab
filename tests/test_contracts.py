"""forum-posts validation: every reason the validator can give, and the output records."""

import base64
import json

import pytest

from stream.assets import detect_assets
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
]


@pytest.mark.parametrize("raw,expected", CASES)
def test_each_rejection_reason(raw, expected):
    assert reason(parse(raw)) == expected


def test_every_documented_reason_is_tested_or_is_the_classifier_one():
    tested = {expected for _, expected in CASES} | {"classification_failed"}  # see test_processor
    assert tested == set(REASONS)


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
    rec = sentiment_record(post, {"label": "positive", "probs": {"positive": 0.9, "negative": 0.05, "neutral": 0.05}, "score": 0.85},
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
