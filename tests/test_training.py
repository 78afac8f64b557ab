"""Fine-tuning on a tiny random Llama with the real tokenizer: it really learns, and what it writes loads back."""

from __future__ import annotations

import dataclasses
import json
import random
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

from model.base import load_model
from model.classifier import Classifier
from model.labels import LABELS
from training.data import Example
from training.split import class_weights, stratified_split
from training.trainer import TrainConfig, Trainer, TrainState, record_evaluation, sha256_file, write_model_card

WORDS = "market chart volume token wallet coin guild pool price week".split()
CUE = {"positive": "moon", "negative": "rekt", "neutral": "meeting"}


def synthetic(n: int, seed: int = 0) -> list[Example]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        label = LABELS[i % 3]
        words = [rng.choice(WORDS) for _ in range(6)]
        words.insert(rng.randrange(7), CUE[label])
        out.append(Example(text=" ".join(words) + f" {i}", label=label, line=i + 1))
    return out


def test_split_is_stratified_seeded_and_removes_overlap():
    data = synthetic(90) + [Example("duplicate text", "positive", 999), Example("duplicate text", "positive", 1000)]
    a, b = stratified_split(data, 0.2, seed=1), stratified_split(data, 0.2, seed=1)
    assert [e.line for e in a.train] == [e.line for e in b.train]
    counts = {label: sum(e.label == label for e in a.validation) for label in LABELS}
    assert counts["negative"] == counts["neutral"] == 6 and counts["positive"] in (6, 7)
    texts_val = {e.text for e in a.validation}
    assert not any(e.text in texts_val for e in a.train)
    assert len(a.train) + len(a.validation) + a.overlap_removed == len(data)


def test_class_weights_are_inverse_frequency():
    data = [Example("a", "positive", 1)] * 6 + [Example("b", "negative", 2)] * 3 + [Example("c", "neutral", 3)] * 3
    w = class_weights(data)
    assert w["negative"] == pytest.approx(2 * w["positive"]) and w["neutral"] == pytest.approx(w["negative"])
    assert sum(w.values()) / 3 == pytest.approx(1.0)  # normalised to mean 1 over the labels present


