"""A planned EventSub reconnect that loses nothing: twitchio 3.3.2's reconnect, patched
narrowly, and the memory of message ids that lets a line heard on both sockets count once.
"""

from __future__ import annotations

import asyncio
import collections
import datetime
import logging
import time
from typing import Any

from twitchio.eventsub.websockets import Websocket

log = logging.getLogger("teletype.chat")


# --- a planned reconnect loses nothing (twitchio 3.3.2, patched narrowly) ---------------
#
# On `session_reconnect` twitchio opens the new socket from inside the old
# socket's reader and, once the new one is welcomed, closes the old one with
# its unread frames: Twitch sends on the old socket until the new one is
# welcomed, so a line sent in that moment was lost. Here the new socket is
# opened beside the old one, whose reader goes on; the old one is closed
# only after the new welcome and a moment of quiet on it. A line that comes
# on both is handled once (TeletypeBot.seen, by message id).

RECONNECT_DRAIN = 1.0  # seconds of quiet on the old socket before it is closed
RECONNECT_DRAIN_MAX = 10.0


async def _process_reconnect_keeping_the_old(self: Websocket, data: Any) -> None:
    url = data["payload"]["session"]["reconnect_url"]
    log.info("Twitch moves the chat session; reading the old one until the new is welcomed")
    task = asyncio.create_task(_reconnect_keeping_the_old(self, url), name="eventsub reconnect")
    self._connection_tasks.add(task)
    task.add_done_callback(self._connection_tasks.discard)


async def _reconnect_keeping_the_old(old: Websocket, url: str) -> None:
    new = Websocket(
        keep_alive_timeout=old._keep_alive_timeout,
        reconnect_attempts=old._original_attempts,
        client=old._client,
        token_for=old._token_for,
        http=old._http,
        shard_id=old._shard_id,
    )
    new._subscriptions = old._subscriptions
    try:
        await new.connect(url=url, reconnect=False, fail_once=True)
    except Exception:
        # As twitchio: a fresh connection for the old socket, and a resubscribe.
        return await old.connect(reconnect=True)
    client = old._client
    if client is not None:
        client._websockets[old._token_for][new.session_id] = new  # type: ignore[index]
    # The old socket goes on being read until it has been quiet a moment.
    old._closing = True
    started = time.monotonic()
    while old.connected and time.monotonic() - started < RECONNECT_DRAIN_MAX:
        heard = old._last_keepalive
        quiet = (datetime.datetime.now() - heard).total_seconds() if heard else RECONNECT_DRAIN
        if quiet >= RECONNECT_DRAIN:
            break
        await asyncio.sleep(RECONNECT_DRAIN - quiet)
    old._closing = False
    await old.close()


Websocket._process_reconnect = _process_reconnect_keeping_the_old  # type: ignore[method-assign]


class SeenMessages:
    """The ids of the last chat messages handled: a bounded memory for de-duplication."""

    def __init__(self, size: int = 1000):
        self._ids: collections.OrderedDict[str, None] = collections.OrderedDict()
        self.size = size

    def first_time(self, message_id: str) -> bool:
        if message_id in self._ids:
            return False
        self._ids[message_id] = None
        while len(self._ids) > self.size:
            self._ids.popitem(last=False)
        return True
