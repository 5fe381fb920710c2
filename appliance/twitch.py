"""`teletype chat` and `teletype twitch-login`: the bridge on Twitch, with twitchio 3.

The bot signs in as its own account (not the streamer's) with Twitch's
device-code flow, which needs no web server and no client secret: the Pi
shows a code, someone types it in at twitch.tv/activate on any phone. It
then reads chat through EventSub (a websocket) and posts with Helix, both
with the bot account's user token. appliance.chat decides what to do with
each message; appliance.outbox keeps what we post within Twitch's limits.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime
import logging
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import twitchio
from twitchio import eventsub
from twitchio.eventsub.websockets import Websocket
from twitchio.ext import commands
from twitchio.web import BaseAdapter

from appliance import notify
from appliance.chat import PREFIX, ChatBridge, Viewer
from appliance.client import EngineClient
from appliance.config import ChatConfig, Config
from appliance.errors import ApplianceError, ConfigError, EngineUnavailable
from appliance.logs import redact, secret
from appliance.outbox import Outbox, SendFailed, TryLater
from appliance.schema import PrintSource
from appliance.tokens import TokenError, TwitchTokens, load_tokens, save_tokens, token_path

log = logging.getLogger("teletype.chat")

# What the bot account grants: read chat, and send it as itself.
SCOPES = ("user:read:chat", "user:write:chat")


def _scopes() -> twitchio.Scopes:
    return twitchio.Scopes(list(SCOPES))


def check_chat_settings(config: Config, *, need_channel: bool = True) -> ChatConfig:
    chat = config.chat
    where = config.source
    if not chat.client_id:
        raise ConfigError(
            f"{where}: chat.client_id is not set: register an application at "
            "dev.twitch.tv/console (client type Public) and put its Client ID there"
        )
    if need_channel and not chat.channel:
        raise ConfigError(f"{where}: chat.channel is not set: the channel's login name")
    return chat


class TokenKeeper:
    """The bot's tokens on disk, saved at every change (refresh tokens work once)."""

    def __init__(self, path: Path, client_id: str):
        self.path = path
        self.client_id = client_id
        self.current: TwitchTokens | None = None

    def load(self) -> TwitchTokens:
        tokens = load_tokens(self.path)
        if tokens.client_id != self.client_id:
            raise TokenError(
                f"the tokens in {self.path} belong to another Twitch application than "
                "chat.client_id: run `teletype twitch-login` again"
            )
        self.current = tokens
        secret(tokens.token)
        secret(tokens.refresh)
        return tokens

    def forget(self) -> None:
        """Tokens Twitch refuses for good: gone, so that the next start signs in afresh."""
        self.path.unlink(missing_ok=True)
        self.current = None

    def store(self, user_id: str, login: str, token: str, refresh: str) -> None:
        secret(token)
        secret(refresh)
        self.current = TwitchTokens(user_id, login, token, refresh, self.client_id)
        save_tokens(self.path, self.current)


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


class Unhealthy(ApplianceError):
    """The bridge could not get back to a working subscription in time."""


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
            return await self._fail(_twitch_failure(e))
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
            failure = _twitch_failure(e)
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
            with contextlib.suppress(Exception):
                async with asyncio.timeout(5):
                    await ws.close()
            # twitchio 3.3 files a reconnected socket under its old session
            # id, and a close removes only the new one.
            table.pop(key, None)
        try:
            async with asyncio.timeout(self.call_timeout):
                await self._subscribe()
        except twitchio.HTTPException as e:
            failure = _twitch_failure(e)
            if isinstance(failure, TokensRefused):
                # authorization_revoked takes the tokens too: a new sign-in.
                return await self._fail(failure)
            log.warning("resubscribing failed: %s", failure)
        except Exception as e:  # a refused upgrade, a timeout, a reset: the next check retries
            log.warning("resubscribing failed: %s", _name(e))

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


def _twitch_failure(e: twitchio.HTTPException) -> BaseException:
    """A refused token (for good), or a transient error worth retrying."""
    if e.status in (400, 401, 403) and "token" in str(e.extra.get("message", "")).lower():
        return TokensRefused(f"Twitch refused the bot's token (HTTP {e.status})")
    return TransientTwitch(f"Twitch answered HTTP {e.status}")


class TransientTwitch(ApplianceError):
    """Twitch or the network had a bad moment: try again with backoff."""


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


def _viewer(chatter) -> Viewer:
    return Viewer(
        id=str(chatter.id),
        name=chatter.display_name or chatter.name or "someone",
        moderator=bool(chatter.moderator or chatter.broadcaster),
    )


# --- the commands ----------------------------------------------------------------


def engine_client(config: Config) -> EngineClient:
    if config.chat.engine:
        return EngineClient(url=config.chat.engine, token=config.engine.token)
    from appliance.paths import socket_path

    return EngineClient(socket_path(config))


