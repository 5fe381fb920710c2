"""The bridge's watchdog pings: systemd kills it only after WatchdogSec of not hearing Twitch.

systemd asks for a ping at least every half WatchdogSec. Pinging at exactly
that, a bridge that stopped hearing just after a ping and started again just
after the next missed ping went a whole WatchdogSec and a half unfed: a
sign-in's round trips on a busy machine were enough (CI's chat soak).
"""

from __future__ import annotations

import asyncio
import itertools
import time

from appliance.chat.health import Health, pet_watchdog
from appliance.testing.engine_process import NotifySocket

WATCHDOG = 4.0  # WatchdogSec


def test_a_deaf_spell_shorter_than_watchdogsec_never_starves_the_watchdog(tmp_path, monkeypatch):
    notify = NotifySocket(tmp_path / "notify.sock")
    monkeypatch.setenv("NOTIFY_SOCKET", str(notify.path))
    monkeypatch.setenv("WATCHDOG_USEC", str(int(WATCHDOG * 1e6)))
    health = Health()
    started = time.monotonic()
    # Deaf from just after the first ping at half-period pace until just after the
    # next one would have been missed: 3.2 s of 4.
    deaf = (started + 1.0, started + 4.2)
    health.alive = lambda: not deaf[0] <= time.monotonic() < deaf[1]

    async def ping_for(seconds: float) -> None:
        pinger = asyncio.create_task(pet_watchdog(health))
        await asyncio.sleep(seconds)
        pinger.cancel()

    try:
        asyncio.run(ping_for(6.5))
    finally:
        notify.close()
    pings = notify.when("WATCHDOG=1")
    assert pings and pings[0] < deaf[0] and pings[-1] > deaf[1], pings
    assert not [t for t in pings if deaf[0] + 0.05 < t < deaf[1] - 0.05], "pinged while deaf"
    unfed = max(b - a for a, b in itertools.pairwise(pings))
    assert unfed < WATCHDOG, f"systemd would have killed a bridge deaf for 3.2 s: {unfed:.1f} s"
