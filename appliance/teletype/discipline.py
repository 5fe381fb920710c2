"""The line discipline: folded text -> word-wrapped lines -> one frame per character.

A Teletype does not wrap: the 73rd character overprints the 72nd. A
carriage return takes about 200 ms, and characters sent meanwhile print in
the middle of the line, so each CR and LF is followed by fill characters.
This module does all of that and knows the print column after every frame,
so a cancelled print can always finish its line.
"""

from __future__ import annotations

from dataclasses import dataclass

from appliance.teletype import codes
from appliance.teletype.profiles import Profile


@dataclass(frozen=True)
class Frame:
    """One character frame on the wire."""

    code: int  # the byte to write (parity included where software makes it)
    column: int  # the print column once this character is done
    line_end: bool = False  # the line feed of a new line


class Encoder:
    """Symbols (printable characters, "\\r", "\\n", fill, bell) -> wire codes."""

    FILL = "\x00"  # the layout's symbol for "a fill character"
    BELL = "\x07"

    def __init__(self, profile: Profile, parity: str, software_parity: bool, fill: str):
        self.profile = profile
        self.parity = parity
        self.software_parity = software_parity and not profile.is_baudot
        self.fill_code = {"nul": 0x00, "del": 0x7F}[fill]
        self.shift: int | None = None  # Baudot: unknown until we send one

    def reset(self) -> None:
        """Forget the Baudot shift state (after a reconnect the machine may be in either)."""
        self.shift = None

    def encode(self, symbol: str) -> list[int]:
        if self.profile.is_baudot:
            return self._baudot(symbol)
        code = {"\r": 0x0D, "\n": 0x0A, self.FILL: self.fill_code, self.BELL: 0x07}.get(symbol)
        if code is None:
            code = ord(symbol)
        if self.software_parity:
            code |= codes.parity_bit(code, self.parity) << 7
        return [code]

    def _baudot(self, symbol: str) -> list[int]:
        name = self.profile.code
        if symbol == "\r":
            return [codes.CR]
        if symbol == "\n":
            return [codes.LF]
        if symbol == self.FILL:
            return [codes.BLANK]
        if symbol == " ":
            if self.profile.unshift_on_space:
                self.shift = codes.LTRS
            return [codes.SPACE]
        if symbol == self.BELL:
            return [*self._shift_to(codes.FIGS), codes.BAUDOT_BELL[name]]
        if symbol in codes.BAUDOT_LETTERS:
            return [*self._shift_to(codes.LTRS), codes.BAUDOT_LETTERS[symbol]]
        return [*self._shift_to(codes.FIGS), codes.BAUDOT_FIGURES[name][symbol]]

    def _shift_to(self, shift: int) -> list[int]:
        # Only when the character needs the other shift: as few shift
        # characters as possible (they cost a character time each).
        if self.shift == shift:
            return []
        self.shift = shift
        return [shift]