@pytest.fixture(scope="module")
def trained(tiny_model_dir, cache_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("adapter")
    split = stratified_split(synthetic(240), 0.25, seed=0)
    cfg = TrainConfig(
        base=str(tiny_model_dir), r=8, alpha=16, dropout=0.0, learning_rate=1e-2, epochs=3, batch_size=16,
        warmup_steps=2, eval_every=10, patience=10, device="cpu", dtype="float32", cache_dir=cache_dir, max_length=32,
    )
    losses: list[float] = []
    evals: list[dict] = []

    def progress(event):
        (evals.append(event["eval"]) if "eval" in event else losses.append(event["loss"]))

    trainer = Trainer(cfg, split.train, split.validation, out)
    result = trainer.run(progress=progress)
    card = write_model_card(result, cfg, trainer.info, [], {"train": len(split.train)})
    return trainer, result, losses, evals, card, split


def test_loss_falls_and_validation_accuracy_rises_above_chance(trained):
    _, result, losses, evals, _, _ = trained
    assert sum(losses[-5:]) / 5 < 0.7 * sum(losses[:5]) / 5, losses
    assert result.metrics["accuracy"] > 0.8, evals  # chance is 1/3


def test_shared_prefix_loss_equals_the_full_sequence_loss(tiny_model_dir, cache_dir, tmp_path):
    """The per-batch shared prefix is an exact rewrite of the plain forward pass, gradients included."""
    import torch

    data = synthetic(12)
    losses, grads = [], []
    for shared, checkpointing in ((True, False), (False, False), (True, True)):
        cfg = TrainConfig(base=str(tiny_model_dir), device="cpu", dtype="float32", cache_dir=cache_dir, dropout=0.0,
                          shared_prefix=shared, gradient_checkpointing=checkpointing, max_length=32)
        trainer = Trainer(cfg, data, data[:3], tmp_path / f"{shared}-{checkpointing}")
        trainer._setup(resume=False)
        for module in trainer.model.modules():  # a nonzero adapter, so its gradients are informative
            if hasattr(module, "lora_B"):
                for b in module.lora_B.values():
                    torch.nn.init.normal_(b.weight, std=0.02)
        loss = trainer.loss(trainer.encoded[:8])
        loss.backward()
        losses.append(float(loss.detach()))
        grads.append(torch.cat([p.grad.flatten() for p in trainer.model.parameters() if p.requires_grad]))
    assert trainer.shared_prefix is False  # checkpointing turns the shared prefix off
    assert losses[0] == pytest.approx(losses[1], abs=1e-5) and losses[0] == pytest.approx(losses[2], abs=1e-5)
    assert torch.allclose(grads[0], grads[1], atol=1e-5) and torch.allclose(grads[0], grads[2], atol=1e-5)


def test_saved_adapter_gives_identical_predictions(trained, tiny_model_dir, cache_dir):
    trainer, result, _, _, _, split = trained
    texts = [e.text for e in split.validation]
    trainer.model.eval()
    in_memory = Classifier(trainer.model, trainer.tokenizer, trainer.info, max_post_tokens=32).classify(texts)
    # The checkpoint holds the final weights (out_dir holds the best); reload it merged, as the worker does.
    model, tok, info = load_model(str(tiny_model_dir), str(result.out_dir / "checkpoint"), device="cpu", dtype="float32", cache_dir=cache_dir)
    reloaded = Classifier(model, tok, info, max_post_tokens=32).classify(texts)
    assert [j.label for j in reloaded] == [j.label for j in in_memory]
    assert max(abs(a.probs[k] - b.probs[k]) for a, b in zip(reloaded, in_memory) for k in LABELS) < 1e-4


def test_model_card_is_complete(trained):
    card = trained[4]
    for key in ("base_model", "base_revision", "data", "hyperparameters", "validation_metrics", "training_seconds", "libraries"):
        assert card[key] is not None, key
    assert card["hyperparameters"]["r"] == 8 and "f1_weighted" in card["validation_metrics"]
    assert {"torch", "transformers", "peft"} <= set(card["libraries"])
    assert (trained[1].out_dir / "README.md").read_text().startswith("# LoRA adapter")


def test_a_warm_started_card_records_the_shape_trained_and_the_parent_data(trained, tmp_path):
    """--r/--alpha are ignored when starting from an adapter: the card says what was trained."""
    trainer, result, _, _, _, _ = trained
    parent, child_dir = tmp_path / "parent", tmp_path / "child"
    parent.mkdir(), child_dir.mkdir()
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        shutil.copy(result.out_dir / name, parent / name)
    shutil.copy(result.out_dir / "adapter_config.json", child_dir / "adapter_config.json")
    (parent / "model_card.json").write_text(json.dumps({"data": [{"path": "tfns.csv", "sha256": "ab"}]}))
    cfg = TrainConfig(base="tiny", r=16, alpha=32, init_adapter=parent)
    child = dataclasses.replace(result, out_dir=child_dir)
    card = write_model_card(child, cfg, trainer.info, [], {"train": 1})
    # the base as the user named it, not the directory it was loaded from on this machine
    assert json.loads((child_dir / "adapter_config.json").read_text())["base_model_name_or_path"] == "tiny"
    assert card["hyperparameters"]["r"] == 8 and card["hyperparameters"]["alpha"] == 16
    assert card["init_adapter"]["data"] == [{"path": "tfns.csv", "sha256": "ab"}]
    assert card["init_adapter"]["weights_sha256"] == sha256_file(parent / "adapter_model.safetensors")
    assert "LoRA r=8, alpha=16" in (child_dir / "README.md").read_text()


def test_a_warm_started_run_hashes_the_init_adapters_weights_once(trained, tiny_model_dir, cache_dir, tmp_path, monkeypatch):
    """The resume fingerprint (at every checkpoint) and the card's lineage both name the init
    adapter by its weights' hash; the run takes it once, as sentinel train hands it to the card."""
    import training.trainer as trainer_module

    parent = tmp_path / "parent"
    shutil.copytree(trained[1].out_dir, parent, ignore=shutil.ignore_patterns("checkpoint"))
    weights = parent / "adapter_model.safetensors"
    hashed: list[Path] = []
    real_sha256 = trainer_module.sha256_file
    monkeypatch.setattr(trainer_module, "sha256_file", lambda path: hashed.append(Path(path)) or real_sha256(path))
    cfg = TrainConfig(base=str(tiny_model_dir), device="cpu", dtype="float32", cache_dir=cache_dir, init_adapter=parent,
                      max_steps=2, eval_every=1, batch_size=4, max_length=32)
    trainer = Trainer(cfg, synthetic(12), synthetic(6, seed=1), tmp_path / "child")
    result = trainer.run()
    card = write_model_card(result, cfg, trainer.info, [], {"train": 12}, init_identity=trainer.init_adapter_identity)
    assert (result.out_dir / "checkpoint" / "run.json").is_file()  # the fingerprint was taken
    assert card["init_adapter"]["weights_sha256"] == real_sha256(weights)
    assert hashed.count(weights) == 1, hashed


def test_a_warm_start_from_an_adapter_naming_its_base_by_name_asks_no_hub_at_its_saves(trained, tiny_model_dir, cache_dir, tmp_path,
                                                                                        monkeypatch):
    """An adapter trained here names its base as the user did (`smollm2`); PEFT, saving a
    checkpoint of a run warm-started from it, looked that name up on the Hub at every save."""
    import peft.utils.save_and_load as peft_saving

    parent = tmp_path / "parent"
    shutil.copytree(trained[1].out_dir, parent, ignore=shutil.ignore_patterns("checkpoint"))
    config = json.loads((parent / "adapter_config.json").read_text())
    (parent / "adapter_config.json").write_text(json.dumps({**config, "base_model_name_or_path": "smollm2"}))
    asked: list[str] = []
    monkeypatch.setattr(peft_saving, "check_file_exists_on_hf_hub", lambda repo, name, **_: asked.append(repo))
    cfg = TrainConfig(base=str(tiny_model_dir), device="cpu", dtype="float32", cache_dir=cache_dir, init_adapter=parent,
                      max_steps=2, eval_every=1, batch_size=4, max_length=32)
    result = Trainer(cfg, synthetic(12), synthetic(6, seed=1), tmp_path / "child").run()
    assert (result.out_dir / "checkpoint" / "adapter_model.safetensors").is_file()  # checkpoints were saved
    assert asked == []


def test_the_card_marks_the_val_data_file_as_validation_not_training_data(tmp_path):
    """--val-data chose the checkpoint and trained nothing; the card listed it among the data files
    as if it were trained on."""
    from training.trainer import TrainResult

    train, select = tmp_path / "train-tfns.csv", tmp_path / "select.csv"
    train.write_text("text,label\nup only,1\n"), select.write_text("text,label\nwen AMA,neutral\n")
    result = TrainResult(tmp_path, {}, TrainState(), 1.0, 1.0, False)
    card = write_model_card(result, TrainConfig(base="tiny"), None, [train, train], {"train": 2, "val_fraction": None}, validation_file=select)
    assert card["data"] == [{"path": str(train), "sha256": sha256_file(train)}] * 2 + [
        {"path": str(select), "sha256": sha256_file(select), "role": "validation"}]
    assert "- data: train-tfns.csv, train-tfns.csv; validation (checkpoint choice): select.csv\n" in (tmp_path / "README.md").read_text()
    assert "role" not in write_model_card(result, TrainConfig(base="tiny"), None, [train], {"train": 1})["data"][0]


def test_a_warm_start_from_an_adapter_whose_targets_are_a_peft_regex_records_the_regex(tmp_path):
    from training.trainer import TrainResult, warm_start

    parent = tmp_path / "parent"
    parent.mkdir()
    regex = r".*\.(q_proj|v_proj)"
    (parent / "adapter_config.json").write_text(json.dumps({"r": 4, "lora_alpha": 8, "target_modules": regex}))
    shape, _ = warm_start(parent)
    assert shape["target_modules"] == regex  # sorted, the string fell into its characters
    card = write_model_card(TrainResult(tmp_path, {}, TrainState(), 1.0, 1.0, False), TrainConfig(base="tiny", init_adapter=parent), None, [], {})
    assert card["hyperparameters"]["target_modules"] == regex
    assert f"targets the modules matching the regex {regex!r} (warm-started from parent)" in (tmp_path / "README.md").read_text()


def test_a_warm_start_from_an_adapter_of_another_base_is_refused(trained, tiny_model_dir, cache_dir, tmp_path):
    """Two bases of one shape load each other's LoRA without a word; the parent's card says which
    base it was trained on, and training refuses another before any work is done."""
    from model.base import ModelLoadError
    from training.trainer import base_revision, check_warm_start_base

    parent = tmp_path / "parent"
    shutil.copytree(trained[1].out_dir, parent, ignore=shutil.ignore_patterns("checkpoint"))
    card = json.loads((parent / "model_card.json").read_text())
    assert card["base_revision"] == base_revision(str(tiny_model_dir))
    check_warm_start_base(parent, str(tiny_model_dir))  # its own base: fine
    (parent / "model_card.json").write_text(json.dumps({**card, "base_revision": "config-sha256:another"}))
    cfg = TrainConfig(base=str(tiny_model_dir), device="cpu", dtype="float32", cache_dir=cache_dir, init_adapter=parent)
    with pytest.raises(ModelLoadError, match="a LoRA fits only its own base"):
        Trainer(cfg, synthetic(6), synthetic(3), tmp_path / "child").run()


def test_an_evaluation_is_recorded_in_the_card_per_file_and_subset(tmp_path):
    card, data = tmp_path / "model_card.json", tmp_path / "test-discord.csv"
    card.write_text(json.dumps({"base_model": "x"}))
    data.write_text("text,label\nup only,positive\n")
    report = {"n": 1, "accuracy": 1.0, "f1_macro": 1.0, "f1_weighted": 1.0, "per_class": {}, "confusion": {}, "data": "ignored"}
    record_evaluation(card, data, {**report, "accuracy": 0.5})
    record_evaluation(card, data, report)  # the same file again replaces its entry
    record_evaluation(card, data, {**report, "n": 0}, "first 1")
    saved = json.loads(card.read_text())
    assert saved["base_model"] == "x" and set(saved["evaluations"]) == {"test-discord", "test-discord (first 1)"}
    entry = saved["evaluations"]["test-discord"]
    assert entry["accuracy"] == 1.0 and entry["data"] == {"path": str(data), "sha256": sha256_file(data)}


def test_resume_continues_from_the_checkpoint(trained, cache_dir):
    trainer, result, *_ = trained
    cfg = trainer.cfg
    more = Trainer(TrainConfig(**{**cfg.__dict__, "epochs": 4}), trainer.train_set, trainer.validation, result.out_dir)
    events: list[dict] = []
    resumed = more.run(resume=True, progress=events.append)
    steps = [e["step"] for e in events if "eval" not in e]
    # It starts where the first run stopped (a fresh run would start at step 1) and keeps its history.
    assert steps[0] == result.state.step + 1
    assert resumed.state.step > result.state.step and resumed.state.history[: len(result.state.history)] == result.state.history




def test_resume_refuses_another_runs_checkpoint_before_the_model_loads(trained, monkeypatch):
    """--resume into an --out whose checkpoint another command wrote (another rate, other data, a
    leftover of an earlier run) would silently train on from weights that run chose: it is one
    error naming what differs, raised before the model loads. How long the run goes may change."""
    import training.trainer as trainer_module
    from training.trainer import ResumeError

    trainer, result, *_ = trained
    cfg, out = trainer.cfg, result.out_dir
    assert (out / "checkpoint" / "run.json").is_file()

    def no_load(*_args, **_kwargs):
        raise AssertionError("the model loaded before the checkpoint was checked")

    monkeypatch.setattr(trainer_module, "load_model", no_load)
    other_rate = Trainer(TrainConfig(**{**cfg.__dict__, "learning_rate": 5e-4}), trainer.train_set, trainer.validation, out)
    with pytest.raises(ResumeError, match=r"learning_rate 0\.01 there, 0\.0005 here"):
        other_rate.run(resume=True)
    other_data = Trainer(cfg, trainer.train_set[:-1], trainer.validation, out)
    with pytest.raises(ResumeError, match="other train examples"):
        other_data.run(resume=True)
    longer = Trainer(TrainConfig(**{**cfg.__dict__, "epochs": 9, "patience": 20, "eval_every": 5}), trainer.train_set, trainer.validation, out)
    with pytest.raises(AssertionError, match="the model loaded"):  # accepted: it went on to load the model
        longer.run(resume=True)


def test_resume_takes_the_init_adapter_by_content_not_by_how_its_path_is_spelt(tmp_path, monkeypatch):
    """A run started with `--init-adapter adapters/dapt` and resumed with the absolute path (or
    `./adapters/dapt/`) was refused as another run; the same path holding other weights is another one."""
    from training.trainer import RUN_FILE, ResumeError

    monkeypatch.chdir(tmp_path)
    (tmp_path / "adapters" / "dapt").mkdir(parents=True)
    (tmp_path / "adapters" / "dapt" / "adapter_model.safetensors").write_bytes(b"weights")
    examples = synthetic(12)

    def trainer(init: str) -> Trainer:
        return Trainer(TrainConfig(base="tiny", init_adapter=Path(init)), examples[:9], examples[9:], tmp_path / "out")

    ckpt = tmp_path / "out" / "checkpoint"
    ckpt.mkdir(parents=True)
    (ckpt / RUN_FILE).write_text(json.dumps(trainer("adapters/dapt").run_fingerprint()))
    for spelt in (str(tmp_path / "adapters" / "dapt"), "./adapters/dapt/", "adapters/../adapters/dapt"):
        trainer(spelt).check_resumable(ckpt)  # the same adapter: accepted
    # A checkpoint written before adapters were named by content holds the path as typed: resolved, it is the same.
    old = json.loads((ckpt / RUN_FILE).read_text())
    (ckpt / RUN_FILE).write_text(json.dumps({**old, "settings": {**old["settings"], "init_adapter": "adapters/dapt"}}))
    trainer(str(tmp_path / "adapters" / "dapt")).check_resumable(ckpt)
    (ckpt / RUN_FILE).write_text(json.dumps(old))
    (tmp_path / "adapters" / "dapt" / "adapter_model.safetensors").write_bytes(b"other weights")  # retrained in place
    with pytest.raises(ResumeError, match=r"init_adapter '.*dapt' \(weights sha256 [0-9a-f]{12}\) there, '.*dapt' \(weights sha256"):
        trainer("adapters/dapt").check_resumable(ckpt)
    with pytest.raises(ResumeError, match="init_adapter None there"):  # a fresh run's checkpoint, resumed as a warm start
        (ckpt / RUN_FILE).write_text(json.dumps({**old, "settings": {**old["settings"], "init_adapter": None}}))
        trainer("adapters/dapt").check_resumable(ckpt)


class Killed(Exception):
    """Stands for the process being killed: the run stops between two steps, nothing is saved."""


def test_a_run_killed_and_resumed_ends_with_the_weights_of_a_run_never_stopped(tiny_model_dir, cache_dir, tmp_path):
    """A long CPU run can span sessions: killed after a checkpoint and resumed, it redoes the steps
    since that checkpoint and ends where one run would have, weights and choice of step alike, and
    its card counts the time of both parts."""
    import torch
    from safetensors.torch import load_file

    split = stratified_split(synthetic(120), 0.25, seed=0)
    cfg = TrainConfig(base=str(tiny_model_dir), r=4, alpha=8, learning_rate=1e-2, epochs=2, batch_size=16, warmup_steps=2,
                      eval_every=4, patience=10, device="cpu", dtype="float32", cache_dir=cache_dir, max_length=32)
    whole = Trainer(cfg, split.train, split.validation, tmp_path / "whole").run()

    def kill_at_step_6(event: dict) -> None:
        if event.get("step") == 6 and "eval" not in event:
            raise Killed

    with pytest.raises(Killed):
        Trainer(cfg, split.train, split.validation, tmp_path / "parts").run(progress=kill_at_step_6)
    assert json.loads((tmp_path / "parts" / "checkpoint" / "trainer_state.json").read_text())["step"] == 4
    events: list[dict] = []
    parts = Trainer(cfg, split.train, split.validation, tmp_path / "parts").run(resume=True, progress=events.append)
    assert [e["step"] for e in events if "eval" not in e][0] == 5  # steps 5 and 6 are done again
    assert parts.state.step == whole.state.step and parts.state.best_step == whole.state.best_step
    assert parts.state.history == whole.state.history
    for name in ("checkpoint/adapter_model.safetensors", "adapter_model.safetensors"):
        mine, theirs = load_file(tmp_path / "parts" / name), load_file(tmp_path / "whole" / name)
        assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine), name
    first_part = json.loads((tmp_path / "parts" / "checkpoint" / "trainer_state.json").read_text())
    assert parts.seconds >= first_part["seconds"] > 0 and parts.state.samples == whole.state.samples


