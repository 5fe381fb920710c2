"""`make boot-check`: the appliance booted as a Raspberry Pi boots it, and driven from outside.

    run.py ROOTFS WORK_DIR

ROOTFS is the arm64 root file system `make image-check` leaves (Debian
bookworm with the image's own stage installed in it). It becomes an SD card
(make-disk.sh) that QEMU boots as a Zero 2 W-sized board: `-M virt`, four
Cortex-A53 cores, 448 MB (a Zero 2 W less the GPU's share). The guest runs
the units and code the image ships, under systemd, with their sandboxing in
force. From the host:

- the PL011 UART (the guest's /dev/ttyAMA0, the Pi's GPIO14/15) is the
  Teletype: every byte is read here and checked as paper (parity, ASCII-63,
  CR/LF fills, 72 columns), and lines are typed on its keyboard;
- the PL061 GPIO controller's line 3, which QEMU pulses for its power key,
  is the front-panel button (QMP system_powerdown presses it);
- the agent (guest/agent.py, on a virtio serial port, the boot check's own
  and never in the image) asks systemd, the journal and /proc what a person
  with a shell on the Pi would ask.

Each scenario is one pass or fail; the last line is `N passed, M failed`.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from appliance.testing.wire import check_ascii  # the repo's independent paper check

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent

# A Zero 2 W's CPU and memory: its 512 MB less the GPU's 64 MB (gpu_mem's
# default on boards under 1 GB), what Raspberry Pi OS leaves to Linux on it
# (MemTotal about 426 MB there). The board's revision code is a Compute
# Module 3+ (also a BCM2837 with Cortex-A53 cores), whose header has no
# fixed pull-up on GPIO3: QEMU's power key line idles low and goes high
# when pressed, which is a button to 3.3 V with the pull-down on.
CPU, CORES, MEMORY_MB = "cortex-a53", 4, 512 - 64
BOARD_REVISION = 0xA02100
BUTTON_LINE, LED_LINE, MOTOR_LINE = 3, 5, 4
API = "http://127.0.0.1:5599"
BOOT_TIMEOUT = 600  # seconds of emulation, at worst, before the agent answers


# --- the settings on the boot partition ---------------------------------------------


def set_setting(toml: str, section: str, key: str, value: str) -> str:
    """Set one key as a person would: uncomment its line in the template and change it."""
    head = re.search(rf"(?m)^\[{re.escape(section)}\]\s*$", toml)
    if head is None:
        raise ValueError(f"teletype.toml has no [{section}]")
    end = re.search(r"(?m)^\[", toml[head.end() :])
    stop = head.end() + end.start() if end else len(toml)
    body = toml[head.end() : stop]
    line = re.compile(rf"(?m)^#?\s*{re.escape(key)}\s*=.*$")
    if not line.search(body):
        raise ValueError(f"teletype.toml has no {section}.{key} to change")
    body = line.sub(lambda _: f"{key} = {value}", body, count=1)
    return toml[: head.end()] + body + toml[stop:]


def board_settings(template: str) -> str:
    """The template as a maker would edit it for this board's button and LED."""
    toml = set_setting(template, "button", "pin", str(BUTTON_LINE))
    toml = set_setting(toml, "button", "pull", '"down"')
    toml = set_setting(toml, "button", "led_pin", str(LED_LINE))
    # Short replies keep the check's prints to seconds, not minutes, at 10 cps.
    return set_setting(toml, "model", "max_chars", "100")


# --- the device tree ----------------------------------------------------------------


def device_tree(qemu_args: list[str], work: Path) -> Path:
    """QEMU's own device tree for this machine, made to look like a Pi's to the guest.

    Three edits: the gpio-keys node goes (else the kernel's gpio_keys driver
    owns the power key's line and no program can read it);
    /system/linux,revision is added, where the Pi firmware puts the board
    revision and gpiozero reads it; and /chosen no longer names the PL011
    as the console, as the image's cmdline.txt no longer does on a Pi.
    """
    raw, source, edited = work / "virt.dtb", work / "virt.dts", work / "board.dtb"
    machine = qemu_args.index("-M") + 1
    dump = list(qemu_args)
    dump[machine] += f",dumpdtb={raw}"
    subprocess.run(dump, check=True, capture_output=True)
    subprocess.run(["dtc", "-q", "-I", "dtb", "-O", "dts", "-o", str(source), str(raw)], check=True)
    dts = remove_node(source.read_text(), "gpio-keys")
    dts = re.sub(r"(?m)^\s*stdout-path = .*;\n", "", dts)
    # The root node's last child (a node's properties must come first).
    root_end = dts.rstrip().rindex("};")
    dts = dts[:root_end] + f"\tsystem {{\n\t\tlinux,revision = <{BOARD_REVISION:#x}>;\n\t}};\n}};\n"
    source.write_text(dts)
    subprocess.run(
        ["dtc", "-q", "-I", "dts", "-O", "dtb", "-o", str(edited), str(source)], check=True
    )
    return edited


def remove_node(dts: str, name: str) -> str:
    start = re.search(rf"(?m)^\s*{re.escape(name)}(@\w+)? \{{", dts)
    if start is None:
        raise ValueError(f"the device tree has no {name} node")
    depth, i = 0, dts.index("{", start.start())
    while True:
        depth += {"{": 1, "}": -1}.get(dts[i], 0)
        i += 1
        if depth == 0:
            break
    end = dts.index(";", i) + 1
    return dts[: start.start()] + dts[end:]


