"""teletype.toml's [network], applied to a root file system as teletype-network.service does.

The root is a directory laid out as Raspberry Pi OS's (etc/, home/, the
boot partition at boot/firmware); `teletype network --apply --root DIR`
changes its files only, with the real systemctl (--root) for SSH. What
NetworkManager makes of the connection is checked in the emulated Pi
(make boot-check), where NetworkManager runs.
"""

from __future__ import annotations

import base64
import datetime
import json
import shutil
import tomllib
from pathlib import Path

import pytest

from appliance.cli import main
from appliance.config import parse_config, render_config, render_template
from appliance.network.apply import IMAGER_RADIO_DONE, NM_STATE
from appliance.network.keyfile import CONNECTION_FILE, keyfile, read_keyfile
from appliance.network.password import without_password
from appliance.network.settings import NetworkProblem, parse_network
from appliance.network.ssh import KEYS_BEGIN, KEYS_END

ED25519 = (
    "ssh-ed25519 "
    + base64.b64encode(
        len(b"ssh-ed25519").to_bytes(4, "big")
        + b"ssh-ed25519"
        + (32).to_bytes(4, "big")
        + bytes(32)
    ).decode()
)
KEY = f"{ED25519} maker@laptop"
PASSWORD = "correct horse battery"

NETWORK = f"""\
[teletype]
cr_fills = 3  # the user's own comment stays

[network]
# Wi-Fi at home
country = "GB"
ssid = "Teletype Lab"
password = "{PASSWORD}"
hostname = "asr33"
ssh = true
ssh_key = "{KEY}"

[engine]
queue_size = 4
"""


def card(tmp_path: Path, toml: str = NETWORK) -> Path:
    """A root as a fresh Raspberry Pi OS card has it, after the first user was made."""
    root = tmp_path / "root"
    for d in ("etc/NetworkManager/system-connections", "home/maker", "boot/firmware",
              "var/lib/systemd/rfkill", "var/lib/NetworkManager", "lib/systemd/system",
              "etc/systemd/system/multi-user.target.wants"):  # fmt: skip
        (root / d).mkdir(parents=True, exist_ok=True)
    (root / "etc/passwd").write_text(
        "root:x:0:0:root:/root:/bin/bash\n"
        "maker:x:1000:1000:,,,:/home/maker:/bin/bash\n"
        "teletype:x:999:999::/var/lib/teletype-gpt2:/usr/sbin/nologin\n"
    )
    (root / "etc/hostname").write_text("teletype\n")
    (root / "etc/hosts").write_text(
        "127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost\n\n127.0.1.1\t\tteletype\n"
    )
    (root / "boot/firmware/cmdline.txt").write_text(
        "console=tty1 root=PARTUUID=7e1e7e33-02 rootfstype=ext4 fsck.repair=yes rootwait\n"
    )
    (root / "var/lib/systemd/rfkill/platform-3f300000.mmcnr:wlan").write_text("1\n")
    (root / "var/lib/NetworkManager/NetworkManager.state").write_text(
        "[main]\nWirelessEnabled=false\n"
    )
    (root / "lib/systemd/system/ssh.service").write_text(
        "[Unit]\nDescription=OpenBSD Secure Shell server\n[Service]\nExecStart=/usr/sbin/sshd -D\n"
        "[Install]\nWantedBy=multi-user.target\n"
    )
    (root / "boot/firmware/teletype.toml").write_bytes(toml.encode())
    return root


def apply(root: Path) -> int:
    return main(["network", "--apply", "--root", str(root)])


def snapshot(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): (p.read_bytes() if p.is_file() else b"<dir>")
        for p in sorted(root.rglob("*"))
    }


def refused_with_the_password_moved(root: Path, before: dict[str, bytes]) -> bool:
    """Nothing changed but what the password's first move does: off the card, into root's
    own keeping."""
    toml = "boot/firmware/teletype.toml"
    kept = ("var/lib/teletype-network", "var/lib/teletype-network/wifi-password")
    after = snapshot(root)
    card_now = after.pop(toml).decode()
    card_before = before.pop(toml).decode()
    password = tomllib.loads(card_before).get("network", {}).get("password")
    return (
        {k: v for k, v in after.items() if k not in kept} == before
        and (not password or password not in card_now)
        and (not password or after.get(kept[1]) == password.encode())
    )


needs_systemctl = pytest.mark.skipif(
    shutil.which("systemctl") is None, reason="systemctl --root enables ssh (package: systemd)"
)


# --- the whole of it --------------------------------------------------------------------


