"""The engine: the one process that owns the model, the printer, the chat history and the queue.

A Teletype is one slow printer (a 500-character reply takes 50 s) and the
model should be loaded once, so everything is serialised here: a bounded
queue of jobs in front of one worker that generates (in its own thread)
and prints (in another) at the same time. Every trigger is a client of
this process over its local API (appliance.api).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from appliance.config import Config
from appliance.durable import fsync_dir
from appliance.generator import sampling_from
from appliance.jobs import Job
from appliance.moderation import Withheld, blocklist_from, clean_reply
from appliance.prompts import History
from appliance.streams import prefetch
from appliance.teletype.keyboard import KeyboardReader
from appliance.teletype.profiles import get_profile

log = logging.getLogger("teletype.engine")


class QueueFull(Exception):
    def __init__(self, retry_after: int):
        super().__init__(f"the queue is full; try again in about {retry_after} s")
        self.retry_after = retry_after


class Blocked(ValueError):
    """A chat line with a word or phrase from the blocklist in it."""


RECENT_JOBS = 64  # finished jobs kept for GET /v1/jobs/<id>


class PersistentHistory(History):
    """The chat history, written atomically to the state directory after every change."""

    def __init__(self, path: Path, size: int):
        # A write cut short (kill -9, a power cut) leaves its temporary file
        # behind; the real file is the old one or the new one, never half.
        for stale in path.parent.glob(".history.*"):
            stale.unlink(missing_ok=True)
        lines = []
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
            from appliance.generator import ChatLine

            lines = [ChatLine(str(e["name"]), str(e["text"])) for e in saved.get("lines", [])]
        except FileNotFoundError:
            pass
        except (OSError, ValueError, KeyError, TypeError) as e:
            log.warning("ignoring an unreadable history file %s: %s", path, e)
        super().__init__(size, lines)
        self.path = path

    def add(self, name: str, text: str):
        line = super().add(name, text)
        self.save()
        return line

    def clear(self) -> None:
        super().clear()
        self.save()

    def save(self) -> None:
        data = {"lines": [{"name": ln.name, "text": ln.text} for ln in self.lines()]}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Write beside, then rename: a power cut leaves the old file or the new one.
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".history.")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(data, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        # The rename is in the directory: without this, a power cut kept the
        # new data under its temporary name and lost the history (found by
        # make boot-check's power cut).
        fsync_dir(self.path.parent)


class Engine:
    def __init__(self, config: Config, generator, printer, state_dir: Path):
        self.config = config
        self.generator = generator
        self.printer = printer
        self.history = PersistentHistory(state_dir / "history.json", config.history.lines)
        self.queue: asyncio.Queue[Job] = asyncio.Queue(maxsize=config.engine.queue_size)
        self.waiting: list[Job] = []  # the queue's contents, for status and ETA
        self.current: Job | None = None
        self.subscribers: set[asyncio.Queue] = set()
        self._done: dict[int, asyncio.Event] = {}
        self.jobs: dict[int, Job] = {}  # queued, running and the last few finished
        self.blocklist = blocklist_from(config)
        self.jobs_finished = 0
        self._last_bell = -1e9
        self.port_state = "unknown"
        self.loop: asyncio.AbstractEventLoop | None = None
        self.stopping = threading.Event()
        profile = get_profile(config.teletype.profile)
        self.cps = profile.characters_per_second(config.teletype.parity or None)
        self.keyboard = KeyboardReader(profile, config.teletype.half_duplex)
        printer.on_write = self._on_write
        printer.on_port_state = self._on_port_state

    # --- submitting -------------------------------------------------------------

    def new_job(self, prompt: str | None, use_history: bool, extra: str = "",
                max_chars: int | None = None, seed: int | None = None, print: bool = True,
                source: str = "api") -> Job:  # fmt: skip
        from appliance.prompts import reply_prompt

        if use_history or not prompt:
            text = reply_prompt(
                self.history, (prompt or "") + " " + extra, self.config.history.opening
            )
        else:
            text = prompt
        m = self.config.model
        seed = m.seed if seed is None else seed
        return Job(text, max_chars or m.max_chars, None if seed < 0 else seed, print, source)

    def new_print(self, text: str, source: str = "api") -> Job:
        """A job that prints the text as it is."""
        return Job(text, len(text), print=True, source=source, literal=text)

    def submit(self, job: Job, spare: int = 0) -> int:
        """Queue a job; its position (1 = next). QueueFull when there is no room.

        `spare` keeps that many places free for others: chat lines to print
        are welcome while the printer has time, but must never crowd out a
        reply somebody asked for.
        """
        if self.queue.qsize() + spare >= self.queue.maxsize:
            raise QueueFull(max(1, round(self.eta_seconds())))
        self.queue.put_nowait(job)
        self.waiting.append(job)
        self.jobs[job.id] = job
        while len(self.jobs) > RECENT_JOBS + self.queue.maxsize + 1:
            oldest = next(iter(self.jobs))
            if not self.jobs[oldest].done.is_set():
                break
            del self.jobs[oldest]
        self.emit("queued", job)
        return len(self.waiting)

    def add_chat_line(self, name: str, text: str):
        """A chat line into the history, unless the blocklist has a word against it."""
        hit = self.blocklist.find(f"{name} {text}")
        if hit is not None:
            raise Blocked(f"blocked by the blocklist ({hit.term})")
        return self.history.add(name, text)

    def ring_bell(self) -> float:
        """Ring the Teletype's bell; 0, or the seconds to wait if it rang too recently."""
        now = time.monotonic()
        wait = self._last_bell + self.config.engine.bell_interval - now
        if wait > 0:
            return wait
        self._last_bell = now
        threading.Thread(target=self.printer.bell, name="bell", daemon=True).start()
        return 0.0

    def cancel_current(self) -> bool:
        job = self.current
        if job is None:
            return False
        job.cancel.set()
        return True

    async def wait(self, job: Job) -> None:
        """Until the job is finished (an asyncio wait: no thread per waiting client)."""
        if job.done.is_set():
            return
        await self._done.setdefault(job.id, asyncio.Event()).wait()

    # --- the worker -------------------------------------------------------------

    async def run_worker(self) -> None:
        while True:
            job = await self.queue.get()
            self.waiting.remove(job)
            self.current = job
            job.status, job.started = "running", time.time()
            self.emit("started", job)
            try:
                await asyncio.to_thread(self._run, job)
                if job.status == "running":
                    job.status = "cancelled" if job.cancel.is_set() else "done"
            except Exception as e:  # a failing job fails alone; the engine carries on
                log.exception("job %d failed", job.id)
                job.status, job.error = "failed", f"{type(e).__name__}: {e}"
            job.finished = time.time()
            self.current = None
            self.jobs_finished += 1
            self.emit("finished", job)
            job.done.set()
            if job.id in self._done:
                self._done.pop(job.id).set()

    def _run(self, job: Job) -> None:
        pieces = iter([job.literal]) if job.literal is not None else self._generate(job)

        def collect():
            for piece in pieces:
                job.text += piece
                yield piece

        try:
            if job.print:
                self.printer.print_stream(prefetch(collect(), job.cancel), job.cancel)
            else:
                for _ in collect():
                    if job.cancel.is_set():
                        break
        except Withheld as e:
            job.status, job.error = "withheld", str(e)

    def _generate(self, job: Job):
        """The job's text, streamed, with nothing from the blocklist in it."""
        m = self.config.model

        def hit(found) -> None:
            job.blocked += 1
            log.info("job %d: the blocklist caught %r; generating again", job.id, str(found.term))

        return clean_reply(
            self.generator, job.prompt, job.max_chars, job.seed, sampling_from(m),
            self.blocklist, self.config.moderation.tries, hit,
        )  # fmt: skip

    # --- what the printer tells us -------------------------------------------------

    def _on_write(self, data: bytes) -> None:
        self.keyboard.sent(data)
        job = self.current
        if job is not None:
            job.printed += len(data)

    def _on_port_state(self, state: str) -> None:
        self.port_state = state
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self.emit, "port", {"state": state})

    # --- the keyboard -------------------------------------------------------------

    def read_keyboard(self) -> None:
        """A thread: lines typed on the Teletype become prompts (serial ports only)."""
        port = self.printer.port
        from appliance.errors import PortError

        while not self.stopping.is_set():
            try:
                data = port.read(0.2)
            except PortError:
                self.stopping.wait(1.0)
                continue
            for line in self.keyboard.received(data):
                log.info("typed on the Teletype: %s", line)
                if self.loop is not None:
                    self.loop.call_soon_threadsafe(self._typed, line)

    def _typed(self, line: str) -> None:
        with contextlib.suppress(QueueFull):
            self.submit(self.new_job(line, use_history=False, source="keyboard"))

    # --- status and events ---------------------------------------------------------

    def eta_seconds(self, before: Job | None = None) -> float:
        """Seconds until the queue is empty (or until `before` starts), from the
        characters still to print at the profile's rate."""
        ahead = self.waiting
        if before is not None and before in self.waiting:
            ahead = self.waiting[: self.waiting.index(before)]
        chars = sum(j.max_chars for j in ahead)
        if self.current is not None:
            chars += max(0, self.current.max_chars - self.current.printed)
        return chars / self.cps

    def status(self) -> dict[str, Any]:
        current = self.current
        return {
            "queue": len(self.waiting),
            "queue_max": self.config.engine.queue_size,
            "printing": current.summary() if current else None,
            "progress": (
                min(1.0, current.printed / max(1, current.max_chars)) if current else None
            ),
            "eta_seconds": round(self.eta_seconds(), 1),
            "jobs_finished": self.jobs_finished,
            "model": str(self.generator.model_path),
            "profile": self.config.teletype.profile,
            "characters_per_second": round(self.cps, 2),
            "port": {"name": self.printer.port.name, "state": self.port_state},
        }

    def emit(self, kind: str, payload) -> None:
        data = payload.summary() if isinstance(payload, Job) else payload
        for q in list(self.subscribers):
            with contextlib.suppress(asyncio.QueueFull):
                q.put_nowait({"event": kind, "data": data})
