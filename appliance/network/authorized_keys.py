"""[network] ssh_key in the users' ~/.ssh/authorized_keys, written as root without trusting them.

The oneshot runs as root and writes into a home that its user controls,
so nothing here follows a link: each folder from the root down to ~/.ssh
is opened with O_NOFOLLOW, authorized_keys is read only when it is a plain
file with no other name (a hard link to /etc/shadow would otherwise be
copied into a file the user owns), and it is replaced with
durable.write_atomic_in (an unguessable temporary name, O_EXCL, fchmod
and fchown, a rename). A link where a folder or the file should be is
refused with one line, before anything is written.

Every key the oneshot gives is noted in RECORD, root's alone, by account:
a key taken out of teletype.toml, or a changed ssh_user, takes it out of
every account that ever got it.
"""

from __future__ import annotations

import errno
import json
import os
import pwd
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from appliance.durable import write_atomic, write_atomic_in
from appliance.errors import ConfigError

RECORD = Path("var/lib/teletype-network/ssh-keys.json")
BEGIN = "# --- from teletype.toml [network] ssh_key (replaced at every boot) ---"
END = "# --- end of teletype.toml's keys ---"
MAX_BYTES = 1 << 20  # an authorized_keys larger than this is not one to rewrite
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class KeysProblem(ConfigError):
    """A home or authorized_keys that root must not write (a link, another file's name)."""


@dataclass(frozen=True)
class Change:
    """One account's authorized_keys as it is to be."""

    user: pwd.struct_passwd
    given: tuple[str, ...]
    lines: list[str]


def is_persons_home(user: pwd.struct_passwd) -> bool:
    """Not root's, nor a service's: their homes are not the oneshot's to write."""
    parts = user.pw_dir.split("/")
    return (
        user.pw_uid != 0
        and user.pw_dir.startswith("/home/")
        and all(p not in ("", ".", "..") for p in parts[1:])
    )


def plan(
    root: Path,
    live: bool,
    users: Iterable[pwd.struct_passwd],
    target: pwd.struct_passwd | None,
    keys: tuple[str, ...],
    first_user: pwd.struct_passwd | None,
) -> list[Change]:
    """What to write, read before anything is written: the keys in the target's file, and
    every key ever given taken out of every other account's (the first user's too, for
    cards from before the record)."""
    record = read_record(root)
    by_name = {u.pw_name: u for u in users}
    names = set(record)
    names.update(u.pw_name for u in (first_user, target) if u is not None)
    changes = []
    for name in sorted(names):
        user = by_name.get(name)
        if user is None or not is_persons_home(user):
            continue
        given = keys if target is not None and name == target.pw_name else ()
        have = _read(root, live, user)
        if have is None and not given:
            continue
        lines = _wanted(have or [], given, set(record.get(name, ())) - set(given))
        if lines != have:
            changes.append(Change(user, given, lines))
    return changes


def write(root: Path, live: bool, changes: list[Change], target: str | None,
          keys: tuple[str, ...]) -> list[str]:  # fmt: skip
    """The planned files, and the record; what changed, one phrase each."""
    record = read_record(root)
    after = {target: list(keys)} if target is not None and keys else {}
    during = {name: sorted({*record.get(name, []), *after.get(name, [])})
              for name in {*record, *after}}  # fmt: skip
    # Noted before the keys go in: a power cut between the two cannot leave a
    # key in an account that the record does not name.
    if during != record:
        _write_record(root, live, during)
    said = []
    for change in changes:
        user = change.user
        data = "".join(line + "\n" for line in change.lines)
        with _ssh_dir(root, live, user, create=True) as fd:
            owner = (user.pw_uid, user.pw_gid) if live else None
            write_atomic_in(fd, "authorized_keys", data.encode("utf-8", "surrogateescape"),
                            0o600, owner)  # fmt: skip
        if change.given:
            said.append(f"SSH keys for {user.pw_name}")
        else:
            said.append(
                f"SSH keys from teletype.toml taken out of {user.pw_name}'s authorized_keys"
            )
    if after != during:
        _write_record(root, live, after)
    return said


