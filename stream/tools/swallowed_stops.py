"""A stop that a finalizer swallowed, raised again.

Python runs a signal's handler at the next bytecode, wherever that is; in a `__del__` (a redis
client or a socket the garbage collector ends) or a weakref callback, the exception it raises is
printed as "Exception ignored in ..." and dropped. The stop handlers ignore SIGTERM once they have
raised (so a second one cannot cut the clean-up short), so a SIGTERM dropped there was lost for
good: `sentinel bench store` stopped that way ran on to the end and exited 0 (seen once in 22 runs
of `pytest tests/test_shutdown.py -k benchmark_runs`, session 52). Standard library only: the
console script installs it before it imports the CLI.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from types import FrameType
from typing import Any

TERMINATED = 128 + signal.SIGTERM  # 143, as a shell reports a process SIGTERM ended
REDELIVER_S = 0.01


def stop_signal(exc: BaseException | None) -> int | None:
    """The signal whose handler raised `exc`, where it is a stop: Ctrl-C's KeyboardInterrupt, or the
    SystemExit(143) the SIGTERM handlers raise; else None."""
    if isinstance(exc, KeyboardInterrupt):
        return signal.SIGINT
    if isinstance(exc, SystemExit) and exc.code == TERMINATED:
        return signal.SIGTERM
    return None


def raise_swallowed_stops_again() -> None:
    """From here on, a stop a finalizer swallowed is delivered again: its signal is sent to this
    process once more, a moment later, with a handler that raises the same exception (the SIGTERM handlers had set
    it to ignored), so it lands at the next bytecode outside the finalizer (a second finalizer
    swallows it again and it comes back again). Any other unraisable exception is reported as
    before. Idempotent."""
    if getattr(sys.unraisablehook, "raises_stops_again", False):
        return
    previous = sys.unraisablehook

    def hook(unraisable: Any) -> None:
        exc = unraisable.exc_value
        signum = stop_signal(exc)
        if signum is None or threading.current_thread() is not threading.main_thread():
            previous(unraisable)
            return
        if signum == signal.SIGTERM and signal.getsignal(signal.SIGTERM) is signal.SIG_IGN:
            def again(_signum: int, _frame: FrameType | None) -> None:
                signal.signal(signal.SIGTERM, signal.SIG_IGN)
                raise exc.with_traceback(None)

            signal.signal(signal.SIGTERM, again)
        # Sent from another thread a moment later: sent from here, its handler ran inside this hook,
        # whose own exceptions are dropped too.
        later = threading.Timer(REDELIVER_S, os.kill, (os.getpid(), signum))
        later.daemon = True
        later.start()

    hook.raises_stops_again = True  # type: ignore[attr-defined]
    sys.unraisablehook = hook
