"""Test-only: make a live worker's agent stop processing, on demand, while it goes on fetching.

Imported by a worker process the test starts (`tests/test_http.py`), before the worker runs. It
reproduces a stuck agent or pipeline (an await that never returns): the event loop runs on, so
/healthz stays green, and aiokafka goes on fetching posts into Faust's buffer, but no batch is
acked, so nothing is committed. While the file `$PROCESSING_STALL_FILE` exists, each batch handed
to `BatchPipeline.submit` waits before it is processed, and the file `$PROCESSING_STALL_FILE.on`
says a batch is held. Removing the file lets it through.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

from stream.processor import BatchPipeline

TRIGGER = Path(os.environ["PROCESSING_STALL_FILE"])
ON = TRIGGER.with_name(TRIGGER.name + ".on")
POLL_S = 0.1  # how often a held batch looks for the file gone


def install() -> None:
    original = BatchPipeline.submit

    async def submit(self: BatchPipeline, messages: Any, done: Any) -> None:
        if TRIGGER.exists():
            ON.touch()
            while TRIGGER.exists():
                await asyncio.sleep(POLL_S)
        await original(self, messages, done)

    BatchPipeline.submit = submit  # type: ignore[method-assign]


install()
