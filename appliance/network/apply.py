"""Applying [network]: the Wi-Fi connection, the country and the radio, the hostname
(/etc/hostname, /etc/hosts and the running kernel's) and SSH.
"""

from __future__ import annotations

import logging
import shutil
import socket
import struct
import subprocess
import uuid
from pathlib import Path

from appliance.durable import write_atomic
from appliance.network.keyfile import (
    CONNECTION_FILE,
    CONNECTION_ID,
    CONNECTIONS,
    keyfile,
    read_keyfile,
    ssid_bytes,
    unescape,
)
from appliance.network.machine import Machine
from appliance.network.settings import NetworkProblem, NetworkSettings
from appliance.network.ssh import give_keys, plan_keys, switch_ssh

log = logging.getLogger("teletype.network")


# NetworkManager's own switch for the Wi-Fi radio. pi-gen writes it off on an
# image built without a Wi-Fi country (ours: the country is the user's).
NM_STATE = Path("var/lib/NetworkManager/NetworkManager.state")
# Set once the radio was switched on for a Wi-Fi that Imager set up: later,
# the owner's own `nmcli radio wifi off` is left alone.
IMAGER_RADIO_DONE = Path("var/lib/teletype-network/imager-radio-on")


def apply(settings: NetworkSettings, machine: Machine) -> list[str]:
    """Everything [network] asks for; what was changed, one phrase each."""
    changed: list[str] = []
    # Checked before anything is written: a link in a home is refused here.
    keys = plan_keys(settings, machine)
    wifi = _wifi_connection(settings, machine)
    if wifi is not None:
        path, text = wifi
        write_atomic(path, text.encode(), mode=0o600, owner=(0, 0) if machine.live else None)
        changed.append(f"Wi-Fi connection {CONNECTION_ID} for {settings.ssid!r}")
    if settings.country is not None and _set_country(settings.country, machine):
        changed.append(f"Wi-Fi country {settings.country}")
    if settings.ssid is not None and _radio_on(machine):
        changed.append("Wi-Fi radio on (NetworkManager)")
    if settings.hostname is not None and _set_hostname(settings.hostname, machine):
        changed.append(f"hostname {settings.hostname}")
    changed += give_keys(settings, machine, keys)
    if settings.ssh is not None and switch_ssh(settings.ssh, machine):
        changed.append(f"SSH {'on' if settings.ssh else 'off'}")
    return changed


def _wifi_connection(settings: NetworkSettings, machine: Machine) -> tuple[Path, str] | None:
    """The keyfile to write, or None when the one there is already right."""
    if settings.ssid is None:
        return None
    path = machine.path(CONNECTION_FILE)
    existing = read_keyfile(path) if path.is_file() else {}
    # By the SSID's bytes: NetworkManager may have written the file again in
    # its own spelling (nmcli connection modify).
    same_network = (
        ssid_bytes(existing.get("wifi", {}).get("ssid", "")) == settings.ssid.encode()
        and existing.get("connection", {}).get("id") == CONNECTION_ID
    )
    password = "" if settings.open else settings.password
    if password is None:
        if not same_network:
            raise NetworkProblem(
                f"network.password is not set for the Wi-Fi {settings.ssid!r} "
                "(open = true for a network with no password)"
            )
        psk = existing.get("wifi-security", {}).get("psk")
        password = unescape(psk) if psk is not None else ""
    connection_uuid = existing.get("connection", {}).get("uuid") or str(uuid.uuid4())
    text = keyfile(settings, password, connection_uuid)
    if path.is_file() and path.read_text(encoding="utf-8") == text:
        return None
    return path, text


def _set_country(country: str, machine: Machine) -> bool:
    """The regulatory domain at every boot (the kernel's command line, as raspi-config
    sets it) and now; the Wi-Fi radio out of the soft block Raspberry Pi OS keeps it in
    until the country is known."""
    changed = False
    cmdline = machine.path("boot/firmware/cmdline.txt")
    if cmdline.is_file():
        words = cmdline.read_text(encoding="utf-8").split()
        wanted = f"cfg80211.ieee80211_regdom={country}"
        kept = [w for w in words if not w.startswith("cfg80211.ieee80211_regdom=")]
        if wanted not in words or len(kept) != len(words) - 1:
            write_atomic(cmdline, (" ".join([*kept, wanted]) + "\n").encode(), mode=None)
            changed = True
    for state in sorted(machine.path("var/lib/systemd/rfkill").glob("*:wlan")):
        if state.read_text().strip() != "0":
            write_atomic(state, b"0\n", mode=0o644)
            changed = True
    if machine.live:
        _unblock_wifi_now()
    if machine.live and shutil.which("iw"):
        try:
            machine.run(["iw", "reg", "set", country])
        except (OSError, subprocess.CalledProcessError) as e:
            log.info("iw reg set %s: %s (the next boot sets it)", country, e)
    return changed


