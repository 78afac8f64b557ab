"""Whether a model name can only be a directory, and what is wrong with it if so. No torch: the
CLI checks SENTINEL_BASE and SENTINEL_ADAPTER with the other settings, before anything loads."""

from __future__ import annotations

import os


def looks_like_path(name: str) -> bool:
    """Whether `name` can only be a filesystem path, never a hub id (`owner/name`: one slash at most,
    starting with a letter, digit or _): absolute, starting with ./ ../ or ~, with two slashes or
    more, or holding the OS separator where it is not /."""
    return (os.path.isabs(name) or name in (".", "..") or name.startswith(("./", "../", "~")) or name.count("/") > 1
            or (os.sep != "/" and os.sep in name))


def missing_dir(name: str) -> str | None:
    """Why `name`, where it can only be a path, is no directory to load from ('no such directory',
    'not a directory'); None where it is one, or could be a hub id (or a name such as 'default')."""
    if not looks_like_path(name) or os.path.isdir(os.path.expanduser(name)):
        return None
    return "not a directory" if os.path.exists(os.path.expanduser(name)) else "no such directory"
