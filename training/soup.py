"""A soup of LoRA adapters: one adapter whose weight change is the weighted mean of theirs.

A LoRA adapter changes each target matrix by `scaling * B @ A`. The mean of several such changes is
itself one LoRA of the summed rank: stack the A matrices, set the B matrices side by side, each
multiplied by its weight and its own scaling, and give the result a scaling of 1 (alpha = r). So the
soup is exact, not an approximation, and it loads like any adapter. Merged into the weights at load
(every unquantised path), it costs nothing at inference; kept as a side branch (4-bit) it costs the
summed rank instead of one adapter's.

Averaging the weight changes of runs that differ only by seed is the cheap form of an ensemble: a
mean of small changes to one base behaves close to the mean of their outputs, without running the
model once per member. It helps only where the seeds' errors differ; on the shipped recipe they
mostly did not (docs/results/indomain/README.md, session 20).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from training.trainer import sha256_file

WEIGHTS = "adapter_model.safetensors"
CONFIG = "adapter_config.json"
# LoRA variants whose change is not `scaling * B @ A` cannot be summed this way.
UNSUPPORTED = ("use_dora", "use_rslora", "use_qalora", "use_bdlora")


class SoupError(ValueError):
    """The adapters cannot be averaged into one (different bases, targets or shapes)."""


def lora_pairs(state: Mapping[str, torch.Tensor]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """The adapter's (A, B) matrices by target module, from its saved tensors."""
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in state.items():
        for part in ("lora_A", "lora_B"):
            marker = f".{part}."
            if marker in key:
                pairs.setdefault(key.replace(marker, ".{}."), {})[part] = tensor
                break
        else:
            raise SoupError(f"not a plain LoRA tensor: {key!r} (only lora_A / lora_B weights can be averaged)")
    incomplete = sorted(k for k, v in pairs.items() if len(v) != 2)
    if incomplete:
        raise SoupError(f"LoRA tensors without their pair: {incomplete[:3]}")
    return {k: (v["lora_A"], v["lora_B"]) for k, v in pairs.items()}


def soup_tensors(states: Sequence[Mapping[str, torch.Tensor]], scalings: Sequence[float], weights: Sequence[float]) -> dict[str, torch.Tensor]:
    """One adapter's tensors whose change, at scaling 1, is sum_i weights[i] * scalings[i] * B_i @ A_i."""
    if not states or len(states) != len(scalings) or len(states) != len(weights):
        raise SoupError("one scaling and one weight per adapter, and at least one adapter")
    all_pairs = [lora_pairs(s) for s in states]
    modules = set(all_pairs[0])
    for i, pairs in enumerate(all_pairs[1:], start=2):
        if set(pairs) != modules:
            raise SoupError(f"adapter {i} targets other modules than adapter 1: {sorted(set(pairs) ^ modules)[:3]}")
    soup: dict[str, torch.Tensor] = {}
    for module in sorted(modules):
        a_parts, b_parts = [], []
        for pairs, scaling, weight in zip(all_pairs, scalings, weights):
            a, b = pairs[module]
            a_parts.append(a)
            b_parts.append(b * (weight * scaling))
        try:
            soup[module.format("lora_A")] = torch.cat(a_parts, dim=0).contiguous()
            soup[module.format("lora_B")] = torch.cat(b_parts, dim=1).contiguous()
        except RuntimeError as exc:
            raise SoupError(f"{module.format('lora_*')}: the adapters' matrices do not fit together ({exc})") from None
    return soup


def scaling_of(config: Mapping[str, Any]) -> float:
    return float(config["lora_alpha"]) / float(config["r"])


def check_configs(configs: Sequence[Mapping[str, Any]]) -> None:
    first = configs[0]
    for i, config in enumerate(configs, start=1):
        if config.get("peft_type") != "LORA":
            raise SoupError(f"adapter {i} is not a LoRA adapter ({config.get('peft_type')!r})")
        used = [flag for flag in UNSUPPORTED if config.get(flag)]
        if used or config.get("rank_pattern") or config.get("alpha_pattern"):
            raise SoupError(f"adapter {i} uses {used or 'per-module ranks'}: its change is not scaling * B @ A")
        if config.get("modules_to_save"):
            raise SoupError(f"adapter {i} also trains whole modules ({config['modules_to_save']}), which a soup cannot average")
        for field in ("base_model_name_or_path", "task_type", "bias"):
            if config.get(field) != first.get(field):
                raise SoupError(f"adapter {i} has {field}={config.get(field)!r}, adapter 1 {first.get(field)!r}")
        if sorted(config["target_modules"]) != sorted(first["target_modules"]):
            raise SoupError(f"adapter {i} targets {sorted(config['target_modules'])}, adapter 1 {sorted(first['target_modules'])}")