def read_record(root: Path) -> dict[str, list[str]]:
    try:
        record = json.loads((root / RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(record, dict):
        return {}
    return {k: [x for x in v if isinstance(x, str)] for k, v in record.items()
            if isinstance(k, str) and isinstance(v, list)}  # fmt: skip


def _write_record(root: Path, live: bool, record: dict[str, list[str]]) -> None:
    data = json.dumps(record, indent=1, sort_keys=True).encode()
    write_atomic(root / RECORD, data, mode=0o600, owner=(0, 0) if live else None)


def _wanted(have: list[str], given: tuple[str, ...], revoked: set[str]) -> list[str]:
    """The user's own lines as they are, less any key revoked, then our block."""
    own, inside = [], False
    for line in have:
        if line == BEGIN:
            inside = True
        elif line == END:
            inside = False
        elif not inside and line.strip() not in revoked:
            own.append(line)
    return [*own, BEGIN, *given, END] if given else own


class _ssh_dir:
    """~/.ssh as an open folder, reached from the root without following a link."""

    def __init__(self, root: Path, live: bool, user: pwd.struct_passwd, create: bool):
        self.where = f"{user.pw_dir}/.ssh"
        self.fd: int | None = None
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            parts = [*user.pw_dir.strip("/").split("/"), ".ssh"]
            for i, part in enumerate(parts):
                shown = "/" + "/".join(parts[: i + 1])
                try:
                    inner = os.open(part, _DIR, dir_fd=fd)
                except FileNotFoundError:
                    if part != ".ssh" or not create:
                        return
                    os.mkdir(part, 0o700, dir_fd=fd)
                    inner = os.open(part, _DIR, dir_fd=fd)
                    if live:
                        os.fchown(inner, user.pw_uid, user.pw_gid)
                except OSError as e:
                    if e.errno in (errno.ELOOP, errno.ENOTDIR):
                        raise KeysProblem(
                            f"{shown} is a link (or not a folder): SSH keys not written "
                            "(root follows no link in a user's home)"
                        ) from None
                    raise
                os.close(fd)
                fd = inner
            self.fd, fd = fd, -1
        finally:
            if fd >= 0:
                os.close(fd)

    def __enter__(self) -> int:
        if self.fd is None:
            raise FileNotFoundError(self.where)
        return self.fd

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None:
            os.close(self.fd)


def _read(root: Path, live: bool, user: pwd.struct_passwd) -> list[str] | None:
    """The lines of authorized_keys; None when there is none (or no ~/.ssh)."""
    folder = _ssh_dir(root, live, user, create=False)
    if folder.fd is None:
        return None
    shown = f"{user.pw_dir}/.ssh/authorized_keys"
    with folder as dir_fd:
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        try:
            fd = os.open("authorized_keys", flags, dir_fd=dir_fd)
        except FileNotFoundError:
            return None
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise KeysProblem(
                    f"{shown} is a link: SSH keys not written (root follows no link in a "
                    "user's home; make it a plain file)"
                ) from None
            raise
        with os.fdopen(fd, "rb") as f:
            info = os.fstat(f.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise KeysProblem(f"{shown} is not a plain file: SSH keys not written")
            if info.st_nlink != 1:
                raise KeysProblem(
                    f"{shown} has another name too (a hard link): SSH keys not written"
                )
            if live and info.st_uid not in (0, user.pw_uid):
                raise KeysProblem(f"{shown} belongs to another user: SSH keys not written")
            data = f.read(MAX_BYTES + 1)
    if len(data) > MAX_BYTES:
        raise KeysProblem(f"{shown} is larger than 1 MiB: SSH keys not written")
    return data.decode("utf-8", "surrogateescape").splitlines()
