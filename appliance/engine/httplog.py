"""aiohttp's own log, with malformed requests counted instead of logged one by one.

aiohttp logs every request head it cannot parse as "Error handling request" with a
traceback: 2,000 bad requests (no token needed to send them) were 24,000 lines in
0.8 s, and on a Pi the journal is the SD card. They are the client's fault and
nothing for the engine's owner to act on one by one, so they are summed into one line
a minute; every other error aiohttp reports still gets its traceback.
"""

from __future__ import annotations

import asyncio
import logging
import time

from aiohttp.http_exceptions import HttpProcessingError

REPORT_INTERVAL = 60.0  # seconds between two summary lines


class BadRequestSummary(logging.Filter):
    """A filter for aiohttp's server logger: bad request heads are counted, not logged."""

    def __init__(self, log: logging.Logger, interval: float = REPORT_INTERVAL):
        super().__init__()
        self.log = log  # where the summary goes (a logger without this filter)
        self.interval = interval
        self.total = 0  # for the process's life
        self._unreported = 0
        self._kinds: dict[str, int] = {}
        self._last_report = float("-inf")
        self._report_handle: asyncio.TimerHandle | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if not isinstance(error, HttpProcessingError):
            return True
        self.total += 1
        self._unreported += 1
        kind = type(error).__name__
        self._kinds[kind] = self._kinds.get(kind, 0) + 1
        self._report_soon()
        return False

    def _report_soon(self) -> None:
        if self._report_handle is not None:
            return  # a report is due; it will count this one
        wait = self._last_report + self.interval - time.monotonic()
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if wait <= 0 or loop is None:
            self._report()
        else:
            self._report_handle = loop.call_later(wait, self._report)

    def _report(self) -> None:
        self._report_handle = None
        self._last_report = time.monotonic()
        count, self._unreported = self._unreported, 0
        kinds, self._kinds = self._kinds, {}
        if not count:
            return
        self.log.warning(
            "answered %d malformed request(s) with 400 since the last report (%s)",
            count,
            ", ".join(f"{n} {kind}" for kind, n in sorted(kinds.items())),
        )


def server_logger(summary_to: logging.Logger) -> logging.Logger:
    """The logger for aiohttp's request handlers (web.AppRunner(..., logger=...))."""
    logger = logging.getLogger("teletype.http")
    if not any(isinstance(f, BadRequestSummary) for f in logger.filters):
        logger.addFilter(BadRequestSummary(summary_to))
    return logger
