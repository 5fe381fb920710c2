"""Where the appliance's log lines go: the journal under systemd, stderr otherwise."""

from __future__ import annotations

import logging
import os
import re
import sys
from pathlib import Path


def setup_logging(identifier: str, to: Path | None = None) -> None:
    """One handler for the whole process, tagged with the unit's identifier.

    `to`: a file instead (the demo's terminal is the paper, not a log)."""
    handler: logging.Handler = logging.StreamHandler(sys.stderr)
    if to is not None:
        to.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(to, encoding="utf-8")
    elif os.environ.get("JOURNAL_STREAM") or os.environ.get("INVOCATION_ID"):
        try:
            from systemd.journal import JournalHandler

            handler = JournalHandler(SYSLOG_IDENTIFIER=identifier)
        except ImportError:
            pass
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactSecrets())
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)


# --- secrets never reach a log line -----------------------------------------------

_SECRETS: set[str] = set()
# A token in a URL's query or an Authorization header, whoever wrote the line:
# twitchio puts the refresh token in the query and the URL in its errors.
_IN_TEXT = re.compile(
    r"((?:access_token|refresh_token|client_secret|device_code|token|code)=)[^&\s'\"]+"
    r"|((?:Bearer|OAuth) )[A-Za-z0-9._~+/=-]{8,}",
    re.IGNORECASE,
)


def secret(value: str) -> None:
    """Never log this value (a token), wherever in a line it turns up."""
    if value and len(value) >= 8:
        _SECRETS.add(value)


def redact(text: str) -> str:
    for value in _SECRETS:
        text = text.replace(value, "[redacted]")
    return _IN_TEXT.sub(lambda m: (m.group(1) or m.group(2)) + "[redacted]", text)


class RedactSecrets(logging.Filter):
    """On every handler: the message, its arguments and its traceback, redacted."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        # The raw exception goes too: the journal's handler sends it as its own
        # field (EXCEPTION_INFO), and its repr holds what the text had. The
        # redacted traceback above is what every handler prints instead.
        record.exc_info = None
        return True
