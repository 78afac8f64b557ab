"""How the `sentinel` process takes Ctrl-C and SIGTERM where no command took them its own way.

Kept tiny (the standard library alone): the console script (sentinel.main) sets these up before
it imports the CLI, whose imports (0.3-0.7 s) and a command's own (torch, faust: seconds) came
before any handler, and a SIGTERM in that time (a pod deleted as it starts) ended the process at
once, with no word, by the signal (-15).
"""

from __future__ import annotations

import signal
import threading
from types import FrameType

# Standard library only, as this module; TERMINATED: 143, as a shell reports a process SIGTERM ended.
from stream.tools.swallowed_stops import TERMINATED, raise_swallowed_stops_again

INTERRUPTED = 130  # 128 + SIGINT: Ctrl-C's exit, as the commands that say more end

_process = {"holds": False}  # whether this is the `sentinel` process itself (not a test's CliRunner)


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
    """From here on a SIGTERM unwinds (`Terminated`) until a command sets its own handler, and a
    stop line said (`said`) holds off any later Ctrl-C or SIGTERM. For the console script only: a
    test that runs the CLI in its own process keeps its signals as they were."""
    _process["holds"] = True
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:  # not one a parent set to ignored
        signal.signal(signal.SIGTERM, unwind)
    raise_swallowed_stops_again()  # a stop raised in a `__del__` was dropped, and the command ran on


def sigterm_as_the_signal() -> None:
    """Give SIGTERM back to the default (the process ends as the signal does) where `take_sigterm`
    set it: for `sentinel console`, a server whose SIGTERM uvicorn takes and then raises again."""
    if signal.getsignal(signal.SIGTERM) is unwind:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def said() -> None:
    """The command's stop line is about to be written: what is left is the exit and the
    interpreter's teardown (longer with torch loaded). A Ctrl-C or SIGTERM there ended the process
    by that signal (-2, -15) or printed a traceback, and its exit, which a supervisor reads, was no
    longer the command's. Both are ignored from here; SIGKILL (a pod's grace run out) and SIGQUIT
    still end it."""
    if _process["holds"] and threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, signal.SIG_IGN)
