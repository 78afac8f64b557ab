"""Batched, closed-set scoring of posts with one forward pass per batch.

For each post the model reads `prefix + post + marker` and we look at the next-token logits of the
three label words at the response position: a softmax over just those three gives the
probabilities. The label space is closed by construction; whatever a post says, the answer is one
of LABELS.

Two things make it fast:
- The prefix (about 60 tokens of template and instruction) is identical for every post. Its KV
  cache is computed once at load time and shared, so a batch only runs the post and marker tokens.
- Posts are sorted by length and cut into batches of similar length, which keeps padding small.

Padding is on the left of the suffix, between the shared prefix and the post, and is masked out;
position ids skip it. A post's result therefore does not depend on its batch-mates (up to float
rounding, well under 1e-4 in fp32).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol, Sequence

import torch

from model.base import load_model
from model.prompt import PromptCodec
from model.scorer import Judgement, ModelInfo, judgement_from_probs


class ModelOptions(Protocol):
    """The model settings a Classifier is loaded with (the shell's Settings has them all). Read-only:
    a Classifier never sets them, and Settings' narrower Literal types (dtype, quantize) fit."""

    @property
    def base(self) -> str: ...
    @property
    def adapter(self) -> str: ...
    @property
    def device(self) -> str: ...
    @property
    def dtype(self) -> str: ...
    @property
    def quantize(self) -> str: ...
    @property
    def cache_dir(self) -> Path: ...
    @property
    def batch_size(self) -> int: ...
    @property
    def max_post_tokens(self) -> int: ...


def label_head(model: Any, label_ids: Sequence[int]) -> torch.Tensor:
    """The output-embedding rows of the label tokens, in fp32: the only logits we ever need."""
    head = model.get_output_embeddings()
    if type(head) is not torch.nn.Linear:
        raise TypeError(f"the LM head is a {type(head).__name__}; only a plain linear head (no adapter on it) is supported")
    return head.weight.detach()[list(label_ids)].float()


class Classifier:
    def __init__(self, model: Any, tokenizer: Any, info: ModelInfo, *, batch_size: int = 32, max_post_tokens: int = 192):
        self.model = model
        self.tokenizer = tokenizer
        self.info = info
        self.batch_size = batch_size
        self.codec = PromptCodec.for_tokenizer(tokenizer, max_post_tokens=max_post_tokens)
        self.device = next(model.parameters()).device
        self._decoder = model.get_decoder()
        self._label_head = label_head(model, self.codec.label_ids)
        self._prefix_kv = self._encode_prefix()

    @classmethod
    def load(cls, settings: ModelOptions) -> "Classifier":
        """Build from the settings object (stream.settings.Settings satisfies ModelOptions)."""
        model, tokenizer, info = load_model(
            settings.base,
            settings.adapter,
            device=settings.device,
            dtype=settings.dtype,
            quantize=settings.quantize,
            cache_dir=settings.cache_dir,
        )
        return cls(model, tokenizer, info, batch_size=settings.batch_size, max_post_tokens=settings.max_post_tokens)

    # ------------------------------------------------------------------ public API

    def classify(self, texts: Sequence[str], batch_size: int | None = None) -> list[Judgement]:
        """Judge each text. Raises EmptyTextError for an empty text before any model work."""
        encoded = self.codec.suffix_ids_many(self.tokenizer, list(texts))
        return self.classify_encoded(encoded, batch_size)

    def classify_encoded(self, suffixes: Sequence[Sequence[int]], batch_size: int | None = None) -> list[Judgement]:
        size = batch_size or self.batch_size
        order = sorted(range(len(suffixes)), key=lambda i: len(suffixes[i]))
        results: list[Judgement | None] = [None] * len(suffixes)
        for start in range(0, len(order), size):
            chunk = order[start : start + size]
            probs = self.label_probs([suffixes[i] for i in chunk])
            for i, row in zip(chunk, probs.tolist()):
                results[i] = judgement_from_probs(row)
        return results  # type: ignore[return-value]

    @torch.inference_mode()
    def label_probs(self, suffixes: Sequence[Sequence[int]]) -> torch.Tensor:
        """[batch, 3] probabilities over LABELS for suffix token runs (post + marker)."""
        hidden = suffix_hidden(self._decoder, self._prefix_kv, suffixes, self.tokenizer.pad_token_id, self.device)
        # The three label logits are projected in fp32: in bf16 a logit near 20 is rounded to a
        # multiple of 0.125, which alone moves probabilities by several percent.
        logits = hidden.float() @ self._label_head.T
        return torch.softmax(logits, dim=-1).cpu()

    # ------------------------------------------------------------------ the shared prefix

    @torch.inference_mode()
    def _encode_prefix(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return encode_prefix(self._decoder, self.codec.prefix_ids, self.device)


PrefixKV = list[tuple[torch.Tensor, torch.Tensor]]


def encode_prefix(decoder: Any, prefix_ids: Sequence[int], device: torch.device) -> PrefixKV:
    """Run the shared prompt prefix once; its per-layer keys and values (gradients flow when enabled)."""
    ids = torch.tensor([list(prefix_ids)], dtype=torch.long, device=device)
    cache = decoder(input_ids=ids, use_cache=True).past_key_values
    return [(layer.keys, layer.values) for layer in cache.layers]


def expand_prefix(prefix_kv: PrefixKV, batch: int) -> Any:
    from transformers import DynamicCache

    # expand() makes views, not copies; the cache's update concatenates into new tensors,
    # so the shared prefix is never written to.
    return DynamicCache(ddp_cache_data=[(k.expand(batch, -1, -1, -1), v.expand(batch, -1, -1, -1)) for k, v in prefix_kv])


def pad_suffixes(suffixes: Sequence[Sequence[int]], prefix_len: int, pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Left-pad suffixes that continue a shared prefix: (input_ids, attention_mask over prefix+suffix, position_ids)."""
    batch, width = len(suffixes), max(len(s) for s in suffixes)
    # Two tensors from Python lists, not two torch calls per row: each call lets go of the
    # interpreter lock and waits to take it back, which behind a busy event loop (the model on a
    # worker thread) took 12% of the model thread's time on an H200 with 400 scopes
    # (docs/results/gpu_pipeline_h200_pyspy.json).
    ids = torch.tensor([[pad_id] * (width - len(s)) + list(s) for s in suffixes], dtype=torch.long)
    suffix_mask = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in suffixes], dtype=torch.long)
    # Real tokens continue the prefix's positions; pads get a harmless position and are masked.
    positions = (prefix_len + suffix_mask.cumsum(dim=1) - 1).clamp(min=prefix_len)
    mask = torch.cat([torch.ones((batch, prefix_len), dtype=torch.long), suffix_mask], dim=1)
    return ids, mask, positions


def suffix_hidden(decoder: Any, prefix_kv: PrefixKV, suffixes: Sequence[Sequence[int]], pad_id: int, device: torch.device) -> torch.Tensor:
    """[batch, hidden] final hidden state at each suffix's last token (the response position)."""
    prefix_len = prefix_kv[0][0].shape[-2]
    ids, mask, positions = pad_suffixes(suffixes, prefix_len, pad_id)
    out = decoder(
        input_ids=ids.to(device),
        attention_mask=mask.to(device),
        position_ids=positions.to(device),
        past_key_values=expand_prefix(prefix_kv, len(suffixes)),
        use_cache=True,
    )
    return out.last_hidden_state[:, -1, :]
