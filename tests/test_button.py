"""The front panel with gpiozero's own MockFactory (a Pi 5), against the real engine."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time

import pytest
from gpiozero import Device
from gpiozero.pins.mock import MockFactory, MockPWMPin

from appliance.button import BUSY, FAULT, READY, FrontPanel, NoGPIO, NoLED, open_devices
from appliance.client import EngineClient
from appliance.config import ButtonConfig
from appliance.errors import ConfigError
from appliance.testing.wire import check_ascii


@pytest.fixture
def mock_gpio():
    """A Raspberry Pi 5's pins (revision d04170), PWM-capable; the old factory back after."""
    saved = Device.pin_factory
    Device.pin_factory = MockFactory(revision="d04170", pin_class=MockPWMPin)
    try:
        yield Device.pin_factory
    finally:
        Device.pin_factory.reset()
        Device.pin_factory = saved


pytestmark = pytest.mark.engine(max_chars=20)  # the `engine` fixture's (tests/conftest.py)


class Panel:
    """A FrontPanel running on its own event loop, as `teletype button` runs it."""

    def __init__(self, tmp_path, factory):
        self.settings = ButtonConfig()
        self.loop = asyncio.new_event_loop()
        self.button_pin = factory.pin(self.settings.pin)
        self.led_pin = factory.pin(self.settings.led_pin)
        button, led = open_devices(self.settings)
        client = EngineClient(tmp_path / "run" / "engine.sock")
        self.panel = FrontPanel(client, button, led, self.settings, self.loop)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        asyncio.set_event_loop(self.loop)
        self.watcher = self.loop.create_task(self.panel.watch())
        self.loop.run_forever()

    def press(self, seconds: float = 0.05):
        self.button_pin.drive_low()  # pulled up: pressed is low
        time.sleep(seconds)
        self.button_pin.drive_high()

    def wait_led(self, state: str, timeout: float = 30.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.panel.led_state == state:
                return
            time.sleep(0.05)
        raise AssertionError(f"LED is {self.panel.led_state}, not {state}")

    def close(self):
        async def stop():
            self.watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.watcher

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(timeout=10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.panel.close()


@pytest.fixture
def panel(tmp_path, mock_gpio, engine):
    p = Panel(tmp_path, mock_gpio)
    yield p
    p.close()


def _wait_idle(engine, jobs: int, timeout: float = 120.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = engine.json("GET", "/v1/status")[1]
        if status["jobs_finished"] >= jobs and status["printing"] is None and not status["queue"]:
            return status
        time.sleep(0.1)
    raise AssertionError(f"engine still busy: {status}")


def test_button_press_prints_a_reply(panel, engine, teletype):
    panel.wait_led(READY)
    panel.press()
    status = _wait_idle(engine, 1)
    assert status["jobs_finished"] == 1
    paper = check_ascii(teletype.collect())
    assert paper.problems == [] and paper.ends_at_column_zero
    assert len(paper.text.split()) >= 2


@pytest.mark.engine(max_chars=20, speed=1)  # the reply must still print while the presses come
def test_button_fifty_presses_in_a_second_give_one_job(panel, engine, teletype):
    panel.wait_led(READY)
    for _ in range(50):
        panel.press(0.01)
        time.sleep(0.01)
    status = _wait_idle(engine, 1)
    time.sleep(0.5)
    assert engine.json("GET", "/v1/status")[1]["jobs_finished"] == 1
    assert status["queue"] == 0
    assert panel.panel.presses_accepted == 1


def test_button_hold_cancels_the_print_and_leaves_column_zero(
    tmp_path, mock_gpio, teletype, start_engine
):
    # At the Teletype's pace: the print must still be going when the hold ends.
    engine = start_engine(max_chars=400, speed=1)
    p = Panel(tmp_path, mock_gpio)
    try:
        p.wait_led(READY)
        p.press()
        deadline = time.monotonic() + 60
        while len(teletype.data) < 10 and time.monotonic() < deadline:
            time.sleep(0.05)
        p.press(2.3)  # a 2-second hold
        status = _wait_idle(engine, 1, timeout=30)
        assert status["jobs_finished"] == 1
        paper = check_ascii(teletype.collect())
        assert paper.problems == [] and paper.ends_at_column_zero
        assert len(teletype.data) < 200  # stopped long before 400 characters
        assert p.panel.presses_accepted == 1  # the hold was not a press
    finally:
        p.close()
        engine.close()


def _led_values(panel: Panel, last: int) -> list[float]:
    return [s.state for s in panel.led_pin.states[-last:]]


def _wait_for_led_values(panel: Panel, last: int, seen, timeout: float = 10.0) -> list[float]:
    """The LED's last few values, once they show what `seen` looks for."""
    deadline = time.monotonic() + timeout
    while not seen(_led_values(panel, last)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return _led_values(panel, last)


@pytest.mark.engine(max_chars=20, speed=1)  # busy for a few seconds: long enough to pulse
def test_button_led_over_a_jobs_life(panel, engine, teletype):
    panel.wait_led(READY)
    assert panel.led_pin.state == 1.0  # steady
    panel.press()
    panel.wait_led(BUSY)
    fading = lambda values: any(0.0 < v < 1.0 for v in values)  # noqa: E731
    during = _wait_for_led_values(panel, 40, fading)
    assert panel.panel.led_state == BUSY
    assert fading(during), during  # a fade, not on/off
    _wait_idle(engine, 1)
    panel.wait_led(READY)
    assert panel.led_pin.state == 1.0


def test_button_engine_stopped_blinks_fault_then_back_is_steady(tmp_path, mock_gpio, engine):
    p = Panel(tmp_path, mock_gpio)
    try:
        p.wait_led(READY)
        assert engine.terminate() == 0  # gone (and started again below, the same engine)
        p.wait_led(FAULT)
        values = _wait_for_led_values(p, 8, lambda values: 0.0 in values and 1.0 in values)
        assert 0.0 in values and 1.0 in values  # blinking
        engine.start()
        p.wait_led(READY)
        assert p.led_pin.state == 1.0
    finally:
        p.close()


def test_button_off_when_the_service_stops(tmp_path, mock_gpio, engine):
    p = Panel(tmp_path, mock_gpio)
    p.wait_led(READY)
    p.close()
    assert p.panel.led_state == "off"


# --- wiring: the pull resistor and the active level (button.pull, button.active_high) ---


def test_button_to_ground_with_the_pull_up_is_pressed_when_low(mock_gpio):
    button, led = open_devices(ButtonConfig(pin=17))
    pin = mock_gpio.pin(17)
    assert pin.pull == "up" and not button.is_pressed
    pin.drive_low()
    assert button.is_pressed
    button.close()
    led.close()


def test_button_to_3v3_with_the_pull_down_is_pressed_when_high(mock_gpio):
    button, led = open_devices(ButtonConfig(pin=17, pull="down"))
    pin = mock_gpio.pin(17)
    assert pin.pull == "down" and not button.is_pressed
    pin.drive_high()
    assert button.is_pressed
    pin.drive_low()
    assert not button.is_pressed
    button.close()
    led.close()


@pytest.mark.parametrize("active_high", [True, False])
def test_button_with_its_own_resistor_follows_active_high(mock_gpio, active_high):
    button, led = open_devices(ButtonConfig(pin=17, pull="none", active_high=active_high))
    pin = mock_gpio.pin(17)
    assert pin.pull == "floating"
    pin.drive_high()
    assert button.is_pressed is active_high
    pin.drive_low()
    assert button.is_pressed is not active_high
    button.close()
    led.close()


def test_a_pull_the_pin_cannot_have_names_the_setting(mock_gpio):
    # GPIO3 has the Pi's fixed 1.8k pull-up (I2C): a pull-down there cannot work.
    with pytest.raises(ConfigError, match=r"button\.pull = 'down': GPIO3"):
        open_devices(ButtonConfig(pin=3, pull="down", led_pin=-1))
    button, _ = open_devices(ButtonConfig(pin=3, pull="up", led_pin=-1))
    assert button.pull_up
    button.close()


def test_no_led_when_led_pin_is_minus_one(mock_gpio):
    button, led = open_devices(ButtonConfig(led_pin=-1))
    assert isinstance(led, NoLED)
    led.pulse(fade_in_time=1.0, fade_out_time=1.0)
    led.close()
    button.close()


def test_no_gpio_says_why_each_pin_factory_failed(monkeypatch):
    # This machine is no Pi: every factory gpiozero tries fails, and the
    # message must carry their reasons (on a Pi that is the real fault).
    monkeypatch.delenv("GPIOZERO_PIN_FACTORY", raising=False)
    saved = Device.pin_factory
    Device.pin_factory = None
    try:
        with pytest.raises(NoGPIO) as caught:
            open_devices(ButtonConfig())
    finally:
        Device.pin_factory = saved
    message = str(caught.value)
    assert "no pin factory works here: Falling back from lgpio:" in message
    assert "teletype demo" in message
