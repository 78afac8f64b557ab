"""Environments for tests that run real worker processes and `sentinel` commands."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
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


class Hook:
    """An Apprise json:// receiver that keeps every notification it accepted; answers 500 while
    `failing` is set (a notification endpoint that is down)."""

    def __init__(self) -> None:
        self.failing = False
        self.accepted: list[dict] = []
        self.refused = 0
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if hook.failing:
                    hook.refused += 1
                    self.send_response(500)
                else:
                    hook.accepted.append(json.loads(body))
                    self.send_response(200)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"json://127.0.0.1:{self.server.server_address[1]}/hook"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
