"""Run a text stream ahead of its reader, so the printer never waits on the model.

Generating in the printer's own thread would stall the model while the
printer sleeps between characters, and the printer whenever the model
thinks. Here the model runs in its own thread into an unbounded queue
(a reply is at most a few hundred words), and stops early when the job is
cancelled.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator

_DONE = object()


def prefetch(pieces: Iterable[str], cancel: threading.Event | None = None) -> Iterator[str]:
    cancel = cancel or threading.Event()
    buffer: queue.Queue = queue.Queue()
    failure: list[BaseException] = []

    def produce():
        try:
            for piece in pieces:
                buffer.put(piece)
                if cancel.is_set():
                    break
        except BaseException as e:  # handed to the reader, raised there
            failure.append(e)
        finally:
            buffer.put(_DONE)

    worker = threading.Thread(target=produce, name="generator", daemon=True)
    worker.start()
    while True:
        item = buffer.get()
        if item is _DONE:
            break
        yield item
    worker.join()
    if failure:
        raise failure[0]
