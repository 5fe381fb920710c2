"""Teletype machines as data: character set, width, line speed, framing.

A profile is a row in a table, not a branch in the code: adding a machine
means adding a row (and, for a new character set, a table in codes.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from appliance.errors import ProfileError

PARITIES = ("even", "odd", "mark", "space", "none")


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    code: str  # "ascii63", "ustty" or "ita2": the table in codes.py
    columns: int
    baud: float
    data_bits: int  # bits of the character itself
    stop_bits: float
    parity: str  # the usual setting; the config may override it (ASCII only)
    # Some Baudot machines drop to letters shift after every space.
    unshift_on_space: bool = False

    @property
    def is_baudot(self) -> bool:
        return self.code != "ascii63"

    def bits_per_character(self, parity: str | None = None) -> float:
        """Start bit + data + parity + stop bits: the frame on the wire."""
        parity = parity or self.parity
        return 1 + self.data_bits + (0 if parity == "none" else 1) + self.stop_bits

    def characters_per_second(self, parity: str | None = None) -> float:
        return self.baud / self.bits_per_character(parity)


PROFILES: dict[str, Profile] = {
    p.name: p
    for p in (
        Profile(
            name="asr33",
            description="Teletype Model 33 ASR/KSR: ASCII-63, 72 columns, 110 baud 7E2",
            code="ascii63",
            columns=72,
            baud=110,
            data_bits=7,
            stop_bits=2,
            parity="even",
        ),
        Profile(
            name="model28",
            description="Teletype Model 28: US Baudot (USTTY), 69 columns, 45.45 baud",
            code="ustty",
            columns=69,
            baud=45.45,
            data_bits=5,
            stop_bits=1.5,
            parity="none",
        ),
        Profile(
            name="ita2",
            description="Any ITA2 (international Baudot) machine, 69 columns, 45.45 baud",
            code="ita2",
            columns=69,
            baud=45.45,
            data_bits=5,
            stop_bits=1.5,
            parity="none",
        ),
    )
}


def get_profile(name: str) -> Profile:
    try:
        return PROFILES[name]
    except KeyError:
        known = ", ".join(PROFILES)
        raise ProfileError(f"unknown Teletype profile {name!r}; known profiles: {known}") from None
