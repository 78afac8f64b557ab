"""The one settings object. Everything configurable comes from the environment (12-factor).

Variables are `SENTINEL_<FIELD>`; the connection URLs also accept their conventional names
(`KAFKA_BROKER`, `REDIS_URL`). Secret values are `SecretStr`, so they never print.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

Quantize = Literal["none", "8bit", "4bit"]
DType = Literal["auto", "float32", "bfloat16", "float16"]


def _default_cache_dir() -> Path:
    return Path.home() / ".cache" / "forum-sentinel"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SENTINEL_", extra="ignore", populate_by_name=True)

    # --- model ---
    base: str = Field("smollm2", description="'smollm2' (bundled GGUF), a Hugging Face model id or a local directory")
    adapter: str = Field("none", description="PEFT LoRA adapter: 'none', a directory or a hub id")
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N")
    dtype: DType = Field("auto", description="auto picks bf16 on CUDA and on CPUs with native bf16, else fp32")
    quantize: Quantize = Field("none", description="bitsandbytes weight quantisation on CUDA")
    batch_size: int = Field(32, ge=1, le=4096)
    max_post_tokens: int = Field(192, ge=8, le=4096, description="posts are truncated to this many tokens")
    cache_dir: Path = Field(default_factory=_default_cache_dir, description="converted base models live here")

    # --- connections (used by the streaming worker) ---
    kafka_broker: str | None = Field(None, validation_alias=AliasChoices("SENTINEL_KAFKA_BROKER", "KAFKA_BROKER"))
    redis_url: str | None = Field(None, validation_alias=AliasChoices("SENTINEL_REDIS_URL", "REDIS_URL"))

    # --- logging ---
    log_level: str = "INFO"
    log_json: bool = False


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
