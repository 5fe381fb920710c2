"""`teletype ARGS...` with twitchio pointed at a fake Twitch:

    python -m appliance.testing.twitch_at URL ARGS...

The only change from the real command is Twitch's address (the edge of the
machine): the three module globals where twitchio keeps it. A soak may also
set TWITCH_AT_CLOCKS="check_every=0.5,validate_every=10,...": the bridge's
own clocks (TeletypeBot's attributes), shortened so that hours of health and
token checks pass in minutes. Twitch's keepalive is not among them: twitchio
asks for no less than 10 s, and the fake keeps to what it asked.
"""

from __future__ import annotations

import os
import sys

import twitchio.eventsub.websockets
import twitchio.http

from appliance.cli import main


def shorten_clocks(spec: str) -> None:
    from appliance.chat.bot import TeletypeBot

    for item in filter(None, spec.split(",")):
        name, _, value = item.partition("=")
        if not isinstance(getattr(TeletypeBot, name, None), int | float):
            raise SystemExit(f"TWITCH_AT_CLOCKS: TeletypeBot has no clock {name!r}")
        setattr(TeletypeBot, name, type(getattr(TeletypeBot, name))(value))


if __name__ == "__main__":
    base = sys.argv[1].rstrip("/") + "/"
    twitchio.http.Route.BASE = base + "helix/"
    twitchio.http.Route.ID_BASE = base
    twitchio.eventsub.websockets.WSS = base.replace("http://", "ws://") + "ws"
    shorten_clocks(os.environ.get("TWITCH_AT_CLOCKS", ""))
    sys.exit(main(sys.argv[2:]))
