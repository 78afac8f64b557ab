"""How the `sentinel` process takes Ctrl-C and SIGTERM where no command took them its own way.

Kept tiny (the standard library's `signal` alone): the console script (sentinel.main) sets these
up before it imports the CLI, whose imports take a second or more, and a SIGTERM in that time
(a pod deleted as it starts) ended the process at once, with no word, by the signal (-15).
"""

from __future__ import annotations

import signal
from types import FrameType

TERMINATED = 128 + signal.SIGTERM  # 143, as a shell reports a process SIGTERM ended
INTERRUPTED = 130  # 128 + SIGINT: Ctrl-C's exit, as the commands that say more end

class Terminated(SystemExit):
    """A SIGTERM taken by `unwind`: unwinds through `finally` blocks as Ctrl-C's KeyboardInterrupt
    does, and reads as the SystemExit(143) `stream.tools.services.sigterm_unwinds` raises, so the
    commands' own stop lines take it alike."""

    def __init__(self) -> None:
        super().__init__(TERMINATED)


def unwind(_signum: int, _frame: FrameType | None) -> None:
    # Later ones are ignored, as under sigterm_unwinds: the clean-up is not cut short.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise Terminated()


def take_sigterm() -> None:
    """From here on a SIGTERM unwinds (`Terminated`) until a command sets its own handler. For the
    console script only: a test that runs the CLI in its own process keeps its signals as they were."""
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:  # not one a parent set to ignored
        signal.signal(signal.SIGTERM, unwind)


def sigterm_as_the_signal() -> None:
    """Give SIGTERM back to the default (the process ends as the signal does) where `take_sigterm`
    set it: for `sentinel console`, a server whose SIGTERM uvicorn takes and then raises again."""
    if signal.getsignal(signal.SIGTERM) is unwind:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)

