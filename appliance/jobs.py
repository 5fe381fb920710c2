"""Jobs: one request for text, from any trigger, on its way to paper."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field, fields
from typing import Any

from appliance.schema import JobOut

# What a job can be: waiting, on its way to paper, or one of the ends.
QUEUED, RUNNING = "queued", "running"
# done: printed (or generated); failed: the generator broke; cancelled: someone
# stopped it; withheld: nothing printable came of it (the blocklist, an empty
# reply); interrupted: the engine stopped or died while it was printing.
FINISHED = ("done", "failed", "cancelled", "withheld", "interrupted")


class _Ids:
    """Ids go on from the clock (milliseconds), not from 1: a client still
    waiting for job 3 when the engine restarts must never be handed someone
    else's job 3. A Pi has no clock battery, so ids restored from the journal
    also move the counter past them."""

    def __init__(self) -> None:
        self.last = time.time_ns() // 1_000_000
        self._lock = threading.Lock()

    def next(self) -> int:
        with self._lock:
            self.last = max(self.last + 1, time.time_ns() // 1_000_000)
            return self.last

    def seen(self, used: int) -> None:
        with self._lock:
            self.last = max(self.last, used)


ids = _Ids()

# The fields that go into the journal (appliance.journal); the events stay in memory.
_KEPT = (
    "prompt", "max_chars", "seed", "print", "source", "literal", "id", "status", "text",
    "printed", "error", "blocked", "created", "started", "finished",
)  # fmt: skip


@dataclass
class Job:
    prompt: str
    max_chars: int
    seed: int | None = None
    print: bool = True
    source: str = "api"  # api, keyboard, button, chat (a !gpt2), chat-line, system
    literal: str | None = None  # text to print as it is; nothing is generated
    id: int = field(default_factory=ids.next)
    status: str = QUEUED
    text: str = ""
    printed: int = 0  # frames on the wire so far
    error: str | None = None
    blocked: int = 0  # times the blocklist sent the text back to the model
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    cancel: threading.Event = field(default_factory=threading.Event, repr=False)
    done: threading.Event = field(default_factory=threading.Event, repr=False)

    @property
    def is_finished(self) -> bool:
        return self.status in FINISHED

    def summary(self) -> dict[str, Any]:
        """The job as the API shows it: the fields of appliance.schema.JobOut."""
        return {name: getattr(self, name) for name in JobOut.__struct_fields__}

    def record(self) -> dict[str, Any]:
        """Everything needed to run the job again, or to answer for it, after a restart."""
        return {name: getattr(self, name) for name in _KEPT}

    @classmethod
    def restore(cls, record: dict[str, Any]) -> Job:
        """A job from its record; TypeError or ValueError if the record is not one."""
        known = {f.name: f.type for f in fields(cls)}
        values = {k: v for k, v in record.items() if k in _KEPT and k in known}
        job = cls(**values)
        if not isinstance(job.prompt, str) or not isinstance(job.id, int):
            raise ValueError("not a job record")
        if job.status not in (QUEUED, RUNNING, *FINISHED):
            raise ValueError(f"unknown status {job.status!r}")
        ids.seen(job.id)
        if job.is_finished:
            job.done.set()
        return job
