"""The Wi-Fi as a NetworkManager connection: a keyfile in
/etc/NetworkManager/system-connections, readable by root only.
"""

from __future__ import annotations

import re
from pathlib import Path

from appliance.network.settings import NetworkSettings

CONNECTION_ID = "teletype-wifi"
CONNECTIONS = Path("etc/NetworkManager/system-connections")
CONNECTION_FILE = CONNECTIONS / f"{CONNECTION_ID}.nmconnection"

# --- the NetworkManager connection ---------------------------------------------------


def keyfile(settings: NetworkSettings, password: str, connection_uuid: str) -> str:
    """The Wi-Fi as a NetworkManager keyfile (its own format for saved connections)."""
    assert settings.ssid is not None
    lines = [
        "# Made by teletype-network.service from teletype.toml's [network].",
        "[connection]",
        f"id={CONNECTION_ID}",
        f"uuid={connection_uuid}",
        "type=wifi",
        "autoconnect=true",
        "",
        "[wifi]",
        "mode=infrastructure",
        f"ssid={_keyfile_ssid(settings.ssid)}",
    ]
    if settings.hidden:
        lines.append("hidden=true")
    if password:
        lines += ["", "[wifi-security]", "key-mgmt=wpa-psk", f"psk={_keyfile_string(password)}"]
    lines += ["", "[ipv4]", "method=auto", "", "[ipv6]", "addr-gen-mode=default", "method=auto"]
    return "\n".join(lines) + "\n"


def _keyfile_string(value: str) -> str:
    # GKeyFile's escapes: a backslash, and a space that would be trimmed.
    value = value.replace("\\", "\\\\")
    if value.startswith(" "):
        value = "\\s" + value[1:]
    return value


def _keyfile_ssid(ssid: str) -> str:
    """Plain when NetworkManager reads it back unchanged, else its list of bytes."""
    plain = re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9 ._@+!$%&()*,/:<=>?^{|}~-]*", ssid)
    if plain and not ssid.endswith(" "):
        return ssid
    return "".join(f"{b};" for b in ssid.encode())


def ssid_bytes(value: str) -> bytes:
    """A keyfile's ssid= as bytes: a list of byte values ("84;101;") or a string."""
    if re.fullmatch(r"(\d{1,3};)+\d{0,3}", value):
        return bytes(int(b) for b in value.split(";") if b)
    return unescape(value).encode()


def read_keyfile(path: Path) -> dict[str, dict[str, str]]:
    sections: dict[str, dict[str, str]] = {}
    current: dict[str, str] | None = None
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
        elif "=" in line and current is not None and not line.startswith("#"):
            key, _, value = line.partition("=")
            current[key.strip()] = value
    return sections


def unescape(value: str) -> str:
    return re.sub(r"\\(.)", lambda m: {"s": " ", "\\": "\\"}.get(m.group(1), m.group(1)), value)
