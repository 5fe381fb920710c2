"""Run `teletype ARGS...` with twitchio pointed at a fake Twitch: python twitch_at.py URL ARGS...

The only change from the real command is Twitch's address (the edge of the
machine): the three module globals where twitchio keeps it.
"""

from __future__ import annotations

import sys

import twitchio.eventsub.websockets
import twitchio.http

from appliance.cli import main

if __name__ == "__main__":
    base = sys.argv[1].rstrip("/") + "/"
    twitchio.http.Route.BASE = base + "helix/"
    twitchio.http.Route.ID_BASE = base
    twitchio.eventsub.websockets.WSS = base.replace("http://", "ws://") + "ws"
    sys.exit(main(sys.argv[2:]))
