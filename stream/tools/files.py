"""Files the commands write: whole or not at all."""

from __future__ import annotations

import contextlib
import os
import stat
import sys
import uuid
from pathlib import Path
from typing import IO, Iterator


def output_problem(path: Path) -> str | None:
    """Why `path` cannot be written as an output file, checked before the work that fills it."""
    try:  # is_dir() and exists() raise, not answer False, for a folder without search permission
        if path.is_dir():
            return "it is a directory"
        if not path.parent.exists():
            return f"{path.parent} does not exist"
        if not path.parent.is_dir():
            return f"{path.parent} is not a directory"
    except OSError as exc:
        return exc.strerror or type(exc).__name__
    return None


OWN_STREAMS = {"stdout": 1, "stderr": 2}


def own_stream(path: Path) -> str | None:
    """"stdout" or "stderr" where `path` is the very file this process writes that to (`/dev/stdout`
    with stdout redirected to a file, or that file by name), else None."""
    try:
        target = os.stat(path)
    except OSError:  # not there yet (the usual --out), or not ours to stat: the other checks say why
        return None
    for name, fd in OWN_STREAMS.items():
        try:
            held = os.fstat(fd)
        except OSError:  # closed
            continue
        if (held.st_dev, held.st_ino) == (target.st_dev, target.st_ino):
            return name
    return None


@contextlib.contextmanager
def replaced_when_done(path: Path, *, source: Path | None = None) -> Iterator[IO[str]]:
    """A text handle whose content replaces `path` only when the block ends without an error: a
    command that fails half-way (bad input, a broker away) leaves the file as it was, and never
    empties `source`, the file it reads. A target that is not a regular file (/dev/stdout, a pipe)
    is written directly, as before, and so is the file this process's stdout or stderr goes to. Raises ValueError for an output that cannot be written."""
    target = Path(os.path.realpath(path))  # a symlink's file is replaced, not the link
    if source is not None and target == Path(os.path.realpath(source)):
        raise ValueError(f"--out {path} is the input file")
    if problem := output_problem(target):
        raise ValueError(f"cannot write {path}: {problem}")
    # Asked of `path`, not `target`: /dev/stdout on a pipe (or a socket), and /dev/fd/63 from a
    # shell's `>(jq ...)`, resolve to a name that is no file (/proc/PID/fd/pipe:[N]); the kernel
    # follows the name as given to the pipe itself. Asked of `target`, such an output was taken for
    # a file not there yet, and its temp file could not be made in /proc/PID/fd: `--alerts-out
    # /dev/stdout | jq` and `eval --predictions /dev/stdout | jq` were "cannot write", exit 2.
    if stream := own_stream(path):
        # `--alerts-out /dev/stdout > alerts.jsonl`: a regular file, but the shell's. Replaced by a
        # rename, what the command printed after it went to the unlinked old file; opened anew with
        # "w", it was cut back to its start under the shell's own writes. Written at the stream's
        # own position instead, as a pipe is.
        for held in (sys.stdout, sys.stderr):  # what was printed before comes first
            if held is not None:  # None where the stream was closed when Python started (`>&-`)
                held.flush()
        with os.fdopen(os.dup(OWN_STREAMS[stream]), "w", encoding="utf-8") as shared:
            yield shared
        return
    if path.exists() and not path.is_file():
        with _writable(path):
            direct = path.open("w", encoding="utf-8")
        with direct:
            yield direct
        return
    temp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.part")
    # The mode a plain open would give: 0666 less the umask, or the existing file's.
    mode = stat.S_IMODE(target.stat().st_mode) if target.exists() else 0o666
    with _writable(path):
        fd = os.open(temp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, mode)
        if target.exists():
            os.chmod(temp, mode)  # the umask must not narrow an existing file's mode
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            yield handle
        with _writable(path):
            os.replace(temp, target)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def _writable(path: Path) -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        raise ValueError(f"cannot write {path}: {exc.strerror or exc}") from None
