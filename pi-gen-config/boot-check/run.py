"""`make boot-check`: the appliance booted as a Raspberry Pi boots it, and driven from outside.

    run.py ROOTFS WORK_DIR

The card is made from ROOTFS, the arm64 root `make image-check` leaves, and
booted on the emulated board (rig.py). The scenarios (scenarios.py) run in
order over three boots of the one card: as made; again after a power cut;
and again after teletype.toml was changed on the card in another computer.
Each check is one pass or fail under its scenario's title; the last line is
`N passed, M failed`. BOOT_CHECK_QUICK=1 stops after the first boot's
scenarios, while working on them.
"""

from __future__ import annotations

import itertools
import os
import sys
import time
from pathlib import Path

import scenarios as s
from rig import Guest, Results, board_settings, edit_boot_partition, make_card, tail


def main() -> int:
    rootfs, work = Path(sys.argv[1]).resolve(), Path(sys.argv[2]).resolve()
    r = Results()
    started = time.monotonic()

    template = (rootfs / "boot/firmware/teletype.toml").read_text()
    card = make_card(rootfs, work, board_settings(template))
    print(f"   {card.disk} ({card.disk.stat().st_size // 2**20} MB), PARTUUID {card.disk_id}-0N")
    print(f"   kernel command line: {card.cmdline}")
    s.card_is_imager_format(r, card.disk)
    boots = itertools.count(1)

    def boot() -> Guest:
        return card.boot(f"console-{next(boots)}.log")

    r.begin("power on")
    t0 = time.monotonic()
    guest = boot()
    memory_line = "memory: not measured"
    if r.check("the guest boots and its agent answers", guest.wait_agent(), tail(guest.console)):
        print(f"   (agent up after {time.monotonic() - t0:.0f} s)", flush=True)
        s.first_boot_reaches_ready(r, guest)
        s.root_is_read_only(r, guest)
        if os.environ.get("BOOT_CHECK_QUICK"):
            guest.shutdown()
            print(f"\n{r.summary()} (BOOT_CHECK_QUICK: the first boot alone)")
            return 1 if r.failed else 0
        s.button_press_prints_a_reply(r, guest)
        s.typed_line_gets_a_reply(r, guest)
        s.seed_route_prints_and_answers(r, guest)
        memory_line = s.memory_with_every_unit_running(r, guest)
        s.killed_engine_restarts(r, guest)
        s.hung_engine_watchdog_restarts_it(r, guest)
        guest = s.power_cut_mid_print(r, guest, boot)

    r.begin("teletype.toml changed on the card in another computer")
    r.check("the guest shuts down cleanly", guest.shutdown(), tail(guest.console))
    key = s.ssh_key(work)
    edit_boot_partition(card.disk, work, lambda text: s.changed_settings(text, key))
    guest = boot()
    if r.check("boots again", guest.wait_agent(), tail(guest.console)):
        s.wait_for(lambda: s.engine_ready(guest), 300)
        s.network_from_the_card(r, guest, key)
        s.changed_settings_take_effect(r, guest)
        s.motor_relay_follows_printing(r, guest)
        s.wrong_network_changes_nothing(r, guest)
    guest.shutdown()
    s.card_holds_no_password(r, card.disk, work)

    print(f"\n   {memory_line}")
    print(f"   boot check took {time.monotonic() - started:.0f} s")
    if r.failed:
        print("   failed: " + "; ".join(r.failed))
    print(f"\n{r.summary()}")
    return 1 if r.failed else 0


if __name__ == "__main__":
    sys.exit(main())
