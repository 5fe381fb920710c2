"""`make sd-writes`: what the appliance writes to its SD card, idle and printing.

    sd_writes.py ROOTFS WORK_DIR

The boot check's card and board (run.py). For each mode the board boots,
settles (the engine READY, the status block printed, the queue empty), and
the kernel's counters of sectors written to each partition
(/proc/diskstats in the guest) are read before and after a window of
SD_WINDOW seconds (300 by default) idle, then one of printing without a
pause (a new job whenever the queue is empty). Figures are scaled to MB an
hour.

- read-only: the card as made (the root under its RAM overlay, the journal
  in RAM, the state on its own partition);
- read-write, journal on the card: what the image did before the read-only
  root (`read_only_root = false`, and journald's drop-in that keeps the
  journal in RAM removed at run time, so the journal is written to
  /var/log/journal as Debian does by default). The state is on its own
  partition here too; what it writes is counted with the rest.
"""

from __future__ import annotations

import os
import shlex
import sys
import threading
import time
from pathlib import Path

import rig as board  # the boot check's emulated Pi and card

WINDOW = float(os.environ.get("SD_WINDOW", "300"))
MODES = os.environ.get("SD_MODES", "read-only read-write").split()
TEXT = "THE PRINTER RUNS WITHOUT A PAUSE WHILE THE CARD IS WATCHED. " * 4
PARTS = {"vda1": "boot", "vda2": "root", "vda3": "state"}


def mb_per_hour(before: dict[str, int], after: dict[str, int], seconds: float) -> dict[str, float]:
    return {
        name: (after.get(part, 0) - before.get(part, 0)) * 512 / 1e6 * 3600 / seconds
        for part, name in PARTS.items()
    }


# Runs in the guest beside the window: each file the appliance replaces in its state
# directories (write_atomic renames a finished copy into place), counted by name.
COUNT_WRITES = r"""
import collections, ctypes, json, os, select, struct, sys, time
libc = ctypes.CDLL(None, use_errno=True)
fd = libc.inotify_init1(os.O_NONBLOCK)
IN_MOVED_TO = 0x80
for folder in sys.argv[2:]:
    libc.inotify_add_watch(fd, folder.encode(), IN_MOVED_TO)
counts, end = collections.Counter(), time.monotonic() + float(sys.argv[1])
while time.monotonic() < end:
    select.select([fd], [], [], 1.0)
    try:
        buf = os.read(fd, 65536)
    except BlockingIOError:
        continue
    at = 0
    while at < len(buf):
        _, _, _, size = struct.unpack_from("iIII", buf, at)
        counts[buf[at + 16 : at + 16 + size].rstrip(b"\0").decode()] += 1
        at += 16 + size
print(json.dumps(counts), flush=True)
"""
STATE_DIRS = ("/var/lib/teletype-gpt2", "/var/lib/teletype-network")


def keep_printing(guest: board.Guest, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            status, body = guest.api("GET", "/v1/status", timeout=30)
            if status == 200 and not body["queue"]:
                guest.api("POST", "/v1/print", {"text": TEXT}, timeout=30)
        except Exception:  # the window ended under it
            return
        stop.wait(5)


def measure(work: Path, disk_id: str, cmdline: str, dtb: Path, mode: str) -> list[str]:
    guest = board.Guest(work, disk_id, work / f"console-{mode}.log", cmdline)
    guest.power_on(dtb)
    if not guest.wait_agent():
        return [f"{mode}: no boot\n{board.tail(guest.console)}"]
    guest.out("systemctl is-system-running --wait", timeout=board.BOOT_TIMEOUT)
    if mode == "read-write":
        guest.sh("rm -f /etc/systemd/journald.conf.d/teletype.conf && "
                 "systemctl restart systemd-journald && journalctl --flush")  # fmt: skip
    board.wait_for(lambda: board.engine_ready(guest), 300)
    assert guest.paper is not None
    board.status_block(guest, 0)  # printed once, and the queue empty
    # Settled: the paper's copy written once the printer fell quiet (QUIET_SAVE_SECONDS
    # in appliance/engine/paper.py), so the idle window sees an appliance at rest.
    printed_at = int(guest.out("date +%s"))
    board.wait_for(
        lambda: (
            int(guest.out("stat -c %Y /var/lib/teletype-gpt2/paper.json || echo 0")) >= printed_at
        ),
        180,
        every=2,
    )
    running = guest.out("cat /run/teletype-root")
    journal = guest.out("journalctl --header | grep -m1 'File path'")
    lines = [f"{mode}: root {running!r}; {journal.strip()}"]
    start = board.sectors_written(guest)
    time.sleep(WINDOW)
    idle = board.sectors_written(guest)
    guest.sh(
        f"nohup python3 -c {shlex.quote(COUNT_WRITES)} {WINDOW} {' '.join(STATE_DIRS)} "
        ">/run/sd-writes-count.json 2>&1 &"
    )
    stop = threading.Event()
    printer = threading.Thread(target=keep_printing, args=(guest, stop), daemon=True)
    mark = guest.paper.mark()
    printer.start()
    time.sleep(WINDOW)
    stop.set()
    printer.join(timeout=60)
    printing = board.sectors_written(guest)
    printed = len(board.printed_words(guest.paper.since(mark)))
    board.wait_for(lambda: guest.out("cat /run/sd-writes-count.json").endswith("}"), 60, every=1)
    counted = guest.out("cat /run/sd-writes-count.json")
    guest.shutdown()
    for what, before, after in (("idle", start, idle), ("printing", idle, printing)):
        rates = mb_per_hour(before, after, WINDOW)
        total = sum(rates.values())
        parts = ", ".join(f"{name} {rate:.2f}" for name, rate in rates.items())
        lines.append(f"  {what:8s}: {total:6.2f} MB/hour ({parts})")
    lines.append(f"  ({WINDOW:.0f} s windows, scaled to an hour; {printed} words printed)")
    lines.append(f"  files replaced on the state partition while printing: {counted}")
    return lines


def main() -> int:
    rootfs, work = Path(sys.argv[1]).resolve(), Path(sys.argv[2]).resolve()
    template = (rootfs / "boot/firmware/teletype.toml").read_text()
    report = []
    for mode in MODES:
        toml = board.board_settings(template)
        if mode == "read-write":
            toml = board.set_setting(toml, "system", "read_only_root", "false")
        card = board.make_card(rootfs, work, toml)
        disk_id, cmdline, dtb = card.disk_id, card.cmdline, card.dtb
        print(f"== {mode}", flush=True)
        lines = measure(work, disk_id, cmdline, dtb, mode)
        print("\n".join(lines), flush=True)
        report += lines
    (work / "sd-writes.txt").write_text("\n".join(report) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
