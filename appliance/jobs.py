"""Jobs: one request for text, from any trigger, on its way to paper."""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass, field
from typing import Any

# Ids go on from the clock (milliseconds), not from 1: a client still waiting
# for job 3 when the engine restarts must never be handed someone else's job 3.
_ids = itertools.count(time.time_ns() // 1_000_000)


@dataclass
class Job:
    prompt: str
    max_chars: int
    seed: int | None = None
    print: bool = True
    source: str = "api"  # api, keyboard, button, chat (a !gpt2), chat-line (a line to print)
    literal: str | None = None  # text to print as it is; nothing is generated
    id: int = field(default_factory=lambda: next(_ids))
    status: str = "queued"  # queued, running, done, failed, cancelled, withheld
    text: str = ""
    printed: int = 0  # frames on the wire so far
    error: str | None = None
    blocked: int = 0  # times the blocklist sent the text back to the model
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    cancel: threading.Event = field(default_factory=threading.Event, repr=False)
    done: threading.Event = field(default_factory=threading.Event, repr=False)

    def summary(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "source": self.source,
            "status": self.status,
            "print": self.print,
            "max_chars": self.max_chars,
            "text": self.text,
            "printed": self.printed,
            "error": self.error,
            "blocked": self.blocked,
            "created": self.created,
            "started": self.started,
            "finished": self.finished,
        }
