"""The boot check's scenarios: what a user reaches on the Pi, each checked on the emulated
board (rig.py) as the user would reach it, with the units and code the image ships.

A scenario is a function of the results, the board and what it needs; its
title says what it covers, and each of its checks is one pass or fail,
named for what it shows. run.py runs them in order over three boots of one
card: the card as made, again after a power cut, and again after
teletype.toml was changed on the card in another computer.
"""

from __future__ import annotations

import functools
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rig import (
    BOOT_TIMEOUT,
    HERE,
    MAX_CHARS,
    MEMORY_MB,
    MOTOR_LINE,
    WIFI_PASSWORD,
    WIFI_SSID,
    Guest,
    Results,
    chat_waiting,
    engine_ready,
    engine_restarts,
    idle,
    journal_tail,
    paper_problems,
    paper_text,
    printed_words,
    read_boot_partition,
    relay_level,
    reply_on_paper,
    sectors_written,
    set_setting,
    starts_at_column_zero,
    status_block,
    tail,
    wait_for,
)

REFUSED_PASSWORD = "typed-into-a-refused-file"
STORED_PASSWORD = "/var/lib/teletype-network/wifi-password"


def scenario(title: str) -> Callable:
    """Mark a function as a scenario: its checks are reported under `title`."""

    def wrap(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def run(r: Results, *args: Any) -> Any:
            r.begin(title)
            return fn(r, *args)

        return run

    return wrap


def check_reply(r: Results, name: str, data: bytes, guest: Guest, unit: str) -> None:
    """A reply on paper: three words or more, and a clean wire."""
    problems = paper_problems(data)
    words = printed_words(data)
    r.check(
        f"{name} ({len(words)} words)",
        len(words) >= 3 and not problems,
        "\n".join(problems[:10]) + "\n" + journal_tail(guest, unit),
    )


@scenario("the card as Raspberry Pi Imager formats it")
def card_is_imager_format(r: Results, disk: Path) -> None:
    """Raspberry Pi Imager's "systemd" customisation: what this card lacks of it may only be
    Raspberry Pi OS's own packages (the root here is Debian's); what Debian and our stage
    give (systemd.run's generator, auto_initramfs=1 kept, cmdline.txt) must be there."""
    done = subprocess.run(
        [sys.executable, str(HERE.parent / "imager-repo.py"), "--check-only", str(disk)],
        capture_output=True,
        text=True,
    )
    lacking = done.stderr.strip().splitlines()
    # The kernels and their initramfs on the FAT come from Raspberry Pi OS's
    # kernel packages; the boot check's card starts Debian's kernel from QEMU.
    raspberry_pi_os = (
        "/raspberrypi-sys-mods/",
        "/userconf-pi/",
        "/imager_fixup",
        "(for kernel8.img)",
        "(for kernel_2712.img)",
    )
    r.check(
        "Imager's systemd format: the card lacks only Raspberry Pi OS's own pieces "
        f"({len(lacking)})",
        done.returncode in (0, 1)
        and all(any(p in line for p in raspberry_pi_os) for line in lacking),
        done.stderr + done.stdout,
    )


@scenario("the first boot: READY, every unit up once, the status block on paper")
def first_boot_reaches_ready(r: Results, guest: Guest) -> None:
    state = guest.out("systemctl is-system-running --wait", timeout=BOOT_TIMEOUT)
    r.check(
        f"boot finished ({state})",
        state == "running",
        guest.out("systemctl --failed --no-legend --plain; systemctl list-jobs --no-legend"),
    )
    failed = guest.out("systemctl --failed --no-legend --plain")
    detail = failed
    for unit in re.findall(r"^(\S+)", failed, re.M):
        detail += "\n" + journal_tail(guest, unit)
    r.check("systemctl --failed is empty", not failed, detail)
    r.check(
        "teletype.target reached",
        guest.out("systemctl is-active teletype.target") == "active",
        guest.out("systemctl status --no-pager teletype.target"),
    )
    r.check(
        "the engine is READY (Type=notify, active)",
        wait_for(lambda: engine_ready(guest), 120),
        journal_tail(guest, "teletype-engine"),
    )
    errors = guest.out("journalctl -b -q --no-pager -p err -u 'teletype*'")
    r.check("no errors from the appliance's units in the journal", not errors, errors)
    chat = guest.out("systemctl show -p ActiveState,Result --value teletype-chat")
    r.check(
        "the chat unit is skipped without [chat] in teletype.toml",
        sorted(chat.split()) == ["exec-condition", "inactive"],  # systemd's own order
        chat,
    )
    tracebacks = guest.out("journalctl -b --no-pager | grep -c 'Traceback' || true")
    r.check(
        "no Python traceback in the journal",
        tracebacks == "0",
        guest.out("journalctl -b --no-pager | grep -A12 Traceback | head -60"),
    )
    # No NIC here: NetworkManager's startup is over at once, so the block says
    # so without waiting out the minute (the engine logs what it was told).
    block = status_block(guest, 0)
    told = guest.out(
        "journalctl -b --no-pager -u teletype-engine | grep -c 'NetworkManager has brought up' "
        "|| true"
    )
    r.check(
        "no address: the engine asked NetworkManager (nm-online) rather than wait a minute",
        told == "1",
        journal_tail(guest, "teletype-engine"),
    )
    r.check(
        "the Teletype prints where it is (status block: name, no network yet, model, "
        "no Twitch, API, the root read-only)",
        all(
            line in block
            for line in (
                "NAME: TELETYPE (TELETYPE.LOCAL)",
                "ADDRESS: NONE YET",
                "MODEL: TELETYPE-TINY",
                "TWITCH: NOT SET UP",
                "API: ON THIS PI ONLY, 127.0.0.1:5599",
                "ROOT: READ-ONLY",
            )
        )
        and not paper_problems(guest.paper.since(0) if guest.paper else b""),
        block or paper_text(guest.paper.since(0) if guest.paper else b"")[-600:],
    )
    # Type=simple is "active" from its fork: a service that dies at start and
    # is restarted looks active now and then, so its restarts are counted too,
    # here, once the status block has come: a minute after the engine's start.
    for unit, ready in (("engine", "serving on"), ("button", "button on GPIO")):
        show = guest.out(f"systemctl show -p ActiveState,SubState,NRestarts teletype-{unit}")
        said = guest.out(f"journalctl -b --no-pager -u teletype-{unit} | grep -c '{ready}' || true")
        r.check(
            f"teletype-{unit} up at the first try ({', '.join(show.split())})",
            sorted(show.split()) == ["ActiveState=active", "NRestarts=0", "SubState=running"]
            and said == "1",
            journal_tail(guest, f"teletype-{unit}"),
        )
    page = guest.out(
        "python3 -c \"import urllib.request as u; print(*[u.urlopen('http://127.0.0.1:5599' + p)"
        ".status for p in ('/', '/panel/app.js', '/panel/style.css')])\""
    )
    r.check(
        f"the operator's panel is served by the installed engine ({page})",
        page.split() == ["200", "200", "200"],
        page + "\n" + journal_tail(guest, "teletype-engine"),
    )
    config = guest.out("teletype config")
    r.check(
        "settings read from /boot/firmware/teletype.toml",
        "/boot/firmware/teletype.toml" in config.splitlines()[0]
        and re.search(rf"(?m)^max_chars = {MAX_CHARS}\b", config) is not None
        and guest.out("findmnt -n -o FSTYPE /boot/firmware") == "vfat",
        config[:2000],
    )


@scenario("the root read-only, the state on its own partition")
def root_is_read_only(r: Results, guest: Guest) -> None:
    """The root under a RAM overlay, the state on its own journaled partition, the journal
    in RAM: and so nothing written to the root partition in a whole boot."""
    places = (
        "/",
        "/media/root-ro",
        "/var/lib/teletype",
        "/var/lib/teletype-gpt2",
        "/var/lib/teletype-network",
    )
    mounts = {where: guest.out(f"findmnt -n -o FSTYPE,OPTIONS,SOURCE {where}") for where in places}
    mode = guest.out("cat /run/teletype-root")
    fields = {where: [*found.split(), "", "", ""][:3] for where, found in mounts.items()}
    r.check(
        "the root is read-only under a RAM overlay; the state has its own partition "
        "(ext4, data=journal), the state directories bound into it",
        mode == "read-only"
        and fields["/"][0] == "overlay"
        and fields["/media/root-ro"][0] == "ext4"
        and "ro" in fields["/media/root-ro"][1].split(",")
        and fields["/var/lib/teletype"][0] == "ext4"
        and "data=journal" in fields["/var/lib/teletype"][1]
        and fields["/var/lib/teletype-gpt2"][2].endswith("[/gpt2]")
        and fields["/var/lib/teletype-network"][2].endswith("[/network]"),
        f"mode {mode!r}\n" + "\n".join(f"{k}: {v}" for k, v in mounts.items()),
    )
    boot = guest.out("findmnt -n -o OPTIONS /boot/firmware")
    r.check(
        f"the boot partition is read-only once the network oneshot is done ({boot[:20]})",
        boot.split(",")[:1] == ["ro"],
        boot + "\n" + journal_tail(guest, "teletype-network"),
    )
    journal = guest.out("journalctl --header | grep -m1 'File path'")
    written = sectors_written(guest)
    r.check(
        f"the journal is in RAM, and the root partition was not written this boot "
        f"({written.get('vda2')} sectors)",
        "/run/log/journal/" in journal and written.get("vda2") == 0,
        f"{journal}\n{written}",
    )


@scenario("the front-panel button")
def button_press_prints_a_reply(r: Results, guest: Guest) -> None:
    data = reply_on_paper(guest, guest.press_button, timeout=120)
    check_reply(r, "a button press puts a reply on paper", data, guest, "teletype-button")


@scenario("the Teletype's keyboard")
def typed_line_gets_a_reply(r: Results, guest: Guest) -> None:
    assert guest.paper is not None
    paper = guest.paper
    data = reply_on_paper(guest, lambda: paper.type("HOW DOES THE CLUTCH WORK\r"))
    check_reply(
        r, "a line typed on the keyboard gets a reply on paper", data, guest, "teletype-engine"
    )


@scenario("the HTTP route a stream's bot calls")
def seed_route_prints_and_answers(r: Results, guest: Guest) -> str:
    answer: dict = {}

    def ask() -> None:
        answer["reply"] = guest.api("GET", "/asr33bot/the%20typing%20unit", timeout=300)

    data = reply_on_paper(guest, ask)
    status, body = answer["reply"]
    text = body.get("text", "") if isinstance(body, dict) else str(body)
    want = re.sub(r"[^A-Z0-9]", "", text.upper())
    got = re.sub(r"[^A-Z0-9]", "", bytes(b & 0x7F for b in data).decode("ascii", "replace"))
    r.check(
        "GET /asr33bot/<prompt> prints and answers with what it printed",
        status == 200 and len(want) >= 10 and want in got and not paper_problems(data),
        f"status {status}, body {body!r}\npaper {data!r}",
    )
    return text


@scenario("memory")
def memory_with_every_unit_running(r: Results, guest: Guest) -> str:
    available = int(guest.out("awk '/^MemAvailable:/ {print $2}' /proc/meminfo")) // 1024
    rss = {}
    for unit in ("teletype-engine", "teletype-button"):
        pid = guest.out(f"systemctl show -p MainPID --value {unit}")
        kb = guest.out(f"awk '/^VmRSS:/ {{print $2}}' /proc/{pid}/status 2>/dev/null || echo 0")
        rss[unit] = int(kb or 0) // 1024
    overlay = guest.out("df -k --output=used /media/root-rw | tail -1") or "0"
    summary = (
        f"MemAvailable {available} MB of {MEMORY_MB} MB; RSS: engine {rss['teletype-engine']} MB, "
        f"button {rss['teletype-button']} MB; the root's RAM overlay holds {int(overlay)} KB"
    )
    # A Zero 2 W leaves Linux 448 MB: the appliance must leave room for the OS's caches.
    r.check(f"memory with every unit running: {summary}", available >= 128, summary)
    return summary


@scenario("kill -9 of the engine mid-print")
def killed_engine_restarts(r: Results, guest: Guest) -> None:
    assert guest.paper is not None
    before = engine_restarts(guest)
    mark = guest.paper.mark()
    guest.api("POST", "/v1/generate", {"wait": False})
    guest.paper.wait_printing(mark, 120)
    time.sleep(2)  # mid-line
    guest.sh("systemctl kill --signal=KILL --kill-whom=main teletype-engine")
    restarted = wait_for(lambda: engine_restarts(guest) > before and engine_ready(guest), 180)
    r.check(
        "kill -9: systemd restarts the engine", restarted, journal_tail(guest, "teletype-engine")
    )
    data = reply_on_paper(
        guest, lambda: guest.api("GET", "/asr33bot/after%20the%20crash", timeout=300)
    )
    r.check(
        "the next reply prints from column 0",
        starts_at_column_zero(data) and len(printed_words(data)) >= 3,
        f"paper after the restart: {data[:120]!r}",
    )


@scenario("a hung engine")
def hung_engine_watchdog_restarts_it(r: Results, guest: Guest) -> None:
    before = engine_restarts(guest)
    guest.sh("systemctl kill --signal=STOP --kill-whom=main teletype-engine")
    restarted = wait_for(lambda: engine_restarts(guest) > before and engine_ready(guest), 240)
    watchdog = guest.out("journalctl -b --no-pager -u teletype-engine | grep -ci watchdog || true")
    r.check(
        "a hung engine (SIGSTOP): the watchdog restarts it",
        restarted and watchdog not in ("", "0"),
        journal_tail(guest, "teletype-engine"),
    )


@scenario("a power cut mid-print")
def power_cut_mid_print(r: Results, guest: Guest, boot: Callable[[], Guest]) -> Guest:
    assert guest.paper is not None
    line = {"name": "ada", "text": "the power cut check was here"}
    status, _ = guest.api("POST", "/v1/history", line)
    r.check("a chat line is accepted before the power cut", status == 201, str(status))
    mark = guest.paper.mark()
    guest.api("POST", "/v1/generate", {"wait": False})
    guest.paper.wait_printing(mark, 120)
    time.sleep(2)
    guest.power_cut()
    guest = boot()
    if not r.check("boots again after the power cut", guest.wait_agent(), tail(guest.console)):
        return guest
    guest.sh("systemctl is-system-running --wait", timeout=BOOT_TIMEOUT)
    r.check(
        "nothing failed after the power cut",
        not guest.out("systemctl --failed --no-legend --plain"),
        guest.out("systemctl --failed --no-legend --plain"),
    )
    wait_for(lambda: engine_ready(guest), 120)
    status, history = guest.api("GET", "/v1/history")
    texts = [h.get("text") for h in history.get("lines", [])] if isinstance(history, dict) else []
    r.check("the chat history is intact", line["text"] in texts, f"{status} {history!r}")
    leftovers = guest.out(
        "find /var/lib/teletype-gpt2 -name '.*' -o -name '*.tmp' -o -name '*.part'"
        " -o -name '*.json' -size 0"
    )
    r.check("no half-written files in the state directory", not leftovers, leftovers)
    data = reply_on_paper(guest, lambda: guest.api("GET", "/asr33bot/power", timeout=300))
    r.check(
        "the appliance prints again, from column 0",
        starts_at_column_zero(data) and len(printed_words(data)) >= 3 and not paper_problems(data),
        f"{data[:200]!r}",
    )
    return guest


class SshKey:
    def __init__(self, private: str, public: str):
        self.private, self.public = private, public


def ssh_key(work: Path) -> SshKey:
    """A key pair made here, as the maker makes one on their laptop."""
    path = work / "maker_ed25519"
    path.unlink(missing_ok=True)
    path.with_suffix(".pub").unlink(missing_ok=True)
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "maker@laptop", "-f", str(path)],
        check=True,
    )
    return SshKey(path.read_text(), path.with_suffix(".pub").read_text().strip())


