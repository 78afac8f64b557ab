"""The n-gram head: a class-balanced logistic regression on hashed word 1-2-grams and in-word
character 2-5-grams, whose probabilities `model.fusion` pools with the LM's (SENTINEL_NGRAM_HEAD).

numpy only, no torch: applying the head is a sum of a few hundred weight rows per post, and the
lexicon path (SENTINEL_BASE=lexicon) must stay torch-free with a head on. Training lives in
`training/ngram.py`. The features are `bench/fusion.py`'s (crc32, so stable across processes and
Python versions), which is what lets the product reproduce its figures (docs/results/indomain/fusion.json).

On disk a head is a directory: `ngram_head.npz` (weights [buckets, 3] and bias [3], LABELS order)
and `ngram_head.json`, its card (the fusion weight w and how it was chosen, the training files).
"""

from __future__ import annotations

import array
import functools
import hashlib
import io
import json
import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from model.labels import LABELS

BUCKETS = 1 << 18
CACHED_WORD_CHARS = 32  # longer words are hashed each time (features)
CHUNK_IDS = 1 << 16  # ids gathered at once by NgramHead.logits: 64k ids, about 1 MB with their rows
MAX_CHARS = 10_000  # stream.contracts' SENTINEL_MAX_TEXT_CHARS default (model/ sits below stream/)
DEFAULT_HEAD, AUTO, NONE = "default", "auto", "none"  # SENTINEL_NGRAM_HEAD's words; anything else is a directory
PACKAGED_HEAD_DIR = Path(__file__).resolve().parent / "heads" / DEFAULT_HEAD
WEIGHTS_FILE = "ngram_head.npz"
CARD_FILE = "ngram_head.json"
HALF_OVER = 2_000_000  # bytes: a float32 weights file over this is written in float16 (NgramHead.save)

_TOKEN = re.compile(r"[a-z0-9$%']+|[^\sa-z0-9]", re.IGNORECASE)


