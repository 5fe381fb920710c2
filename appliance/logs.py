"""Where the appliance's log lines go: the journal under systemd, stderr otherwise."""

from __future__ import annotations

import logging
import os
import sys


def setup_logging(identifier: str) -> None:
    """One handler for the whole process, tagged with the unit's identifier."""
    handler: logging.Handler = logging.StreamHandler(sys.stderr)
    if os.environ.get("JOURNAL_STREAM") or os.environ.get("INVOCATION_ID"):
        try:
            from systemd.journal import JournalHandler

            handler = JournalHandler(SYSLOG_IDENTIFIER=identifier)
        except ImportError:
            pass
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)
