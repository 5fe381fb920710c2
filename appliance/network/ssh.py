"""OpenSSH on or off, and the [network] ssh_key in a person's authorized_keys (given,
moved or taken back; appliance.network.authorized_keys writes the file).
"""

from __future__ import annotations

import pwd
from pathlib import Path

from appliance.network import authorized_keys
from appliance.network.machine import Machine
from appliance.network.settings import NetworkProblem, NetworkSettings

FIRST_USER_UID = 1000  # Raspberry Pi OS's first user: the one Imager or userconf.txt makes
SSH_UNIT = "ssh.service"


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


def plan_keys(settings: NetworkSettings, machine: Machine) -> list[authorized_keys.Change]:
    """Who gets which keys, and who loses the ones given before; read, nothing written."""
    target = _ssh_user(settings, machine) if settings.ssh_keys else None
    users = _read_passwd(machine.path("etc/passwd"))
    first = next((u for u in users if u.pw_uid == FIRST_USER_UID), None)
    return authorized_keys.plan(machine.root, machine.live, users, target, settings.ssh_keys,
                                first)  # fmt: skip


def give_keys(settings: NetworkSettings, machine: Machine,
               changes: list[authorized_keys.Change]) -> list[str]:  # fmt: skip
    target = _ssh_user(settings, machine).pw_name if settings.ssh_keys else None
    return authorized_keys.write(machine.root, machine.live, changes, target, settings.ssh_keys)


def revoke_keys(machine: Machine) -> list[str]:
    """No [network] ssh_key (or no [network]): every key it gave goes, from every account."""
    settings = NetworkSettings()
    return give_keys(settings, machine, plan_keys(settings, machine))


def switch_ssh(on: bool, machine: Machine) -> bool:
    root = [] if machine.live else [f"--root={machine.root}"]
    wants = machine.path("etc/systemd/system/multi-user.target.wants") / SSH_UNIT
    if wants.exists() == on:
        return False
    machine.run(["systemctl", *root, "enable" if on else "disable", SSH_UNIT])
    if machine.live:
        # --no-block: sshd is ordered after this unit, and waits for it.
        machine.run(["systemctl", "--no-block", "start" if on else "stop", SSH_UNIT])
    return True