class LineDiscipline:
    """Turns a stream of text into frames, word-wrapped to the profile's width.

    feed() returns frames only for complete words, so printing can start
    with the first word while the rest is still being generated; flush()
    releases the last partial word.
    """

    def __init__(
        self,
        profile: Profile,
        parity: str | None = None,
        software_parity: bool = True,
        cr_fills: int = 2,
        lf_fills: int = 1,
        fill: str = "nul",
    ):
        self.profile = profile
        self.charset = codes.CHARACTER_SETS[profile.code]
        self.parity = parity or profile.parity
        self.encoder = Encoder(profile, self.parity, software_parity, fill)
        self.width = profile.columns
        self.cr_fills = cr_fills
        self.lf_fills = lf_fills
        self.column = 0
        # Where the carriage is when we did not put it there (a crash, a
        # power cut mid-line): the first job starts on a new line.
        self._carriage_unknown = False
        self._pending = ""  # a word not yet known to be complete
        self._blank_lines = 0

    # --- the public side -----------------------------------------------------

    def feed(self, text: str, word_end: bool = False) -> list[Frame]:
        """Frames for the text's complete words; the last word waits for a break.

        `word_end`: the text ends at a word's end (a reply's pieces do), so its
        last word is laid out now, unless it would end at the margin, where a
        comma after it would start the next line alone: that one waits.
        """
        self._pending += self.charset.fold(text)
        frames: list[Frame] = []
        while True:
            cut = _last_break(self._pending)
            if cut < 0:
                break
            ready, self._pending = self._pending[: cut + 1], self._pending[cut + 1 :]
            frames += self._layout(ready)
        if word_end and self._pending:
            end = self.column + len(self._pending)
            if end > self.width:  # it wraps: it starts the next line
                end = len(self._pending)
            if end < self.width:
                frames += self._layout(self._pending)
                self._pending = ""
        return frames

    def flush(self) -> list[Frame]:
        """The rest of the text (the last word), without ending the line."""
        ready, self._pending = self._pending, ""
        return self._layout(ready)

    def end_line(self) -> list[Frame]:
        """CR LF (with fills) if the carriage is not already at column 0."""
        return self._newline() if self.column else []

    def discard_pending(self) -> None:
        self._pending = ""

    def paper_frames(self, text: str) -> int:
        """The frames `text` would take as a job of its own, from column 0 to the end of its
        last line: its paper time. Use an instance that prints nothing (it starts over)."""
        self.column, self._pending, self._blank_lines = 0, "", 0
        self._carriage_unknown = False
        self.encoder.reset()
        count = len(self.feed(text)) + len(self.flush()) + len(self.end_line())
        self.column = 0
        return count

    def bell(self) -> list[Frame]:
        return self._emit(Encoder.BELL, self.column)

    def carriage_unknown(self) -> None:
        """The carriage may be anywhere: begin the next job with CR LF."""
        self._carriage_unknown = True

    def start_job(self) -> list[Frame]:
        """Frames to send before a job: CR LF if the carriage is not known to be at column 0.

        The shift state is forgotten: after a reconnect or a power cycle a
        Baudot machine may be in either shift, so the first character of a
        job always brings its own shift.
        """
        self._blank_lines = 0
        self.encoder.reset()
        frames = self._newline() if self.column or self._carriage_unknown else []
        self._carriage_unknown = False
        return frames

    # --- layout ----------------------------------------------------------------

    def _layout(self, text: str) -> list[Frame]:
        frames: list[Frame] = []
        for token in _tokens(text):
            if token == "\n":
                # A blank line is a paragraph break; more than one wastes paper.
                if self.column == 0:
                    self._blank_lines += 1
                    if self._blank_lines > 1:
                        continue
                frames += self._newline()
            elif token == " ":
                if self.column == 0:
                    continue  # no spaces at the start of a wrapped line
                if self.column >= self.width:
                    frames += self._newline()
                    continue
                frames += self._put(" ")
            else:
                frames += self._word(token)
        return frames

    def _word(self, word: str) -> list[Frame]:
        frames: list[Frame] = []
        if self.column and self.column + len(word) > self.width:
            frames += self._newline()
        while len(word) > self.width - self.column:
            # Longer than a whole line: break it at the margin.
            room = self.width - self.column
            for ch in word[:room]:
                frames += self._put(ch)
            word = word[room:]
            frames += self._newline()
        for ch in word:
            frames += self._put(ch)
        self._blank_lines = 0
        return frames

    def _put(self, ch: str) -> list[Frame]:
        return self._emit(ch, self.column + 1)

    def _newline(self) -> list[Frame]:
        frames = self._emit("\r", 0)
        frames += [f for _ in range(self.cr_fills) for f in self._emit(Encoder.FILL, 0)]
        frames += self._emit("\n", 0)
        frames += [f for _ in range(self.lf_fills) for f in self._emit(Encoder.FILL, 0)]
        return frames

    def _emit(self, symbol: str, column: int) -> list[Frame]:
        self.column = column
        return [Frame(c, column, symbol == "\n") for c in self.encoder.encode(symbol)]


def _last_break(text: str) -> int:
    return max(text.rfind(" "), text.rfind("\n"))


def _tokens(text: str):
    word = ""
    for ch in text:
        if ch in " \n":
            if word:
                yield word
                word = ""
            yield ch
        else:
            word += ch
    if word:
        yield word