@scenario("[network] from the card")
def network_from_the_card(r: Results, guest: Guest, key: SshKey) -> None:
    """[network] from the card: applied before the network started, the secret moved."""
    unit = guest.out("systemctl show -p ActiveState,Result --value teletype-network")
    r.check(
        f"teletype-network applied [network] at boot ({' '.join(unit.split())})",
        sorted(unit.split()) == ["active", "success"],
        journal_tail(guest, "teletype-network"),
    )
    connections = guest.out("nmcli -t -f NAME,TYPE,FILENAME connection show")
    psk = guest.out("nmcli -s -g 802-11-wireless-security.psk connection show teletype-wifi")
    ssid = guest.out("nmcli -g 802-11-wireless.ssid connection show teletype-wifi")
    r.check(
        "NetworkManager has the Wi-Fi connection from [network] (SSID and password)",
        "teletype-wifi:802-11-wireless:" in connections
        and psk == WIFI_PASSWORD
        and ssid == WIFI_SSID,
        f"{connections}\nssid {ssid!r}\n" + journal_tail(guest, "NetworkManager"),
    )
    radio = guest.out(
        "nmcli radio wifi; grep WirelessEnabled /var/lib/NetworkManager/NetworkManager.state"
    )
    r.check(
        "NetworkManager's Wi-Fi radio is on (the image leaves it off until a country is set)",
        radio.split() == ["enabled", "WirelessEnabled=true"],
        radio + "\n" + journal_tail(guest, "teletype-network"),
    )
    on_card = guest.out("cat /boot/firmware/teletype.toml")
    r.check(
        "the Wi-Fi password is gone from the boot partition, a comment in its place",
        WIFI_PASSWORD not in on_card and "# password: moved to NetworkManager" in on_card,
        on_card[-800:],
    )
    names = guest.out("hostname; cat /etc/hostname; getent hosts asr33")
    r.check(
        "the host name is asr33 (kernel, /etc/hostname, /etc/hosts)",
        names.split()[:2] == ["asr33", "asr33"] and "127.0.1.1" in names,
        names,
    )
    guest.sh("install -m 600 /dev/stdin /root/maker_ed25519 <<'KEY'\n" + key.private + "KEY\n")
    login = guest.out(
        "journalctl -b --no-pager -u teletype-network | grep -c 'applied: SSH on'; "
        "systemctl is-enabled ssh; systemctl is-active ssh; ssh -i /root/maker_ed25519 "
        "-o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null "
        "maker@127.0.0.1 'id -un' 2>&1 | tail -1",
        timeout=120,
    )
    r.check(
        "SSH, off on the card as made, is switched on and the key from [network] logs in "
        "as the first user",
        login.split()[:1] == ["1"] and login.split()[-3:] == ["enabled", "active", "maker"],
        login + "\n" + journal_tail(guest, "ssh"),
    )


