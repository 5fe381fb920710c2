"""Where frames go: a real serial port, a virtual Teletype in this terminal, or a file.

All three behind one small interface, chosen by the `--port` value: a
device path, `virtual`, or `file:PATH` (like gpiozero's pin factories, so
everything above runs the same on a Pi and on a laptop).
"""

from __future__ import annotations

import contextlib
import glob
import os
import stat
import sys
from pathlib import Path
from typing import Protocol, TextIO

from appliance.errors import PortError
from appliance.teletype import codes
from appliance.teletype.profiles import Profile


class Port(Protocol):
    name: str
    paced: bool  # False: the printer need not wait between characters

    def open(self) -> None: ...
    def write(self, data: bytes) -> None: ...
    def drain(self) -> None: ...
    def read(self, timeout: float) -> bytes: ...
    def close(self) -> None: ...


class Decoder:
    """Wire codes -> text, as the machine would print it (for screens and files)."""

    def __init__(self, profile: Profile):
        self.profile = profile
        self.shift = codes.LTRS
        if profile.is_baudot:
            figures = codes.BAUDOT_FIGURES[profile.code]
            self._letters = {v: k for k, v in codes.BAUDOT_LETTERS.items()}
            self._figures = {v: k for k, v in figures.items()}

    def decode(self, data: bytes) -> str:
        return "".join(self._one(b) for b in data)

    def _one(self, byte: int) -> str:
        if not self.profile.is_baudot:
            ch = chr(byte & 0x7F)
            if ch == "\x07":
                return "\a"
            return ch if ch in "\r\n" or " " <= ch <= "_" else ""
        byte &= 0x1F
        if byte in (codes.LTRS, codes.FIGS):
            self.shift = byte
            return ""
        if byte == codes.SPACE:
            if self.profile.unshift_on_space:
                self.shift = codes.LTRS
            return " "
        if byte == codes.CR:
            return "\r"
        if byte == codes.LF:
            return "\n"
        if byte == codes.BLANK:
            return ""
        if self.shift == codes.FIGS and byte == codes.BAUDOT_BELL[self.profile.code]:
            return "\a"
        table = self._figures if self.shift == codes.FIGS else self._letters
        return table.get(byte, "")


class SerialPort:
    """A real serial device (the Pi's UART or a USB adapter), through pyserial."""

    paced = True

    def __init__(self, device: str, profile: Profile, parity: str, software_parity: bool):
        self.name = device
        self.profile = profile
        self.parity = parity
        self.software_parity = software_parity and not profile.is_baudot
        self._serial = None

    def settings(self) -> dict:
        import serial

        stop = {1: serial.STOPBITS_ONE, 1.5: serial.STOPBITS_ONE_POINT_FIVE, 2: serial.STOPBITS_TWO}
        if self.profile.is_baudot:
            bytesize, parity = serial.FIVEBITS, serial.PARITY_NONE
        elif self.software_parity:
            # 8 data bits, no UART parity: our bit 7 is the parity bit. The
            # same 11-bit frame as 7E2 on the wire, on any adapter or pty.
            bytesize, parity = serial.EIGHTBITS, serial.PARITY_NONE
        else:
            bytesize = serial.SEVENBITS
            parity = {
                "even": serial.PARITY_EVEN,
                "odd": serial.PARITY_ODD,
                "mark": serial.PARITY_MARK,
                "space": serial.PARITY_SPACE,
                "none": serial.PARITY_NONE,
            }[self.parity]
        return {
            "baudrate": self.profile.baud,
            "bytesize": bytesize,
            "parity": parity,
            "stopbits": stop[self.profile.stop_bits],
            "timeout": 0,
            "write_timeout": 5,
        }

    def open(self) -> None:
        import serial

        self.close()
        self._check_device()
        try:
            # Everything in the constructor: some drivers (and ptys) refuse
            # a later change of data bits or parity on an open port.
            self._serial = serial.Serial(self.name, **self.settings())
        except (serial.SerialException, OSError, ValueError) as e:
            if not _is_a_terminal(self.name):  # /dev/null, /dev/zero: characters, not a UART
                raise PortError(_not_serial(self.name)) from e
            raise PortError(f"cannot open the Teletype's port {self.name}: {e}") from e

    def _check_device(self) -> None:
        """A missing, mistyped or non-serial path, said in plain words before pyserial tries."""
        try:
            mode = os.stat(self.name).st_mode
        except FileNotFoundError:
            raise PortError(
                f"cannot open the Teletype's port {self.name}: no such device"
                f"{_serial_devices_here()}"
            ) from None
        except OSError as e:
            raise PortError(f"cannot open the Teletype's port {self.name}: {e.strerror}") from e
        if not stat.S_ISCHR(mode):
            raise PortError(_not_serial(self.name))

    def write(self, data: bytes) -> None:
        import serial

        if self._serial is None:
            self.open()
        try:
            self._serial.write(data)
        except (serial.SerialException, OSError) as e:
            self.close()
            raise PortError(f"writing to {self.name} failed: {e}") from e

    def drain(self) -> None:
        import serial

        if self._serial is None:
            return
        try:
            self._serial.flush()  # tcdrain: wait until the UART has sent it all
        except (serial.SerialException, OSError) as e:
            self.close()
            raise PortError(f"{self.name} went away: {e}") from e

    def read(self, timeout: float) -> bytes:
        import serial

        if self._serial is None:
            self.open()
        try:
            self._serial.timeout = timeout
            return self._serial.read(64)
        except (serial.SerialException, OSError, TypeError) as e:
            self.close()
            raise PortError(f"reading from {self.name} failed: {e}") from e

    def close(self) -> None:
        if self._serial is not None:
            with contextlib.suppress(OSError):
                self._serial.close()
            self._serial = None