def kernel_command_line(cmdline_txt: str, disk_id: str) -> str:
    """The card's own cmdline.txt, as the Pi's firmware would pass it, with two changes.

    root= names this card's partition (pi-gen writes ROOTDEV, then the
    real PARTUUID), and Raspberry Pi OS's first-boot init= goes: it is in
    that distribution's packages, not in Debian's. The virtio console comes
    first, for the kernel's messages; the last console= stays the card's own
    (tty1) as /dev/console, as on a Pi.
    """
    words = [
        f"root=PARTUUID={disk_id}-02" if w.startswith("root=") else w
        for w in cmdline_txt.split()
        if not w.startswith("init=/usr/lib/raspberrypi-sys-mods/")
    ]
    # A Pi finds its card in a second; the emulated board on a busy host took
    # three minutes to start udev, past systemd's 90 s wait for the boot and
    # state partitions (then: emergency mode). The wait, not the board, is
    # what changes here.
    return " ".join(["console=hvc0", *words, "systemd.default_device_timeout_sec=900"])


# --- the emulated Pi ----------------------------------------------------------------


class Paper:
    """The Teletype on the PL011: every byte QEMU sends, with when it came."""

    def __init__(self, path: Path):
        self.path = path
        self.data = bytearray()
        self.times: list[float] = []
        self.sock: socket.socket | None = None
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._done.is_set():
            if self.sock is None:
                try:
                    sock = socket.socket(socket.AF_UNIX)
                    sock.connect(str(self.path))
                    self.sock = sock
                except OSError:
                    time.sleep(0.1)
                    continue
            try:
                self.sock.settimeout(0.2)
                chunk = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                chunk = b""
            if not chunk:  # QEMU has gone (a power cut, a shutdown)
                self.sock = None
                time.sleep(0.1)
                continue
            now = time.monotonic()
            self.data += chunk
            self.times.extend([now] * len(chunk))

    def mark(self) -> int:
        return len(self.data)

    def since(self, mark: int) -> bytes:
        return bytes(self.data[mark:])

    def wait_printing(self, mark: int, timeout: float) -> bool:
        """True once a printable character has arrived after mark."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(0x20 < (b & 0x7F) <= 0x5F for b in self.data[mark:]):
                return True
            time.sleep(0.1)
        return False

    def wait_quiet(self, mark: int, quiet: float, timeout: float) -> bytes:
        """What arrived after mark, once printing has started and then paused for `quiet` s."""
        deadline = time.monotonic() + timeout
        self.wait_printing(mark, timeout)
        while time.monotonic() < deadline:
            last = self.times[-1] if self.times else 0
            if len(self.data) > mark and time.monotonic() - last >= quiet:
                break
            time.sleep(0.1)
        return self.since(mark)

    def type(self, text: str) -> None:
        """Keys on the Teletype's keyboard: 7 bits and even parity, as a Model 33 sends them."""
        for ch in text:
            code = ord(ch)
            if bin(code).count("1") % 2:
                code |= 0x80
            assert self.sock is not None, "the UART is not connected"
            self.sock.sendall(bytes([code]))
            time.sleep(0.1)  # 10 characters a second

    def close(self) -> None:
        self._done.set()
        self._thread.join()


