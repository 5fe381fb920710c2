"""Writes that survive a power cut: a Pi is unplugged, not shut down."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
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
        # A directory, say: then the write beside it fails, and says so.
        with contextlib.suppress(OSError):
            stale.unlink(missing_ok=True)


def set_aside(path: Path, why: str, log: logging.Logger) -> Path | None:
    """Move a state file the engine cannot use out of the way, keeping it for a person.

    Renamed beside itself with the time in its name, never deleted: a file of
    the wrong shape may still hold jobs or lines someone wants back. None if
    it cannot be moved (then the engine goes on without it, and says so).
    """
    aside = path.with_name(f"{path.name}.set-aside-{time.strftime('%Y%m%d-%H%M%S')}")
    try:
        os.replace(path, aside)
    except OSError as e:
        log.warning("cannot use %s (%s) and cannot move it aside: %s", path, why, e)
        return None
    log.warning("set aside %s as %s: %s", path, aside.name, why)
    return aside


class BackgroundWriter:
    """Durable writes of one file in a thread of its own, so the event loop never waits on
    the card; callers await the write that holds their change.

    Writes are batched: every save() that arrives while a write is under way is served by
    the next one, which takes a fresh snapshot. So a burst of 50 changes costs two writes,
    not 50, and the file on disk is always a whole snapshot, in order.
    """

    def __init__(self, write: Callable[[bytes], None], snapshot: Callable[[], bytes]):
        self._write = write
        self._snapshot = snapshot  # called on the event loop: the state is not shared
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="durable")
        self._next: asyncio.Future[None] | None = None  # the write not yet started
        self._running: asyncio.Task[None] | None = None

    async def save(self) -> None:
        """Until a snapshot taken after this call is on disk; the OSError if it failed."""
        loop = asyncio.get_running_loop()
        if self._next is None:
            self._next = loop.create_future()
        waiting = self._next
        if self._running is None or self._running.done():
            self._running = loop.create_task(self._drain())
        # shield: a client that hangs up does not cancel a write others wait for.
        await asyncio.shield(waiting)

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        while self._next is not None:
            batch, self._next = self._next, None
            try:
                data = self._snapshot()
                await loop.run_in_executor(self._thread, self._write, data)
            except Exception as e:
                if not batch.done():
                    batch.set_exception(e)
                    batch.exception()  # retrieved: no "never retrieved" warning if none waits
            else:
                if not batch.done():
                    batch.set_result(None)

    async def close(self) -> None:
        """Once the writes asked for are done (or failed), the thread ends."""
        while self._running is not None and not self._running.done():
            with contextlib.suppress(Exception):
                await asyncio.shield(self._running)
        self._thread.shutdown(wait=True)


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