async def run_bot(config: Config) -> None:
    """Run the bridge until cancelled (or the process is stopped).

    Signs the bot in from the Teletype when there are no tokens, or when
    Twitch refuses them for good; retries Twitch's bad moments with backoff;
    Unhealthy (exit 1, and systemd restarts us) when chat cannot be repaired.
    """
    from appliance.paths import state_dir

    settings = check_chat_settings(config)
    keeper = TokenKeeper(token_path(state_dir(config)), settings.client_id)
    engine = engine_client(config)
    health = Health()
    pinger = asyncio.create_task(_pet_watchdog(health), name="watchdog")
    reporter = asyncio.create_task(_tell_the_engine(health, engine), name="chat state")
    failures = 0
    broken_since: float | None = None
    try:
        while True:
            if not keeper.path.exists():
                await sign_in_on_paper(settings, keeper, engine, health)
            bot = TeletypeBot(settings, keeper, engine, health)
            try:
                await _run_once(bot)
            except TokensRefused as e:
                log.warning("%s: signing in again", e)
                health.bad("token refused: sign in again (a code follows on paper)")
                keeper.forget()
                continue
            except TransientTwitch as e:
                if bot.subscribed.is_set():
                    # It worked for a while: this is a new bad spell, not
                    # the same one going on.
                    failures, broken_since = 0, None
                failures += 1
                now = asyncio.get_running_loop().time()
                broken_since = now if broken_since is None else broken_since
                # Within the time the bot may spend repairing, and so well
                # before the unit's watchdog would kill us mid-sentence.
                if now - broken_since > TeletypeBot.repair_for:
                    raise Unhealthy(f"Twitch kept failing: {e}") from None
                wait = min(30, 2**failures)
                health.bad(f"reconnecting: {e}; again in {wait} s")
                await asyncio.sleep(wait)
            finally:
                await bot.close()
    finally:
        pinger.cancel()
        reporter.cancel()


async def _run_once(bot: TeletypeBot) -> None:
    """Log in with the saved tokens, subscribe, and run until something ends it."""
    try:
        async with asyncio.timeout(2 * bot.call_timeout):  # a check, and maybe a refresh
            flow = await bot.login_dcf(load_token=True, save_token=False)
    except twitchio.InvalidTokenException as e:
        # twitchio calls any failed check of a token invalid, a 503 too.
        if e.status == 429 or e.status >= 500:
            raise TransientTwitch(f"Twitch answered HTTP {e.status} to the token check") from None
        raise TokensRefused("Twitch refused the saved tokens and their refresh") from None
    except twitchio.HTTPException as e:
        raise _twitch_failure(e) from None
    except (aiohttp.ClientError, TimeoutError, OSError) as e:
        raise TransientTwitch(f"Twitch is not answering ({type(e).__name__})") from None
    if flow is not None:
        raise TokensRefused("the saved Twitch tokens no longer work")
    try:
        await bot.start_dcf(block=True)
    except twitchio.HTTPException as e:
        raise _twitch_failure(e) from None
    except Exception as e:  # a refused websocket, a timeout, a reset: all passing
        raise TransientTwitch(f"Twitch is not answering ({type(e).__name__})") from None
    if bot.failure is not None:
        raise bot.failure
    raise TransientTwitch("the connection to Twitch ended")


async def _pet_watchdog(health: Health) -> None:
    interval = notify.watchdog_interval()
    if not interval:
        return
    while True:
        if health.live():
            notify.watchdog()
        await asyncio.sleep(interval)


