"""`make demo` driven as a user would: in a terminal (a pty), typing lines, pressing Ctrl-C.

The demo is the appliance: the engine's API answers while it runs, the
terminal's chat lines go through the engine's blocklist, Ctrl-C stops the
print and not make, and a second Ctrl-C when idle leaves cleanly.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import select
import shutil
import socket
import subprocess
import sys
import termios
import time
import urllib.request
from io import StringIO

import pytest

from appliance.demo import Paper

LONG_TEXT = " ".join(f"LINE {n} OF A LONG TEXT THAT THE TELETYPE PRINTS." for n in range(40))


class Terminal:
    """The user's side of a pty: what the screen shows, and the keys."""

    def __init__(self, master: int):
        self.master = master
        self.screen = ""

    def wait_for(self, pattern: str, after: int = 0, timeout: float = 60.0) -> re.Match:
        deadline = time.monotonic() + timeout
        while True:
            found = re.compile(pattern).search(self.screen, after)
            if found:
                return found
            if time.monotonic() > deadline:
                raise AssertionError(f"no {pattern!r} on the screen:\n{self.screen[after:]}")
            ready, _, _ = select.select([self.master], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(self.master, 4096)
                except OSError:  # the other side has closed
                    chunk = b""
                if not chunk:
                    raise AssertionError(f"the demo ended; the screen:\n{self.screen[after:]}")
                self.screen += chunk.decode(errors="replace")

    def type(self, keys: str) -> int:
        """Send keys; where the screen stood before them (to look only at what follows)."""
        mark = len(self.screen)
        os.write(self.master, keys.encode())
        return mark


def _call(base: str, method: str, path: str, body: dict | None = None):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(base + path, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status, json.loads(response.read() or b"null")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _take_terminal() -> None:
    # In the child: a session of its own with the pty as its terminal, as a
    # shell gives `make`, so Ctrl-C is a SIGINT to the foreground group.
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_demo_under_make_is_the_appliance_and_ctrl_c_stops_the_print_not_make(tmp_path):
    port = _free_port()
    config = tmp_path / "teletype.toml"
    config.write_text(f"[engine]\ntcp_port = {port}\n")
    makefile = tmp_path / "Makefile"
    makefile.write_text(
        f"demo:\n\t{sys.executable} -m appliance.cli demo --config {config} --speed 20 --seed 3\n"
    )
    master, slave = os.openpty()
    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path / "state"), "PYTHONUNBUFFERED": "1"}
    make = subprocess.Popen(
        ["make", "-s", "-f", str(makefile), "demo"],
        stdin=slave, stdout=slave, stderr=slave, cwd=tmp_path, env=env,
        start_new_session=True, preexec_fn=_take_terminal,
    )  # fmt: skip
    os.close(slave)
    terminal = Terminal(master)
    base = f"http://127.0.0.1:{port}"
    try:
        terminal.wait_for(re.escape(f"{base}/"))
        terminal.wait_for(r"> $")
        # The engine's API and panel answer while the demo runs.
        status, body = _call(base, "GET", "/v1/status")
        assert status == 200 and body["port"]["name"] == "virtual"
        assert b"<html" in urllib.request.urlopen(base + "/", timeout=10).read().lower()

        # A typed line is a chat line, through the engine's blocklist.
        mark = terminal.type("How does the typing unit print a character?\n")
        terminal.wait_for(r"> $", mark)
        mark = terminal.type("what the fuck is a typebox\n")
        terminal.wait_for(r"not added.*blocklist(.|\n)*> $", mark)
        _, history = _call(base, "GET", "/v1/history")
        texts = [line["text"] for line in history["lines"]]
        assert texts == ["How does the typing unit print a character?"]

        # An empty line asks for a reply, as the button does: printed on the paper.
        mark = terminal.type("\n")
        terminal.wait_for(r"\n  \| \S(.|\n)*\n> $", mark)
        paper = [line for line in terminal.screen[mark:].splitlines() if line.startswith("  | ")]
        assert paper
        for line in paper:
            assert len(line.rstrip("\r")) == 2 + 2 + 72 + 2, line  # "  | " text " |"
            text = line[4:76]
            assert text == text.upper() and all(" " <= ch <= "_" for ch in text), line

        # Ctrl-C mid-print cancels the print; the line ends, then the prompt is back.
        _, job = _call(base, "POST", "/v1/print", {"text": LONG_TEXT})
        mark = len(terminal.screen)
        terminal.wait_for(r"LINE 0 OF", mark)
        # A line typed while the paper moves waits (unechoed) until the print has ended.
        terminal.type("what does the selector do\n")
        terminal.wait_for(r"LINE 3 OF", mark)
        terminal.type("\x03")
        terminal.wait_for(r"cancelled(.|\n)*> what does the selector do(.|\n)*> $", mark)
        assert "LINE 39" not in terminal.screen[mark:]
        printed = terminal.screen[mark:].split("(print cancelled)")[0].splitlines()
        assert printed and all(len(line) == 78 for line in printed if line.strip()), printed
        _, job = _call(base, "GET", f"/v1/jobs/{job['id']}")
        assert job["status"] == "cancelled"
        _, history = _call(base, "GET", "/v1/history")
        assert history["lines"][-1]["text"] == "what does the selector do"

        # Ctrl-C when idle leaves, and make exits 0 (not 130: the Ctrl-C was the demo's).
        terminal.type("\x03")
        assert make.wait(timeout=30) == 0, terminal.screen[-2000:]
        # Its state is the user's (here $XDG_STATE_HOME), never the Pi's /var/lib.
        assert (tmp_path / "state/teletype-gpt2-demo/history.json").is_file()
    finally:
        if make.poll() is None:
            os.killpg(make.pid, 9)
            make.wait()
        os.close(master)


def test_demo_paper_draws_72_columns_between_its_edges():
    screen = StringIO()
    paper = Paper(screen)
    paper.write("HELLO")
    paper.write(" WORLD\n" + "X" * 72 + "\n")
    paper.write("\a\n")
    lines = screen.getvalue().replace("\a", "").splitlines()
    assert lines == [
        "  | HELLO WORLD" + " " * 61 + " |",
        "  | " + "X" * 72 + " |",
        "  | " + " " * 72 + " |",
    ]
    assert "\a" in screen.getvalue()  # the bell rings the terminal's


def test_demo_banner_fits_an_80_column_terminal():
    # The keys' lines wrapped at 80 columns: "(so does !gpt2 [words])" ran to 81.
    from appliance.config import Config
    from appliance.demo import Front

    config = Config().replace("engine", tcp_host="127.0.0.1", tcp_port=5599)
    banner = Front(config, StringIO(), 0)._banner()
    assert "!gpt2" in banner
    assert [line for line in banner.splitlines() if len(line) > 80] == []


def test_demo_print_begins_on_a_line_of_its_own_before_the_started_event_arrives():
    # The print's thread can draw its first character before the loop has seen
    # "started": CI's screen read "> " then "  | L", a line break, "INE 0 OF".
    from appliance.config import Config
    from appliance.demo import Front

    out = StringIO()
    front = Front(Config(), out, 0)
    front._prompt(None)
    front.screen.write("LINE 0")
    front._say("  (not added: the blocklist)\n")  # said while the paper moves: held
    assert out.getvalue() == "> \n  | LINE 0"
    assert front.held == ["  (not added: the blocklist)\n"]
