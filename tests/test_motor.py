"""The motor's relay, with gpiozero's own MockFactory, switched by the real engine.

The engine prints on a pty (the Teletype), whose reader notes when each
byte arrives; the relay's mock pin notes when it changes, as it changes
(a watcher that sampled it every few milliseconds noted a change late
under load, and a spin-up of exactly 0.5 s measured 0.4999). Those two
clocks, and the moment the engine says a job finished, are what the
checks compare.
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest
from gpiozero import Device
from gpiozero.pins.mock import MockFactory, MockPin

from appliance.config import parse_config
from appliance.engine.motor import open_motor
from appliance.testing.engine_inprocess import EventTimes

RELAY = 22


class TimedPin(MockPin):
    """gpiozero's mock pin, noting (time, level) each time it is driven to a new level.

    The time is taken just after the change, and so before the engine goes on
    (it notes when the motor came on after switching it): a bound that holds
    however slow the machine.
    """

    def __init__(self, factory, info):
        super().__init__(factory, info)
        self.changes: list[tuple[float, bool]] = [(time.monotonic(), bool(self._get_state()))]

    def _set_state(self, value) -> None:
        super()._set_state(value)
        level = bool(self._get_state())
        if level != self.changes[-1][1]:
            self.changes.append((time.monotonic(), level))


@pytest.fixture
def factory():
    Device.pin_factory = MockFactory(revision="d04170", pin_class=TimedPin)  # a Pi 5
    yield Device.pin_factory
    Device.pin_factory.reset()
    Device.pin_factory = None


def run_engine(tmp_path: Path, teletype, motor: str, scenario) -> dict:
    """The engine with [motor] and its relay on the mock pin; `scenario(engine)` drives it."""
    from appliance.engine.engine import Engine
    from appliance.engine.generator import load_generator
    from appliance.teletype import build_printer

    text = f'[teletype]\nport = "{teletype.link}"\n[motor]\npin = {RELAY}\n{motor}'
    config = parse_config(text.encode(), "test.toml")
    generator = load_generator(config.model)
    printer = build_printer(config.teletype)
    printer.port.open()
    relay = open_motor(config.motor)
    engine = Engine(config, generator, printer, tmp_path / "state", relay)
    pin = Device.pin_factory.pin(RELAY)
    # From the engine's start: the level the relay was set to on opening, then each change.
    first = len(pin.changes) - 1
    events = EventTimes()
    engine.subscribers.add(events)
    found: dict = {}

    async def run() -> None:
        engine.loop = asyncio.get_running_loop()
        relay.loop = engine.loop
        worker = asyncio.create_task(engine.run_worker())
        keyboard = threading.Thread(target=engine.read_keyboard, daemon=True)
        keyboard.start()
        try:
            await scenario(engine, found)
        finally:
            engine.stopping.set()
            worker.cancel()
            await asyncio.gather(worker, return_exceptions=True)
            relay.close()  # as the engine does at its stop
            await asyncio.sleep(0.05)

    try:
        asyncio.run(run())
    finally:
        printer.close()
        generator.close()
    found["changes"] = pin.changes[first:]
    found["levels"] = [level for _, level in found["changes"]]
    found["events"] = events.at
    return found


async def print_and_wait(engine, text: str) -> None:
    job = engine.new_print(text)
    await engine.submit(job)
    await engine.wait(job)


def test_the_motor_spins_up_before_the_first_character_and_stops_when_idle(
    tmp_path, teletype, factory
):
    async def scenario(engine, found):
        found["status_before"] = engine.status()["motor"]
        await print_and_wait(engine, "HELLO")
        found["status_after"] = engine.status()["motor"]
        await asyncio.sleep(1.0)  # idle_seconds
        found["status_idle"] = engine.status()["motor"]

    found = run_engine(tmp_path, teletype, "spinup_seconds = 0.5\nidle_seconds = 0.6\n", scenario)
    (_, off), (on_at, on), (off_at, off_again) = found["changes"][:3]
    assert (off, on, off_again) == (False, True, False)
    first_character = next(t for t, byte in teletype.arrivals if byte & 0x7F > 0x20)
    assert first_character - on_at >= 0.5  # spun up first
    assert off_at - found["events"]["finished"] >= 0.6  # then the quiet spell
    assert found["status_before"] == {"state": "off", "pin": RELAY, "always_on": False}
    assert found["status_after"]["state"] == "on"
    assert found["status_idle"]["state"] == "off"
    assert found["levels"] == [False, True, False]  # no flapping between


def test_typing_on_the_teletype_keeps_the_motor_running(tmp_path, teletype, factory):
    async def scenario(engine, found):
        await print_and_wait(engine, "HI")
        for _ in range(5):  # a key every 0.3 s, for longer than idle_seconds
            await asyncio.sleep(0.3)
            teletype.type(b"\xc1")  # 'A' with even parity, as a Model 33 sends it
        found["while_typing"] = engine.status()["motor"]["state"]
        await asyncio.sleep(1.0)
        found["after"] = engine.status()["motor"]["state"]

    found = run_engine(tmp_path, teletype, "spinup_seconds = 0.1\nidle_seconds = 0.6\n", scenario)
    assert found["while_typing"] == "on"
    assert found["after"] == "off"
    assert found["levels"] == [False, True, False]


def test_always_on_runs_from_start_to_stop_and_a_low_relay_is_driven_low(
    tmp_path, teletype, factory
):
    async def scenario(engine, found):
        found["at_start"] = engine.status()["motor"]["state"]
        await print_and_wait(engine, "HI")
        await asyncio.sleep(0.5)
        found["after"] = engine.status()["motor"]["state"]

    settings = "always_on = true\nactive_high = false\nidle_seconds = 1\nspinup_seconds = 0\n"
    found = run_engine(tmp_path, teletype, settings, scenario)
    assert found["at_start"] == found["after"] == "on"
    # Active low: on is a low pin from the start; the engine's stop leaves it high (off).
    assert found["levels"] == [False, True]


def test_no_relay_means_nothing_to_switch_and_nothing_waits(tmp_path):
    config = parse_config(b"", "test.toml")
    motor = open_motor(config.motor)
    assert motor.status() is None and motor.seconds_to_ready() == 0
    asyncio.run(motor.ready())  # at once


def test_a_relay_without_gpio_is_a_clear_error(monkeypatch):
    from appliance.errors import StartupError

    # This machine is no Pi: every pin factory gpiozero tries fails.
    monkeypatch.delenv("GPIOZERO_PIN_FACTORY", raising=False)
    saved, Device.pin_factory = Device.pin_factory, None
    try:
        config = parse_config(b"[motor]\npin = 22\n", "test.toml")
        with pytest.raises(StartupError, match=r"motor\.pin = 22, but there is no GPIO") as caught:
            open_motor(config.motor)
    finally:
        Device.pin_factory = saved
    assert caught.value.exit_code == 78  # a person must fix it: no restart loop


def test_the_operators_switch_over_the_api(start_engine):
    """`teletype serve` with the relay on gpiozero's mock pins (GPIOZERO_PIN_FACTORY=mock)."""
    engine = start_engine(
        env={"GPIOZERO_PIN_FACTORY": "mock"}, max_chars=100, speed=1,  # still printing below
        model_extra=f"[motor]\npin = {RELAY}\nspinup_seconds = 0.2\nidle_seconds = 30\n",
    )  # fmt: skip
    try:
        motor = lambda: engine.json("GET", "/v1/status")[1]["motor"]  # noqa: E731
        assert motor() == {"state": "off", "pin": RELAY, "always_on": False}
        assert engine.request("PUT", "/v1/motor", {"on": True})[0] == 204
        assert motor()["state"] in ("starting", "on")
        assert engine.request("PUT", "/v1/motor", {"on": False})[0] == 204
        assert motor()["state"] == "off"
        engine.request("POST", "/v1/generate", {"wait": False})
        busy = engine.request("PUT", "/v1/motor", {"on": False})
        assert busy[0] == 409 and b"stays on while something prints" in busy[2]
        assert motor()["state"] in ("starting", "on")
        assert engine.request("PUT", "/v1/motor", {"on": "yes"})[0] == 400
    finally:
        engine.close()


def test_no_relay_no_switch(tmp_path, start_engine):
    engine = start_engine(f"file:{tmp_path / 'p.txt'}")
    try:
        assert engine.json("GET", "/v1/status")[1]["motor"] is None
        assert engine.request("PUT", "/v1/motor", {"on": True})[0] == 404
    finally:
        engine.close()
