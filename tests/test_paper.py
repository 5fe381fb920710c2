"""The paper model: what the Teletype printed, numbered, with job marks, kept across restarts.

Unit tests on appliance.engine.paper, then the real engine in this process (embedded model, a
file for a Teletype) for the marks each kind of job end leaves and the API's resume.
"""

from __future__ import annotations

import asyncio
import json
import time

from appliance.engine.paper import KEPT_EVENTS, RESTART_GAP, Paper
from appliance.teletype.ports import Decoder
from appliance.teletype.profiles import get_profile
from appliance.testing.engine_inprocess import build_engine, running_engine

EVEN = {c: c | (bin(c).count("1") % 2) << 7 for c in range(128)}  # 7E: parity in bit 7


def wire(text: str, fills: int = 2) -> str:
    """Text as the discipline puts it on the wire (even parity, NUL fills after CR and LF),
    read back as the engine reads what left the port."""
    out = bytearray()
    for ch in text:
        out.append(EVEN[ord(ch)])
        if ch in "\r\n":
            out.extend([0] * fills)
    return Decoder(get_profile("asr33")).decode(bytes(out))


def test_the_carriage_moves_as_on_a_model_33(tmp_path):
    paper = Paper(None)
    paper.wrote(wire("HELLO\r\nTHERE"))
    paper.wrote(wire("\rW"))  # CR without LF: overprints from column 0
    paper.wrote(wire("\x07"))
    paper.wrote(wire("\r     " + "X" * 75))  # spaces leave the ink; past the margin: overprint
    snap = paper.snapshot()
    assert snap["backlog"] == [{"text": "HELLO"}]
    assert snap["line"] == "WHERE" + "X" * 67 and len(snap["line"]) == 72
    assert snap["column"] == 72 and snap["bell"] is True
    paper.wrote(wire("\r\n"))
    assert paper.snapshot()["backlog"][-1] == {"text": "WHERE" + "X" * 67, "bell": True}
    # LF alone keeps the column; fills alone move nothing and make no event.
    paper.wrote(wire("AB\n"))
    seq = paper.seq
    assert paper.wrote(wire("\x00\x7f\x00")) is None and paper.seq == seq
    paper.wrote(wire("C"))
    assert paper.snapshot()["line"] == "  C"


def test_resume_since_a_number_loses_nothing_and_too_old_means_a_snapshot():
    paper = Paper(None, clock=lambda: 100.0)
    sent = "".join(f"LINE {n}\r\n" for n in range(50))
    for ch in sent[:120]:
        paper.wrote(wire(ch))
    seen = paper.snapshot()
    for ch in sent[120:]:
        paper.wrote(wire(ch))
    after = paper.since(seen["seq"])
    assert after is not None
    assert [e["seq"] for e in after] == list(range(seen["seq"] + 1, paper.seq + 1))
    assert seen["line"] + "".join(e["text"] for e in after) == sent[120 - len(seen["line"]) :]
    assert paper.since(paper.seq) == []
    assert paper.since(paper.seq + 5) is None  # from another engine's numbers
    for _ in range(KEPT_EVENTS):
        paper.wrote(wire("A"))
    assert paper.since(seen["seq"]) is None  # no longer kept: take a snapshot
    assert paper.since(paper.seq - 3) is not None


def test_the_backlog_survives_a_restart_and_an_open_job_ends_interrupted(tmp_path):
    path = tmp_path / "paper.json"

    async def first_engine() -> int:
        paper = Paper(path)
        paper.job_started(1, "button", "HOW DOES THE CLUTCH WORK")
        paper.wrote(wire("THE CLUTCH\r\n"))
        paper.job_ended(1, "done")
        paper.job_started(2, "chat", "AND THE TYPEBOX")
        paper.wrote(wire("THE TYPEBOX IS\r\nOILED WE"))
        await paper.save()  # as the engine does every few lines; then it is killed
        return paper.seq

    seq = asyncio.run(first_engine())
    again = Paper(path)
    snap = again.snapshot()
    assert snap["backlog"] == [
        {"start": {"id": 1, "source": "button", "prompt": "HOW DOES THE CLUTCH WORK"}},
        {"text": "THE CLUTCH"},
        {"end": {"id": 1, "ended": "done"}},
        {"start": {"id": 2, "source": "chat", "prompt": "AND THE TYPEBOX"}},
        {"text": "THE TYPEBOX IS"},
        {"end": {"id": 2, "ended": "interrupted"}},
    ]
    assert (snap["line"], snap["column"]) == ("OILED WE", 8)
    # A view from before the restart cannot resume into numbers a crash may have lost.
    assert snap["seq"] == seq + RESTART_GAP
    assert again.since(seq) is None


def test_a_backlog_of_the_wrong_shape_is_set_aside(tmp_path):
    path = tmp_path / "paper.json"
    path.write_text('{"backlog": 5}')
    paper = Paper(path)
    assert paper.snapshot()["backlog"] == []
    assert not path.exists() and list(tmp_path.glob("paper.json.set-aside-*"))


