"""The generator's own token loop: a reply ends within its budget, cancel reaches every
token, and the model is never held across a yield (issue 23)."""

from __future__ import annotations

import asyncio
import threading

import pytest

from appliance.engine.generator import Generator, find_model
from appliance.testing.engine_inprocess import build_engine
from appliance.testing.gpt2_vocab import NO_VOCAB, VOCAB_DIR, build_stray_byte_model

PROMPT = "ada: the clutch slips when it warms up\nbert: check the spring first\n"


@pytest.fixture(scope="module")
def stray_byte_model(tmp_path_factory):
    if not (VOCAB_DIR / "vocab.json").is_file():
        pytest.skip(NO_VOCAB)
    return build_stray_byte_model(tmp_path_factory.mktemp("stray-bytes") / "model.f16.gguf")


@pytest.fixture(scope="module")
def stray_bytes(stray_byte_model):
    generator = Generator(stray_byte_model)
    yield generator
    generator.close()


def test_token_loop_a_reply_of_stray_bytes_ends_within_its_token_budget(stray_bytes):
    # Before: llama-cpp-python held everything after the first stray byte
    # back, so no piece came and no limit of ours ran: the reply went on to
    # the end of the context (and with GPT-2's 1,024 tokens, for minutes).
    # 20 characters may run to 120 looking for a sentence end; 16 spare.
    prompt_tokens = len(stray_bytes.tokens(PROMPT))
    for seed in range(3):
        text = "".join(stray_bytes.stream(PROMPT, max_chars=20, seed=seed))
        generated = stray_bytes.llm.n_tokens - prompt_tokens  # what the context holds now
        assert generated <= 20 + 100 + 16, generated
        assert text.strip()
        assert "\ufffd" not in text  # bytes that never made a character are dropped


def test_token_loop_the_same_seed_gives_the_same_text(stray_bytes):
    first = stray_bytes.generate(PROMPT, max_chars=60, seed=9)
    assert stray_bytes.generate(PROMPT, max_chars=60, seed=9) == first


def _engine(tmp_path, model):
    return build_engine(tmp_path, f'[model]\npath = "{model}"\n')


def test_token_loop_cancel_stops_a_reply_that_has_printed_nothing_yet(tmp_path, stray_byte_model):
    engine = _engine(tmp_path, stray_byte_model)
    llm = engine.generator.llm
    cancelled_at: list[int] = []

    async def run():
        loop = asyncio.get_running_loop()
        worker = asyncio.create_task(engine.run_worker())
        job = engine.new_job(PROMPT, use_history=False, max_chars=2000, seed=1, print=False)
        start = len(engine.generator.tokens(job.prompt))

        def cancel_when_generating():
            # Ten tokens in: the stray bytes have made sure no piece is out yet.
            while llm.n_tokens < start + 10 and not job.done.is_set():
                job.done.wait(0.001)
            cancelled_at.append(llm.n_tokens)
            asyncio.run_coroutine_threadsafe(engine.cancel_job(job), loop).result()

        watcher = threading.Thread(target=cancel_when_generating, daemon=True)
        await engine.submit(job)
        watcher.start()
        await engine.wait(job)
        worker.cancel()
        return job

    try:
        job = asyncio.run(run())
        assert job.status == "cancelled"
        # The token being made when cancel came, and not one more.
        assert llm.n_tokens <= cancelled_at[0] + 2, (cancelled_at, llm.n_tokens)
    finally:
        engine.printer.close()
        engine.generator.close()


@pytest.fixture(scope="module")
def embedded():
    generator = Generator(find_model(""))
    yield generator
    generator.close()


def test_token_loop_an_abandoned_reply_does_not_keep_the_model_from_the_next(embedded):
    abandoned = embedded.stream(PROMPT, max_chars=500, seed=1)
    next(abandoned)  # a piece out, then its reader goes away without closing it
    finished = threading.Event()
    replies: list[str] = []

    def next_reply() -> None:
        replies.append(embedded.generate(PROMPT, max_chars=60, seed=2))
        finished.set()

    threading.Thread(target=next_reply, daemon=True).start()
    try:
        # A guard against a hang, not a speed check: the reply takes well under a second.
        assert finished.wait(60), "the next reply waited for the abandoned one's lock"
        assert replies[0]
    finally:
        abandoned.close()


def test_token_loop_a_job_that_breaks_mid_reply_leaves_the_model_to_the_next(tmp_path):
    """A queued record with `text` 5 (a bad journal): before, the failed reply kept the
    model's lock in a reference cycle, and every reply after it waited for good."""
    engine = _engine(tmp_path, find_model(""))

    async def run():
        worker = asyncio.create_task(engine.run_worker())
        broken = engine.new_job("THE CLUTCH", use_history=False, max_chars=100, seed=1)
        broken.text = 5  # type: ignore[assignment]
        after = engine.new_job("THE CLUTCH", use_history=False, max_chars=60, seed=2)
        await engine.submit(broken)
        await engine.submit(after)
        # A guard against a hang, not a speed check.
        await asyncio.wait_for(engine.wait(after), 60)
        worker.cancel()
        return broken, after

    try:
        broken, after = asyncio.run(run())
        assert broken.status == "failed"
        assert after.status == "done" and after.text
    finally:
        engine.printer.close()
        engine.generator.close()