@needs_systemctl
def test_network_settings_are_applied_and_the_password_leaves_the_card(tmp_path):
    root = card(tmp_path)
    assert apply(root) == 0

    connection = root / CONNECTION_FILE
    assert connection.stat().st_mode & 0o777 == 0o600  # NetworkManager ignores a looser one
    saved = read_keyfile(connection)
    assert saved["connection"]["id"] == "teletype-wifi"
    assert saved["connection"]["type"] == "wifi"
    assert saved["wifi"]["ssid"] == "Teletype Lab"
    assert saved["wifi-security"] == {"key-mgmt": "wpa-psk", "psk": PASSWORD}
    assert saved["ipv4"]["method"] == "auto"

    toml = (root / "boot/firmware/teletype.toml").read_text()
    assert PASSWORD not in toml
    assert "# password: moved to NetworkManager (teletype-wifi)" in toml
    # Only that line changed: the user's comments and the other settings stay.
    moved = next(line for line in toml.splitlines() if line.startswith("# password: moved"))
    assert toml.replace(moved, f'password = "{PASSWORD}"') == NETWORK
    assert "password" not in tomllib.loads(toml)["network"]

    assert (root / "etc/hostname").read_text() == "asr33\n"
    hosts = (root / "etc/hosts").read_text().splitlines()
    assert "127.0.1.1\tasr33" in hosts and not any("teletype" in h for h in hosts)
    assert hosts[0] == "127.0.0.1\tlocalhost"

    cmdline = (root / "boot/firmware/cmdline.txt").read_text()
    assert cmdline.split()[-1] == "cfg80211.ieee80211_regdom=GB"
    assert len(cmdline.splitlines()) == 1 and "rootwait" in cmdline
    assert (root / "var/lib/systemd/rfkill/platform-3f300000.mmcnr:wlan").read_text() == "0\n"
    assert "WirelessEnabled=true" in (root / NM_STATE).read_text()

    keys = root / "home/maker/.ssh/authorized_keys"
    assert keys.read_text().splitlines()[1:] == [KEY, KEYS_END]
    assert keys.stat().st_mode & 0o777 == 0o600
    assert (root / "home/maker/.ssh").stat().st_mode & 0o777 == 0o700
    assert (root / "etc/systemd/system/multi-user.target.wants/ssh.service").is_symlink()


@needs_systemctl
def test_applying_again_changes_nothing_and_keeps_the_moved_password(tmp_path):
    root = card(tmp_path)
    assert apply(root) == 0
    before = snapshot(root)
    times = {p: (root / p).stat().st_mtime_ns for p in before if (root / p).is_file()}
    assert apply(root) == 0
    assert snapshot(root) == before
    assert times == {p: (root / p).stat().st_mtime_ns for p in times}


@needs_systemctl
def test_a_new_password_for_the_same_network_replaces_the_old_one(tmp_path):
    root = card(tmp_path)
    assert apply(root) == 0
    uuid_before = read_keyfile(root / CONNECTION_FILE)["connection"]["uuid"]
    toml = root / "boot/firmware/teletype.toml"
    text = toml.read_text()
    toml.write_text(text.replace("# password: moved", 'password = "a brand new one"\n# moved'))
    assert apply(root) == 0
    saved = read_keyfile(root / CONNECTION_FILE)
    assert saved["wifi-security"]["psk"] == "a brand new one"
    assert saved["connection"]["uuid"] == uuid_before  # the same connection, changed
    assert "a brand new one" not in toml.read_text()


@needs_systemctl
@needs_systemctl
def test_a_key_taken_out_of_the_settings_no_longer_logs_in(tmp_path):
    root = card(tmp_path)
    keys = root / "home/maker/.ssh/authorized_keys"
    keys.parent.mkdir(mode=0o700)
    keys.write_text("ssh-ed25519 AAAAmine maker@desk\n")  # the user's own, kept
    assert apply(root) == 0
    assert keys.read_text().splitlines() == [
        "ssh-ed25519 AAAAmine maker@desk",
        KEYS_BEGIN,
        KEY,
        KEYS_END,
    ]
    toml = root / "boot/firmware/teletype.toml"
    toml.write_text("".join(x for x in toml.read_text().splitlines(True) if "ssh_key" not in x))
    assert apply(root) == 0
    assert keys.read_text().splitlines() == ["ssh-ed25519 AAAAmine maker@desk"]


def test_no_network_section_also_revokes_the_keys_it_gave(tmp_path):
    root = card(tmp_path)
    if shutil.which("systemctl") is None:
        pytest.skip("systemctl --root enables ssh (package: systemd)")
    assert apply(root) == 0
    (root / "boot/firmware/teletype.toml").write_text("[engine]\nqueue_size = 4\n")
    assert apply(root) == 0
    assert (root / "home/maker/.ssh/authorized_keys").read_text() == ""


@pytest.mark.parametrize("user", ["root", "teletype"])
def test_keys_only_go_to_a_persons_account(tmp_path, user):
    toml = NETWORK.replace("[network]\n", f'[network]\nssh_user = "{user}"\n')
    root = card(tmp_path, toml)
    before = snapshot(root)
    assert apply(root) == 78
    assert refused_with_the_password_moved(root, before)