def test_a_kill_while_a_checkpoint_is_saved_resumes_from_the_whole_one_before(tmp_path, monkeypatch):
    """`Trainer._save_checkpoint` killed at each of its file operations in turn: what is left to
    resume from is always one whole checkpoint, its weights and its state of the same step (the one
    before the save, or the one saved), and the next save completes over what the kill left."""
    import pathlib

    import training.trainer as trainer_module
    from training.trainer import checkpoint_to_resume

    ops = {"count": 0, "kill_at": None}

    def killable(fn):
        def op(*args, **kwargs):
            ops["count"] += 1
            if ops["count"] == ops["kill_at"]:
                raise Killed
            return fn(*args, **kwargs)
        return op

    for name in ("mkdir", "rename", "write_text"):
        monkeypatch.setattr(pathlib.Path, name, killable(getattr(pathlib.Path, name)))
    monkeypatch.setattr(trainer_module.shutil, "rmtree", killable(shutil.rmtree))
    monkeypatch.setattr(trainer_module.torch, "save", killable(trainer_module.torch.save))

    def trainer_at(out: Path, step: int) -> Trainer:
        trainer = Trainer(TrainConfig(base="tiny"), synthetic(6), synthetic(3), out)
        trainer.state = TrainState(step=step)
        weights = killable(lambda folder: pathlib.Path(folder, "adapter_model.safetensors").write_bytes(str(trainer.state.step).encode()))
        trainer.model = SimpleNamespace(save_pretrained=weights)
        trainer.optimizer = trainer.scheduler = SimpleNamespace(state_dict=lambda: {"step": trainer.state.step})
        return trainer

    def whole_step(out: Path) -> int:
        found = checkpoint_to_resume(out)
        assert found is not None, "no checkpoint left to resume from"
        state = json.loads((found / "trainer_state.json").read_text())["step"]
        assert int((found / "adapter_model.safetensors").read_bytes()) == state, "weights of one step, state of another"
        return state

    operations = None
    for kill_at in range(1, 20):
        out = tmp_path / f"kill{kill_at}"
        trainer = trainer_at(out, 100)
        ops.update(count=0, kill_at=None)
        trainer._save_checkpoint()
        trainer.state.step = 200
        ops.update(count=0, kill_at=kill_at)
        try:
            trainer._save_checkpoint()
        except Killed:
            assert whole_step(out) in (100, 200)
            ops.update(count=0, kill_at=None)
            trainer.state.step = 300
            trainer._save_checkpoint()  # the next save over whatever the kill left
            assert whole_step(out) == 300
            assert not (out / "checkpoint.new").exists() and not (out / "checkpoint.old").exists()
        else:
            operations = kill_at - 1
            break
    assert operations is not None and operations >= 6, operations  # every operation of a save was killed once
    assert whole_step(out) == 200