def soup_config(configs: Sequence[Mapping[str, Any]], rank: int) -> dict[str, Any]:
    # alpha = r gives scaling 1: each member's own scaling is already folded into its B.
    return {**configs[0], "r": rank, "lora_alpha": rank, "lora_dropout": 0.0, "inference_mode": True}


def _config(path: Path) -> dict[str, Any]:
    try:
        return json.loads((path / CONFIG).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SoupError(f"{path / CONFIG}: not valid JSON ({exc})") from None


def _weights(path: Path, load_file: Any) -> dict[str, Any]:
    try:
        return load_file(str(path / WEIGHTS))
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own SafetensorError (and OSError) for a damaged file
        raise SoupError(f"{path / WEIGHTS}: cannot be read as safetensors ({exc})") from None


def make_soup(adapters: Sequence[Path], out_dir: Path, weights: Sequence[float] | None = None) -> dict[str, Any]:
    """Write the soup of `adapters` (equal weights unless given) to `out_dir`, with a model card that
    names each member by its weights' hash and carries its card."""
    from safetensors.torch import load_file, save_file

    if len(adapters) < 2:
        raise SoupError("a soup needs at least two adapters")
    weights = list(weights) if weights is not None else [1.0 / len(adapters)] * len(adapters)
    # `not w > 0` and `not ... <= 1e-6`: NaN fails every comparison, and must fail this check too
    if len(weights) != len(adapters) or any(not w > 0 for w in weights) or not abs(sum(weights) - 1.0) <= 1e-6:
        raise SoupError(f"weights must be positive, one per adapter, and sum to 1; got {weights}")
    for path in adapters:
        for name in (CONFIG, WEIGHTS):
            if not (path / name).is_file():
                raise SoupError(f"{path} has no {name}: not a saved LoRA adapter")
    configs = [_config(p) for p in adapters]
    check_configs(configs)
    states = [_weights(p, load_file) for p in adapters]
    tensors = soup_tensors(states, [scaling_of(c) for c in configs], weights)
    rank = sum(int(c["r"]) for c in configs)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out_dir / WEIGHTS))
    (out_dir / CONFIG).write_text(json.dumps(soup_config(configs, rank), indent=2) + "\n")
    card = soup_card(adapters, weights, rank)
    (out_dir / "model_card.json").write_text(json.dumps(card, indent=2) + "\n")
    (out_dir / "README.md").write_text(soup_readme(card))
    return card


def soup_card(adapters: Sequence[Path], weights: Sequence[float], rank: int) -> dict[str, Any]:
    members: list[dict[str, Any]] = []
    for path, weight in zip(adapters, weights):
        card_path = path / "model_card.json"
        card = json.loads(card_path.read_text()) if card_path.is_file() else {}
        members.append({"path": str(path), "weight": weight, "weights_sha256": sha256_file(path / WEIGHTS), "card": card})
    first = members[0]["card"]
    return {
        **{k: first[k] for k in ("base_model", "base_revision", "task", "prompt") if k in first},
        "soup": {"members": members, "rank": rank,
                 "how": "mean of the members' LoRA weight changes, one adapter of the summed rank (training/soup.py)"},
    }


def soup_readme(card: Mapping[str, Any]) -> str:
    members = card["soup"]["members"]
    lines = [
        f"# LoRA adapter soup: {card.get('base_model', '?')}",
        "",
        f"The mean of {len(members)} adapters' weight changes (`sentinel soup`), one LoRA of rank {card['soup']['rank']}.",
        "",
        *(f"- {Path(m['path']).name}: weight {m['weight']:.3f}, seed {m['card'].get('hyperparameters', {}).get('seed', '?')}, "
          f"weights sha256 {m['weights_sha256'][:12]}" for m in members),
        "",
        "Full details: model_card.json.",
        "",
    ]
    return "\n".join(lines)
