"""Domain-adaptive pretraining (training/adapt.py): what the corpus holds and leaves out, the packing,
and on a tiny random Llama that the adapter learns the corpus and the classifier trains on from it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import shared_file
from training.adapt import AdaptConfig, adapt, domain_corpus, held_out_blocks, pack
from training.data import Example
from training.indomain import HELD_OUT_FROM, fold, load_discord_labels
from training.trainer import TrainConfig, Trainer, write_model_card


def post(text: str, when: str = "2022-05-01T10:00:00Z") -> dict[str, str]:
    return {"text": text, "created_at": when}


def test_the_corpus_leaves_out_the_held_out_period_the_split_texts_repeats_and_empty_messages():
    posts = [post("wen moon"), post("WEN  moon"), post("gm 2023", "2023-01-01T00:00:00Z"), post("   "),
             post("is this a rug?"), post("staking unlock next week"), post("Staking unlock next week\n")]
    held = {fold("is this a rug?")}
    assert domain_corpus(posts, held, HELD_OUT_FROM) == ["wen moon", "staking unlock next week"]


def test_messages_are_packed_end_to_end_with_a_separator_and_the_ragged_tail_dropped():
    blocks = pack([[1, 2], [3], [4, 5, 6]], block=3, separator=0)
    assert blocks == [[1, 2, 0], [3, 0, 4], [5, 6, 0]]
    assert pack([[1, 2, 3]], block=3, separator=0) == [[1, 2, 3]]  # the tail [0] is dropped
    with pytest.raises(ValueError):
        pack([[1]], block=1, separator=0)


def test_every_nth_block_is_held_out_across_the_corpus():
    blocks = [[i] for i in range(10)]
    train, held = held_out_blocks(blocks, every=4)
    assert held == [[3], [7]] and len(train) == 8 and not {3, 7} & {b[0] for b in train}


CHATTER = [
    "wen moon ser, staking rewards looking juicy",
    "team unlock next week, dump incoming?",
    "gm guild, who is farming the new pool",
    "ang baba ng presyo ngayon, bili na ba",
    "rug pull vibes, devs silent for days",
    "bullish on the token, volume pumping",
]


@pytest.fixture(scope="module")
def adapted(tiny_model_dir, cache_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("adapted")
    cfg = AdaptConfig(base=str(tiny_model_dir), r=4, alpha=8, learning_rate=1e-2, epochs=4, batch_size=4, block=16,
                      warmup_steps=2, holdout_every=5, device="cpu", dtype="float32", cache_dir=cache_dir)
    source = {"export": {"path": "export.csv", "sha256": "ab"}, "messages": len(CHATTER) * 8}
    card = adapt(cfg, CHATTER * 8, out, source)
    return out, card


def test_the_adapter_learns_the_corpus_and_its_card_says_so(adapted):
    out, card = adapted
    # The held-out blocks are other cuts of the same chatter: a model that learned it predicts them better
    # (a 64-wide random model with fixed norms and a tied head cannot get sharp: 0.6 of the start is typical).
    assert card["held_out_perplexity"]["after"] < 0.75 * card["held_out_perplexity"]["before"], card
    assert card["data"] == [{"path": "export.csv", "sha256": "ab"}] and card["split"]["held_out_blocks"] >= 1
    assert card["hyperparameters"]["r"] == 4 and (out / "adapter_model.safetensors").is_file()
    assert json.loads((out / "adapter_config.json").read_text())["r"] == 4
    assert json.loads((out / "model_card.json").read_text()) == card


def test_the_classifier_trains_on_from_the_adapted_weights_and_names_them(adapted, tiny_model_dir, cache_dir, tmp_path):
    out, _ = adapted
    data = [Example(f"{word} {i}", label, i) for i, (word, label) in
            enumerate([("moon", "positive"), ("rekt", "negative"), ("meeting", "neutral")] * 6)]
    cfg = TrainConfig(base=str(tiny_model_dir), r=16, alpha=32, max_steps=2, batch_size=8, eval_every=2, device="cpu",
                      dtype="float32", cache_dir=cache_dir, max_length=16, init_adapter=out)
    trainer = Trainer(cfg, data, data[:6], tmp_path / "clf")
    result = trainer.run()
    card = write_model_card(result, cfg, trainer.info, [], {"train": len(data)})
    # The adapted shape is what trains (not --r 16), and the lineage names the adapted corpus.
    assert card["hyperparameters"]["r"] == 4
    assert card["init_adapter"]["data"] == [{"path": "export.csv", "sha256": "ab"}]
    assert card["init_adapter"]["split"]["messages"] == len(CHATTER) * 8


def test_adapt_cli_on_the_research_export_never_reads_a_held_out_or_split_text(tiny_model_dir, cache_dir, tmp_path):
    export = shared_file("seed", "meritcircle_cleaned_discord.csv")
    from training.adapt import export_corpus

    texts, source = export_corpus(export)
    held = {fold(r.example.text) for r in load_discord_labels(export) if r.split != "train"}
    assert len(held) > 500 and not {fold(t) for t in texts} & held
    assert source["messages"] == len(texts) > 10_000
    env = {**os.environ, "SENTINEL_CACHE_DIR": str(cache_dir)}
    out = tmp_path / "adapted"
    r = subprocess.run([sys.executable, "-m", "sentinel.cli", "adapt", "--export", str(export), "--out", str(out), "--epochs", "0.002",
                        "--base", str(tiny_model_dir), "--device", "cpu", "--dtype", "float32"], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    card = json.loads((out / "model_card.json").read_text())
    assert card["steps"] == 1 and card["split"]["before"] == HELD_OUT_FROM and card["data"][0]["sha256"] == source["export"]["sha256"]