def test_the_password_is_overwritten_where_it_lay_on_the_card(tmp_path):
    from appliance.network.password import overwrite_secret

    path = tmp_path / "teletype.toml"
    long_line = '[network]\nssid = "x"\npassword = "a rather long password of forty characters"\n'
    for text in (long_line, '[network]\nssid = "x"\npassword="12345678"\n'):
        data = text.encode()
        path.write_bytes(data)
        inode = path.stat().st_ino
        after = without_password(data, "t.toml", datetime.date(2026, 11, 28))
        assert after is not None
        overwrite_secret(path, data, after)
        assert path.read_bytes() == after
        assert b"12345678" not in path.read_bytes() and b"forty" not in path.read_bytes()
        # A comment that fits where the password was: the same file, no new clusters.
        if len(text.splitlines()[2]) >= len(after.decode().splitlines()[2]):
            assert path.stat().st_ino == inode


def test_a_connection_networkmanager_rewrote_is_still_ours(tmp_path):
    root = card(tmp_path)
    if shutil.which("systemctl") is None:
        pytest.skip("systemctl --root enables ssh (package: systemd)")
    assert apply(root) == 0
    connection = root / CONNECTION_FILE
    # nmcli connection modify writes the SSID in its own spelling.
    text = connection.read_text().replace(
        "ssid=Teletype Lab", "ssid=" + "".join(f"{b};" for b in b"Teletype Lab")
    )
    connection.write_text(text)
    assert apply(root) == 0  # the password (moved) is still found there


def test_ssh_off_disables_the_server(tmp_path):
    root = card(tmp_path)
    assert apply(root) == 0
    toml = root / "boot/firmware/teletype.toml"
    toml.write_text(toml.read_text().replace("ssh = true", "ssh = false"))
    assert apply(root) == 0
    assert not (root / "etc/systemd/system/multi-user.target.wants/ssh.service").exists()


def test_a_key_alone_turns_ssh_on_and_ssh_false_keeps_it_off():
    assert parse_network({"ssh_key": KEY}, "t").ssh is True
    assert parse_network({"ssh_key": KEY, "ssh": False}, "t").ssh is False
    assert parse_network({"hostname": "asr33"}, "t").ssh is None  # left as Imager left it


def test_a_card_without_network_settings_is_left_alone(tmp_path):
    root = card(tmp_path, "[engine]\nqueue_size = 4\n")
    before = snapshot(root)
    assert apply(root) == 0
    assert snapshot(root) == before


# --- wrong settings: one line, nothing changed -----------------------------------------


WRONG = [
    ('country = "UK"', "network.country is 'UK': the code for the United Kingdom is GB"),
    ('country = "XX"', "network.country 'XX' is not a country code"),
    ('country = ""', "network.country is needed with network.ssid"),
    ('password = "short"', "network.password must be 8 to 63 characters long"),
    ('password = "pässwörd-with-umlauts"', "network.password may hold only printable ASCII"),
    ('ssid = "' + "x" * 33 + '"', "network.ssid is longer than Wi-Fi allows"),
    ('hostname = "my_teletype"', "network.hostname 'my_teletype' is not a host name"),
    ('hostname = "-teletype"', "network.hostname '-teletype' is not a host name"),
    ("ssh = 1", "network.ssh must be true or false"),
    ('ssh_key = "-----BEGIN OPENSSH PRIVATE KEY-----"', "network.ssh_key is not an SSH public key"),
    ('ssh_key = "ssh-ed25519 AAAA!!!!"', "network.ssh_key: the key's base64 is broken"),
    ('ssh_key = "ssh-rsa ' + ED25519.split()[1] + '"', "does not match its type ssh-rsa"),
    ('ssh_user = "nobody-here"', "network.ssh_user: there is no user 'nobody-here'"),
    ('wifi = "Teletype Lab"', "unknown key network.wifi"),
]


@pytest.mark.parametrize(("line", "message"), WRONG, ids=[w[0][:24] for w in WRONG])
def test_a_wrong_setting_is_one_line_naming_it_and_nothing_is_changed(tmp_path, capsys, line,
                                                                        message):  # fmt: skip
    key = line.split(" =")[0]
    toml = NETWORK
    if f"\n{key} =" in toml:
        toml = "\n".join(line if x.startswith(f"{key} =") else x for x in toml.splitlines()) + "\n"
    else:
        toml = toml.replace("[network]\n", f"[network]\n{line}\n")
    root = card(tmp_path, toml)
    before = snapshot(root)
    result = tmp_path / "result.json"
    from appliance.network.machine import Machine
    from appliance.network.oneshot import run_network

    code = run_network(root / "boot/firmware/teletype.toml", True, Machine(root, live=False),
                       result)  # fmt: skip
    assert code == 78
    assert refused_with_the_password_moved(root, before)  # not half-applied: not applied at all
    problem = json.loads(result.read_text())["problem"]
    assert message in problem
    assert str(root / "boot/firmware/teletype.toml") in problem
    assert PASSWORD not in problem and PASSWORD not in capsys.readouterr().err
    assert "\n" not in problem


def test_an_ssh_key_with_no_user_to_take_it_is_refused_before_anything_changes(tmp_path):
    root = card(tmp_path)
    passwd = root / "etc/passwd"
    passwd.write_text("".join(x for x in passwd.read_text().splitlines(True) if "1000" not in x))
    before = snapshot(root)
    assert apply(root) == 78
    assert refused_with_the_password_moved(root, before)


