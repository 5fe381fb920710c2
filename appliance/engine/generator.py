"""GPT-2 text from a GGUF, on the CPU, streamed word by word.

The model is loaded once (memory-mapped) and kept. Each request streams
complete words as they are generated, so the printer can start on the first
word, and ends at a sentence end once `max_chars` is reached, never in the
middle of a word. The prompt is never part of the output.

The token loop is our own, not llama-cpp-python's `create_completion`:
there, a token that does not yet decode as UTF-8 is held back and the whole
held-back tail decoded again at every new token, so one stray byte token
(GPT-2's byte-level vocabulary has 256 of them) made each token cost more
than the last and no text came out for minutes, out of reach of any limit
or cancel. Here each token's bytes go through an incremental UTF-8 decoder
(at most three bytes wait; bytes that cannot complete are dropped), and
every reply has a token budget, a time budget, and a cancel checked at
every token.

The context keeps what it evaluated last. A request reuses the longest
token prefix it shares with it, so the engine can evaluate the next reply's
prompt while idle (`prepare`) and a request pays for one token. Prompts are
evaluated in chunks that start at fixed multiples of PROMPT_CHUNK and
generated tokens one at a time, however much was reused: every position is
computed by the same batch whether the prompt was warm or cold, so the same
prompt and seed give the same text either way.
"""

from __future__ import annotations

import codecs
import random
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import appliance
from appliance.errors import ModelError

END_OF_TEXT = "<|endoftext|>"
# Prompt tokens evaluated together, at fixed positions (0-63, 64-127, ...):
# big enough for llama.cpp's batched speed, small enough that a request
# arriving during an idle evaluation waits for at most one chunk.
PROMPT_CHUNK = 64
# A prompt too long for the context loses its start in steps of this many
# tokens, so a longer history keeps the same start (and its evaluation) for
# many lines, instead of a new start at every line.
TRIM_STEP = 128
# A reply that has run this long ends at its last whole word: a slow board
# or a model that never reaches a sentence end cannot hold the queue.
REPLY_SECONDS = 120.0
# What llama-cpp-python's create_completion used by default (the replies
# the project was tuned on); kept so the sampler is the same.
MIN_P = 0.05
# A sentence end: . ! or ? after a letter (or closing bracket or quote) and
# before whitespace; or the end of a line (the manuals end numbered items so).
_SENTENCE_END = re.compile(r"[A-Za-z)\]\"'][.!?][\"')\]]?(?=\s)|\S(?=\n)")
_WORD = re.compile(r"\S+")
_WORD_END = re.compile(r"^\S*\s")

