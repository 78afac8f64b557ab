"""The naive baseline the benchmark compares against: one `generate` per post, then string parsing.

This is how the original research and FinGPT score posts: render the full prompt, let the model
write a short answer, and look for a label word in it. It is kept only for `sentinel bench classify`.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from model.labels import LABELS, Label
from model.prompt import render


def parse_answer(answer: str) -> Label | None:
    """The first label word in a free-text answer, or None when there is none."""
    lowered = answer.lower()
    hits = [(lowered.find(word), word) for word in LABELS if word in lowered]
    return min(hits)[1] if hits else None


@torch.inference_mode()
def generate_labels(model: Any, tokenizer: Any, texts: Sequence[str], max_new_tokens: int = 8) -> list[Label | None]:
    device = next(model.parameters()).device
    labels: list[Label | None] = []
    for text in texts:
        enc = tokenizer(render(text), return_tensors="pt").to(device)
        out = model.generate(
            **enc,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
        )
        labels.append(parse_answer(tokenizer.decode(out[0, enc["input_ids"].shape[1] :], skip_special_tokens=True)))
    return labels
