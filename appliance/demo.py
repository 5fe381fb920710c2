"""`teletype demo`: the appliance itself, with this terminal as its Teletype, keyboard and chat.

The engine is the one `teletype serve` runs (its API and panel included);
only its port differs: a virtual Teletype that draws the paper here, a
character at a time as the bytes leave the port. A typed line goes into the
chat history through the engine's own route (the blocklist applies); an
empty line or `!gpt2` asks for a reply, as the front-panel button does.

Ctrl-C stops the print (its line is finished) and is the demo's alone: the
demo takes the terminal's foreground for itself, so a `make` that started it
never sees the key and never exits 130. Ctrl-C when idle, or Ctrl-D, leaves.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import tempfile
import termios
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from appliance.config import Config
from appliance.errors import ApplianceError
from appliance.teletype.profiles import get_profile

log = logging.getLogger("teletype.demo")

DEMO_NAME = "you"
COLUMNS = 72
MARGIN = "  "
KEYS = """\
Keys: Enter         your line goes into the chat history (the blocklist applies)
      Enter alone   the Teletype answers the last {n} lines (or !gpt2 [words])
      Ctrl-C        stop the print (its line is finished); when idle, leave
      !history  !clear  !help  and Ctrl-D to leave
"""


class Paper:
    """The paper on the platen, in plain terminal characters: 72 columns between two edges.

    Given the text as it leaves the port (the virtual Teletype has taken out
    the CRs and fills): each character is drawn as it comes, and a line feed
    pads the line out to the paper's right edge.
    """

    def __init__(self, out: TextIO, columns: int = COLUMNS):
        self.out = out
        self.columns = columns
        self.column: int | None = None  # None: no line begun on the screen

    def write(self, text: str) -> None:
        drawn = []
        for ch in text:
            if self.column is None:
                drawn.append(f"{MARGIN}| ")
                self.column = 0
            if ch == "\n":
                drawn.append(" " * max(0, self.columns - self.column) + " |\n")
                self.column = None
            elif ch == "\a":
                drawn.append("\a")  # the terminal's bell for the Teletype's
            elif self.column < self.columns:  # the 73rd would overprint the 72nd
                drawn.append(ch)
                self.column += 1
        self.out.write("".join(drawn))
        self.out.flush()

    def flush(self) -> None:
        self.out.flush()

    def platen(self, title: str) -> str:
        """The top of the machine, drawn once above the paper."""
        width = self.columns + 2
        return f"{MARGIN} {'_' * width}\n{MARGIN}|{title.center(width)}|\n{MARGIN}|{'=' * width}|\n"


def demo_state_dir() -> Path:
    """The demo's own history and jobs: the user's state directory, never the Pi's /var/lib."""
    base = os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state"
    return Path(base) / "teletype-gpt2-demo"


