"""`teletype button`: the front-panel button and its LED, a client of the engine.

Press (and let go): the Teletype answers the last chat lines, exactly what
`!gpt2` or an empty line in the demo does (the engine builds the prompt
with appliance.engine.history.reply_prompt for all of them). Hold for two
seconds: the current print stops, and its line is finished.

The LED says what the appliance is doing:
  steady      ready
  slow pulse  generating or printing
  fast blink  fault: the engine is unreachable or the printer is offline
  off         this service is stopped
"""

from __future__ import annotations

import asyncio
import logging
import time

from appliance.client import EngineClient
from appliance.config import ButtonConfig
from appliance.errors import (
    ApplianceError,
    ConfigError,
    EngineUnavailable,
    QueueFull,
    ShuttingDown,
)
from appliance.gpio import NoPinFactory, make_devices
from appliance.schema import JobStatus, Source

log = logging.getLogger("teletype.button")

READY, BUSY, FAULT, OFF = "ready", "busy", "fault", "off"
POLL_SECONDS = 0.5


class NoGPIO(ApplianceError, RuntimeError):
    pass


class FrontPanel:
    def __init__(
        self,
        client: EngineClient,
        button,
        led,
        settings: ButtonConfig,
        loop: asyncio.AbstractEventLoop,
        clock=time.monotonic,
    ):
        self.client = client
        self.button = button
        self.led = led
        self.settings = settings
        self.loop = loop
        self.clock = clock
        self.led_state: str | None = None
        self.our_job: asyncio.Task | None = None
        self._last_press = -1e9
        self._held = False
        self.presses_accepted = 0
        # gpiozero calls these on its own threads: hand them to the loop.
        button.when_pressed = lambda: loop.call_soon_threadsafe(self._pressed)
        button.when_held = lambda: loop.call_soon_threadsafe(self._hold)
        button.when_released = lambda: loop.call_soon_threadsafe(self._released)

    # --- the button --------------------------------------------------------------

    def _pressed(self) -> None:
        self._held = False

    def _hold(self) -> None:
        self._held = True
        log.info("button held: stopping the print")
        self.loop.create_task(self._cancel())

    def _released(self) -> None:
        if self._held:
            return  # the end of a hold, not a press
        now = self.clock()
        # Our own debounce: gpiozero's bounce_time is not applied by every
        # pin factory, and a worn switch chatters for tens of milliseconds.
        if now - self._last_press < self.settings.debounce_ms / 1000:
            return
        self._last_press = now
        if self.our_job is not None and not self.our_job.done():
            return  # one button job at a time: more presses queue nothing
        self.presses_accepted += 1
        log.info("button pressed: replying to the chat")
        self.our_job = self.loop.create_task(self._reply())
        self.set_led(BUSY)

    async def _reply(self) -> None:
        try:
            job = await self.client.generate(use_history=True, source=Source.BUTTON)
        except EngineUnavailable as e:
            log.warning("%s", e)
            self.set_led(FAULT)
        except QueueFull:
            log.warning("the queue is full; press again later")
        except ShuttingDown as e:
            log.warning("%s", e)  # stopping: the job runs after the restart
        except ApplianceError as e:
            log.warning("the engine refused: %s", e)
        else:
            if job.status == JobStatus.WITHHELD:
                log.warning("nothing printed: %s", job.error)

    async def _cancel(self) -> None:
        try:
            await self.client.cancel()
        except EngineUnavailable as e:
            log.warning("%s", e)

    # --- the LED -----------------------------------------------------------------

    def set_led(self, state: str) -> None:
        if state == self.led_state:
            return
        if state == READY:
            self.led.on()
        elif state == BUSY:
            self.led.pulse(fade_in_time=1.0, fade_out_time=1.0)
        elif state == FAULT:
            self.led.blink(on_time=0.1, off_time=0.1)
        else:
            self.led.off()
        # Said once the LED shows it: gpiozero stops a pulse's thread inside on(),
        # and a reader told READY before that saw the pulse's last value (0.92).
        self.led_state = state

    async def watch(self) -> None:
        """Keep the LED in step with the engine."""
        while True:
            try:
                status = await self.client.status()
                ours = self.our_job is not None and not self.our_job.done()
                busy = status.printing is not None or status.queue or ours
                offline = status.port.state == "offline"
                state = FAULT if offline else (BUSY if busy else READY)
            except ApplianceError:  # not answering, or an answer of the wrong shape
                state = FAULT
            self.set_led(state)
            await asyncio.sleep(POLL_SECONDS)

    def close(self) -> None:
        self.set_led(OFF)
        self.button.close()
        self.led.close()


def open_devices(settings: ButtonConfig):
    """The button and LED on this machine's GPIO (lgpio on a Pi 5, any factory gpiozero finds)."""
    try:
        from gpiozero import PWMLED, Button
        from gpiozero.exc import PinFixedPull
    except ImportError as e:
        raise NoGPIO(
            "gpiozero is not installed (on a Pi: apt install python3-gpiozero python3-lgpio)"
        ) from e
    # gpiozero's own words: pull_up True (pressed is low), False (pressed is
    # high), None (no pull of ours; then it needs to be told the active level).
    pull_up = {"up": True, "down": False, "none": None}[settings.pull]
    active_state = settings.active_high if pull_up is None else None
    try:
        button, led = make_devices(
            lambda: (
                Button(
                    settings.pin,
                    pull_up=pull_up,
                    active_state=active_state,
                    bounce_time=None,
                    hold_time=settings.hold_seconds,
                ),
                # Without an LED, a stand-in that lights nothing keeps the panel simple.
                PWMLED(settings.led_pin) if settings.led_pin >= 0 else NoLED(),
            )
        )
    except NoPinFactory as e:
        raise NoGPIO(
            f"no GPIO found on this machine (gpiozero: no pin factory works here: {e.tried}). "
            "On a Raspberry Pi install python3-lgpio; on a laptop, `teletype demo` stands in "
            "for the button: an empty line or !gpt2 is a press."
        ) from e
    except PinFixedPull as e:
        raise ConfigError(
            f"button.pull = {settings.pull!r}: GPIO{settings.pin} cannot have that pull ({e}); "
            "wire the button to ground and use pull = 'up', or choose another pin"
        ) from e
    return button, led


class NoLED:
    """The LED's interface when button.led_pin is -1."""

    def on(self) -> None: ...

    def off(self) -> None: ...

    def pulse(self, **_) -> None: ...

    def blink(self, **_) -> None: ...

    def close(self) -> None: ...


def run_button(config) -> int:
    from appliance.logs import setup_logging
    from appliance.paths import socket_path

    setup_logging("teletype-button")
    settings = config.button
    button, led = open_devices(settings)
    if settings.engine:
        client = EngineClient(url=settings.engine, token=config.engine.token)
    else:
        client = EngineClient(socket_path(config))

    async def main():
        import signal

        panel = FrontPanel(client, button, led, settings, asyncio.get_running_loop())
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            asyncio.get_running_loop().add_signal_handler(sig, stop.set)
        watcher = asyncio.create_task(panel.watch())
        log.info(
            "button on GPIO%d (pull %s), LED %s; engine at %s",
            settings.pin,
            settings.pull,
            f"on GPIO{settings.led_pin}" if settings.led_pin >= 0 else "off",
            client.where,
        )
        await stop.wait()
        watcher.cancel()
        panel.close()

    asyncio.run(main())
    return 0
