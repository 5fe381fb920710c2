"""Debian's command-line tools that tests run on real image files (sfdisk, mkfs.vfat...)."""

from __future__ import annotations

import os
import shutil

import pytest

# Debian keeps the file-system tools in sbin, which a user's PATH may lack.
TOOL_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])


def system_tools(packages: dict[str, str]) -> dict[str, str]:
    """Each tool's path; the test skips, naming the Debian package, if one is missing.

    `packages`: each tool and the Debian package that has it.
    """
    found = {name: shutil.which(name, path=TOOL_PATH) for name in packages}
    for name, path in found.items():
        if path is None:
            pytest.skip(f"{name} is not on this machine (Debian package {packages[name]})")
    return found  # type: ignore[return-value]
