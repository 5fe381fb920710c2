"""The system the [network] settings go to: the running one, or a root mounted elsewhere."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from appliance.paths import ROOT_MODE_PATH


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

    def root_read_only(self) -> bool:
        """The root runs read-only this boot, under a RAM overlay: what is written to / (a
        NetworkManager connection, the host name) is gone at the next boot."""
        try:
            mode = self.path(ROOT_MODE_PATH.relative_to("/")).read_text(errors="replace")
        except OSError:
            return False
        return mode.strip() == "read-only"
