"""What a request for text turns into: one place, shared by every trigger.

The demo's empty line, the front-panel button, `!gpt2` in chat and the
HTTP API all ask the same question: "reply to the last chat lines", with
perhaps a few extra words. This module says what prompt that is.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

from appliance.generator import ChatLine, chat_prompt

MAX_LINE_CHARS = 300  # one chat line; longer ones are cut (Twitch allows 500)


class History:
    """The last N chat lines, oldest first."""

    def __init__(self, size: int, lines: Iterable[ChatLine] = ()):
        self._lines: deque[ChatLine] = deque(lines, maxlen=size)

    def add(self, name: str, text: str) -> ChatLine:
        line = ChatLine(_clean(name)[:40] or "someone", _clean(text)[:MAX_LINE_CHARS])
        self._lines.append(line)
        return line

    def clear(self) -> None:
        self._lines.clear()

    def lines(self) -> list[ChatLine]:
        return list(self._lines)

    def __len__(self) -> int:
        return len(self._lines)


def _clean(text: str) -> str:
    # One line each: a newline inside a chat message would forge another
    # speaker's line in the prompt.
    return " ".join(text.split())


def reply_prompt(history: History, extra: str = "", opening: str = "") -> str:
    """The prompt for "reply to the chat": the last lines, then any extra words."""
    prompt = chat_prompt(history.lines()) if len(history) else ""
    extra = _clean(extra)
    if extra:
        prompt += extra
    if not prompt:
        prompt = opening
    return prompt
