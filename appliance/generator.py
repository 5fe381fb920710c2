"""GPT-2 text from a GGUF, on the CPU, streamed word by word.

The model is loaded once (memory-mapped) and kept. Each request streams
complete words as they are generated, so the printer can start on the first
word, and ends at a sentence end once `max_chars` is reached, never in the
middle of a word. The prompt is never part of the output.
"""

from __future__ import annotations

import os
import random
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from appliance.errors import ModelError

END_OF_TEXT = "<|endoftext|>"
# A sentence end: . ! or ? after a letter (or closing bracket or quote) and
# before whitespace; or the end of a line (the manuals end numbered items so).
_SENTENCE_END = re.compile(r"[A-Za-z)\]\"'][.!?][\"')\]]?(?=\s)|\S(?=\n)")
_WORD = re.compile(r"\S+")
_WORD_END = re.compile(r"^\S*\s")

# Where the embedded model may be: beside the source (a checkout, `make
# demo`) or where the SD-card image installs it.
EMBEDDED_NAME = "teletype-tiny.q8_0.gguf"
EMBEDDED_PLACES = (
    Path(__file__).resolve().parent.parent / "models",
    Path("/usr/share/teletype-gpt2/models"),
)


def find_model(configured: str = "") -> Path:
    """The configured GGUF, else the embedded one; a clear error if neither is there."""
    if configured:
        path = Path(configured).expanduser()
        if not path.is_file():
            raise ModelError(f"model file not found: {path} (model.path in the config)")
        return path
    for place in EMBEDDED_PLACES:
        if (place / EMBEDDED_NAME).is_file():
            return place / EMBEDDED_NAME
    looked = ", ".join(str(p) for p in EMBEDDED_PLACES)
    raise ModelError(
        f"the embedded model {EMBEDDED_NAME} is missing (looked in {looked}); "
        "set model.path in teletype.toml"
    )


@dataclass(frozen=True)
class Sampling:
    """The seed project's sampler (temperature 0.75, top_p 0.9) plus repetition control."""

    temperature: float = 0.75
    top_p: float = 0.9
    top_k: int = 40
    repeat_penalty: float = 1.15


def load_generator(model_config) -> Generator:
    """The generator for the [model] config section (the embedded model if none is set)."""
    from appliance.memory import BATCH, check_fits, mem_available

    m = model_config
    path = find_model(m.path)
    # Before llama.cpp maps a byte: a model too big for the board is one
    # line and exit 78 now, not an out-of-memory kill in the middle of a print.
    check_fits(path, mem_available() if m.check_memory else None)
    return Generator(
        path,
        batch=BATCH,
        threads=m.threads,
        repeat_last_n=m.repeat_last_n,
        flash_attn=m.flash_attn,
    )


def sampling_from(model_config) -> Sampling:
    """The sampler settings of the [model] config section."""
    m = model_config
    return Sampling(m.temperature, m.top_p, m.top_k, m.repeat_penalty)


def looping(words: list[str], times: int = 3, longest: int = 4) -> bool:
    """Do the last words repeat a run of 1 to `longest` words `times` times back to back?"""
    lowered = [w.lower() for w in words[-times * longest :]]
    for n in range(1, longest + 1):
        if len(lowered) < n * times:
            break
        tail = lowered[-n:]
        if all(lowered[-(k + 1) * n : len(lowered) - k * n] == tail for k in range(times)):
            return True
    return False


