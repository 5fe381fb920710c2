"""The Wi-Fi password off the card: the boot partition is FAT, readable by anyone who
holds the card, so the password leaves teletype.toml (a comment stays) for a file of
root's, before anything in the file is checked.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import tomllib
from pathlib import Path
from typing import Any

from appliance.config import MAX_CONFIG_BYTES, NETWORK_KEYS
from appliance.durable import write_atomic
from appliance.logs import secret
from appliance.network.keyfile import CONNECTION_ID
from appliance.network.machine import Machine
from appliance.network.settings import NetworkProblem

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
        if match is None or match.group("key") not in NETWORK_KEYS:
            continue
        key = match.group("key")
        value = _toml_value(match.group("value"))
        if value is None or value in ("", []) or value == _toml_value(NETWORK_KEYS[key][0]):
            continue
        raise NetworkProblem(
            f"{source}: line {i + 1}: network.{key} is commented out (the line starts with #), "
            "so it is not used: remove the # at the start of the line"
        )