class HeadError(ValueError):
    """A head directory that is missing, unreadable or does not fit this code. The message names the
    file; `name` (the file's name alone) and `reason` let a settings check leave the path out."""

    def __init__(self, path: Path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.name = Path(path).name
        self.reason = reason


def features(text: str, buckets: int = BUCKETS) -> list[int]:
    """Hashed bucket ids of a text's word 1-2-grams and in-word character 2-5-grams, sorted and
    unique (crc32: the same ids in every process). An empty text gets bucket 0, so no row is empty.
    Only the first MAX_CHARS characters are read: a post is at most that long (the contract's cap),
    and a longer line of a file given to `sentinel eval` must not cost gigabytes of gram strings."""
    words = [w.lower() for w in _TOKEN.findall(text[:MAX_CHARS])]
    ids = {zlib.crc32(f"b:{a} {b}".encode()) % buckets for a, b in zip(words, words[1:])}
    for word in words:
        ids.update(_word_ids(word, buckets) if len(word) <= CACHED_WORD_CHARS else _word_grams(word, buckets))
    return sorted(ids) or [0]


def _word_grams(word: str, buckets: int) -> tuple[int, ...]:
    """A word's own ids: its unigram and its character 2-5-grams (padded with < and >)."""
    padded = f"<{word}>"
    return (zlib.crc32(f"w:{word}".encode()) % buckets,
            *(zlib.crc32(f"c:{padded[i:i + n]}".encode()) % buckets for n in range(2, 6) for i in range(len(padded) - n + 1)))


@functools.lru_cache(maxsize=8192)
def _word_ids(word: str, buckets: int) -> array.array:
    """_word_grams, cached. A word's ids depend on the word alone, and chatter repeats its words:
    hashing its character grams once per word, not once per post, makes the head two to three times
    as fast (docs/benchmarks.md). Bounded in words and in their length (features: a long token has
    four ids a character), and held as 4-byte ints, not int objects: 8,192 unique 32-character words
    take 6 MB, not 42."""
    return array.array("i", _word_grams(word, buckets))


def head_dir(setting: Path | str) -> Path | None:
    """SENTINEL_NGRAM_HEAD's directory: `auto` and `default` are the head shipped in the package (as
    SENTINEL_ADAPTER's `default`), wherever the package is installed; `none` is no head; anything
    else is a path. (`auto` pools it only with the model its weight was chosen with: `chosen_with`, and
    sentinel.cli.with_ngram_head.)"""
    if str(setting) == NONE:
        return None
    return PACKAGED_HEAD_DIR if str(setting) in (AUTO, DEFAULT_HEAD) else Path(setting)


def chosen_with(directory: Path) -> str | None:
    """The model id the head's weight was chosen with (its card's fusion.scored_with), read without
    the weights; None when the card does not say. HeadError for a card that does not read."""
    fusion = read_card(directory / CARD_FILE).get("fusion")
    found = fusion.get("scored_with") if isinstance(fusion, dict) else None
    return found if isinstance(found, str) else None


def softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


@dataclass
class NgramHead:
    """weights [buckets, 3] and bias [3] in LABELS order; `card` is what ngram_head.json says. Set by
    load: `sha256`, of the ngram_head.npz read (model.fusion.head_tag names the head by it), and
    `packaged`, whether it was read from PACKAGED_HEAD_DIR."""

    weights: np.ndarray
    bias: np.ndarray
    card: dict[str, Any] = field(default_factory=dict)
    sha256: str | None = None
    packaged: bool = False

    @property
    def buckets(self) -> int:
        return int(self.weights.shape[0])

    @property
    def w(self) -> float:
        """The fusion weight the card names (model.fusion.fuse); 0 is the model alone."""
        return float(self.card.get("fusion", {}).get("w", 0.0))

    def logits(self, texts: Sequence[str]) -> np.ndarray:
        """Each text's summed weight rows over its features, the row L2-normalised (1/sqrt(count)
        per id, as the bench's bag_rows), plus the bias. float32, as the torch EmbeddingBag it was
        trained as, so the probabilities match the bench's. One gather and one segment sum per run
        of posts holding up to CHUNK_IDS ids (per post, numpy's call overhead was a fifth of the
        head's time): so a batch of long posts costs megabytes, not one gather of all its ids."""
        out = np.empty((len(texts), len(LABELS)), dtype=np.float32)
        pending: list[np.ndarray] = []
        first = held = 0
        for row, text in enumerate(texts):
            pending.append(np.array(features(text, self.buckets), dtype=np.int64))
            held += len(pending[-1])
            if held >= CHUNK_IDS or row == len(texts) - 1:
                out[first : row + 1] = self._bag_sums(pending)
                pending, first, held = [], row + 1, 0
        return out + self.bias.astype(np.float32)

    def _bag_sums(self, rows: Sequence[np.ndarray]) -> np.ndarray:
        """The normalised sums of `rows` (each a post's ids, none empty: features gives bucket 0)."""
        counts = np.fromiter((len(ids) for ids in rows), dtype=np.int64, count=len(rows))
        starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
        sums = np.add.reduceat(self.weights.astype(np.float32, copy=False)[np.concatenate(rows)], starts, axis=0)
        return sums * (np.float32(1) / np.sqrt(counts.astype(np.float32)))[:, None]

    def probs(self, texts: Sequence[str]) -> np.ndarray:
        """[n, 3] probabilities in LABELS order (float64 rows summing to 1)."""
        return softmax(self.logits(texts)).astype(np.float64)

    def save(self, directory: Path, *, half: bool | None = None) -> Path:
        """Write ngram_head.npz (compressed) and ngram_head.json. `half`: float16 weights; None
        (the default) keeps float16 for a head whose card says it was float16 on disk, and else picks
        it when float32's file would be over HALF_OVER bytes (the shipped head: 2.1 MB, 1.1 MB in
        float16, every figure of docs/results/indomain/fusion.json unchanged to 4 decimals). The
        card records the dtype written."""
        directory.mkdir(parents=True, exist_ok=True)
        for dtype in self._save_dtypes(half):
            self.card["weights_dtype"] = np.dtype(dtype).name
            np.savez_compressed(directory / WEIGHTS_FILE, weights=self.weights.astype(dtype), bias=self.bias.astype(np.float32),
                                labels=np.array(LABELS))
            if (directory / WEIGHTS_FILE).stat().st_size <= HALF_OVER:
                break
        (directory / CARD_FILE).write_text(json.dumps(self.card, indent=1) + "\n")
        # The head is now the one in `directory`: named by that file, as load would name it.
        self.sha256 = hashlib.sha256((directory / WEIGHTS_FILE).read_bytes()).hexdigest()
        self.packaged = directory.resolve() == PACKAGED_HEAD_DIR
        return directory

    def _save_dtypes(self, half: bool | None) -> tuple[type[np.floating], ...]:
        """The dtypes save tries, in order, stopping at the first file within HALF_OVER. A head read
        from float16 holds float16 values upcast (read_weights): as float32 they compress under
        HALF_OVER, so by size alone a re-save would double the file for no precision gained."""
        if half is None and self.card.get("weights_dtype") == "float16":
            half = True
        return (np.float16,) if half else (np.float32,) if half is False else (np.float32, np.float16)

    @classmethod
    def load(cls, directory: Path) -> NgramHead:
        """Read a head directory; HeadError naming the file for anything missing, corrupt or mismatched."""
        directory = Path(directory)
        if not directory.is_dir():
            raise HeadError(directory, f"not a directory (a head is a directory holding {WEIGHTS_FILE} and {CARD_FILE})")
        card = read_card(directory / CARD_FILE)
        weights, bias, digest = read_weights(directory / WEIGHTS_FILE)
        w = card.get("fusion", {}).get("w") if isinstance(card.get("fusion"), dict) else None
        if not isinstance(w, (int, float)) or isinstance(w, bool) or not 0 <= w <= 100:
            raise HeadError(directory / CARD_FILE, "no fusion weight (fusion.w, a number from 0 to 100)")
        buckets = card.get("buckets", weights.shape[0])
        if buckets != weights.shape[0]:
            raise HeadError(directory / WEIGHTS_FILE, f"{weights.shape[0]} buckets but {CARD_FILE} says {buckets}")
        return cls(weights=weights, bias=bias, card=card, sha256=digest, packaged=directory.resolve() == PACKAGED_HEAD_DIR)


def read_card(path: Path) -> dict[str, Any]:
    try:
        card = json.loads(path.read_text())
    except OSError as exc:
        raise HeadError(path, f"cannot read it ({exc.strerror})") from None
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise HeadError(path, "not JSON") from None
    if not isinstance(card, dict):
        raise HeadError(path, "not a JSON object")
    return card


def read_weights(path: Path) -> tuple[np.ndarray, np.ndarray, str]:
    """weights [buckets, 3] float and bias [3] float, labels in this code's LABELS order, and the
    file's sha256 (hex): of the very bytes parsed, read once, so the hash names what is applied
    even if the file is replaced meanwhile."""
    try:
        raw = path.read_bytes()
        with np.load(io.BytesIO(raw), allow_pickle=False) as data:
            weights, bias, labels = data["weights"], data["bias"], [str(x) for x in data["labels"]]
    except OSError as exc:
        raise HeadError(path, f"cannot read it ({exc.strerror or type(exc).__name__})") from None
    except Exception as exc:  # noqa: BLE001 - a zip, an npy or a key that does not parse: one message naming the file
        raise HeadError(path, f"not a head's weights: a compressed numpy file of weights, bias and labels ({type(exc).__name__})") from None
    if labels != list(LABELS):
        raise HeadError(path, f"labels {labels}, not {list(LABELS)}")
    if weights.ndim != 2 or weights.shape[1] != len(LABELS) or weights.shape[0] < 1 or bias.shape != (len(LABELS),):
        raise HeadError(path, f"weights {weights.shape} and bias {bias.shape}, not [buckets, {len(LABELS)}] and [{len(LABELS)}]")
    if not (np.issubdtype(weights.dtype, np.floating) and np.issubdtype(bias.dtype, np.floating)):
        raise HeadError(path, f"weights of {weights.dtype} and bias of {bias.dtype}, not floating-point numbers")
    if not (np.isfinite(weights).all() and np.isfinite(bias).all()):
        raise HeadError(path, "weights that are not finite numbers")
    # float16 on disk (save), float32 to apply
    return weights.astype(np.float32), bias.astype(np.float32), hashlib.sha256(raw).hexdigest()
