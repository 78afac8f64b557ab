"""Adapter soups (training/soup.py): the maths on plain tensors, and a soup written, loaded by PEFT
and merged into a real (tiny) Llama exactly as the worker loads an adapter."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from training.soup import SoupError, lora_pairs, make_soup, soup_tensors

TARGETS = ["q_proj", "v_proj", "down_proj"]


def fake_state(rank: int, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "base_model.model.layers.0.q_proj.lora_A.weight": torch.randn(rank, 6, generator=g),
        "base_model.model.layers.0.q_proj.lora_B.weight": torch.randn(5, rank, generator=g),
        "base_model.model.layers.0.mlp.lora_A.weight": torch.randn(rank, 4, generator=g),
        "base_model.model.layers.0.mlp.lora_B.weight": torch.randn(3, rank, generator=g),
    }


def delta(state: dict[str, torch.Tensor], scaling: float) -> dict[str, torch.Tensor]:
    return {module: scaling * b @ a for module, (a, b) in lora_pairs(state).items()}


def test_the_soup_is_the_weighted_mean_of_the_members_changes():
    members = [(fake_state(8, 1), 16 / 8), (fake_state(4, 2), 4 / 4), (fake_state(8, 3), 8 / 8)]
    weights = [0.5, 0.3, 0.2]
    soup = soup_tensors([s for s, _ in members], [c for _, c in members], weights)
    got = delta(soup, 1.0)
    want = [delta(s, c) for s, c in members]
    assert set(got) == set(want[0])
    for module, value in got.items():
        expected = sum(w * d[module] for w, d in zip(weights, want))
        torch.testing.assert_close(value, expected)
    assert soup["base_model.model.layers.0.q_proj.lora_A.weight"].shape == (20, 6)


def test_a_soup_of_one_adapter_with_itself_changes_nothing():
    state = fake_state(8, 7)
    soup = soup_tensors([state, state], [2.0, 2.0], [0.5, 0.5])
    for module, value in delta(soup, 1.0).items():
        torch.testing.assert_close(value, delta(state, 2.0)[module])


def test_adapters_that_do_not_fit_together_are_refused():
    a, b = fake_state(8, 1), fake_state(8, 2)
    b["base_model.model.layers.1.q_proj.lora_A.weight"] = torch.zeros(8, 6)
    b["base_model.model.layers.1.q_proj.lora_B.weight"] = torch.zeros(5, 8)
    with pytest.raises(SoupError, match="other modules"):
        soup_tensors([a, b], [1.0, 1.0], [0.5, 0.5])
    wide = {k: (torch.zeros(v.shape[0], 7) if "q_proj.lora_A" in k else v) for k, v in fake_state(8, 3).items()}
    with pytest.raises(SoupError, match="do not fit together"):
        soup_tensors([a, wide], [1.0, 1.0], [0.5, 0.5])
    with pytest.raises(SoupError, match="not a plain LoRA tensor"):
        soup_tensors([{**a, "base_model.model.lm_head.weight": torch.zeros(2, 2)}, a], [1.0, 1.0], [0.5, 0.5])
    lonely = dict(a)
    del lonely["base_model.model.layers.0.mlp.lora_B.weight"]
    with pytest.raises(SoupError, match="without their pair"):
        soup_tensors([lonely, a], [1.0, 1.0], [0.5, 0.5])


def save_adapter(base_dir: Path, out: Path, r: int, alpha: int, seed: int, **config) -> Path:
    """A LoRA adapter for the tiny Llama with random (non-zero) A and B, saved by PEFT itself."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    lora = LoraConfig(r=r, lora_alpha=alpha, target_modules=TARGETS, init_lora_weights=False, task_type="CAUSAL_LM", **config)
    get_peft_model(model, lora).save_pretrained(out)
    return out


def merged_weights(base_dir: Path, adapter: Path | None) -> dict[str, torch.Tensor]:
    from model.base import attach_adapter
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    if adapter is not None:
        model = attach_adapter(model, str(adapter), merge=True)  # the worker's own loading path
    return {k: v.detach().clone() for k, v in model.state_dict().items() if any(t in k for t in TARGETS)}