def test_the_check_without_apply_names_the_problem_and_shows_no_secret(tmp_path, capsys):
    root = card(tmp_path)
    assert main(["network", "--config", str(root / "boot/firmware/teletype.toml")]) == 0
    out = capsys.readouterr().out
    assert "Wi-Fi: 'Teletype Lab' (password in the file), country GB" in out
    assert "hostname: asr33 (asr33.local)" in out and "SSH: on" in out
    assert PASSWORD not in out and ED25519.split()[1] not in out
    (root / "boot/firmware/teletype.toml").write_text('[network]\ncountry = "UK"\n')
    assert main(["network", "--config", str(root / "boot/firmware/teletype.toml")]) == 78
    assert "the code for the United Kingdom is GB" in capsys.readouterr().err


# --- the password's line ----------------------------------------------------------------


def test_the_password_line_goes_and_every_other_byte_stays():
    today = datetime.date(2026, 11, 28)
    original = ('\ufeff[network]\r\nssid = "x"\r\npassword = "12345678" # mine\r\n'
                "hidden = true\r\n").encode()  # fmt: skip
    changed = without_password(original, "t.toml", today)
    assert changed is not None
    assert changed.startswith(b"\xef\xbb\xbf")  # Notepad's byte-order mark kept
    lines = changed.split(b"\r\n")
    assert lines[2].startswith(b"# password: moved to NetworkManager (teletype-wifi) on 2026-11-28")
    assert changed.replace(lines[2], b'password = "12345678" # mine') == original
    assert without_password(changed, "t.toml", today) is None


@pytest.mark.parametrize(
    "toml",
    [
        'network = { ssid = "x", password = "12345678" }\n',
        '[network]\nssid = "x"\npassword = """\n12345678"""\n',
        'network.ssid = "x"\nnetwork.password = "12345678"\n',
    ],
    ids=["inline table", "multi-line string", "dotted keys"],
)
def test_a_password_that_cannot_be_taken_out_cleanly_is_refused(toml):
    with pytest.raises(NetworkProblem, match="must be on one line of its own under"):
        without_password(toml.encode(), "t.toml", datetime.date(2026, 11, 28))


# --- NetworkManager's keyfile ----------------------------------------------------------


def test_the_keyfile_escapes_what_networkmanager_would_misread():
    settings = parse_network(
        {"country": "DE", "ssid": "Café; Gäste", "password": " back\\slash ", "hidden": True}, "t"
    )
    text = keyfile(settings, settings.password or "", "0" * 8 + "-0000-4000-8000-" + "0" * 12)
    wifi = dict(line.split("=", 1) for line in text.split("[wifi]")[1].split("\n\n")[0].split()
                if "=" in line)  # fmt: skip
    # An SSID NetworkManager would not read back as written goes as its bytes.
    assert wifi["ssid"] == "".join(f"{b};" for b in "Café; Gäste".encode())
    assert wifi["hidden"] == "true"
    assert "psk=\\sback\\\\slash \n" in text


def test_an_open_network_is_said_so_and_has_no_security_section(tmp_path):
    settings = parse_network({"country": "US", "ssid": "Museum Guest", "open": True}, "t")
    assert settings.open and "[wifi-security]" not in keyfile(settings, "", "u")
    with pytest.raises(NetworkProblem, match="open is true, and a password is given too"):
        parse_network({"country": "US", "ssid": "M", "open": True, "password": PASSWORD}, "t")


# --- Raspberry Pi Imager's Wi-Fi on this image -------------------------------------------


def test_imagers_wifi_gets_networkmanagers_radio_switched_on_once(tmp_path):
    root = card(tmp_path, "[engine]\nqueue_size = 4\n")
    # What Imager's first-boot script leaves: a connection and the country.
    (root / "etc/NetworkManager/system-connections/preconfigured.nmconnection").write_text(
        "[connection]\nid=preconfigured\ntype=wifi\n[wifi]\nssid=Home\n"
    )
    cmdline = root / "boot/firmware/cmdline.txt"
    cmdline.write_text(cmdline.read_text().strip() + " cfg80211.ieee80211_regdom=FR\n")
    assert apply(root) == 0
    assert "WirelessEnabled=true" in (root / NM_STATE).read_text()
    assert (root / IMAGER_RADIO_DONE).exists()
    # The owner turns the radio off later: that is theirs to decide.
    (root / NM_STATE).write_text("[main]\nWirelessEnabled=false\n")
    assert apply(root) == 0
    assert "WirelessEnabled=false" in (root / NM_STATE).read_text()


# --- the settings file ---------------------------------------------------------------------


