"""Writes that survive a power cut: a Pi is unplugged, not shut down."""

from __future__ import annotations

import os
from pathlib import Path


def fsync_dir(directory: Path) -> None:
    """Make a file's creation, rename or removal in `directory` reach the card.

    fsync on a file keeps its data; the name pointing at it lives in the
    directory, and without this a power cut can lose it.
    """
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(
    path: Path, data: bytes, mode: int | None = 0o640, owner: tuple[int, int] | None = None
) -> None:
    """Replace the file with `data`: after a power cut it holds the old bytes or the new.

    Written beside under a name starting with ".<name>." and renamed, with
    exactly `mode` (and `owner`, uid and gid, if given) before the rename;
    `remove_leftovers` clears what a write cut short left behind. Mode None
    for a FAT file system (the boot partition), which refuses chmod.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if mode is None else mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if mode is not None:
            os.chmod(tmp, mode)  # in case a leftover was there with looser bits, or the umask
        if owner is not None:
            os.chown(tmp, *owner)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def remove_leftovers(path: Path) -> None:
    """Temporary files of `write_atomic` that a kill -9 or power cut left beside `path`."""
    # By stem: ".history.*" also catches the names the mkstemp of earlier versions used.
    for stale in path.parent.glob(f".{path.stem}.*"):
        stale.unlink(missing_ok=True)
