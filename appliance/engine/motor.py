"""The Teletype's motor, switched by a relay: running while there is work, off when idle.

A Model 33's motor runs for as long as the machine has power: loud on a
stream, and wear on a museum's Teletype that prints a few minutes an hour.
With a relay on a GPIO pin ([motor] in teletype.toml) the engine, which
owns the printer, switches it:

- on as soon as a job is queued (it spins up while the model writes);
- the first character waits until it has run `spinup_seconds`;
- off after `idle_seconds` with nothing printing or queued; a key typed
  on the Teletype's keyboard counts as work (someone is at the machine);
- off when the engine stops.

`always_on` keeps it running from the engine's start to its stop. Without
a pin (the default) there is nothing to switch and nothing waits.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from appliance.config import MotorConfig
from appliance.errors import StartupError
from appliance.gpio import NoPinFactory, make_devices

log = logging.getLogger("teletype.motor")

OFF, STARTING, ON = "off", "starting", "on"


class Motor:
    """The relay's state and its timers; `output` is a gpiozero OutputDevice (or None)."""

    def __init__(self, settings: MotorConfig, output=None, clock=time.monotonic):
        self.settings = settings
        self.output = output
        self.clock = clock
        self.on_since: float | None = None
        self._off_timer: asyncio.TimerHandle | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        if output is not None and settings.always_on:
            self._switch(True)

    @property
    def present(self) -> bool:
        return self.output is not None

    @property
    def state(self) -> str:
        if self.on_since is None:
            return OFF
        return STARTING if self.seconds_to_ready() > 0 else ON

    def want(self) -> None:
        """Work has come: on now (if it was off), and no switching off for now."""
        if self.output is None:
            return
        self._cancel_timer()
        if self.on_since is None:
            self._switch(True)

    def seconds_to_ready(self) -> float:
        if self.output is None or self.on_since is None:
            return 0.0
        return max(0.0, self.on_since + self.settings.spinup_seconds - self.clock())

    async def ready(self) -> None:
        """Until the motor is up to speed (at once when it has been running)."""
        self.want()
        wait = self.seconds_to_ready()
        if wait > 0:
            log.info("motor on: %.1f s to spin up before the first character", wait)
            await asyncio.sleep(wait)

    def idle(self) -> None:
        """Nothing printing or queued: off after idle_seconds, unless work comes first."""
        if self.output is None or self.settings.always_on or self.on_since is None:
            return
        self._cancel_timer()
        loop = self.loop or asyncio.get_running_loop()
        self._off_timer = loop.call_later(self.settings.idle_seconds, self._idle_over)

    def touch(self) -> None:
        """Someone typed on the Teletype: the quiet spell starts again."""
        if self._off_timer is not None:
            self.idle()

    def off_now(self) -> None:
        """Off at once (the operator's switch, with nothing to print)."""
        self._cancel_timer()
        if self.output is not None and self.on_since is not None:
            self._switch(False)

    def close(self) -> None:
        """The engine stops: off, and the pin given back."""
        self._cancel_timer()
        if self.output is not None:
            self._switch(False)
            self.output.close()
            self.output = None

    def status(self) -> dict[str, Any] | None:
        if self.output is None:
            return None
        return {
            "state": self.state,
            "pin": self.settings.pin,
            "always_on": self.settings.always_on,
        }

    def _idle_over(self) -> None:
        self._off_timer = None
        log.info("motor off: idle for %g s", self.settings.idle_seconds)
        self._switch(False)

    def _cancel_timer(self) -> None:
        if self._off_timer is not None:
            self._off_timer.cancel()
            self._off_timer = None

    def _switch(self, on: bool) -> None:
        assert self.output is not None
        if on:
            self.output.on()
            self.on_since = self.clock()
        else:
            self.output.off()
            self.on_since = None


def open_motor(settings: MotorConfig) -> Motor:
    """The relay on this machine's GPIO; a Motor with nothing to switch without a pin."""
    if settings.pin < 0:
        return Motor(settings)
    try:
        from gpiozero import OutputDevice
    except ImportError as e:
        raise StartupError(f"motor.pin = {settings.pin}, but gpiozero is not installed") from e
    try:
        high = settings.active_high
        output = make_devices(
            lambda: OutputDevice(settings.pin, active_high=high, initial_value=False)
        )
    except NoPinFactory as e:
        raise StartupError(
            f"motor.pin = {settings.pin}, but there is no GPIO to switch the relay with "
            f"(gpiozero: {e.tried}); set motor.pin = -1 for a Teletype without a relay"
        ) from e
    return Motor(settings, output)