# Where the embedded model may be: beside the source (a checkout, `make
# demo`) or where the SD-card image installs it. From the package's own place,
# not this file's, so that the module may live at any depth in it.
EMBEDDED_NAME = "teletype-tiny.q8_0.gguf"
EMBEDDED_PLACES = (
    Path(appliance.__file__).resolve().parent.parent / "models",
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
    from appliance.engine.memory import BATCH, check_fits, mem_available

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
        from appliance.engine.llama_open import cores_to_use, open_llama

        self.model_path = model_path
        try:
            self.llm = open_llama(
                model_path,
                n_ctx=0,  # the model's own trained context
                n_threads=threads or cores_to_use(),
                last_n_tokens_size=repeat_last_n,
                use_mmap=True,
                # bench/results.md: with it the first character came sooner;
                # the rate of later tokens did not change beyond the noise.
                flash_attn=flash_attn,
                n_batch=max(batch, PROMPT_CHUNK),
                n_ubatch=max(batch, PROMPT_CHUNK),
                verbose=False,
            )
        except (ValueError, OSError) as e:
            raise ModelError(f"cannot load the model {model_path}: {e}") from e
        import llama_cpp

        # GPT-2 has learnt absolute positions, and llama.cpp aborts the whole
        # process when asked for one past them; everything stays below this.
        self.context = int(llama_cpp.llama_model_n_ctx_train(self.llm.model))
        self.repeat_last_n = repeat_last_n
        self._eos = self.llm.token_eos()
        self._last_tokens: tuple[str, list[int]] = ("", [])
        # Held for one chunk or one token at a time, never across a yield: a
        # reply its reader abandons cannot keep the model from the next one.
        self._lock = threading.Lock()
        self._closed = False
        # How many of the context's tokens its logits are for (the last
        # evaluation's end); a cut-back context has stale logits.
        self._logits_for = 0
        # Prompt and generated tokens evaluated since the model was loaded
        # (what a warm prompt saves shows here, not in a clock).
        self.evaluated = 0
        # The last request's numbers, for the benchmarks: prompt tokens, the
        # prompt tokens it had to evaluate, tokens generated, seconds to the
        # first token and in all, and why it stopped.
        self.last_stats: dict[str, float | str] = {}

    def close(self) -> None:
        with self._lock:  # an evaluation in another thread ends its chunk first
            self._closed = True
            self.llm.close()

    def tokens(self, text: str) -> list[int]:
        # The last text's tokens are kept: a press asks for the very prompt
        # the idle engine has just tokenised, and tokenising is not free (a
        # vocabulary with many added tokens took 0.4 s for 900 tokens).
        last_text, last_ids = self._last_tokens
        if text != last_text:
            last_ids = self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=False)
            self._last_tokens = (text, last_ids)
        return list(last_ids)

    def prompt_ids(self, prompt: str, max_chars: int = 500) -> list[int]:
        """The prompt as the model sees it: its tokens, the oldest dropped when the
        context could not hold them and room for the reply."""
        ids = self.tokens(prompt) or [self._eos]
        # Room for the reply: about 3 characters a token at worst, plus slack
        # for the sentence end.
        room = self.context - min(self.context // 2, max_chars // 3 + 48)
        over = len(ids) - room
        if over > 0:
            step = max(1, min(TRIM_STEP, room // 4))
            drop = -(-over // step) * step  # `over`, rounded up to whole steps
            ids = ids[drop:]
        return ids

    def prepare(
        self, prompt: str, max_chars: int = 500, stop: threading.Event | None = None
    ) -> bool:
        """Evaluate the prompt now, so that a request for it starts at once.

        Checks `stop` between chunks and returns False when it was set; a
        request that comes meanwhile reuses what was evaluated.
        """
        ids = self.prompt_ids(prompt, max_chars)
        while True:
            with self._lock:
                if self._closed or (stop is not None and stop.is_set()):
                    return False
                if self._evaluate_towards(ids, len(ids)):
                    return True

    def stream(
        self,
        prompt: str,
        max_chars: int = 500,
        seed: int | None = None,
        sampling: Sampling = Sampling(),
        max_tokens: int | None = None,
        cancel: threading.Event | None = None,
        seconds: float = REPLY_SECONDS,
    ) -> Iterator[str]:
        """Yield the reply in pieces that end on a word boundary.

        Ends at the first sentence end past `max_chars`; at the last whole
        word when it runs on (the token budget, `seconds`, a loop, half as
        many characters again); at once when `cancel` is set. `max_tokens`
        caps the tokens generated (the benchmarks ask for an exact number).
        """
        return self._stream(
            prompt, max_chars, seed, sampling, max_tokens, cancel or threading.Event(), seconds
        )

    def generate(
        self,
        prompt: str,
        max_chars: int = 500,
        seed: int | None = None,
        sampling: Sampling = Sampling(),
    ) -> str:
        return "".join(self.stream(prompt, max_chars, seed, sampling))

    def token_budget(self, max_chars: int) -> int:
        """The most tokens a reply of `max_chars` may take: one a character it may
        print at most (GPT-2's text runs 3 to 4 characters a token)."""
        return _hard_limit(max_chars) + 16

    def _stream(
        self,
        prompt: str,
        max_chars: int,
        seed: int | None,
        sampling: Sampling,
        token_cap: int | None,
        cancel: threading.Event,
        seconds: float,
    ) -> Iterator[str]:
        ids = self.prompt_ids(prompt, max_chars)
        prompt_len = len(ids)
        budget = min(self.context - prompt_len, token_cap or self.token_budget(max_chars))
        started = time.perf_counter()
        deadline = started + seconds
        evaluated_before = self.evaluated
        stats: dict[str, float | str] = {
            "prompt_tokens": prompt_len, "evaluated": 0, "tokens": 0, "first_token_s": 0.0,
            "seconds": 0.0, "stopped": "",
        }  # fmt: skip
        self.last_stats = stats
        hard_limit = _hard_limit(max_chars)
        seed = random.randrange(2**31) if seed is None or seed < 0 else seed

        partial_word = bool(prompt) and prompt[-1].isalnum()
        decoder = codecs.getincrementaldecoder("utf-8")(errors="ignore")
        text = ""  # everything generated so far (the prompt is never in it)
        sent = 0  # how much of `text` has been yielded
        finished = False
        sampler = _Sampler(self, sampling, seed)
        try:
            while not finished:
                if stats["tokens"] >= budget:
                    stats["stopped"] = "tokens"
                    break
                if time.perf_counter() > deadline:
                    stats["stopped"] = "seconds"
                    break
                token = self._next_token(ids, prompt_len, sampler, cancel)
                if stats["tokens"] == 0:  # what the prompt cost this request
                    stats["evaluated"] = self.evaluated - evaluated_before
                if token is None:
                    stats["stopped"] = "cancelled"
                    return
                if token == self._eos:
                    stats["stopped"] = "end of text"
                    break
                ids.append(token)
                stats["tokens"] += 1
                now = time.perf_counter()
                if stats["tokens"] == 1:
                    stats["first_token_s"] = now - started
                stats["seconds"] = now - started
                piece = decoder.decode(self.llm.detokenize([token]))
                if not piece:
                    continue  # a character's first bytes: the rest is to come
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
                if END_OF_TEXT in text:  # spelt out in pieces: never print past it
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
        finally:
            sampler.free()
            stats["seconds"] = time.perf_counter() - started
        if stats["stopped"] in ("tokens", "seconds"):
            # Cut short: the last word may be cut too; it stays out.
            text = text[: max(sent, _last_space(text))]
        # The model ended (end-of-text or the context): its last word is whole.
        if sent < len(text.rstrip()):
            yield text.rstrip()[sent:]

    def _next_token(
        self, ids: list[int], prompt_len: int, sampler: _Sampler, cancel: threading.Event
    ) -> int | None:
        """The next token after `ids` (None once cancelled), evaluating what the
        context lacks a chunk at a time and letting go of the model between chunks."""
        import llama_cpp

        while True:
            with self._lock:
                if cancel.is_set() or self._closed:
                    return None
                if self._evaluate_towards(ids, prompt_len):
                    return int(llama_cpp.llama_sampler_sample(sampler.chain, self.llm.ctx, -1))

    def _evaluate_towards(self, ids: list[int], prompt_len: int) -> bool:
        """One step towards a context that holds exactly `ids`, with the logits of
        their last: True when it does. Called with the lock held.

        Keeps the longest prefix the context shares with `ids`, cut back to
        where the same evaluation would have started from scratch: a chunk
        boundary inside the prompt (the first `prompt_len` tokens), any
        token after it.
        """
        llm = self.llm
        held = llm.n_tokens
        common = _common_prefix(llm.input_ids[:held], ids)
        if common == held == len(ids) and self._logits_for == held:
            return True
        keep = min(common, len(ids) - 1)
        if keep < prompt_len:
            keep -= keep % PROMPT_CHUNK
        start = keep
        # A prompt a chunk at a time; a generated token alone, as it was made.
        end = min(prompt_len, start + PROMPT_CHUNK) if start < prompt_len else start + 1
        llm.n_tokens = start  # eval() drops the cache from here on
        llm.eval(ids[start:end])
        self._logits_for = llm.n_tokens
        self.evaluated += end - start
        return end == len(ids)


class _Sampler:
    """One request's sampler chain, seeded with the request's own seed.

    The same chain create_completion built (repetition penalty over the
    generated tokens, top-k, top-p, min-p, temperature, a seeded draw), but
    the seed is always the request's: llama-cpp-python's default seed is
    fixed, so without one every restart repeats the same replies (its
    issue 1809).
    """

    def __init__(self, generator: Generator, sampling: Sampling, seed: int):
        import llama_cpp as ll

        self.chain = ll.llama_sampler_chain_init(ll.llama_sampler_chain_default_params())
        parts = (
            ll.llama_sampler_init_penalties(
                generator.llm.n_vocab(), generator.repeat_last_n, sampling.repeat_penalty, 0.0, 0.0
            ),
            ll.llama_sampler_init_top_k(sampling.top_k),
            ll.llama_sampler_init_top_p(sampling.top_p, 1),
            ll.llama_sampler_init_min_p(MIN_P, 1),
            ll.llama_sampler_init_temp(sampling.temperature),
            # 0xFFFFFFFF asks llama.cpp for a random seed: never pass it.
            ll.llama_sampler_init_dist(seed % 0xFFFFFFFF),
        )
        for part in parts:
            ll.llama_sampler_chain_add(self.chain, part)

    def free(self) -> None:
        import llama_cpp

        if self.chain is not None:
            llama_cpp.llama_sampler_free(self.chain)  # frees the parts too
            self.chain = None


def _common_prefix(held, ids: list[int]) -> int:
    """How many tokens at the start of the context's `held` equal `ids`'."""
    import numpy as np

    n = min(len(held), len(ids))
    differ = np.flatnonzero(held[:n] != np.asarray(ids[:n], dtype=held.dtype))
    return int(differ[0]) if differ.size else n


def _hard_limit(max_chars: int) -> int:
    """The most characters a reply may run to while looking for its sentence end."""
    return max_chars + max(100, max_chars // 2)


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