class Guest:
    """One run of the emulated Pi, from power on to power off (or a cut)."""

    def __init__(
        self, work: Path, disk_id: str, console: Path, cmdline: str, memory_mb: int = MEMORY_MB
    ):
        self.work = work
        self.agent_path, self.uart_path = work / "agent.sock", work / "uart.sock"
        self.qmp_path = work / "qmp.sock"
        self.console = console
        disk, kernel, initrd = work / "disk.img", work / "vmlinuz", work / "initrd.img"
        self.args = [
            "qemu-system-aarch64",
            "-M", "virt,acpi=off",
            "-cpu", CPU, "-smp", str(CORES), "-m", str(memory_mb),
            "-display", "none", "-monitor", "none", "-nic", "none",
            "-kernel", str(kernel), "-initrd", str(initrd),
            "-append", cmdline,
            "-drive", f"file={disk},format=raw,if=none,id=card",
            "-device", "virtio-blk-device,drive=card",
            "-device", "virtio-rng-device",
            "-device", "virtio-serial-device",
            "-chardev", f"file,id=console,path={self.console}",
            "-device", "virtconsole,chardev=console",
            "-chardev", f"socket,id=agent,path={self.agent_path},server=on,wait=off",
            "-device", "virtserialport,chardev=agent,name=boot-check",
            "-chardev", f"socket,id=uart,path={self.uart_path},server=on,wait=off",
            "-serial", "chardev:uart",
            "-qmp", f"unix:{self.qmp_path},server=on,wait=off",
        ]  # fmt: skip
        self.proc: subprocess.Popen | None = None
        self.paper: Paper | None = None
        self._agent: socket.socket | None = None
        self._agent_buffer = b""
        self._ids = itertools.count(1)

    def power_on(self, dtb: Path) -> None:
        for path in (self.agent_path, self.uart_path, self.qmp_path):
            path.unlink(missing_ok=True)
        self.proc = subprocess.Popen(
            [*self.args, "-dtb", str(dtb)],
            stdin=subprocess.DEVNULL,
            stdout=open(self.work / "qemu.log", "ab"),  # noqa: SIM115
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while not self.uart_path.exists():
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError(f"QEMU did not start: see {self.work / 'qemu.log'}")
            time.sleep(0.1)
        self.paper = Paper(self.uart_path)
        self._agent = socket.socket(socket.AF_UNIX)
        self._agent.connect(str(self.agent_path))
        self._agent_buffer = b""

    def wait_agent(self, timeout: float = BOOT_TIMEOUT) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                rc, out = self.sh("echo up", timeout=5)
                if rc == 0 and "up" in out:
                    return True
            except TimeoutError:
                pass
            if self.proc is not None and self.proc.poll() is not None:
                return False
        return False

    def sh(self, cmd: str, timeout: float = 60) -> tuple[int, str]:
        """A shell command in the guest, as root: (exit status, output)."""
        assert self._agent is not None
        ident = next(self._ids)
        request = {"id": ident, "cmd": cmd, "timeout": timeout}
        self._agent.sendall(json.dumps(request).encode() + b"\n")
        deadline = time.monotonic() + timeout + 10
        while True:
            while b"\n" in self._agent_buffer:
                line, self._agent_buffer = self._agent_buffer.split(b"\n", 1)
                answer = json.loads(line)
                if answer.get("id") == ident:
                    return answer["rc"], answer["out"]
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no answer from the guest to {cmd!r}")
            self._agent.settimeout(min(left, 1.0))
            try:
                chunk = self._agent.recv(65536)
            except TimeoutError:
                continue
            if not chunk:
                raise TimeoutError("the guest's agent went away")
            self._agent_buffer += chunk

    def out(self, cmd: str, timeout: float = 60) -> str:
        return self.sh(cmd, timeout)[1].strip()

    def api(self, method: str, path: str, body: dict | None = None, timeout: float = 120):
        """The engine's HTTP API from inside the guest, as a local client would call it."""
        script = (
            "import json, sys, urllib.request, urllib.error\n"
            f"data = {json.dumps(json.dumps(body)) if body is not None else None}\n"
            f"req = urllib.request.Request({API + path!r}, method={method!r},\n"
            "    data=data.encode() if data else None,\n"
            "    headers={'Content-Type': 'application/json'})\n"
            "try:\n"
            f"    r = urllib.request.urlopen(req, timeout={timeout})\n"
            "    print(r.status); print(r.read().decode())\n"
            "except urllib.error.HTTPError as e:\n"
            "    print(e.code); print(e.read().decode())\n"
        )
        rc, out = self.sh(f"python3 -c {shlex.quote(script)}", timeout=timeout + 10)
        if rc != 0:
            return None, out
        status, _, text = out.partition("\n")
        try:
            return int(status), json.loads(text) if text.strip().startswith(("{", "[")) else text
        except ValueError:
            return None, out

    def qmp(self, command: str) -> None:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.connect(str(self.qmp_path))
            reader = sock.makefile("rb")
            reader.readline()  # the greeting
            for execute in ("qmp_capabilities", command):
                sock.sendall(json.dumps({"execute": execute}).encode() + b"\n")
                while b'"return"' not in (line := reader.readline()):
                    if not line:
                        raise RuntimeError(f"QMP closed during {execute}")

    def press_button(self) -> None:
        self.qmp("system_powerdown")

    def power_cut(self) -> None:
        """Pull the plug: QEMU killed, no shutdown, nothing flushed by the guest."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self._close()

    def shutdown(self, timeout: float = 300) -> bool:
        with contextlib.suppress(TimeoutError, OSError):
            self.sh("systemctl --no-block poweroff", timeout=10)
        assert self.proc is not None
        try:
            self.proc.wait(timeout)
            clean = True
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            clean = False
        self._close()
        return clean

    def _close(self) -> None:
        if self._agent is not None:
            self._agent.close()
            self._agent = None
        if self.paper is not None:
            self.paper.close()


# --- the scenarios ------------------------------------------------------------------


class Results:
    def __init__(self):
        self.passed = 0
        self.failed: list[str] = []
        self.notes: list[str] = []

    def check(self, name: str, ok: bool, detail: str = "") -> bool:
        print(f"   {'ok  ' if ok else 'FAIL'}  {name}", flush=True)
        if ok:
            self.passed += 1
        else:
            self.failed.append(name)
            for line in detail.strip().splitlines()[-25:]:
                print(f"         {line}", flush=True)
        return ok


def chat_waiting(guest) -> str | None:
    """The chat unit's status once it is up and waiting for a sign-in, else None."""
    show = guest.out("systemctl show -p ActiveState,StatusText teletype-chat")
    settings = dict(line.split("=", 1) for line in show.splitlines() if "=" in line)
    waiting = settings.get("StatusText", "").startswith("waiting for sign-in")
    return show if settings.get("ActiveState") == "active" and waiting else None


def paper_problems(data: bytes, cr_fills: int = 2) -> list[str]:
    report = check_ascii(data, parity="even", cr_fills=cr_fills, allow_bell=True)
    return report.problems


def printed_words(data: bytes) -> list[str]:
    text = bytes(b & 0x7F for b in data).decode("ascii", "replace")
    return re.findall(r"[A-Z0-9']+", text)


def starts_at_column_zero(data: bytes) -> bool:
    """The first thing on the wire (fills aside) is a carriage return."""
    codes = [b & 0x7F for b in data if b & 0x7F not in (0x00, 0x7F)]
    return bool(codes) and codes[0] == 0x0D


def engine_restarts(guest: Guest) -> int:
    return int(guest.out("systemctl show -p NRestarts --value teletype-engine") or 0)


def wait_for(predicate: Callable[[], bool], timeout: float, every: float = 2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(TimeoutError, ValueError):
            if predicate():
                return True
        time.sleep(every)
    return False


def engine_ready(guest: Guest) -> bool:
    state = guest.out("systemctl show -p ActiveState,SubState --value teletype-engine")
    return state.split() == ["active", "running"]


def idle(guest: Guest) -> bool:
    status, body = guest.api("GET", "/v1/status", timeout=20)
    return status == 200 and body["printing"] is None and not body["queue"]


def reply_on_paper(guest: Guest, trigger: Callable[[], None], timeout: float = 300) -> bytes:
    """Trigger a reply and return the paper it printed (once printing has gone quiet)."""
    assert guest.paper is not None
    mark = guest.paper.mark()
    trigger()
    if not guest.paper.wait_printing(mark, timeout):
        return guest.paper.since(mark)
    wait_for(lambda: idle(guest), timeout)
    return guest.paper.wait_quiet(mark, quiet=3, timeout=30)


def journal_tail(guest: Guest, unit: str = "") -> str:
    which = f"-u {unit}" if unit else ""
    return guest.out(f"journalctl -b --no-pager -n 40 {which}")


def first_boot(guest: Guest, r: Results) -> None:
    state = guest.out("systemctl is-system-running --wait", timeout=BOOT_TIMEOUT)
    r.check(
        f"a. boot finished ({state})",
        state == "running",
        guest.out("systemctl --failed --no-legend --plain; systemctl list-jobs --no-legend"),
    )
    failed = guest.out("systemctl --failed --no-legend --plain")
    detail = failed
    for unit in re.findall(r"^(\S+)", failed, re.M):
        detail += "\n" + journal_tail(guest, unit)
    r.check("a. systemctl --failed is empty", not failed, detail)
    r.check(
        "a. teletype.target reached",
        guest.out("systemctl is-active teletype.target") == "active",
        guest.out("systemctl status --no-pager teletype.target"),
    )
    r.check(
        "a. the engine is READY (Type=notify, active)",
        wait_for(lambda: engine_ready(guest), 120),
        journal_tail(guest, "teletype-engine"),
    )
    # Type=simple is "active" from its fork: a service that dies at start and
    # is restarted looks active now and then, so its restarts are counted too.
    time.sleep(20)
    for unit, ready in (("engine", "serving on"), ("button", "button on GPIO")):
        show = guest.out(f"systemctl show -p ActiveState,SubState,NRestarts teletype-{unit}")
        said = guest.out(f"journalctl -b --no-pager -u teletype-{unit} | grep -c '{ready}' || true")
        r.check(
            f"a. teletype-{unit} up at the first try ({', '.join(show.split())})",
            sorted(show.split()) == ["ActiveState=active", "NRestarts=0", "SubState=running"]
            and said == "1",
            journal_tail(guest, f"teletype-{unit}"),
        )
    errors = guest.out("journalctl -b -q --no-pager -p err -u 'teletype*'")
    r.check("a. no errors from the appliance's units in the journal", not errors, errors)
    chat = guest.out("systemctl show -p ActiveState,Result --value teletype-chat")
    r.check(
        "a. the chat unit is skipped without [chat] in teletype.toml",
        sorted(chat.split()) == ["exec-condition", "inactive"],  # systemd's own order
        chat,
    )
    tracebacks = guest.out("journalctl -b --no-pager | grep -c 'Traceback' || true")
    r.check(
        "a. no Python traceback in the journal",
        tracebacks == "0",
        guest.out("journalctl -b --no-pager | grep -A12 Traceback | head -60"),
    )
    # No NIC here: after a minute without an address the block says so.
    block = status_block(guest, 0)
    r.check(
        "a. the Teletype prints where it is (status block: name, no network yet, model, "
        "no Twitch, API, the root read-only)",
        all(line in block for line in (
            "NAME: TELETYPE (TELETYPE.LOCAL)", "ADDRESS: NONE YET", "MODEL: TELETYPE-TINY",
            "TWITCH: NOT SET UP", "API: ON THIS PI ONLY, 127.0.0.1:5599", "ROOT: READ-ONLY",
        )) and not paper_problems(guest.paper.since(0) if guest.paper else b""),
        block or paper_text(guest.paper.since(0) if guest.paper else b"")[-600:],
    )  # fmt: skip
    page = guest.out(
        "python3 -c \"import urllib.request as u; print(*[u.urlopen('http://127.0.0.1:5599' + p)"
        ".status for p in ('/', '/panel/app.js', '/panel/style.css')])\""
    )
    r.check(
        f"a. the operator's panel is served by the installed engine ({page})",
        page.split() == ["200", "200", "200"],
        page + "\n" + journal_tail(guest, "teletype-engine"),
    )
    config = guest.out("teletype config")
    r.check(
        "a. settings read from /boot/firmware/teletype.toml",
        "/boot/firmware/teletype.toml" in config.splitlines()[0]
        and re.search(r"(?m)^max_chars = 100\b", config) is not None
        and guest.out("findmnt -n -o FSTYPE /boot/firmware") == "vfat",
        config[:2000],
    )


def sectors_written(guest: Guest) -> dict[str, int]:
    """Sectors (512 bytes) written to each partition of the card since boot, from the kernel."""
    table = guest.out("cat /proc/diskstats")
    return {f[2]: int(f[9]) for f in (line.split() for line in table.splitlines())
            if len(f) > 9 and f[2].startswith("vda")}  # fmt: skip


def read_only_root(guest: Guest, r: Results) -> None:
    """The root under a RAM overlay, the state on its own journaled partition, the journal
    in RAM: and so nothing written to the root partition in a whole boot."""
    places = ("/", "/media/root-ro", "/var/lib/teletype", "/var/lib/teletype-gpt2",
              "/var/lib/teletype-network")  # fmt: skip
    mounts = {where: guest.out(f"findmnt -n -o FSTYPE,OPTIONS,SOURCE {where}") for where in places}
    mode = guest.out("cat /run/teletype-root")
    fields = {where: [*found.split(), "", "", ""][:3] for where, found in mounts.items()}
    r.check(
        "a. the root is read-only under a RAM overlay; the state has its own partition "
        "(ext4, data=journal), the state directories bound into it",
        mode == "read-only" and fields["/"][0] == "overlay"
        and fields["/media/root-ro"][0] == "ext4" and "ro" in fields["/media/root-ro"][1].split(",")
        and fields["/var/lib/teletype"][0] == "ext4"
        and "data=journal" in fields["/var/lib/teletype"][1]
        and fields["/var/lib/teletype-gpt2"][2].endswith("[/gpt2]")
        and fields["/var/lib/teletype-network"][2].endswith("[/network]"),
        f"mode {mode!r}\n" + "\n".join(f"{k}: {v}" for k, v in mounts.items()),
    )  # fmt: skip
    boot = guest.out("findmnt -n -o OPTIONS /boot/firmware")
    r.check(
        f"a. the boot partition is read-only once the network oneshot is done ({boot[:20]})",
        boot.split(",")[:1] == ["ro"],
        boot + "\n" + journal_tail(guest, "teletype-network"),
    )
    journal = guest.out("journalctl --header | grep -m1 'File path'")
    written = sectors_written(guest)
    r.check(
        f"a. the journal is in RAM, and the root partition was not written this boot "
        f"({written.get('vda2')} sectors)",
        "/run/log/journal/" in journal and written.get("vda2") == 0,
        f"{journal}\n{written}",
    )


def paper_text(data: bytes) -> str:
    return bytes(b & 0x7F for b in data).decode("ascii", "replace")


def status_block(guest: Guest, mark: int, timeout: float = 300) -> str:
    """The status block printed after `mark` (the Teletype saying where it is), or ''."""
    assert guest.paper is not None
    paper = guest.paper
    wait_for(lambda: "API: " in paper_text(paper.since(mark)), timeout, every=1)
    wait_for(lambda: idle(guest), 120)
    text = paper_text(paper.wait_quiet(mark, quiet=3, timeout=30))
    start = text.find("TELETYPE GPT-2 STATUS")
    return text[start:] if start >= 0 else ""


def check_reply(r: Results, name: str, data: bytes, guest: Guest, unit: str) -> None:
    """A reply on paper: three words or more, and a clean wire."""
    problems = paper_problems(data)
    words = printed_words(data)
    r.check(
        f"{name} ({len(words)} words)",
        len(words) >= 3 and not problems,
        "\n".join(problems[:10]) + "\n" + journal_tail(guest, unit),
    )


def button_press(guest: Guest, r: Results) -> None:
    data = reply_on_paper(guest, guest.press_button, timeout=120)
    check_reply(r, "b. a button press puts a reply on paper", data, guest, "teletype-button")


def keyboard_line(guest: Guest, r: Results) -> None:
    assert guest.paper is not None
    paper = guest.paper
    data = reply_on_paper(guest, lambda: paper.type("HOW DOES THE CLUTCH WORK\r"))
    check_reply(
        r, "c. a line typed on the keyboard gets a reply on paper", data, guest, "teletype-engine"
    )


def seed_route(guest: Guest, r: Results) -> str:
    answer: dict = {}

    def ask() -> None:
        answer["reply"] = guest.api("GET", "/asr33bot/the%20typing%20unit", timeout=300)

    data = reply_on_paper(guest, ask)
    status, body = answer["reply"]
    text = body.get("text", "") if isinstance(body, dict) else str(body)
    want = re.sub(r"[^A-Z0-9]", "", text.upper())
    got = re.sub(r"[^A-Z0-9]", "", bytes(b & 0x7F for b in data).decode("ascii", "replace"))
    r.check(
        "d. GET /asr33bot/<prompt> prints and answers with what it printed",
        status == 200 and len(want) >= 10 and want in got and not paper_problems(data),
        f"status {status}, body {body!r}\npaper {data!r}",
    )
    return text


def kill_engine(guest: Guest, r: Results) -> None:
    assert guest.paper is not None
    before = engine_restarts(guest)
    mark = guest.paper.mark()
    guest.api("POST", "/v1/generate", {"wait": False})
    guest.paper.wait_printing(mark, 120)
    time.sleep(2)  # mid-line
    guest.sh("systemctl kill --signal=KILL --kill-whom=main teletype-engine")
    restarted = wait_for(lambda: engine_restarts(guest) > before and engine_ready(guest), 180)
    r.check(
        "e. kill -9: systemd restarts the engine", restarted, journal_tail(guest, "teletype-engine")
    )
    data = reply_on_paper(
        guest, lambda: guest.api("GET", "/asr33bot/after%20the%20crash", timeout=300)
    )
    r.check(
        "e. the next reply prints from column 0",
        starts_at_column_zero(data) and len(printed_words(data)) >= 3,
        f"paper after the restart: {data[:120]!r}",
    )


def hang_engine(guest: Guest, r: Results) -> None:
    before = engine_restarts(guest)
    guest.sh("systemctl kill --signal=STOP --kill-whom=main teletype-engine")
    restarted = wait_for(lambda: engine_restarts(guest) > before and engine_ready(guest), 240)
    watchdog = guest.out("journalctl -b --no-pager -u teletype-engine | grep -ci watchdog || true")
    r.check(
        "f. a hung engine (SIGSTOP): the watchdog restarts it",
        restarted and watchdog not in ("", "0"),
        journal_tail(guest, "teletype-engine"),
    )


def memory(guest: Guest, r: Results) -> str:
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
    r.check(f"i. memory with every unit running: {summary}", available >= 128, summary)
    return summary


def power_cut(guest: Guest, r: Results, boot: Callable[[], Guest]) -> Guest:
    assert guest.paper is not None
    line = {"name": "ada", "text": "the power cut check was here"}
    status, _ = guest.api("POST", "/v1/history", line)
    r.check("g. a chat line is accepted before the power cut", status == 201, str(status))
    mark = guest.paper.mark()
    guest.api("POST", "/v1/generate", {"wait": False})
    guest.paper.wait_printing(mark, 120)
    time.sleep(2)
    guest.power_cut()
    guest = boot()
    if not r.check("g. boots again after the power cut", guest.wait_agent(), tail(guest.console)):
        return guest
    guest.sh("systemctl is-system-running --wait", timeout=BOOT_TIMEOUT)
    r.check(
        "g. nothing failed after the power cut",
        not guest.out("systemctl --failed --no-legend --plain"),
        guest.out("systemctl --failed --no-legend --plain"),
    )
    wait_for(lambda: engine_ready(guest), 120)
    status, history = guest.api("GET", "/v1/history")
    texts = [h.get("text") for h in history.get("lines", [])] if isinstance(history, dict) else []
    r.check("g. the chat history is intact", line["text"] in texts, f"{status} {history!r}")
    leftovers = guest.out(
        "find /var/lib/teletype-gpt2 -name '.*' -o -name '*.tmp' -o -name '*.part'"
        " -o -name '*.json' -size 0"
    )
    r.check("g. no half-written files in the state directory", not leftovers, leftovers)
    data = reply_on_paper(guest, lambda: guest.api("GET", "/asr33bot/power", timeout=300))
    r.check(
        "g. the appliance prints again, from column 0",
        starts_at_column_zero(data) and len(printed_words(data)) >= 3 and not paper_problems(data),
        f"{data[:200]!r}",
    )
    return guest


REFUSED_PASSWORD = "typed-into-a-refused-file"
STORED_PASSWORD = "/var/lib/teletype-network/wifi-password"
WIFI_SSID, WIFI_PASSWORD = "Teletype Lab", "paper tape 1963"


class SshKey:
    def __init__(self, private: str, public: str):
        self.private, self.public = private, public


def ssh_key(work: Path) -> SshKey:
    """A key pair made here, as the maker makes one on their laptop."""
    path = work / "maker_ed25519"
    path.unlink(missing_ok=True)
    path.with_suffix(".pub").unlink(missing_ok=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "maker@laptop",
                    "-f", str(path)], check=True)  # fmt: skip
    return SshKey(path.read_text(), path.with_suffix(".pub").read_text().strip())


def network_settings(guest: Guest, r: Results, key: SshKey) -> None:
    """[network] from the card: applied before the network started, the secret moved."""
    unit = guest.out("systemctl show -p ActiveState,Result --value teletype-network")
    r.check(
        f"j. teletype-network applied [network] at boot ({' '.join(unit.split())})",
        sorted(unit.split()) == ["active", "success"],
        journal_tail(guest, "teletype-network"),
    )
    connections = guest.out("nmcli -t -f NAME,TYPE,FILENAME connection show")
    psk = guest.out("nmcli -s -g 802-11-wireless-security.psk connection show teletype-wifi")
    ssid = guest.out("nmcli -g 802-11-wireless.ssid connection show teletype-wifi")
    r.check(
        "j. NetworkManager has the Wi-Fi connection from [network] (SSID and password)",
        "teletype-wifi:802-11-wireless:" in connections and psk == WIFI_PASSWORD
        and ssid == WIFI_SSID,
        f"{connections}\nssid {ssid!r}\n" + journal_tail(guest, "NetworkManager"),
    )  # fmt: skip
    radio = guest.out("nmcli radio wifi; grep WirelessEnabled "
                      "/var/lib/NetworkManager/NetworkManager.state")  # fmt: skip
    r.check(
        "j. NetworkManager's Wi-Fi radio is on (the image leaves it off until a country is set)",
        radio.split() == ["enabled", "WirelessEnabled=true"],
        radio + "\n" + journal_tail(guest, "teletype-network"),
    )
    on_card = guest.out("cat /boot/firmware/teletype.toml")
    r.check(
        "j. the Wi-Fi password is gone from the boot partition, a comment in its place",
        WIFI_PASSWORD not in on_card and "# password: moved to NetworkManager" in on_card,
        on_card[-800:],
    )
    names = guest.out("hostname; cat /etc/hostname; getent hosts asr33")
    r.check(
        "j. the host name is asr33 (kernel, /etc/hostname, /etc/hosts)",
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
        "j. SSH, off on the card as made, is switched on and the key from [network] logs in "
        "as the first user",
        login.split()[:1] == ["1"] and login.split()[-3:] == ["enabled", "active", "maker"],
        login + "\n" + journal_tail(guest, "ssh"),
    )


def relay_level(guest: Guest) -> str:
    """The motor relay's line as the kernel drives it: 'hi', 'lo', or '' if nobody holds it."""
    table = guest.out("cat /sys/kernel/debug/gpio")
    chip = re.search(r"GPIOs (\d+)-\d+, parent: \S+/[0-9a-f]+\.pl061", table)
    if chip is None:
        return ""
    line = re.search(rf"gpio-{int(chip.group(1)) + MOTOR_LINE} .*\) out (hi|lo)", table)
    return line.group(1) if line else ""


def motor_relay(guest: Guest, r: Results) -> None:
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
        f"m. the motor's relay (PL061 line {MOTOR_LINE}) is on while printing, off when idle "
        f"({before} -> {printing} -> {relay_level(guest)})",
        (before, printing) == ("lo", "hi") and rested and isinstance(motor, dict)
        and motor.get("state") == "on",
        f"status {motor!r}\n" + guest.out("cat /sys/kernel/debug/gpio") + "\n"
        + journal_tail(guest, "teletype-engine"),
    )  # fmt: skip


