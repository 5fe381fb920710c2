"""The blocklist: words and phrases that never reach the paper or the chat.

A term is a word or a phrase of words, one a line in a plain text file;
`#` starts a comment; a trailing `*` matches any word that begins so
("darn*" catches "darned"). Matching ignores case, accents and the usual
character swaps ("d4rn"), and only ever matches whole words, so "darn"
does not trip on "undarned".

Generated text is checked as it streams (appliance.engine.engine): a piece is
released to the printer only once no blocked phrase can still end in it,
and a hit means the text is generated again from the last clean word.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from anyascii import anyascii

from appliance.errors import ConfigError, Withheld

# Digits and signs people use for letters to get past a filter.
_SWAPS = str.maketrans("013457@$", "oieastas")
_WORD = re.compile(r"[a-z]+")


@dataclass(frozen=True)
class Term:
    words: tuple[str, ...]
    prefix: bool  # the last word may go on ("shit*")

    def __str__(self) -> str:
        return " ".join(self.words) + ("*" if self.prefix else "")


@dataclass(frozen=True)
class Hit:
    term: Term
    start: int  # where the offending words begin in the checked text
    end: int


def _words(text: str, fold: Callable[[str], str] = anyascii) -> list[tuple[str, int, int]]:
    """(normalised word, start, end) for each word, positions in `text` itself.

    `fold` turns a character into what is printed for it: a control
    character inside a word prints as nothing, so it must not split the
    word here either ("fu\x7fck" prints whole).
    """
    folded: list[str] = []
    where: list[int] = []
    for i, ch in enumerate(text):
        for c in fold(ch).lower().translate(_SWAPS):
            folded.append(c)
            where.append(i)
    flat = "".join(folded)
    return [(m.group(), where[m.start()], where[m.end() - 1] + 1) for m in _WORD.finditer(flat)]


def parse_terms(text: str, source: str) -> list[Term]:
    terms = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        prefix = line.endswith("*")
        words = tuple(w for w, _, _ in _words(line.rstrip("*")))
        if not words:
            raise ConfigError(f"{source}, line {number}: {raw.strip()!r} has no letters to match")
        terms.append(Term(words, prefix))
    return terms


class Blocklist:
    def __init__(self, terms: Iterable[Term] = (), fold: Callable[[str], str] | None = None):
        """`fold`: the printed form of the text (the Teletype's character set);
        without one, every character is read as anyascii spells it."""
        self.terms = list(terms)
        self.fold = fold or _printed_anywhere
        self.longest = max((len(t.words) for t in self.terms), default=1)
        self._by_first: dict[str, list[Term]] = {}
        self._prefixed_first: list[Term] = []
        for term in self.terms:
            if term.prefix and len(term.words) == 1:
                self._prefixed_first.append(term)
            else:
                self._by_first.setdefault(term.words[0], []).append(term)

    def __len__(self) -> int:
        return len(self.terms)

    def find(self, text: str) -> Hit | None:
        """The first blocked word or phrase in the text, if there is one."""
        words = _words(text, self.fold)
        for i, (word, start, _) in enumerate(words):
            for term in self._by_first.get(word, ()):
                if self._matches(term, words, i):
                    return Hit(term, start, words[i + len(term.words) - 1][2])
            for term in self._prefixed_first:
                if word.startswith(term.words[0]):
                    return Hit(term, start, words[i][2])
        return None

    def open_phrase_start(self, text: str) -> int:
        """Where a blocked phrase could still begin among the text's last words: the
        start of the longest run of them that is the start of a longer phrase, or
        len(text) when none is (the words are taken as whole)."""
        words = _words(text, self.fold)
        for i in range(max(0, len(words) - self.longest + 1), len(words)):
            run = tuple(word for word, _, _ in words[i:])
            for term in self._by_first.get(run[0], ()):
                # The phrase's words before its last are matched whole, never as prefixes.
                if len(term.words) > len(run) and term.words[: len(run)] == run:
                    return words[i][1]
        return len(text)

    @staticmethod
    def _matches(term: Term, words: list[tuple[str, int, int]], i: int) -> bool:
        n = len(term.words)
        if i + n > len(words):
            return False
        for k, want in enumerate(term.words):
            got = words[i + k][0]
            last = k == n - 1
            if not (got == want or (last and term.prefix and got.startswith(want))):
                return False
        return True


def default_blocklist_text() -> str:
    return resources.files("appliance").joinpath("data/blocklist.txt").read_text("utf-8")


def _printed_anywhere(ch: str) -> str:
    # No machine prints a control character; every one of them drops it.
    return "" if (ch < " " and ch not in "\n\t") or "\x7f" <= ch <= "\x9f" else anyascii(ch)


def load_blocklist(
    user_file: str = "",
    use_default: bool = True,
    source: str = "",
    fold: Callable[[str], str] | None = None,
) -> Blocklist:
    """The shipped list (unless turned off) and the user's own file, if any."""
    terms: list[Term] = []
    if use_default:
        terms += parse_terms(default_blocklist_text(), "the shipped blocklist")
    if user_file:
        path = Path(user_file).expanduser()
        try:
            text = path.read_bytes().decode("utf-8-sig")
        except FileNotFoundError:
            raise ConfigError(
                f"{source}: moderation.blocklist: no such file {path}".lstrip(": ")
            ) from None
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"{source}: moderation.blocklist: cannot read {path}: {e}") from e
        terms += parse_terms(text, str(path))
    return Blocklist(terms, fold)