def test_the_checkpoint_is_chosen_by_the_select_metric(tmp_path):
    """Weighted F1 follows the majority class; macro F1 can prefer another step. The adapter saved is
    the one the chosen metric ranks best, and the history keeps both."""
    reports = [{"f1_weighted": 0.90, "f1_macro": 0.50, "accuracy": 0.9}, {"f1_weighted": 0.85, "f1_macro": 0.70, "accuracy": 0.85},
               {"f1_weighted": 0.80, "f1_macro": 0.60, "accuracy": 0.8}]
    for metric, best in (("f1_weighted", 10), ("f1_macro", 20)):
        trainer = Trainer(TrainConfig(base="tiny", select_metric=metric, patience=5), synthetic(6), synthetic(3), tmp_path / metric)
        saved: list[int] = []
        scripted = iter(reports)
        trainer.evaluate = lambda scripted=scripted: next(scripted)
        trainer.model = SimpleNamespace(save_pretrained=lambda _dir, saved=saved, trainer=trainer: saved.append(trainer.state.step))
        trainer._save_checkpoint = lambda: None
        trainer.state = TrainState()
        trainer.out_dir.mkdir()
        for step in (10, 20, 30):
            trainer.state.step = step
            trainer._evaluate_and_checkpoint(None)
        assert trainer.state.best_step == best and saved[-1] == best
        assert [h["f1_macro"] for h in trainer.state.history] == [0.5, 0.7, 0.6]
    with pytest.raises(ValueError, match="select_metric"):
        Trainer(TrainConfig(base="tiny", select_metric="accuracy"), synthetic(6), synthetic(3), tmp_path / "bad")


