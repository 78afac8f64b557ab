"""Domain-adaptive pretraining (training/adapt.py): what the corpus holds and leaves out, the packing,
and on a tiny random Llama that the adapter learns the corpus and the classifier trains on from it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from safetensors.torch import load_file

from conftest import shared_file
from training.adapt import AdaptConfig, adapt, domain_corpus, every_nth_apart, likeness_key, pack, planned_steps
from training.data import Example
from training.discord import ImportReport, discord_posts
from training.indomain import HELD_OUT_FROM, fold, load_discord_labels
from training.trainer import TrainConfig, Trainer, write_model_card


def post(text: str, when: str = "2022-05-01T10:00:00Z") -> dict[str, str]:
    return {"text": text, "created_at": when}


def test_the_corpus_leaves_out_the_held_out_period_texts_like_the_splits_repeats_and_empty_messages():
    posts = [post("wen moon"), post("WEN  moon"), post("gm 2023", "2023-01-01T00:00:00Z"), post("   "),
             post("is this a rug?"), post("Is this a RUG"), post("is\u0007 this a rug?"), post("<@123> is this a ruuug!!"),
             post("pano mag join sa duckrace if ever na meron pa?"), post("staking unlock next week"),
             post("Staking unlock next week\n"), post("gm")]
    held = ["is this a rug?", "pano mag join sa duckrace", "gm fam"]
    texts, dropped = domain_corpus(posts, held, HELD_OUT_FROM)
    # "gm" is kept: a held text is left out inside another message only from 20 characters on.
    assert texts == ["wen moon", "staking unlock next week", "gm"]
    assert dropped == {"held_out_period": 1, "empty": 1, "like_a_select_or_test_text": 5, "repeat": 2}


def test_the_likeness_key_folds_punctuation_mentions_and_stretched_letters_but_not_words():
    assert likeness_key("Lezgooooo Merit Circle!!! <@8812> @mod") == likeness_key("lezgo merit circle")
    assert likeness_key("Bakit papa - Sexbomb") == likeness_key("bakit papa? sexbomb")
    assert likeness_key("ｗｅｎ moon") == likeness_key("wen moon")
    assert likeness_key("wen moon") != likeness_key("wen lambo")
    assert likeness_key("🚀🚀") == ""


def test_messages_are_packed_end_to_end_with_a_separator_and_the_ragged_tail_dropped():
    blocks = pack([[1, 2], [3], [4, 5, 6]], block=3, separator=0)
    assert blocks == [[1, 2, 0], [3, 0, 4], [5, 6, 0]]
    assert pack([[1, 2, 3]], block=3, separator=0) == [[1, 2, 3]]  # the tail [0] is dropped
    with pytest.raises(ValueError):
        pack([[1]], block=1, separator=0)


def test_every_nth_message_is_set_apart_across_the_corpus():
    kept, apart = every_nth_apart(list(range(10)), every=4)
    assert apart == [3, 7] and kept == [0, 1, 2, 4, 5, 6, 8, 9]
    with pytest.raises(ValueError):
        every_nth_apart([1, 2], every=1)


def test_the_steps_are_an_epochs_worth_at_least_one_and_at_most_max_steps():
    # The stored run's corpus: 1,449 training blocks in batches of 16 are 91 steps an epoch.
    assert planned_steps(1449, AdaptConfig(epochs=2)) == 182
    assert planned_steps(1449, AdaptConfig(epochs=0.0001)) == 1  # any fraction of an epoch is a step
    assert planned_steps(1449, AdaptConfig(epochs=2, max_steps=3)) == 3
    assert planned_steps(1449, AdaptConfig(epochs=0.01, max_steps=3)) == 1  # a cap, not a target


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
    assert card["base_revision"].startswith("config-sha256:") and {"torch", "peft"} <= set(card["libraries"])
    assert json.loads((out / "adapter_config.json").read_text())["r"] == 4
    assert json.loads((out / "model_card.json").read_text()) == card


def test_max_steps_and_eval_limit_cut_a_run_short_for_a_smoke_test(tiny_model_dir, cache_dir, tmp_path):
    cfg = AdaptConfig(base=str(tiny_model_dir), r=4, alpha=8, epochs=4, max_steps=2, eval_limit=1, batch_size=4, block=16,
                      warmup_steps=2, holdout_every=5, device="cpu", dtype="float32", cache_dir=cache_dir)
    steps: list[int] = []
    card = adapt(cfg, CHATTER * 8, tmp_path / "smoke", {"messages": len(CHATTER) * 8}, lambda event: steps.append(event["step"]))
    assert steps == [1, 2] and card["steps"] == 2 and card["hyperparameters"]["max_steps"] == 2
    # Perplexity on the first held-out block only, though the corpus holds more.
    assert card["held_out_perplexity"]["blocks"] == 1 < card["split"]["held_out_blocks"]
    assert card["hyperparameters"]["eval_limit"] == 1


def test_the_classifier_trains_on_from_the_adapted_weights_and_names_them(adapted, tiny_model_dir, cache_dir, tmp_path):
    out, _ = adapted
    data = [Example(f"{word} {i}", label, i) for i, (word, label) in
            enumerate([("moon", "positive"), ("rekt", "negative"), ("meeting", "neutral")] * 6)]
    cfg = TrainConfig(base=str(tiny_model_dir), r=16, alpha=32, max_steps=2, batch_size=8, eval_every=2, device="cpu",
                      dtype="float32", cache_dir=cache_dir, max_length=16, init_adapter=out)
    trainer = Trainer(cfg, data, data[:6], tmp_path / "clf")
    result = trainer.run()
    card = write_model_card(result, cfg, trainer.info, [], {"train": len(data)})
    # The adapted weights are what trains (not a fresh r=16 adapter), and the lineage names the corpus.
    assert json.loads((tmp_path / "clf" / "adapter_config.json").read_text())["r"] == 4
    parent, child = (load_file(d / "adapter_model.safetensors") for d in (out, tmp_path / "clf"))
    moved = max(float((child[k] - parent[k]).norm() / parent[k].norm()) for k in parent if "lora_B" in k)
    assert set(child) == set(parent) and moved < 0.1, moved  # two small steps on from the adapted B, not from zero
    assert card["hyperparameters"]["r"] == 4
    assert card["init_adapter"]["data"] == [{"path": "export.csv", "sha256": "ab"}]
    assert card["init_adapter"]["split"]["messages"] == len(CHATTER) * 8


def test_adapt_cli_on_the_research_export_never_reads_a_held_out_or_split_text(tiny_model_dir, cache_dir, tmp_path):
    export = shared_file("seed", "meritcircle_cleaned_discord.csv")
    from training.adapt import export_corpus

    texts, source = export_corpus(export)
    held = {fold(r.example.text) for r in load_discord_labels(export) if r.split != "train"}
    assert len(held) > 500 and not {fold(t) for t in texts} & held
    assert not {likeness_key(t) for t in texts} & {likeness_key(t) for t in held} - {""}
    assert source["messages"] == len(texts) > 10_000 and source["left_out"]["held_out_period"] > 1_000
    later = {fold(p["text"]) for p in discord_posts(export, ImportReport()) if p["created_at"] >= HELD_OUT_FROM}
    earlier = {fold(p["text"]) for p in discord_posts(export, ImportReport()) if p["created_at"] < HELD_OUT_FROM}
    assert not {fold(t) for t in texts} & (later - earlier)  # no text known only from the held-out period
    env = {**os.environ, "SENTINEL_CACHE_DIR": str(cache_dir)}
    out = tmp_path / "adapted"
    r = subprocess.run([sys.executable, "-m", "sentinel.cli", "adapt", "--export", str(export), "--out", str(out), "--max-steps", "2",
                        "--eval-limit", "2", "--base", str(tiny_model_dir), "--device", "cpu", "--dtype", "float32"],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    card = json.loads((out / "model_card.json").read_text())
    assert card["steps"] == 2 and card["split"]["before"] == HELD_OUT_FROM and card["data"][0]["sha256"] == source["export"]["sha256"]
    assert card["held_out_perplexity"]["blocks"] == 2 and card["hyperparameters"]["max_steps"] == 2
