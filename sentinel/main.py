"""The `sentinel` console script: takes Ctrl-C and SIGTERM before it imports the CLI.

The CLI's imports (typer, rich, pydantic) and a command's own (torch, transformers, faust) take
one to several seconds. There a SIGTERM (a pod deleted as it starts) ended the process at once by
the signal (-15, nothing said), and a Ctrl-C printed a KeyboardInterrupt traceback. Both now end
with one line and the exit a shell reports for them, 143 and 130.
"""

from __future__ import annotations

import sys
from typing import NoReturn

from sentinel import stops


def main() -> None:
    stops.take_sigterm()
    try:
        from sentinel.cli import app
    except KeyboardInterrupt:
        not_started("interrupted", stops.INTERRUPTED)
    except stops.Terminated:
        not_started("terminated", stops.TERMINATED)
    app()


def not_started(how: str, code: int) -> NoReturn:
    """A stop before any command ran: nothing to undo, nothing done."""
    stops.said()
    sys.stderr.write(f"{how} before the command started\n")
    sys.stderr.flush()
    raise SystemExit(code)
