"""Where the appliance keeps things: its state (history, jobs, tokens) and its socket.

The engine, the chat bridge, the button and `twitch-login` all find the
same places through here, whether systemd gave them directories or not.
"""

from __future__ import annotations

import os
from pathlib import Path

from appliance.config import Config

SYSTEM_STATE_DIR = Path("/var/lib/teletype-gpt2")  # the units' StateDirectory=
SYSTEM_RUNTIME_DIR = Path("/run/teletype-gpt2")  # the engine unit's RuntimeDirectory=
SOCKET_NAME = "engine.sock"
# How the root file system runs this boot, one line written by the initramfs
# (pi-gen-config/stage-teletype/04-read-only): "read-only", or "writable (why)".
ROOT_MODE_PATH = Path("/run/teletype-root")


def state_dir(config: Config) -> Path:
    """History and tokens: the config, else systemd's, else the appliance's, else ~/.local.

    `sudo -u teletype teletype twitch-login` on the Pi has no
    StateDirectory= of its own; it finds the units' through /var/lib when
    it may write there.
    """
    chosen = config.engine.state_dir or os.environ.get("STATE_DIRECTORY", "").split(":")[0]
    if chosen:
        return Path(chosen)
    if SYSTEM_STATE_DIR.is_dir() and os.access(SYSTEM_STATE_DIR, os.W_OK):
        return SYSTEM_STATE_DIR
    return Path.home() / ".local" / "state" / "teletype-gpt2"


def runtime_dir(config: Config) -> Path:
    """Where the engine's socket is: the config, else systemd's, else a per-user /tmp folder.

    The clients (chat, button) run without a RuntimeDirectory= of their own,
    so they find the engine's through /run/teletype-gpt2 when it exists.
    """
    chosen = config.engine.runtime_dir or os.environ.get("RUNTIME_DIRECTORY", "").split(":")[0]
    if chosen:
        return Path(chosen)
    if SYSTEM_RUNTIME_DIR.is_dir():
        return SYSTEM_RUNTIME_DIR
    return Path(f"/tmp/teletype-gpt2-{os.getuid()}")


def socket_path(config: Config) -> Path:
    return runtime_dir(config) / SOCKET_NAME
