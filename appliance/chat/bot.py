"""The twitchio adapter: the bot that reads chat over EventSub and posts with Helix,
watches that it can still do both, and repairs what it can.

The bot signs in as its own account (not the streamer's). appliance.chat.bridge decides
what to do with each message; appliance.chat.outbox keeps what we post within Twitch's
limits. Where twitchio's private attributes are touched, a comment says why.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
from typing import Any

import aiohttp
import twitchio
from twitchio import eventsub
from twitchio.eventsub.websockets import Websocket
from twitchio.ext import commands
from twitchio.web import BaseAdapter

from appliance.chat.bridge import PREFIX, ChatBridge, Viewer
from appliance.chat.health import Health, Unhealthy
from appliance.chat.outbox import Outbox, SendFailed, TryLater
from appliance.chat.reconnect import SeenMessages
from appliance.chat.tokens import (
    TokenKeeper,
)
from appliance.client import EngineClient
from appliance.config import ChatConfig
from appliance.errors import ApplianceError, ConfigError
from appliance.logs import redact

log = logging.getLogger("teletype.chat")


# What the bot account grants: read chat, and send it as itself.
SCOPES = ("user:read:chat", "user:write:chat")


def _scopes() -> twitchio.Scopes:
    return twitchio.Scopes(list(SCOPES))


class _TokenFileMixin:
    """twitchio keeps tokens in ./.tio.tokens.json by default; ours go to the state dir."""

    keeper: TokenKeeper

    async def load_tokens(self, path: str | None = None, /) -> None:
        tokens = self.keeper.load()
        await self.add_token(tokens.token, tokens.refresh)

    async def save_tokens(self, path: str | None = None, /) -> None:
        pass  # saved at every change already (add_token, event_token_refreshed)

    async def add_token(self, token: str, refresh: str):
        validated = await super().add_token(token, refresh)  # type: ignore[misc]
        # add_token may have refreshed an expired token on the way in; then the
        # refreshed pair is saved already (event_token_refreshed) and the one
        # we were given is spent.
        held = self.tokens.get(validated.user_id) if validated.user_id else None  # type: ignore[attr-defined]
        if validated.user_id and (held is None or held["token"] == token):
            self.keeper.store(validated.user_id, validated.login or "", token, refresh)
        return validated

    async def event_token_refreshed(self, payload) -> None:
        login = self.keeper.current.login if self.keeper.current else ""
        self.keeper.store(payload.user_id, login, payload.token, payload.refresh_token)
        # twitchio 3.3.2: after a device-code login the user token also serves
        # as the "app" token, and a refresh updates only the former; without
        # this every later call would fail once, refresh again and retry.
        self._http._app_token = payload.token  # type: ignore[attr-defined]
        log.info("the Twitch token was refreshed and saved")


class _NoWebServer(BaseAdapter):
    """twitchio builds a web server for webhooks and OAuth redirects unless given an
    adapter; the bridge needs neither (EventSub over a websocket, device-code login)."""

    def __init__(self) -> None:
        self._runner_task = None
        self._running = False

    async def event_startup(self) -> None: ...
    async def event_shutdown(self) -> None: ...
    async def close(self, *args: Any, **kwargs: Any) -> None: ...
    async def run(self, host: str | None = None, port: int | None = None) -> None: ...
    async def eventsub_callback(self, request: Any) -> Any: ...
    async def fetch_token(self, request: Any) -> Any: ...
    async def oauth_callback(self, request: Any) -> Any: ...
    async def oauth_redirect(self, request: Any) -> Any: ...

    def eventsub_url(self) -> str:
        return ""

    def redirect_url(self) -> str:
        return ""


class TokensRefused(ApplianceError):
    """Twitch refuses the bot's tokens for good: it has to be signed in again."""


