"""systemd's notify protocol, through systemd-python: READY, STATUS, WATCHDOG, STOPPING.

Without NOTIFY_SOCKET (not under systemd) every call does nothing, and
without systemd-python (a laptop) neither does anything: the engine runs
the same either way.
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger("teletype.notify")

try:
    from systemd import daemon as _daemon
except ImportError:  # a laptop without libsystemd
    _daemon = None


def notify(message: str) -> bool:
    if _daemon is None or not os.environ.get("NOTIFY_SOCKET"):
        return False
    return bool(_daemon.notify(message))


def ready(status: str) -> None:
    notify(f"READY=1\nSTATUS={status}")


def status(text: str) -> None:
    notify(f"STATUS={text}")


def stopping() -> None:
    notify("STOPPING=1")


def watchdog_interval() -> float | None:
    """Half the watchdog period systemd asked for (WatchdogSec=), in seconds; None if none."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return int(usec) / 1e6 / 2
    except ValueError:
        log.warning("ignoring WATCHDOG_USEC=%r", usec)
        return None


def watchdog() -> None:
    notify("WATCHDOG=1")
