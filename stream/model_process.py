"""The model in a child process of the worker, so the two do not take turns at one interpreter lock.

A forward pass on a GPU is a stream of small kernel launches made from Python, each needing the
interpreter lock; the worker's event loop (Kafka, Redis, judging the scopes) needs it too. In one
process they take turns, and the accelerator waits while the event loop holds the lock. Measured on
one H200 with a 7B-shaped model (`bench/gpu_pipeline.py --py-spy`, docs/benchmarks.md "The pipeline
on a GPU"): the event loop held the lock 19% of the time with a few scopes and 47% with 400, and the
worker got 0.78 and 0.60 of what the model does alone, while the model was busy 90-97% of the time:
each call was slower, not waiting for work. In its own process the model has an interpreter of its
own; the worker sends a batch's texts and gets its judgements back over a pipe (kilobytes a batch).
On CPU the same measured 8-10% slower, so SENTINEL_MODEL_PROCESS=auto uses it on CUDA devices only
(sentinel.cli.model_apart).

The child is started with `spawn` (a fork would copy the worker's threads and locks), loads the model
on its main thread and classifies there (one OpenMP pool: stream/model_thread.py), ignores SIGINT (a
Ctrl-C reaches the whole process group, and the worker drains its batches through the model before it
stops), and exits when its pipe closes or, on Linux, when its parent dies, even by SIGKILL
(PR_SET_PDEATHSIG). Start it from the main thread: the kernel ties that signal to the starting thread.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import sys
from multiprocessing.connection import Connection
from typing import Any, Callable, Sequence

from model.scorer import Judgement, ModelGone, ModelInfo, Scorer

log = logging.getLogger(__name__)


class ModelProcess:
    """A Scorer whose model lives in a child process. One call at a time (the worker's ModelThread
    makes them); each blocks on the pipe, which leaves the interpreter lock to the event loop."""

    def __init__(self, process: Any, conn: Connection, info: ModelInfo):
        self._process = process
        self._conn = conn
        self.info = info

    @classmethod
    def start(cls, factory: Callable[[], Scorer]) -> "ModelProcess":
        """Start the child and wait until `factory` (picklable: it runs there) has built the model.
        What the factory raises is raised here; SystemExit too, so a failed load exits the worker."""
        context = multiprocessing.get_context("spawn")
        ours, theirs = context.Pipe()
        process = context.Process(target=_serve, args=(theirs, factory), name="sentinel-model", daemon=True)
        process.start()
        theirs.close()
        try:
            kind, payload = ours.recv()
        except (EOFError, OSError) as exc:
            process.join(5)
            raise ModelGone(f"the model process exited while loading (exit code {process.exitcode})") from exc
        if kind != "ready":
            process.join(5)
            raise payload
        log.info("model process started", extra={"pid": process.pid, "model": payload.id, "device": payload.device})
        return cls(process, ours, payload)

    @property
    def pid(self) -> int | None:
        return self._process.pid

    @property
    def alive(self) -> bool:
        """For /readyz: a worker whose model process died is not ready (its next batch stops it)."""
        return self._process.is_alive()

    def classify(self, texts: Sequence[str]) -> Sequence[Judgement]:
        try:
            self._conn.send(list(texts))
            kind, payload = self._conn.recv()
        except (EOFError, OSError) as exc:
            self._process.join(1)
            raise ModelGone(f"the model process is gone (exit code {self._process.exitcode})") from exc
        if kind == "raised":
            raise payload  # the model's own error for this batch (the processor splits the batch)
        return payload

    def close(self, grace_s: float = 10.0) -> None:
        """Close the pipe (the child exits when it reads the end) and wait; kill it if it does not go."""
        self._conn.close()
        self._process.join(grace_s)
        if self._process.is_alive():
            self._process.kill()
            self._process.join(grace_s)


def _serve(conn: Connection, factory: Callable[[], Scorer]) -> None:
    """The child: build the model, then classify each batch that arrives until the pipe closes."""
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        scorer = factory()
    except BaseException as exc:  # noqa: BLE001 - a failed load (SystemExit from the CLI's message included) goes to the parent
        _send(conn, "failed", exc)
        return
    _send(conn, "ready", scorer.info)
    while True:
        try:
            texts = conn.recv()
        except (EOFError, OSError):
            return  # the worker closed the pipe or died
        try:
            result: Any = list(scorer.classify(texts))
            kind = "ok"
        except Exception as exc:  # noqa: BLE001 - raised again in the worker, as it would be in-process
            result, kind = exc, "raised"
        try:
            _send(conn, kind, result)
        except (BrokenPipeError, OSError):
            return


def _send(conn: Connection, kind: str, payload: Any) -> None:
    try:
        conn.send((kind, payload))
    except (BrokenPipeError, ConnectionResetError):
        raise
    except Exception:  # noqa: BLE001 - an exception that cannot be pickled is sent as its text
        conn.send((kind, RuntimeError(f"{type(payload).__name__}: {payload}")))


def _die_with_parent() -> None:
    """Ask the kernel for SIGKILL when the parent dies (Linux): the pipe's end alone is seen only
    between batches, and a SIGKILLed worker must not leave a model holding a GPU."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)
