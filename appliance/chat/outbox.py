"""Messages on their way to chat, within Twitch's limits.

Twitch allows a bot 20 messages in any 30 seconds (100 when it is a
moderator of the channel), 500 characters a message, drops a message
identical to the one before it, and answers 429 when we go too fast anyway.
One sender task posts the messages in order, waits for room in the window,
skips a repeat, waits until Twitch's Ratelimit-Reset on a 429, tries again
after a passing failure (a 5xx, a dropped connection, a token refresh), and
says in the journal what it dropped and why.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable

from appliance.chat.bridge import fit_for_chat
from appliance.errors import ApplianceError

log = logging.getLogger("teletype.chat")

WINDOW = 30.0  # seconds
LONGEST = 500  # characters in one chat message


class TryLater(ApplianceError):
    """Twitch held the message back (a 429, slow mode): send it again later.

    `retry_at` is Twitch's Ratelimit-Reset (Unix time), when it gave one."""

    def __init__(self, why: str = "", retry_at: float | None = None):
        super().__init__(why)
        self.retry_at = retry_at


class SendFailed(ApplianceError):
    """The message was not sent: `transient` when trying again may help."""

    def __init__(self, why: str, transient: bool = False):
        super().__init__(why)
        self.transient = transient


class Outbox:
    def __init__(
        self,
        send: Callable[[str], Awaitable[bool]],
        per_window: int = 20,
        clock: Callable[[], float] = time.monotonic,
        max_waiting: int = 50,
        window: float = WINDOW,
        tries: int = 8,
        wall: Callable[[], float] = time.time,
    ):
        self.send = send
        self.per_window = per_window
        self.window = window
        self.clock = clock
        self.wall = wall  # Ratelimit-Reset is a wall-clock time
        self.tries = tries
        self.waiting: asyncio.Queue[str] = asyncio.Queue(maxsize=max_waiting)
        self.sent_at: deque[float] = deque()
        self.last_text = ""
        self.last_sent = -1e9
        self.sent = 0
        self.dropped = 0

    async def post(self, text: str) -> None:
        """Queue a message; when far behind, the oldest waiting one gives way."""
        if self.waiting.full():
            old = self.waiting.get_nowait()
            self.dropped += 1
            log.warning("chat is far behind: dropped an old message: %r", old[:60])
        self.waiting.put_nowait(fit_for_chat(text, LONGEST))

    async def run(self) -> None:
        while True:
            text = await self.waiting.get()
            # Twitch drops a message that repeats the one before it within 30 s.
            if text == self.last_text and self.clock() - self.last_sent < self.window:
                log.info("not posting the same message twice in a row: %r", text[:60])
                continue
            await self._room()
            await self._send_with_retries(text)

    async def _room(self) -> None:
        while True:
            now = self.clock()
            while self.sent_at and now - self.sent_at[0] >= self.window:
                self.sent_at.popleft()
            if len(self.sent_at) < self.per_window:
                return
            await asyncio.sleep(self.window - (now - self.sent_at[0]) + 0.01)

    async def _send_with_retries(self, text: str) -> None:
        delay, why = 1.0, ""
        for _ in range(self.tries):
            self.sent_at.append(self.clock())
            try:
                delivered = await self.send(text)
            except TryLater as e:
                why = str(e) or "too many messages"
                wait = delay if e.retry_at is None else e.retry_at - self.wall()
            except SendFailed as e:
                if not e.transient:
                    return self._dropped(text, str(e))
                why, wait = str(e), delay
            except Exception as e:  # one message must not end the sender; the log says why
                return self._dropped(text, f"{type(e).__name__}: {e}", bug=True)
            else:
                if delivered:
                    self.last_text, self.last_sent = text, self.clock()
                    self.sent += 1
                return
            wait = min(max(wait, 0.1), 60.0)  # a reset further off than a minute: odd; try
            log.info("Twitch: %s; trying to post again in %.0f s", why, wait)
            await asyncio.sleep(wait)
            delay = min(delay * 2, self.window)
        self._dropped(text, f"{why}, {self.tries} tries")

    def _dropped(self, text: str, why: str, bug: bool = False) -> None:
        """`bug`: the sender raised what it should not; the traceback goes to the log."""
        self.dropped += 1
        log.warning("dropped a chat message (%s): %r", why, text[:60], exc_info=bug)
