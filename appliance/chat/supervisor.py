"""The bridge's supervisor: sign in when there are no tokens, run the bot, sign in again
when Twitch refuses them for good, retry Twitch's bad moments with backoff, and give
up (Unhealthy: systemd restarts us) when chat cannot be repaired.
"""

from __future__ import annotations

import asyncio
import logging

import aiohttp
import twitchio

from appliance.chat.bot import TeletypeBot, TokensRefused, TransientTwitch, twitch_failure
from appliance.chat.health import Health, Unhealthy, pet_watchdog, tell_the_engine
from appliance.chat.login import check_chat_settings, sign_in_on_paper
from appliance.chat.tokens import (
    TokenKeeper,
    token_path,
)
from appliance.client import EngineClient
from appliance.config import Config

log = logging.getLogger("teletype.chat")


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
    pinger = asyncio.create_task(pet_watchdog(health), name="watchdog")
    reporter = asyncio.create_task(tell_the_engine(health, engine), name="chat state")
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
        raise twitch_failure(e) from None
    except (aiohttp.ClientError, TimeoutError, OSError) as e:
        raise TransientTwitch(f"Twitch is not answering ({type(e).__name__})") from None
    if flow is not None:
        raise TokensRefused("the saved Twitch tokens no longer work")
    try:
        await bot.start_dcf(block=True)
    except twitchio.HTTPException as e:
        raise twitch_failure(e) from None
    except Exception as e:  # a refused websocket, a timeout, a reset: all passing
        raise TransientTwitch(f"Twitch is not answering ({type(e).__name__})") from None
    if bot.failure is not None:
        raise bot.failure
    raise TransientTwitch("the connection to Twitch ended")
