"""Signing the bot in with Twitch's device-code flow, which needs no web server and no
client secret: the Pi shows a code (on paper, or on the console), someone types it in
at twitch.tv/activate on any phone.
"""

from __future__ import annotations

import contextlib
import logging

from appliance.chat.bot import SCOPES
from appliance.chat.health import Health
from appliance.chat.tokens import (
    TokenError,
    TokenKeeper,
    TwitchTokens,
    token_path,
)
from appliance.client import EngineClient
from appliance.config import ChatConfig, Config
from appliance.errors import ApplianceError, ConfigError
from appliance.schema import PrintSource

log = logging.getLogger("teletype.chat")


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


async def sign_in_on_paper(
    settings: ChatConfig, keeper: TokenKeeper, engine: EngineClient, health: Health
) -> None:
    """The device-code flow, with the code printed on the Teletype, until someone signs in."""
    from appliance.chat.signin import sign_in

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


async def login(config: Config, show) -> TwitchTokens:
    """`teletype twitch-login`'s flow: show one code, wait for it, keep the tokens."""
    from appliance.chat.signin import sign_in
    from appliance.paths import state_dir

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
