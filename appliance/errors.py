"""One root for the appliance's errors, with builtin mixins where one fits.

Every message is meant for the person at the Teletype: what is wrong and
what to do about it. The CLI prints them as one line, never a traceback,
and exits with the error's `exit_code`: 78 (sysexits' EX_CONFIG) for what
a person must fix, which the units do not restart on; 1 for what may pass
on its own, which systemd retries.
"""

EX_CONFIG = 78


class ApplianceError(Exception):
    """Something the user can fix."""

    exit_code = 1


class ConfigError(ApplianceError, ValueError):
    """A configuration file that cannot be used; the message names the file and key."""

    exit_code = EX_CONFIG


class ModelError(ApplianceError, OSError):
    """The GGUF model is missing or will not load: retrying will not bring it back."""

    exit_code = EX_CONFIG


class StartupError(ApplianceError, OSError):
    """The engine cannot take its socket or port (in use, a directory it may not write)."""

    exit_code = EX_CONFIG


class PortError(ApplianceError, OSError):
    """The Teletype's port cannot be opened or has gone away."""


class ProfileError(ApplianceError, KeyError):
    """An unknown Teletype profile or setting."""

    exit_code = EX_CONFIG

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class StateError(ApplianceError, OSError):
    """The state directory (history, jobs, tokens) cannot be written."""


# --- what a request can run into ------------------------------------------------


class QueueFull(ApplianceError):
    """No room in the queue; `retry_after` says when a place should be free."""

    def __init__(self, retry_after: int):
        super().__init__(f"the queue is full; try again in about {retry_after} s")
        self.retry_after = retry_after


class BellTooSoon(ApplianceError):
    """The bell rang a moment ago (at most once per engine.bell_interval)."""

    def __init__(self, retry_after: int):
        super().__init__(f"the bell rang a moment ago; again in {retry_after} s")
        self.retry_after = retry_after


class Blocked(ApplianceError, ValueError):
    """A chat line with a word or phrase from the blocklist in it."""


class BadChatLine(ApplianceError, ValueError):
    """A chat line that cannot go into the history (not text, too long, blank)."""


class TooLong(ApplianceError, ValueError):
    """A job whose printed form would run past engine.max_paper_seconds."""


class Withheld(ApplianceError):
    """No reply to print: every try ran into the blocklist, or the model said nothing."""


class ShuttingDown(ApplianceError):
    """The engine is stopping; the job is kept and runs after the restart."""


class RateLimited(ApplianceError):
    """Twitch said 429: too many requests."""


# --- what a client of the engine can run into -------------------------------------
# The engine's API answers an error with a status code; the client (appliance.client)
# raises it as one of these, or as one above, so its callers never read a code.


class EngineUnavailable(ApplianceError, ConnectionError):
    """The engine is not running or not answering."""


class NoSuchJob(ApplianceError, LookupError):
    """The engine knows no job by that id (it keeps the last finished ones)."""


class EngineRefused(ApplianceError):
    """The engine refused a request for a reason the client cannot act on (a bad
    request, a wrong token): the message is the engine's own."""
