"""Forum Sentinel: the shell around the pure modules (settings, CLI, logging, embedded services)."""

__version__ = "0.1.0"

# How many bad lines a command names, one a line, before it counts the rest: the dead letters of
# `sentinel run` (sentinel.run) and the rows `--skip-bad` skipped (sentinel.cli). A million bad rows
# are not a million lines. Here, not in either: the CLI needs it at import for its help, and
# sentinel.run imports Redis and numpy, which most commands never load.
BAD_LINES_SHOWN = 20
