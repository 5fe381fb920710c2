"""The engine's state in this process: the history, the journal, a full card, the queue's times.

Each runs the real engine and its real API app (appliance/testing/engine_inprocess.py) with the
embedded model; a `teletype serve` process would show nothing more here.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import resource

import pytest

from appliance.engine.history import PersistentHistory
from appliance.engine.moderation import Blocklist
from appliance.testing.engine_inprocess import build_engine, running_engine

# --- the history ---------------------------------------------------------------------------


@pytest.mark.parametrize("posted", [1, 3, 4, 5, 7])
def test_the_history_keeps_every_line_it_answered_for(tmp_path, posted):
    history = PersistentHistory(tmp_path / "history.json", 5, blocklist=Blocklist())
    for n in range(posted):
        history.add("ada", f"line {n}")
    again = PersistentHistory(tmp_path / "history.json", 5, blocklist=Blocklist())
    expected = [f"line {n}" for n in range(posted)][-5:]
    assert [line.text for line in again.lines()] == expected


def test_history_posted_over_the_api_survives_a_restart(tmp_path, embedded_generator):
    async def scenario() -> None:
        async with running_engine(tmp_path, embedded_generator) as run:
            for n in range(4):
                assert (await run.call("POST", "/v1/history", {"name": "a", "text": f"{n}"}))[
                    0
                ] == 201
        async with running_engine(tmp_path, embedded_generator) as run:
            _, _, body = await run.call("GET", "/v1/history")
            assert [line["text"] for line in body["lines"]] == ["0", "1", "2", "3"]

    asyncio.run(scenario())


# --- a journal of the wrong shape -----------------------------------------------------------

QUEUED = {"prompt": "hi", "max_chars": 40, "id": 7, "status": "queued", "created": 1.0}


@pytest.mark.parametrize(
    ("journal", "set_aside"),
    [
        ({"jobs": 5}, True),
        ({"jobs": True}, True),
        ({"reply_lengths": 5}, True),
        ({"jobs": [{**QUEUED, "max_chars": None}]}, False),
        ({"jobs": [{**QUEUED, "text": 5}]}, False),
        ({"jobs": [{**QUEUED, "print": "yes"}]}, False),
        ({"jobs": [QUEUED], "reply_lengths": [1e308] * 20}, False),
        ({"jobs": [QUEUED], "reply_lengths": [-1, "x", None, 0]}, False),
    ],
)
def test_a_journal_of_the_wrong_shape_is_set_aside_and_the_engine_starts(
    tmp_path, embedded_generator, caplog, journal, set_aside
):
    state = tmp_path / "state"
    state.mkdir()
    (state / "jobs.json").write_text(json.dumps(journal))
    caplog.set_level(logging.WARNING)

    async def scenario() -> None:
        async with running_engine(tmp_path, embedded_generator) as run:
            for path in ("/v1/status", "/v1/jobs", "/v1/history"):
                status, _, body = await run.call("GET", path)
                assert status == 200, (path, body)
            status, _, body = await run.call("POST", "/v1/print", {"text": "hello"})
            assert status == 202, body
            assert math.isfinite(body["starts_in_seconds"])

    asyncio.run(scenario())
    warnings = [r.getMessage() for r in caplog.records if r.name == "teletype.journal"]
    assert len(warnings) == 1, warnings
    kept = sorted(p.name for p in state.iterdir() if p.name.startswith("jobs.json."))
    assert len(kept) == (1 if set_aside else 0)
    if set_aside:  # kept as it was, for a person to look at
        assert json.loads((state / kept[0]).read_text()) == journal


def test_a_journal_that_is_a_directory_is_set_aside_and_the_engine_starts(
    tmp_path, embedded_generator
):
    (tmp_path / "state" / "jobs.json").mkdir(parents=True)

    async def scenario() -> None:
        async with running_engine(tmp_path, embedded_generator) as run:
            status, _, body = await run.call("POST", "/v1/print", {"text": "hello"})
            assert status == 202, body
            assert body["status"] == "queued"

    asyncio.run(scenario())
    assert (tmp_path / "state" / "jobs.json").is_file()
    assert len(list((tmp_path / "state").glob("jobs.json.set-aside-*"))) == 1


# --- a full card ------------------------------------------------------------------------------


@contextlib.contextmanager
def full_card(room: int = 8):
    """Writes past `room` bytes fail (EFBIG), as a full card's do (ENOSPC): for this process."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (room, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


def test_a_cancel_that_cannot_be_journaled_is_refused_and_the_job_stays(
    tmp_path, embedded_generator
):
    async def scenario() -> None:
        async with running_engine(tmp_path, embedded_generator) as run:
            _, _, job = await run.call("POST", "/v1/print", {"text": "hello"})
            with full_card():
                status, _, body = await run.call("DELETE", f"/v1/jobs/{job['id']}")
                cleared, _, _ = await run.call("DELETE", "/v1/jobs")
            assert status == 503, body
            assert "cannot save the job journal" in body["error"]
            assert cleared == 503
            _, _, queue = await run.call("GET", "/v1/jobs")
            assert [(j["id"], j["status"]) for j in queue["jobs"]] == [(job["id"], "queued")]
            status, _, body = await run.call("DELETE", f"/v1/jobs/{job['id']}")
            assert status == 200 and body["status"] == "cancelled"
        # What the journal says after a restart is what the client was told.
        async with running_engine(tmp_path, embedded_generator) as run:
            _, _, body = await run.call("GET", f"/v1/jobs/{job['id']}")
            assert body["status"] == "cancelled"

    asyncio.run(scenario())


