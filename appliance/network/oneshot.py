"""teletype.toml's [network]: Wi-Fi, hostname and SSH from the card alone.

A root oneshot (teletype-network.service) runs `teletype network --apply`
at every boot, before NetworkManager starts. It reads [network] from
teletype.toml on the boot partition and:

- writes a NetworkManager connection for the Wi-Fi (appliance.network.keyfile),
  sets the Wi-Fi country and takes the radio out of its soft block;
- sets the hostname (/etc/hostname, /etc/hosts, and the running kernel's);
- turns OpenSSH's server on or off and gives the first user the public key
  (appliance.network.ssh);
- then takes the Wi-Fi password out of teletype.toml, leaving a comment:
  the boot partition is FAT, and anyone with the card can read it
  (appliance.network.password).

Every setting is checked before anything is changed (appliance.network.settings): a
wrong one is one line in the journal and on paper (the engine prints what the oneshot
left in RESULT_PATH) and nothing is applied (appliance.network.apply). Running it again
with the same settings changes nothing, so it does no harm at each boot.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import subprocess
from pathlib import Path
from typing import Any

from appliance.config import find_config, parse_toml, read_capped
from appliance.durable import write_atomic
from appliance.errors import ConfigError
from appliance.logs import secret
from appliance.network.apply import apply, radio_for_imager
from appliance.network.machine import Machine
from appliance.network.password import (
    STORED_PASSWORD,
    commented_out,
    stored_password,
    take_password_off,
)
from appliance.network.settings import NetworkSettings, check_password, parse_network
from appliance.network.ssh import revoke_keys

log = logging.getLogger("teletype.network")


# What the oneshot found, for the engine to print (never a secret in it).
RESULT_PATH = Path("/run/teletype-network/result.json")

# --- the oneshot ---------------------------------------------------------------------


def run_network(config_path: Path | None, apply_now: bool, machine: Machine,
                result_path: Path | None = RESULT_PATH) -> int:  # fmt: skip
    """`teletype network [--apply]`: check [network], and apply it with --apply."""
    today = datetime.date.today()
    path = find_config(config_path)
    outcome: dict[str, Any] = {"problem": None, "changed": [], "wifi": None, "source": str(path)}
    taken = False
    try:
        if path is None:
            settings = NetworkSettings()
        else:
            data = read_capped(path)
            if apply_now:
                before = data
                data = take_password_off(path, data, machine, today)
                taken = data is not before
                if taken:
                    outcome["changed"].append(f"Wi-Fi password moved off {path}")
            raw = parse_toml(data, str(path))
            commented_out(data, str(path))
            settings = parse_network(raw.get("network"), str(path))
        if settings.password:
            secret(settings.password)  # never in a log line, whatever goes wrong
        outcome["wifi"] = settings.ssid
        if not apply_now:
            print(describe(settings))
            return 0
        settings = _with_stored_password(settings, machine, str(path), taken)
        if settings.empty:
            log.info("no [network] in %s: nothing to apply", path or "any teletype.toml")
            outcome["changed"] += revoke_keys(machine)
        else:
            outcome["changed"] += apply(settings, machine)
            if settings.ssid is not None and not machine.root_read_only():
                # NetworkManager has it now (or had it already), on a root that keeps it.
                # A read-only root keeps NetworkManager's connection in RAM: the copy on
                # the state partition applies it again at the next boot.
                machine.path(STORED_PASSWORD).unlink(missing_ok=True)
        # After [network] was checked and applied: a refusal changes nothing at all.
        if radio_for_imager(machine):
            outcome["changed"].append("Wi-Fi radio on for Raspberry Pi Imager's Wi-Fi")
        for what in outcome["changed"]:
            log.info("applied: %s", what)
        if not outcome["changed"] and not settings.empty:
            log.info("[network] already applied: nothing changed")
    except ConfigError as e:
        # What only the system can tell (no such user) comes without the file's name.
        outcome["problem"] = str(e) if str(e).startswith(f"{path}:") else f"{path}: {e}"
        if taken:
            outcome["problem"] += (
                " (the Wi-Fi password was taken off the card; the Pi keeps it for when this is "
                "put right)"
            )
        log.error("[network] not applied: %s", outcome["problem"])
        if not apply_now:
            raise
    except (OSError, subprocess.CalledProcessError) as e:
        # Checked settings that the system would not take (a full card, a
        # systemctl that failed): said, and tried again at the next boot.
        outcome["problem"] = f"applying [network] failed: {e}"
        log.error("%s", outcome["problem"])
    except Exception as e:
        # Never "all well" on paper when it was not.
        outcome["problem"] = f"applying [network] failed: {type(e).__name__}: {e}"
        raise
    finally:
        if apply_now and result_path is not None:
            _write_result(result_path, outcome)
    return 78 if outcome["problem"] else 0


def _with_stored_password(settings: NetworkSettings, machine: Machine, source: str,
                          taken: bool) -> NetworkSettings:  # fmt: skip
    """The password as the card last gave it, checked as if it were still in the file."""
    stored = stored_password(machine)
    if stored is None or settings.password is not None:
        return settings
    secret(stored)
    if settings.ssid is None and not taken:
        # Kept from an earlier boot, for a Wi-Fi the file no longer names.
        machine.path(STORED_PASSWORD).unlink(missing_ok=True)
        return settings
    check_password(f"{source}: network", stored, settings.ssid, settings.open)
    return dataclasses.replace(settings, password=stored)


def _write_result(path: Path, outcome: dict[str, Any]) -> None:
    try:
        write_atomic(path, json.dumps(outcome).encode(), mode=0o644)
    except OSError as e:
        log.warning("cannot leave the result for the engine in %s: %s", path, e)


def describe(settings: NetworkSettings) -> str:
    """What --apply would do, secrets left out."""
    if settings.empty:
        return "[network] is not set: nothing to apply"
    out = []
    if settings.ssid:
        how = (
            "password in the file"
            if settings.password
            else ("open network" if settings.open else "password moved off the card")
        )
        out.append(f"Wi-Fi: {settings.ssid!r} ({how}), country {settings.country}")
    if settings.hostname:
        out.append(f"hostname: {settings.hostname} ({settings.hostname}.local)")
    if settings.ssh is not None:
        out.append(f"SSH: {'on' if settings.ssh else 'off'}")
    for key in settings.ssh_keys:
        out.append(
            f"SSH key for {settings.ssh_user or 'the first user'}: {key.split()[0]} "
            f"{' '.join(key.split()[2:])}".rstrip()
        )
    return "\n".join(out)


def read_result(path: Path = RESULT_PATH) -> dict[str, Any] | None:
    """What the oneshot left this boot, for the engine's status block; None if nothing."""
    try:
        outcome = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return outcome if isinstance(outcome, dict) else None
