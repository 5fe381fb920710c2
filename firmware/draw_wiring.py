"""Draws firmware/wiring.png: the Pi, the 20 mA current-loop interface and the Teletype.

Run with `make wiring` (matplotlib comes with the convert extra). The
drawing is a block diagram with the part values; WIRING.md has the table.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.patches import FancyBboxPatch

OUT = Path(__file__).with_name("wiring.png")


def box(ax, x, y, w, h, title, lines=(), color="#f4f1e8"):
    ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.02", fc=color, ec="black"))
    ax.text(x + w / 2, y + h - 0.25, title, ha="center", va="top", fontsize=10, weight="bold")
    for i, line in enumerate(lines):
        ax.text(x + 0.15, y + h - 0.7 - i * 0.32, line, ha="left", va="top", fontsize=8)


def wire(ax, points, label="", color="black", at=0, dy=0.12):
    xs, ys = zip(*points, strict=True)
    ax.plot(xs, ys, color=color, lw=1.6)
    if label:
        (x0, y0), (x1, y1) = points[at], points[at + 1]
        ax.text((x0 + x1) / 2, (y0 + y1) / 2 + dy, label, ha="center", fontsize=7.5, color=color)


def main() -> None:
    fig, ax = plt.subplots(figsize=(13, 7.5))
    ax.set_xlim(0, 20)
    ax.set_ylim(0, 11.5)
    ax.axis("off")
    ax.set_title(
        "Teletype GPT-2: Raspberry Pi to a Model 33 over a 20 mA current loop (opto-isolated)",
        fontsize=12,
    )

    box(ax, 0.3, 1.0, 4.2, 9.5, "Raspberry Pi header", [
        "GPIO14 TXD  (pin 8)",
        "GPIO15 RXD  (pin 10)",
        "3V3         (pin 1)",
        "GND         (pin 6)",
        "",
        "GPIO17 button (pin 11)",
        "GPIO27 LED    (pin 13)",
        "GND           (pin 9, 14)",
        "GPIO22 motor relay (pin 15)",
        "5V            (pin 2)",
        "",
        "/dev/teletype = ttyAMA0",
        "(or a USB adapter)",
    ])  # fmt: skip
    box(ax, 6.5, 6.3, 4.3, 3.6, "Send: opto U1", [
        "LED: TXD -> 330 R -> anode,",
        "     cathode -> GND (about 6 mA)",
        "transistor in series with the",
        "printer loop (Vceo >= loop V,",
        "e.g. H11D1 300 V, 4N35 30 V)",
        "TXD high (mark) = loop closed",
    ])  # fmt: skip
    box(ax, 6.5, 1.5, 4.3, 3.8, "Receive: opto U2", [
        "LED in series with the keyboard",
        "loop, 1N4148 across it reversed",
        "transistor: collector 3V3,",
        "emitter -> RXD, 10 k to GND",
        "loop closed (mark) = RXD high",
        "keyboard break (space) = low",
    ])  # fmt: skip
    box(ax, 12.8, 4.2, 2.9, 3.0, "Loop supply", [
        "isolated DC, 24-48 V",
        "series R sets 20 mA:",
        "R = (V - 2 V) / 0.02 A",
        "24 V: 1.1 k, 2 W",
        "48 V: 2.4 k, 2 W",
    ], color="#e8eef4")  # fmt: skip
    box(ax, 16.6, 1.0, 3.1, 9.5, "Teletype Model 33", [
        "selector magnets",
        "(the printer), about",
        "120 R + inductance;",
        "a 1N4004 across",
        "them catches the",
        "kick at each break",
        "",
        "keyboard contacts",
        "(the sender), open",
        "on a space bit",
        "",
        "110 baud, 7E2",
        "10 characters/s",
    ], color="#f4e8e8")  # fmt: skip

    box(ax, 11.6, 0.75, 4.6, 1.95, "Motor relay (GPIO22)", [
        "module: IN <- GPIO22, VCC 5V, GND",
        "coil: 1N4007 across it (flyback)",
        "contacts: the motor's AC line only",
    ], color="#eef4e8")  # fmt: skip

    # Send path: TXD -> U1 LED; U1 transistor in the printer loop.
    wire(ax, [(4.5, 9.2), (6.5, 9.2)], "TXD -> 330 R", "#1f5fbf")
    wire(ax, [(4.5, 8.6), (5.6, 8.6), (5.6, 6.8), (6.5, 6.8)], "GND", "#444444", at=1)
    wire(ax, [(10.8, 9.0), (16.6, 9.0)], "printer loop +  (to the selector magnets)", "#bf3f1f")
    wire(ax, [(10.8, 7.0), (12.8, 7.0)], "", "#bf3f1f")
    wire(ax, [(15.7, 6.6), (16.6, 6.6)], "", "#bf3f1f")
    ax.text(13.0, 7.35, "loop -", fontsize=7.5, color="#bf3f1f")
    # Receive path: keyboard loop through U2 LED; U2 transistor -> RXD.
    wire(ax, [(16.6, 3.0), (10.8, 3.0)], "keyboard loop (through U2's LED)", "#bf3f1f")
    wire(ax, [(12.8, 4.6), (11.8, 4.6), (11.8, 3.6), (10.8, 3.6)], "", "#bf3f1f")
    wire(ax, [(6.5, 4.2), (4.5, 4.2)], "U2 emitter -> RXD", "#1f5fbf")
    wire(ax, [(6.5, 3.2), (5.3, 3.2), (5.3, 7.8), (4.5, 7.8)], "3V3", "#444444", at=1, dy=0.0)
    # The motor: GPIO22 to the relay module; its contacts switch the motor's mains.
    wire(ax, [(4.5, 1.2), (11.6, 1.2)], "GPIO22 -> relay IN (and 5V, GND)", "#2f8f3f")
    wire(ax, [(16.2, 1.6), (16.6, 1.6)], "", "#2f8f3f")

    ax.text(
        0.3, 0.35,
        "Keep the Pi side and the loop side apart: the only links are light inside U1 and U2. "
        "Half-duplex ASR-33 (keyboard and printer in one loop): put U2's LED in that loop and "
        "set teletype.half_duplex = true.",
        fontsize=8,
    )  # fmt: skip
    fig.savefig(OUT, dpi=110, metadata={"Software": None})
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
