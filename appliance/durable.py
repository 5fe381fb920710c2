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
