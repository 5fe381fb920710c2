"""The engine: the one process that owns the model, the printer, the chat history and the queue.

A Teletype is one slow printer (a 500-character reply takes 50 s) and the
model should be loaded once, so everything is serialised here: a bounded
queue of jobs in front of one worker that generates (in its own thread)
and prints (in another) at the same time. Every trigger is a client of
this process over its local API (appliance.engine.api). Accepted jobs are kept in
a journal (appliance.engine.journal), so a restart loses none of them.

While nothing waits, the worker evaluates the next reply's prompt (the
history as a reply renders it) at start and after every change, so a press
or `!gpt2` pays for one token, not the whole prompt. It never runs while a
job prints or generates, and stops at its next chunk when one arrives; the
job reuses what it evaluated.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import statistics
import threading
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from appliance.config import Config
from appliance.durable import BackgroundWriter
from appliance.engine.history import ChatLine, PersistentHistory
from appliance.engine.jobs import Job
from appliance.engine.journal import Journal, waiting
from appliance.engine.motor import Motor
from appliance.engine.paper import PAPER_FILE, Paper
from appliance.engine.replies import Replies
from appliance.errors import (
    Blocked,
    PortError,
    QueueFull,
    ShuttingDown,
    StateError,
    TooLong,
    Withheld,
)
from appliance.schema import JobStatus, PrintSource, Source
from appliance.teletype.discipline import LineDiscipline
from appliance.teletype.keyboard import KeyboardReader
from appliance.teletype.ports import Decoder
from appliance.teletype.profiles import get_profile

log = logging.getLogger("teletype.engine")

RECENT_JOBS = 64  # finished jobs kept for GET /v1/jobs/<id>, across restarts too
# A printed reply before any has been measured: max_chars in frames (word wrap, CR, LF
# and fills add a tenth or so), and then the rest of the sentence, for the generator
# stops at the first sentence end past max_chars. Replies of the embedded model, 16 at
# each max_chars: 40 -> 101 frames, 100 -> 177, 200 -> 272, 500 -> 598, that is about
# 1.08 a character and 58 more. A ratio alone (1.5 was used) was 1.7 times short at 40.
FIRST_REPLY_TAIL = 60.0
MEASURED_REPLIES = 20
ASKED_CHARS = 120  # what a job was asked, as the queue and the paper's marks show it


class Engine:
    def __init__(
        self, config: Config, generator, printer, state_dir: Path, motor=None,
        port_state: str = "unknown",
    ):  # fmt: skip
        self.config = config
        self.state_dir = state_dir
        self.motor = motor or Motor(config.motor)  # no relay: nothing to switch
        self.generator = generator
        self.printer = printer
        self.replies = Replies(config, generator)
        self.blocklist = self.replies.blocklist
        self.history = PersistentHistory(
            state_dir / "history.json", config.history.lines, blocklist=self.blocklist
        )
        self.journal = Journal(state_dir / "jobs.json")
        # Journal writes go to a thread of their own, batched: the event loop never waits
        # on the card, and a client hears "accepted" only once its job is on it.
        self._journal_writer = BackgroundWriter(self.journal.write, self._journal_bytes)
        self.state_error: str | None = None  # why the state directory refuses writes, if it does
        self._submitting = 0  # jobs on their way into the journal, counted against the queue
        self._background: set[asyncio.Future] = set()
        self.queue_size = config.engine.queue_size
        self.waiting: list[Job] = []  # the queue, oldest first
        self._arrived = asyncio.Event()  # the worker's wake-up call
        self.current: Job | None = None
        self.subscribers: set[asyncio.Queue] = set()
        self._done: dict[int, asyncio.Event] = {}
        self.jobs: dict[int, Job] = {}  # queued, running and the last few finished
        self.jobs_finished = 0
        self._last_bell = -1e9
        self.port_state = port_state  # the printer's port: open, offline or unknown
        self.chat_state: str | None = None  # what the chat bridge last said it is doing
        self.loop: asyncio.AbstractEventLoop | None = None
        self.stopping = threading.Event()
        # The next reply's prompt: evaluated while idle, when it is stale.
        self._prompt_stale = True
        self._stop_warming = threading.Event()
        self.closed = asyncio.Event()  # set at shutdown: event streams end, waiters get 503
        profile = get_profile(config.teletype.profile)
        self.cps = profile.characters_per_second(config.teletype.parity or None)
        # Each line costs CR, LF and their fills on top of its characters.
        t = config.teletype
        self.frames_per_character = 1 + (2 + t.cr_fills + t.lf_fills) / (profile.columns * 0.9)
        # The printer's own layout, to count a text's frames before it prints: a character
        # may transliterate to many (U+FDFD is 18 words), and paper time goes by frames.
        self._layout = LineDiscipline(
            profile, parity=t.parity or profile.parity, software_parity=False,
            cr_fills=t.cr_fills, lf_fills=t.lf_fills, fill=t.fill,
        )  # fmt: skip
        self.max_frames = int(config.engine.max_paper_seconds * self.cps)
        # Where a print is cut: a line past the limit, so that a text allowed at the limit
        # (its frames are counted exactly) prints whole, with the CR LF that may open it.
        self.cut_at = self.max_frames + profile.columns + 2 * (2 + t.cr_fills + t.lf_fills)
        self.reply_lengths: deque[float] = deque(maxlen=MEASURED_REPLIES)
        self.keyboard = KeyboardReader(profile, config.teletype.half_duplex)
        # What the Teletype printed, for the panel, the overlay and the event stream.
        self.paper = Paper(state_dir / PAPER_FILE, profile.columns)
        self._paper_timer: asyncio.TimerHandle | None = None  # the backlog's next write
        self._paper_decoder = Decoder(profile)  # the wire's codes as the machine prints them
        printer.on_write = self._on_write
        printer.on_port_state = self._on_port_state
        self._restore()

    def bind_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        """The event loop the engine serves from: the printer's and the motor's threads
        hand their news to it."""
        self.loop = loop
        self.motor.loop = loop

    # --- the journal -------------------------------------------------------------

    def _restore(self) -> None:
        """The last engine's jobs: the waiting ones queued again, the rest answerable."""
        jobs, lengths = self.journal.load()
        self.reply_lengths.extend(lengths)
        requeued = waiting(jobs)
        for job in sorted(jobs, key=lambda j: j.id):
            if job.status != JobStatus.QUEUED:
                self.jobs[job.id] = job
            if job.is_finished:  # the paper's copy may be older than the journal
                self.paper.ended_before_restart(job.id, job.status)
        for job in requeued[: self.queue_size]:
            self.jobs[job.id] = job
            self.waiting.append(job)
        for job in requeued[self.queue_size :]:  # a smaller queue_size since
            job.status, job.finished = JobStatus.INTERRUPTED, 0.0
            job.error = "the queue is smaller now"
            job.done.set()
            self.jobs[job.id] = job
        lost = sum(j.status == JobStatus.INTERRUPTED for j in jobs)
        if requeued or lost:
            log.warning(
                "restarted with %d job(s) still to print and %d interrupted", len(requeued), lost
            )
        self._trim()
        try:
            self._save_journal()
        except StateError as e:
            # A full or read-only card: serve what can be served (status, the queue in
            # memory) and say why jobs are refused, rather than exit and restart forever.
            self.state_error = str(e)
            log.error("%s; running without saving until the card takes writes again", e)

    def _trim(self) -> None:
        finished = [i for i, j in self.jobs.items() if j.is_finished]
        for job_id in finished[: max(0, len(finished) - RECENT_JOBS)]:
            del self.jobs[job_id]

    def _journal_bytes(self) -> bytes:
        return self.journal.encode(self.jobs.values(), self.reply_lengths)

    def _save_journal(self) -> None:
        """On the caller's thread: only at start, before the event loop serves anyone."""
        self.journal.write(self._journal_bytes())

    async def save_journal(self) -> None:
        """Until the journal as it is now is on the card; StateError if it will not take it."""
        try:
            await self._journal_writer.save()
        except StateError as e:
            self.state_error = str(e)
            raise
        self.state_error = None

    async def _save_journal_quietly(self) -> None:
        # A start or an end that cannot be written costs at most a job run
        # twice or answered for late after a crash; the job itself goes on.
        try:
            await self.save_journal()
        except StateError as e:
            log.warning("%s", e)

    async def close(self) -> None:
        """The journal's and the paper's writer threads end, once their writes are done."""
        await self._journal_writer.close()
        if self._paper_timer is not None:
            self._paper_timer.cancel()
        with contextlib.suppress(OSError):  # a card that refuses: the log said so already
            await self.paper.close()

    # --- submitting -------------------------------------------------------------

    def new_job(self, prompt: str | None, use_history: bool,
                max_chars: int | None = None, seed: int | None = None, print: bool = True,
                source: str = Source.API) -> Job:  # fmt: skip
        history = self.history if use_history or not prompt else None
        text = self.replies.prompt(history, prompt or "")
        m = self.config.model
        seed = m.seed if seed is None else seed
        return Job(text, max_chars or m.max_chars, None if seed < 0 else seed, print, source)

    def new_print(self, text: str, source: str = PrintSource.API) -> Job:
        """A job that prints the text as it is."""
        job = Job(text, len(text), print=True, source=source, literal=text)
        job.paper_frames = self.paper_frames(text)
        return job

    def paper_frames(self, text: str) -> int:
        """The frames `text` takes on paper: transliterated, folded, wrapped, CR LF and fills."""
        return self._layout.paper_frames(text)

    async def submit(self, job: Job, spare: int = 0) -> int:
        """Queue a job; its position (1 = next). QueueFull when there is no room.

        `spare` keeps that many places free for others: chat lines to print
        are welcome while the printer has time, but must never crowd out a
        reply somebody asked for. The job is in the journal before this
        returns: StateError if the card will not take it. TooLong if its
        paper would run past engine.max_paper_seconds.
        """
        if self.stopping.is_set():
            raise ShuttingDown("the engine is stopping; ask again in a moment")
        if len(self.waiting) + self._submitting + spare >= self.queue_size:
            raise QueueFull(max(1, round(self.wait_for_a_place(spare))))
        frames = self.expected_frames(job)
        if frames > self.max_frames:
            raise TooLong(
                f"its printed form would take about {frames / self.cps / 60:.0f} minutes of "
                f"paper; the limit is {self.max_frames / self.cps / 60:.0f} "
                "(engine.max_paper_seconds)"
            )
        self.jobs[job.id] = job
        self._submitting += 1
        try:
            await self.save_journal()
        except BaseException:
            self.jobs.pop(job.id, None)
            # A later write may have taken the job along: take it out of the card again.
            self._in_background(self._save_journal_quietly())
            raise
        finally:
            self._submitting -= 1
        self.waiting.append(job)
        if job.print:
            self.motor.want()  # it spins up while the model writes
        self._stop_warming.set()  # the job takes over the model at its next chunk
        self._arrived.set()
        self._trim()
        self.emit("queued", job)
        return len(self.waiting)

    async def print_text(
        self, text: str, source: str = PrintSource.API, low_priority: bool = False
    ) -> Job:
        """Queue a text to print as it is (a chat line, a sign-in code); Blocked if the
        blocklist has a word against it. `low_priority`: only while half the queue is free."""
        self._refuse_blocked(text, "not printed")
        job = self.new_print(text, source)
        await self.submit(job, self.queue_size // 2 if low_priority else 0)
        return job

    async def add_chat_line(self, name: str, text: str) -> ChatLine:
        """A chat line into the history, unless the blocklist has a word against it (the
        history itself refuses it)."""
        line = await self.history.add_async(name, text)
        self._history_changed()
        return line

    async def clear_history(self) -> None:
        await self.history.clear_async()
        self._history_changed()

    def _history_changed(self) -> None:
        # The prompt being evaluated (if any) is out of date: stop it, and
        # evaluate the new one once the worker is idle.
        self._prompt_stale = True
        self._stop_warming.set()
        self._arrived.set()

    def set_chat_state(self, state: str) -> None:
        """What the chat bridge says it is doing, in one line: shown in the status and on
        paper, so the blocklist applies to it as to any print."""
        self._refuse_blocked(state, "not kept")
        self.chat_state = " ".join(state.split())
        self.emit("chat", {"state": self.chat_state})

    def _refuse_blocked(self, text: str, what: str) -> None:
        hit = self.blocklist.find(text)
        if hit is not None:
            raise Blocked(f"{what}: blocked by the blocklist ({hit.term})")

    def ring_bell(self) -> float:
        """Ring the Teletype's bell; 0, or the seconds to wait if it rang too recently."""
        now = time.monotonic()
        wait = self._last_bell + self.config.engine.bell_interval - now
        if wait > 0:
            return wait
        self._last_bell = now
        self.motor.want()
        spin_up = self.motor.seconds_to_ready()

        def ring() -> None:
            time.sleep(spin_up)  # the bell is a character: the motor must be up to speed
            self.printer.bell()
            if self.loop is not None:
                self.loop.call_soon_threadsafe(self._quiet_now)

        threading.Thread(target=ring, name="bell", daemon=True).start()
        return 0.0

    def _quiet_now(self) -> None:
        if self.current is None and not self.waiting:
            self.motor.idle()

    def cancel_current(self) -> bool:
        job = self.current
        if job is None:
            return False
        job.cancel.set()
        return True

    async def cancel_job(self, job: Job) -> bool:
        """Take a waiting job off the queue, or stop the printing one; False if it has ended.

        A waiting job is "cancelled" only once the journal says so: StateError (and the
        job still queued) if the card will not take it, or it would print after a restart.
        """
        if job is self.current:
            job.cancel.set()
            return True
        if job not in self.waiting:
            return False
        return await self._cancel_waiting([job]) == 1

    async def clear_queue(self) -> int:
        """Every waiting job off the queue (the one printing goes on); how many."""
        return await self._cancel_waiting(list(self.waiting))

    async def _cancel_waiting(self, jobs: list[Job]) -> int:
        places = [(self.waiting.index(job), job) for job in jobs]
        for _, job in places:
            self.waiting.remove(job)
            job.status, job.finished = JobStatus.CANCELLED, time.time()
        try:
            await self.save_journal()
        except BaseException:
            for place, job in places:  # in their old places, as if never touched
                job.status, job.finished = JobStatus.QUEUED, None
                self.waiting.insert(place, job)
            if self.waiting:
                self._arrived.set()
            raise
        for _, job in places:
            job.cancel.set()
            self._finished(job)
        self._quiet_now()
        return len(places)

    def switch_motor(self, on: bool) -> None:
        """The operator's switch: on runs it for a quiet spell; off only while idle."""
        if on:
            self.motor.want()
            self._quiet_now()
        elif self.current is not None or self.waiting:
            raise StateError("the motor stays on while something prints or waits")
        else:
            self.motor.off_now()

    def queue_list(self) -> list[dict[str, Any]]:
        """The job printing and the waiting ones, each with its place and when it starts."""
        jobs = [self.current] if self.current is not None else []
        return [self.placed(job) for job in [*jobs, *self.waiting]]

    def placed(self, job: Job) -> dict[str, Any]:
        """The job with where it is in the queue (0: printing) and about when it starts."""
        item = job.summary()
        item["position"] = self.waiting.index(job) + 1 if job in self.waiting else 0
        item["printer_busy"] = self.current is not None
        item["starts_in_seconds"] = round(self.eta_seconds(before=job), 1)
        item["asked"] = _asked(job)
        return item

    async def wait(self, job: Job) -> None:
        """Until the job is finished (an asyncio wait: no thread per waiting client).

        ShuttingDown if the engine stops first: the job stays in the journal.
        """
        if job.done.is_set():
            return
        if self.closed.is_set():
            raise ShuttingDown(f"the engine is stopping; job {job.id} runs after the restart")
        finished = asyncio.ensure_future(self._done.setdefault(job.id, asyncio.Event()).wait())
        closing = asyncio.ensure_future(self.closed.wait())
        try:
            await asyncio.wait({finished, closing}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            finished.cancel()
            closing.cancel()
        if not job.done.is_set():
            raise ShuttingDown(f"the engine is stopping; job {job.id} runs after the restart")

    def shut_down(self) -> None:
        """SIGTERM: stop after the current line; waiting jobs stay in the journal."""
        self.stopping.set()
        self._stop_warming.set()
        self._arrived.set()
        job = self.current
        if job is not None:
            job.error = "the engine was stopped during the print"
            job.cancel.set()
        self.closed.set()

    # --- the worker -------------------------------------------------------------

    async def run_worker(self) -> None:
        while not self.stopping.is_set():
            if not self.waiting:
                self._arrived.clear()
                if self._prompt_stale:
                    await self._warm_up()
                    continue
                await self._arrived.wait()
                continue
            if self.stopping.is_set():
                break  # still "queued" in the journal: the next engine runs it
            job = self.waiting.pop(0)
            self.current = job
            job.status, job.started = JobStatus.RUNNING, time.time()
            await self._save_journal_quietly()
            self.emit("started", job)
            if job.print:
                self._paper_event(self.paper.job_started(job.id, job.source, _asked(job)))
            try:
                if job.print:
                    await self.motor.ready()
                await asyncio.to_thread(self._run, job)
                if job.status == JobStatus.RUNNING:
                    job.status = self._ended(job)
            except Exception as e:  # a failing job fails alone; the engine carries on
                log.exception("job %d failed", job.id)
                job.status, job.error = JobStatus.FAILED, f"{type(e).__name__}: {e}"
            job.finished = time.time()
            if job.literal is None and job.print and job.status == JobStatus.DONE:
                # Frames on the wire, not characters: word wrap, CR, LF and
                # fills are what the printer's time goes on.
                self.reply_lengths.append(round(job.printed / max(1, job.max_chars), 3))
            self.current = None
            self._prompt_stale = True  # the reply's tokens now follow the prompt
            self.jobs_finished += 1
            if job.print:
                self._paper_event(self.paper.job_ended(job.id, job.status))
            await self._save_journal_quietly()
            self._finished(job)
            self._quiet_now()

    async def _warm_up(self) -> None:
        """Evaluate the next reply's prompt, in a thread, until done or told to stop."""
        self._prompt_stale = False
        self._stop_warming.clear()
        if self.waiting or self.stopping.is_set():
            return
        prompt = self.replies.prompt(self.history, "")  # what new_job renders for a press
        try:
            done = await asyncio.to_thread(
                self.generator.prepare, prompt, self.config.model.max_chars, self._stop_warming
            )
        except Exception:  # a reply then evaluates its own prompt, as it always could
            log.exception("evaluating the next prompt ahead failed")
            return
        if not done and not self.waiting:
            self._prompt_stale = True

    def _finished(self, job: Job) -> None:
        self.emit("finished", job)
        job.done.set()
        if job.id in self._done:
            self._done.pop(job.id).set()

    def _ended(self, job: Job) -> JobStatus:
        if not job.cancel.is_set() or job.cut:
            return JobStatus.DONE
        return JobStatus.INTERRUPTED if self.stopping.is_set() else JobStatus.CANCELLED

    def _run(self, job: Job) -> None:
        if job.literal is not None:
            pieces = iter([job.literal])
        else:
            pieces = self.replies.stream(
                job.prompt, job.max_chars, job.seed, self._hit(job), job.cancel
            )

        def collect():
            for piece in pieces:
                job.text += piece
                yield piece

        try:
            if job.print:
                self.printer.print_stream(
                    self.replies.for_printer(collect(), job.cancel), job.cancel, words=True
                )
            else:
                for _ in collect():
                    if job.cancel.is_set():
                        break
        except Withheld as e:
            job.status, job.error = JobStatus.WITHHELD, str(e)

    @staticmethod
    def _hit(job: Job):
        def hit(found) -> None:
            job.blocked += 1
            log.info("job %d: the blocklist caught %r; generating again", job.id, str(found.term))

        return hit

    # --- what the printer tells us -------------------------------------------------

    def _on_write(self, data: bytes) -> None:
        self.keyboard.sent(data)
        job = self.current
        if job is not None:
            job.printed += len(data)
            if job.printed >= self.cut_at and not job.cancel.is_set():
                # A reply whose printed form runs long (a model that writes U+FDFD):
                # the line is finished and the rest left out, and the job says why.
                job.cut = True
                job.error = (
                    f"cut after {self.max_frames / self.cps / 60:.0f} minutes of paper "
                    "(engine.max_paper_seconds)"
                )
                job.cancel.set()
        at = time.time()  # stamped as the bytes leave the port, not when a view hears
        text = self._paper_decoder.decode(data)  # the printer's thread: shifts stay in order
        if not text:
            return  # fills, a Baudot shift: nothing moves on paper
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self._paper_wrote, text, at)
        else:
            self.paper.wrote(text, at)

    def _paper_wrote(self, text: str, at: float) -> None:
        event = self.paper.wrote(text, at)
        if event is not None:
            self._paper_event(event)

    def _paper_event(self, event: dict[str, Any]) -> None:
        self.emit("paper", event)
        self._schedule_paper_save()

    def _schedule_paper_save(self) -> None:
        """The backlog's next write: when the printer falls quiet, or is overdue (paper.py)."""
        due = self.paper.save_due_in()
        if due is None or self.loop is None:
            return
        if self._paper_timer is not None:
            self._paper_timer.cancel()
        self._paper_timer = self.loop.call_later(
            due, lambda: self._in_background(self._save_paper())
        )

    async def _save_paper(self) -> None:
        try:
            await self.paper.save()
        except OSError as e:
            log.warning("cannot keep the paper's backlog: %s", e)

    def _on_port_state(self, state: str) -> None:
        self.port_state = state
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self.emit, "port", {"state": state})

    # --- the keyboard -------------------------------------------------------------

    def read_keyboard(self) -> None:
        """A thread: lines typed on the Teletype become prompts (serial ports only)."""
        port = self.printer.port
        while not self.stopping.is_set():
            try:
                data = port.read(0.2)
            except PortError:
                self.stopping.wait(1.0)
                continue
            if data and self.loop is not None:
                self.loop.call_soon_threadsafe(self.motor.touch)  # someone is at the machine
            for line in self.keyboard.received(data):
                log.info("typed on the Teletype: %s", line)
                if self.loop is not None:
                    self.loop.call_soon_threadsafe(self._typed, line)

    def _typed(self, line: str) -> None:
        self._in_background(self._submit_typed(line))

    def _in_background(self, work) -> None:
        task = asyncio.ensure_future(work)
        self._background.add(task)  # held until done: the loop keeps only a weak reference
        task.add_done_callback(self._background.discard)

    async def _submit_typed(self, line: str) -> None:
        with contextlib.suppress(QueueFull, ShuttingDown, TooLong, OSError):
            await self.submit(self.new_job(line, use_history=False, source=Source.KEYBOARD))

    # --- status and events ---------------------------------------------------------

    def reply_length(self) -> float | None:
        """A printed reply's frames over its max_chars: the mean of the last ones (the
        queue's wait is a sum, and a few long replies weigh in it); None before any."""
        if not self.reply_lengths:
            return None
        return statistics.fmean(self.reply_lengths)

    def expected_frames(self, job: Job) -> float:
        """The frames the job will put on the wire: a text's own length, or a reply's
        max_chars times what replies have taken so far."""
        if not job.print:
            return 0.0
        if job.literal is not None:
            if job.paper_frames is None:  # restored from the journal
                job.paper_frames = self.paper_frames(job.literal)
            return float(job.paper_frames)
        measured = self.reply_length()
        if measured is None:
            return job.max_chars * self.frames_per_character + FIRST_REPLY_TAIL
        return job.max_chars * measured

    def wait_for_a_place(self, spare: int = 0) -> float:
        """Seconds until a job asking for `spare` free places beside it would fit: until
        enough waiting jobs have left the queue for the printer (not the whole queue's
        drain, which a 429's Retry-After used to say)."""
        leave = len(self.waiting) + self._submitting + spare - self.queue_size + 1
        if leave <= 0:
            return 0.0
        if not self.waiting:
            return self.eta_seconds()
        last_to_leave = self.waiting[min(leave, len(self.waiting)) - 1]
        return self.eta_seconds(before=last_to_leave)

    def eta_seconds(self, before: Job | None = None) -> float:
        """Seconds until the queue is empty (or until `before` starts), from the
        frames still to print at the profile's rate."""
        ahead = self.waiting
        if before is not None and before in self.waiting:
            ahead = self.waiting[: self.waiting.index(before)]
        frames = sum(self.expected_frames(j) for j in ahead)
        if self.current is not None:
            # A reply that runs past its estimate still has its sentence to finish.
            left = self.expected_frames(self.current) - self.current.printed
            frames += max(left, 20.0 if self.current.print else 0.0)
        return frames / self.cps

    def status(self) -> dict[str, Any]:
        current = self.current
        return {
            "queue": len(self.waiting),
            "queue_max": self.queue_size,
            "printing": current.summary() if current else None,
            "progress": (
                min(1.0, current.printed / max(1.0, self.expected_frames(current)))
                if current
                else None
            ),
            "eta_seconds": round(self.eta_seconds(), 1),
            "jobs_finished": self.jobs_finished,
            "model": str(self.generator.model_path),
            "profile": self.config.teletype.profile,
            "characters_per_second": round(self.cps, 2),
            "port": {"name": self.printer.port.name, "state": self.port_state},
            "motor": self.motor.status(),
            # A bridge that reports is set up, whatever this engine's config says.
            "chat": {
                "configured": bool(self.config.chat.channel) or self.chat_state is not None,
                "state": self.chat_state,
            },
            "state_error": self.state_error,
        }

    @contextlib.contextmanager
    def subscribe(self, size: int = 256) -> Iterator[asyncio.Queue]:
        """The engine's events, {"event": kind, "data": ...}, for as long as the block
        runs; a listener too slow for `size` of them misses the newest."""
        q: asyncio.Queue = asyncio.Queue(maxsize=size)
        self.subscribers.add(q)
        try:
            yield q
        finally:
            self.subscribers.discard(q)

    def emit(self, kind: str, payload) -> None:
        data = payload.summary() if isinstance(payload, Job) else payload
        for q in list(self.subscribers):
            with contextlib.suppress(asyncio.QueueFull):
                q.put_nowait({"event": kind, "data": data})


def _asked(job: Job) -> str:
    """What a job's mark on paper says it was asked: the text to print, or the prompt's
    last line (a reply's prompt is the whole chat history)."""
    if job.literal is not None:
        asked = job.literal
    else:
        lines = [ln for ln in job.prompt.splitlines() if ln.strip()]
        asked = lines[-1] if lines else ""
    asked = " ".join(asked.split())  # one line, for a list and a mark between lines
    return asked if len(asked) <= ASKED_CHARS else asked[: ASKED_CHARS - 1] + "…"