def test_the_engine_starts_on_a_full_card_and_says_so(tmp_path, embedded_generator):

    async def scenario() -> None:
        full = full_card()
        full.__enter__()
        try:
            engine = build_engine(tmp_path, generator=embedded_generator)
            async with running_engine(tmp_path, embedded_generator, engine=engine) as run:
                _, _, status = await run.call("GET", "/v1/status")
                assert "cannot save the job journal" in status["state_error"]
                code, _, body = await run.call("POST", "/v1/print", {"text": "hello"})
                assert code == 503 and "cannot save the job journal" in body["error"]
                # Room again: the next job is saved, and the status says all is well.
                full.__exit__(None, None, None)
                assert (await run.call("POST", "/v1/print", {"text": "hello"}))[0] == 202
                assert (await run.call("GET", "/v1/status"))[2]["state_error"] is None
        finally:
            full.__exit__(None, None, None)

    asyncio.run(scenario())  # running_engine closes the engine's printer


# --- paper time in frames ----------------------------------------------------------------------


def test_the_queue_counts_a_texts_frames_after_transliteration(tmp_path, embedded_generator):
    from anyascii import anyascii

    spelled = len(anyascii("\ufdfd"))  # one character, many letters on paper

    async def scenario() -> None:
        async with running_engine(tmp_path, embedded_generator) as run:
            cps = run.engine.cps
            await run.call("POST", "/v1/print", {"text": "\ufdfd" * 40})
            _, _, behind = await run.call("POST", "/v1/print", {"text": "next"})
            assert behind["starts_in_seconds"] >= 40 * spelled / cps
            # 2,000 of them would be well over an hour of paper: refused, saying why.
            status, _, body = await run.call("POST", "/v1/print", {"text": "\ufdfd" * 2000})
            assert status == 413 and "minutes of paper" in body["error"], body

    asyncio.run(scenario())


def test_a_reply_that_prints_past_the_paper_limit_is_cut_and_says_why(tmp_path, embedded_generator):
    async def scenario() -> None:
        async with running_engine(
            tmp_path, embedded_generator, "[engine]\nmax_paper_seconds = 60"
        ) as run:
            engine = run.engine
            job = engine.new_job("hello", use_history=False)
            engine.current = job  # the printer's report of what it wrote, as it writes
            assert engine.max_frames < engine.cut_at < engine.max_frames * 1.2
            engine._on_write(b"x" * (engine.cut_at - 1))
            assert not job.cancel.is_set()
            engine._on_write(b"x")
            assert job.cancel.is_set() and job.cut
            assert "cut after" in job.error and engine._ended(job) == "done"
            engine.current = None

    asyncio.run(scenario())


def test_retry_after_is_the_wait_for_a_place_not_the_whole_queue(tmp_path, embedded_generator):
    async def scenario() -> None:
        async with running_engine(tmp_path, embedded_generator, "[engine]\nqueue_size = 3") as run:
            engine = run.engine
            text = "word " * 100
            for _ in range(3):
                assert (await run.call("POST", "/v1/print", {"text": text}))[0] == 202
            each = engine.paper_frames(text) / engine.cps
            # Nothing prints yet: the first in the queue goes to the printer next.
            status, headers, _ = await run.call("POST", "/v1/print", {"text": "x"})
            assert status == 429 and int(headers["Retry-After"]) == 1
            # Low priority keeps one place free for others: two must leave, the second
            # once the first has printed.
            low = {"text": "x", "low_priority": True}
            status, headers, _ = await run.call("POST", "/v1/print", low)
            assert status == 429 and int(headers["Retry-After"]) == round(each)
            assert int(headers["Retry-After"]) < engine.eta_seconds() / 2

    asyncio.run(scenario())


def test_a_fresh_engines_eta_is_close_before_any_reply_is_measured(tmp_path, embedded_generator):
    # The prior used to be 1.5 x max_chars: replies of 40 printed 1.7 times that.
    async def scenario() -> None:
        extra = "[engine]\nqueue_size = 10\n[model]\nmax_chars = 40"
        async with running_engine(tmp_path, embedded_generator, extra, worker=True) as run:
            engine = run.engine
            jobs = [engine.new_job("", use_history=True, seed=s) for s in range(1, 9)]
            estimate = sum(engine.expected_frames(job) for job in jobs)
            for job in jobs:
                await engine.submit(job)
            for job in jobs:
                await engine.wait(job)
            actual = sum(job.printed for job in jobs)
            assert all(job.status == "done" for job in jobs)
            assert abs(estimate - actual) / actual < 0.2, (estimate, actual)

    asyncio.run(scenario())