def blocklist_from(config) -> Blocklist:
    """The blocklist the [moderation] section of a Config asks for."""
    from appliance.teletype.codes import CHARACTER_SETS
    from appliance.teletype.profiles import get_profile

    mod = config.moderation
    # Matched on the text as the configured Teletype will print it.
    charset = CHARACTER_SETS[get_profile(config.teletype.profile).code]
    return load_blocklist(mod.blocklist, mod.use_default, config.source, charset.fold)


def moderated(
    start: Callable[[str, int], Iterator[str]],
    blocklist: Blocklist,
    tries: int = 3,
    on_hit: Callable[[Hit], None] | None = None,
) -> Iterator[str]:
    """Pieces of text with no blocked word or phrase in them.

    `start(prefix, attempt)` streams a text that continues `prefix` (what
    has been accepted so far; "" at first). A piece goes out once no
    blocked phrase could still end in it: a word not yet ended, and the
    last words while they are the start of a blocked phrase, wait for the
    next piece. On a hit the text is cut back to the word
    where the offending words begin and continued from there by a fresh
    attempt; after `tries` more hits it ends at the last clean word, and
    if there is none, Withheld is raised.
    """
    if not blocklist.terms:
        yield from start("", 0)
        return
    accepted = ""  # checked and clean, released or not
    released = 0  # how much of it has gone out
    for attempt in range(tries + 1):
        hit = None
        for piece in start(accepted, attempt):
            candidate = accepted + piece
            # Everything before `released` was clean with every word after
            # it; only the held-back words and the new piece can match now.
            hit = blocklist.find(candidate[released:])
            if hit is not None:
                cut = _last_space(candidate[: released + hit.start]) + 1
                accepted = candidate[: max(released, cut)]
                if on_hit is not None:
                    on_hit(hit)
                break
            accepted = candidate
            # A last word with no space after it may still grow into a blocked
            # word; the words before it are held only while they could begin a
            # blocked phrase (the first word of a reply, which a press waits
            # for, seldom can).
            whole = len(accepted) if accepted[-1:].isspace() else _last_space(accepted) + 1
            whole = max(whole, released)
            opens = released + blocklist.open_phrase_start(accepted[released:whole])
            hold = _last_space(accepted[:opens]) + 1 if opens < whole else whole
            if hold > released:
                yield accepted[released:hold]
                released = hold
        if hit is None:
            break
    else:
        if not accepted.strip():
            raise Withheld(f"every try ran into the blocklist ({tries + 1} tries)")
    if len(accepted.rstrip()) > released:
        yield accepted.rstrip()[released:]


def _last_space(text: str) -> int:
    return max(text.rfind(" "), text.rfind("\n"))