# Where a Pi's UART and USB serial adapters appear (and the image's udev name).
_SERIAL_PATTERNS = ("/dev/teletype", "/dev/serial[0-9]", "/dev/ttyUSB*", "/dev/ttyACM*")


def _not_serial(path: str) -> str:
    return f"cannot open the Teletype's port {path}: not a serial device{_serial_devices_here()}"


def _is_a_terminal(path: str) -> bool:
    """Whether the path is a tty at all (non-blocking: no wait for a modem's carrier)."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    except OSError:
        return True  # busy or not ours to open: pyserial's own message says more
    try:
        return os.isatty(fd)
    finally:
        os.close(fd)


def _serial_devices_here() -> str:
    """ "; serial devices here: ..." for an error message, or a hint when there are none."""
    found = sorted({path for pattern in _SERIAL_PATTERNS for path in glob.glob(pattern)})
    if found:
        return "; serial devices here: " + ", ".join(found)
    return "; none is plugged in here (try --port virtual)"


class VirtualTeletype:
    """A Teletype drawn in this terminal: upper case, 72 columns, at the real rate."""

    paced = True

    def __init__(self, profile: Profile, out: TextIO | None = None, keyboard: TextIO | None = None):
        self.name = "virtual"
        self.profile = profile
        self.out = out or sys.stdout
        self.keyboard = keyboard
        self.decoder = Decoder(profile)

    def open(self) -> None:
        pass

    def write(self, data: bytes) -> None:
        text = self.decoder.decode(data)
        # A terminal's newline does what CR LF does on paper; the bell is
        # left to the terminal.
        text = text.replace("\r", "")
        if text:
            self.out.write(text)
            self.out.flush()

    def drain(self) -> None:
        self.out.flush()

    def read(self, timeout: float) -> bytes:
        return b""

    def close(self) -> None:
        pass


class TranscriptPort:
    """Appends what would be printed to a text file, as fast as it comes."""

    paced = False

    def __init__(self, path: Path, profile: Profile):
        self.name = f"file:{path}"
        self.path = path
        self.decoder = Decoder(profile)
        self._file = None

    def open(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("a", encoding="ascii", newline="")
        except OSError as e:
            raise PortError(f"cannot open the transcript {self.path}: {e}") from e

    def write(self, data: bytes) -> None:
        if self._file is None:
            self.open()
        text = self.decoder.decode(data).replace("\r", "")
        self._file.write(text.replace("\a", ""))

    def drain(self) -> None:
        if self._file is not None:
            self._file.flush()

    def read(self, timeout: float) -> bytes:
        return b""

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def open_port(
    spec: str, profile: Profile, parity: str, software_parity: bool, out: TextIO | None = None
) -> Port:
    """`virtual`, `file:PATH` or a device path -> a Port (not yet opened)."""
    if spec == "virtual":
        return VirtualTeletype(profile, out)
    if spec.startswith("file:"):
        path = spec[len("file:") :]
        if not path:
            raise PortError("a transcript port needs a path: file:PATH")
        return TranscriptPort(Path(path), profile)
    if not spec:
        raise PortError("no port given: use a device path, 'virtual' or 'file:PATH'")
    return SerialPort(spec, profile, parity, software_parity)
