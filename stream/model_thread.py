"""The one thread that touches the model: it loads it and runs every batch.

torch's CPU kernels run on an OpenMP thread pool that belongs to the thread calling them. If the
model is loaded on the main thread (its prefix cache is a forward pass) and batches then run on
another thread, the process holds two pools on the same cores. libgomp then sees more threads than
CPUs and stops spin-waiting between kernels: its threads sleep and wake a thousand times a second
and the cores idle in between (measured on 2 cores: about 1,000-1,500 voluntary context switches a
second and 1.75 cores busy, against 2-4 and 1.99 with one thread doing both). Loading and
classifying on this one thread keeps a single pool. It also keeps model calls strictly one at a time.
With the model in a process of its own (stream/model_process.py, on a GPU) this thread makes the
calls to it, each a wait on the pipe that leaves the interpreter lock to the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")


class ModelThread:
    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")

    def load(self, factory: Callable[[], T]) -> T:
        """Build the model on this thread (blocking): whatever the factory raises is raised here."""

        def build() -> T:
            model = factory()
            _log_threads()
            return model

        return self._executor.submit(build).result()

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)


def _log_threads() -> None:
    """Say how many intra-op threads the model gets: throughput depends on it."""
    torch = sys.modules.get("torch")
    if torch is not None:
        log.info("model thread started", extra={"torch_threads": torch.get_num_threads(), "interop_threads": torch.get_num_interop_threads()})