class Front:
    """The terminal's side of the engine: draws, reads lines, and owns Ctrl-C."""

    def __init__(self, config: Config, out: TextIO, keys_in: int):
        self.config = config
        self.out = out
        self.keys_in = keys_in  # the file descriptor typed lines come from
        self.paper = Paper(out)
        self.screen = _PaperFeed(self)  # what the virtual Teletype writes to
        # The print's thread draws the paper while the loop draws the prompt and
        # what the demo says: one at a time, so neither lands inside the other.
        self.drawing = threading.RLock()
        self.prompt_open = False  # "> " is on the screen and nothing typed after it
        self.leaving = False  # Ctrl-D: leave once the paper is quiet
        # While the paper moves, what the user types is not echoed and what the demo
        # says is held: the paper's lines stay whole, and both come after the print.
        self.printing = False
        self.held: list[str] = []
        self.terminal = False  # keys_in is the terminal we draw on, in its foreground

    async def run(self, engine, stop: asyncio.Event) -> None:
        """Beside the engine's API, until `stop` is set."""
        loop = asyncio.get_running_loop()
        fd = self.keys_in
        self.terminal = os.isatty(fd) and os.tcgetpgrp(fd) == os.getpgrp()
        loop.add_signal_handler(signal.SIGINT, self._interrupt, engine, stop)
        events: asyncio.Queue = asyncio.Queue()
        engine.subscribers.add(events)
        lines: asyncio.Queue = asyncio.Queue()
        threading.Thread(target=self._read_keys, args=(loop, lines), daemon=True).start()
        self._say(self._banner())
        self._prompt(engine)
        try:
            await asyncio.gather(
                self._follow(engine, events, stop), self._serve_keys(engine, lines, stop)
            )
        except Exception:
            log.exception("the demo's terminal failed")
            raise
        finally:
            engine.subscribers.discard(events)
            stop.set()  # the terminal gone, the demo ends: never an engine nobody can stop

    def _banner(self) -> str:
        t = self.config.teletype
        profile = get_profile(t.profile)
        cps = profile.characters_per_second(t.parity or None) * t.speed
        e = self.config.engine
        return (
            self.paper.platen(f"{profile.description.split(':')[0]} (virtual)")
            + f"{cps:.0f} characters a second (speed x{t.speed:g}); "
            f"the panel and API: http://{e.tcp_host}:{e.tcp_port}/\n"
            + KEYS.format(n=self.config.history.lines)
        )

    # --- the keyboard ----------------------------------------------------------

    def _read_keys(self, loop: asyncio.AbstractEventLoop, lines: asyncio.Queue) -> None:
        """A thread: typed lines, then None at the end of input (Ctrl-D).

        os.read, not sys.stdin: a thread left blocked in a buffered reader
        can stop the interpreter from exiting cleanly.
        """
        pending = b""
        while True:
            try:
                chunk = os.read(self.keys_in, 4096)
            except OSError:
                chunk = b""
            if not chunk:
                loop.call_soon_threadsafe(lines.put_nowait, None)
                return
            pending += chunk
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                text = line.decode(errors="replace").rstrip("\r")
                loop.call_soon_threadsafe(lines.put_nowait, text)

    async def _serve_keys(self, engine, lines: asyncio.Queue, stop: asyncio.Event) -> None:
        while not stop.is_set():
            line = await lines.get()
            self.prompt_open = False  # the user's Enter moved the cursor on
            if self.printing and line is not None:
                self._say(f"> {line}\n")  # typed unseen while the paper moved
            if line is None:
                self._say("\n")
                self.leaving = True
                self._leave_when_quiet(engine, stop)
                return
            await self._handle(engine, line.strip(), stop)
            if not self._busy(engine):
                self._prompt(engine)

    async def _handle(self, engine, command: str, stop: asyncio.Event) -> None:
        lowered = command.lower()
        if command == "" or lowered == "!gpt2" or lowered.startswith("!gpt2 "):
            job = engine.new_job(command[5:].strip() or None, use_history=True, source="button")
            try:
                await engine.submit(job)
            except ApplianceError as e:
                self._say(f"  (not asked: {e})\n")
        elif lowered in ("!quit", "!exit"):
            stop.set()
        elif lowered == "!help":
            self._say(KEYS.format(n=self.config.history.lines))
        elif lowered == "!history":
            for entry in engine.history.lines():
                self._say(f"  {entry.name}: {entry.text}\n")
            if not len(engine.history):
                self._say("  (the chat history is empty)\n")
        elif lowered == "!clear":
            await engine.clear_history()
            self._say("  (the chat history is empty now)\n")
        elif command.startswith("!"):
            self._say(f"  (no command {command.split()[0]}; !help says the keys)\n")
        else:
            try:
                await engine.add_chat_line(DEMO_NAME, command)
            except ApplianceError as e:
                self._say(f"  (not added: {e})\n")

    # --- the engine's events ---------------------------------------------------

    async def _follow(self, engine, events: asyncio.Queue, stop: asyncio.Event) -> None:
        """A print begins on a line of its own; when the paper is quiet, the prompt is back."""
        while not stop.is_set():
            event = await events.get()
            kind, job = event["event"], event["data"]
            if kind == "started" and job["print"]:
                self.paper_moves()
            elif kind == "finished":
                with self.drawing:
                    was_printing, self.printing = self.printing, False
                if was_printing:
                    self._echo(True)
                if job["status"] in ("cancelled", "interrupted"):
                    self._say(f"  (print {job['status']})\n")
                elif job["status"] not in ("done",):
                    self._say(f"  (nothing printed: {job['error'] or job['status']})\n")
                with self.drawing:
                    held, self.held = "".join(self.held), []
                    self._say(held)
                if self.leaving:
                    self._leave_when_quiet(engine, stop)
                elif not self._busy(engine):
                    self._prompt(engine)

    def paper_moves(self) -> None:
        """A print begins: on a line of its own, with typing unechoed and the demo's words held.

        Called by whichever comes first: the paper's first characters (the
        print's thread) or the engine's "started" event (the loop).
        """
        with self.drawing:
            if self.printing:
                return
            if self.prompt_open:
                self.out.write("\n")
                self.prompt_open = False
            self.printing = True
        self._echo(False)

    def _interrupt(self, engine, stop: asyncio.Event) -> None:
        """Ctrl-C: stop the print if one runs, else leave."""
        if engine.cancel_current():  # the line is finished; "finished" brings the prompt back
            return
        self._say("\n")
        stop.set()

    # --- the screen -----------------------------------------------------------

    @staticmethod
    def _busy(engine) -> bool:
        return engine.current is not None or bool(engine.waiting)

    def _leave_when_quiet(self, engine, stop: asyncio.Event) -> None:
        if not self._busy(engine):
            stop.set()

    def _prompt(self, engine) -> None:
        with self.drawing:
            if not self.prompt_open and not self.printing:
                self._say("> ")
                self.prompt_open = True

    def _echo(self, on: bool) -> None:
        if not self.terminal:
            return
        attrs = termios.tcgetattr(self.keys_in)
        attrs[3] = attrs[3] | termios.ECHO if on else attrs[3] & ~termios.ECHO
        termios.tcsetattr(self.keys_in, termios.TCSANOW, attrs)

    def _say(self, text: str) -> None:
        with self.drawing:
            if self.printing:
                self.held.append(text)
                return
            self.out.write(text)
            self.out.flush()