async def _tell_the_engine(health: Health, engine: EngineClient, every: float = 2.0,
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


async def sign_in_on_paper(
    settings: ChatConfig, keeper: TokenKeeper, engine: EngineClient, health: Health
) -> None:
    """The device-code flow, with the code printed on the Teletype, until someone signs in."""
    from appliance.signin import sign_in

    async def show(device) -> None:
        where = f"{device.url.split('?')[0]} and enter the code {device.code}"
        health.good(f"waiting for sign-in: open {where}")
        text = (
            "TO CONNECT THE TELETYPE TO TWITCH CHAT, SIGN IN AS THE BOT ACCOUNT "
            f"({settings.bot or 'the bot'}): OPEN {where}\n"
        )
        with contextlib.suppress(ApplianceError):  # away, or a full queue: the log has it
            # "system": the bridge never posts it in chat (the code is for us).
            await engine.print_text(text, source=PrintSource.SYSTEM)

    async def declined() -> None:
        with contextlib.suppress(ApplianceError):
            await engine.print_text("THE TWITCH SIGN-IN WAS DECLINED.\n", PrintSource.SYSTEM)

    # READY now, not once Twitch answers: a Pi's Wi-Fi may come up minutes
    # later, and systemd would kill a start that takes that long. The sign-in
    # loop cannot stall (each call has a timeout): alive while it waits.
    health.good("waiting for sign-in: asking Twitch for a code")
    health.alive = lambda: True
    while True:
        signed = await sign_in(settings.client_id, list(SCOPES), show, on_declined=declined)
        if settings.bot and signed.login.lower() != settings.bot.lower():
            message = (
                f"signed in as {signed.login}, but chat.bot is {settings.bot}: sign in as the "
                "bot account (log out of Twitch first, or use a private window)"
            )
            log.warning("%s", message)
            with contextlib.suppress(ApplianceError):
                await engine.print_text(message.upper() + "\n", source=PrintSource.SYSTEM)
            continue
        keeper.store(signed.user_id, signed.login, signed.token, signed.refresh)
        log.info("signed in to Twitch as %s", signed.login)
        health.alive = None  # from here on, the bot's reading of chat
        return


# The config error last said on paper, in the state directory: the retry
# timer starts a bridge that cannot read teletype.toml every 15 minutes, and
# the paper hears about each error once.
CONFIG_ERROR_SAID = "config-error-said"


def say_config_error(error: ConfigError) -> None:
    """A teletype.toml the bridge cannot read, said on paper as well as in the journal,
    once, if the engine is running (one started before the file broke: an engine
    reading the same broken file does not run, and says nothing either).

    The config names neither the engine's socket nor the state directory, so
    both are systemd's (or the defaults), as every unit finds them.
    """
    from appliance.paths import socket_path, state_dir

    defaults = Config()
    text = f"THE TWITCH CHAT BRIDGE DID NOT START: {error}"
    said = state_dir(defaults) / CONFIG_ERROR_SAID
    with contextlib.suppress(OSError):
        if said.read_text() == text:
            return
    engine = EngineClient(socket_path(defaults))

    async def tell() -> None:
        async with asyncio.timeout(10):
            await engine.print_text(text + "\n", source=PrintSource.SYSTEM)

    try:
        asyncio.run(tell())
    except (ApplianceError, TimeoutError, OSError) as e:
        log.info("could not say the config error on paper (%s)", _name(e))
        return
    else:
        with contextlib.suppress(OSError):
            said.parent.mkdir(parents=True, exist_ok=True)
            said.write_text(text)


def config_error_mended(config: Config) -> None:
    """teletype.toml reads again: the next error is news for the paper."""
    from appliance.paths import state_dir

    with contextlib.suppress(OSError):
        (state_dir(Config()) / CONFIG_ERROR_SAID).unlink(missing_ok=True)
        (state_dir(config) / CONFIG_ERROR_SAID).unlink(missing_ok=True)


def run_chat(config: Config) -> int:
    from appliance.logs import setup_logging

    setup_logging("teletype-chat")
    check_chat_settings(config)

    async def main() -> int:
        bot = asyncio.create_task(run_bot(config))
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, bot.cancel)
        try:
            await bot
        except asyncio.CancelledError:
            log.info("stopped")
        except Unhealthy as e:
            log.error("%s; exiting so that systemd starts the bridge afresh", e)
            return 1
        return 0

    return asyncio.run(main())


async def login(config: Config, show) -> TwitchTokens:
    """`teletype twitch-login`'s flow: show one code, wait for it, keep the tokens."""
    from appliance.paths import state_dir
    from appliance.signin import sign_in

    settings = check_chat_settings(config, need_channel=False)
    keeper = TokenKeeper(token_path(state_dir(config)), settings.client_id)

    async def shown(device) -> None:
        await show(device.url, device.code)

    signed = await sign_in(settings.client_id, list(SCOPES), shown, codes=1)
    if settings.bot and signed.login.lower() != settings.bot.lower():
        raise TokenError(
            f"signed in as {signed.login!r}, but chat.bot in {config.source} is "
            f"{settings.bot!r}: sign in as the bot account (log out of Twitch first, or use "
            "a private window), then run `teletype twitch-login` again"
        )
    keeper.store(signed.user_id, signed.login, signed.token, signed.refresh)
    assert keeper.current is not None
    return keeper.current


def run_login(config: Config) -> int:
    """`teletype twitch-login`: the code on the console and, if the engine runs, on paper."""
    engine = engine_client(config)

    async def show(url: str, code: str) -> None:
        text = f"To sign the Teletype's bot in to Twitch, open {url} and enter the code {code}"
        print(text, flush=True)
        # No engine running: the console is enough.
        with contextlib.suppress(ApplianceError):
            # "system": the bridge never posts it in chat (the code is for us).
            await engine.print_text(f"{text}\n", source=PrintSource.SYSTEM)

    async def main() -> TwitchTokens:
        return await login(config, show)

    tokens = asyncio.run(main())
    print(f"Signed in as {tokens.login}. The tokens are kept in the state directory.")
    return 0
