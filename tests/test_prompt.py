import pytest

from model.labels import LABELS, normalize_label
from model.prompt import MARKER, PREFIX, EmptyTextError, PromptCodec, clean_text, render


@pytest.mark.parametrize("text", ["", "   ", "\n\t  \n", "\x00\x01\u200b", "\u202e"])
def test_empty_or_invisible_text_is_rejected(text):
    with pytest.raises(EmptyTextError):
        clean_text(text)


def test_non_string_is_rejected():
    with pytest.raises(TypeError):
        clean_text(None)  # type: ignore[arg-type]


def test_clean_text_keeps_emoji_languages_and_mojibake_but_drops_controls():
    text = "BTC 🚀🚀 lalabas na \x00sa wakas Ã¤ 比特币\u202e"
    cleaned = clean_text(text)
    assert "🚀🚀" in cleaned and "比特币" in cleaned and "Ã¤" in cleaned and "lalabas" in cleaned
    assert "\x00" not in cleaned and "\u202e" not in cleaned


def test_render_is_the_alpaca_template():
    prompt = render("ETH to 10k", "positive")
    assert prompt.startswith("Below is an instruction")
    assert "### Instruction:\n" in prompt and "### Input:\nETH to 10k\n\n### Response:\npositive" in prompt
    assert prompt == PREFIX + "ETH to 10k" + MARKER + "positive"


def test_codec_label_tokens_are_distinct_single_tokens(tokenizer):
    codec = PromptCodec.for_tokenizer(tokenizer)
    assert len(set(codec.label_ids)) == 3
    for word, token in zip(LABELS, codec.label_ids):
        assert tokenizer.decode([token]).strip().lower() == word


def test_overlong_text_is_truncated_but_marker_survives(tokenizer):
    codec = PromptCodec.for_tokenizer(tokenizer, max_post_tokens=16)
    ids = codec.encode(tokenizer, "moon " * 5000)
    assert len(ids) == len(codec.prefix_ids) + 16 + len(codec.marker_ids)
    assert tuple(ids[-len(codec.marker_ids) :]) == codec.marker_ids
    assert tuple(ids[: len(codec.prefix_ids)]) == codec.prefix_ids


def test_many_texts_tokenised_in_one_call_give_each_texts_own_tokens(tokenizer):
    texts = ["BTC 🚀🚀 lalabas na sa wakas", "moon " * 400, "  $ETH\x00 dump\n\n\n\nrug?  ", "比特币 Ã¤ hodl", "a", "Ang taas ng gas fee ngayon, bagsak presyo"]
    codec = PromptCodec.for_tokenizer(tokenizer, max_post_tokens=32)
    assert codec.suffix_ids_many(tokenizer, texts) == [codec.suffix_ids(tokenizer, t) for t in texts]
    assert codec.suffix_ids_many(tokenizer, []) == []
    with pytest.raises(EmptyTextError):
        codec.suffix_ids_many(tokenizer, ["fine", " \u200b "])


def test_encode_matches_rendered_prompt_text(tokenizer):
    codec = PromptCodec.for_tokenizer(tokenizer)
    assert tokenizer.decode(codec.encode(tokenizer, "SOL looks weak")) == render("SOL looks weak")


@pytest.mark.parametrize(
    "raw,label", [("Positive", "positive"), ("NEGATIVE", "negative"), (" neutral. ", "neutral"), ("bullish", "positive")]
)
def test_normalize_label(raw, label):
    assert normalize_label(raw) == label


def test_unknown_label_is_an_error():
    with pytest.raises(ValueError, match="unknown label"):
        normalize_label("moon")