class _PaperFeed:
    """The virtual Teletype's output: the paper, begun on a line of its own."""

    def __init__(self, front: Front):
        self.front = front

    def write(self, text: str) -> None:
        self.front.paper_moves()
        with self.front.drawing:
            self.front.paper.write(text)

    def flush(self) -> None:
        self.front.paper.flush()


@contextlib.contextmanager
def own_ctrl_c(fd: int) -> Iterator[None]:
    """This process's own foreground on the terminal, so Ctrl-C reaches it and not its parent.

    `make demo` runs the demo in make's process group: Ctrl-C would reach
    make too, which would wait for the demo and then exit 130 whatever the
    demo did. A group of our own in the foreground (as a shell gives each
    job) keeps the key for the demo; make gets the terminal back at the end.
    Also: no "^C" drawn on the paper.
    """
    if not os.isatty(fd) or os.tcgetpgrp(fd) != os.getpgrp():
        yield  # not a terminal, or started in the background (`&`): nothing to take
        return
    before = termios.tcgetattr(fd)
    parent_group = os.getpgrp()
    moved = parent_group != os.getpid()  # in a parent's group (make's), not a job of our own
    if moved:
        os.setpgid(0, 0)
        _set_foreground(fd, os.getpgrp())
    quiet = list(before)
    quiet[3] &= ~termios.ECHOCTL
    termios.tcsetattr(fd, termios.TCSANOW, quiet)
    try:
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSANOW, before)
        if moved:
            _set_foreground(fd, parent_group)


def _set_foreground(fd: int, group: int) -> None:
    # From a background group tcsetpgrp raises SIGTTOU, which would stop us.
    old = signal.signal(signal.SIGTTOU, signal.SIG_IGN)
    try:
        os.tcsetpgrp(fd, group)
    finally:
        signal.signal(signal.SIGTTOU, old)


def _home_as_tilde(path: Path) -> str:
    home = str(Path.home())
    return "~" + str(path)[len(home) :] if str(path).startswith(home + "/") else str(path)


def run_demo(config: Config, out: TextIO | None = None, keys_in: int | None = None) -> int:
    from appliance.engine.server import run_serve

    out = out or sys.stdout
    keys_in = sys.stdin.fileno() if keys_in is None else keys_in
    state = demo_state_dir()
    with tempfile.TemporaryDirectory(prefix="teletype-demo-") as runtime:
        config = (
            config.replace("teletype", port="virtual")
            # Not the Pi's: the user's own state, and a socket of the demo's own,
            # so a `teletype serve` on this machine keeps its socket.
            .replace("engine", state_dir=str(state), runtime_dir=runtime, status_on_paper=False)
        )
        if not config.engine.tcp_host or not config.engine.tcp_port:  # the panel, always
            config = config.replace(
                "engine", tcp_host="127.0.0.1", tcp_port=config.engine.tcp_port or 5599
            )
        log_file = state / "engine.log"
        out.write(f"Loading the model... (its log: {_home_as_tilde(log_file)})\n")
        out.flush()
        front = Front(config, out, keys_in)
        with own_ctrl_c(keys_in):
            try:
                code = run_serve(config, front=front, log_file=log_file)
            except KeyboardInterrupt:  # Ctrl-C while the model loads: leaving, not a failure
                out.write("\n")
                code = 0
    out.write("The Teletype is off. Bye.\n")
    return code