# --- in the engine ---------------------------------------------------------------------------


def test_jobs_leave_marks_with_how_each_ended_and_the_api_resumes(tmp_path, embedded_generator):
    async def scenario() -> None:
        async with running_engine(tmp_path, embedded_generator, worker=True) as run:
            engine = run.engine
            _, _, start = await run.call("GET", "/v1/paper")
            seq = start["snapshot"]["seq"]
            status, _, job = await run.call("POST", "/v1/print", {"text": "HELLO PAPER\n"})
            assert status == 202
            await run.call("GET", f"/v1/jobs/{job['id']}?wait=60")

            # A reply cancelled the moment it starts: its mark says so.
            heard: asyncio.Queue = asyncio.Queue()
            engine.subscribers.add(heard)
            _, _, reply = await run.call("POST", "/v1/generate", {"prompt": "THE", "wait": False})
            while True:
                event = await asyncio.wait_for(heard.get(), 60)
                if event["event"] == "paper" and "start" in event["data"]:
                    await engine.cancel_job(engine.jobs[reply["id"]])
                    break
            await run.call("GET", f"/v1/jobs/{reply['id']}?wait=60")
            _, _, resumed = await run.call("GET", f"/v1/paper?since={seq}")
            marks = [e for e in resumed["events"] if "start" in e or "end" in e]
            assert marks[0]["start"] == {"id": job["id"], "source": "api", "prompt": "HELLO PAPER"}
            assert marks[1]["end"] == {"id": job["id"], "ended": "done"}
            assert marks[2]["start"]["id"] == reply["id"] and marks[2]["start"]["prompt"]
            assert marks[3]["end"] == {"id": reply["id"], "ended": "cancelled"}
            text = "".join(e.get("text", "") for e in resumed["events"])
            assert "HELLO PAPER\r\n" in text
            seqs = [e["seq"] for e in resumed["events"]]
            assert seqs == list(range(seq + 1, seq + 1 + len(seqs)))
            assert (await run.call("GET", "/v1/paper?since=x"))[0] == 400
        # Kept at the job's end: the next engine shows it.
        saved = json.loads((tmp_path / "state" / "paper.json").read_text())
        assert {"text": "HELLO PAPER"} in saved["backlog"]
        assert {"end": {"id": reply["id"], "ended": "cancelled"}} in saved["backlog"]

    asyncio.run(scenario())


async def _sse(response, until):
    """(event, id, data) from an event stream until `until(events)` says enough."""
    events: list[tuple[str, str | None, dict]] = []
    kind, ident = None, None
    async for raw in response.content:
        line = raw.decode().rstrip("\n")
        if line.startswith("event: "):
            kind = line[7:]
        elif line.startswith("id: "):
            ident = line[4:]
        elif line.startswith("data: "):
            events.append((kind, ident, json.loads(line[6:])))
            kind, ident = None, None
            if until(events):
                return events
    return events


def test_the_event_stream_resumes_from_last_event_id_or_sends_a_snapshot(
    tmp_path, embedded_generator
):
    async def scenario() -> None:
        async with running_engine(tmp_path, embedded_generator, worker=True) as run:
            _, _, job = await run.call("POST", "/v1/print", {"text": "BEFORE\n"})
            await run.call("GET", f"/v1/jobs/{job['id']}?wait=60")
            seen = run.engine.paper.seq
            # Missed while away: another print; the browser comes back with its last id.
            _, _, job = await run.call("POST", "/v1/print", {"text": "WHILE AWAY\n"})
            await run.call("GET", f"/v1/jobs/{job['id']}?wait=60")
            headers = {"Last-Event-ID": str(seen)}
            async with run.session.get(run.base + "/v1/events?since=0", headers=headers) as r:
                got = await _sse(r, lambda ev: any("end" in d for _, _, d in ev))
            ids = [int(i) for k, i, _ in got if k == "paper"]
            assert ids == list(range(seen + 1, seen + 1 + len(ids)))  # the header wins
            text = "".join(d.get("text", "") for k, _, d in got if k == "paper")
            assert "WHILE AWAY\r\n" in text and "BEFORE" not in text
        # The next engine: a view from before it gets a snapshot, the backlog in it.
        async with running_engine(tmp_path, embedded_generator) as run:
            async with run.session.get(run.base + f"/v1/events?since={seen}") as r:
                got = await _sse(r, lambda ev: len(ev) >= 1)
            kind, ident, snapshot = got[0]
            assert kind == "snapshot" and int(ident) == snapshot["seq"] > seen
            assert {"text": "WHILE AWAY"} in snapshot["backlog"]

    asyncio.run(scenario())


def test_a_baudot_machines_paper_reads_as_it_printed(tmp_path, embedded_generator):
    """Model 28 / ITA2: 5-bit codes with shifts (a letter's code may be 0x0A or 0x0D)."""

    async def scenario() -> None:
        engine = build_engine(tmp_path, 'profile = "ita2"\n', embedded_generator)
        async with running_engine(tmp_path, embedded_generator, worker=True, engine=engine) as run:
            _, _, job = await run.call("POST", "/v1/print", {"text": "RYRY 1234 THE QUICK FOX\n"})
            await run.call("GET", f"/v1/jobs/{job['id']}?wait=60")
            snapshot = (await run.call("GET", "/v1/paper"))[2]["snapshot"]
            assert {"text": "RYRY 1234 THE QUICK FOX"} in snapshot["backlog"], snapshot
            assert snapshot["columns"] == 69

    asyncio.run(scenario())