@scenario("[motor]: the relay")
def motor_relay_follows_printing(r: Results, guest: Guest) -> None:
    """[motor]: the engine switches the relay on for a print and off when idle."""
    assert guest.paper is not None
    wait_for(lambda: idle(guest) and relay_level(guest) == "lo", 60, every=1)
    before = relay_level(guest)
    mark = guest.paper.mark()
    # Six lines, about 18 s of paper: the status and the relay are read while
    # it prints even on a busy host, where each read can take seconds (one
    # line was over, and the relay rested, before the status was read).
    guest.api("POST", "/v1/print", {"text": "THE MOTOR RUNS FOR THESE LINES.\n" * 6})
    guest.paper.wait_printing(mark, 60)
    status = guest.api("GET", "/v1/status", timeout=20)[1]
    motor = status.get("motor") if isinstance(status, dict) else None
    printing = relay_level(guest)
    wait_for(lambda: idle(guest), 120)
    rested = wait_for(lambda: relay_level(guest) == "lo", 30, every=1)
    r.check(
        f"the motor's relay (PL061 line {MOTOR_LINE}) is on while printing, off when idle "
        f"({before} -> {printing} -> {relay_level(guest)})",
        (before, printing) == ("lo", "hi")
        and rested
        and isinstance(motor, dict)
        and motor.get("state") == "on",
        f"status {motor!r}\n"
        + guest.out("cat /sys/kernel/debug/gpio")
        + "\n"
        + journal_tail(guest, "teletype-engine"),
    )