class TeletypeBot(_TokenFileMixin, commands.Bot):
    # How often the bridge checks that it can hear chat and speak in it, and
    # how long it may try to repair before it gives up (systemd restarts it;
    # the unit's WatchdogSec= is the backstop for a wedged process).
    check_every = 15.0
    ask_twitch_every = 4  # of those checks, one asks Twitch itself (a Helix call)
    repair_for = 90.0
    # Every call to Twitch ends within this, well inside WatchdogSec=180
    # (twitchio's own HTTP session waits up to aiohttp's 300 s).
    call_timeout = 30.0
    # Twitch asks for a token check at start (login does it) and hourly.
    validate_every = 3600.0
    # Twitch sends a keepalive when nothing else was sent for the session's
    # keepalive_timeout_seconds; a little more silence than that is a dead path.
    silence_grace = 5.0

    def __init__(
        self, settings: ChatConfig, keeper: TokenKeeper, engine: EngineClient, health: Health
    ):
        tokens = keeper.load()
        super().__init__(
            client_id=settings.client_id,
            client_secret=None,
            bot_id=tokens.user_id,
            prefix=PREFIX,
            scopes=_scopes(),
            adapter=_NoWebServer(),
        )
        self.keeper = keeper
        self.settings = settings
        self.engine = engine
        self.health = health
        self.outbox = Outbox(self._send, 100 if settings.bot_is_moderator else 20)
        self.bridge = ChatBridge(engine, settings, self.outbox.post)
        self.channel: twitchio.PartialUser | None = None
        self.subscribed = asyncio.Event()
        # Whether Twitch holds our subscription as enabled, as far as we know:
        # set by a subscribe Twitch accepted or by its list, cleared by a
        # revocation or a list without it. Liveness needs it and fresh traffic.
        self.enabled = False
        self.failure: BaseException | None = None  # why run() ended, for the supervisor
        self.seen = SeenMessages()
        self._tasks: list[asyncio.Task] = []
        self._sender: aiohttp.ClientSession | None = None

    async def event_ready(self) -> None:
        # After start_dcf: the bot's token is loaded (and refreshed if it had
        # to be), so Helix calls work from here on. Any failure here ends the
        # run (and the supervisor retries): never a bot with no health task.
        self._take_over_token_checks()
        try:
            async with asyncio.timeout(self.call_timeout):
                users = await self.fetch_users(logins=[self.settings.channel.lower()])
            if not users:
                return await self._fail(
                    ConfigError(
                        f"chat.channel: Twitch has no channel named {self.settings.channel!r}"
                    )
                )
            self.channel = users[0]
            async with asyncio.timeout(self.call_timeout):
                await self._subscribe()
        except twitchio.HTTPException as e:
            return await self._fail(twitch_failure(e))
        except Exception as e:  # a refused websocket, a timeout, a reset: all passing
            return await self._fail(TransientTwitch(f"Twitch is not answering ({_name(e)})"))
        self.health.alive = self.hearing
        self._tasks = [
            asyncio.create_task(self.outbox.run(), name="outbox"),
            asyncio.create_task(self.bridge.follow_engine(), name="engine-events"),
            asyncio.create_task(self._keep_healthy(), name="health"),
            asyncio.create_task(self._keep_tokens(), name="token checks"),
        ]

    async def _subscribe(self) -> None:
        assert self.channel is not None
        try:
            await self.subscribe_websocket(
                eventsub.ChatMessageSubscription(
                    broadcaster_user_id=self.channel.id, user_id=self.bot_id
                ),
                token_for=self.bot_id,
            )
        except twitchio.HTTPException as e:
            if e.status != 409:
                raise
            # Twitch still holds it on a socket of ours: the session is fine.
        self.enabled = True
        self.subscribed.set()
        self.health.good(f"subscribed to #{self.channel.name} as {self.bot_login}")

    async def _fail(self, why: BaseException) -> None:
        self.failure = why
        await self.close()

    # --- health ----------------------------------------------------------------------

    def _sockets(self) -> list[Websocket]:
        return list(self._websockets.get(self.bot_id, {}).values())  # type: ignore[attr-defined]

    def _live_sockets(self) -> list[Websocket]:
        """Open sockets holding our subscription on which Twitch spoke lately.

        Twitch sends a notification or a keepalive at least every
        keepalive_timeout_seconds; twitchio stamps each frame it reads.
        """
        now = datetime.datetime.now()
        live = []
        for ws in self._sockets():
            heard = ws._last_keepalive
            if not (ws.connected and ws.subscription_count and heard):
                continue
            if (now - heard).total_seconds() <= ws.keep_alive_timeout + self.silence_grace:
                live.append(ws)
        return live

    def hearing(self) -> bool:
        """Liveness for the watchdog: EventSub traffic lately, on an enabled subscription.

        Nothing a loop sets: what Twitch sent, read when systemd is to be told.
        """
        return self.enabled and bool(self._live_sockets()) and self._token_ok()

    def _reconnecting(self) -> bool:
        """twitchio has a new connection for a socket and subscribes again on it itself.

        (While its handshake hangs, nothing is subscribed there, and a repair loses
        nothing: repaired at once, as before.)"""
        return any(ws._connecting and ws.connected for ws in self._sockets())

    def _token_ok(self) -> bool:
        # A refused refresh drops the token from twitchio's table.
        return self.bot_id in self._http._tokens  # type: ignore[attr-defined]

    async def _twitch_agrees(self) -> bool:
        """Twitch lists our subscription as enabled (and the token works for it)."""
        subs = await self.fetch_eventsub_subscriptions(
            token_for=self.bot_id, type="channel.chat.message"
        )
        async for sub in subs.subscriptions:
            if sub.status == "enabled" and sub.condition.get("user_id") == self.bot_id:
                return True
        return False

    async def _keep_healthy(self) -> None:
        checks = 0
        broken_since: float | None = None
        while True:
            await asyncio.sleep(self.check_every)
            checks += 1
            try:
                async with asyncio.timeout(self.call_timeout):
                    problem = await self._problem(ask_twitch=checks % self.ask_twitch_every == 0)
            except Exception as e:  # whatever it was, it is a reason to repair
                problem = f"the health check failed ({_name(e)})"
            if problem is None:
                if broken_since is not None:
                    log.info("chat works again")
                broken_since = None
                self.health.good(f"subscribed to #{self.channel.name} as {self.bot_login}")
                continue
            if isinstance(problem, TokensRefused):
                return await self._fail(problem)
            loop_time = asyncio.get_running_loop().time()
            broken_since = broken_since if broken_since is not None else loop_time
            self.health.bad(f"reconnecting: {problem}")
            if loop_time - broken_since > self.repair_for:
                return await self._fail(Unhealthy(f"could not repair the chat link: {problem}"))
            if self._reconnecting() and loop_time - broken_since < self.call_timeout:
                # twitchio is subscribing again on a new socket after a close or a
                # reset: a repair now would close that socket under the subscription
                # Twitch is making, and lose what Twitch delivers there. One that is
                # still at it after a call's time is stuck (twitchio leaves it so
                # when its connect fails midway): repaired then.
                continue
            await self._repair()

    async def _problem(self, ask_twitch: bool) -> BaseException | str | None:
        if not self._token_ok():
            return TokensRefused("Twitch refused the bot's token and its refresh")
        if not self.enabled:
            return "Twitch does not hold the chat subscription"
        if not self._live_sockets():
            return "no EventSub traffic on a session that holds the chat subscription"
        if not ask_twitch:
            return None
        try:
            agrees = await self._twitch_agrees()
        except twitchio.HTTPException as e:
            failure = twitch_failure(e)
            return failure if isinstance(failure, TokensRefused) else str(failure)
        if not agrees:
            self.enabled = False
            return "Twitch has no enabled chat subscription for us"
        return None

    async def _repair(self) -> None:
        """Subscribe again, on a new session: twitchio opens one when it has none.

        Sockets that are closed, or open but silent, are closed and
        forgotten: a silent one may be a dead network path twitchio has not
        noticed yet, and the next subscription would land on it.
        """
        live = self._live_sockets()
        table = self._websockets.get(self.bot_id, {})  # type: ignore[attr-defined]
        for key, ws in list(table.items()):
            if ws in live:
                continue
            await self._discard(ws)
            # twitchio 3.3 files a reconnected socket under its old session
            # id, and a close removes only the new one.
            table.pop(key, None)
        try:
            async with asyncio.timeout(self.call_timeout):
                await self._subscribe()
        except twitchio.HTTPException as e:
            failure = twitch_failure(e)
            if isinstance(failure, TokensRefused):
                # authorization_revoked takes the tokens too: a new sign-in.
                return await self._fail(failure)
            log.warning("resubscribing failed: %s", failure)
        except Exception as e:  # a refused upgrade, a timeout, a reset: the next check retries
            log.warning("resubscribing failed: %s", _name(e))

    async def _discard(self, ws: Websocket) -> None:
        """Close a socket for good. twitchio's own reconnect of it is stopped first: its
        close() leaves that task running, and a handshake that came through later
        subscribed a socket no one held, whose lines went to a bot that could be gone."""
        connecting = list(ws._connection_tasks)  # type: ignore[attr-defined]
        for task in connecting:
            task.cancel()
        await asyncio.gather(*connecting, return_exceptions=True)
        with contextlib.suppress(Exception):
            async with asyncio.timeout(5):
                await ws.close()

    # --- tokens ----------------------------------------------------------------------

    def _take_over_token_checks(self) -> None:
        """twitchio's validation loop ends for good on a timeout or a dropped
        connection (3.3.2 catches only some errors); ours replaces it."""
        task = getattr(self._http, "_validate_task", None)
        if task is not None:
            task.cancel()

    async def _keep_tokens(self) -> None:
        """Validate the bot's token hourly (Twitch requires it), refreshing it when it
        runs short; a failed check is retried with backoff, and a refusal for good
        ends the run (a new sign-in), as does a check that fails for too long."""
        failing_since: float | None = None
        wait = self.validate_every
        while True:
            await asyncio.sleep(wait)
            try:
                async with asyncio.timeout(self.call_timeout):
                    await self._check_token()
            except TokensRefused as e:
                return await self._fail(e)
            except Exception as e:  # network, 5xx, timeouts: try again soon
                now = asyncio.get_running_loop().time()
                failing_since = now if failing_since is None else failing_since
                if now - failing_since > self.repair_for:
                    return await self._fail(
                        Unhealthy(f"Twitch would not check the bot's token ({_name(e)})")
                    )
                wait = min(self.validate_every, 5.0 * 2 ** min(6, round(now - failing_since) // 5))
                log.warning(
                    "checking the Twitch token failed (%s); again in %.0f s", _name(e), wait
                )
                continue
            failing_since, wait = None, self.validate_every

    async def _check_token(self) -> None:
        held = self._http._tokens.get(self.bot_id)  # type: ignore[attr-defined]
        if held is None:
            raise TokensRefused("Twitch refused the bot's token and its refresh")
        session = self._http_session()
        async with session.get(
            _id_base() + "oauth2/validate", headers={"Authorization": f"OAuth {held['token']}"}
        ) as r:
            body = await r.json(content_type=None) if r.status == 200 else {}
            status = r.status
        if status >= 500 or status == 429:
            raise TransientTwitch(f"Twitch answered HTTP {status} to the token check")
        if status == 200 and int(body.get("expires_in", 0)) > self.validate_every + 300:
            return
        # Invalid (401) or running short: refresh it (twitchio saves nothing;
        # event_token_refreshed keeps the new pair on disk).
        await self._http._refresh_token(self.bot_id, held["refresh"])  # type: ignore[attr-defined]
        if not self._token_ok():
            raise TokensRefused("Twitch refused the bot's token and its refresh")

    def _http_session(self) -> aiohttp.ClientSession:
        if self._sender is None or self._sender.closed:
            self._sender = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.call_timeout)
            )
        return self._sender

    # --- chat ------------------------------------------------------------------------

    async def event_message(self, payload: twitchio.ChatMessage) -> None:
        if payload.chatter.id == self.bot_id:
            return  # our own posts come back to us as chat
        source = payload.source_broadcaster
        if source is not None and self.channel is not None and source.id != self.channel.id:
            # Shared chat: a line from another channel's room. Twitch may name
            # the channel itself as the source of its own lines: those count.
            return
        if not self.seen.first_time(payload.id):
            return  # Twitch delivers at least once: a repeat of one handled
        # Commands and chat lines alike: the bridge tells them apart.
        await self.bridge.on_message(_viewer(payload.chatter), payload.text)

    async def event_subscription_revoked(self, payload) -> None:
        log.warning("Twitch revoked the chat subscription (%s)", payload.status)
        self.enabled = False
        self.health.bad(f"reconnecting: the subscription was revoked ({payload.status})")

    async def _send(self, text: str) -> bool:
        """Send Chat Message with the bot's token; through a refresh, and with
        Twitch's Ratelimit-Reset when it says 429."""
        assert self.channel is not None
        for attempt in range(2):
            held = self._http._tokens.get(self.bot_id)  # type: ignore[attr-defined]
            if held is None:
                raise SendFailed("the bot's token was refused")
            body = {"broadcaster_id": self.channel.id, "sender_id": self.bot_id, "message": text}
            headers = {
                "Authorization": f"Bearer {held['token']}",
                "Client-Id": self.settings.client_id,
            }
            try:
                async with self._http_session().post(
                    _helix_base() + "chat/messages", json=body, headers=headers
                ) as r:
                    status, reset = r.status, r.headers.get("Ratelimit-Reset")
                    answer = await r.json(content_type=None) if status < 500 else {}
            except (aiohttp.ClientError, TimeoutError, OSError) as e:
                raise SendFailed(f"Twitch is not answering ({_name(e)})", transient=True) from None
            if status == 401 and attempt == 0:
                # An expired token: refreshed, and the same message sent again.
                try:
                    async with asyncio.timeout(self.call_timeout):
                        await self._http._refresh_token(self.bot_id, held["refresh"])  # type: ignore[attr-defined]
                except Exception as e:
                    why = f"the token refresh failed ({_name(e)})"
                    raise SendFailed(why, transient=True) from None
                continue
            if status == 429:
                raise TryLater("too many requests (429)", retry_at=_epoch(reset))
            if status >= 500:
                raise SendFailed(f"Twitch answered HTTP {status}", transient=True)
            if status != 200:
                raise SendFailed(f"Twitch refused the message (HTTP {status}: "
                                 f"{answer.get('message', '')})")  # fmt: skip
            sent = (answer.get("data") or [{}])[0]
            if not sent.get("is_sent"):
                reason = sent.get("drop_reason") or {}
                return _dropped(text, reason.get("code"), reason.get("message"))
            return True
        raise SendFailed("the refreshed token was refused too")

    @property
    def bot_login(self) -> str:
        return self.keeper.current.login if self.keeper.current else self.bot_id

    async def close(self, **options: Any) -> None:
        self.health.alive = None
        for task in self._tasks:
            if task is not asyncio.current_task():
                task.cancel()
        await asyncio.gather(
            *(t for t in self._tasks if t is not asyncio.current_task()), return_exceptions=True
        )
        await self.bridge.close()
        if self._sender is not None:
            await self._sender.close()
        # twitchio's close leaves a reconnect under way running (see _discard).
        await asyncio.gather(*(self._discard(ws) for ws in self._sockets()))
        await super().close(**options)