def test_the_template_shows_network_and_a_wrong_network_never_stops_the_engine():
    template = render_template()
    assert "\n[network]\n" in template
    # Live and empty: a value goes between the quotes, with no "#" to remove.
    for key in ("country", "ssid", "password", "open", "hidden", "hostname", "ssh", "ssh_key",
                "ssh_user"):  # fmt: skip
        assert f'\n{key} = ""  # ' in template
    settings = tomllib.loads(template)
    assert parse_network(settings["network"], "t").empty
    assert {k: v for k, v in settings.items() if k != "network"} == {
        s: {} for s in settings if s != "network"
    }
    # The engine, the button and the chat bridge read the same file: a
    # mistake in [network] is the oneshot's to report, on paper.
    config = parse_config(b'[network]\ncountry = "UK"\npassword = "12345678"\n', "t.toml")
    shown = render_config(config)
    assert 'password = "********"' in shown and "12345678" not in shown


def test_the_unit_runs_the_command_before_networkmanager_and_sshd():
    unit = (Path(__file__).parent.parent / "appliance/systemd/teletype-network.service").read_text()
    assert "ExecStart=/opt/teletype-gpt2/venv/bin/teletype network --apply" in unit
    before = " ".join(x.split("=", 1)[1] for x in unit.splitlines() if x.startswith("Before="))
    for unit_name in ("network-pre.target", "NetworkManager.service", "ssh.service",
                      "avahi-daemon.service", "teletype-engine.service"):  # fmt: skip
        assert unit_name in before.split()
    assert "RequiresMountsFor=/boot/firmware" in unit
    # Ordered before the network and sshd, so a hang must not hold them for
    # ever: a start timeout, and only ordering (a failure lets them start).
    timeout = [x.split("=", 1)[1] for x in unit.splitlines() if x.startswith("TimeoutStartSec=")]
    assert timeout and timeout[0].endswith("s") and 0 < int(timeout[0][:-1]) <= 120
    assert not any(
        x.startswith(("Requires=", "RequiredBy=", "BindsTo=")) for x in unit.splitlines()
    )


def test_the_result_for_the_engine_holds_no_secret(tmp_path):
    root = card(tmp_path)
    result = tmp_path / "result.json"
    from appliance.network.machine import Machine
    from appliance.network.oneshot import run_network

    if shutil.which("systemctl") is None:
        pytest.skip("systemctl --root enables ssh (package: systemd)")
    run_network(root / "boot/firmware/teletype.toml", True, Machine(root, live=False), result)
    text = result.read_text()
    assert PASSWORD not in text and ED25519.split()[1] not in text
    assert result.stat().st_mode & 0o777 == 0o644  # the engine (not root) reads it
    assert "Wi-Fi connection teletype-wifi" in text


# --- a hostile local user: root never writes through a link they placed ------------------

SHADOW = "root:$6$rootsecret$hash:19000:0:99999:7:::\n"


def hostile_card(tmp_path: Path, toml: str = NETWORK) -> tuple[Path, Path]:
    """The card, with an /etc/shadow for the user's links to point at."""
    root = card(tmp_path, toml)
    shadow = root / "etc/shadow"
    shadow.write_text(SHADOW)
    shadow.chmod(0o640)
    return root, shadow


def run_on(root: Path, tmp_path: Path) -> tuple[int, str]:
    from appliance.network.machine import Machine
    from appliance.network.oneshot import run_network

    result = tmp_path / "result.json"
    code = run_network(root / "boot/firmware/teletype.toml", True, Machine(root, live=False),
                       result)  # fmt: skip
    return code, json.loads(result.read_text())["problem"] or ""


def no_copy_of_the_shadow(root: Path) -> bool:
    """No file in a home holds the shadow's lines, but the shadow itself under another name."""
    shadow = (root / "etc/shadow").stat().st_ino
    return not any(
        "rootsecret" in p.read_text(errors="replace")
        for p in (root / "home").rglob("*")
        if p.is_file() and not p.is_symlink() and p.stat().st_ino != shadow
    )


@needs_systemctl
def test_authorized_keys_linked_to_another_file_is_refused_and_that_file_untouched(tmp_path):
    root, shadow = hostile_card(tmp_path)
    ssh = root / "home/maker/.ssh"
    ssh.mkdir(mode=0o700)
    (ssh / "authorized_keys").symlink_to(shadow)
    code, problem = run_on(root, tmp_path)
    assert shadow.read_text() == SHADOW and shadow.stat().st_mode & 0o777 == 0o640
    assert no_copy_of_the_shadow(root)
    assert code == 78 and "authorized_keys" in problem and "link" in problem
    assert "\n" not in problem


@needs_systemctl
def test_a_hard_link_to_another_file_is_neither_written_nor_copied(tmp_path):
    root, shadow = hostile_card(tmp_path)
    ssh = root / "home/maker/.ssh"
    ssh.mkdir(mode=0o700)
    (ssh / "authorized_keys").hardlink_to(shadow)
    code, problem = run_on(root, tmp_path)
    assert shadow.read_text() == SHADOW
    assert no_copy_of_the_shadow(root)
    assert code == 78 and "authorized_keys" in problem