def test_a_written_soup_loads_through_peft_and_merges_to_the_mean_of_the_members(tiny_model_dir, tmp_path):
    first = save_adapter(tiny_model_dir, tmp_path / "seed1", r=8, alpha=16, seed=1)
    second = save_adapter(tiny_model_dir, tmp_path / "seed2", r=4, alpha=8, seed=2)
    (first / "model_card.json").write_text(json.dumps({"base_model": "tiny", "hyperparameters": {"seed": 1}}))
    card = make_soup([first, second], tmp_path / "soup", [0.25, 0.75])

    config = json.loads((tmp_path / "soup" / "adapter_config.json").read_text())
    assert (config["r"], config["lora_alpha"]) == (12, 12)
    assert card["base_model"] == "tiny" and card["soup"]["rank"] == 12
    assert [m["weight"] for m in card["soup"]["members"]] == [0.25, 0.75]
    assert card["soup"]["members"][0]["card"]["hyperparameters"]["seed"] == 1
    assert all(len(m["weights_sha256"]) == 64 for m in card["soup"]["members"])

    base = merged_weights(tiny_model_dir, None)
    soup = merged_weights(tiny_model_dir, tmp_path / "soup")
    members = [merged_weights(tiny_model_dir, first), merged_weights(tiny_model_dir, second)]
    assert set(soup) == set(base) and len(base) == 2 * len(TARGETS)
    for name, weight in soup.items():
        expected = base[name] + 0.25 * (members[0][name] - base[name]) + 0.75 * (members[1][name] - base[name])
        torch.testing.assert_close(weight, expected, rtol=1e-5, atol=1e-6)
        assert not torch.allclose(weight, base[name])  # the members did change it


def test_lora_variants_and_bad_weights_are_refused(tiny_model_dir, tmp_path):
    plain = save_adapter(tiny_model_dir, tmp_path / "plain", r=4, alpha=8, seed=1)
    dora = save_adapter(tiny_model_dir, tmp_path / "dora", r=4, alpha=8, seed=2, use_dora=True)
    with pytest.raises(SoupError, match="use_dora"):
        make_soup([plain, dora], tmp_path / "out")
    with pytest.raises(SoupError, match="sum to 1"):
        make_soup([plain, plain], tmp_path / "out", [0.5, 0.6])
    for not_numbers in ([float("nan"), float("nan")], [0.5, float("nan")], [float("inf"), 0.5]):  # NaN passed every comparison
        with pytest.raises(SoupError, match="sum to 1"):
            make_soup([plain, plain], tmp_path / "out", not_numbers)
    with pytest.raises(SoupError, match="at least two"):
        make_soup([plain], tmp_path / "out")
    with pytest.raises(SoupError, match="not a saved LoRA adapter"):
        make_soup([plain, tmp_path], tmp_path / "out")
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(plain, broken)
    (broken / "adapter_config.json").write_text("{not json")
    with pytest.raises(SoupError, match="adapter_config.json: not valid JSON"):
        make_soup([plain, broken], tmp_path / "out")
    shutil.copy(plain / "adapter_config.json", broken / "adapter_config.json")
    weights = broken / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])  # truncated
    with pytest.raises(SoupError, match="cannot be read as safetensors"):
        make_soup([plain, broken], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_sentinel_soup_writes_an_adapter_and_fails_in_one_line(tiny_model_dir, tmp_path):
    first = save_adapter(tiny_model_dir, tmp_path / "a", r=4, alpha=8, seed=1)
    second = save_adapter(tiny_model_dir, tmp_path / "b", r=4, alpha=8, seed=2)

    def sentinel(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "sentinel.cli", "soup", *args], capture_output=True, text=True,
                              env=dict(os.environ), timeout=300)

    ok = sentinel(str(first), str(second), "--out", str(tmp_path / "soup"))
    assert ok.returncode == 0, ok.stderr
    assert "rank 8, 2 members" in ok.stdout
    assert json.loads((tmp_path / "soup" / "adapter_config.json").read_text())["r"] == 8
    bad = sentinel(str(first), str(second), "--out", str(tmp_path / "x"), "--weights", "0.5,half")
    assert bad.returncode == 2 and "--weights" in bad.stderr and "Traceback" not in bad.stderr
    missing = sentinel(str(first), str(tmp_path / "nowhere"), "--out", str(tmp_path / "y"))
    assert missing.returncode == 2 and "not a saved LoRA adapter" in missing.stderr