def _name(e: BaseException) -> str:
    return type(e).__name__


def _id_base() -> str:
    from twitchio.http import Route

    return Route.ID_BASE


def _helix_base() -> str:
    from twitchio.http import Route

    return Route.BASE


def _epoch(value: str | None) -> float | None:
    """Ratelimit-Reset: the Unix time at which the bucket is full again."""
    try:
        return float(value) if value else None
    except ValueError:
        return None


# Twitch's drop reasons for Send Chat Message. Some pass with time (slow mode,
# a duplicate of a recent message, a timeout of the bot): the outbox tries
# again later. The others are the room's rules against the bot account
# (followers-only, subscribers-only, a verified e-mail or phone): the README
# says how to fix them; making the bot a moderator lifts most of them.
RETRY_LATER = {"msg_slowmode", "msg_duplicate", "msg_ratelimit", "msg_timedout", "msg_suspended"}


class DroppedForNow(TryLater):
    """Twitch dropped a message for a reason that passes: try it again later."""


def _dropped(text: str, code: str | None, message: str | None) -> bool:
    said = _shortened(redact(text))
    if code in RETRY_LATER:
        log.info("Twitch held our message %r back (%s); trying again shortly", said, code)
        raise DroppedForNow(code or "")
    log.warning(
        "Twitch dropped our message %r (%s: %s); making the bot a moderator of the channel "
        "lifts most room rules",
        said,
        code or "no reason given",
        message or "",
    )
    return False


def _shortened(text: str, most: int = 60) -> str:
    """Enough of a message to know it again in the journal (replies run to 500)."""
    text = " ".join(text.split())
    return text if len(text) <= most else text[: most - 3] + "..."


def twitch_failure(e: twitchio.HTTPException) -> BaseException:
    """A refused token (for good), or a transient error worth retrying."""
    if e.status in (400, 401, 403) and "token" in str(e.extra.get("message", "")).lower():
        return TokensRefused(f"Twitch refused the bot's token (HTTP {e.status})")
    return TransientTwitch(f"Twitch answered HTTP {e.status}")


class TransientTwitch(ApplianceError):
    """Twitch or the network had a bad moment: try again with backoff."""


def _viewer(chatter) -> Viewer:
    return Viewer(
        id=str(chatter.id),
        name=chatter.display_name or chatter.name or "someone",
        moderator=bool(chatter.moderator or chatter.broadcaster),
    )
