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
import contextlib
import logging
import signal
from pathlib import Path
from typing import Any

import twitchio
from twitchio import eventsub
from twitchio.ext import commands
from twitchio.web import BaseAdapter

from appliance import notify
from appliance.chat import PREFIX, ChatBridge, Viewer
from appliance.client import EngineClient, EngineUnavailable
from appliance.config import ChatConfig, Config
from appliance.errors import ConfigError, RateLimited
from appliance.outbox import Outbox
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
        return tokens

    def store(self, user_id: str, login: str, token: str, refresh: str) -> None:
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


class TeletypeBot(_TokenFileMixin, commands.Bot):
    def __init__(self, settings: ChatConfig, keeper: TokenKeeper, engine: EngineClient):
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
        self.outbox = Outbox(self._send, 100 if settings.bot_is_moderator else 20)
        self.bridge = ChatBridge(engine, settings, self.outbox.post)
        self.channel: twitchio.PartialUser | None = None
        self.subscribed = asyncio.Event()
        self._tasks: list[asyncio.Task] = []

    async def event_ready(self) -> None:
        # After start_dcf: the bot's token is loaded (and refreshed if it had
        # to be), so Helix calls work from here on.
        users = await self.fetch_users(logins=[self.settings.channel.lower()])
        if not users:
            log.error("chat.channel: Twitch has no channel named %r", self.settings.channel)
            await self.close()
            return
        self.channel = users[0]
        await self.subscribe_websocket(
            eventsub.ChatMessageSubscription(
                broadcaster_user_id=self.channel.id, user_id=self.bot_id
            ),
            token_for=self.bot_id,
        )
        self.subscribed.set()
        where = f"reading chat in #{self.channel.name} as {self.bot_login}"
        log.info("%s", where)
        notify.ready(where)
        self._tasks = [
            asyncio.create_task(self.outbox.run(), name="outbox"),
            asyncio.create_task(self.bridge.follow_engine(), name="engine-events"),
        ]

    async def event_message(self, payload: twitchio.ChatMessage) -> None:
        if payload.chatter.id == self.bot_id:
            return  # our own posts come back to us as chat
        # Commands and chat lines alike: the bridge tells them apart.
        await self.bridge.on_message(_viewer(payload.chatter), payload.text)

    async def _send(self, text: str) -> bool:
        assert self.channel is not None
        try:
            sent = await self.channel.send_message(text, sender=self.bot_id, token_for=self.bot_id)
        except twitchio.MessageRejectedError as e:
            # Twitch's own filters (AutoMod, a duplicate, a followers-only room).
            log.warning("Twitch dropped our message: %s", e)
            return False
        except twitchio.HTTPException as e:
            if e.status == 429:
                raise RateLimited() from e
            raise
        return sent.sent

    @property
    def bot_login(self) -> str:
        return self.keeper.current.login if self.keeper.current else self.bot_id

    async def close(self, **options: Any) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.bridge.close()
        await super().close(**options)


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
    """Run the bridge until cancelled (or the process is stopped)."""
    from appliance.paths import state_dir

    settings = check_chat_settings(config)
    keeper = TokenKeeper(token_path(state_dir(config)), settings.client_id)
    bot = TeletypeBot(settings, keeper, engine_client(config))
    try:
        try:
            flow = await bot.login_dcf(load_token=True, save_token=False)
        except twitchio.InvalidTokenException:
            # twitchio's message carries the token itself: not for the journal.
            raise TokenError(
                "Twitch refused the saved tokens and their refresh: "
                "run `teletype twitch-login` again"
            ) from None
        except twitchio.HTTPException as e:
            if e.status not in (400, 401, 403):
                raise  # Twitch or the network: exit 1, and systemd tries again
            raise TokenError(
                f"Twitch refused the saved tokens (HTTP {e.status}): "
                "run `teletype twitch-login` again"
            ) from None
        if flow is not None:
            raise TokenError("the saved Twitch tokens no longer work: run `teletype twitch-login`")
        await bot.start_dcf(block=True)
    finally:
        await bot.close()


def run_chat(config: Config) -> int:
    from appliance.logs import setup_logging

    setup_logging("teletype-chat")
    check_chat_settings(config)

    async def main() -> None:
        bot = asyncio.create_task(run_bot(config))
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, bot.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await bot
        log.info("stopped")

    asyncio.run(main())
    return 0


class LoginClient(_TokenFileMixin, twitchio.Client):
    def __init__(self, client_id: str, keeper: TokenKeeper):
        super().__init__(
            client_id=client_id, client_secret=None, scopes=_scopes(), adapter=_NoWebServer()
        )
        self.keeper = keeper


async def login(config: Config, show) -> TwitchTokens:
    """The device-code flow: show the code, wait for the viewer to approve, keep the tokens."""
    from appliance.paths import state_dir

    settings = check_chat_settings(config, need_channel=False)
    keeper = TokenKeeper(token_path(state_dir(config)), settings.client_id)
    client = LoginClient(settings.client_id, keeper)
    try:
        flow = await client.login_dcf(load_token=False, save_token=False, scopes=_scopes())
        assert flow is not None  # load_token=False always starts a flow
        await show(flow["verification_uri"], flow["user_code"])
        await client.start_dcf(
            device_code=flow["device_code"],
            interval=flow["interval"],
            timeout=flow["expires_in"],
            scopes=_scopes(),
            block=False,
        )
    finally:
        await client.close()
    tokens = keeper.current
    if tokens is None:
        raise TokenError("Twitch gave no token")
    if settings.bot and tokens.login.lower() != settings.bot.lower():
        keeper.path.unlink(missing_ok=True)
        raise TokenError(
            f"signed in as {tokens.login!r}, but chat.bot in {config.source} is "
            f"{settings.bot!r}: sign in as the bot account (log out of Twitch first, or use "
            "a private window), then run `teletype twitch-login` again"
        )
    return tokens


def run_login(config: Config) -> int:
    """`teletype twitch-login`: the code on the console and, if the engine runs, on paper."""
    engine = engine_client(config)

    async def show(url: str, code: str) -> None:
        text = f"To sign the Teletype's bot in to Twitch, open {url} and enter the code {code}"
        print(text, flush=True)
        # No engine running: the console is enough.
        with contextlib.suppress(EngineUnavailable):
            # "system": the bridge never posts it in chat (the code is for us).
            await engine.print_text(f"{text}\n", source="system")

    async def main() -> TwitchTokens:
        return await login(config, show)

    tokens = asyncio.run(main())
    print(f"Signed in as {tokens.login}. The tokens are kept in the state directory.")
    return 0