def wrong_network_settings(guest: Guest, r: Results) -> None:
    """A mistake in [network]: one line on paper and in the journal, nothing changed."""
    assert guest.paper is not None
    before = guest.out("sha256sum /etc/NetworkManager/system-connections/*; hostname")
    # A new password too: it must leave the card although the rest is refused.
    # Over SSH with the root read-only the boot partition is read-only too: a
    # person makes it writable first (README), as here.
    guest.sh("mount -o remount,rw /boot/firmware && "
             "sed -i 's/^country = .*/country = \"UK\"/; s/^hostname = .*/hostname = \"oops\"/; "
             f"s/^# password: moved.*/password = \"{REFUSED_PASSWORD}\"/' "
             "/boot/firmware/teletype.toml")  # fmt: skip
    typed = guest.out("grep -c '^password = ' /boot/firmware/teletype.toml || true")
    mark = guest.paper.mark()
    guest.sh("systemctl restart teletype-network", timeout=120)
    unit = guest.out("systemctl show -p Result --value teletype-network")
    said = guest.out("journalctl -b --no-pager -u teletype-network -p err | grep -c 'code for the "
                     "United Kingdom is GB' || true")  # fmt: skip
    after = guest.out("sha256sum /etc/NetworkManager/system-connections/*; hostname")
    block = status_block(guest, mark, timeout=240)
    on_paper = " ".join(block.split())
    r.check(
        "j. a wrong [network] (country UK) changes nothing: the unit fails, one line in the "
        "journal and on paper",
        unit == "exit-code" and said == "1" and before == after
        and "NETWORK SETTINGS NOT APPLIED" in on_paper and "UNITED KINGDOM IS GB" in on_paper,
        f"unit {unit}, journal lines {said}\nbefore {before}\nafter {after}\npaper {block}",
    )  # fmt: skip
    on_card = guest.out("cat /boot/firmware/teletype.toml")
    kept = guest.out(f"cat {STORED_PASSWORD}")
    r.check(
        "j. a password typed into the refused [network] is gone from the boot partition all the "
        "same (the Pi keeps it, root's alone, for when the rest is put right)",
        typed == "1" and REFUSED_PASSWORD not in on_card
        and "# password: moved to NetworkManager" in on_card and kept == REFUSED_PASSWORD,
        f"typed {typed}\n" + on_card[-800:],
    )  # fmt: skip


