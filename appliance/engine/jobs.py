"""Jobs: one request for text, from any trigger, on its way to paper."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Annotated, Any

import msgspec
from msgspec import Meta

from appliance.schema import FINISHED, JobOut, JobStatus, PrintSource


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

# The fields that go into the journal (appliance.engine.journal); the events stay in memory.
_KEPT = (
    "prompt", "max_chars", "seed", "print", "source", "literal", "id", "status", "text",
    "printed", "error", "blocked", "created", "started", "finished",
)  # fmt: skip


_Time = Annotated[float, Meta(ge=0, le=1e11)]  # seconds since 1970; finite
_Count = Annotated[int, Meta(ge=0, le=10**9)]


class JobRecord(msgspec.Struct, forbid_unknown_fields=False):
    """A job as the journal keeps it: what restore() accepts (fields it does not know are
    left out, fields of the wrong type are refused)."""

    prompt: str
    max_chars: Annotated[int, Meta(ge=1, le=100_000)]
    id: Annotated[int, Meta(ge=1, le=2**62)]
    seed: Annotated[int, Meta(ge=0, lt=2**32)] | None = None
    print: bool = True
    source: str = "api"
    literal: str | None = None
    status: JobStatus = JobStatus.QUEUED
    text: str = ""
    printed: _Count = 0
    error: str | None = None
    blocked: _Count = 0
    created: _Time = 0.0
    started: _Time | None = None
    finished: _Time | None = None


@dataclass
class Job:
    prompt: str
    max_chars: int
    seed: int | None = None
    print: bool = True
    source: str = PrintSource.API  # a PrintSource (a journal's own words are kept)
    literal: str | None = None  # text to print as it is; nothing is generated
    id: int = field(default_factory=ids.next)
    status: JobStatus = JobStatus.QUEUED
    text: str = ""
    printed: int = 0  # frames on the wire so far
    error: str | None = None
    blocked: int = 0  # times the blocklist sent the text back to the model
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    # Not journaled: the frames a text to print takes (counted once, when it is queued),
    # and whether the paper limit cut the job short.
    paper_frames: int | None = field(default=None, repr=False)
    cut: bool = field(default=False, repr=False)
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
    def restore(cls, record: object) -> Job:
        """A job from its record; ValueError saying what is wrong if the record is not one.

        Every field is checked against its type: a `max_chars` of null or a
        `text` of 5 would otherwise fail later, in a reply or in every answer.
        """
        try:
            checked = msgspec.convert(record, JobRecord)
        except msgspec.ValidationError as e:
            raise ValueError(f"not a job record: {e}") from None
        job = cls(**msgspec.structs.asdict(checked))
        ids.seen(job.id)
        if job.is_finished:
            job.done.set()
        return job
