"""teletype.toml's [network], read and checked: every setting before anything is changed,
a wrong one named with its key and file (NetworkProblem).
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from appliance.config import NETWORK_KEYS
from appliance.errors import ConfigError

# tzdata's list of ISO 3166 country codes, the Wi-Fi regulatory domains.
COUNTRIES = Path("/usr/share/zoneinfo/iso3166.tab")
KEY_TYPES = (
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
)


@dataclass(frozen=True)
class NetworkSettings:
    """[network], checked. None: not set, leave that part of the system as it is."""

    country: str | None = None
    ssid: str | None = None
    password: str | None = None  # None: not in the file (moved before, or never there)
    open: bool = False  # a network with no password
    hidden: bool = False
    hostname: str | None = None
    ssh: bool | None = None
    ssh_keys: tuple[str, ...] = ()
    ssh_user: str | None = None

    @property
    def empty(self) -> bool:
        return self == NetworkSettings()


class NetworkProblem(ConfigError):
    """A [network] setting that cannot be applied; nothing was changed."""


# --- reading and checking ------------------------------------------------------------


def parse_network(raw: Any, source: str) -> NetworkSettings:
    """[network] from the parsed TOML; NetworkProblem naming the key and the file."""
    if raw is None:
        return NetworkSettings()
    if not isinstance(raw, dict):
        raise NetworkProblem(f"{source}: network must be a section ([network]), not a value")
    for key in raw:
        if key not in NETWORK_KEYS:
            known = ", ".join(NETWORK_KEYS)
            raise NetworkProblem(f"{source}: unknown key network.{key} (known: {known})")

    # Empty is "not set" for every key: the template has each one live and empty.
    def text(key: str) -> str | None:
        value = raw.get(key)
        if value is not None and not isinstance(value, str):
            raise NetworkProblem(f"{source}: network.{key} must be a string in quotes")
        return value or None

    def flag(key: str) -> bool | None:
        value = raw.get(key)
        if value is not None and value != "" and not isinstance(value, bool):
            raise NetworkProblem(f"{source}: network.{key} must be true or false (no quotes)")
        return None if value == "" else value

    where = f"{source}: network"
    country = _check_country(where, text("country"))
    ssid = text("ssid")
    password = text("password")
    is_open = bool(flag("open"))
    if ssid is not None:
        if len(ssid.encode()) > 32:
            raise NetworkProblem(f"{where}.ssid is longer than Wi-Fi allows (32 bytes)")
        if any(ord(c) < 0x20 or ord(c) == 0x7F for c in ssid):
            raise NetworkProblem(f"{where}.ssid has a control character in it")
        if country is None:
            raise NetworkProblem(
                f"{where}.country is needed with network.ssid: the Pi keeps its Wi-Fi off "
                "until it knows the country (two letters, e.g. GB or US)"
            )
    if password is not None:
        check_password(where, password, ssid, is_open)
    hostname = text("hostname")
    if hostname is not None:
        hostname = hostname.strip().lower()
        if not re.fullmatch(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?", hostname):
            raise NetworkProblem(
                f"{where}.hostname {hostname!r} is not a host name: letters, digits and "
                "hyphens, 63 at most, not starting or ending with a hyphen"
            )
    keys = raw.get("ssh_key", "")
    if isinstance(keys, str):
        keys = [keys]
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise NetworkProblem(f"{where}.ssh_key must be a string (or a list of them)")
    ssh_keys = tuple(_check_public_key(where, k) for k in keys if k.strip())
    ssh_user = text("ssh_user")
    if ssh_user is not None and not re.fullmatch(r"[a-z_][a-z0-9_-]{0,31}", ssh_user):
        raise NetworkProblem(f"{where}.ssh_user {ssh_user!r} is not a user name")
    ssh = flag("ssh")
    if ssh is None and ssh_keys:
        ssh = True  # a key is given to log in with it
    return NetworkSettings(
        country=country,
        ssid=ssid,
        password=password,
        open=is_open,
        hidden=bool(flag("hidden")),
        hostname=hostname,
        ssh=ssh,
        ssh_keys=ssh_keys,
        ssh_user=ssh_user,
    )


def _check_country(where: str, country: str | None) -> str | None:
    if country is None or not country.strip():
        return None
    code = country.strip().upper()
    known = _countries()
    if code == "UK":
        raise NetworkProblem(f"{where}.country is 'UK': the code for the United Kingdom is GB")
    if not re.fullmatch(r"[A-Z]{2}", code) or (known and code not in known):
        raise NetworkProblem(
            f"{where}.country {country!r} is not a country code (two letters, ISO 3166: "
            "GB, US, DE...)"
        )
    return code


def _countries() -> set[str]:
    try:
        lines = COUNTRIES.read_text(encoding="utf-8").splitlines()
    except OSError:
        return set()  # no tzdata: two letters will do
    return {line.split("\t")[0] for line in lines if line and not line.startswith("#")}


def check_password(where: str, password: str, ssid: str | None, is_open: bool) -> None:
    if ssid is None:
        raise NetworkProblem(f"{where}.password is set, but network.ssid is not")
    if is_open:
        raise NetworkProblem(
            f"{where}.open is true, and a password is given too: leave out one of them"
        )
    if len(password) == 64 and all(c in "0123456789abcdefABCDEF" for c in password):
        return  # the key itself, as wpa_passphrase prints it
    if not all(0x20 <= ord(c) <= 0x7E for c in password):
        raise NetworkProblem(
            f"{where}.password may hold only printable ASCII characters (WPA's rule)"
        )
    if not 8 <= len(password) <= 63:
        raise NetworkProblem(
            f"{where}.password must be 8 to 63 characters long (WPA's rule), not {len(password)}"
        )


# The public part of each key type, after its name: the fields of RFC 4253,
# 5656 and OpenSSH's PROTOCOL.u2f, each a length-prefixed string.
_CURVE_POINT = {"nistp256": 65, "nistp384": 97, "nistp521": 133}  # 0x04, then x and y
MIN_RSA_BITS = 2048


def _key_fields(blob: bytes) -> list[bytes] | None:
    """The blob as its length-prefixed strings; None if one is cut short."""
    fields, at = [], 0
    while at < len(blob):
        if at + 4 > len(blob):
            return None
        size = int.from_bytes(blob[at : at + 4], "big")
        at += 4
        if at + size > len(blob):
            return None
        fields.append(blob[at : at + size])
        at += size
    return fields


def _whole_key(kind: str, fields: list[bytes]) -> bool:
    """The fields after the type are what that type of key holds, no more, no less."""
    if kind == "ssh-ed25519":
        return len(fields) == 1 and len(fields[0]) == 32
    if kind == "sk-ssh-ed25519@openssh.com":
        return len(fields) == 2 and len(fields[0]) == 32 and bool(fields[1])
    if kind == "ssh-rsa":
        return len(fields) == 2 and all(f and f[0] < 0x80 and int.from_bytes(f) for f in fields)
    curve = kind.removeprefix("sk-").removeprefix("ecdsa-sha2-").removesuffix("@openssh.com")
    size = _CURVE_POINT.get(curve)
    extra = 1 if kind.startswith("sk-") else 0  # the application ("ssh:")
    return (
        size is not None
        and len(fields) == 2 + extra
        and fields[0] == curve.encode()
        and len(fields[1]) == size
        and fields[1][0] == 4
        and all(fields[2:])
    )


def _check_public_key(where: str, line: str) -> str:
    if "\n" in line or "\r" in line:
        raise NetworkProblem(
            f"{where}.ssh_key has a line break in it: one key per string; for several write "
            'a list, ssh_key = ["ssh-ed25519 AAAA... one", "ssh-ed25519 AAAA... two"]'
        )
    words = line.strip().split()
    if len(words) < 2 or words[0] not in KEY_TYPES:
        raise NetworkProblem(
            f"{where}.ssh_key is not an SSH public key (one line of a .pub file, starting "
            "with ssh-ed25519, ssh-rsa or ecdsa-sha2-...; never the private key)"
        )
    kind = words[0]
    try:
        blob = base64.b64decode(words[1], validate=True)
    except (binascii.Error, ValueError):
        raise NetworkProblem(f"{where}.ssh_key: the key's base64 is broken") from None
    fields = _key_fields(blob)
    if fields and fields[0] != kind.encode():
        raise NetworkProblem(f"{where}.ssh_key: the key does not match its type {kind}")
    if not fields or not _whole_key(kind, fields[1:]):
        raise NetworkProblem(
            f"{where}.ssh_key is not a whole {kind} key (cut short, or with bytes too many): "
            "copy the whole line of the .pub file"
        )
    if kind == "ssh-rsa":
        bits = int.from_bytes(fields[2]).bit_length()
        if bits < MIN_RSA_BITS:
            raise NetworkProblem(
                f"{where}.ssh_key is an RSA key of {bits} bits: at least {MIN_RSA_BITS} are "
                "needed (better, a new key: ssh-keygen -t ed25519)"
            )
    return " ".join(words)