def _unblock_wifi_now() -> None:
    """Every Wi-Fi radio out of its soft block now, and any that appears later.

    Raspberry Pi OS starts radios blocked (rfkill.default_state=0) until the
    country is set; the kernel's "change all" also sets the state a radio
    gets when its driver loads, so this holds for a radio that is not there
    yet.
    """
    wlan, change_all = 1, 3  # RFKILL_TYPE_WLAN, RFKILL_OP_CHANGE_ALL (linux/rfkill.h)
    try:
        with open("/dev/rfkill", "wb", buffering=0) as rfkill:
            rfkill.write(struct.pack("=IBBBB", 0, wlan, change_all, 0, 0))
    except OSError as e:
        log.info("cannot unblock Wi-Fi now (%s); it is unblocked at the next boot", e)


def _radio_on(machine: Machine) -> bool:
    """NetworkManager's WirelessEnabled=true, written before it starts (it reads it then)."""
    path = machine.path(NM_STATE)
    if not path.is_file():
        return False
    lines = path.read_text().splitlines()
    if not any(line.replace(" ", "") == "WirelessEnabled=false" for line in lines):
        return False
    lines = ["WirelessEnabled=true" if line.replace(" ", "") == "WirelessEnabled=false" else line
             for line in lines]  # fmt: skip
    write_atomic(path, ("\n".join(lines) + "\n").encode(), mode=0o644)
    return True


def radio_for_imager(machine: Machine) -> bool:
    """Raspberry Pi Imager's Wi-Fi works on this image too.

    Imager's first-boot script writes a NetworkManager connection and the
    country while NetworkManager is not running, so it cannot switch
    NetworkManager's radio on, and on an image built without a country
    (ours) the radio stays off. Once, when there is a Wi-Fi connection and
    a country, it is switched on here.
    """
    done = machine.path(IMAGER_RADIO_DONE)
    if done.exists():
        return False
    cmdline = machine.path("boot/firmware/cmdline.txt")
    country = cmdline.is_file() and "cfg80211.ieee80211_regdom=" in cmdline.read_text()
    folder = machine.path(CONNECTIONS)
    others = [p for p in sorted(folder.glob("*.nmconnection")) if p.name != CONNECTION_FILE.name]
    wifi = any("type=wifi" in p.read_text(errors="replace").replace(" ", "") for p in others)
    if not (country and wifi):
        return False
    switched = _radio_on(machine)
    write_atomic(done, b"", mode=0o644)
    return switched


def _set_hostname(name: str, machine: Machine) -> bool:
    changed = False
    path = machine.path("etc/hostname")
    if not path.is_file() or path.read_text().strip() != name:
        write_atomic(path, f"{name}\n".encode(), mode=0o644)
        changed = True
    # Debian's way for the name to resolve without a network: 127.0.1.1.
    hosts = machine.path("etc/hosts")
    lines = hosts.read_text().splitlines() if hosts.is_file() else ["127.0.0.1\tlocalhost"]
    wanted = f"127.0.1.1\t{name}"
    ours = [i for i, line in enumerate(lines) if line.split()[:1] == ["127.0.1.1"]]
    if [lines[i] for i in ours] != [wanted]:
        kept = [line for i, line in enumerate(lines) if i not in ours]
        at = (
            ours[0]
            if ours
            else next(
                (i + 1 for i, line in enumerate(kept) if line.startswith("127.0.0.1")), len(kept)
            )
        )
        kept.insert(at, wanted)
        write_atomic(hosts, ("\n".join(kept) + "\n").encode(), mode=0o644)
        changed = True
    if machine.live and socket.gethostname() != name:
        socket.sethostname(name)
        changed = True
    return changed
