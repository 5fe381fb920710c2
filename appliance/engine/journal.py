"""The job journal: a 202 is a promise, kept through kill -9 and a power cut.

Every accepted job is on the card before its client hears "accepted", and
again when it starts and ends. After a restart the engine runs the jobs
that were waiting, and answers for the rest: the one that was printing is
"interrupted" (printing it again would repeat half a reply on paper), and
the last finished ones can still be asked for by id.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any

import msgspec
from msgspec import Meta

from appliance.durable import remove_leftovers, set_aside, write_atomic
from appliance.engine.jobs import Job
from appliance.errors import StateError
from appliance.schema import JobStatus

log = logging.getLogger("teletype.journal")


# A printed reply's frames over its max_chars, as the journal may hold them: anything
# outside this is not a measurement (and 1e308 twenty times made the queue's ETA inf).
_Length = Annotated[float, Meta(gt=0, le=100)]


class _Saved(msgspec.Struct):
    """The journal file's shape; each job record is checked on its own (Job.restore)."""

    jobs: list[Any] = []
    reply_lengths: list[Any] = []


class Journal:
    def __init__(self, path: Path):
        self.path = path
        remove_leftovers(path)

    def load(self) -> tuple[list[Job], list[float]]:
        """The jobs as the last engine left them, and its measured reply lengths.

        A job that was running is marked interrupted. Whatever cannot be
        read is logged and skipped: a bad journal never stops the engine. A
        file of the wrong shape is set aside (renamed, kept) for a person to look at.
        """
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return [], []
        except OSError as e:  # a directory, an unreadable file
            set_aside(self.path, f"ignoring an unreadable job journal: {e.strerror or e}", log)
            return [], []
        try:
            saved = msgspec.json.decode(raw, type=_Saved)
        except (msgspec.DecodeError, msgspec.ValidationError, RecursionError) as e:
            set_aside(self.path, f"ignoring a job journal of the wrong shape: {e}", log)
            return [], []
        jobs = []
        for record in saved.jobs:
            try:
                job = Job.restore(record)
            except ValueError as e:
                log.warning("skipping a bad job in %s: %s", self.path, e)
                continue
            if job.status == JobStatus.RUNNING:
                job.status, job.finished = JobStatus.INTERRUPTED, time.time()
                job.error = "the engine stopped while printing it (a crash or a power cut)"
                job.done.set()
            jobs.append(job)
        lengths, bad = [], 0
        for length in saved.reply_lengths:
            try:
                lengths.append(msgspec.convert(length, _Length))
            except msgspec.ValidationError:
                bad += 1
        if bad:
            log.warning("skipping %d bad reply length(s) in %s", bad, self.path)
        return jobs, lengths

    def encode(self, jobs: Iterable[Job], reply_lengths: Iterable[float]) -> bytes:
        """The journal's bytes for these jobs (made on the event loop, written elsewhere)."""
        data = {
            "jobs": [job.record() for job in jobs],
            "reply_lengths": list(reply_lengths),
        }
        return json.dumps(data).encode("utf-8")

    def write(self, data: bytes) -> None:
        """Put `data` on the card; StateError if it will not take it."""
        try:
            write_atomic(self.path, data)
        except OSError as e:
            raise StateError(f"cannot save the job journal {self.path}: {e.strerror or e}") from e

    def save(self, jobs: Iterable[Job], reply_lengths: Iterable[float]) -> None:
        self.write(self.encode(jobs, reply_lengths))


def waiting(jobs: Iterable[Job]) -> list[Job]:
    """The restored jobs to run again, oldest first."""
    return sorted((j for j in jobs if j.status == JobStatus.QUEUED), key=lambda j: j.id)
