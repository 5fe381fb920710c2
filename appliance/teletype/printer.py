"""The printer: text pieces in, paced frames out, cancellable, tolerant of a lost port.

Pacing is against a deadline (the start of the run plus n frame times) so
rounding never accumulates, with the clock injected so tests run in no
time. On a real UART the hardware paces too; we still pace ourselves and
drain at every line end, so at most one line ever waits in kernel buffers
and a cancel takes effect within that line.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from appliance.errors import PortError
from appliance.teletype.discipline import Frame, LineDiscipline
from appliance.teletype.ports import Port


@dataclass
class PrintResult:
    characters: int  # frames written
    cancelled: bool
    text: str  # the text the job was given (before folding)


class Printer:
    def __init__(
        self,
        port: Port,
        discipline: LineDiscipline,
        speed: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        reconnect_every: float = 2.0,
        on_port_state: Callable[[str], None] | None = None,
        on_write: Callable[[bytes], None] | None = None,
    ):
        self.port = port
        self.discipline = discipline
        self.frame_time = discipline.profile.bits_per_character(discipline.parity) / (
            discipline.profile.baud * speed
        )
        self.clock = clock
        self.sleep = sleep
        self.reconnect_every = reconnect_every
        self.on_port_state = on_port_state or (lambda state: None)
        # Told every byte that went out (a half-duplex keyboard reader must
        # not mistake our own echo for typing).
        self.on_write = on_write or (lambda data: None)
        self._next = 0.0
        self._bell_pending = False
        # The frames of the line being printed, to print it again from its
        # start if the port drops mid-line (what reached the paper is unknown).
        self._line: list[int] = []
        self._shift_at_line_start: int | None = None
        self._last_shift: int | None = None
        self.stopping = threading.Event()  # set on shutdown: no more waiting for a port
        self._lock = threading.Lock()  # one job on the paper at a time
        self.port_state = "closed"

    # --- jobs ------------------------------------------------------------------

    def print_text(self, text: str, cancel: threading.Event | None = None) -> PrintResult:
        return self.print_stream([text], cancel)

    def print_stream(
        self, pieces: Iterable[str], cancel: threading.Event | None = None, words: bool = False
    ) -> PrintResult:
        """Print text as it arrives, starting with the first complete word.

        `words`: every piece ends at a word's end (a reply's do, see
        replies.ending_a_sentence), so a piece's last word prints without
        waiting for the space the next piece begins with.
        """
        cancel = cancel or threading.Event()
        d = self.discipline
        written = 0
        given: list[str] = []
        with self._lock:
            written += self._send(d.start_job(), cancel)
            try:
                for piece in pieces:
                    given.append(piece)
                    written += self._send(d.feed(piece, words), cancel)
                    if cancel.is_set():
                        break
                if not cancel.is_set():
                    written += self._send(d.flush(), cancel)
            finally:
                d.discard_pending()
                # Leave the paper tidy: the carriage back at column 0, whether
                # the text ended, was cancelled, or its source failed.
                written += self._finish_line(cancel)
                self._drain()
        return PrintResult(written, cancel.is_set(), "".join(given))

    def bell(self) -> None:
        """Ring now if idle, else between two characters of the job printing."""
        self._bell_pending = True
        if self._lock.acquire(blocking=False):
            try:
                self._ring_if_pending()
                self._drain()
            finally:
                self._lock.release()

    def _ring_if_pending(self) -> None:
        if self._bell_pending:
            self._bell_pending = False
            for frame in self.discipline.bell():
                self._wait_for_slot()
                self._write(bytes([frame.code]), None)

    # --- the wire ----------------------------------------------------------------

    def _send(self, frames: list[Frame], cancel: threading.Event | None) -> int:
        sent = 0
        for frame in frames:
            if cancel is not None and cancel.is_set():
                break
            self._ring_if_pending()
            self._wait_for_slot()
            if not self._write(bytes([frame.code]), cancel):
                break
            sent += 1
            self._remember(frame)
            if frame.line_end:
                self._drain()  # let the UART catch up: at most a line in its buffers
        return sent

    def _finish_line(self, cancel: threading.Event) -> int:
        """CR LF to end the job's line, even after a cancel, as long as the port is there.

        With the port gone, a cancelled job does not wait for it (nothing
        would ever end the wait but a shutdown): the carriage is then
        unknown, and the next job starts on a fresh line.
        """
        frames = self.discipline.end_line()
        sent = 0
        for frame in frames:
            self._wait_for_slot()
            if not self._write(bytes([frame.code]), cancel if cancel.is_set() else None):
                self.discipline.carriage_unknown()
                break
            sent += 1
            self._remember(frame)
        return sent

    def _wait_for_slot(self) -> None:
        if not self.port.paced:
            return
        now = self.clock()
        if self._next < now - self.frame_time:
            # Idle (waiting for text or a job): start a new run from now,
            # never a burst to "catch up".
            self._next = now
        if self._next > now:
            self.sleep(self._next - now)
        self._next += self.frame_time

    def _write(self, data: bytes, cancel: threading.Event | None) -> bool:
        """Write; if the port has gone (unplugged adapter), wait for it and resume.

        The job is paused, not dropped: the same character is written once
        the port is back. False only if the job was cancelled or the
        printer is shutting down meanwhile.
        """
        while True:
            try:
                self.port.write(data)
                self.on_write(data)
                if self.port_state != "open":
                    self._set_state("open")
                return True
            except PortError:
                self._set_state("offline")
            while True:
                if self.stopping.is_set() or (cancel is not None and cancel.is_set()):
                    return False
                self.sleep(self.reconnect_every)
                try:
                    self.port.open()
                    self._reprint_line()
                    break
                except PortError:
                    continue

    def _remember(self, frame: Frame) -> None:
        if self.discipline.profile.is_baudot and frame.code in (0x1F, 0x1B):
            self._last_shift = frame.code
        if frame.line_end:
            self._line = []
            self._shift_at_line_start = self._last_shift
        else:
            self._line.append(frame.code)

    def _reprint_line(self) -> None:
        """After a reconnect: a fresh line, then the interrupted line from its start."""
        encoder = self.discipline.encoder
        d = self.discipline
        symbols = ["\r"] + ["\x00"] * d.cr_fills + ["\n"] + ["\x00"] * d.lf_fills
        restart = [c for symbol in symbols for c in encoder.encode(symbol)]
        if self._shift_at_line_start is not None:
            restart.append(self._shift_at_line_start)
        for code in restart + self._line:
            self._wait_for_slot()
            self.port.write(bytes([code]))  # a PortError here: reconnect again
            # Told like any other byte: the paper model must show the line twice,
            # as the paper does, and the keyboard must know its echo.
            self.on_write(bytes([code]))

    def close(self) -> None:
        self.stopping.set()
        self.port.close()

    def _drain(self) -> None:
        try:
            self.port.drain()
        except PortError:
            self._set_state("offline")

    def _set_state(self, state: str) -> None:
        self.port_state = state
        self.on_port_state(state)
