"""The chat history: the last lines of chat, what a reply answers.

The demo's empty line, the front-panel button, `!gpt2` in chat and the
HTTP API all ask the same question: "reply to the last chat lines". The
lines are checked on the way in (text, one line, no control characters,
no lone surrogates) and again when read back from the state directory,
so one bad line can never stop a reply or the engine.
"""

from __future__ import annotations

import asyncio
import json
import logging
import unicodedata
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from appliance.durable import remove_leftovers, set_aside, write_atomic
from appliance.errors import BadChatLine, Blocked, StateError

if TYPE_CHECKING:
    from appliance.engine.moderation import Blocklist

log = logging.getLogger("teletype.history")

MAX_NAME_CHARS = 40
MAX_LINE_CHARS = 300  # one chat line; longer ones are cut (Twitch allows 500)


@dataclass(frozen=True)
class ChatLine:
    name: str
    text: str


def chat_prompt(lines: Sequence[ChatLine]) -> str:
    """The last chat lines as `name: text`, one a line, as the seed's bot sent them."""
    return "".join(f"{line.name}: {line.text}\n" for line in lines)


def clean_text(text: str) -> str:
    """One line of printable text: no controls, no lone surrogates, single spaces.

    A newline inside a chat message would forge another speaker's line in
    the prompt; a lone surrogate cannot be encoded and failed every reply.
    """
    kept = []
    for ch in text:
        category = unicodedata.category(ch)
        if category == "Cs":
            continue  # a lone surrogate: it cannot even be written as UTF-8
        kept.append(" " if category in ("Cc", "Zl", "Zp") else ch)
    return " ".join("".join(kept).split())


def clean_prompt(text: str) -> str:
    """A prompt of one's own: its lines and tabs kept, lone surrogates and other
    control characters gone; blank if nothing but white space is left."""
    kept = "".join(
        ch
        for ch in text.replace("\r\n", "\n")
        if ch in "\n\t" or unicodedata.category(ch) not in ("Cc", "Cs")
    )
    return kept if kept.strip() else ""


def chat_line(name: object, text: object) -> ChatLine:
    """A chat line fit for the history, or BadChatLine saying why not."""
    if not isinstance(name, str) or not isinstance(text, str):
        raise BadChatLine("name and text must be strings")
    clean = clean_text(text)[:MAX_LINE_CHARS]
    if not clean:
        raise BadChatLine("text is blank (nothing printable in it)")
    return ChatLine(clean_text(name)[:MAX_NAME_CHARS] or "someone", clean)


class History:
    """The last N chat lines, oldest first.

    Every line passes the blocklist on its way in, whoever adds it (the API, the
    demo): a blocked word never reaches a prompt.
    """

    def __init__(self, size: int, lines: Iterable[ChatLine] = (), *, blocklist: Blocklist):
        self._lines: deque[ChatLine] = deque(lines, maxlen=size)
        self.blocklist = blocklist

    def _checked(self, name: object, text: object) -> ChatLine:
        """The line fit for the history: BadChatLine or Blocked saying why not."""
        line = chat_line(name, text)
        # As sent and as kept: the blocklist reads a control character inside a word
        # as nothing ("fu\x7fck"), where cleaning makes it a space between two words.
        for said in (f"{name} {text}", f"{line.name} {line.text}"):
            hit = self.blocklist.find(said)
            if hit is not None:
                raise Blocked(f"blocked by the blocklist ({hit.term})")
        return line

    def add(self, name: str, text: str) -> ChatLine:
        line = self._checked(name, text)
        self._lines.append(line)
        return line

    def clear(self) -> None:
        self._lines.clear()

    def lines(self) -> list[ChatLine]:
        return list(self._lines)

    def __len__(self) -> int:
        return len(self._lines)


class PersistentHistory(History):
    """The history, written to the state directory after every change.

    A change that cannot be saved (a read-only or full card) is not made:
    StateError says so, and memory and disk never disagree. add() and
    clear() write on the caller's thread; the engine's API uses add_async()
    and clear_async(), which write in a thread of their own, one change at
    a time, so the event loop never waits on the card.
    """

    def __init__(self, path: Path, size: int, *, blocklist: Blocklist):
        self.path = path
        remove_leftovers(path)  # a write cut short by kill -9 or a power cut
        super().__init__(size, load_lines(path), blocklist=blocklist)
        self._one_at_a_time: asyncio.Lock | None = None

    def _with(self, line: ChatLine) -> list[ChatLine]:
        """The lines once `line` is added: the newest `maxlen`, all of them while there is room."""
        kept = [*self._lines, line]
        return kept[-(self._lines.maxlen or len(kept)) :]

    def add(self, name: str, text: str) -> ChatLine:
        line = self._checked(name, text)
        self._save(self._with(line))
        self._lines.append(line)
        return line

    def clear(self) -> None:
        self._save([])
        self._lines.clear()

    async def add_async(self, name: str, text: str) -> ChatLine:
        line = self._checked(name, text)
        async with self._lock():
            await asyncio.to_thread(self._save, self._with(line))
            self._lines.append(line)
        return line

    async def clear_async(self) -> None:
        async with self._lock():
            await asyncio.to_thread(self._save, [])
            self._lines.clear()

    def _lock(self) -> asyncio.Lock:
        # Made on first use, inside the running loop. Each change is worked out from the
        # lines as the last one left them, so changes go one at a time.
        if self._one_at_a_time is None:
            self._one_at_a_time = asyncio.Lock()
        return self._one_at_a_time

    def _save(self, lines: list[ChatLine]) -> None:
        data = {"lines": [{"name": ln.name, "text": ln.text} for ln in lines]}
        try:
            write_atomic(self.path, json.dumps(data).encode("utf-8"))
        except OSError as e:
            raise StateError(
                f"cannot save the chat history to {self.path}: {e.strerror or e}"
            ) from e


def load_lines(path: Path) -> list[ChatLine]:
    """The saved lines; whatever is wrong with the file is logged and skipped, never fatal."""
    try:
        saved = json.loads(path.read_bytes())
    except FileNotFoundError:
        return []
    except (OSError, ValueError, RecursionError) as e:
        set_aside(path, f"ignoring an unreadable history file: {e}", log)
        return []
    entries = saved.get("lines") if isinstance(saved, dict) else None
    if not isinstance(entries, list):
        set_aside(path, 'ignoring the history file: not a {"lines": [...]} object', log)
        return []
    lines = []
    for entry in entries:
        try:
            lines.append(chat_line(entry.get("name"), entry.get("text")))
        except (AttributeError, BadChatLine) as e:
            log.warning("skipping a bad line in %s: %s", path, e)
    return lines


def reply_prompt(history: History, extra: str = "", opening: str = "") -> str:
    """The prompt for "reply to the chat": the last lines, then any extra words."""
    prompt = chat_prompt(history.lines()) if len(history) else ""
    extra = clean_text(extra)
    if extra:
        prompt += extra
    if not prompt:
        prompt = opening
    return prompt
