"""What goes on the SD card's boot partition: teletype.toml, config.txt, cmdline.txt, udev."""

from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from appliance.config import SECTIONS, Config, parse_config, render_template

ROOT = Path(__file__).resolve().parent.parent
FIRMWARE = ROOT / "firmware"
TEMPLATE = FIRMWARE / "teletype.toml"


def test_template_is_what_the_code_says():
    # Regenerate with `teletype config --template > firmware/teletype.toml`.
    assert TEMPLATE.read_text(encoding="utf-8") == render_template()


def test_template_names_every_key_of_every_section():
    text = TEMPLATE.read_text(encoding="utf-8")
    for name in SECTIONS:
        assert f"\n[{name}]\n" in text
        for f in dataclasses.fields(getattr(Config(), name)):
            assert re.search(rf"^# {f.name} = ", text, re.M), f"{name}.{f.name}"


def test_template_as_shipped_gives_the_defaults():
    config = parse_config(TEMPLATE.read_bytes(), "teletype.toml")
    # [network]'s keys are live and empty: "" is "not set" (the oneshot's to read).
    assert set(config.network.values()) == {""}
    assert dataclasses.replace(config, source="defaults", network={}) == Config()


def test_template_with_every_key_uncommented_gives_the_defaults():
    text = re.sub(r"^# (\w+ = )", r"\1", TEMPLATE.read_text(encoding="utf-8"), flags=re.M)
    config = parse_config(text.encode(), "teletype.toml")
    # [network] is live already, every key empty (not set: the system is left
    # as it is); the oneshot checks it, and nothing else reads it.
    from appliance.config import NETWORK_KEYS

    assert set(config.network) == set(NETWORK_KEYS)
    assert dataclasses.replace(config, source="defaults", network={}) == Config()


def test_template_edited_on_windows_still_reads():
    """Notepad: CRLF line ends and a byte-order mark, and a value changed."""
    text = TEMPLATE.read_text(encoding="utf-8").replace('# channel = ""', 'channel = "mychannel"')
    data = "\ufeff".encode() + text.replace("\n", "\r\n").encode()
    assert parse_config(data, "teletype.toml").chat.channel == "mychannel"


def _boot(tmp_path: Path, cmdline: str, config: str = "dtparam=audio=on\n[all]\n") -> Path:
    boot = tmp_path / "boot"
    boot.mkdir()
    (boot / "cmdline.txt").write_text(cmdline)
    (boot / "config.txt").write_text(config)
    return boot


def _setup(boot: Path) -> None:
    subprocess.run(["sh", str(FIRMWARE / "boot-setup.sh"), str(boot)], check=True)


@pytest.mark.parametrize(
    ("before", "after"),
    [
        (  # pi-gen's stage1 and stage2, as the image has it
            "console=serial0,115200 console=tty1 root=PARTUUID=1a2b-02 rootfstype=ext4 "
            "fsck.repair=yes rootwait quiet init=/usr/lib/raspberrypi-sys-mods/firstboot\n",
            "console=tty1 root=PARTUUID=1a2b-02 rootfstype=ext4 fsck.repair=yes rootwait quiet "
            "init=/usr/lib/raspberrypi-sys-mods/firstboot\n",
        ),
        (  # older images and hand edits: every serial console, wherever it is
            "console=ttyS0,115200 console=ttyAMA0,115200n8 root=/dev/mmcblk0p2 console=serial0\n",
            "root=/dev/mmcblk0p2\n",
        ),
        ("console=tty1 root=/dev/sda2 rootwait\n", "console=tty1 root=/dev/sda2 rootwait\n"),
    ],
)
def test_boot_setup_takes_the_serial_console_off_the_teletype(tmp_path, before, after):
    boot = _boot(tmp_path, before)
    _setup(boot)
    assert (boot / "cmdline.txt").read_text() == after


def test_boot_setup_adds_the_uart_once_and_keeps_the_rest(tmp_path):
    boot = _boot(tmp_path, "console=tty1 rootwait\n", "dtparam=audio=on\n[cm4]\notg_mode=1\n")
    _setup(boot)
    _setup(boot)  # a second run changes nothing
    config = (boot / "config.txt").read_text()
    assert config.startswith("dtparam=audio=on\n[cm4]\notg_mode=1\n")
    assert config.count("# --- teletype-gpt2:") == 1
    block = config[config.index("# --- teletype-gpt2:") :]
    # The block starts with [all], so the [cm4] filter before it does not swallow it.
    assert block.splitlines()[3] == "[all]"
    assert "enable_uart=1" in block and "dtparam=uart0=on" in block
    assert block.count("dtoverlay=disable-bt") == 3  # Pi 3, Pi 4, Zero 2 W
    assert (boot / "teletype.toml").read_text() == TEMPLATE.read_text()


def test_boot_setup_keeps_a_teletype_toml_that_is_already_there(tmp_path):
    boot = _boot(tmp_path, "console=tty1\n")
    (boot / "teletype.toml").write_text('[chat]\nchannel = "mine"\n')
    _setup(boot)
    assert (boot / "teletype.toml").read_text() == '[chat]\nchannel = "mine"\n'


def test_udev_rule_names_the_uart_and_lets_usb_adapters_win():
    rules = [
        ln
        for ln in (FIRMWARE / "99-teletype.rules").read_text().splitlines()
        if ln.strip() and not ln.startswith("#")
    ]
    item = re.compile(r'^[A-Z_]+(\{[^}]+\})?(==|!=|\+=|=|:=)"[^"]*"$')
    for rule in rules:
        for part in rule.split(", "):
            assert item.match(part), part
    uart = next(r for r in rules if 'KERNEL=="ttyAMA0"' in r)
    usb = next(r for r in rules if "ttyUSB" in r)
    assert 'SYMLINK+="teletype"' in uart and 'SYMLINK+="teletype"' in usb
    priority = {r: int(re.search(r"link_priority=(-?\d+)", r).group(1)) for r in (uart, usb)}
    assert priority[usb] > priority[uart]
    gpio = next(r for r in rules if 'KERNEL=="gpiochip*"' in r)
    assert 'GROUP="gpio"' in gpio and 'MODE="0660"' in gpio


def test_stage_scripts_pass_shellcheck():
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed (make image-check installs it as root)")
    scripts = sorted((ROOT / "pi-gen-config").rglob("*.sh")) + sorted(FIRMWARE.glob("*.sh"))
    result = subprocess.run(
        ["shellcheck", "-s", "bash", *map(str, scripts)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout
    assert len(scripts) >= 8
