"""`teletype` as a maker first runs it: the commands, their help, and a wrong port."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


def _teletype(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """Run the command; a hang fails the test (the generous timeout is the failure mode)."""
    try:
        return subprocess.run(
            [sys.executable, "-m", "appliance.cli", *args],
            cwd=cwd,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
        )
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f"teletype {' '.join(args)} hung: {e.stderr!r}") from None


def _wrong_ports(tmp_path: Path) -> dict[str, str]:
    regular = tmp_path / "not-a-tty.txt"
    regular.write_text("")
    return {
        "missing": str(tmp_path / "ttyUSB9"),
        "regular-file": str(regular),
        "dev-null": "/dev/null",
        "directory": str(tmp_path),
    }


@pytest.mark.parametrize("kind", ["missing", "regular-file", "dev-null", "directory"])
@pytest.mark.parametrize("command", [["print", "HELLO"], ["generate", "HELLO", "--seed", "1"]])
def test_cli_wrong_port_is_one_line_and_an_error_not_a_hang(tmp_path, command, kind):
    port = _wrong_ports(tmp_path)[kind]
    done = _teletype([*command, "--port", port], tmp_path)
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert port in lines[0] and lines[0].startswith(f"teletype {command[0]}: ")
    assert done.stdout == ""


def test_cli_print_on_a_serial_port_still_prints(tmp_path, teletype):
    done = _teletype(["print", "HI", "--port", str(teletype.link)], tmp_path)
    assert done.returncode == 0, done.stderr
    assert b"HI" in bytes(b & 0x7F for b in teletype.collect())
