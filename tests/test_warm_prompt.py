"""The next reply's prompt, evaluated while the engine is idle (issue 22): the
same text as cold, and the request evaluates only what the idle time did not."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading

import pytest

from appliance.engine.generator import PROMPT_CHUNK, Generator, find_model
from appliance.engine.history import History, reply_prompt
from appliance.engine.moderation import Blocklist

LINES = [
    ("ada", "the clutch on my model 33 slips when the motor warms up"),
    ("bert", "check the clutch shoe lever spring tension first, it wears"),
    ("cy", "mine prints garbage at 110 baud on a usb adapter, any ideas why"),
    ("dot", "a lot of adapters cannot do 110, use the pi uart instead"),
    ("eve", "what oil goes on the typing unit bearings and how often"),
]


def history_prompt(lines=LINES, extra: str = "") -> str:
    history = History(len(lines), blocklist=Blocklist())
    for name, text in lines:
        history.add(name, text)
    return reply_prompt(history, extra)


@pytest.fixture(scope="module")
def generator():
    g = Generator(find_model(""))
    yield g
    g.close()


def _cold(prompt: str, seed: int, max_chars: int = 120) -> str:
    """The reply from a model loaded just for it, in a process of its own (a restart)."""
    code = (
        "import json, sys\n"
        "from appliance.engine.generator import Generator, find_model\n"
        "g = Generator(find_model(''))\n"
        "text = g.generate(sys.argv[1], max_chars=int(sys.argv[3]), seed=int(sys.argv[2]))\n"
        "print(json.dumps(text))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, prompt, str(seed), str(max_chars)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return json.loads(out.stdout)


@pytest.mark.parametrize("extra", ["", "how do i oil the clutch"])
def test_warm_prompt_gives_the_text_a_cold_one_and_a_restart_give(generator, extra):
    prompt = history_prompt(extra=extra)
    assert generator.prepare(history_prompt(), 120)  # what the idle engine evaluates
    warm = generator.generate(prompt, max_chars=120, seed=5)
    generator.prepare("someone else: an unrelated line\n", 120)  # the cache now holds another
    cold = generator.generate(prompt, max_chars=120, seed=5)
    assert warm == cold
    assert warm == _cold(prompt, 5)


def test_warm_prompt_a_request_evaluates_only_what_idle_time_did_not(generator):
    prompt = history_prompt()
    tokens = len(generator.prompt_ids(prompt, 120))
    generator.prepare("someone else: an unrelated line\n", 120)
    "".join(generator.stream(prompt, max_chars=120, seed=1))
    assert generator.last_stats["evaluated"] == tokens  # cold: all of it

    generator.prepare(prompt, 120)
    "".join(generator.stream(prompt, max_chars=120, seed=1))
    assert generator.last_stats["evaluated"] == 0  # warm: the first token is sampled at once

    # `!gpt2 some words`: the history's chunks are kept; only the last
    # partial chunk and the words are evaluated.
    generator.prepare(prompt, 120)
    with_words = history_prompt(extra="how do i oil the clutch")
    "".join(generator.stream(with_words, max_chars=120, seed=1))
    words = len(generator.prompt_ids(with_words, 120)) - tokens
    assert generator.last_stats["evaluated"] < PROMPT_CHUNK + words


def test_warm_prompt_a_request_takes_over_an_evaluation_it_stopped(generator):
    long_prompt = history_prompt(LINES * 3)
    generator.prepare("someone else: an unrelated line\n", 120)
    stop = threading.Event()
    stop.set()  # a job arrived: the idle evaluation ends at its next chunk
    assert not generator.prepare(long_prompt, 120, stop)
    before = generator.evaluated
    stop.clear()
    chunks = 0

    class OneChunk(threading.Event):
        def is_set(self) -> bool:  # stop once two chunks are done
            nonlocal chunks
            chunks += 1
            return chunks > 2

    assert not generator.prepare(long_prompt, 120, OneChunk())
    assert generator.evaluated - before == 2 * PROMPT_CHUNK
    "".join(generator.stream(long_prompt, max_chars=120, seed=3))
    total = len(generator.prompt_ids(long_prompt, 120))
    assert generator.last_stats["evaluated"] == total - 2 * PROMPT_CHUNK


def test_warm_prompt_a_long_history_keeps_its_start_as_lines_arrive(generator):
    """Past the context, the oldest tokens go in steps: a new line does not move
    the start, so the evaluation of the lines before it is kept."""
    many = [
        (f"user{i}", f"line number {i} about the typing unit and its clutch") for i in range(60)
    ]
    room = len(generator.prompt_ids(history_prompt(many), 120))
    assert room < len(generator.tokens(history_prompt(many)))  # it was trimmed
    generator.prepare(history_prompt(many), 120)
    longer = history_prompt([*many, ("zed", "one more")])
    "".join(generator.stream(longer, max_chars=120, seed=2))
    assert generator.last_stats["evaluated"] < PROMPT_CHUNK + 10


def test_warm_prompt_the_idle_engine_evaluates_the_history_and_a_press_pays_one_token(tmp_path):
    from appliance.testing.engine_inprocess import build_engine

    engine = build_engine(tmp_path, "[model]\nmax_chars = 60\n")
    generator = engine.generator

    def holds(prompt: str) -> bool:
        ids = generator.prompt_ids(prompt, 60)
        return (
            generator.llm.n_tokens == len(ids) and list(generator.llm.input_ids[: len(ids)]) == ids
        )

    async def until(condition) -> None:
        for _ in range(6000):  # a guard against a hang; the state comes in well under a second
            if condition():
                return
            await asyncio.sleep(0.005)
        raise AssertionError("the engine did not get there")

    async def run():
        worker = asyncio.create_task(engine.run_worker())
        for name, text in LINES[:4]:
            await engine.add_chat_line(name, text)
        await until(lambda: holds(history_prompt(LINES[:4])))
        await engine.add_chat_line(*LINES[4])  # the history changes: evaluated again
        await until(lambda: holds(history_prompt()))
        job = engine.new_job(None, use_history=True, seed=3)  # a press
        await engine.submit(job)
        await engine.wait(job)
        evaluated = generator.last_stats["evaluated"]
        await until(lambda: holds(history_prompt()))  # and ready again after the reply
        worker.cancel()
        return job, evaluated

    try:
        job, evaluated = asyncio.run(run())
        assert job.status == "done" and job.blocked == 0
        assert evaluated == 0
    finally:
        engine.printer.close()
        generator.close()
