"""What the chat bridge does with a chat message: the rules, apart from Twitch itself.

Chat lines go to the engine's history (and, while the printer has time, onto
the paper); `!gpt2` asks the engine for a reply and posts it; the cooldowns,
the queue and ETA answers, moderator-only commands and the "Teletype is
offline" notice live here. appliance.chat.service connects this to Twitch;
everything it posts goes through `post`, which keeps to Twitch's limits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from appliance.client import EngineClient
from appliance.config import ChatConfig
from appliance.errors import (
    BellTooSoon,
    Blocked,
    EngineRefused,
    EngineUnavailable,
    NoSuchJob,
    QueueFull,
    ShuttingDown,
    TooLong,
)
from appliance.schema import JobOut, JobStatus, PrintSource, Source

log = logging.getLogger("teletype.chat")

PREFIX = "!"
HELP = (
    "I print on a real Teletype. !gpt2 [words]: the Teletype replies to the last chat "
    "lines. !bell: ring its bell. Moderators: !stop ends the print, !clear forgets the chat."
)
OFFLINE = "The Teletype is offline right now; I will be back when it is."
# Sources of jobs whose text is posted when chat.post_button_results is on
# (not our own replies, which are posted as answers, nor printed chat lines).
ELSEWHERE = {Source.BUTTON, Source.PANEL, Source.API, Source.KEYBOARD}


@dataclass(frozen=True)
class Viewer:
    id: str
    name: str  # as shown in chat
    moderator: bool = False  # or the broadcaster: may !stop and !clear


def fit_for_chat(text: str, limit: int = 500) -> str:
    """One line of at most `limit` characters, cut at a sentence end if one fits.

    The Teletype's line breaks become spaces. Failing a sentence end, the
    cut is at a word, marked with "...".
    """
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    ends = [m.end() for m in re.finditer(r"[.!?](?=\s|$)", text[: limit + 1]) if m.end() <= limit]
    if ends and ends[-1] >= limit // 3:
        return text[: ends[-1]]
    cut = text.rfind(" ", 0, limit - 2)
    return (text[:cut] if cut > 0 else text[: limit - 3]) + "..."


class Cooldowns:
    """When each key (a viewer, or "*" for everyone) may act again; and whom we told."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self._until: dict[str, float] = {}
        self._told: set[str] = set()

    def hold(self, keys: list[str]) -> dict[str, float]:
        """The keys' current ends, to restore if what started them came to nothing."""
        return {key: self._until.get(key, 0.0) for key in keys}

    def restore(self, held: dict[str, float]) -> None:
        self._until.update(held)

    def until(self, key: str) -> float:
        return self._until.get(key, 0.0)

    def remaining(self, key: str) -> float:
        return max(0.0, self.until(key) - self.clock())

    def start(self, key: str, seconds: float) -> None:
        if seconds > 0:
            self._until[key] = self.clock() + seconds

    def tell_once(self, what: str) -> bool:
        """True the first time for `what`: answer once, then stay quiet."""
        if what in self._told:
            return False
        if len(self._told) > 10_000:  # a long stream: forget old answers
            self._told.clear()
        self._told.add(what)
        return True


