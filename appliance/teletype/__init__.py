"""The Teletype side: profiles, character sets, line discipline, ports, printer, keyboard."""

from __future__ import annotations

from typing import TextIO

from appliance.config import TeletypeConfig
from appliance.teletype.discipline import LineDiscipline
from appliance.teletype.ports import Port, open_port
from appliance.teletype.printer import Printer
from appliance.teletype.profiles import PROFILES, Profile, get_profile

__all__ = ["PROFILES", "LineDiscipline", "Port", "Printer", "Profile", "build_printer"]


def build_printer(settings: TeletypeConfig, out: TextIO | None = None, **printer_kw) -> Printer:
    """A printer for the configured profile and port (the port is opened on first write)."""
    profile = get_profile(settings.profile)
    parity = settings.parity or profile.parity
    software = settings.parity_source == "software"
    discipline = LineDiscipline(
        profile,
        parity=parity,
        software_parity=software,
        cr_fills=settings.cr_fills,
        lf_fills=settings.lf_fills,
        fill=settings.fill,
    )
    port = open_port(settings.port, profile, parity, software, out=out)
    # Any port, not only the virtual Teletype: tests print to a pty fast. On a
    # real Teletype the UART's baud rate paces the paper whatever this says.
    return Printer(port, discipline, speed=settings.speed, **printer_kw)
