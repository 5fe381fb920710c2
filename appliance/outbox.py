"""Messages on their way to chat, within Twitch's limits.

Twitch allows a bot 20 messages in any 30 seconds (100 when it is a
moderator of the channel), drops a message identical to the one before it,
and answers 429 when we go too fast anyway. One sender task posts the
messages in order, waits for room in the window, skips a repeat, and backs
off and tries again on a 429.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable

from appliance.errors import RateLimited

log = logging.getLogger("teletype.chat")

WINDOW = 30.0  # seconds


class Outbox:
    def __init__(
        self,
        send: Callable[[str], Awaitable[bool]],
        per_window: int = 20,
        clock: Callable[[], float] = time.monotonic,
        max_waiting: int = 50,
        window: float = WINDOW,
    ):
        self.send = send
        self.per_window = per_window
        self.window = window
        self.clock = clock
        self.waiting: asyncio.Queue[str] = asyncio.Queue(maxsize=max_waiting)
        self.sent_at: deque[float] = deque()
        self.last_text = ""
        self.last_sent = -1e9
        self.sent = 0
        self.dropped = 0

    async def post(self, text: str) -> None:
        """Queue a message; when far behind, the oldest waiting one gives way."""
        if self.waiting.full():
            self.waiting.get_nowait()
            self.dropped += 1
            log.warning("chat is far behind: an old message was dropped")
        self.waiting.put_nowait(text)

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

    async def _send_with_retries(self, text: str, tries: int = 6) -> None:
        delay = 1.0
        for _ in range(tries):
            self.sent_at.append(self.clock())
            try:
                delivered = await self.send(text)
            except RateLimited as e:
                # A 429, or a message held back for a reason that passes (slow mode).
                why = str(e) or "too many messages"
                log.warning("Twitch says %s; trying again in %.0f s", why, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.window)
                continue
            except Exception as e:  # one message must not end the sender
                log.warning("could not post to chat: %s", e)
                return
            if delivered:
                self.last_text, self.last_sent = text, self.clock()
                self.sent += 1
            return
        log.warning("gave up posting after %d tries: %r", tries, text[:60])