def test_4bit_training_without_cuda_is_a_clear_error(tiny_model_dir, cache_dir, tmp_path):
    import torch

    from model.base import ModelLoadError

    if torch.cuda.is_available():
        pytest.skip("checks the error on machines without CUDA")
    cfg = TrainConfig(base=str(tiny_model_dir), quantize="4bit", device="cpu", cache_dir=cache_dir)
    with pytest.raises(ModelLoadError, match="needs a CUDA GPU"):
        Trainer(cfg, synthetic(6), synthetic(3), tmp_path).run()


def test_a_target_module_the_base_lacks_is_a_clear_error(tiny_model_dir, cache_dir, tmp_path):
    from model.base import ModelLoadError

    cfg = TrainConfig(base=str(tiny_model_dir), device="cpu", dtype="float32", cache_dir=cache_dir, target_modules=("foo_proj",))
    with pytest.raises(ModelLoadError, match="--target-modules foo_proj: .*not found"):
        Trainer(cfg, synthetic(6), synthetic(3), tmp_path).run()


def test_train_cli_writes_adapter_and_card_and_names_bad_lines(tiny_model_dir, cache_dir, tmp_path):
    import os
    import subprocess
    import sys

    rows = ["text,label"] + [f"{e.text},{ {'negative': 0, 'positive': 1, 'neutral': 2}[e.label] }" for e in synthetic(60)]
    data = tmp_path / "train.csv"
    data.write_text("\n".join(rows) + "\n")
    env = {**os.environ, "SENTINEL_CACHE_DIR": str(cache_dir)}
    base = ["--base", str(tiny_model_dir), "--device", "cpu", "--dtype", "float32"]
    out = tmp_path / "adapter"
    r = subprocess.run([sys.executable, "-m", "sentinel.cli", "train", "--data", str(data), "--format", "tfns", "--out", str(out),
                        "--max-steps", "4", "--batch-size", "8", "--eval-every", "2", *base], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    card = json.loads((out / "model_card.json").read_text())
    assert card["split"]["train"] + card["split"]["validation"] == 60 and card["steps"] == 4
    assert card["data"][0]["sha256"] and (out / "adapter_model.safetensors").is_file()
    # `sentinel eval --card` records its report in the adapter's card, keyed by the file, with its hash.
    r = subprocess.run([sys.executable, "-m", "sentinel.cli", "eval", "--data", str(data), "--format", "tfns", "--adapter", str(out),
                        "--card", "--json", "--predictions", str(tmp_path / "preds.jsonl"), *base], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    preds = [json.loads(line) for line in (tmp_path / "preds.jsonl").read_text().splitlines()]
    assert [p["line"] for p in preds] == list(range(2, 62)) and all(abs(sum(p["probs"].values()) - 1) < 1e-4 for p in preds)
    accuracy = sum(p["label"] == p["predicted"] for p in preds) / 60
    recorded = json.loads((out / "model_card.json").read_text())["evaluations"]["train"]
    assert recorded["data"]["sha256"] == card["data"][0]["sha256"] and recorded["n"] == 60
    assert recorded["f1_weighted"] == json.loads(r.stdout)["f1_weighted"] and recorded["accuracy"] == pytest.approx(accuracy)
    # --val-data is listed in the card after the training files, marked as what chose the checkpoint.
    val = tmp_path / "select.csv"
    val.write_text("\n".join(rows[:1] + rows[-9:]) + "\n")
    r = subprocess.run([sys.executable, "-m", "sentinel.cli", "train", "--data", str(data), "--val-data", str(val), "--format", "tfns",
                        "--out", str(tmp_path / "with-val"), "--max-steps", "1", "--batch-size", "8", *base], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    listed = json.loads((tmp_path / "with-val" / "model_card.json").read_text())["data"]
    assert listed == [{"path": str(data), "sha256": sha256_file(data)}, {"path": str(val), "sha256": sha256_file(val), "role": "validation"}]
    r = subprocess.run([sys.executable, "-m", "sentinel.cli", "eval", "--data", str(data), "--format", "tfns", "--adapter", "none",
                        "--card", *base], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode != 0 and "--card needs an adapter directory" in r.stderr
    # Training on from an adapter made for another base is one line, not a traceback or a silent fresh start.
    other = tmp_path / "other-base"
    shutil.copytree(out, other, ignore=shutil.ignore_patterns("checkpoint"))
    (other / "model_card.json").write_text(json.dumps({**card, "base_revision": "config-sha256:another"}))
    for init, says in (("default", "fits only the default base"), (str(other), "a LoRA fits only its own base")):
        r = subprocess.run([sys.executable, "-m", "sentinel.cli", "train", "--data", str(data), "--format", "tfns", "--out", str(tmp_path / "child"),
                            "--max-steps", "1", "--init-adapter", init, *base], capture_output=True, text=True, env=env, timeout=300)
        assert r.returncode == 2 and says in r.stderr and "Traceback" not in r.stderr, r.stderr
    data.write_text("text,label\nok,1\nbad,7\n")
    r = subprocess.run([sys.executable, "-m", "sentinel.cli", "train", "--data", str(data), "--format", "tfns", "--out", str(out), *base],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 2 and f"{data}:3" in r.stderr
