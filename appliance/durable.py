"""Writes that survive a power cut: a Pi is unplugged, not shut down."""

from __future__ import annotations

import contextlib
import os
import secrets
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


def write_atomic_in(
    dir_fd: int, name: str, data: bytes, mode: int, owner: tuple[int, int] | None = None
) -> None:
    """write_atomic inside an open directory whose contents someone else controls.

    For root writing into a user's folder (~/.ssh): nothing here follows a
    link the user may have placed. The temporary file has an unguessable
    name and is created with O_EXCL and O_NOFOLLOW beside `name`, relative
    to the open directory; its mode and owner are set on the open file
    (fchmod, fchown); and the rename replaces whatever `name` is, a link
    included, instead of writing through it.
    """
    tmp = f".{name}.{secrets.token_hex(8)}"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(tmp, flags, 0o600, dir_fd=dir_fd)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            if owner is not None:
                os.fchown(f.fileno(), *owner)
            os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
        os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp, dir_fd=dir_fd)
        raise
    os.fsync(dir_fd)