def imager_format(disk: Path, r: Results) -> None:
    """Raspberry Pi Imager's "systemd" customisation: what this card lacks of it may only be
    Raspberry Pi OS's own packages (the root here is Debian's); what Debian and our stage
    give (systemd.run's generator, auto_initramfs=1 kept, cmdline.txt) must be there."""
    done = subprocess.run(
        [sys.executable, str(HERE.parent / "imager-repo.py"), "--check-only", str(disk)],
        capture_output=True, text=True,
    )  # fmt: skip
    lacking = done.stderr.strip().splitlines()
    # The kernels and their initramfs on the FAT come from Raspberry Pi OS's
    # kernel packages; the boot check's card starts Debian's kernel from QEMU.
    raspberry_pi_os = ("/raspberrypi-sys-mods/", "/userconf-pi/", "/imager_fixup",
                       "(for kernel8.img)", "(for kernel_2712.img)")  # fmt: skip
    r.check(
        "k. Imager's systemd format: the card lacks only Raspberry Pi OS's own pieces "
        f"({len(lacking)})",
        done.returncode in (0, 1)
        and all(any(p in line for p in raspberry_pi_os) for line in lacking),
        done.stderr + done.stdout,
    )


def read_boot_partition(disk: Path, work: Path) -> str:
    local = work / "teletype.toml.read"
    subprocess.run(["mcopy", "-o", "-i", f"{disk}@@1M", "::teletype.toml", str(local)], check=True)
    return local.read_text()


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


