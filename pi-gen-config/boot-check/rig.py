"""The boot check's rig: an SD card made from the image's root, the emulated Pi that boots
it, and what a person with a shell on the Pi would look at.

ROOTFS is the arm64 root file system `make image-check` leaves (Debian
bookworm with the image's own stage installed in it). `make_card` makes it
an SD card (make-disk.sh) that QEMU boots as a Zero 2 W-sized board: `-M
virt`, four Cortex-A53 cores, 448 MB (a Zero 2 W less the GPU's share). The
guest runs the units and code the image ships, under systemd, with their
sandboxing in force. From the host:

- the PL011 UART (the guest's /dev/ttyAMA0, the Pi's GPIO14/15) is the
  Teletype: every byte is read here (`Paper`) and lines are typed on its
  keyboard;
- the PL061 GPIO controller's line 3, which QEMU pulses for its power key,
  is the front-panel button (QMP system_powerdown presses it);
- the agent (guest/agent.py, on a virtio serial port, the boot check's own
  and never in the image) asks systemd, the journal and /proc what a person
  with a shell on the Pi would ask.

The boot check (run.py, its scenarios in scenarios.py), the power-cut storm
(storm.py), the SD-write measurement (sd_writes.py), the board-fit table
(board_fit.py) and the warm prompt on the emulated Pi (warm_prompt.py) are
each a script on this rig.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import re
import shlex
import signal
import socket
import subprocess
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
WIFI_SSID, WIFI_PASSWORD = "Teletype Lab", "paper tape 1963"  # what a maker puts on the card


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


MAX_CHARS = 60  # [model] max_chars on the card: a reply is six seconds of paper


def board_settings(template: str) -> str:
    """The template as a maker would edit it for this board's button and LED."""
    toml = set_setting(template, "button", "pin", str(BUTTON_LINE))
    toml = set_setting(toml, "button", "pull", '"down"')
    toml = set_setting(toml, "button", "led_pin", str(LED_LINE))
    # Short replies keep the check's prints to seconds, not minutes, at 10 cps.
    return set_setting(toml, "model", "max_chars", str(MAX_CHARS))


# --- the device tree ----------------------------------------------------------------


def device_tree(qemu_args: list[str], work: Path, name: str = "board.dtb") -> Path:
    """QEMU's own device tree for this machine, made to look like a Pi's to the guest.

    Three edits: the gpio-keys node goes (else the kernel's gpio_keys driver
    owns the power key's line and no program can read it);
    /system/linux,revision is added, where the Pi firmware puts the board
    revision and gpiozero reads it; and /chosen no longer names the PL011
    as the console, as the image's cmdline.txt no longer does on a Pi.
    """
    raw, source, edited = work / "virt.dtb", work / "virt.dts", work / name
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
            "-M",
            "virt,acpi=off",
            "-cpu",
            CPU,
            "-smp",
            str(CORES),
            "-m",
            str(memory_mb),
            "-display",
            "none",
            "-monitor",
            "none",
            "-nic",
            "none",
            "-kernel",
            str(kernel),
            "-initrd",
            str(initrd),
            "-append",
            cmdline,
            "-drive",
            f"file={disk},format=raw,if=none,id=card",
            "-device",
            "virtio-blk-device,drive=card",
            "-device",
            "virtio-rng-device",
            "-device",
            "virtio-serial-device",
            "-chardev",
            f"file,id=console,path={self.console}",
            "-device",
            "virtconsole,chardev=console",
            "-chardev",
            f"socket,id=agent,path={self.agent_path},server=on,wait=off",
            "-device",
            "virtserialport,chardev=agent,name=boot-check",
            "-chardev",
            f"socket,id=uart,path={self.uart_path},server=on,wait=off",
            "-serial",
            "chardev:uart",
            "-qmp",
            f"unix:{self.qmp_path},server=on,wait=off",
        ]
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


# --- what a person with a shell on the Pi would look at ----------------------------


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


def sectors_written(guest: Guest) -> dict[str, int]:
    """Sectors (512 bytes) written to each partition of the card since boot, from the kernel."""
    table = guest.out("cat /proc/diskstats")
    return {
        f[2]: int(f[9])
        for f in (line.split() for line in table.splitlines())
        if len(f) > 9 and f[2].startswith("vda")
    }


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


