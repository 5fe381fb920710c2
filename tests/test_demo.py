"""`teletype demo` driven as a user would: in a terminal (a pty), typing lines."""

from __future__ import annotations

import os
import re
import select
import subprocess
import sys
import time


def _read_until(fd: int, pattern: str, timeout: float = 120.0) -> str:
    out = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
            if re.search(pattern, out.decode(errors="replace")):
                return out.decode(errors="replace")
    raise AssertionError(f"no {pattern!r} in {out.decode(errors='replace')!r}")


def test_demo_in_a_terminal_prints_upper_case_wrapped_at_72(tmp_path):
    master, slave = os.openpty()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "appliance.cli", "demo", "--speed", "1000", "--seed", "3"],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        cwd=tmp_path,
        env=env,
        close_fds=True,
    )
    os.close(slave)
    try:
        _read_until(master, r"> $")
        os.write(master, b"How does the typing unit print a character?\n")
        _read_until(master, r"> $")
        os.write(master, b"tell me about the keyboard\n")
        _read_until(master, r"> $")
        os.write(master, b"!gpt2\n")
        screen = _read_until(master, r"!gpt2\r?\n(.|\n)+\n> $")
        os.write(master, b"!quit\n")
        process.wait(timeout=30)
    finally:
        process.kill()
        os.close(master)
    reply = screen.split("!gpt2", 1)[1].strip().rsplit(">", 1)[0]
    lines = [line.rstrip("\r") for line in reply.splitlines() if line.strip()]
    assert len(lines) >= 2, reply
    for line in lines:
        assert len(line) <= 72, line
        assert line == line.upper(), line
        assert all(" " <= ch <= "_" for ch in line), line
    assert process.returncode == 0


def test_demo_help_and_history_commands():
    from io import StringIO

    from appliance.config import Config
    from appliance.demo import Demo

    out = StringIO()
    demo = Demo(Config().replace("teletype", port="virtual"), out=out, generator=None)
    assert demo.handle("first line")
    assert demo.handle("!history")
    assert "you: first line" in out.getvalue()
    assert demo.handle("!clear")
    assert len(demo.history) == 0
    assert demo.handle("!nonsense")
    assert "unknown command !nonsense" in out.getvalue()
    assert not demo.handle("!quit")


def test_demo_keeps_blocked_words_off_its_paper(tmp_path):
    """The demo's virtual paper gets the same blocklist as the engine's real one."""
    from io import StringIO

    from appliance.config import Config
    from appliance.demo import Demo
    from appliance.generator import load_generator

    blocklist = tmp_path / "blocklist.txt"
    blocklist.write_text("".join(f"{c}*\n" for c in "abcdefghijklmnopqrstuvwxyz"))
    config = Config().replace("teletype", port=f"file:{tmp_path / 'paper.txt'}")
    config = config.replace("moderation", blocklist=str(blocklist), tries=1)
    out = StringIO()
    demo = Demo(config, out=out, generator=load_generator(config.model))
    try:
        demo.reply()
    finally:
        demo.generator.close()
    assert "every try ran into the blocklist" in out.getvalue()
    paper = tmp_path / "paper.txt"  # not even created when nothing was printed
    assert not paper.exists() or not re.search(r"[A-Za-z]", paper.read_text())