class Generator:
    def __init__(
        self,
        model_path: Path,
        threads: int = 0,
        repeat_last_n: int = 64,
        flash_attn: bool = True,
        batch: int = 512,
    ):
        from llama_cpp import Llama

        self.model_path = model_path
        try:
            self.llm = Llama(
                model_path=str(model_path),
                n_ctx=0,  # the model's own trained context
                n_threads=threads or os.cpu_count() or 1,
                last_n_tokens_size=repeat_last_n,
                use_mmap=True,
                # bench/results.md: with it the first character came sooner;
                # the rate of later tokens did not change beyond the noise.
                flash_attn=flash_attn,
                n_batch=batch,
                n_ubatch=batch,
                verbose=False,
            )
        except (ValueError, OSError) as e:
            raise ModelError(f"cannot load the model {model_path}: {e}") from e
        import llama_cpp

        # GPT-2 has learnt absolute positions, and llama.cpp aborts the whole
        # process when asked for one past them; everything stays below this.
        self.context = int(llama_cpp.llama_model_n_ctx_train(self.llm.model))
        self._lock = threading.Lock()
        # The last request's numbers, for the benchmarks: prompt tokens,
        # tokens generated, seconds to the first token and in all.
        self.last_stats: dict[str, float] = {}

    def close(self) -> None:
        self.llm.close()

    def tokens(self, text: str) -> list[int]:
        return self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=False)

    def stream(
        self,
        prompt: str,
        max_chars: int = 500,
        seed: int | None = None,
        sampling: Sampling = Sampling(),
        max_tokens: int | None = None,
    ) -> Iterator[str]:
        """Yield the reply in pieces that end on a word boundary.

        `max_tokens` caps the tokens generated (the benchmarks ask for an
        exact number); the context is always the last word.
        """
        with self._lock:
            yield from self._stream(prompt, max_chars, seed, sampling, max_tokens)

    def generate(
        self,
        prompt: str,
        max_chars: int = 500,
        seed: int | None = None,
        sampling: Sampling = Sampling(),
    ) -> str:
        return "".join(self.stream(prompt, max_chars, seed, sampling))

    def _stream(
        self,
        prompt: str,
        max_chars: int,
        seed: int | None,
        sampling: Sampling,
        token_cap: int | None = None,
    ):
        # Room for the reply: about 3 characters a token at worst, plus slack
        # for the sentence end; the prompt keeps its most recent tokens.
        reply_budget = min(self.context // 2, max_chars // 3 + 48)
        prompt_ids = self.tokens(prompt)[-(self.context - reply_budget) :] or [self.llm.token_eos()]
        max_tokens = self.context - len(prompt_ids)
        if token_cap is not None:
            max_tokens = min(max_tokens, token_cap)
        started = time.perf_counter()
        stats = {"prompt_tokens": len(prompt_ids), "tokens": 0, "first_token_s": 0.0}
        self.last_stats = stats
        hard_limit = max_chars + max(100, max_chars // 2)
        seed = random.randrange(2**31) if seed is None or seed < 0 else seed

        partial_word = bool(prompt) and prompt[-1].isalnum()
        text = ""  # everything generated so far (the prompt is never in it)
        sent = 0  # how much of `text` has been yielded
        finished = False
        for chunk in self.llm.create_completion(
            prompt_ids,
            max_tokens=max_tokens,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            top_k=sampling.top_k,
            repeat_penalty=sampling.repeat_penalty,
            seed=seed,
            stop=[END_OF_TEXT],
            stream=True,
        ):
            # One chunk a token, and a last one with the finish reason and no
            # token (llama-cpp-python 0.3); it only closes the stream.
            if chunk["choices"][0].get("finish_reason") is None:
                stats["tokens"] += 1
                if stats["tokens"] == 1:
                    stats["first_token_s"] = time.perf_counter() - started
                stats["seconds"] = time.perf_counter() - started
            piece = chunk["choices"][0]["text"]
            if partial_word:
                # The prompt ended inside a word ("hello" -> "alis..."): its
                # tail is not ours to print. Start at the next word.
                head = _WORD_END.search(piece)
                if head is None:
                    continue
                piece, partial_word = piece[head.end() :], False
            if not text:
                piece = piece.lstrip()
            text += piece
            if END_OF_TEXT in text:  # belt and braces: never print past it
                text = text[: text.index(END_OF_TEXT)]
                finished = True
            space = _last_space(text)
            words = _WORD.findall(text[:space]) if space > 0 else []
            end = sentence_end_after(text, max_chars) if len(text) >= max_chars else None
            if end is not None:
                text = text[:end]
                finished = True
            elif len(text) >= hard_limit or (words and looping(words)):
                # No sentence end in sight, or a loop: stop after the last
                # complete word rather than run on.
                text = text[:space]
                finished = True
            # Up to and including the last space or newline: the words before
            # it are complete, and the printer sees that at once.
            cut = len(text) if finished else space + 1
            if cut > sent:
                yield text[sent:cut]
                sent = cut
            if finished:
                break
        # The model ended (end-of-text or the context): its last word is whole.
        if sent < len(text.rstrip()):
            yield text.rstrip()[sent:]


def _last_space(text: str) -> int:
    return max(text.rfind(" "), text.rfind("\n"))


def sentence_end_after(text: str, limit: int) -> int | None:
    """Where the first sentence that ends at or past `limit` ends, if one does yet.

    A sentence end is . ! or ? after a letter (or a closing bracket or
    quote), followed by whitespace, or the last character of a line:
    "0.010", "cycle.14" and a period still waiting for its next token are
    not ends yet.
    """
    for match in _SENTENCE_END.finditer(text, max(0, limit - 3)):
        if match.end() >= limit:
            return match.end()
    return None