def relay_level(guest: Guest) -> str:
    """The motor relay's line as the kernel drives it: 'hi', 'lo', or '' if nobody holds it."""
    table = guest.out("cat /sys/kernel/debug/gpio")
    chip = re.search(r"GPIOs (\d+)-\d+, parent: \S+/[0-9a-f]+\.pl061", table)
    if chip is None:
        return ""
    line = re.search(rf"gpio-{int(chip.group(1)) + MOTOR_LINE} .*\) out (hi|lo)", table)
    return line.group(1) if line else ""


def read_boot_partition(disk: Path, work: Path) -> str:
    local = work / "teletype.toml.read"
    subprocess.run(["mcopy", "-o", "-i", f"{disk}@@1M", "::teletype.toml", str(local)], check=True)
    return local.read_text()


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def edit_boot_partition(disk: Path, work: Path, edit: Callable[[str], str]) -> None:
    """Change teletype.toml on the card's FAT partition, as a computer with a card reader would."""
    local = work / "teletype.toml.edit"
    image = f"{disk}@@1M"
    subprocess.run(["mcopy", "-o", "-i", image, "::teletype.toml", str(local)], check=True)
    local.write_text(edit(local.read_text()))
    subprocess.run(["mcopy", "-o", "-i", image, str(local), "::teletype.toml"], check=True)


# --- the card -----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Card:
    """An SD card made from the image's root (make-disk.sh), and the board that boots it."""

    work: Path
    disk_id: str  # the card's PARTUUID prefix
    cmdline: str  # the kernel command line, from the card's own cmdline.txt
    dtb: Path  # the board's device tree, for this memory size
    memory_mb: int = MEMORY_MB

    @property
    def disk(self) -> Path:
        return self.work / "disk.img"

    def guest(self, console: str) -> Guest:
        """The board, not yet powered on; its console goes to WORK/console."""
        return Guest(self.work, self.disk_id, self.work / console, self.cmdline, self.memory_mb)

    def boot(self, console: str) -> Guest:
        guest = self.guest(console)
        guest.power_on(self.dtb)
        return guest

    def with_memory(self, memory_mb: int) -> Card:
        """The same card in a board with another memory size (its own device tree)."""
        probe = Guest(self.work, self.disk_id, self.work / "probe.log", self.cmdline, memory_mb)
        dtb = device_tree(probe.args, self.work, f"board-{memory_mb}.dtb")
        return dataclasses.replace(self, memory_mb=memory_mb, dtb=dtb)


def make_card(rootfs: Path, work: Path, toml: str, env: dict[str, str] | None = None) -> Card:
    """ROOTFS as an SD card in WORK, with `toml` as the boot partition's teletype.toml.

    `env` is make-disk.sh's environment (BOOT_MIB, BOOT_EXTRA: a bigger boot
    partition with more files on it)."""
    work.mkdir(parents=True, exist_ok=True)
    settings = work / "teletype.toml"
    settings.write_text(toml)
    disk_id = subprocess.run(
        [str(HERE / "make-disk.sh"), str(rootfs), str(settings), str(work)],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    ).stdout.split()[-1]
    cmdline = kernel_command_line((work / "bootfs" / "cmdline.txt").read_text(), disk_id)
    probe = Guest(work, disk_id, work / "probe.log", cmdline)
    return Card(work, disk_id, cmdline, device_tree(probe.args, work))


# --- pass or fail -------------------------------------------------------------------


class Results:
    """Each check's pass or fail, printed as it is made, named by the scenario it is in."""

    def __init__(self):
        self.passed = 0
        self.failed: list[str] = []
        self.scenario = ""
        self.started = time.monotonic()

    def begin(self, scenario: str) -> None:
        self.scenario = scenario
        # When each began: where the check's time goes (CI's budget is tight).
        print(f"\n== {scenario}   [{time.monotonic() - self.started:.0f} s]", flush=True)

    def check(self, name: str, ok: bool, detail: str = "") -> bool:
        print(f"   {'ok  ' if ok else 'FAIL'}  {name}", flush=True)
        if ok:
            self.passed += 1
        else:
            self.failed.append(f"{self.scenario}: {name}" if self.scenario else name)
            for line in detail.strip().splitlines()[-25:]:
                print(f"         {line}", flush=True)
        return ok

    def summary(self) -> str:
        return f"{self.passed} passed, {len(self.failed)} failed"
