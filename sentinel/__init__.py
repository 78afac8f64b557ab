"""Forum Sentinel: the shell around the pure modules (settings, CLI, logging, embedded services)."""

__version__ = "0.1.0"
