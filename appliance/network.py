"""teletype.toml's [network]: Wi-Fi, hostname and SSH from the card alone.

A root oneshot (teletype-network.service) runs `teletype network --apply`
at every boot, before NetworkManager starts. It reads [network] from
teletype.toml on the boot partition and:

- writes a NetworkManager connection (a keyfile in
  /etc/NetworkManager/system-connections, readable by root only) for the
  Wi-Fi, sets the Wi-Fi country and takes the radio out of its soft block;
- sets the hostname (/etc/hostname, /etc/hosts, and the running kernel's);
- turns OpenSSH's server on or off and gives the first user the public key;
- then takes the Wi-Fi password out of teletype.toml, leaving a comment:
  the boot partition is FAT, and anyone with the card can read it.

Every setting is checked before anything is changed: a wrong one is one
line in the journal and on paper (the engine prints what the oneshot left
in RESULT_PATH) and nothing is applied. Running it again with the same
settings changes nothing, so it does no harm at each boot.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime
import json
import logging
import os
import pwd
import re
import shutil
import socket
import struct
import subprocess
import tomllib
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from appliance import authorized_keys
from appliance.durable import write_atomic
from appliance.errors import ConfigError
from appliance.logs import secret

log = logging.getLogger("teletype.network")

# What the oneshot found, for the engine to print (never a secret in it).
RESULT_PATH = Path("/run/teletype-network/result.json")
CONNECTION_ID = "teletype-wifi"
CONNECTIONS = Path("etc/NetworkManager/system-connections")
CONNECTION_FILE = CONNECTIONS / f"{CONNECTION_ID}.nmconnection"
# NetworkManager's own switch for the Wi-Fi radio. pi-gen writes it off on an
# image built without a Wi-Fi country (ours: the country is the user's).
NM_STATE = Path("var/lib/NetworkManager/NetworkManager.state")
# Set once the radio was switched on for a Wi-Fi that Imager set up: later,
# the owner's own `nmcli radio wifi off` is left alone.
IMAGER_RADIO_DONE = Path("var/lib/teletype-network/imager-radio-on")
FIRST_USER_UID = 1000  # Raspberry Pi OS's first user: the one Imager or userconf.txt makes
SSH_UNIT = "ssh.service"
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

# Each key: (the value an earlier template showed, commented out, help). The
# template now has every key live and empty ("" is "not set" for each), so
# that a value is filled in between the quotes with no "#" to remove; a
# commented-out line with any other value is reported (see commented_out).
KEYS: dict[str, tuple[str, str]] = {
    "country": ('"GB"', "Wi-Fi country, two letters (ISO 3166: GB, US, DE...); the radio stays "
                "off until it is set"),
    "ssid": ('""', "the Wi-Fi network's name"),
    "password": ('""', "its password (8 to 63 characters); moved off this card at the next boot"),
    "open": ("false", "true (no quotes) for a network with no password"),
    "hidden": ("false", "true (no quotes) if the network does not announce its name"),
    "hostname": ('"teletype"', "the Pi's name on the network (then NAME.local)"),
    "ssh": ("true", "OpenSSH's server: true or false, no quotes (empty: on with an ssh_key, "
            "else as Imager or the ssh file left it)"),
    "ssh_key": ('""', "a public key (one line of ~/.ssh/id_ed25519.pub) allowed to log in; "
                'several: ["...", "..."]'),
    "ssh_user": ('""', "whose key it is; empty for the first user (the one Imager or "
                 "userconf.txt made)"),
}  # fmt: skip


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
        if key not in KEYS:
            known = ", ".join(KEYS)
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
        _check_password(where, password, ssid, is_open)
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


def _check_password(where: str, password: str, ssid: str | None, is_open: bool) -> None:
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


# --- the password off the card -------------------------------------------------------

# Where a password taken off the card waits, root's alone, until NetworkManager
# has it: the card is FAT, readable by anyone who holds it, so the password
# leaves it first, before anything in the file is checked.
STORED_PASSWORD = Path("var/lib/teletype-network/wifi-password")

_HEADER = re.compile(r"\s*\[\s*([A-Za-z0-9_.\"' -]+?)\s*\]\s*(#.*)?")
_PASSWORD_LINE = re.compile(
    r"\s*(?P<hash>#\s*)?(password|\"password\"|'password')\s*=\s*"
    r"(?P<value>\"(?:[^\"\\\\]|\\\\.)*\"|'[^']*')\s*(#.*)?"
)
_COMMENTED = re.compile(r"\s*#\s*(?P<key>[a-z_]+)\s*=\s*(?P<value>\S.*)")


def _decode_lines(data: bytes) -> tuple[bytes, str, list[str]]:
    """The byte-order mark, the codec and the lines: enough to put the file back byte for byte.

    UTF-8 or UTF-16 as Notepad saves them; any other 8-bit code page is read
    as Latin-1, which gives every byte back unchanged, and a WPA password is
    ASCII in all of them.
    """
    for bom, codec in ((b"\xef\xbb\xbf", "utf-8"), (b"\xff\xfe", "utf-16-le"),
                       (b"\xfe\xff", "utf-16-be"), (b"", "utf-8")):  # fmt: skip
        if data.startswith(bom):
            try:
                return bom, codec, data[len(bom) :].decode(codec).splitlines(keepends=True)
            except UnicodeDecodeError:
                pass
    return b"", "latin-1", data.decode("latin-1").splitlines(keepends=True)


def _network_lines(lines: list[str]) -> list[tuple[int, str]]:
    """(index, line without its end) of each line under [network]."""
    section, found = None, []
    for i, line in enumerate(lines):
        body = line.rstrip("\r\n")
        header = _HEADER.fullmatch(body)
        if body.lstrip().startswith("[["):
            section = None
        elif header:
            section = header.group(1).replace('"', "").replace("'", "").strip()
        elif section == "network":
            found.append((i, body))
    return found


def _toml_value(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}").get("v")
    except (tomllib.TOMLDecodeError, RecursionError):
        return None


def _password_lines(lines: list[str]) -> list[tuple[int, str, bool]]:
    """(index, value, commented out) of each password line with a value under [network]."""
    found = []
    for i, body in _network_lines(lines):
        match = _PASSWORD_LINE.fullmatch(body)
        value = _toml_value(match.group("value")) if match else None
        if isinstance(value, str) and value:
            found.append((i, value, match.group("hash") is not None))
    return found


def _as_json(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def _toml_or_none(text: str) -> dict[str, Any] | None:
    try:
        return tomllib.loads(text)
    except (tomllib.TOMLDecodeError, RecursionError, MemoryError):
        return None


def without_password(data: bytes, source: str, today: datetime.date) -> bytes | None:
    """teletype.toml with [network]'s password lines made a comment; None if it has none.

    Every line that holds a password under [network] goes, commented out or
    not (a value typed after the "#" is a password on the card all the
    same), and the file need not be valid TOML. Only those lines change:
    the user's comments, the encoding, the byte-order mark and the line
    ends stay. NetworkProblem if the file reads as TOML and its password is
    not on a line of its own (it must not be left behind half-removed).
    """
    bom, codec, lines = _decode_lines(data)
    text = "".join(lines)
    found = _password_lines(lines)
    comment = (
        f"# password: moved to NetworkManager ({CONNECTION_ID}) on {today.isoformat()}; "
        'write password = "..." here again to change it'
    )
    for i, _, _ in found:
        lines[i] = comment + lines[i][len(lines[i].rstrip("\r\n")) :]
    after_text = "".join(lines)
    before = _toml_or_none(text)
    network = before.get("network") if before is not None else None
    if isinstance(network, dict) or (before is not None and "network" in before):
        expected = _as_json(before)
        live = [v for _, v, commented in found if not commented]
        if isinstance(network, dict) and network.get("password") and live:
            del expected["network"]["password"]
        after = _toml_or_none(after_text)
        has_password = isinstance(network, dict) and bool(network.get("password"))
        if (has_password and not live) or after is None or _as_json(after) != expected:
            raise NetworkProblem(
                f"{source}: network.password must be on one line of its own under [network] "
                '(password = "..."), so that it can be taken off the card'
            )
    if not found:
        return None
    return bom + after_text.encode(codec)


def overwrite_secret(path: Path, before: bytes, after: bytes, in_place_only: bool = False) -> None:
    """Put `after` (without_password's) in place of `before` so that no copy is left.

    A new file and a rename would leave the old clusters, password and all,
    on the FAT partition for any undelete tool. So each password line is
    first overwritten where it lies, with as much of the comment as fits;
    only if a full comment is longer is the file then replaced as a whole
    (its old clusters hold no secret by then). `in_place_only`: a file read
    only in part (too big) is never replaced.
    """
    bom, codec, old_lines = _decode_lines(before)
    new_lines = after[len(bom) :].decode(codec).splitlines(keepends=True)
    changed = [i for i, (a, b) in enumerate(zip(old_lines, new_lines, strict=True)) if a != b]
    unit = len(" ".encode(codec))
    whole = False
    with path.open("r+b") as f:
        for i in changed:
            f.seek(len(bom) + len("".join(old_lines[:i]).encode(codec)))
            room = len(old_lines[i].rstrip("\r\n").encode(codec)) // unit
            comment = new_lines[i].rstrip("\r\n")
            f.write(comment[:room].ljust(room).encode(codec))
            whole = whole or len(comment) > room
        f.flush()
        os.fsync(f.fileno())
    if whole and not in_place_only:
        write_atomic(path, after, mode=None)


def take_password_off(path: Path, data: bytes, machine: Machine, today: datetime.date) -> bytes:
    """First of all, whatever else the file holds: the password off the card, kept in
    STORED_PASSWORD (root's alone) before the card changes. What the card now holds."""
    from appliance.config import MAX_CONFIG_BYTES

    after = without_password(data, str(path), today)
    if after is None:
        return data
    found = _password_lines(_decode_lines(data)[2])
    live = [value for _, value, commented in found if not commented]
    value = (live or [value for _, value, _ in found])[-1]
    secret(value)
    write_atomic(machine.path(STORED_PASSWORD), value.encode(), mode=0o600,
                 owner=(0, 0) if machine.live else None)  # fmt: skip
    overwrite_secret(path, data, after, in_place_only=len(data) > MAX_CONFIG_BYTES)
    return after


def stored_password(machine: Machine) -> str | None:
    try:
        return machine.path(STORED_PASSWORD).read_bytes().decode()
    except (OSError, UnicodeDecodeError):
        return None


def commented_out(data: bytes, source: str) -> None:
    """A value typed after a "#" under [network]: refused with its line, never silently unused.

    The template's own values (and empty ones) are not reported.
    """
    _, _, lines = _decode_lines(data)
    for i, body in _network_lines(lines):
        match = _COMMENTED.fullmatch(body)
        if match is None or match.group("key") not in KEYS:
            continue
        key = match.group("key")
        value = _toml_value(match.group("value"))
        if value is None or value in ("", []) or value == _toml_value(KEYS[key][0]):
            continue
        raise NetworkProblem(
            f"{source}: line {i + 1}: network.{key} is commented out (the line starts with #), "
            "so it is not used: remove the # at the start of the line"
        )


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


def _ssid_bytes(value: str) -> bytes:
    """A keyfile's ssid= as bytes: a list of byte values ("84;101;") or a string."""
    if re.fullmatch(r"(\d{1,3};)+\d{0,3}", value):
        return bytes(int(b) for b in value.split(";") if b)
    return _unescape(value).encode()


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


def _unescape(value: str) -> str:
    return re.sub(r"\\(.)", lambda m: {"s": " ", "\\": "\\"}.get(m.group(1), m.group(1)), value)


# --- applying ------------------------------------------------------------------------


@dataclass
class Machine:
    """Where the settings go: a root directory, and whether it is the running system.

    On the running system (root "/") the oneshot also tells the kernel its
    new name and asks systemd to start sshd now; for a root mounted
    elsewhere only its files change (systemctl --root).
    """

    root: Path = Path("/")
    live: bool = True
    run: Callable[[list[str]], Any] = field(default=lambda argv: subprocess.run(argv, check=True))

    def path(self, relative: str | Path) -> Path:
        return self.root / Path(relative)


def apply(settings: NetworkSettings, machine: Machine) -> list[str]:
    """Everything [network] asks for; what was changed, one phrase each."""
    changed: list[str] = []
    # Checked before anything is written: a link in a home is refused here.
    keys = _plan_keys(settings, machine)
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
    changed += _give_keys(settings, machine, keys)
    if settings.ssh is not None and _switch_ssh(settings.ssh, machine):
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
        _ssid_bytes(existing.get("wifi", {}).get("ssid", "")) == settings.ssid.encode()
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
        password = _unescape(psk) if psk is not None else ""
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


def _ssh_user(settings: NetworkSettings, machine: Machine) -> pwd.struct_passwd:
    passwd = _read_passwd(machine.path("etc/passwd"))
    if settings.ssh_user is not None:
        user = next((u for u in passwd if u.pw_name == settings.ssh_user), None)
        if user is None:
            raise NetworkProblem(f"network.ssh_user: there is no user {settings.ssh_user!r}")
    else:
        user = next((u for u in passwd if u.pw_uid == FIRST_USER_UID), None)
        if user is None:
            raise NetworkProblem(
                "network.ssh_key: there is no first user to give it to yet (make one with "
                "Raspberry Pi Imager or userconf.txt, or name one in network.ssh_user)"
            )
    # A person's account: not root's, nor a service's (their homes are not the
    # oneshot's to write, and a key there would be a way in for anyone).
    if not authorized_keys.is_persons_home(user):
        raise NetworkProblem(
            f"network.ssh_user: {user.pw_name!r} is not a person's account with a home in "
            "/home (SSH keys go to the first user, or to one named here)"
        )
    return user


def _read_passwd(path: Path) -> list[pwd.struct_passwd]:
    users = []
    for line in path.read_text().splitlines():
        parts = line.split(":")
        if len(parts) == 7:
            name, password, uid, gid, gecos, home, shell = parts
            users.append(
                pwd.struct_passwd((name, password, int(uid), int(gid), gecos, home, shell))
            )
    return users


KEYS_BEGIN, KEYS_END = authorized_keys.BEGIN, authorized_keys.END


def _plan_keys(settings: NetworkSettings, machine: Machine) -> list[authorized_keys.Change]:
    """Who gets which keys, and who loses the ones given before; read, nothing written."""
    target = _ssh_user(settings, machine) if settings.ssh_keys else None
    users = _read_passwd(machine.path("etc/passwd"))
    first = next((u for u in users if u.pw_uid == FIRST_USER_UID), None)
    return authorized_keys.plan(machine.root, machine.live, users, target, settings.ssh_keys,
                                first)  # fmt: skip


def _give_keys(settings: NetworkSettings, machine: Machine,
               changes: list[authorized_keys.Change]) -> list[str]:  # fmt: skip
    target = _ssh_user(settings, machine).pw_name if settings.ssh_keys else None
    return authorized_keys.write(machine.root, machine.live, changes, target, settings.ssh_keys)


def revoke_keys(machine: Machine) -> list[str]:
    """No [network] ssh_key (or no [network]): every key it gave goes, from every account."""
    settings = NetworkSettings()
    return _give_keys(settings, machine, _plan_keys(settings, machine))


def _switch_ssh(on: bool, machine: Machine) -> bool:
    root = [] if machine.live else [f"--root={machine.root}"]
    wants = machine.path("etc/systemd/system/multi-user.target.wants") / SSH_UNIT
    if wants.exists() == on:
        return False
    machine.run(["systemctl", *root, "enable" if on else "disable", SSH_UNIT])
    if machine.live:
        # --no-block: sshd is ordered after this unit, and waits for it.
        machine.run(["systemctl", "--no-block", "start" if on else "stop", SSH_UNIT])
    return True


# --- the oneshot ---------------------------------------------------------------------


def run_network(config_path: Path | None, apply_now: bool, machine: Machine,
                result_path: Path | None = RESULT_PATH) -> int:  # fmt: skip
    """`teletype network [--apply]`: check [network], and apply it with --apply."""
    from appliance.config import find_config, parse_toml, read_capped

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
            if settings.ssid is not None:
                # NetworkManager has it now (or had it already).
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
    _check_password(f"{source}: network", stored, settings.ssid, settings.open)
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