@needs_systemctl
def test_an_ssh_folder_linked_elsewhere_is_refused(tmp_path):
    root, shadow = hostile_card(tmp_path)
    (root / "home/maker/.ssh").symlink_to(root / "etc")
    before = sorted(p.name for p in (root / "etc").iterdir())
    code, problem = run_on(root, tmp_path)
    assert sorted(p.name for p in (root / "etc").iterdir()) == before
    assert shadow.read_text() == SHADOW
    assert code == 78 and ".ssh" in problem and "link" in problem


@pytest.mark.parametrize("with_key", [True, False], ids=["ssh_key set", "no ssh_key"])
def test_a_link_at_the_temporary_name_is_never_followed(tmp_path, with_key):
    import os

    toml = NETWORK if with_key else NETWORK.replace(f'ssh_key = "{KEY}"\n', "")
    root, shadow = hostile_card(tmp_path, toml)
    ssh = root / "home/maker/.ssh"
    ssh.mkdir(mode=0o700)
    # The user plants the block's marker, so that the oneshot rewrites the file,
    # and links the name the temporary file used to get (it was predictable).
    (ssh / "authorized_keys").write_text(f"{KEYS_BEGIN}\nssh-ed25519 AAAAold x\n{KEYS_END}\n")
    (ssh / f".authorized_keys.{os.getpid()}").symlink_to(shadow)
    if shutil.which("systemctl") is None:
        pytest.skip("systemctl --root enables ssh (package: systemd)")
    code, problem = run_on(root, tmp_path)
    assert shadow.read_text() == SHADOW and shadow.stat().st_mode & 0o777 == 0o640
    assert code == 0, problem
    lines = (ssh / "authorized_keys").read_text().splitlines()
    assert lines == ([KEYS_BEGIN, KEY, KEYS_END] if with_key else [])


# --- every key it gave, taken back from every account ------------------------------------


def with_second_user(root: Path) -> Path:
    with (root / "etc/passwd").open("a") as f:
        f.write("bob:x:1001:1001:,,,:/home/bob:/bin/bash\n")
    (root / "home/bob").mkdir()
    return root / "home/bob/.ssh/authorized_keys"


@needs_systemctl
@pytest.mark.parametrize("change", ["ssh_user removed", "ssh_key removed", "section removed"])
def test_a_key_given_to_another_account_is_taken_back(tmp_path, change):
    toml = NETWORK.replace("[network]\n", '[network]\nssh_user = "bob"\n')
    root = card(tmp_path, toml)
    bobs = with_second_user(root)
    makers = root / "home/maker/.ssh/authorized_keys"
    assert apply(root) == 0
    assert KEY in bobs.read_text() and not makers.exists()
    record = root / "var/lib/teletype-network/ssh-keys.json"
    assert record.stat().st_mode & 0o777 == 0o600  # root's alone
    path = root / "boot/firmware/teletype.toml"
    text = path.read_text()
    if change == "ssh_user removed":
        text = text.replace('ssh_user = "bob"\n', "")
    elif change == "ssh_key removed":
        text = text.replace(f'ssh_key = "{KEY}"\n', "")
    else:
        text = text.split("[network]")[0]
    path.write_text(text)
    assert apply(root) == 0
    assert KEY not in bobs.read_text()
    if change == "ssh_user removed":
        assert KEY in makers.read_text()
    else:
        assert not makers.exists() or KEY not in makers.read_text()


# --- keys read for what they are ----------------------------------------------------------


def blob(*parts: bytes) -> str:
    return base64.b64encode(b"".join(len(p).to_bytes(4, "big") + p for p in parts)).decode()


