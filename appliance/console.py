"""Printing from a terminal (`teletype demo`, `generate`, `print`): Ctrl-C stops the
print, and the printer finishes its line, rather than ending the program mid-line."""

from __future__ import annotations

import threading


def print_cancellable(
    printer, pieces, cancel: threading.Event | None = None, words: bool = False
) -> bool:
    """Print; Ctrl-C cancels the print (the line is finished), not the program.

    `words`: the pieces end at words' ends (Printer.print_stream).

    True if the print was cancelled.
    """
    cancel = cancel or threading.Event()
    result = {}

    def run():
        try:
            result["r"] = printer.print_stream(pieces, cancel, words)
        except Exception as e:  # raised again in the caller's thread, below
            result["error"] = e

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    try:
        while worker.is_alive():
            worker.join(0.1)
    except KeyboardInterrupt:
        cancel.set()
        worker.join()
    if "error" in result:
        raise result["error"]
    return bool(result.get("r") and result["r"].cancelled)
