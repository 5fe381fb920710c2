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

from appliance.durable import remove_leftovers, write_atomic
from appliance.errors import StateError
from appliance.jobs import QUEUED, RUNNING, Job

log = logging.getLogger("teletype.journal")


class Journal:
    def __init__(self, path: Path):
        self.path = path
        remove_leftovers(path)

    def load(self) -> tuple[list[Job], list[float]]:
        """The jobs as the last engine left them, and its measured reply lengths.

        A job that was running is marked interrupted. Whatever cannot be
        read is logged and skipped: a bad journal never stops the engine.
        """
        try:
            saved = json.loads(self.path.read_bytes())
        except FileNotFoundError:
            return [], []
        except (OSError, ValueError, RecursionError) as e:
            log.warning("ignoring an unreadable job journal %s: %s", self.path, e)
            return [], []
        if not isinstance(saved, dict):
            log.warning("ignoring the job journal %s: not a JSON object", self.path)
            return [], []
        jobs = []
        for record in saved.get("jobs") or []:
            try:
                job = Job.restore(record)
            except (TypeError, ValueError, AttributeError) as e:
                log.warning("skipping a bad job in %s: %s", self.path, e)
                continue
            if job.status == RUNNING:
                job.status, job.finished = "interrupted", time.time()
                job.error = "the engine stopped while printing it (a crash or a power cut)"
                job.done.set()
            jobs.append(job)
        lengths = [x for x in saved.get("reply_lengths") or [] if isinstance(x, int | float)]
        return jobs, lengths

    def save(self, jobs: Iterable[Job], reply_lengths: Iterable[float]) -> None:
        data = {
            "jobs": [job.record() for job in jobs],
            "reply_lengths": list(reply_lengths),
        }
        try:
            write_atomic(self.path, json.dumps(data).encode("utf-8"))
        except OSError as e:
            raise StateError(f"cannot save the job journal {self.path}: {e.strerror or e}") from e


def waiting(jobs: Iterable[Job]) -> list[Job]:
    """The restored jobs to run again, oldest first."""
    return sorted((j for j in jobs if j.status == QUEUED), key=lambda j: j.id)
