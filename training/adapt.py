"""Domain-adaptive pretraining: a LoRA adapter that learns the community's own language (slang,
Taglish, game and token talk) from unlabelled messages, before the classifier is fine-tuned from it
(`sentinel train --init-adapter`).

The labelled in-domain set is small (a few hundred positive and negative messages), while the
export holds about 17,000 unlabelled pre-2023 messages. Next-token prediction over those teaches
the base their vocabulary without any label (Gururangan et al. 2020, "Don't Stop Pretraining").

What it never reads: messages dated 2023 or later (held out for evaluation), and the texts of the
`select` and `test` splits or any message like one (`domain_corpus`), so neither checkpoint choice
nor the reported figures have seen them.

Pure parts (`domain_corpus`, `likeness_key`, `pack`, `every_nth_apart`) take plain values; `adapt` is the torch shell.
"""

from __future__ import annotations

import json
import logging
import math
import random
import re
import time
import unicodedata
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence, TypeVar

import torch

from model.base import DEFAULT_BASE, load_model
from model.prompt import EmptyTextError, clean_text
from training.discord import ImportReport, discord_posts
from training.indomain import HELD_OUT_FROM, fold, load_discord_labels
from training.trainer import DEFAULT_TARGETS, Progress, base_revision, library_versions, name_the_base, recorded_settings, seed_everything, sha256_file

log = logging.getLogger(__name__)

@dataclass
class AdaptConfig:
    base: str = DEFAULT_BASE
    # The classifier's recipe continues from this adapter, so its shape is the classifier's:
    # r, alpha and targets here are what the card's `sentinel train` line would otherwise set.
    r: int = 8
    alpha: int = 16
    target_modules: tuple[str, ...] = DEFAULT_TARGETS
    learning_rate: float = 2e-4
    epochs: float = 1.0
    max_steps: int | None = None  # at most this many optimizer steps, as `sentinel train --max-steps`
    batch_size: int = 16
    block: int = 128  # tokens per training sequence; messages are packed end to end
    warmup_steps: int = 20
    weight_decay: float = 0.01
    holdout_every: int = 20  # every 20th message is kept apart to measure perplexity before and after
    # Perplexity on the first this many held-out blocks only, as `sentinel train --eval-limit`: the two
    # passes over all of them are most of a short run's time (75 blocks: about a minute each on 2 CPU cores).
    eval_limit: int | None = None
    seed: int = 42
    device: str = "auto"
    dtype: str = "auto"
    cache_dir: Path | None = None


# A corpus message that contains a select or test text this long is left out whole: it would teach
# the held text verbatim. Shorter ones ("gm", "wen moon") are everyday phrases, not the held message.
CONTAINED_MIN = 20
_MENTION = re.compile(r"<[@#][!&]?\d+>|@\S+")
_NOT_WORD = re.compile(r"[\W_]+")
_RUN = re.compile(r"(.)\1+")


def likeness_key(text: str) -> str:
    """A key under which two messages that differ only in case, punctuation, mentions, compatibility
    forms or stretched letters ("Lezgooooo!!" and "lezgo") are the same message."""
    text = _MENTION.sub(" ", unicodedata.normalize("NFKC", text).lower())
    return _RUN.sub(r"\1", " ".join(_NOT_WORD.sub(" ", text).split()))


def domain_corpus(posts: Iterable[dict[str, str]], held_texts: Iterable[str], before: str) -> tuple[list[str], Counter]:
    """The messages to learn from, in order, cleaned, one per text (folding case and spaces); and
    why the others were left out. Left out: messages dated `before` or later, messages like a
    select or test text (`held_texts`: the same text folded or by `likeness_key`, or one containing
    a held text of `CONTAINED_MIN` characters or more), repeats and empty messages."""
    held_folded = {fold(t) for t in held_texts}
    held_keys = {likeness_key(t) for t in held_folded} - {""}
    contained = [t for t in held_folded if len(t) >= CONTAINED_MIN]
    seen: set[str] = set()
    out: list[str] = []
    dropped: Counter = Counter()
    for post in posts:
        if post["created_at"] >= before:
            dropped["held_out_period"] += 1
            continue
        try:
            text = clean_text(post["text"])
        except EmptyTextError:
            dropped["empty"] += 1
            continue
        folded = fold(text)
        if folded in held_folded or likeness_key(folded) in held_keys or any(t in folded for t in contained):
            dropped["like_a_select_or_test_text"] += 1
        elif folded in seen:
            dropped["repeat"] += 1
        else:
            seen.add(folded)
            out.append(text)
    return out, dropped


def pack(token_lists: Iterable[Sequence[int]], block: int, separator: int) -> list[list[int]]:
    """Messages end to end, each followed by `separator` (the end-of-text token), cut into blocks of
    `block` tokens; the ragged tail is dropped. Short chat messages would otherwise be mostly padding."""
    if block < 2:
        raise ValueError("block must be at least 2 tokens")
    stream: list[int] = []
    for tokens in token_lists:
        stream.extend(tokens)
        stream.append(separator)
    return [stream[i : i + block] for i in range(0, len(stream) - block + 1, block)]


T = TypeVar("T")


def every_nth_apart(items: Sequence[T], every: int) -> tuple[list[T], list[T]]:
    """(kept, apart): every `every`-th item is set apart, spread over the whole corpus. Messages are
    set apart before packing, so no held-out message shares a block with a trained one."""
    if every < 2:
        raise ValueError("holdout_every must be at least 2")
    apart = [x for i, x in enumerate(items) if i % every == every - 1]
    kept = [x for i, x in enumerate(items) if i % every != every - 1]
    return kept, apart


