"""Environments for tests that run real worker processes and `sentinel` commands."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def worker_env(name: str, kafka: str, redis_url: str, cache_dir: Path, **overrides: str) -> dict[str, str]:
    """One test's own topics and consumer group on the shared broker; the lexicon scorer (no model
    load) unless `SENTINEL_BASE` is overridden; embedded-stack timeouts so a group forms in seconds."""
    return {
        **os.environ,
        "SENTINEL_BASE": "lexicon",
        "SENTINEL_CACHE_DIR": str(cache_dir),
        "KAFKA_BROKER": kafka,
        "REDIS_URL": redis_url,
        "SENTINEL_APP_ID": f"test-{name}",
        "SENTINEL_TOPIC_POSTS": f"{name}-posts",
        "SENTINEL_TOPIC_SENTIMENT": f"{name}-sentiment",
        "SENTINEL_TOPIC_DLQ": f"{name}-dlq",
        "SENTINEL_TOPIC_ALERTS": f"{name}-alerts",
        "SENTINEL_PARTITIONS": "1",
        "SENTINEL_REBALANCE_TIMEOUT": "5",
        "SENTINEL_SESSION_TIMEOUT": "6",
        "SENTINEL_HEARTBEAT_INTERVAL": "1",
        **overrides,
    }


def sentinel(args: list[str], env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sentinel.cli", *args], env=env, capture_output=True, text=True, timeout=timeout)
