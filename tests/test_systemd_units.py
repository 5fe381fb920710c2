"""The unit files: systemd's own checker, with nothing to say, and a low exposure score."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNITS = Path(__file__).resolve().parent.parent / "appliance" / "systemd"
SERVICES = sorted(p.name for p in UNITS.glob("*.service"))
TIMERS = sorted(p.name for p in UNITS.glob("*.timer"))
ROOT = Path(__file__).resolve().parent.parent
INSTALL = ROOT / "pi-gen-config" / "stage-teletype" / "02-appliance" / "01-run-chroot.sh"
IMAGE_CHECK = ROOT / "pi-gen-config" / "image-check.sh"
INSTALLED_PATH = "/opt/teletype-gpt2/venv/bin/teletype"

pytestmark = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed here"
)


@pytest.fixture
def units(tmp_path) -> Path:
    """The units as the image installs them, but pointing at this checkout's `teletype`.

    verify checks that ExecStart exists; the image's venv is not on this machine.
    """
    here = str(Path(sys.executable).parent / "teletype")
    for unit in UNITS.iterdir():
        (tmp_path / unit.name).write_text(unit.read_text().replace(INSTALLED_PATH, here))
    return tmp_path


def test_units_are_the_engine_chat_button_a_target_and_the_network_oneshot():
    assert SERVICES == [
        "teletype-button.service",
        "teletype-chat.service",
        "teletype-engine.service",
        "teletype-network.service",
    ]
    target = (UNITS / "teletype.target").read_text()
    for service in SERVICES:
        assert INSTALLED_PATH in (UNITS / service).read_text()
        # The oneshot belongs to the boot (before the network), not to the
        # appliance's target: stopping the appliance must not undo the Wi-Fi.
        assert (service in target) == (service != "teletype-network.service")


@pytest.mark.parametrize("unit", [*SERVICES, *TIMERS, "teletype.target"])
def test_units_verify_without_a_word(units, unit):
    # verify exits 0 on warnings: its stderr is the verdict.
    result = subprocess.run(
        ["systemd-analyze", "verify", str(units / unit)], capture_output=True, text=True, cwd=units
    )
    assert result.returncode == 0
    assert result.stderr == ""


@pytest.mark.parametrize("unit", SERVICES)
def test_units_security_exposure_at_most_2_5(units, unit):
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", "--threshold=25", str(units / unit)],
        capture_output=True,
        text=True,
        cwd=units,
    )
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert match, result.stdout[-500:] + result.stderr
    assert float(match.group(1)) <= 2.5
    assert result.returncode == 0


def test_units_engine_is_a_notify_service_with_a_watchdog():
    engine = (UNITS / "teletype-engine.service").read_text()
    for setting in (
        "Type=notify",
        "WatchdogSec=",
        "Restart=on-failure",
        "StateDirectory=",
        "RuntimeDirectory=",
        "ProtectSystem=strict",
        "SupplementaryGroups=dialout",
        "DeviceAllow=char-ttyAMA rw",
    ):
        assert setting in engine, setting
    assert "PrivateDevices=yes" not in engine  # it would hide the serial port
    assert "SupplementaryGroups=gpio" in (UNITS / "teletype-button.service").read_text()


def _settings(unit: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in (UNITS / unit).read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            found.setdefault(key, []).append(value)
    return found


@pytest.mark.parametrize("client", ["teletype-button.service", "teletype-chat.service"])
def test_units_clients_have_no_runtime_directory_of_their_own(client):
    # $RUNTIME_DIRECTORY is where a process looks for the engine's socket;
    # a client's own would point it away from /run/teletype-gpt2.
    assert "RuntimeDirectory" not in _settings(client)


def test_units_button_starts_in_a_directory_it_may_write():
    # lgpio makes its FIFOs in the current directory, and / is read-only
    # under ProtectSystem=strict: found by make boot-check.
    button = _settings("teletype-button.service")
    assert button["WorkingDirectory"] == ["/tmp"] and button["PrivateTmp"] == ["yes"]
    # gpiozero reads the board revision in /proc/device-tree or /proc/cpuinfo.
    assert "ProcSubset" not in button


def test_units_chat_fails_visibly_after_quick_failures_and_on_a_broken_config(tmp_path):
    chat = _settings("teletype-chat.service")
    # Quick failures stop after a few starts (systemd marks the unit failed)
    # instead of a restart every 10 s for ever.
    burst, interval = int(chat["StartLimitBurst"][0]), int(chat["StartLimitIntervalSec"][0])
    assert burst * int(chat["RestartSec"][0]) < interval
    # ExecCondition passes a teletype.toml it cannot read: ExecStart then
    # fails with the error (exit 78) and the unit shows failed, not skipped.
    broken = tmp_path / "teletype.toml"
    broken.write_text("[chat\nchannel = ")
    condition = subprocess.run(
        [sys.executable, "-m", "appliance.cli", "chat", "--configured", "--config", str(broken)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert condition.returncode == 0, condition.stderr
    start = subprocess.run(
        [sys.executable, "-m", "appliance.cli", "chat", "--config", str(broken)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert start.returncode == 78 and str(broken) in start.stderr


def test_units_chat_is_started_again_a_while_after_systemd_gave_up_on_it():
    # The start limit marks the bridge failed after quick failures (Twitch or
    # the network down for a while); a timer starts it again later, once the
    # start limit's window has passed (a start within it would be refused).
    assert TIMERS == ["teletype-chat-retry.timer"]
    timer = _settings("teletype-chat-retry.timer")
    assert timer["Unit"] == ["teletype-chat.service"]
    (after,) = timer["OnUnitInactiveSec"]
    assert after.endswith("min")
    window = int(_settings("teletype-chat.service")["StartLimitIntervalSec"][0])
    assert int(after.removesuffix("min")) * 60 > window
    # Stopping the appliance stops the retries too.
    assert timer["PartOf"] == ["teletype.target"] and timer["WantedBy"] == ["teletype.target"]


def test_units_every_unit_file_is_installed_enabled_and_checked_by_the_image():
    units = sorted(p.name for p in UNITS.iterdir() if p.suffix in (".service", ".timer", ".target"))
    script = INSTALL.read_text()
    assert '"${units}"/*.timer' in script
    enabled = re.search(r"systemctl enable ((?:[^\\\n]|\\\n)+)", script)
    assert enabled and sorted(enabled.group(1).replace("\\", " ").split()) == units
    checked = re.search(
        r"for unit in ((?:[^;\\]|\\\n)+); do\n\tcheck \"\$unit enabled", IMAGE_CHECK.read_text()
    )
    assert checked and sorted(checked.group(1).replace("\\", " ").split()) == units
