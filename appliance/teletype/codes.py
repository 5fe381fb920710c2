"""Character sets: what each machine can print, how text folds onto it, and the wire codes.

Folding happens in two steps. First any Unicode is transliterated to ASCII
by anyascii (a maintained library, so "é", "ß", "ё" and "→" all become
something sensible without a table of ours). Then each machine's own small
table maps the ASCII it lacks to its nearest printable character, and
anything still unprintable is dropped. Control characters never pass:
the only controls on the wire are the ones the line discipline makes
(CR, LF, fills, shifts, and BEL when asked for).
"""

from __future__ import annotations

from anyascii import anyascii

# --- ASCII-63 (Model 33) ------------------------------------------------------

# 0x20 to 0x5F: space, punctuation, digits, upper case, and [ \ ] ^ _
# (^ and _ print as an up-arrow and a left-arrow on the Model 33 typewheel).
ASCII63 = frozenset(chr(c) for c in range(0x20, 0x60))

# The ASCII that the typewheel lacks (lower case is folded up first).
ASCII63_FOLD = {"{": "(", "}": ")", "|": "!", "~": "-", "`": "'"}

# --- Baudot (5-bit) ----------------------------------------------------------

LTRS, FIGS = 0x1F, 0x1B
BLANK, SPACE, CR, LF = 0x00, 0x04, 0x08, 0x02
# Bit 0 is the first data bit sent (the usual way the tables are written).
BAUDOT_LETTERS = {
    "E": 0x01,
    "A": 0x03,
    "S": 0x05,
    "I": 0x06,
    "U": 0x07,
    "D": 0x09,
    "R": 0x0A,
    "J": 0x0B,
    "N": 0x0C,
    "F": 0x0D,
    "C": 0x0E,
    "K": 0x0F,
    "T": 0x10,
    "Z": 0x11,
    "L": 0x12,
    "W": 0x13,
    "H": 0x14,
    "Y": 0x15,
    "P": 0x16,
    "Q": 0x17,
    "O": 0x18,
    "B": 0x19,
    "G": 0x1A,
    "M": 0x1C,
    "X": 0x1D,
    "V": 0x1E,
}
_COMMON_FIGURES = {
    "-": 0x03,
    "?": 0x19,
    ":": 0x0E,
    "3": 0x01,
    "8": 0x06,
    "7": 0x07,
    "4": 0x0A,
    ",": 0x0C,
    "(": 0x0F,
    ")": 0x12,
    "5": 0x10,
    "2": 0x13,
    "6": 0x15,
    "0": 0x16,
    "1": 0x17,
    "9": 0x18,
    ".": 0x1C,
    "/": 0x1D,
}
# International (ITA2): FIGS-D is "who are you" (it trips the far end's
# answer-back), and F, G, H are national use: none of them is ever sent.
ITA2_FIGURES = {**_COMMON_FIGURES, "'": 0x05, "+": 0x11, "=": 0x1E}
ITA2_BELL = 0x0B  # FIGS-J
# US Teletype (USTTY), as on the Model 28.
USTTY_FIGURES = {
    **_COMMON_FIGURES,
    "$": 0x09,
    "!": 0x0D,
    "&": 0x1A,
    "#": 0x14,
    "'": 0x0B,
    ";": 0x1E,
    '"': 0x11,
}
USTTY_BELL = 0x05  # FIGS-S

# Nearest printable for what each Baudot set lacks (after upper-casing).
_BAUDOT_COMMON_FOLD = {
    "[": "(",
    "]": ")",
    "{": "(",
    "}": ")",
    "<": "(",
    ">": ")",
    "_": "-",
    "~": "-",
    "`": "'",
    "|": "/",
    "\\": "/",
    "@": " AT ",
    "*": "X",
    "%": " PCT",
    "^": "",
}
ITA2_FOLD = {**_BAUDOT_COMMON_FOLD, '"': "'", "!": ".", ";": ",", "$": "S", "&": "+", "#": "NO."}
USTTY_FOLD = {**_BAUDOT_COMMON_FOLD, "+": " PLUS ", "=": "-"}


class CharacterSet:
    """What a machine can print and how other text folds onto it."""

    def __init__(self, name: str, printable: frozenset[str], fold: dict[str, str]):
        self.name = name
        self.printable = printable
        self.fold_table = fold

    def fold(self, text: str) -> str:
        """Text -> only printable characters of this set, plus "\\n" for line breaks."""
        out: list[str] = []
        for ch in text.replace("\r\n", "\n"):
            if ch == "\n":
                out.append("\n")
            elif ch == "\t":
                out.append(" ")
            elif ch < " " or ch == "\x7f" or "\x80" <= ch <= "\x9f":
                continue  # controls: never from text
            elif ch.isascii():
                out.append(self._fold_ascii(ch))
            else:
                out.append("".join(self._fold_ascii(c) for c in anyascii(ch) if " " <= c <= "~"))
        return "".join(out)

    def _fold_ascii(self, ch: str) -> str:
        ch = ch.upper()
        if ch in self.printable:
            return ch
        folded = self.fold_table.get(ch, "")
        return "".join(c for c in folded if c in self.printable)


def _baudot_printable(figures: dict[str, int]) -> frozenset[str]:
    return frozenset(BAUDOT_LETTERS) | frozenset(figures) | {" "}


CHARACTER_SETS = {
    "ascii63": CharacterSet("ascii63", ASCII63, ASCII63_FOLD),
    "ita2": CharacterSet("ita2", _baudot_printable(ITA2_FIGURES), ITA2_FOLD),
    "ustty": CharacterSet("ustty", _baudot_printable(USTTY_FIGURES), USTTY_FOLD),
}
BAUDOT_FIGURES = {"ita2": ITA2_FIGURES, "ustty": USTTY_FIGURES}
BAUDOT_BELL = {"ita2": ITA2_BELL, "ustty": USTTY_BELL}


def parity_bit(code: int, parity: str) -> int:
    """The eighth bit of a 7-bit code for the given parity."""
    ones = bin(code & 0x7F).count("1")
    return {
        "even": ones % 2,
        "odd": 1 - ones % 2,
        "mark": 1,
        "space": 0,
        "none": 0,
    }[parity]
