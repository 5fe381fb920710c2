"""The bridge's health: what systemd hears (READY, STATUS, WATCHDOG only while chat is
heard) and what the engine is told the bridge is doing, for its status and the paper.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from appliance import notify
from appliance.client import EngineClient
from appliance.errors import ApplianceError, EngineUnavailable

log = logging.getLogger("teletype.chat")


class Unhealthy(ApplianceError):
    """The bridge could not get back to a working subscription in time."""


class Health:
    """What systemd hears: READY once, STATUS with what the bridge is doing, and
    WATCHDOG pings only while `alive()` says chat is heard (or a sign-in waits).

    `alive` is the bot's own reading of what Twitch sent lately, asked at each
    ping: no flag that a stalled loop could leave standing."""

    def __init__(self) -> None:
        self.ready = False
        self.state = ""
        self.healthy = False
        self.alive: Callable[[], bool] | None = None

    def good(self, what: str) -> None:
        self._say(what, healthy=True)

    def bad(self, what: str) -> None:
        self._say(what, healthy=False)

    def _say(self, what: str, healthy: bool) -> None:
        self.healthy = healthy
        if not self.ready:
            notify.ready(what)
            self.ready = True
        if what != self.state:
            log.info("%s", what)
            notify.status(what)
            self.state = what

    def live(self) -> bool:
        try:
            return bool(self.alive and self.alive())
        except Exception:  # a reading that fails is no sign of life
            return False


# systemd wants a ping at least every half WatchdogSec. At exactly that pace, a
# bridge deaf from just after one ping to just after the next missed one went
# 1.5 WatchdogSec unfed, and one deaf for barely over half of it could be
# killed. A ping each tenth: a kill means nine tenths of WatchdogSec not hearing.
PINGS_PER_WATCHDOG = 10


async def pet_watchdog(health: Health) -> None:
    half = notify.watchdog_interval()
    if not half:
        return
    every = 2 * half / PINGS_PER_WATCHDOG
    while True:
        if health.live():
            notify.watchdog()
        await asyncio.sleep(every)


async def tell_the_engine(health: Health, engine: EngineClient, every: float = 2.0,
                           again_after: float = 20.0) -> None:  # fmt: skip
    """The bridge's state to the engine (its /v1/status and the paper's status block):
    on every change, and every 20 s for an engine that restarted meanwhile (sooner
    than the half minute a starting engine waits for it before printing its block)."""
    told, when = "", 0.0
    loop = asyncio.get_running_loop()
    while True:
        state = health.state
        if state and (state != told or loop.time() - when >= again_after):
            try:
                await engine.report_chat_state(state)
            except EngineUnavailable:
                pass  # the engine is restarting: again at the next turn
            except ApplianceError as e:  # refused (the blocklist): saying it again won't help
                log.warning("the engine would not take the bridge's state: %s", e)
                told, when = state, loop.time()
            else:
                told, when = state, loop.time()
        await asyncio.sleep(every)