class ChatBridge:
    def __init__(
        self,
        engine: EngineClient,
        settings: ChatConfig,
        post: Callable[[str], Awaitable[None]],
        clock: Callable[[], float] = time.monotonic,
    ):
        self.engine = engine
        self.settings = settings
        self.post = post
        self.cooldowns = Cooldowns(clock)
        self.offline = False
        self._said_offline = False
        # Chat lines that arrived while the engine was away, sent when it is back.
        self._unsent: deque[tuple[str, str]] = deque(maxlen=20)
        self._tasks: set[asyncio.Task] = set()

    # --- a chat message ----------------------------------------------------------

    async def on_message(self, viewer: Viewer, text: str) -> None:
        if text.startswith(PREFIX):
            word, _, rest = text[len(PREFIX) :].partition(" ")
            handler = self._commands().get(word)  # as twitchio's: case matters
            if handler is not None:
                await handler(viewer, rest.strip())
            # Other bots' commands (!uptime, !so) are not conversation: skipped.
            return
        await self._chat_line(viewer.name, text)

    def _commands(self):
        return {
            "gpt2": self.gpt2,
            "stop": self.stop,
            "clear": self.clear,
            "bell": self.bell,
            "help": self.help,
        }

    async def _chat_line(self, name: str, text: str) -> bool:
        """False if the engine is away (the line waits for it)."""
        if not text.strip():
            return True
        try:
            kept = await self.engine.add_history(name, text)
        except EngineUnavailable:
            self._went_offline()
            self._unsent.append((name, text))
            return False
        except Blocked as e:
            log.info("a chat line from %s was refused: %s", name, e)
            return True
        except (EngineRefused, ShuttingDown) as e:
            log.warning("the engine refused a chat line: %s", e)
            return True
        if self.settings.print_chat:
            # The engine cleans the line (one line, 300 characters at most).
            line = f"{kept.name}: {kept.text}"
            try:
                await self.engine.print_text(line, PrintSource.CHAT_LINE, low_priority=True)
            except QueueFull:
                log.info("printer busy: %s's line went to the history only", name)
            except (EngineUnavailable, Blocked, TooLong, ShuttingDown, EngineRefused):
                pass  # in the history: the reply still hears it
        return True

    # --- commands ------------------------------------------------------------------

    async def gpt2(self, viewer: Viewer, extra: str) -> None:
        if self.offline:
            await self._say_offline()
            return
        wait = max(self.cooldowns.remaining("*"), self.cooldowns.remaining(viewer.id))
        if wait:
            # Once per viewer and cooldown: a viewer who keeps trying is not
            # answered again until a new cooldown begins.
            until = max(self.cooldowns.until("*"), self.cooldowns.until(viewer.id))
            if self.cooldowns.tell_once(f"rest:{viewer.id}:{until}"):
                await self.post(
                    f"@{viewer.name} the Teletype needs a rest: try again in "
                    f"{max(1, round(wait))} s."
                )
            return
        # Taken before asking the engine: each chat message runs in its own
        # task, and a burst of !gpt2 must not all pass while the first waits.
        # Given back if the engine takes nothing.
        held = self.cooldowns.hold([viewer.id, "*"])
        self.cooldowns.start(viewer.id, self.settings.user_cooldown)
        self.cooldowns.start("*", self.settings.global_cooldown)
        try:
            job = await self.engine.request_reply(extra, source=Source.CHAT)
        except EngineUnavailable:
            self.cooldowns.restore(held)
            self._went_offline()
            await self._say_offline()
            return
        except QueueFull as e:
            self.cooldowns.restore(held)
            await self.post(f"@{viewer.name} the queue is full: {e}.")
            return
        except (TooLong, ShuttingDown, EngineRefused) as e:
            self.cooldowns.restore(held)
            log.warning("the engine would not take a reply: %s", e)
            return
        if job.position > 1 or job.printer_busy:
            seconds = max(1, round(job.starts_in_seconds))
            await self.post(
                f"@{viewer.name} you are number {job.position} in the queue, "
                f"about {seconds} s until the Teletype gets to you."
            )
        self._spawn(self._post_reply(viewer, job.id))

    async def _post_reply(self, viewer: Viewer, job_id: int) -> None:
        job = await self._wait_for_job(job_id)
        if job is None:
            return
        if job.status == JobStatus.DONE and job.text.strip():
            limit = self.settings.reply_chars - len(viewer.name) - 2
            await self.post(f"@{viewer.name} {fit_for_chat(job.text, limit)}")
        elif job.status == JobStatus.WITHHELD:
            await self.post(f"@{viewer.name} the Teletype had nothing it could print; try again.")
        elif job.status == JobStatus.CANCELLED:
            await self.post(f"@{viewer.name} your print was stopped.")
        elif job.status == JobStatus.INTERRUPTED:
            await self.post(f"@{viewer.name} the Teletype restarted during your print; try again.")
        elif job.status == JobStatus.FAILED:
            await self.post(f"@{viewer.name} sorry, the Teletype's generator failed.")

    async def _wait_for_job(self, job_id: int) -> JobOut | None:
        """The job once it has ended; None if it is gone (the engine restarted)."""
        while True:
            try:
                job = await self.engine.job(job_id, wait=60)
            except EngineUnavailable:
                self._went_offline()
                await asyncio.sleep(2.0)
                continue
            except ShuttingDown:
                # The engine is stopping; the job waits in its journal and
                # the next engine runs it.
                await asyncio.sleep(2.0)
                continue
            except (NoSuchJob, EngineRefused):
                # Not a job the engine knows (its journal keeps the last ones across
                # restarts; ids never repeat, so another job cannot answer to this one).
                return None
            if job.source != Source.CHAT:
                return None
            if job.is_finished:
                return job

    async def stop(self, viewer: Viewer, _: str) -> None:
        if not await self._moderator_only(viewer, "stop the print"):
            return
        with contextlib.suppress(EngineUnavailable):
            if not await self.engine.cancel():
                await self.post(f"@{viewer.name} nothing is printing.")

    async def clear(self, viewer: Viewer, _: str) -> None:
        if not await self._moderator_only(viewer, "clear the chat history"):
            return
        try:
            await self.engine.clear_history()
        except EngineUnavailable:
            await self._say_offline()
            return
        self._unsent.clear()
        await self.post(f"@{viewer.name} the Teletype has forgotten the chat.")

    async def bell(self, viewer: Viewer, _: str) -> None:
        key = f"bell:{viewer.id}"
        if self.cooldowns.remaining(key):
            return  # the bell is a toy: no lecture for ringing it twice
        try:
            await self.engine.bell()
        except EngineUnavailable:
            self._went_offline()
            await self._say_offline()
            return
        except BellTooSoon:
            retry = round(self.cooldowns.clock() / max(1, self.settings.bell_cooldown))
            if self.cooldowns.tell_once(f"bell-busy:{retry}"):
                await self.post(f"@{viewer.name} the bell rang a moment ago.")
        else:
            self.cooldowns.start(key, self.settings.bell_cooldown)

    async def help(self, viewer: Viewer, _: str) -> None:
        if self.cooldowns.remaining("help"):
            return
        self.cooldowns.start("help", 30)
        await self.post(HELP)

    async def _moderator_only(self, viewer: Viewer, what: str) -> bool:
        if viewer.moderator:
            return True
        if self.cooldowns.tell_once(f"mod:{viewer.id}:{what}"):
            await self.post(f"@{viewer.name} only moderators can {what}.")
        return False

    # --- the engine coming and going ---------------------------------------------

    def _went_offline(self) -> None:
        if not self.offline:
            log.warning("the engine is not answering; retrying quietly")
        self.offline = True

    async def _say_offline(self) -> None:
        if not self._said_offline:
            self._said_offline = True
            await self.post(OFFLINE)

    async def _back_online(self) -> None:
        if self.offline:
            log.info("the engine is back")
        self.offline = False
        self._said_offline = False
        while self._unsent:
            name, text = self._unsent.popleft()
            if not await self._chat_line(name, text):
                return  # away again: the line is back in _unsent for next time

    async def follow_engine(self) -> None:
        """Watch the engine's events for as long as the bridge runs.

        They say when the engine is there (connected) or not, and carry the
        text of jobs started elsewhere (the button), to post in chat.
        """
        while True:
            try:
                async for kind, data in self.engine.events():
                    if kind == "connected":
                        await self._back_online()
                    elif kind == "finished":
                        await self._posted_elsewhere(data)
            except EngineUnavailable:
                self._went_offline()
            except Exception:  # the watch must outlive any one odd event
                log.exception("while following the engine's events")
            await asyncio.sleep(2.0)

    async def _posted_elsewhere(self, job: dict) -> None:
        if not self.settings.post_button_results or job.get("source") not in ELSEWHERE:
            return
        if job.get("status") == JobStatus.DONE and job.get("print") and job.get("text", "").strip():
            await self.post(fit_for_chat(job["text"], self.settings.reply_chars))

    def _spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
