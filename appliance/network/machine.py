"""The system the [network] settings go to: the running one, or a root mounted elsewhere."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Machine:
    """Where the settings go: a root directory, and whether it is the running system.

    On the running system (root "/") the oneshot also tells the kernel its
    new name and asks systemd to start sshd now; for a root mounted
    elsewhere only its files change (systemctl --root).
    """

    root: Path = Path("/")
    live: bool = True
    run: Callable[[list[str]], Any] = field(default=lambda argv: subprocess.run(argv, check=True))

    def path(self, relative: str | Path) -> Path:
        return self.root / Path(relative)