def mpint(bits: int) -> bytes:
    return b"\x00" + b"\xff" * (bits // 8)  # the top bit set: a leading zero byte


BAD_KEYS = [
    ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5", "not a whole ssh-ed25519 key"),
    ("ssh-ed25519 " + blob(b"ssh-ed25519", bytes(31)), "not a whole ssh-ed25519 key"),
    ("ssh-ed25519 " + blob(b"ssh-ed25519", bytes(32), b"extra"), "not a whole ssh-ed25519 key"),
    ("ssh-rsa " + blob(b"ssh-rsa", b"\x01\x00\x01", mpint(1024)), "1024 bits"),
    ("ecdsa-sha2-nistp256 " + blob(b"ecdsa-sha2-nistp256", b"nistp384", b"\x04" + bytes(96)),
     "not a whole ecdsa-sha2-nistp256 key"),
    ("ecdsa-sha2-nistp256 " + blob(b"ecdsa-sha2-nistp256", b"nistp256", b"\x04" + bytes(10)),
     "not a whole ecdsa-sha2-nistp256 key"),
    ("ssh-dss " + blob(b"ssh-dss", bytes(20)), "not an SSH public key"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("key", "message"), BAD_KEYS, ids=[f"bad{i}" for i in range(len(BAD_KEYS))]
)
def test_a_key_is_checked_inside_not_only_by_its_type_word(key, message):
    with pytest.raises(NetworkProblem, match=message) as caught:
        parse_network({"ssh_key": key}, "t.toml")
    assert "\n" not in str(caught.value)


def test_a_line_break_inside_ssh_key_is_refused_asking_for_a_list():
    with pytest.raises(NetworkProblem, match=r"line break.*list") as caught:
        parse_network({"ssh_key": f"{KEY}\n{KEY}"}, "t.toml")
    assert "ssh_key = [" in str(caught.value)


GOOD_KEYS = [
    ("ssh-rsa " + blob(b"ssh-rsa", b"\x01\x00\x01", mpint(2048))),
    ("ecdsa-sha2-nistp256 " + blob(b"ecdsa-sha2-nistp256", b"nistp256", b"\x04" + bytes(64))),
    ("ecdsa-sha2-nistp384 " + blob(b"ecdsa-sha2-nistp384", b"nistp384", b"\x04" + bytes(96))),
    ("ecdsa-sha2-nistp521 " + blob(b"ecdsa-sha2-nistp521", b"nistp521", b"\x04" + bytes(132))),
    ("sk-ssh-ed25519@openssh.com " + blob(b"sk-ssh-ed25519@openssh.com", bytes(32), b"ssh:")),
    ("sk-ecdsa-sha2-nistp256@openssh.com " + blob(b"sk-ecdsa-sha2-nistp256@openssh.com",
                                                  b"nistp256", b"\x04" + bytes(64), b"ssh:")),
]  # fmt: skip


@pytest.mark.parametrize("key", GOOD_KEYS, ids=[k.split()[0] for k in GOOD_KEYS])
def test_whole_keys_of_each_type_are_taken(key):
    assert parse_network({"ssh_key": [key + " me@there"]}, "t").ssh_keys == (key + " me@there",)


def test_keys_that_ssh_keygen_makes_are_taken(tmp_path):
    import subprocess

    if shutil.which("ssh-keygen") is None:
        pytest.skip("ssh-keygen makes the keys (package: openssh-client)")
    keys = []
    for kind, bits in (("ed25519", ""), ("ecdsa", "384"), ("rsa", "2048")):
        path = tmp_path / kind
        subprocess.run(["ssh-keygen", "-q", "-t", kind, *(["-b", bits] if bits else []), "-N", "",
                        "-C", "me@laptop", "-f", str(path)], check=True)  # fmt: skip
        keys.append(path.with_suffix(".pub").read_text().strip())
    assert parse_network({"ssh_key": keys}, "t").ssh_keys == tuple(keys)


# --- the password leaves the card, whatever else is wrong ---------------------------------

STORED = Path("var/lib/teletype-network/wifi-password")

REFUSED_ELSEWHERE = [
    (
        "[engine]\nqueue_size = 4\n",
        "[engine]\nqueue_size = 4\n[chat]\nchannel = \n",
        "not valid TOML",
    ),
    ('country = "GB"', 'country = "UK"', "the code for the United Kingdom is GB"),
    ('hostname = "asr33"', "hostname = 5", "network.hostname must be a string"),
]


@pytest.mark.parametrize(("old", "new", "message"), REFUSED_ELSEWHERE,
                         ids=["toml", "country", "type"])  # fmt: skip
def test_the_password_leaves_the_card_even_when_the_file_is_refused(tmp_path, old, new, message):
    toml = NETWORK.replace(old, new)
    root = card(tmp_path, toml)
    code, problem = run_on(root, tmp_path)
    assert code == 78 and message in problem, problem
    on_card = (root / "boot/firmware/teletype.toml").read_text()
    assert PASSWORD not in on_card and "# password: moved" in on_card
    stored = root / STORED
    assert stored.stat().st_mode & 0o777 == 0o600
    assert not (root / CONNECTION_FILE).exists()  # refused: not applied


@needs_systemctl
def test_a_password_taken_off_a_refused_file_is_used_once_the_file_is_fixed(tmp_path):
    root = card(tmp_path, NETWORK.replace('country = "GB"', 'country = "UK"'))
    assert apply(root) == 78
    path = root / "boot/firmware/teletype.toml"
    path.write_text(path.read_text().replace('country = "UK"', 'country = "GB"'))
    assert apply(root) == 0
    assert read_keyfile(root / CONNECTION_FILE)["wifi-security"]["psk"] == PASSWORD
    assert not (root / STORED).exists()  # now NetworkManager's alone


def test_a_commented_out_password_leaves_the_card_too(tmp_path):
    toml = NETWORK.replace(f'password = "{PASSWORD}"', f'# password = "{PASSWORD}"')
    root = card(tmp_path, toml)
    run_on(root, tmp_path)
    assert PASSWORD not in (root / "boot/firmware/teletype.toml").read_text()


def test_a_file_in_another_encoding_still_loses_its_password(tmp_path):
    toml = NETWORK.replace("# Wi-Fi at home", "# Wi-Fi café").encode("cp1252")
    root = card(tmp_path)
    (root / "boot/firmware/teletype.toml").write_bytes(toml)
    code, problem = run_on(root, tmp_path)
    assert code == 78 and "UTF-8" in problem
    data = (root / "boot/firmware/teletype.toml").read_bytes()
    assert PASSWORD.encode() not in data and "café".encode("cp1252") in data


@needs_systemctl
def test_a_utf16_file_from_notepad_is_read_and_keeps_its_encoding(tmp_path):
    root = card(tmp_path)
    path = root / "boot/firmware/teletype.toml"
    path.write_bytes(NETWORK.replace("\n", "\r\n").encode("utf-16"))
    assert apply(root) == 0
    assert read_keyfile(root / CONNECTION_FILE)["wifi-security"]["psk"] == PASSWORD
    text = path.read_bytes().decode("utf-16")
    assert PASSWORD not in text and "# password: moved" in text and "\r\n" in text


# --- limits ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (NETWORK + "x = " + "[" * 2000 + "]" * 2000 + "\n", "nested too deeply"),
        (NETWORK + "# padding\n" * 120_000, "larger than 1 MiB"),
    ],
    ids=["deep", "big"],
)
def test_a_file_too_deep_or_too_big_is_one_line(tmp_path, content, message):
    root = card(tmp_path, content)
    code, problem = run_on(root, tmp_path)
    assert code == 78 and message in problem and "\n" not in problem


