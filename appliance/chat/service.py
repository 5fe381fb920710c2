"""`teletype chat` and `teletype twitch-login`: the chat bridge's entry points.

The parts: appliance.chat.supervisor runs appliance.chat.bot (twitchio), whose
messages appliance.chat.bridge answers; appliance.chat.health says how it goes,
appliance.chat.login signs the bot in, appliance.chat.tokens keeps its tokens.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

from appliance.chat.health import Unhealthy
from appliance.chat.login import check_chat_settings, login
from appliance.chat.supervisor import engine_client, run_bot
from appliance.chat.tokens import TwitchTokens
from appliance.client import EngineClient
from appliance.config import Config
from appliance.errors import ApplianceError, ConfigError
from appliance.schema import PrintSource

log = logging.getLogger("teletype.chat")


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
        log.info("could not say the config error on paper (%s)", type(e).__name__)
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
