"""The paper: what the Teletype has printed, as it printed it, for every view of it.

The codes that left the port, read as the machine prints them (parity stripped,
fills and shifts dropped: appliance.teletype.ports.Decoder), move a carriage
over lines of `columns` characters: CR back to column 0, LF to a new line, a
printable character at the carriage (the one past the margin overprints the
last column, as on the machine), BEL marks the line. Jobs leave marks between
the lines: which job, from where, asked what, and how it ended.

Every change is an event with a sequence number, stamped when its bytes left
the port. A view takes a snapshot (the backlog, the current line and its
column, and the last sequence number) and then the events after it; one that
reconnects asks for the events since the last it saw (`since`), and gets a
new snapshot when those are no longer kept. After a restart the numbers jump
ahead, so a view from before it always starts again from a snapshot, never
from events that a crash may have lost.

The backlog (the last few hundred lines) is kept in the state directory. An SD
card wears out by its writes, and the backlog is rewritten whole (about 32 KB,
twice over on the data=journal state partition), so it is written when the
printer has been quiet for QUIET_SAVE_SECONDS, at least every
MOST_UNSAVED_SECONDS while it keeps printing, and when the engine stops; never
per character or per job. A power cut loses at most the last few minutes of
this copy; the Teletype's own paper has them, and the job journal (which jobs
ran) is written at every step regardless.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

from appliance.durable import BackgroundWriter, remove_leftovers, set_aside, write_atomic

log = logging.getLogger("teletype.paper")

PAPER_FILE = "paper.json"
BACKLOG_LINES = 400  # lines (and job marks) a reload shows, kept across restarts
KEPT_EVENTS = 4000  # events a reconnecting view can resume from (minutes of printing)
QUIET_SAVE_SECONDS = 30.0  # the paper unchanged this long: written to the card
MOST_UNSAVED_SECONDS = 600.0  # printing without a pause: written at least this often
RESTART_GAP = 1_000_000  # how far the numbers jump at a restart (past any lost event)
ENDINGS = ("done", "cancelled", "interrupted", "failed", "withheld")


class Paper:
    """The paper model; fed on the event loop, in the order the bytes left the port."""

    def __init__(self, path: Path | None, columns: int = 72, clock=time.time):
        self.path = path
        self.columns = columns
        self.clock = clock
        self.backlog: deque[dict[str, Any]] = deque(maxlen=BACKLOG_LINES)
        self.line: list[str] = []  # the line under the carriage, spaces where nothing printed
        self.column = 0
        self.bell = False  # the bell rang on the current line
        self.seq = 0
        self.events: deque[dict[str, Any]] = deque(maxlen=KEPT_EVENTS)
        self.open_job: dict[str, Any] | None = None
        # The end mark a restart gave the job left open in the saved backlog (or None).
        self.open_at_restart: dict[str, Any] | None = None
        self._first_unsaved: float | None = None  # time.monotonic() of each, None: all saved
        self._last_change = 0.0
        self._lock = threading.Lock()  # snapshot() may be read from a thread
        self._writer = BackgroundWriter(self._write, self._encode) if path else None
        self._load()
        # The first sequence number a view may resume from: none from before a restart.
        self.floor = self.seq

    # --- what the port did ------------------------------------------------------------

    def wrote(self, text: str, at: float | None = None) -> dict[str, Any] | None:
        """What left the port (at `at`, seconds since 1970), decoded: printable characters,
        CR, LF and BEL; the event, or None when it moves nothing on paper (fills)."""
        if not text:
            return None
        with self._lock:
            for ch in text:
                if ch == "\r":
                    self.column = 0
                elif ch == "\n":
                    self._new_line()
                elif ch == "\a":
                    self.bell = True
                else:
                    self._put(ch)
            return self._event({"text": text}, at)

    def job_started(self, job_id: int, source: str, prompt: str) -> dict[str, Any]:
        with self._lock:
            if self.open_job is not None:  # never ended (cannot happen; kept honest anyway)
                self._end(self.open_job["id"], "interrupted")
            self.open_job = {"id": job_id, "source": source, "prompt": prompt}
            self.backlog.append({"start": dict(self.open_job)})
            return self._event({"start": dict(self.open_job)})

    def job_ended(self, job_id: int, how: str) -> dict[str, Any]:
        """The job's end mark (done, cancelled, interrupted...); saved to the card."""
        with self._lock:
            return self._end(job_id, how)

    # --- what a view asks --------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "seq": self.seq,
                "columns": self.columns,
                "backlog": list(self.backlog),
                "line": "".join(self.line),
                "column": self.column,
                "bell": self.bell,
                "job": dict(self.open_job) if self.open_job else None,
            }

    def since(self, seq: int) -> list[dict[str, Any]] | None:
        """The events after `seq`, or None when they are not all kept (then: a snapshot)."""
        with self._lock:
            if seq == self.seq:
                return []
            if not self.floor <= seq < self.seq:
                return None
            first = self.events[0]["seq"] if self.events else self.seq + 1
            if seq < first - 1:
                return None
            return [e for e in self.events if e["seq"] > seq]

    # --- keeping it ----------------------------------------------------------------------

    @property
    def last_change(self) -> float:
        """time.monotonic() of the paper's last change (the quiet spell counts from it)."""
        return self._last_change

    async def save(self) -> None:
        """Until the paper as it is now is on the card (OSError if it will not take it)."""
        if self._writer is not None:
            self._first_unsaved = None
            await self._writer.save()

    def save_due_in(self) -> float | None:
        """Seconds until the backlog should be written (0: now), None when it is saved."""
        if self._writer is None or self._first_unsaved is None:
            return None
        due = min(
            self._last_change + QUIET_SAVE_SECONDS, self._first_unsaved + MOST_UNSAVED_SECONDS
        )
        return max(0.0, due - time.monotonic())

    async def close(self) -> None:
        if self._writer is not None:
            await self.save()
            await self._writer.close()

    # --- inside --------------------------------------------------------------------------

    def _put(self, ch: str) -> None:
        at = min(self.column, self.columns - 1)  # past the margin: the last column, overprinted
        if len(self.line) <= at:
            self.line.extend(" " * (at + 1 - len(self.line)))
        if ch != " " or self.line[at] == " ":
            self.line[at] = ch  # a space moves the carriage and leaves what is there
        self.column = min(self.column + 1, self.columns)

    def _new_line(self) -> None:
        entry: dict[str, Any] = {"text": "".join(self.line).rstrip()}
        if self.bell:
            entry["bell"] = True
        self.backlog.append(entry)
        self.line, self.bell = [], False  # LF alone: the carriage keeps its column

    def _end(self, job_id: int, how: str) -> dict[str, Any]:
        mark = {"id": job_id, "ended": how}
        self.backlog.append({"end": mark})
        if self.open_job is not None and self.open_job["id"] == job_id:
            self.open_job = None
        return self._event({"end": mark})

    def _event(self, body: dict[str, Any], at: float | None = None) -> dict[str, Any]:
        self.seq += 1
        self._last_change = time.monotonic()
        if self._first_unsaved is None:
            self._first_unsaved = self._last_change
        event = {"seq": self.seq, "t": round(self.clock() if at is None else at, 3), **body}
        self.events.append(event)
        return event

    def _encode(self) -> bytes:
        state = self.snapshot()
        return json.dumps(state, separators=(",", ":")).encode()

    def _write(self, data: bytes) -> None:
        assert self.path is not None
        write_atomic(self.path, data)

    def _load(self) -> None:
        if self.path is None:
            return
        remove_leftovers(self.path)
        try:
            state = json.loads(self.path.read_bytes())
            backlog = [e for e in state["backlog"] if _is_entry(e)]
            seq, line, column = int(state["seq"]), str(state["line"]), int(state["column"])
            job = state.get("job")
        except FileNotFoundError:
            return
        except (OSError, ValueError, KeyError, TypeError) as e:
            set_aside(self.path, f"not a paper backlog ({e})", log)
            return
        self.backlog.extend(backlog)
        self.line = list(line[: self.columns])
        self.column = max(0, min(column, self.columns))
        self.bell = bool(state.get("bell"))
        self.seq = max(0, seq) + RESTART_GAP
        if isinstance(job, dict) and isinstance(job.get("id"), int):
            # The engine stopped (or died) during this job, or after it but before the
            # backlog was next written: its paper ends here, interrupted unless the job
            # journal knows better (ended_before_restart).
            self.open_at_restart = {"id": job["id"], "ended": "interrupted"}
            self.backlog.append({"end": self.open_at_restart})

    def ended_before_restart(self, job_id: int, how: str) -> None:
        """The job journal says how the job left open in the saved backlog ended."""
        if self.open_at_restart is not None and self.open_at_restart["id"] == job_id:
            self.open_at_restart["ended"] = how


def _is_entry(entry: object) -> bool:
    if not isinstance(entry, dict):
        return False
    if isinstance(entry.get("text"), str):
        return True
    mark = entry.get("start") or entry.get("end")
    return isinstance(mark, dict) and isinstance(mark.get("id"), int)
