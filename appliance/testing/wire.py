"""The other end of the wire: a pty reader and an independent check of what arrived.

The checks are written from the Teletype facts (DESIGN.md), not from our
encoder: parity of every byte, only printable codes, fills after every CR
and LF, no line past the margin, Baudot shifts only where the shift changes.
"""

from __future__ import annotations

import os
import select
import threading
import time
from dataclasses import dataclass, field

# Baudot facts (ITA2/USTTY share these codes).
B_LTRS, B_FIGS, B_CR, B_LF, B_SPACE, B_BLANK = 0x1F, 0x1B, 0x08, 0x02, 0x04, 0x00


class FakeClock:
    """time.monotonic and time.sleep for a printer, with no real waiting."""

    def __init__(self):
        self.now = 0.0
        self.sleeps = 0
        self.on_sleep = None

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps += 1
        self.now += max(0.0, seconds)
        if self.on_sleep:
            self.on_sleep(self)


class PtyReader:
    """Opens a pty pair; reads everything written to the slave, in a thread."""

    def __init__(self):
        self.master, self.slave = os.openpty()
        self.name = os.ttyname(self.slave)
        self.data = bytearray()
        # When each byte arrived (monotonic seconds), for timing on the wire.
        self.arrivals: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            ready, _, _ = select.select([self.master], [], [], 0.01)
            if ready:
                try:
                    chunk = os.read(self.master, 4096)
                except OSError:
                    return
                now = time.monotonic()
                self.arrivals.extend((now, b) for b in chunk)
                self.data += chunk

    def collect(self, quiet: float = 0.2) -> bytes:
        """Everything received, once nothing new has arrived for `quiet` seconds."""
        last = -1
        while last != len(self.data):
            last = len(self.data)
            self._stop.wait(quiet)
        return bytes(self.data)

    def type(self, data: bytes) -> None:
        """Bytes from the Teletype's keyboard (the other direction)."""
        os.write(self.master, data)

    def close(self):
        self._stop.set()
        self._thread.join()
        os.close(self.master)
        os.close(self.slave)


@dataclass
class WireReport:
    text: str  # what the paper shows, lines joined with "\n"
    lines: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    ends_at_column_zero: bool = True


def check_ascii(
    data: bytes,
    parity: str = "even",
    width: int = 72,
    cr_fills: int = 2,
    lf_fills: int = 1,
    fill: int = 0x00,
    allow_bell: bool = False,
) -> WireReport:
    problems = []
    codes = []
    for i, byte in enumerate(data):
        ones = bin(byte).count("1")
        expected_bit7 = {
            "even": ones % 2 == 0,
            "odd": ones % 2 == 1,
            "mark": byte & 0x80,
            "space": not byte & 0x80,
        }[parity]
        if not expected_bit7:
            problems.append(f"byte {i} ({byte:#04x}) has the wrong {parity} parity")
        codes.append(byte & 0x7F)
    lines, column, i = [""], 0, 0
    while i < len(codes):
        c = codes[i]
        if c == 0x0D:
            run = codes[i + 1 : i + 1 + cr_fills]
            if run != [fill] * cr_fills:
                problems.append(f"CR at {i} not followed by {cr_fills} fills: {run}")
            i += 1 + cr_fills
            column = 0
            continue
        if c == 0x0A:
            run = codes[i + 1 : i + 1 + lf_fills]
            if run != [fill] * lf_fills:
                problems.append(f"LF at {i} not followed by {lf_fills} fills: {run}")
            if i == 0 or codes[i - 1 - cr_fills] != 0x0D:
                problems.append(f"LF at {i} without a CR before it")
            lines.append("")
            i += 1 + lf_fills
            continue
        if c == 0x07 and allow_bell:
            i += 1
            continue
        if not 0x20 <= c <= 0x5F:
            problems.append(f"byte {i} ({c:#04x}) is not printable on ASCII-63")
        else:
            column += 1
            lines[-1] += chr(c)
            if column > width:
                problems.append(f"line {len(lines)} runs past column {width}: {lines[-1]!r}")
        i += 1
    return WireReport("\n".join(lines), lines, problems, column == 0)


def check_baudot(
    data: bytes,
    letters: dict[str, int],
    figures: dict[str, int],
    width: int = 69,
    cr_fills: int = 2,
    lf_fills: int = 1,
) -> WireReport:
    problems = []
    by_code_l = {v: k for k, v in letters.items()}
    by_code_f = {v: k for k, v in figures.items()}
    shift = None
    lines, column, previous = [""], 0, None
    for i, c in enumerate(data):
        if c > 0x1F:
            problems.append(f"byte {i} ({c:#04x}) is not a 5-bit code")
            continue
        if c in (B_LTRS, B_FIGS):
            if c == shift:
                problems.append(f"needless shift at {i}")
            if previous in (B_LTRS, B_FIGS):
                problems.append(f"two shifts in a row at {i}")
            shift = c
        elif c == B_CR:
            column = 0
            if list(data[i + 1 : i + 1 + cr_fills]) != [B_BLANK] * cr_fills:
                problems.append(f"CR at {i} without {cr_fills} fills")
        elif c == B_LF:
            lines.append("")
            if list(data[i + 1 : i + 1 + lf_fills]) != [B_BLANK] * lf_fills:
                problems.append(f"LF at {i} without {lf_fills} fills")
        elif c == B_BLANK:
            pass
        elif c == B_SPACE:
            column += 1
            lines[-1] += " "
        else:
            if shift is None:
                problems.append(f"character at {i} before any shift")
                continue
            table = by_code_f if shift == B_FIGS else by_code_l
            if c not in table:
                problems.append(f"code {c:#04x} at {i} means nothing in this shift")
                continue
            column += 1
            lines[-1] += table[c]
        if column > width:
            problems.append(f"line {len(lines)} runs past column {width}")
        previous = c
    return WireReport("\n".join(lines), lines, problems, column == 0)
