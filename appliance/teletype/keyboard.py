"""Reading the Teletype's own keyboard: complete lines, parity stripped, echo ignored.

On a half-duplex loop everything we send comes back on the receive line;
those bytes are not typing. The printer tells us what it sent (`sent()`),
and incoming bytes that match it in order are dropped.
"""

from __future__ import annotations

from collections import deque

from appliance.teletype.ports import Decoder
from appliance.teletype.profiles import Profile

MAX_LINE = 200  # a stuck key must not grow a line forever


class KeyboardReader:
    def __init__(self, profile: Profile, half_duplex: bool = False):
        self.decoder = Decoder(profile)
        self.half_duplex = half_duplex
        self._echo: deque[int] = deque(maxlen=4096)
        self._line: list[str] = []

    def sent(self, data: bytes) -> None:
        if self.half_duplex:
            self._echo.extend(data)

    def received(self, data: bytes) -> list[str]:
        """Feed bytes from the wire; get back the lines completed by them."""
        lines = []
        for byte in data:
            if self._echo and self._echo[0] == byte:
                self._echo.popleft()
                continue
            text = self.decoder.decode(bytes([byte]))
            for ch in text:
                if ch in "\r\n":
                    line = "".join(self._line).strip()
                    self._line = []
                    if line:
                        lines.append(line)
                elif ch == "\a":
                    continue
                elif len(self._line) < MAX_LINE:
                    self._line.append(ch)
        return lines