@scenario("a wrong [network]")
def wrong_network_changes_nothing(r: Results, guest: Guest) -> None:
    """A mistake in [network]: one line on paper and in the journal, nothing changed."""
    assert guest.paper is not None
    before = guest.out("sha256sum /etc/NetworkManager/system-connections/*; hostname")
    # A new password too: it must leave the card although the rest is refused.
    # Over SSH with the root read-only the boot partition is read-only too: a
    # person makes it writable first (README), as here.
    guest.sh(
        "mount -o remount,rw /boot/firmware && "
        'sed -i \'s/^country = .*/country = "UK"/; s/^hostname = .*/hostname = "oops"/; '
        f's/^# password: moved.*/password = "{REFUSED_PASSWORD}"/\' '
        "/boot/firmware/teletype.toml"
    )
    typed = guest.out("grep -c '^password = ' /boot/firmware/teletype.toml || true")
    mark = guest.paper.mark()
    guest.sh("systemctl restart teletype-network", timeout=120)
    unit = guest.out("systemctl show -p Result --value teletype-network")
    said = guest.out(
        "journalctl -b --no-pager -u teletype-network -p err | grep -c 'code for the "
        "United Kingdom is GB' || true"
    )
    after = guest.out("sha256sum /etc/NetworkManager/system-connections/*; hostname")
    block = status_block(guest, mark, timeout=240)
    on_paper = " ".join(block.split())
    r.check(
        "a wrong [network] (country UK) changes nothing: the unit fails, one line in the "
        "journal and on paper",
        unit == "exit-code"
        and said == "1"
        and before == after
        and "NETWORK SETTINGS NOT APPLIED" in on_paper
        and "UNITED KINGDOM IS GB" in on_paper,
        f"unit {unit}, journal lines {said}\nbefore {before}\nafter {after}\npaper {block}",
    )
    on_card = guest.out("cat /boot/firmware/teletype.toml")
    kept = guest.out(f"cat {STORED_PASSWORD}")
    r.check(
        "a password typed into the refused [network] is gone from the boot partition all the "
        "same (the Pi keeps it, root's alone, for when the rest is put right)",
        typed == "1"
        and REFUSED_PASSWORD not in on_card
        and "# password: moved to NetworkManager" in on_card
        and kept == REFUSED_PASSWORD,
        f"typed {typed}\n" + on_card[-800:],
    )


