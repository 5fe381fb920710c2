"""The engine as a real process: the embedded model, a real pty as the Teletype, real HTTP."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from appliance.engine.moderation import Blocklist
from appliance.testing.engine_process import EngineProcess
from appliance.testing.wire import PtyReader, check_ascii
from tests.conftest import FAST


def _words(text: str) -> list[str]:
    return re.findall(r"[A-Z0-9]+", text.upper())


@pytest.fixture(scope="module")
def idle_engine(tmp_path_factory):
    """One engine for the tests that only ask and never print (its state stays as it was)."""
    tmp = tmp_path_factory.mktemp("idle-engine")
    engine = EngineProcess(tmp, f"file:{tmp / 'paper.txt'}").start()
    yield engine
    engine.close()


def test_engine_notifies_ready_watchdog_status_and_stopping(engine):
    assert "READY=1" in engine.notify.wait_for("READY=1")
    engine.notify.wait_for("STATUS=")
    # WATCHDOG_USEC=300000: a ping every 150 ms, from the event loop itself.
    engine.notify.wait_for("WATCHDOG=1")
    before = engine.notify.count("WATCHDOG=1")
    within = time.monotonic() + 1.0
    while engine.notify.count("WATCHDOG=1") < before + 4 and time.monotonic() < within:
        time.sleep(0.02)
    assert engine.notify.count("WATCHDOG=1") >= before + 4  # four within a second
    assert engine.terminate() == 0
    engine.notify.wait_for("STOPPING=1")


def test_engine_seed_route_prints_and_answers(engine, teletype):
    status, headers, body = engine.request("GET", "/asr33bot/THE%20TYPING%20UNIT")
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain")
    text = body.decode()
    assert text
    paper = check_ascii(teletype.collect())
    assert paper.problems == []
    assert _words(paper.text) == _words(text)
    assert paper.ends_at_column_zero


def test_engine_generate_json_and_without_printing(engine, teletype):
    status, job = engine.json(
        "POST",
        "/v1/generate",
        {"prompt": "The keyboard", "print": False, "max_chars": 40, "seed": 3},
    )
    assert status == 200 and job["status"] == "done" and job["text"]
    assert teletype.collect(quiet=0.3) == b""
    status, again = engine.json(
        "POST",
        "/v1/generate",
        {"prompt": "The keyboard", "print": False, "max_chars": 40, "seed": 3},
    )
    assert again["text"] == job["text"]


def test_engine_streams_text_as_it_prints(engine, teletype):
    status, headers, body = engine.request(
        "POST", "/v1/generate", {"prompt": "Lubricate the", "stream": True, "max_chars": 40}
    )
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    assert _words(check_ascii(teletype.collect()).text) == _words(body.decode())


def test_engine_history_api_and_persistence(engine):
    assert engine.json("POST", "/v1/history", {"name": "ada", "text": "hello"})[0] == 201
    assert engine.json("POST", "/v1/history", {"name": "bob", "text": "print!"})[0] == 201
    assert engine.terminate() == 0
    engine.start()  # the same state directory: the history is on disk
    _, body = engine.json("GET", "/v1/history")
    assert body == {"lines": [{"name": "ada", "text": "hello"}, {"name": "bob", "text": "print!"}]}
    assert engine.request("DELETE", "/v1/history")[0] == 204
    assert engine.json("GET", "/v1/history")[1] == {"lines": []}


@pytest.mark.parametrize(
    ("path", "body", "message"),
    [
        ("/v1/generate", b"not json", "not JSON"),
        ("/v1/generate", b"[1, 2]", "object"),
        ("/v1/generate", b'{"max_chars": 100, "sede": 3}', "unknown field `sede`"),
        ("/v1/generate", b"[" * 20000 + b"]" * 20000, "object"),
        ("/v1/generate", b'{"seed": ' + b"9" * 4301 + b"}", "seed"),
        ("/v1/generate", b'{"max_chars": true}', "max_chars"),
        ("/v1/print", b"{}", "text"),
        ("/v1/print", b"", "body is required"),
        ("/v1/history", b'{"name": "a", "text": "hi \\ud800 there"}', "surrogate"),
        ("/v1/generate", b'{"max_chars": 5}', "max_chars"),
        ("/v1/generate", b'{"seed": "x"}', "seed"),
        ("/v1/history", b'{"name": "a"}', "required"),
        ("/v1/history", '{"name": "a", "text": "\u00a0 "}'.encode(), "Blank"),
    ],
)
def test_engine_malformed_requests_get_400_with_json(idle_engine, path, body, message):
    status, headers, raw = idle_engine.request("POST", path, body)
    assert status == 400
    assert headers["Content-Type"].startswith("application/json")
    assert message in raw.decode()


def test_engine_status_and_health(engine):
    status, body = engine.json("GET", "/v1/status")
    assert status == 200
    assert body["queue"] == 0 and body["queue_max"] == 8
    assert body["port"]["state"] == "open"
    assert body["characters_per_second"] == 10.0  # the Teletype's, whatever the test's pace
    assert engine.json("GET", "/healthz") == (200, {"ok": True})


def test_engine_fifty_clients_each_job_printed_once_in_order(tmp_path, start_engine):
    paper = tmp_path / "paper.txt"
    # At the Teletype's pace: the queue must fill while the first jobs print.
    engine = start_engine(f"file:{paper}", speed=1)
    results: list[tuple[int, dict | None]] = [None] * 50  # type: ignore[list-item]

    def client(i: int):
        results[i] = engine.json(
            "POST", "/v1/generate", {"prompt": f"The clutch {i}", "max_chars": 20, "seed": i}
        )

    try:
        threads = [threading.Thread(target=client, args=(i,)) for i in range(50)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
    finally:
        engine.close()  # (the paper is complete once the engine is gone)
    accepted = sorted((body for status, body in results if status == 200), key=lambda b: b["id"])
    rejected = [body for status, body in results if status == 429]
    assert len(accepted) + len(rejected) == 50
    # The queue's eight, at least (a ninth when the worker had taken the first
    # off the queue before the burst ended: on a busy machine it may not have).
    assert len(accepted) >= 8
    assert all("queue is full" in body["error"] for body in rejected)
    printed = paper.read_text()
    # Every accepted job exactly once, in the order accepted, never interleaved.
    expected = "".join(_paper(job["text"]) for job in accepted)
    assert printed == expected


def _paper(text: str) -> str:
    from appliance.teletype.discipline import LineDiscipline
    from appliance.teletype.ports import Decoder
    from appliance.teletype.profiles import get_profile

    profile = get_profile("asr33")
    d = LineDiscipline(profile)
    frames = d.start_job() + d.feed(text) + d.flush() + d.end_line()
    return Decoder(profile).decode(bytes(f.code for f in frames)).replace("\r", "")


@pytest.mark.engine(speed=3)  # the job must still be printing when the device goes
def test_engine_device_vanishes_mid_job_and_the_job_resumes(engine, teletype, tmp_path):
    result = {}

    def ask():
        result["job"] = engine.json(
            "POST", "/v1/generate", {"prompt": "The keyboard", "max_chars": 150, "seed": 2}
        )

    client = threading.Thread(target=ask)
    client.start()
    deadline = time.monotonic() + 60
    while len(teletype.data) < 30 and time.monotonic() < deadline:
        time.sleep(0.05)
    before = bytes(teletype.data)
    # Unplug: the device node goes, the other end closes.
    teletype.link.unlink()
    teletype.close()
    deadline = time.monotonic() + 30
    status = engine.json("GET", "/v1/status")[1]
    while status["port"]["state"] != "offline" and time.monotonic() < deadline:
        time.sleep(0.05)
        status = engine.json("GET", "/v1/status")[1]
    assert status["port"]["state"] == "offline"
    assert status["printing"] is not None
    # Plug back in (a new pty behind the same name).
    replacement = PtyReader()
    teletype.link.symlink_to(replacement.name)
    try:
        client.join(timeout=120)
        code, job = result["job"]
        assert code == 200 and job["status"] == "done"
        after = check_ascii(replacement.collect())
        assert after.problems == []
        assert after.ends_at_column_zero
        # Nothing lost: the paper from before, and after (which reprints the
        # interrupted line from its start), hold every word of the reply.
        printed = _words(check_ascii(before).text) + _words(after.text)
        reply = _words(job["text"])
        assert printed[-len(reply) // 2 :] == reply[-len(reply) // 2 :]
        assert set(reply) <= set(printed)
        assert engine.json("GET", "/v1/status")[1]["port"]["state"] == "open"
    finally:
        replacement.close()


def _start_a_long_print(engine, teletype) -> None:
    """A 300-character reply, and back once it is well into its first line."""

    def ask() -> None:
        # The engine may be killed before it answers: the asker just hangs up.
        with contextlib.suppress(OSError):
            engine.json("POST", "/v1/generate", {"max_chars": 300})

    threading.Thread(target=ask, daemon=True).start()
    deadline = time.monotonic() + 60
    while len(teletype.data) < 15 and time.monotonic() < deadline:
        time.sleep(0.05)


@pytest.mark.engine(speed=1)  # stopped while it prints
def test_engine_sigterm_mid_line_leaves_column_zero_and_exits_0(engine, teletype):
    _start_a_long_print(engine, teletype)
    assert engine.terminate() == 0
    paper = check_ascii(teletype.collect())
    assert paper.problems == []
    assert paper.ends_at_column_zero
    assert len(paper.lines[0]) < 72  # it really was stopped mid-line


def _first_code(data: bytes) -> int | None:
    """The first character on the wire, fills and parity aside."""
    codes = [b & 0x7F for b in data if b & 0x7F not in (0x00, 0x7F)]
    return codes[0] if codes else None


@pytest.mark.engine(speed=1)  # stopped while it prints
def test_engine_after_kill_9_mid_line_starts_its_first_print_on_a_new_line(engine, teletype):
    _start_a_long_print(engine, teletype)
    engine.process.kill()  # kill -9: nothing finishes the line
    engine.process.wait()
    before = check_ascii(teletype.collect())
    assert not before.ends_at_column_zero  # the carriage really is mid-line
    mark = len(teletype.data)
    engine.set_speed(FAST)  # the restart reprints the whole journaled job: no need to wait for it
    engine.start()
    status, job = engine.json("POST", "/v1/generate", {"max_chars": 40})
    assert status == 200 and job["text"]
    after = bytes(teletype.collect()[mark:])
    assert _first_code(after) == 0x0D  # CR (LF follows): no overprinting
    assert check_ascii(after).problems == []


def test_engine_after_a_clean_stop_starts_where_the_paper_is(engine, teletype):
    assert engine.json("POST", "/v1/generate", {"max_chars": 40})[0] == 200
    assert engine.terminate() == 0
    mark = len(teletype.collect())
    engine.start()
    assert engine.json("POST", "/v1/generate", {"max_chars": 40})[0] == 200
    after = bytes(teletype.collect()[mark:])
    assert _first_code(after) not in (0x0D, 0x0A)  # no blank line for nothing


def test_engine_refuses_a_public_address_without_a_token(tmp_path):
    config = tmp_path / "t.toml"
    config.write_text('[engine]\ntcp_host = "0.0.0.0"\n[teletype]\nport = "virtual"\n')
    result = subprocess.run(
        [sys.executable, "-m", "appliance.cli", "serve", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 78  # EX_CONFIG: systemd does not restart it
    assert "engine.tcp_host is '0.0.0.0'" in result.stderr and "engine.token" in result.stderr


@pytest.mark.engine(engine_extra='token = "s3cret"')
def test_engine_token_is_required_when_set(engine):
    assert engine.request("GET", "/v1/status")[0] == 401
    ok = engine.request("GET", "/v1/status", headers={"Authorization": "Bearer s3cret"})
    assert ok[0] == 200
    assert engine.request("GET", "/healthz")[0] == 200


def test_engine_openapi_document_holds_with_schemathesis(tmp_path, start_engine):
    import schemathesis
    from hypothesis import HealthCheck, given, settings

    engine = start_engine(f"file:{tmp_path / 'p.txt'}")
    try:
        schema = schemathesis.openapi.from_url(engine.base + "/openapi.json")
        # Generating text is slow and /v1/events never ends: both are tested above.
        schema = schema.exclude(path_regex="^/(asr33bot|v1/events|v1/generate)")
        checked = []
        for result in schema.get_all_operations():
            operation = result.ok()

            @given(case=operation.as_strategy())
            # Derandomised: the same examples every run, so CI is not a lottery
            # (a random run found the blank-text bug fixed above; keep that case).
            @settings(
                max_examples=50,
                deadline=None,
                derandomize=True,
                suppress_health_check=list(HealthCheck),
            )
            def check(case):
                case.call_and_validate(base_url=engine.base)

            check()
            checked.append(f"{operation.method.upper()} {operation.path}")
        assert len(checked) == 15, checked  # GET /v1/paper among them
    finally:
        engine.close()


def test_engine_port_that_is_absent_at_start_is_served_anyway(tmp_path, start_engine):
    missing = tmp_path / "ttyNOTHERE"
    engine = start_engine(str(missing))
    try:
        assert engine.json("GET", "/v1/status")[1]["port"]["state"] == "offline"
        assert engine.json("GET", "/healthz")[0] == 200
    finally:
        engine.close()
    assert "cannot open the Teletype's port" in engine.output()


def test_engine_has_no_leftover_socket_after_stopping(tmp_path, engine):
    sock = Path(tmp_path / "run" / "engine.sock")
    assert sock.exists()
    assert engine.terminate() == 0
    engine.close()
    assert not sock.exists()
    assert os.listdir(tmp_path / "run") == []


def test_engine_events_stream_queued_started_finished_with_text(engine):
    import json as jsonlib
    import urllib.request

    events: list[tuple[str, dict]] = []
    connected = threading.Event()

    def listen():
        with urllib.request.urlopen(engine.base + "/v1/events", timeout=120) as stream:
            kind = None
            for raw in stream:
                line = raw.decode().rstrip("\n")
                if line.startswith(": connected"):
                    connected.set()
                elif line.startswith("event: "):
                    kind = line[len("event: ") :]
                elif line.startswith("data: "):
                    events.append((kind, jsonlib.loads(line[len("data: ") :])))
                    if kind == "finished":
                        return

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    assert connected.wait(30)
    _, job = engine.json("POST", "/v1/generate", {"prompt": "The clutch", "max_chars": 20})
    listener.join(timeout=120)
    # The printer's port opened too, and the paper came as it printed.
    job_events = [(k, d) for k, d in events if k not in ("port", "paper")]
    assert [k for k, _ in job_events] == ["queued", "started", "finished"], events
    finished = job_events[2][1]
    assert finished["id"] == job["id"] and finished["text"] == job["text"]
    paper = "".join(d.get("text", "") for k, d in events if k == "paper")
    printed = "".join(c for c in paper if c.isalnum())
    assert printed and printed == "".join(c for c in job["text"].upper() if c.isalnum())


@pytest.mark.engine(speed=3)  # stopped while it prints
def test_engine_cancel_stops_the_print_and_finishes_the_line(engine, teletype):
    result = {}
    threading.Thread(
        target=lambda: result.update(job=engine.json("POST", "/v1/generate", {"max_chars": 400})),
        daemon=True,
    ).start()
    deadline = time.monotonic() + 60
    while len(teletype.data) < 20 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert engine.json("POST", "/v1/cancel") == (200, {"cancelled": True})
    deadline = time.monotonic() + 30
    while "job" not in result and time.monotonic() < deadline:
        time.sleep(0.05)
    assert result["job"][1]["status"] == "cancelled"
    paper = check_ascii(teletype.collect())
    assert paper.problems == [] and paper.ends_at_column_zero
    assert len(teletype.data) < 400
    assert engine.json("POST", "/v1/cancel") == (200, {"cancelled": False})


def test_engine_a_line_typed_on_the_teletype_is_a_prompt(engine, teletype):
    from appliance.teletype.codes import parity_bit

    typed = b"THE TYPING UNIT\r"
    teletype.type(bytes(c | (parity_bit(c, "even") << 7) for c in typed))
    deadline = time.monotonic() + 60
    while len(teletype.data) < 10 and time.monotonic() < deadline:
        time.sleep(0.05)
    paper = check_ascii(teletype.collect(quiet=1.5))
    assert paper.problems == []
    assert len(_words(paper.text)) >= 3
    assert "typed on the Teletype: THE TYPING UNIT" in engine.output()


def test_engine_bell_rings_and_is_rate_limited(engine, teletype):
    assert engine.json("POST", "/v1/bell") == (200, {"rung": True})
    assert teletype.collect() == bytes([0x87])  # BEL, even parity
    status, headers, raw = engine.request("POST", "/v1/bell")
    assert status == 429
    assert 1 <= int(headers["Retry-After"]) <= 10
    assert "bell rang a moment ago" in raw.decode()


def test_history_survives_a_write_cut_short_and_leaves_no_temporary_file(tmp_path):
    from appliance.engine.history import PersistentHistory

    path = tmp_path / "history.json"
    history = PersistentHistory(path, 5, blocklist=Blocklist())
    history.add("ada", "hello teletype")
    # kill -9 or a power cut in the middle of the next save: its temporary
    # file is left behind, half written.
    (tmp_path / ".history.k3x9q1").write_text('{"lines": [{"name": "ada", "te')
    again = PersistentHistory(path, 5, blocklist=Blocklist())
    assert [(ln.name, ln.text) for ln in again.lines()] == [("ada", "hello teletype")]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["history.json"]