# --- empty means not set; a value typed after the "#" --------------------------------------


def test_every_key_empty_means_not_set():
    raw = {k: "" for k in ("country", "ssid", "password", "hostname", "ssh_key", "ssh_user",
                           "hidden", "ssh", "open")}  # fmt: skip
    assert parse_network(raw, "t").empty


def test_a_value_typed_after_the_hash_is_reported_with_its_line(tmp_path):
    toml = NETWORK.replace('ssid = "Teletype Lab"', '# ssid = "Teletype Lab"')
    root = card(tmp_path, toml)
    code, problem = run_on(root, tmp_path)
    line = toml.splitlines().index('# ssid = "Teletype Lab"') + 1
    assert code == 78
    assert f"line {line}" in problem and "network.ssid" in problem and "remove the #" in problem


def test_the_templates_own_commented_lines_are_not_reported(tmp_path):
    root = card(tmp_path, render_template())
    before = snapshot(root)
    code, problem = run_on(root, tmp_path)
    assert (code, problem) == (0, "")
    assert snapshot(root) == before


def test_the_template_is_filled_in_between_the_quotes(tmp_path):
    text = render_template()
    for key, value in (("country", "GB"), ("ssid", "Home"), ("password", PASSWORD)):
        text = text.replace(f'\n{key} = ""', f'\n{key} = "{value}"')
    settings = parse_network(tomllib.loads(text)["network"], "t")
    assert (settings.country, settings.ssid, settings.password) == ("GB", "Home", PASSWORD)


# --- the read-only root: the RAM overlay forgets / at every boot ------------------------------


def next_boot_on_a_read_only_root(root: Path, before: dict[str, bytes]) -> None:
    """The root as the card's own (read-only) root has it again, as after a reboot: what was
    written to / is gone; the boot partition and the state partition keep what they hold."""
    kept = ("boot/firmware", "var/lib/teletype-network", "run")
    for path in sorted(root.rglob("*"), reverse=True):
        name = str(path.relative_to(root))
        if name.startswith(kept) or name in before:
            continue
        path.unlink() if path.is_file() or path.is_symlink() else path.rmdir()
    for name, data in before.items():
        if not name.startswith(kept) and data != b"<dir>":
            (root / name).write_bytes(data)


@needs_systemctl
def test_on_a_read_only_root_the_wifi_comes_back_at_every_boot(tmp_path):
    """NetworkManager's connection is written to the root, which a read-only root keeps in RAM:
    the password taken off the card must stay on the state partition to apply again."""
    root = card(tmp_path)
    (root / "run").mkdir()
    (root / "run/teletype-root").write_text("read-only\n")
    before = snapshot(root)
    assert apply(root) == 0
    assert read_keyfile(root / CONNECTION_FILE)["wifi-security"]["psk"] == PASSWORD
    for _ in range(2):
        next_boot_on_a_read_only_root(root, before)
        assert not (root / CONNECTION_FILE).exists()
        assert apply(root) == 0
        assert read_keyfile(root / CONNECTION_FILE)["wifi-security"]["psk"] == PASSWORD
        assert (root / "etc/hostname").read_text().strip() == "asr33"
    assert (root / STORED).stat().st_mode & 0o777 == 0o600
    assert PASSWORD not in (root / "boot/firmware/teletype.toml").read_text()


@needs_systemctl
def test_on_a_writable_root_the_password_is_networkmanagers_alone(tmp_path):
    root = card(tmp_path)
    (root / "run").mkdir()
    (root / "run/teletype-root").write_text("writable (read_only_root = false in teletype.toml)\n")
    assert apply(root) == 0
    assert not (root / STORED).exists()
    assert apply(root) == 0  # the next boot: NetworkManager still has it
    assert read_keyfile(root / CONNECTION_FILE)["wifi-security"]["psk"] == PASSWORD