def export_corpus(export: Path) -> tuple[list[str], dict[str, Any]]:
    """The pre-2023 messages of the research's Discord export, less every message like a labelled
    `select` or `test` text; and what the card records of it."""
    held = [row.example.text for row in load_discord_labels(export) if row.split != "train"]
    texts, dropped = domain_corpus(discord_posts(export, ImportReport()), held, HELD_OUT_FROM)
    return texts, {"export": {"path": str(export), "sha256": sha256_file(export)}, "before": HELD_OUT_FROM,
                   "select_and_test_texts": len({fold(t) for t in held}), "left_out": dict(sorted(dropped.items())),
                   "messages": len(texts)}


def planned_steps(blocks: int, cfg: AdaptConfig) -> int:
    """Optimizer steps for `blocks` training blocks: --epochs' worth (any fraction of an epoch is at
    least one step), cut to --max-steps, as `sentinel train` plans them."""
    steps = math.ceil(math.ceil(blocks / cfg.batch_size) * cfg.epochs)
    return min(steps, cfg.max_steps) if cfg.max_steps else steps


# -------------------------------------------------------------------- the torch shell


def perplexity(model: Any, blocks: Sequence[list[int]], batch_size: int, device: torch.device) -> float:
    """exp of the mean next-token loss per predicted token. Every block is full (packed, no padding),
    so each batch's mean loss covers rows x (block - 1) predictions and is weighted by that."""
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(blocks), batch_size):
            ids = torch.tensor(blocks[start : start + batch_size], device=device)
            loss = model(input_ids=ids, labels=ids).loss
            positions = ids.shape[0] * (ids.shape[1] - 1)
            total += float(loss) * positions
            count += positions
    model.train()
    return math.exp(total / count) if count else float("nan")


def adapt(cfg: AdaptConfig, texts: Sequence[str], out_dir: Path, source: dict[str, Any], progress: Progress | None = None) -> dict[str, Any]:
    """Train the adapter on `texts` with the next-token loss; save it to `out_dir` with its card.
    `source` says where the texts came from (`export_corpus`'s second value). Returns the card."""
    from peft import LoraConfig, get_peft_model
    from transformers import get_linear_schedule_with_warmup

    seed_everything(cfg.seed)
    model, tokenizer, info = load_model(cfg.base, None, device=cfg.device, dtype=cfg.dtype, cache_dir=cfg.cache_dir)
    if tokenizer.eos_token_id is None:
        raise ValueError(f"the base {cfg.base!r} has no end-of-text token to separate messages with")
    kept, apart = every_nth_apart(texts, cfg.holdout_every)
    train, held = ([pack([tokenizer(t, add_special_tokens=False)["input_ids"] for t in part], cfg.block, tokenizer.eos_token_id)
                    for part in (kept, apart)])
    if not train or not held:
        raise ValueError(f"{len(texts)} messages make {len(train)} training and {len(held)} held-out blocks of {cfg.block} tokens: too few to adapt on")
    model = get_peft_model(model, LoraConfig(task_type="CAUSAL_LM", r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=0.0,
                                             target_modules=list(cfg.target_modules)))
    device = next(model.parameters()).device
    if device.type == "cpu":
        model.set_attn_implementation("eager")  # as in training/trainer.py: faster backward for short blocks on CPU
    steps = planned_steps(len(train), cfg)
    if steps < 1:
        raise ValueError(f"--epochs {cfg.epochs} makes no training step")
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    scheduler = get_linear_schedule_with_warmup(optimizer, min(cfg.warmup_steps, steps // 2), steps)
    measured = held[: cfg.eval_limit] if cfg.eval_limit else held
    before = perplexity(model, measured, cfg.batch_size, device)
    rng = random.Random(cfg.seed)
    started, step, losses = time.perf_counter(), 0, []
    while step < steps:
        order = list(range(len(train)))
        rng.shuffle(order)
        for start in range(0, len(order), cfg.batch_size):
            if step >= steps:
                break
            ids = torch.tensor([train[i] for i in order[start : start + cfg.batch_size]], device=device)
            loss = model(input_ids=ids, labels=ids).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            losses.append(float(loss.detach()))
            if progress:
                progress({"step": step, "total": steps, "loss": losses[-1]})
    seconds = time.perf_counter() - started
    after = perplexity(model, measured, cfg.batch_size, device)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out_dir))  # PEFT hints str (it takes any path)
    card: dict[str, Any] = {
        "base_model": cfg.base,
        "base_revision": base_revision(cfg.base),
        "task": "domain-adaptive pretraining (next-token loss on unlabelled messages); a start for `sentinel train --init-adapter`",
        # `data` and `split` are the keys `sentinel train --init-adapter` copies into the classifier's card.
        "data": [source["export"]] if "export" in source else [],
        "split": {**{k: v for k, v in source.items() if k != "export"}, "held_out_messages": len(apart),
                  "train_blocks": len(train), "held_out_blocks": len(held), "tokens": sum(len(b) for b in train + held)},
        "hyperparameters": recorded_settings(cfg),
        "held_out_perplexity": {"before": round(before, 3), "after": round(after, 3), "blocks": len(measured)},
        "steps": step,
        "final_loss": round(sum(losses[-20:]) / len(losses[-20:]), 4),
        "training_seconds": round(seconds, 1),
        "device": info.device,
        "dtype": info.dtype,
        "libraries": library_versions(),
    }
    (out_dir / "model_card.json").write_text(json.dumps(card, indent=2) + "\n")
    name_the_base(out_dir, cfg.base)
    log.info("adapted", extra={"out": str(out_dir), "steps": step, "perplexity_before": card["held_out_perplexity"]["before"],
                               "perplexity_after": card["held_out_perplexity"]["after"], "seconds": card["training_seconds"]})
    return card
