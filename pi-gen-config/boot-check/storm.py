"""`make power-cut-storm`: the plug pulled again and again on the emulated Pi.

    storm.py ROOTFS WORK_DIR

The card and the board are the boot check's (run.py): the image's own root,
read-only under its RAM overlay, the state on its own partition. Each cut
pulls the plug (QEMU killed: nothing flushed by the guest) at a random
moment, in turn:

- during boot, a new Wi-Fi password put on the card first, so the cut may
  catch the network oneshot taking it off the FAT (half of these cuts are
  drawn inside the window when the oneshot ran on the last boot);
- during a print (a job of ours, marked STORM NNN, on paper);
- during a stream of history writes (chat lines posted one after another);
- during a stream of job-journal writes (prints accepted one after another).

After every cut the board is powered on again and must come back to READY:
the system running (no emergency shell: no fsck question), the engine
ready, the history readable with the last line it acknowledged, the root
read-only again, the newest Wi-Fi password in NetworkManager and off the
card, and no password that was once taken off the card anywhere in the
FAT's raw bytes. At the end every accepted job is counted on the paper of
all the boots: printed once, printed twice (doubled), or never printed and
not answered for (lost). STORM_CUTS (30), STORM_SEED and STORM_MINUTES (a
bound on the run's length) set the run; a file WORK_DIR/stop ends it after
the cut in hand, with its figures.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import random
import re
import sys
import threading
import time
from pathlib import Path

import rig as board  # the boot check's emulated Pi and card

CUTS = int(os.environ.get("STORM_CUTS", "30"))
# A bound on the run: no new cut starts after this many minutes (the figures
# then say how many were made). None: every one of STORM_CUTS.
MINUTES = float(os.environ["STORM_MINUTES"]) if os.environ.get("STORM_MINUTES") else None
SEED = int(os.environ.get("STORM_SEED", "1963"))
KINDS = ("boot", "print", "history", "journal")
BOOT_MIB = 1  # the FAT partition starts 1 MiB into the card (make-disk.sh)
FILLER = "THE CODE BARS TURN ONCE MORE."  # short: a job is about 4 s of paper


class Storm:
    def __init__(self, work: Path, disk_id: str, cmdline: str, dtb: Path):
        self.work, self.disk_id, self.cmdline, self.dtb = work, disk_id, cmdline, dtb
        self.disk = work / "disk.img"
        self.boots = 0
        self.pulls = 0  # every time the plug is pulled (a boot cut follows an idle one)
        self.paper = bytearray()  # every boot's paper, one after another
        self.jobs: dict[int, int] = {}  # our number -> the engine's job id, for each 202
        self.numbers = itertools.count(1)
        self.acked_history: list[str] = []
        self.history_count = itertools.count(1)
        self.passwords: list[str] = []  # put on the card, in order
        self.scrubbed: set[str] = set()  # seen gone from the card at a READY boot
        self.problems: list[str] = []
        self.kinds: dict[str, int] = dict.fromkeys(KINDS, 0)
        self.boot_cut_phases = {"before the scrub": 0, "during the scrub": 0, "after it": 0}
        self.ready_after = 90.0  # seconds from power on to READY, measured on each boot
        self.scrub_window = (5.0, 20.0)  # seconds from power on, measured on each boot

    # --- the board -------------------------------------------------------------------

    def power_on(self) -> board.Guest:
        guest = board.Guest(self.work, self.disk_id, self.work / "console-storm.log", self.cmdline)
        guest.power_on(self.dtb)
        guest.started = time.monotonic()  # type: ignore[attr-defined]
        return guest

    def cut(self, guest: board.Guest) -> None:
        self.pulls += 1
        guest.power_cut()
        if guest.paper is not None:
            self.paper += guest.paper.data

    def problem(self, text: str) -> None:
        first, _, rest = text.partition("\n")
        print(f"   PROBLEM  {first}", flush=True)
        for line in rest.splitlines()[-20:]:
            print(f"            {line}", flush=True)
        self.problems.append(text)

    # --- what must hold after every cut ------------------------------------------------

    def ready(self, guest: board.Guest, after: str) -> bool:
        """The board back at READY after a cut, with everything it promises intact."""
        if not guest.wait_agent():
            self.problem(f"{after}: no boot (agent silent)\n{board.tail(guest.console)}")
            return False
        self.boots += 1
        state = guest.out("systemctl is-system-running --wait", timeout=board.BOOT_TIMEOUT)
        rescue = guest.out("systemctl is-active emergency.target rescue.target")
        if state != "running" or rescue != "inactive\ninactive":
            failed = guest.out("systemctl --failed --no-legend --plain")
            why = "\n".join(
                board.journal_tail(guest, unit) for unit in re.findall(r"(?m)^(\S+)", failed)
            )
            self.problem(f"{after}: system {state!r}, rescue {rescue!r}, failed: {failed}\n{why}")
        if not board.wait_for(lambda: board.engine_ready(guest), 300):
            self.problem(f"{after}: the engine is not READY\n{board.journal_tail(guest)}")
            return False
        started = guest.started  # type: ignore[attr-defined]
        self.ready_after = time.monotonic() - started
        self.check_history(guest, after)
        self.check_card(guest, after)
        mode = guest.out("cat /run/teletype-root")
        if mode != "read-only":
            self.problem(f"{after}: the root is {mode!r}")
        return True

    def check_history(self, guest: board.Guest, after: str) -> None:
        status, body = guest.api("GET", "/v1/history", timeout=60)
        lines = body.get("lines") if isinstance(body, dict) else None
        if status != 200 or not isinstance(lines, list):
            self.problem(f"{after}: the history is not readable: {status} {body!r}")
            return
        texts = [line.get("text") for line in lines]
        if self.acked_history and self.acked_history[-1] not in texts:
            self.problem(f"{after}: the last acknowledged chat line is gone: "
                         f"{self.acked_history[-1]!r} not in {texts[-5:]!r}")  # fmt: skip
        aside = guest.out("ls /var/lib/teletype-gpt2 | grep -c set-aside || true")
        if aside != "0":
            self.problem(f"{after}: state files were set aside (unreadable): {aside}")

    def check_card(self, guest: board.Guest, after: str) -> None:
        network = ""

        def oneshot_done() -> bool:
            nonlocal network
            network = guest.out("systemctl show -p ActiveState,Result --value teletype-network")
            return network.split()[:1] in (["active"], ["failed"])

        board.wait_for(oneshot_done, 120)
        if sorted(network.split()) != ["active", "success"]:
            self.problem(f"{after}: teletype-network {network!r}")
        card = guest.out("cat /boot/firmware/teletype.toml")
        newest = self.passwords[-1] if self.passwords else None
        if newest is not None:
            if newest in card:
                self.problem(f"{after}: the newest password is still on the card")
            else:
                self.scrubbed.add(newest)
            psk = guest.out("nmcli -s -g 802-11-wireless-security.psk connection show "
                            "teletype-wifi")  # fmt: skip
            if psk != newest:
                self.problem(f"{after}: NetworkManager has {psk!r}, not the newest password")
        times = guest.out(
            "systemctl show -p ExecMainStartTimestampMonotonic,ExecMainExitTimestampMonotonic "
            "--value teletype-network"
        ).split()
        uptime = float(guest.out("cut -d' ' -f1 /proc/uptime") or 0)
        if len(times) == 2 and all(t.isdigit() and int(t) > 0 for t in times):
            since_power_on = time.monotonic() - guest.started  # type: ignore[attr-defined]
            kernel_at = since_power_on - uptime  # the kernel starts this long after power on
            self.scrub_window = (kernel_at + int(times[0]) / 1e6, kernel_at + int(times[1]) / 1e6)

    def check_raw_card(self, after: str) -> None:
        """No password once taken off the card is anywhere in the FAT's bytes."""
        with self.disk.open("rb") as f:
            f.seek(BOOT_MIB << 20)
            fat = f.read(64 << 20)
        for password in self.scrubbed:
            if password.encode() in fat:
                self.problem(f"{after}: a password taken off the card is back in its FAT")

    # --- the cuts ----------------------------------------------------------------------------

    def new_password(self) -> None:
        password = f"storm wifi {len(self.passwords) + 1:02d} {random.randrange(10**6):06d}"
        self.passwords.append(password)
        board.edit_boot_partition(
            self.disk, self.work,
            lambda text: re.sub(r"(?m)^# password: moved to NetworkManager.*$|^password = .*$",
                                f'password = "{password}"', text, count=1),
        )  # fmt: skip

    def cut_during_boot(self) -> float:
        self.new_password()
        inside = random.random() < 0.5
        start, end = self.scrub_window
        if inside:
            delay = max(random.uniform(start - 1, end + 1), 0.0)
        else:
            delay = random.uniform(0, self.ready_after)
        guest = self.power_on()
        time.sleep(delay)
        self.cut(guest)
        phase = ("before the scrub" if delay < start else
                 "during the scrub" if delay <= end else "after it")  # fmt: skip
        self.boot_cut_phases[phase] += 1
        return delay

    def print_job(self, guest: board.Guest) -> bool:
        number = next(self.numbers)
        status, body = guest.api("POST", "/v1/print",
                                 {"text": f"STORM {number:03d} {FILLER}"}, timeout=60)  # fmt: skip
        if status == 202 and isinstance(body, dict):
            self.jobs[number] = int(body["id"])
            return True
        return False

    def cut_during_print(self, guest: board.Guest) -> float:
        assert guest.paper is not None
        board.wait_for(lambda: board.idle(guest), 300)
        mark = guest.paper.mark()
        self.print_job(guest)
        guest.paper.wait_printing(mark, 120)
        delay = random.uniform(0, 4)
        time.sleep(delay)
        self.cut(guest)
        return delay

    def cut_during_stream(self, guest: board.Guest, kind: str) -> float:
        """Writes one after another from another thread; the plug pulled in the middle."""
        stop = threading.Event()

        def history() -> None:
            n = next(self.history_count)
            text = f"storm line {n}"
            status, _ = guest.api("POST", "/v1/history", {"name": "storm", "text": text},
                                  timeout=30)  # fmt: skip
            if status == 201:
                self.acked_history.append(text)

        def stream() -> None:
            while not stop.is_set():
                try:
                    if kind == "history":
                        history()
                    else:
                        self.print_job(guest)
                except Exception:  # the plug was pulled under it
                    return

        board.wait_for(lambda: board.idle(guest), 300)
        writer = threading.Thread(target=stream, daemon=True)
        writer.start()
        delay = random.uniform(2, 12)
        time.sleep(delay)
        stop.set()
        self.cut(guest)
        writer.join(timeout=30)
        return delay

    # --- the run ------------------------------------------------------------------------------

    def run(self) -> int:
        random.seed(SEED)
        started = time.monotonic()
        self.new_password()
        guest = self.power_on()
        if not self.ready(guest, "the first boot"):
            return 1
        for i in range(1, CUTS + 1):
            if MINUTES is not None and time.monotonic() - started > MINUTES * 60:
                print(f"   STORM_MINUTES ({MINUTES:.0f}) reached: no more cuts", flush=True)
                break
            if (self.work / "stop").exists():  # `touch WORK_DIR/stop`: end with the figures
                print("   WORK_DIR/stop found: no more cuts", flush=True)
                break
            kind = KINDS[(i - 1) % len(KINDS)]
            self.kinds[kind] += 1
            if kind == "boot":
                self.cut(guest)  # the running board first (a cut too, while idle)
                delay = self.cut_during_boot()
            elif kind == "print":
                delay = self.cut_during_print(guest)
            else:
                delay = self.cut_during_stream(guest, kind)
            after = f"cut {i} ({kind}, at {delay:.1f} s)"
            self.check_raw_card(after)
            guest = self.power_on()
            ok = self.ready(guest, after)
            came = "READY" if ok else "NOT READY"
            print(f"   cut {i:2d}/{CUTS}: {kind:8s} at {delay:5.1f} s -> {came} "
                  f"({self.ready_after:.0f} s)", flush=True)  # fmt: skip
            if not ok:
                self.cut(guest)
                guest = self.power_on()
                if not self.ready(guest, f"{after}, again"):
                    break
        board.wait_for(lambda: board.idle(guest), 600)
        if guest.paper is not None:
            guest.paper.wait_quiet(guest.paper.mark(), quiet=3, timeout=30)
        told = self.answered_for(guest)
        clean = guest.shutdown()
        if guest.paper is not None:
            self.paper += guest.paper.data
        self.check_raw_card("the end")
        if not clean:
            self.problem("the last shutdown was not clean")
        return self.report(told, time.monotonic() - started)

    def answered_for(self, guest: board.Guest) -> dict[int, str]:
        """The engine's answer for each job not on paper (interrupted, failed...)."""
        on_paper = self.on_paper()
        answers = {}
        for number, job_id in self.jobs.items():
            if on_paper.get(number, 0) == 0:
                with contextlib.suppress(TimeoutError, ValueError):
                    status, body = guest.api("GET", f"/v1/jobs/{job_id}", timeout=30)
                    if status == 200 and isinstance(body, dict):
                        answers[number] = str(body.get("status"))
        return answers

    def on_paper(self) -> dict[int, int]:
        text = board.paper_text(bytes(self.paper))
        counts: dict[int, int] = {}
        for found in re.findall(r"STORM (\d{3}) ", text):
            counts[int(found)] = counts.get(int(found), 0) + 1
        return counts

    def report(self, told: dict[int, str], seconds: float) -> int:
        on_paper = self.on_paper()
        printed = sum(1 for n in self.jobs if on_paper.get(n, 0) == 1)
        doubled = sorted(n for n in self.jobs if on_paper.get(n, 0) > 1)
        unprinted = [n for n in self.jobs if on_paper.get(n, 0) == 0]
        why_not = ("interrupted", "cancelled", "failed", "withheld")
        answered = {n: told[n] for n in unprinted if told.get(n) in why_not}
        lost = sorted(n for n in unprinted if n not in answered)
        for n in doubled:
            self.problem(f"job STORM {n:03d} printed {on_paper[n]} times")
        for n in lost:
            self.problem(f"job STORM {n:03d} accepted, never printed, not answered for "
                         f"({told.get(n, 'no answer')})")  # fmt: skip
        cuts = sum(self.kinds.values())
        lines = [
            f"cuts: {cuts} ({', '.join(f'{k} {v}' for k, v in self.kinds.items())}); "
            f"the plug pulled {self.pulls} times in all (each boot cut follows one on the "
            "idle board)",
            "boot cuts: " + ", ".join(f"{v} {k}" for k, v in self.boot_cut_phases.items()),
            f"boots to READY: {self.boots}",
            f"jobs accepted: {len(self.jobs)}, printed once: {printed}, "
            f"not printed and answered for: {len(answered)} "
            f"({', '.join(sorted(set(answered.values()))) or 'none'}), "
            f"lost: {len(lost)}, doubled: {len(doubled)}",
            f"chat lines acknowledged: {len(self.acked_history)}",
            f"Wi-Fi passwords put on the card: {len(self.passwords)}, taken off: "
            f"{len(self.scrubbed)}",
            f"problems: {len(self.problems)}",
            f"took {seconds / 60:.0f} min (seed {SEED})",
        ]
        print("\n== the storm\n" + "\n".join(f"   {line}" for line in lines), flush=True)
        for text in self.problems:
            print(f"   - {text.splitlines()[0]}")
        print(f"\n{'passed' if not self.problems else 'FAILED'}: {cuts} cuts")
        return 1 if self.problems else 0


def main() -> int:
    rootfs, work = Path(sys.argv[1]).resolve(), Path(sys.argv[2]).resolve()
    template = (rootfs / "boot/firmware/teletype.toml").read_text()
    toml = board.board_settings(template)
    for name, value in (
        ("country", '"GB"'),
        ("ssid", f'"{board.WIFI_SSID}"'),
        ("password", '"placeholder"'),
    ):
        toml = board.set_setting(toml, "network", name, value)
    card = board.make_card(rootfs, work, toml)
    print(f"== power-cut storm: {CUTS} cuts, seed {SEED}", flush=True)
    return Storm(work, card.disk_id, card.cmdline, card.dtb).run()


if __name__ == "__main__":
    sys.exit(main())