def changed_settings(text: str, key: SshKey) -> str:
    """teletype.toml as a maker edits it after the first boot, in another computer."""
    text = set_setting(text, "teletype", "cr_fills", "3")
    # Twitch set up, but no sign-in yet and (here) no network at all.
    text = set_setting(text, "chat", "channel", '"mychannel"')
    text = set_setting(text, "chat", "client_id", '"abcdefghij0123456789"')
    # The motor on a relay: PL061 line 4, off after five quiet seconds.
    text = set_setting(text, "motor", "pin", str(MOTOR_LINE))
    text = set_setting(text, "motor", "idle_seconds", "5.0")
    # Headless set-up from the card alone: Wi-Fi, a name, SSH with a key.
    for name, value in (
        ("country", '"GB"'),
        ("ssid", f'"{WIFI_SSID}"'),
        ("password", f'"{WIFI_PASSWORD}"'),
        ("hostname", '"asr33"'),
        ("ssh", "true"),
        ("ssh_key", f'"{key.public}"'),
    ):
        text = set_setting(text, "network", name, value)
    return text


@scenario("[teletype] and [chat] changed on the card")
def changed_settings_take_effect(r: Results, guest: Guest) -> None:
    paper = guest.paper
    assert paper is not None
    # The bridge may report after the block is printed (it is slower under
    # load): its state then follows the block on a line of its own. Wait
    # for that state on paper, not for a time.
    wait_for(lambda: "TWITCH: WAITING FOR SIGN-IN" in paper_text(paper.since(0)), 300, every=1)
    block = status_block(guest, 0)
    r.check(
        "the status block says the new name, and that Twitch waits for a sign-in",
        "NAME: ASR33 (ASR33.LOCAL)" in block
        and "TWITCH: WAITING FOR SIGN-IN" in block
        and not paper_problems(paper.since(0), cr_fills=3),
        block or paper_text(paper.since(0))[-600:],
    )
    data = reply_on_paper(guest, lambda: guest.api("GET", "/asr33bot/fills", timeout=300))
    problems = paper_problems(data, cr_fills=3)
    r.check(
        "the paper shows the new setting (three fills after each CR)",
        b"\r\0\0\0" in bytes(b & 0x7F for b in data) and not problems,
        "\n".join(problems[:10]) + f"\n{data[:200]!r}",
    )
    r.check(
        "with [chat] set the chat unit runs, waiting for a sign-in (no network: "
        "retried, not exit 78)",
        wait_for(lambda: chat_waiting(guest) is not None, 240),
        guest.out("systemctl show -p ActiveState,Result,StatusText,NRestarts teletype-chat")
        + "\n"
        + journal_tail(guest, "teletype-chat"),
    )


@scenario("the card, read on another computer")
def card_holds_no_password(r: Results, disk: Path, work: Path) -> None:
    card = read_boot_partition(disk, work)
    r.check(
        "the boot partition holds no Wi-Fi password, a comment in its place",
        WIFI_PASSWORD not in card
        and "# password: moved to NetworkManager" in card
        and f'ssid = "{WIFI_SSID}"' in card,
        card[-1500:],
    )