# --- the run ------------------------------------------------------------------------


def edit_boot_partition(disk: Path, work: Path, edit: Callable[[str], str]) -> None:
    """Change teletype.toml on the card's FAT partition, as a computer with a card reader would."""
    local = work / "teletype.toml.edit"
    image = f"{disk}@@1M"
    subprocess.run(["mcopy", "-o", "-i", image, "::teletype.toml", str(local)], check=True)
    local.write_text(edit(local.read_text()))
    subprocess.run(["mcopy", "-o", "-i", image, str(local), "::teletype.toml"], check=True)


def main() -> int:
    rootfs, work = Path(sys.argv[1]).resolve(), Path(sys.argv[2]).resolve()
    work.mkdir(parents=True, exist_ok=True)
    r = Results()
    started = time.monotonic()

    print("\n== the SD card", flush=True)
    template = (rootfs / "boot/firmware/teletype.toml").read_text()
    toml = work / "teletype.toml"
    toml.write_text(board_settings(template))
    disk_id = subprocess.run(
        [str(HERE / "make-disk.sh"), str(rootfs), str(toml), str(work)],
        check=True, capture_output=True, text=True,
    ).stdout.split()[-1]  # fmt: skip
    disk = work / "disk.img"
    print(f"   {disk} ({disk.stat().st_size // 2**20} MB), PARTUUID {disk_id}-01/-02")
    imager_format(disk, r)
    boots = itertools.count(1)

    cmdline = kernel_command_line((work / "bootfs" / "cmdline.txt").read_text(), disk_id)
    print(f"   kernel command line: {cmdline}")

    def boot() -> Guest:
        guest = Guest(work, disk_id, work / f"console-{next(boots)}.log", cmdline)
        guest.power_on(dtb)
        return guest

    dtb = device_tree(Guest(work, disk_id, work / "console.log", cmdline).args, work)

    print("\n== first boot", flush=True)
    t0 = time.monotonic()
    guest = boot()
    memory_line = "memory: not measured"
    if r.check("a. the guest boots and its agent answers", guest.wait_agent(), tail(guest.console)):
        print(f"   (agent up after {time.monotonic() - t0:.0f} s)", flush=True)
        first_boot(guest, r)
        read_only_root(guest, r)
        if os.environ.get("BOOT_CHECK_QUICK"):  # the first boot alone, while working on it
            guest.shutdown()
            print(f"\n{r.passed} passed, {len(r.failed)} failed (BOOT_CHECK_QUICK: first boot)")
            return 1 if r.failed else 0
        print("\n== the appliance, driven as its users drive it", flush=True)
        for scenario in (button_press, keyboard_line, seed_route):
            scenario(guest, r)
        memory_line = memory(guest, r)
        print("\n== faults", flush=True)
        kill_engine(guest, r)
        hang_engine(guest, r)
        guest = power_cut(guest, r, boot)

    print("\n== a changed teletype.toml takes effect at the next boot", flush=True)
    clean = guest.shutdown()
    r.check("h. the guest shuts down cleanly", clean, tail(guest.console))

    key = ssh_key(work)

    def new_settings(text: str) -> str:
        text = set_setting(text, "teletype", "cr_fills", "3")
        # Twitch set up, but no sign-in yet and (here) no network at all.
        text = set_setting(text, "chat", "channel", '"mychannel"')
        text = set_setting(text, "chat", "client_id", '"abcdefghij0123456789"')
        # The motor on a relay: PL061 line 4, off after five quiet seconds.
        text = set_setting(text, "motor", "pin", str(MOTOR_LINE))
        text = set_setting(text, "motor", "idle_seconds", "5.0")
        # Headless set-up from the card alone: Wi-Fi, a name, SSH with a key.
        for name, value in (("country", '"GB"'), ("ssid", f'"{WIFI_SSID}"'),
                            ("password", f'"{WIFI_PASSWORD}"'), ("hostname", '"asr33"'),
                            ("ssh", "true"), ("ssh_key", f'"{key.public}"')):  # fmt: skip
            text = set_setting(text, "network", name, value)
        return text

    edit_boot_partition(disk, work, new_settings)
    guest = boot()
    if r.check("h. boots again", guest.wait_agent(), tail(guest.console)):
        wait_for(lambda: engine_ready(guest), 300)
        network_settings(guest, r, key)
        # The bridge may report after the block is printed (it is slower under
        # load): its state then follows the block on a line of its own. Wait
        # for that state on paper, not for a time.
        paper = guest.paper
        assert paper is not None
        wait_for(lambda: "TWITCH: WAITING FOR SIGN-IN" in paper_text(paper.since(0)), 300, every=1)
        block = status_block(guest, 0)
        r.check(
            "j. the status block says the new name, and that Twitch waits for a sign-in",
            "NAME: ASR33 (ASR33.LOCAL)" in block and "TWITCH: WAITING FOR SIGN-IN" in block
            and not paper_problems(guest.paper.since(0) if guest.paper else b"", cr_fills=3),
            block or paper_text(guest.paper.since(0) if guest.paper else b"")[-600:],
        )  # fmt: skip
        data = reply_on_paper(guest, lambda: guest.api("GET", "/asr33bot/fills", timeout=300))
        problems = paper_problems(data, cr_fills=3)
        r.check(
            "h. the paper shows the new setting (three fills after each CR)",
            b"\r\0\0\0" in bytes(b & 0x7F for b in data) and not problems,
            "\n".join(problems[:10]) + f"\n{data[:200]!r}",
        )
        r.check(
            "h. with [chat] set the chat unit runs, waiting for a sign-in (no network: "
            "retried, not exit 78)",
            wait_for(lambda: chat_waiting(guest) is not None, 240),
            guest.out("systemctl show -p ActiveState,Result,StatusText,NRestarts teletype-chat")
            + "\n"
            + journal_tail(guest, "teletype-chat"),
        )
        motor_relay(guest, r)
        wrong_network_settings(guest, r)
    guest.shutdown()
    card = read_boot_partition(disk, work)
    r.check(
        "j. the card, read on another computer, holds no Wi-Fi password",
        WIFI_PASSWORD not in card and "# password: moved to NetworkManager" in card
        and f'ssid = "{WIFI_SSID}"' in card,
        card[-1500:],
    )  # fmt: skip

    print(f"\n   {memory_line}")
    print(f"   boot check took {time.monotonic() - started:.0f} s")
    if r.failed:
        print("   failed: " + "; ".join(r.failed))
    print(f"\n{r.passed} passed, {len(r.failed)} failed")
    return 1 if r.failed else 0


if __name__ == "__main__":
    sys.exit(main())
