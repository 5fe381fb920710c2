"""`teletype demo`: the whole appliance on a laptop, with a virtual Teletype in the terminal.

Each typed line is a chat line. `!gpt2` (with optional extra words) or an
empty line makes the Teletype answer from the last lines, exactly as the
front-panel button would. Ctrl-C stops a print; Ctrl-D or `!quit` leaves.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO

from appliance.config import Config
from appliance.console import print_cancellable
from appliance.errors import BadChatLine, Blocked, Withheld
from appliance.history import History
from appliance.replies import Replies
from appliance.teletype import build_printer
from appliance.teletype.profiles import get_profile

DEMO_NAME = "you"
HELP = """\
Type a chat line and press Enter: it goes into the chat history.
  !gpt2 [words]  or an empty line: the Teletype answers the last {n} lines
  !history       show the chat history      !clear  forget it
  !help          this text                  !quit   leave (or Ctrl-D)
Ctrl-C stops a print and finishes the line.
"""


class Demo:
    def __init__(self, config: Config, out: TextIO | None = None, generator=None):
        self.config = config
        self.out = out or sys.stdout
        self.printer = build_printer(config.teletype, out=self.out)
        self.generator = generator
        self.replies = Replies(config, generator)
        self.history = History(config.history.lines, blocklist=self.replies.blocklist)
        self.last_first_character: float | None = None  # seconds, for the curious

    def banner(self) -> str:
        profile = get_profile(self.config.teletype.profile)
        cps = profile.characters_per_second(self.config.teletype.parity or None)
        speed = self.config.teletype.speed
        return (
            f"Virtual Teletype: {profile.description}\n"
            f"{cps * speed:.1f} characters a second (speed x{speed:g}).\n"
            + HELP.format(n=self.config.history.lines)
        )

    def handle(self, line: str) -> bool:
        """One typed line; False when the user wants to leave."""
        command = line.strip()
        lowered = command.lower()
        if lowered in ("!quit", "!exit"):
            return False
        if command == "" or lowered == "!gpt2" or lowered.startswith("!gpt2 "):
            self.reply(command[5:].strip())
        elif lowered == "!help":
            self.out.write(HELP.format(n=self.config.history.lines))
        elif lowered == "!history":
            for entry in self.history.lines() or []:
                self.out.write(f"  {entry.name}: {entry.text}\n")
            if not len(self.history):
                self.out.write("  (empty)\n")
        elif lowered == "!clear":
            self.history.clear()
            self.out.write("  history cleared\n")
        elif command.startswith("!"):
            self.out.write(f"  unknown command {command.split()[0]}; !help lists them\n")
        else:
            try:
                self.history.add(DEMO_NAME, command)
            except (BadChatLine, Blocked) as e:
                self.out.write(f"  not added: {e}\n")
        return True

    def reply(self, extra: str = "") -> None:
        """What a button press does: generate from the history and print it."""
        prompt = self.replies.prompt(self.history, extra)
        started = time.monotonic()
        first: list[float] = []

        def pieces():
            for piece in self.replies.stream(prompt):
                if not first:
                    first.append(time.monotonic() - started)
                yield piece

        cancel = threading.Event()
        try:
            if print_cancellable(self.printer, self.replies.for_printer(pieces(), cancel), cancel):
                self.out.write("  (print stopped)\n")
        except Withheld as e:
            self.out.write(f"  (nothing printed: {e})\n")
        self.last_first_character = first[0] if first else None


def run_demo(config: Config, stdin: TextIO | None = None, out: TextIO | None = None) -> int:
    from appliance.generator import load_generator

    stdin = stdin or sys.stdin
    out = out or sys.stdout
    out.write("Loading the model...\n")
    out.flush()
    demo = Demo(config, out=out, generator=load_generator(config.model))
    out.write(demo.banner())
    while True:
        out.write("> ")
        out.flush()
        try:
            line = stdin.readline()
        except KeyboardInterrupt:
            out.write("\n")
            continue
        if not line:  # end of input (Ctrl-D)
            out.write("\n")
            break
        if not demo.handle(line.rstrip("\r\n")):
            break
    demo.printer.close()
    demo.generator.close()
    return 0