# --- how often the card is written ------------------------------------------------------------
# An SD card wears by its writes (#28): the backlog, 400 lines, is written when the printer
# falls quiet and at least every few minutes while it keeps printing, never at every job's end.


def _saved_text(tmp_path) -> str:
    path = tmp_path / "state" / "paper.json"
    return path.read_text() if path.exists() else ""


async def _seconds_until_saved(tmp_path, text: str, since: float) -> float:
    """Seconds from `since` (time.monotonic()) until the backlog on the card holds `text`."""
    while text not in _saved_text(tmp_path):
        assert time.monotonic() - since < 30, f"{text!r} never written to the card"
        await asyncio.sleep(0.05)
    return time.monotonic() - since


def test_the_backlog_is_written_when_the_printer_falls_quiet_not_at_each_job_end(
    tmp_path, embedded_generator, monkeypatch
):
    monkeypatch.setattr("appliance.engine.paper.QUIET_SAVE_SECONDS", 2.0)
    monkeypatch.setattr("appliance.engine.paper.MOST_UNSAVED_SECONDS", 3600.0)

    async def scenario() -> None:
        async with running_engine(tmp_path, embedded_generator, worker=True) as run:
            paper = run.engine.paper
            for text in ("FIRST JOB\n", "SECOND JOB\n"):
                _, _, job = await run.call("POST", "/v1/print", {"text": text})
                await run.call("GET", f"/v1/jobs/{job['id']}?wait=60")
                await asyncio.sleep(0.5)  # what a write begun at the job's end needs
                saved, read_by = _saved_text(tmp_path), time.monotonic()
                # On the card only once the quiet spell was over (however late this
                # looked: on a busy machine the spell may be over by now).
                assert "FIRST JOB" not in saved or read_by >= paper.last_change + 2.0
            # Not before the printer was quiet that long, counted from the paper's
            # last change itself, not from when this test heard the job had ended.
            assert await _seconds_until_saved(tmp_path, "SECOND JOB", paper.last_change) >= 2.0
            saved = json.loads(_saved_text(tmp_path))
            assert {"end": {"id": job["id"], "ended": "done"}} in saved["backlog"]
            assert {"text": "FIRST JOB"} in saved["backlog"]

    asyncio.run(scenario())


def test_a_printer_that_never_falls_quiet_still_has_its_backlog_written(
    tmp_path, embedded_generator, monkeypatch
):
    monkeypatch.setattr("appliance.engine.paper.QUIET_SAVE_SECONDS", 3600.0)
    monkeypatch.setattr("appliance.engine.paper.MOST_UNSAVED_SECONDS", 2.0)

    async def scenario() -> None:
        async with running_engine(tmp_path, embedded_generator, worker=True) as run:
            asked = time.monotonic()  # before the job's first change on paper
            _, _, job = await run.call("POST", "/v1/print", {"text": "KEEPS ON PRINTING\n"})
            await run.call("GET", f"/v1/jobs/{job['id']}?wait=60")
            # Written once the oldest unsaved change was that old, not at the job's end.
            assert await _seconds_until_saved(tmp_path, "KEEPS ON", asked) >= 2.0
            saved = json.loads(_saved_text(tmp_path))
            assert {"end": {"id": job["id"], "ended": "done"}} in saved["backlog"]

    asyncio.run(scenario())


def test_after_a_power_cut_the_last_kept_job_ends_as_the_journal_says(
    tmp_path, embedded_generator, monkeypatch
):
    """The backlog on the card can be minutes older than the job journal: a job open in it
    may have finished before the cut. Its mark says what the journal knows, not a guess."""
    monkeypatch.setattr("appliance.engine.paper.MOST_UNSAVED_SECONDS", 0.0)

    async def first_engine() -> int:
        async with running_engine(tmp_path, embedded_generator, worker=True) as run:
            _, _, job = await run.call("POST", "/v1/print", {"text": "ALL OF IT\n"})
            await run.call("GET", f"/v1/jobs/{job['id']}?wait=60")
        return job["id"]

    job_id = asyncio.run(first_engine())
    # The card as a cut would leave it: the backlog written mid-job, the journal at its end.
    path = tmp_path / "state" / "paper.json"
    saved = json.loads(path.read_text())
    saved["backlog"] = saved["backlog"][: saved["backlog"].index({"text": "ALL OF IT"})]
    saved["job"] = saved["backlog"][-1]["start"]
    path.write_text(json.dumps(saved))

    again = build_engine(tmp_path, generator=embedded_generator)
    assert again.paper.snapshot()["backlog"][-1] == {"end": {"id": job_id, "ended": "done"}}
