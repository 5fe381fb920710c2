"""The one reply pipeline: history -> prompt -> model -> blocklist -> pieces for the printer.

The engine (every `!gpt2`, button press and API call), the demo and
`teletype generate` all reply through here, so the blocklist, the retry on
an empty reply and the prompt's shape are the same whichever way a reply
is asked for.
"""

from __future__ import annotations

import queue
import re
import threading
from collections.abc import Callable, Iterable, Iterator
from threading import Event

from appliance.config import Config
from appliance.engine.generator import sampling_from
from appliance.engine.history import History, clean_prompt, reply_prompt
from appliance.engine.moderation import Blocklist, Hit, blocklist_from, moderated
from appliance.errors import Withheld


class Replies:
    def __init__(self, config: Config, generator, blocklist: Blocklist | None = None):
        self.config = config
        self.generator = generator
        self.blocklist = blocklist if blocklist is not None else blocklist_from(config)
        self.sampling = sampling_from(config.model)

    def prompt(self, history: History | None, extra: str = "") -> str:
        """What the model continues: the chat history and the extra words, or the
        extra words alone (a prompt of one's own) when there is no history to use."""
        if history is None:
            # A prompt of one's own keeps its lines (a manual's numbered items);
            # only what cannot be encoded or printed goes.
            return clean_prompt(extra) or self.config.history.opening
        return reply_prompt(history, extra, self.config.history.opening)

    def stream(
        self,
        prompt: str,
        max_chars: int | None = None,
        seed: int | None = None,
        on_hit: Callable[[Hit], None] | None = None,
        cancel: Event | None = None,
    ) -> Iterator[str]:
        """The reply, streamed word by word, with nothing from the blocklist in it.

        Never empty: Withheld (an ApplianceError) when no try had anything
        printable in it. `cancel` stops the model at its next token.
        """
        m = self.config.model
        return ending_a_sentence(
            clean_reply(
                self.generator,
                prompt,
                max_chars or m.max_chars,
                m.seed if seed is None else seed,
                self.sampling,
                self.blocklist,
                self.config.moderation.tries,
                on_hit,
                cancel,
            )
        )

    def for_printer(self, pieces: Iterator[str], cancel: Event) -> Iterator[str]:
        """The pieces, generated ahead in their own thread so the printer never waits."""
        return prefetch(pieces, cancel)


def clean_reply(
    generator,
    prompt: str,
    max_chars: int,
    seed: int | None,
    sampling,
    blocklist: Blocklist,
    tries: int = 3,
    on_hit: Callable[[Hit], None] | None = None,
    cancel: Event | None = None,
) -> Iterator[str]:
    """The generator's reply to the prompt, streamed, with nothing from the blocklist in it.

    A retry goes on from the last clean word, with the next seed. A reply
    with nothing printable in it (the model may end right after the
    prompt, or after a line break) is tried again with the next seed, up to
    `tries` more times; then Withheld says so, and the asker is told.
    """
    calls = 0  # every call of the model gets the next seed

    def attempt(prefix: str, _number: int) -> Iterator[str]:
        nonlocal calls
        next_seed = None if seed is None or seed < 0 else seed + calls
        calls += 1
        # The reply starts a new word after the prompt (the generator skips
        # the rest of a word the prompt ends in), so a space goes between.
        joint = " " if prefix and prompt and not prompt[-1].isspace() else ""
        return generator.stream(
            prompt + joint + prefix.rstrip(),
            max(20, max_chars - len(prefix)),
            next_seed,
            sampling,
            cancel=cancel,
        )

    for _ in range(tries + 1):
        said_something = False
        for piece in moderated(attempt, blocklist, tries, on_hit):
            said_something = said_something or any(ch.isalnum() for ch in piece)
            yield piece
        if said_something or (cancel is not None and cancel.is_set()):
            return
    raise Withheld(f"the model had nothing to print ({tries + 1} tries)")


# A reply that ends a sentence: . ! or ?, perhaps inside a closing quote or bracket.
_ENDS_A_SENTENCE = re.compile(r"[.!?][\"')\]]*$")
# What a sentence cut off after its last whole word may end in, before its period.
_DANGLING = " \t\n,;:-"


def ending_a_sentence(pieces: Iterable[str]) -> Iterator[str]:
    """The pieces, with a period after the last word if the reply stops mid-sentence.

    The generator stops at the first sentence end past max_chars, but a
    sentence that runs on past its hard limit (or a loop, or the model's own
    end) is cut after its last whole word: closed here, on paper it reads
    as a sentence rather than a line that broke off.

    Only what could still be left out waits for the next piece: a piece's
    trailing spaces and dangling marks (a lone dash or comma stays with the
    word before it on paper, and goes if no word follows). Its words go on
    at once, so every piece handed on ends at a word's end, and the first
    word of a press reaches the printer as soon as the model has made it
    (holding the whole piece made a press wait for one more word).
    """
    tail = ""  # spaces and dangling marks, held until a word follows them
    said = ""  # the end of what was handed on
    for piece in pieces:
        body = piece.rstrip(_DANGLING)
        if not body:
            tail += piece
            continue
        yield tail + body
        said = (said + tail + body)[-16:]
        tail = piece[len(body) :]
    if not said:
        if tail:
            yield tail  # nothing printable: handed on as it was
    elif not _ENDS_A_SENTENCE.search(said):
        yield "."


# --- ahead of the printer -------------------------------------------------------------
#
# Generating in the printer's own thread would stall the model while the
# printer sleeps between characters, and the printer whenever the model
# thinks. Here the model runs in its own thread into an unbounded queue
# (a reply is at most a few hundred words), and stops early when the job
# is cancelled.

_DONE = object()


def prefetch(pieces: Iterable[str], cancel: threading.Event | None = None) -> Iterator[str]:
    cancel = cancel or threading.Event()
    buffer: queue.Queue = queue.Queue()
    failure: list[BaseException] = []

    def produce():
        try:
            for piece in pieces:
                buffer.put(piece)
                if cancel.is_set():
                    break
        except BaseException as e:  # handed to the reader, raised there
            failure.append(e)
        finally:
            buffer.put(_DONE)

    worker = threading.Thread(target=produce, name="generator", daemon=True)
    worker.start()
    while True:
        item = buffer.get()
        if item is _DONE:
            break
        yield item
    worker.join()
    if failure:
        # Raised, then forgotten here: an exception kept in this frame's list
        # would hold its traceback, and every frame and generator in it,
        # until the garbage collector came by.
        error = failure.pop()
        try:
            raise error
        finally:
            del error
