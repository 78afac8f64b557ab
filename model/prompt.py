"""The Alpaca-LoRA prompt, shared by training and inference.

The prompt is split into three token runs that are tokenised separately and concatenated:

    prefix   = template header + instruction + "### Input:\\n"   (identical for every post)
    post     = the post's text, truncated to a token budget
    marker   = "\\n\\n### Response:\\n"

Tokenising the pieces separately (rather than the joined string) makes the prefix's tokens the
same for every post, which is what lets the classifier compute its KV cache once. Training uses the
same `encode`, so the model is fine-tuned on exactly the token sequences it is scored on, and
truncation only ever cuts the post: the response marker always survives.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Protocol

from model.labels import LABELS

INSTRUCTION = (
    "What is the sentiment of this forum post about the price of the crypto asset it discusses? "
    "Answer with one word: positive, negative or neutral."
)

HEADER = (
    "Below is an instruction that describes a task, paired with an input that provides further "
    "context. Write a response that appropriately completes the request.\n\n"
)

PREFIX = f"{HEADER}### Instruction:\n{INSTRUCTION}\n\n### Input:\n"
MARKER = "\n\n### Response:\n"

DEFAULT_MAX_POST_TOKENS = 192

# C0/C1 controls except tab and newline, plus zero-width and bidi-override characters that a
# post could use to hide text from a human reader of an alert.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff]")


class EmptyTextError(ValueError):
    """A post has no text to classify once whitespace and control characters are removed."""


class Tokenizer(Protocol):
    def __call__(self, text: str | list[str], add_special_tokens: bool = ...) -> object: ...


def clean_text(text: str) -> str:
    """Normalise a post for the model: NFC, control characters dropped, whitespace collapsed.

    Raises EmptyTextError when nothing is left, before any model work is done.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be str, not {type(text).__name__}")
    text = unicodedata.normalize("NFC", text)
    text = _CONTROL.sub(" ", text)
    text = re.sub(r"[ \t]+", " ", text)
    text = re.sub(r"\n{3,}", "\n\n", text).strip()
    if not text:
        raise EmptyTextError("text is empty or whitespace only")
    return text


# Letters and symbols that render as blank space (Hangul fillers, the braille blank): a post of only
# these shows nothing to a reader, as one of zero-width characters does.
_BLANK_GLYPHS = frozenset("\u115f\u1160\u3164\uffa0\u2800")
# Categories that show nothing alone: control, format, surrogates, separators and combining marks
# (a combining accent or a variation selector needs a base character to show). Unassigned code
# points are not among them: an emoji newer than this Python's Unicode tables is one.
_INVISIBLE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zs", "Zl", "Zp", "Mn", "Me"})


def has_visible_text(text: str) -> bool:
    """`clean_text` leaves something to classify, and something a reader would see. The worker
    checks it when it validates a post (stream/contracts.py), so a post of control or zero-width
    characters is an empty_text rejection, not a model failure found only after the batch was split
    and retried down to that one post, nor a blank post counted as neutral chatter; the Discord
    import checks it too."""
    try:
        clean_text(text)
    except EmptyTextError:
        return False
    return any(char not in _BLANK_GLYPHS and unicodedata.category(char) not in _INVISIBLE_CATEGORIES for char in text)


def render(text: str, label: str | None = None) -> str:
    """The prompt as one string (for logs, docs and the naive generate baseline)."""
    body = f"{PREFIX}{clean_text(text)}{MARKER}"
    return body + label if label else body


def _ids(tokenizer: Tokenizer, text: str, special: bool) -> list[int]:
    return list(tokenizer(text, add_special_tokens=special)["input_ids"])  # type: ignore[index]


@dataclass(frozen=True)
class PromptCodec:
    """Token-level view of the prompt for one tokenizer. Build with `PromptCodec.for_tokenizer`."""

    prefix_ids: tuple[int, ...]
    marker_ids: tuple[int, ...]
    label_ids: tuple[int, ...]  # first token of each label word, in LABELS order
    max_post_tokens: int = DEFAULT_MAX_POST_TOKENS

    @classmethod
    def for_tokenizer(cls, tokenizer: Tokenizer, max_post_tokens: int = DEFAULT_MAX_POST_TOKENS) -> "PromptCodec":
        if max_post_tokens < 1:
            raise ValueError("max_post_tokens must be at least 1")
        prefix = _ids(tokenizer, PREFIX, special=True)
        marker = _ids(tokenizer, MARKER, special=False)
        label_ids = tuple(cls._label_token(tokenizer, word) for word in LABELS)
        if len(set(label_ids)) != len(LABELS):
            raise ValueError(f"the tokenizer gives the labels {LABELS} overlapping first tokens {label_ids}")
        return cls(tuple(prefix), tuple(marker), label_ids, max_post_tokens)

    @staticmethod
    def _label_token(tokenizer: Tokenizer, word: str) -> int:
        # Tokenise the label in context, right after the marker, since SentencePiece and BPE
        # tokenizers spell a word differently at the start of a string.
        marker = _ids(tokenizer, MARKER, special=False)
        joined = _ids(tokenizer, MARKER + word, special=False)
        if joined[: len(marker)] != marker or len(joined) == len(marker):
            return _ids(tokenizer, word, special=False)[0]
        return joined[len(marker)]

    def post_ids(self, tokenizer: Tokenizer, text: str) -> list[int]:
        """The post's tokens, cleaned and truncated to the budget (keeping the start of the post)."""
        return _ids(tokenizer, clean_text(text), special=False)[: self.max_post_tokens]

    def suffix_ids(self, tokenizer: Tokenizer, text: str) -> list[int]:
        """Everything after the shared prefix: post tokens then the response marker."""
        return self.post_ids(tokenizer, text) + list(self.marker_ids)

    def suffix_ids_many(self, tokenizer: Tokenizer, texts: list[str]) -> list[list[int]]:
        """`suffix_ids` of each text, tokenised in one call: a fast tokenizer encodes a list in
        Rust threads, and the calling thread (which the worker's event loop shares the interpreter
        with) spends about a fifth of the time of a call per post (`bench/tokenise.py`). Same
        tokens as one call per text."""
        cleaned = [clean_text(t) for t in texts]
        if not cleaned:
            return []
        rows = tokenizer(cleaned, add_special_tokens=False)["input_ids"]  # type: ignore[index]
        marker = list(self.marker_ids)
        return [list(row[: self.max_post_tokens]) + marker for row in rows]

    def encode(self, tokenizer: Tokenizer, text: str) -> list[int]:
        """The whole prompt's tokens, ending at the response position."""
        return list(self.prefix_ids) + self.suffix_ids(tokenizer, text)

