"""Files the commands write: whole or not at all."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import IO, Iterator


@contextlib.contextmanager
def replaced_when_done(path: Path, *, source: Path | None = None) -> Iterator[IO[str]]:
    """A text handle whose content replaces `path` only when the block ends without an error: a
    command that fails half-way (bad input, a broker away) leaves the file as it was, and never
    empties `source`, the file it reads. Raises ValueError for an output that cannot be."""
    if source is not None and path.resolve() == source.resolve():
        raise ValueError(f"--out {path} is the input file")
    if path.is_dir():
        raise ValueError(f"--out {path} is a directory")
    if not path.parent.is_dir():
        raise ValueError(f"--out {path}: {path.parent} is not a directory")
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            yield handle
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
