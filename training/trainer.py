"""Alpaca-LoRA fine-tuning with the classifier's own prompt and label tokens.

What it shares with inference (model/): the prompt codec (prefix + post + marker token runs), the
label tokens, the scoring code used for validation (`Classifier` + `classification_report`, the same
as `sentinel eval`).

Loss: cross-entropy on the response label only (alpaca-lora's train_on_inputs=False), over the same
three label-token logits the classifier reads, so training optimises exactly the decision it is
scored on. The decoder returns hidden states and only the three label rows of the LM head are
applied, at the single response position: the vocabulary projection is never computed over the prompt.

Shared prefix: every example starts with the same ~70-token instruction prefix. On CPU (by default)
the prefix runs once per batch (batch size 1, with gradients) and its keys and values are broadcast
to every row; gradients flow back through the broadcast. This is exact (tested against the plain
forward), and on this CPU it doubles training throughput for short posts. On CUDA the plain batched
forward is faster, so it is off there; gradient checkpointing always turns it off.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import platform
import random
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import EllipsisType
from typing import Any, Callable, Sequence

import torch

from model.base import DEFAULT_BASE, ModelLoadError, bundled_gguf, load_model
from model.classifier import Classifier, encode_prefix, pad_suffixes, suffix_hidden
from model.labels import LABELS
from model.report import classification_report
from model.prompt import PromptCodec
from model.scorer import ModelInfo
from training.data import Example
from training.split import class_weights

log = logging.getLogger(__name__)

DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass
class TrainConfig:
    base: str = DEFAULT_BASE
    r: int = 16
    alpha: int = 32
    dropout: float = 0.0  # LoRA dropout draws a mask per module per step: 20% of a CPU step at 0.05
    target_modules: tuple[str, ...] = DEFAULT_TARGETS
    learning_rate: float = 3e-4
    epochs: float = 1.0
    max_steps: int | None = None
    batch_size: int = 16
    grad_accum: int = 1
    max_length: int = 128  # post tokens; the prompt around them is fixed
    warmup_steps: int = 20
    weight_decay: float = 0.0
    seed: int = 42
    gradient_checkpointing: bool = False
    # None = auto: on for CPU, off for CUDA. Measured (docs/benchmarks.md): 2.1x faster training on
    # this CPU, but 25% slower than plain batches for 4-bit 7B QLoRA on an H200, where the extra
    # batch-1 prefix pass pays a second dequantisation of every weight.
    shared_prefix: bool | None = None
    quantize: str = "none"
    class_weighting: str = "none"  # none | weights | balance
    eval_every: int = 200  # optimizer steps
    patience: int = 3  # evaluations without a better validation score
    # What chooses the checkpoint: weighted F1 follows the majority class (neutral, 65-96% of the
    # rows); macro F1 weighs the rare positive and negative posts a risk team is after as much.
    select_metric: str = "f1_weighted"  # f1_weighted | f1_macro
    eval_limit: int | None = None
    device: str = "auto"
    dtype: str = "auto"
    cache_dir: Path | None = None
    # Start from this LoRA adapter's weights (its r, alpha and targets) instead of a fresh one: a
    # domain adapter can begin where the finance adapter ended, for a fraction of the steps.
    init_adapter: Path | None = None


@dataclass
class TrainState:
    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    best_f1: float = -1.0  # the best validation score by cfg.select_metric (the name predates the choice)
    best_step: int = 0
    evals_without_gain: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    # Training time and samples up to the checkpoint, so a resumed run's card counts the whole run.
    seconds: float = 0.0
    samples: int = 0


@dataclass
class TrainResult:
    out_dir: Path
    metrics: dict[str, Any]
    state: TrainState
    seconds: float
    samples_per_s: float
    stopped_early: bool


Progress = Callable[[dict[str, Any]], None]

# Settings `--resume` may change: how long the run goes on (a finished run can be taken further)
# and where or how fast its steps run. Every other setting, and the examples, shape each step, so a
# checkpoint resumed under others would end as neither run: its weights are refused instead.
RESUMABLE_SETTINGS = ("epochs", "max_steps", "patience", "eval_every", "device", "dtype", "gradient_checkpointing",
                      "shared_prefix", "cache_dir")
RUN_FILE = "run.json"  # in each checkpoint: what made it (run_fingerprint)


class ResumeError(ValueError):
    """A checkpoint written by another run than the one asked to resume it."""


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def lora_model(model: Any, cfg: TrainConfig, resume: Path | None) -> Any:
    from peft import LoraConfig, PeftModel, get_peft_model, prepare_model_for_kbit_training

    if cfg.quantize != "none":
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=cfg.gradient_checkpointing)
    elif cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable()
        model.enable_input_require_grads()
    if (start := resume if resume is not None else cfg.init_adapter) is not None:
        return loaded_from_here(PeftModel.from_pretrained(model, start, is_trainable=True), model)
    config = LoraConfig(
        task_type="CAUSAL_LM", r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=list(cfg.target_modules)
    )
    try:
        return get_peft_model(model, config)
    except ValueError as exc:  # PEFT: a target module the base does not have (NoMatchingPeftModuleError among them)
        raise ModelLoadError(f"--target-modules {','.join(cfg.target_modules)}: {exc}") from None


def loaded_from_here(peft_model: Any, model: Any) -> Any:
    """A loaded adapter's config names its base as its card does (`smollm2`, name_the_base), and
    PEFT reads that entry at every save to find the base's config.json: a bare name sends each
    checkpoint of a warm start to the Hub for it (or, offline, to a failed lookup and a warning).
    While training, it names the directory the base was loaded from, as a fresh LoRA's does;
    name_the_base names the base again once the run is over."""
    for config in peft_model.peft_config.values():
        config.base_model_name_or_path = model.name_or_path
    return peft_model


class Trainer:
    def __init__(self, cfg: TrainConfig, train: Sequence[Example], validation: Sequence[Example], out_dir: Path):
        if not train:
            raise ValueError("no training examples")
        if not validation:
            raise ValueError("no validation examples")
        if cfg.select_metric not in ("f1_weighted", "f1_macro"):
            raise ValueError(f"select_metric must be f1_weighted or f1_macro, not {cfg.select_metric!r}")
        self.cfg, self.out_dir = cfg, Path(out_dir)
        self.train_set = list(train)
        self.validation = list(validation)[: cfg.eval_limit] if cfg.eval_limit else list(validation)
        if cfg.class_weighting == "balance":
            self.train_set = balanced(self.train_set, cfg.seed)
        self.checkpoint_dir = self.out_dir / "checkpoint"

    # ---------------------------------------------------------------- setup

    @functools.cached_property
    def examples_sha256(self) -> dict[str, str]:
        """The examples' hashes (a checkpoint holds no text): once a run, not at every checkpoint."""
        def digest(examples: Sequence[Example]) -> str:
            return hashlib.sha256(json.dumps([[ex.text, ex.label] for ex in examples]).encode()).hexdigest()

        return {"train_sha256": digest(self.train_set), "validation_sha256": digest(self.validation)}

    @functools.cached_property
    def init_adapter_identity(self) -> dict[str, Any] | None:
        """The warm start's adapter by content (its weights' hash, as the card's lineage names it) and
        resolved path: `adapters/dapt`, `./adapters/dapt/` and `/abs/adapters/dapt` are one adapter."""
        if self.cfg.init_adapter is None:
            return None
        path = Path(self.cfg.init_adapter)
        weights = path / "adapter_model.safetensors"
        return {"path": str(path.resolve()), "weights_sha256": sha256_file(weights) if weights.is_file() else None}

    def run_fingerprint(self) -> dict[str, Any]:
        """What a checkpoint's steps depend on: the settings --resume may not change and the examples."""
        settings = {k: v for k, v in recorded_settings(self.cfg).items() if k not in RESUMABLE_SETTINGS}
        settings["init_adapter"] = self.init_adapter_identity
        return {"settings": settings, **self.examples_sha256}

    def check_resumable(self, ckpt: Path) -> None:
        """Refuse a checkpoint of another run (another --out's leftover, a changed command), before
        the model loads. A checkpoint from before run.json was written is taken as it was."""
        path = ckpt / RUN_FILE
        if not path.is_file():
            return
        theirs, ours = json.loads(path.read_text()), self.run_fingerprint()
        keys = sorted(set(theirs["settings"]) | set(ours["settings"]))
        diffs = [f"{k} {theirs['settings'].get(k)!r} there, {ours['settings'].get(k)!r} here"
                 for k in keys if k != "init_adapter" and theirs["settings"].get(k) != ours["settings"].get(k)]
        if not same_init_adapter(theirs["settings"].get("init_adapter"), ours["settings"]["init_adapter"]):
            diffs.append(f"init_adapter {adapter_named(theirs['settings'].get('init_adapter'))} there, "
                         f"{adapter_named(ours['settings']['init_adapter'])} here")
        diffs += [f"other {part} examples" for part in ("train", "validation") if theirs[f"{part}_sha256"] != ours[f"{part}_sha256"]]
        if diffs:
            raise ResumeError(f"--resume: {ckpt} was written by another run ({'; '.join(diffs)}): resume with the command "
                              "that started it (only --epochs, --max-steps, --patience, --eval-every, --gradient-checkpointing, --device and --dtype "
                              "may change), or train into another --out")

    def _setup(self, resume: bool) -> None:
        cfg = self.cfg
        seed_everything(cfg.seed)
        ckpt = checkpoint_to_resume(self.out_dir) if resume else None
        if resume and ckpt is None:
            raise FileNotFoundError(f"nothing to resume: no checkpoint in {self.checkpoint_dir}")
        if ckpt is not None:
            self.check_resumable(ckpt)
        if cfg.init_adapter is not None and not resume:
            check_warm_start_base(cfg.init_adapter, cfg.base)
        model, self.tokenizer, self.info = load_model(
            cfg.base, None, device=cfg.device, dtype=cfg.dtype, quantize=cfg.quantize, cache_dir=cfg.cache_dir
        )
        self.model = lora_model(model, cfg, ckpt)
        if next(self.model.parameters()).device.type == "cpu":
            # PyTorch's CPU flash-attention backward is slow for short sequences; eager attention
            # trains about 20% faster here (measured by sentinel bench train's runs).
            self.model.set_attn_implementation("eager")
        self.model.train()
        self.device = next(self.model.parameters()).device
        self.codec = PromptCodec.for_tokenizer(self.tokenizer, max_post_tokens=cfg.max_length)
        # Checkpointing recomputes layers without a KV cache, so the prefix cannot be shared then.
        wanted = self.device.type == "cpu" if cfg.shared_prefix is None else cfg.shared_prefix
        self.shared_prefix = wanted and not cfg.gradient_checkpointing
        self.decoder = self.model.get_decoder()
        self.head = self.model.get_output_embeddings()
        weights = class_weights(self.train_set) if cfg.class_weighting == "weights" else {label: 1.0 for label in LABELS}
        self.loss_weight = torch.tensor([weights[label] for label in LABELS], device=self.device)
        self.label_ids = torch.tensor(self.codec.label_ids, device=self.device)
        self.encoded = [(self.codec.suffix_ids(self.tokenizer, ex.text), LABELS.index(ex.label)) for ex in self.train_set]
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
        self.total_steps = self.planned_steps()
        from transformers import get_linear_schedule_with_warmup

        self.scheduler = get_linear_schedule_with_warmup(self.optimizer, min(cfg.warmup_steps, self.total_steps // 2), self.total_steps)
        self.state = TrainState()
        if ckpt is not None:
            self._load_checkpoint(ckpt)

    def planned_steps(self) -> int:
        per_epoch = math.ceil(len(self.train_set) / self.cfg.batch_size / self.cfg.grad_accum)
        steps = math.ceil(per_epoch * self.cfg.epochs)
        return min(steps, self.cfg.max_steps) if self.cfg.max_steps else steps

    # ---------------------------------------------------------------- the loss

    def loss(self, batch: Sequence[tuple[list[int], int]]) -> torch.Tensor:
        suffixes = [s for s, _ in batch]
        targets = torch.tensor([t for _, t in batch], device=self.device)
        pad = self.tokenizer.pad_token_id
        if self.shared_prefix:
            prefix_kv = encode_prefix(self.decoder, self.codec.prefix_ids, self.device)
            hidden = suffix_hidden(self.decoder, prefix_kv, suffixes, pad, self.device)
        else:
            full = [list(self.codec.prefix_ids) + s for s in suffixes]
            ids, mask, positions = pad_suffixes(full, 0, pad)
            out = self.decoder(
                input_ids=ids.to(self.device), attention_mask=mask.to(self.device), position_ids=positions.to(self.device), use_cache=False
            )
            hidden = out.last_hidden_state[:, -1, :]
        # One position per example (the response), three rows of the head (the labels).
        logits = hidden.float() @ self.head.weight[self.label_ids].float().T
        return torch.nn.functional.cross_entropy(logits, targets, weight=self.loss_weight)

    # ---------------------------------------------------------------- the loop

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        """Seeded random batches of similar length: shuffle, sort within windows of 50 batches,
        cut, shuffle the batches. Padding to a batch's longest post then costs little."""
        rng = random.Random(self.cfg.seed * 1000 + epoch)
        order = list(range(len(self.encoded)))
        rng.shuffle(order)
        size, window = self.cfg.batch_size, self.cfg.batch_size * 50
        batches: list[list[int]] = []
        for start in range(0, len(order), window):
            chunk = sorted(order[start : start + window], key=lambda i: len(self.encoded[i][0]))
            batches.extend(chunk[i : i + size] for i in range(0, len(chunk), size))
        rng.shuffle(batches)
        return batches

    def run(self, resume: bool = False, progress: Progress | None = None) -> TrainResult:
        self._setup(resume)
        cfg, state = self.cfg, self.state
        started, seconds_before, samples_before = time.perf_counter(), state.seconds, state.samples
        samples = 0
        stopped_early = False
        while state.step < self.total_steps and not stopped_early:
            batches = self.epoch_batches(state.epoch)
            while state.batch_in_epoch < len(batches) and state.step < self.total_steps:
                group = batches[state.batch_in_epoch : state.batch_in_epoch + cfg.grad_accum]
                state.batch_in_epoch += len(group)
                loss_value = 0.0
                for idx in group:
                    loss = self.loss([self.encoded[i] for i in idx]) / len(group)
                    loss.backward()
                    loss_value += float(loss.detach())
                    samples += len(idx)
                torch.nn.utils.clip_grad_norm_([p for p in self.model.parameters() if p.requires_grad], 1.0)
                self.optimizer.step()
                self.scheduler.step()
                self.optimizer.zero_grad(set_to_none=True)
                state.step += 1
                elapsed = time.perf_counter() - started
                if progress:
                    progress({"step": state.step, "total": self.total_steps, "loss": loss_value, "samples_per_s": samples / elapsed, "epoch": state.epoch})
                if state.step % cfg.eval_every == 0 or state.step == self.total_steps:
                    state.seconds, state.samples = seconds_before + time.perf_counter() - started, samples_before + samples
                    stopped_early = self._evaluate_and_checkpoint(progress)
                    if stopped_early:
                        break
            if state.batch_in_epoch >= len(batches):
                state.epoch += 1
                state.batch_in_epoch = 0
        seconds, samples = seconds_before + time.perf_counter() - started, samples_before + samples
        best = self._best_metrics()
        return TrainResult(self.out_dir, best, state, seconds, samples / seconds if seconds else 0.0, stopped_early)

    # ---------------------------------------------------------------- validation and checkpoints

    def evaluate(self) -> dict[str, Any]:
        """Validation metrics with the inference code path (the same as `sentinel eval`)."""
        self.model.eval()
        try:
            clf = Classifier(self.model, self.tokenizer, self.info, batch_size=64, max_post_tokens=self.cfg.max_length)
            preds = [j.label for j in clf.classify([ex.text for ex in self.validation])]
        finally:
            self.model.train()
        return classification_report([ex.label for ex in self.validation], preds)

    def _evaluate_and_checkpoint(self, progress: Progress | None) -> bool:
        state = self.state
        report = self.evaluate()
        f1 = report[self.cfg.select_metric]
        state.history.append({"step": state.step, "f1_weighted": report["f1_weighted"], "f1_macro": report["f1_macro"],
                              "accuracy": report["accuracy"]})
        if progress:
            progress({"step": state.step, "total": self.total_steps, "eval": report})
        if f1 > state.best_f1:
            state.best_f1, state.best_step, state.evals_without_gain = f1, state.step, 0
            self.model.save_pretrained(self.out_dir)
            (self.out_dir / "validation_metrics.json").write_text(json.dumps(report, indent=2))
        else:
            state.evals_without_gain += 1
        self._save_checkpoint()
        return state.evals_without_gain >= self.cfg.patience

    def _best_metrics(self) -> dict[str, Any]:
        path = self.out_dir / "validation_metrics.json"
        return json.loads(path.read_text()) if path.is_file() else {}

    def _save_checkpoint(self) -> None:
        """Weights, optimizer and state of one step, swapped in whole: a run killed while saving
        resumes from the checkpoint before, never from one step's weights and another's state."""
        fresh, previous = self.checkpoint_dir.with_name("checkpoint.new"), self.checkpoint_dir.with_name("checkpoint.old")
        shutil.rmtree(fresh, ignore_errors=True)
        fresh.mkdir(parents=True)
        self.model.save_pretrained(fresh)
        torch.save({"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict()}, fresh / "optim.pt")
        (fresh / "trainer_state.json").write_text(json.dumps(asdict(self.state), indent=2))
        (fresh / RUN_FILE).write_text(json.dumps(self.run_fingerprint(), indent=2))
        if self.checkpoint_dir.exists():
            shutil.rmtree(previous, ignore_errors=True)
            self.checkpoint_dir.rename(previous)
        fresh.rename(self.checkpoint_dir)
        shutil.rmtree(previous, ignore_errors=True)

    def _load_checkpoint(self, ckpt: Path) -> None:
        blob = torch.load(ckpt / "optim.pt", map_location=self.device, weights_only=True)
        self.optimizer.load_state_dict(blob["optimizer"])
        self.scheduler.load_state_dict(blob["scheduler"])
        self.state = TrainState(**json.loads((ckpt / "trainer_state.json").read_text()))
        log.info("resumed", extra={"step": self.state.step, "epoch": self.state.epoch, "checkpoint": str(ckpt)})


def same_init_adapter(theirs: Any, ours: dict[str, Any] | None) -> bool:
    """Whether a checkpoint's warm start (`theirs`, from its run.json) is the adapter asked now: by
    the weights' hash where both have one, else by resolved path. A checkpoint written before the
    adapter was named by content holds the path as it was typed, taken from the working directory."""
    if theirs is None or ours is None:
        return theirs is None and ours is None
    if isinstance(theirs, str):
        return str(Path(theirs).resolve()) == ours["path"]
    if theirs.get("weights_sha256") and ours.get("weights_sha256"):
        return theirs["weights_sha256"] == ours["weights_sha256"]
    return theirs.get("path") == ours["path"]


def adapter_named(identity: Any) -> str:
    if isinstance(identity, dict):
        digest = identity.get("weights_sha256")
        return repr(identity.get("path")) + (f" (weights sha256 {digest[:12]})" if digest else "")
    return repr(identity)


def checkpoint_to_resume(out_dir: Path) -> Path | None:
    """A run's whole checkpoint: `checkpoint`, or `checkpoint.old` where a kill fell between the two
    renames of a save (`Trainer._save_checkpoint`). A `checkpoint.new` is a save that did not finish."""
    for candidate in (Path(out_dir) / "checkpoint", Path(out_dir) / "checkpoint.old"):
        if (candidate / "trainer_state.json").is_file():
            return candidate
    return None


def balanced(examples: list[Example], seed: int) -> list[Example]:
    """Oversample minority labels up to the majority count."""
    rng = random.Random(seed)
    groups = {label: [ex for ex in examples if ex.label == label] for label in LABELS}
    target = max(len(g) for g in groups.values())
    out: list[Example] = []
    for group in groups.values():
        if group:
            out.extend(group + [rng.choice(group) for _ in range(target - len(group))])
    rng.shuffle(out)
    return out


# -------------------------------------------------------------------- the model card


def base_revision(base: str) -> str | None:
    if base == DEFAULT_BASE:
        return f"gguf-sha256:{sha256_file(bundled_gguf())}"
    config = Path(base) / "config.json"
    if config.is_file():
        return f"config-sha256:{sha256_file(config)}"
    return None  # a hub id: the hub's commit is resolved at download time


def library_versions() -> dict[str, str]:
    import peft
    import transformers

    return {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__}


def record_evaluation(card_path: Path, data: Path | Sequence[Path], report: dict[str, Any], subset: str = "") -> dict[str, Any]:
    """Add one `sentinel eval` report to an adapter's model card under `evaluations`, keyed by the
    data file's name without its extension (and the `subset` of it evaluated, e.g. a holdout) and
    carrying its hash, so the figures a README quotes are the card's own, on data named by content
    (a later run on the same file and subset replaces the entry). Several files (a holdout of a
    multi-file run): keyed by their names joined by " + ", and `data` lists each file."""
    files = [data] if isinstance(data, Path) else list(data)
    named = [{"path": str(path), "sha256": sha256_file(path)} for path in files]
    card = json.loads(card_path.read_text())
    keep = ("n", "accuracy", "f1_macro", "f1_weighted", "per_class", "confusion", "model", "skipped")
    card.setdefault("evaluations", {})[" + ".join(path.stem for path in files) + (f" ({subset})" if subset else "")] = {
        "data": named[0] if len(named) == 1 else named, **{k: report[k] for k in keep if k in report}}
    card_path.write_text(json.dumps(card, indent=2) + "\n")
    return card


def warm_start(init_adapter: Path, weights_sha256: str | None | EllipsisType = ...) -> tuple[dict[str, Any], dict[str, Any]]:
    """What a warm start inherits, for the card: the LoRA shape actually trained (the init adapter's,
    not the command's --r/--alpha) and the adapter's own lineage (its weights' hash, the data it was
    trained on and the checkpoint choice it carries), since its data is part of the new adapter's.
    `weights_sha256`: the hash the run already took (Trainer.init_adapter_identity); left out (...),
    the weights are hashed here."""
    config = json.loads((init_adapter / "adapter_config.json").read_text())
    targets = config["target_modules"]  # a string is a PEFT regex, kept as it is (sorted, it fell into characters)
    shape = {"r": config["r"], "alpha": config["lora_alpha"], "dropout": config.get("lora_dropout", 0.0),
             "target_modules": targets if isinstance(targets, str) else sorted(targets)}
    weights = init_adapter / "adapter_model.safetensors"
    card_path = init_adapter / "model_card.json"
    parent = json.loads(card_path.read_text()) if card_path.is_file() else {}
    if weights_sha256 is ...:
        weights_sha256 = sha256_file(weights) if weights.is_file() else None
    lineage = {"path": str(init_adapter), "weights_sha256": weights_sha256,
               **{k: parent[k] for k in ("data", "split", "init_adapter") if k in parent}}
    return shape, lineage


def targets_named(targets: str | Sequence[str]) -> str:
    return f"the modules matching the regex {targets!r}" if isinstance(targets, str) else ", ".join(targets)


def check_warm_start_base(init_adapter: Path, base: str) -> None:
    """Refuse to train on from an adapter made for another base. PEFT catches a base of another
    shape, but two bases of one shape (another revision or fine-tune of the same model) would load
    silently and train a LoRA on weights it was never fitted to. The parent's card names its base's
    revision. Where either revision is unknown (a hub id has none here), only a warning is given
    when the names differ: a hub id and a local copy of it name one base two ways."""
    card_path = init_adapter / "model_card.json"
    card = json.loads(card_path.read_text()) if card_path.is_file() else {}
    theirs, ours = card.get("base_revision"), base_revision(base)
    if theirs and ours:
        if theirs != ours:
            raise ModelLoadError(f"--init-adapter {init_adapter} was trained on base {card.get('base_model')!r} "
                                 f"({theirs}), not on {base!r} ({ours}): a LoRA fits only its own base")
        return
    named = card.get("base_model")
    if named and named != base:
        log.warning("the init adapter's card names another base; their revisions cannot be compared",
                    extra={"init_adapter": str(init_adapter), "its_base": named, "base": base})


def name_the_base(out_dir: Path, base: str) -> None:
    """Record the base in adapter_config.json as the user named it. PEFT writes the directory the
    base was loaded from, which for the bundled base is a cache path on the training machine: it
    would leak that path into a shipped adapter and name a directory no other machine has. It is
    rewritten once the run is over, not set on the PEFT config at the start: PEFT reads that entry at
    every save to find the base's config.json, and a bare name would send each checkpoint's save to
    the Hub for it (or, offline, to a failed lookup and a warning)."""
    path = out_dir / "adapter_config.json"
    if path.is_file():
        config = json.loads(path.read_text())
        config["base_model_name_or_path"] = base
        path.write_text(json.dumps(config, indent=2) + "\n")


def recorded_settings(cfg: Any) -> dict[str, Any]:
    """A run's config dataclass as a card records it: JSON values, and no machine-local cache path."""
    return {k: (list(v) if isinstance(v, tuple) else str(v) if isinstance(v, Path) else v)
            for k, v in asdict(cfg).items() if k != "cache_dir"}


def write_model_card(result: TrainResult, cfg: TrainConfig, info: ModelInfo | None, data_files: Sequence[Path], split_info: dict[str, Any],
                     validation_file: Path | None = None, init_identity: dict[str, Any] | None = None) -> dict[str, Any]:
    """The adapter's model_card.json and README. `data_files` are what it trained on, in order;
    `validation_file` (--val-data) chose its checkpoint and is listed after them, marked
    `"role": "validation"`, so a reader never takes it for training data. `init_identity` is the
    run's Trainer.init_adapter_identity, whose weights' hash the card's lineage reuses (an
    adapter's weights are megabytes, gigabytes at a 7B's rank 64)."""
    hyperparameters = recorded_settings(cfg)
    lineage = None
    if cfg.init_adapter is not None:
        shape, lineage = warm_start(cfg.init_adapter, init_identity["weights_sha256"] if init_identity else ...)
        hyperparameters.update(shape)
    card = {
        "base_model": cfg.base,
        "base_revision": base_revision(cfg.base),
        "task": "crypto forum post sentiment about the price: positive / negative / neutral",
        "prompt": "Alpaca-LoRA template, model/prompt.py",
        "data": [{"path": str(p), "sha256": sha256_file(p)} for p in data_files]
        + ([{"path": str(validation_file), "sha256": sha256_file(validation_file), "role": "validation"}] if validation_file else []),
        "split": split_info,
        "hyperparameters": hyperparameters,
        **({"init_adapter": lineage} if lineage else {}),
        "validation_metrics": result.metrics,
        "best_step": result.state.best_step,
        "steps": result.state.step,
        "stopped_early": result.stopped_early,
        "training_seconds": round(result.seconds, 1),
        "train_samples_per_s": round(result.samples_per_s, 2),
        "device": info.device if info else None,
        "dtype": info.dtype if info else None,
        "libraries": library_versions(),
    }
    out = result.out_dir
    (out / "model_card.json").write_text(json.dumps(card, indent=2) + "\n")
    name_the_base(out, cfg.base)
    metrics = result.metrics or {}
    readme = [
        f"# LoRA adapter: {cfg.base}",
        "",
        "Fine-tuned by `sentinel train` (Forum Sentinel) to judge crypto forum posts as positive / negative /",
        "neutral about the price, with the Alpaca prompt in `model/prompt.py`.",
        "",
        f"- validation weighted F1: {metrics.get('f1_weighted', float('nan')):.4f}, macro F1 {metrics.get('f1_macro', float('nan')):.4f}, "
        f"accuracy {metrics.get('accuracy', float('nan')):.4f} (n={metrics.get('n', 0)}; the checkpoint chosen by {cfg.select_metric})",
        f"- data: {', '.join(Path(p).name for p in data_files)}" + (f"; validation (checkpoint choice): {validation_file.name}" if validation_file else ""),
        f"- LoRA r={hyperparameters['r']}, alpha={hyperparameters['alpha']}, dropout={hyperparameters['dropout']}, targets {targets_named(hyperparameters['target_modules'])}"
        + (f" (warm-started from {Path(lineage['path']).name})" if lineage else ""),
        f"- {result.state.step} steps in {result.seconds / 60:.1f} min on {info.device if info else '?'} ({result.samples_per_s:.1f} samples/s)",
        "",
        "Full details: model_card.json.",
        "",
    ]
    (out / "README.md").write_text("\n".join(readme))
    return card
