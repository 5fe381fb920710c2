"""The engine under faults: each test here failed on the engine before it was fixed.

A real `teletype serve` on the embedded model, a real pty as the Teletype,
real HTTP; kill -9, SIGTERM, a vanished port, hostile clients and
poisoned state files, as a user's appliance meets them.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from appliance.engine.moderation import Blocklist
from appliance.testing.engine_process import free_port
from appliance.testing.wire import PtyReader, check_ascii
from tests.conftest import FAST

# The engine unit's TimeoutStopSec=: past it, systemd kills the engine mid-line.
UNIT_STOP_TIMEOUT = 20


def _queue(engine, body: dict) -> dict:
    status, job = engine.json("POST", "/v1/generate", {**body, "wait": False})
    assert status == 202, job
    return job


def _wait_for_paper(teletype, frames: int) -> None:
    deadline = time.monotonic() + 60
    while len(teletype.data) < frames and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(teletype.data) >= frames, "the print never started"


class EventStream:
    """A client of /v1/events, as the chat bridge always has one open."""

    def __init__(self, engine):
        self.conn = http.client.HTTPConnection("127.0.0.1", engine.http_port, timeout=120)
        self.conn.request("GET", "/v1/events")
        self.response = self.conn.getresponse()
        assert self.response.status == 200
        self.ended = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        try:
            while self.response.read1(4096):
                pass
        except OSError:
            pass
        self.ended.set()


# --- SIGTERM, kill -9 and the journal -------------------------------------------------


@pytest.mark.engine(speed=1)  # stopped while it prints
def test_sigterm_stops_promptly_answers_waiters_and_keeps_the_queue(engine, teletype):
    listener = EventStream(engine)
    printing = _queue(engine, {"max_chars": 300, "seed": 4})
    waiting = _queue(engine, {"max_chars": 60, "seed": 5})
    answer = {}

    def wait_for_it():
        answer["r"] = engine.json("GET", f"/v1/jobs/{waiting['id']}?wait=120")

    waiter = threading.Thread(target=wait_for_it)
    waiter.start()
    _wait_for_paper(teletype, 20)
    started = time.monotonic()
    assert engine.terminate(timeout=UNIT_STOP_TIMEOUT) == 0
    took = time.monotonic() - started
    waiter.join(timeout=10)
    assert listener.ended.wait(5), "the event stream was left open"
    code, body = answer["r"]
    assert code == 503 and str(waiting["id"]) in body["error"]
    paper = check_ascii(teletype.collect())
    assert paper.ends_at_column_zero
    assert len(paper.lines) <= 3, f"the queued job was printed before stopping ({took:.1f} s)"

    # The next engine answers for both: one interrupted, the other run.
    mark = len(teletype.data)
    engine.set_speed(FAST)
    engine.start()
    code, first = engine.json("GET", f"/v1/jobs/{printing['id']}")
    assert code == 200 and first["status"] == "interrupted"
    code, second = engine.json("GET", f"/v1/jobs/{waiting['id']}?wait=120")
    assert code == 200 and second["status"] == "done" and second["text"]
    after = check_ascii(teletype.collect()[mark:])
    assert after.problems == []
    assert second["text"].split()[0].upper().strip(".,") in after.text


@pytest.mark.engine(speed=1)  # stopped while it prints
def test_kill_9_loses_no_accepted_job(engine, teletype):
    printing = _queue(engine, {"max_chars": 300, "seed": 4})
    queued = [_queue(engine, {"max_chars": 40, "seed": s}) for s in (7, 8)]
    _wait_for_paper(teletype, 20)
    engine.process.kill()
    engine.process.wait()

    engine.set_speed(FAST)
    engine.start()
    code, first = engine.json("GET", f"/v1/jobs/{printing['id']}")
    assert code == 200 and first["status"] == "interrupted" and "power cut" in first["error"]
    for job in queued:
        code, after = engine.json("GET", f"/v1/jobs/{job['id']}?wait=120")
        assert code == 200 and after["status"] == "done" and after["text"], after
    # The ids of the restored jobs are never handed out again.
    fresh = _queue(engine, {"max_chars": 40})
    assert fresh["id"] > max(j["id"] for j in queued)
    assert engine.terminate() == 0
    assert not list((engine.tmp / "state").glob(".*")), "a temporary file was left behind"


def test_a_restart_with_no_journal_and_no_history_starts_clean(engine):
    assert engine.json("GET", "/v1/jobs/1")[0] == 404
    assert engine.json("GET", "/v1/status")[1]["queue"] == 0


# --- cancel --------------------------------------------------------------------------


@pytest.mark.engine(speed=3)  # still printing when the port goes
def test_cancel_while_the_port_is_offline_ends_the_job_and_frees_the_queue(engine, teletype):
    printing = _queue(engine, {"max_chars": 300, "seed": 4})
    _wait_for_paper(teletype, 20)
    teletype.link.unlink()  # the adapter is unplugged
    teletype.close()
    deadline = time.monotonic() + 10
    while engine.json("GET", "/v1/status")[1]["port"]["state"] != "offline":
        assert time.monotonic() < deadline, "the engine never saw the port go"
        time.sleep(0.1)
    assert engine.json("POST", "/v1/cancel") == (200, {"cancelled": True})
    code, job = engine.json("GET", f"/v1/jobs/{printing['id']}?wait=10")
    assert code == 200 and job["status"] == "cancelled"
    assert engine.json("GET", "/v1/status")[1]["printing"] is None

    # Plugged back in, the next job starts on a fresh line: the carriage
    # was left wherever the unplugging found it.
    replacement = PtyReader()
    teletype.link.symlink_to(replacement.name)
    try:
        code, job = engine.json("POST", "/v1/generate", {"max_chars": 40, "seed": 3})
        assert code == 200 and job["status"] == "done"
        after = replacement.collect()
        assert [b & 0x7F for b in after if b & 0x7F not in (0, 0x7F)][:2] == [0x0D, 0x0A]
        assert check_ascii(after).problems == []
    finally:
        replacement.close()


@pytest.mark.engine(speed=3)  # the first job still prints while the second is cancelled
def test_a_queued_job_can_be_cancelled_by_id(engine, teletype):
    _queue(engine, {"max_chars": 300, "seed": 4})
    # The first job leaves the queue when the worker takes it (after at most one
    # chunk of an idle prompt evaluation): only the second is left to cancel.
    deadline = time.monotonic() + 30
    while engine.json("GET", "/v1/status")[1]["printing"] is None:
        assert time.monotonic() < deadline, "the worker never took the first job"
        time.sleep(0.02)
    queued = _queue(engine, {"max_chars": 40, "seed": 9})
    code, job = engine.json("DELETE", f"/v1/jobs/{queued['id']}")
    assert code == 200 and job["status"] == "cancelled"
    assert engine.json("GET", "/v1/status")[1]["queue"] == 0
    assert engine.json("DELETE", f"/v1/jobs/{queued['id']}")[0] == 409


# --- poisoned history ------------------------------------------------------------------


@pytest.mark.parametrize(
    "content",
    ["[]", '"x"', "42", "null", "[" * 50000 + "]" * 50000, '{"lines": 7}', "{not json"],
)
def test_an_unusable_history_file_does_not_stop_the_engine(tmp_path, content, start_engine):
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "history.json").write_text(content)
    engine = start_engine(f"file:{tmp_path / 'paper.txt'}", started=False)
    try:
        engine.start()  # READY=1, or an AssertionError after a minute
        assert engine.json("GET", "/v1/history") == (200, {"lines": []})
        assert engine.json("POST", "/v1/history", {"name": "ada", "text": "hello"})[0] == 201
    finally:
        engine.close()
    assert "ignoring" in engine.output()


def test_a_poisoned_history_file_from_before_never_breaks_a_reply(tmp_path, start_engine):
    (tmp_path / "state").mkdir()
    # What an older engine could write: a lone surrogate, a control
    # character, an entry that is not a line at all.
    (tmp_path / "state" / "history.json").write_text(
        '{"lines": [{"name": "ada", "text": "hi \\ud800 there"}, 5, {"name": "bob"},'
        ' {"name": "cy", "text": "bell\\u0007 and\\nnewline"}]}'
    )
    engine = start_engine(f"file:{tmp_path / 'paper.txt'}")
    try:
        assert engine.json("GET", "/v1/history")[1]["lines"] == [
            {"name": "ada", "text": "hi there"},
            {"name": "cy", "text": "bell and newline"},
        ]
        code, job = engine.json("POST", "/v1/generate", {"max_chars": 40, "seed": 3})
        assert code == 200 and job["status"] == "done", job
    finally:
        engine.close()


def test_history_lines_are_cleaned_on_input(tmp_path):
    from appliance.engine.history import PersistentHistory

    history = PersistentHistory(tmp_path / "history.json", 5, blocklist=Blocklist())
    history.add("dee", "tab\there\u2028and \udfff there")
    assert history.lines()[-1].text == "tab here and there"
    again = PersistentHistory(tmp_path / "history.json", 5, blocklist=Blocklist())
    assert again.lines() == history.lines()


def test_a_poisoned_chat_line_never_breaks_a_reply(engine, teletype):
    raw = b'{"name": "eve", "text": "hi \\ud800 there"}'
    code, _, body = engine.request("POST", "/v1/history", raw)
    assert code == 400 and b"surrogate" in body
    assert engine.json("POST", "/v1/history", {"name": "ada", "text": "x\x1by \x01z"})[0] == 201
    code, job = engine.json("POST", "/v1/generate", {"max_chars": 40, "seed": 3})
    assert code == 200 and job["status"] == "done"
    assert engine.json("GET", "/v1/history")[1]["lines"] == [{"name": "ada", "text": "x y z"}]


def test_history_that_cannot_be_saved_is_a_json_503_and_not_half_kept(engine):
    assert engine.json("POST", "/v1/history", {"name": "ada", "text": "first"})[0] == 201
    saved = engine.tmp / "state" / "history.json"
    saved.unlink()
    saved.mkdir()  # the rename onto it fails, as on a card gone read-only
    code, headers, body = engine.request("POST", "/v1/history", {"name": "bob", "text": "second"})
    assert code == 503 and headers["Content-Type"].startswith("application/json")
    assert "cannot save the chat history" in json.loads(body)["error"]
    assert engine.json("GET", "/v1/history")[1]["lines"] == [{"name": "ada", "text": "first"}]


# --- the blocklist on the printed form ---------------------------------------------------


@pytest.mark.parametrize("hidden", ["fu\x7fck", "fu\x1bck", "f\x01uck", "sh\x00it", "fu\u200bck"])
def test_control_characters_inside_a_word_do_not_hide_it_from_the_blocklist(hidden):
    from appliance.config import Config
    from appliance.engine.moderation import blocklist_from
    from appliance.teletype.codes import CHARACTER_SETS

    blocklist = blocklist_from(Config())
    printed = CHARACTER_SETS["ascii63"].fold(hidden)
    if blocklist.find(printed) is not None:  # what the paper would show is blocked...
        assert blocklist.find(hidden) is not None  # ...so the text is, too
        assert blocklist.find(f"ada: {hidden}") is not None
    else:
        pytest.fail(f"{printed!r} is not on the shipped blocklist: pick another word")


def test_a_hidden_blocked_word_is_refused_in_chat_and_in_print(engine):
    code, body = engine.json("POST", "/v1/history", {"name": "eve", "text": "you fu\x7fck"})
    assert code == 422, body
    code, body = engine.json("POST", "/v1/print", {"text": "well sh\x1bit", "source": "chat-line"})
    assert code == 422, body


# --- browsers and bad requests --------------------------------------------------------------


def test_a_web_page_cannot_make_the_teletype_print(engine, teletype):
    text = json.dumps({"text": "HELLO FROM A WEB PAGE"}).encode()
    # A form post or a "simple" fetch: no JSON content type.
    assert engine.request("POST", "/v1/print", text, {"Content-Type": "text/plain"})[0] == 415
    # fetch() from another origin, with the right content type.
    cross = {"Origin": "http://evil.example", "Content-Type": "application/json"}
    assert engine.request("POST", "/v1/print", text, cross)[0] == 403
    # <img src="http://127.0.0.1:PORT/asr33bot/x">: no Origin, but the browser says where from.
    image = {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Dest": "image"}
    assert engine.request("GET", "/asr33bot/HELLO", headers=image)[0] == 403
    # DNS rebinding: a name of the attacker's pointing at this machine.
    assert engine.request("GET", "/v1/status", headers={"Host": "evil.example"})[0] == 403
    # HEAD runs nothing.
    assert engine.request("HEAD", "/asr33bot/HELLO")[0] == 405
    # Our own clients and curl are not browsers.
    same = {"Origin": engine.base, "Content-Type": "application/json"}
    assert engine.request("GET", "/v1/status", headers=same)[0] == 200
    time.sleep(0.5)
    assert teletype.collect() == b""
    assert engine.json("GET", "/v1/status")[1]["jobs_finished"] == 0


# --- start-up ------------------------------------------------------------------------------


def _serve(tmp_path: Path, extra: str = "", model: str = "") -> subprocess.CompletedProcess:
    config = tmp_path / "teletype.toml"
    config.write_text(
        f'[teletype]\nport = "file:{tmp_path / "paper.txt"}"\n'
        f'[engine]\nstate_dir = "{tmp_path / "state"}"\n{extra}\n'
        f"[model]\n{model}\n"
    )
    return subprocess.run(
        [sys.executable, "-m", "appliance.cli", "serve", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "NOTIFY_SOCKET": ""},
    )


def test_a_port_in_use_is_one_line_and_exit_78(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        run = _serve(tmp_path, f'runtime_dir = "{tmp_path / "run"}"\ntcp_port = {port}')
    assert run.returncode == 78, run.stderr
    assert "Traceback" not in run.stderr
    assert f"cannot serve on 127.0.0.1:{port}" in run.stderr
    assert "engine.tcp_port" in run.stderr


def test_an_unwritable_runtime_directory_is_one_line_and_exit_78(tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the directory should be")
    run = _serve(tmp_path, f'runtime_dir = "{blocker / "run"}"\ntcp_port = {free_port()}')
    assert run.returncode == 78, run.stderr
    assert "Traceback" not in run.stderr
    assert "engine.runtime_dir" in run.stderr


def test_a_missing_model_is_exit_78_so_systemd_does_not_retry_it(tmp_path):
    run = _serve(tmp_path, f'runtime_dir = "{tmp_path / "run"}"', f'path = "{tmp_path}/none.gguf"')
    assert run.returncode == 78, run.stderr
    assert "Traceback" not in run.stderr
    assert "model file not found" in run.stderr


# --- teletype generate -----------------------------------------------------------------------


def test_generate_into_a_closed_pipe_exits_quietly(tmp_path):
    run = subprocess.run(
        f"{sys.executable} -m appliance.cli generate --seed 2 --max-chars 400 'The keyboard'"
        " | head -c 1",
        shell=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0
    assert run.stderr == "", run.stderr


def test_generate_never_prints_an_empty_reply(tmp_path):
    # The model ends right after "2. BASIC UNIT" with these seeds; the engine
    # tries the next seed, and so does `teletype generate` now.
    run = subprocess.run(
        [sys.executable, "-m", "appliance.cli", "generate", "--seed", "3", "2. BASIC UNIT"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip(), "an empty reply, and exit 0"


# --- the LAN setting and the unit ------------------------------------------------------------


def test_the_engine_unit_lets_in_the_lan_the_readme_promises_and_not_the_internet():
    import ipaddress
    import re

    root = Path(__file__).resolve().parent.parent
    unit = (root / "appliance" / "systemd" / "teletype-engine.service").read_text()
    allowed = " ".join(re.findall(r"^IPAddressAllow=(.*)$", unit, re.M)).split()
    assert re.search(r"^IPAddressDeny=any$", unit, re.M)
    keywords = {
        "localhost": ["127.0.0.0/8", "::1/128"],
        "link-local": ["169.254.0.0/16", "fe80::/10"],
    }
    networks = [ipaddress.ip_network(n) for a in allowed for n in keywords.get(a, [a])]

    def reaches(address: str) -> bool:
        return any(ipaddress.ip_address(address) in n for n in networks)

    # A phone or laptop on a home, museum or venue network...
    for lan in ("192.168.1.23", "10.0.0.5", "172.20.1.1", "169.254.7.7", "fd12::5", "fe80::1"):
        assert reaches(lan), lan
    # ...and never the internet, even with engine.tcp_host = "0.0.0.0".
    for internet in ("8.8.8.8", "1.1.1.1", "2001:4860:4860::8888"):
        assert not reaches(internet), internet
    readme = (root / "README.md").read_text()
    for network in allowed:
        assert network in readme, f"the README does not say the unit allows {network}"


# --- the queue's ETA -------------------------------------------------------------------------


def test_the_queue_eta_comes_from_the_lengths_of_replies_printed(tmp_path):
    import asyncio

    from appliance.testing.engine_inprocess import build_engine

    engine = build_engine(tmp_path, "[model]\nmax_chars = 100\n")

    async def run(seeds) -> list:
        jobs = [engine.new_job("", use_history=True, seed=s) for s in seeds]
        for job in jobs:
            await engine.submit(job)
        for job in jobs:
            await engine.wait(job)
        return jobs

    async def measure() -> tuple[float, list]:
        worker = asyncio.create_task(engine.run_worker())
        await run(range(1, 9))  # what the engine printed so far, measured
        await asyncio.sleep(0)
        # The next eight, as the queue sees them before any has started.
        queued = [engine.new_job("", use_history=True, seed=s) for s in range(21, 29)]
        estimate = sum(engine.expected_frames(job) for job in queued) / engine.cps
        done = await run(range(21, 29))
        worker.cancel()
        return estimate, done

    try:
        eta, done = asyncio.run(measure())
    finally:
        engine.printer.close()
        engine.generator.close()
    actual = sum(job.printed for job in done) / engine.cps
    assert all(job.status == "done" for job in done)
    # Replies run past max_chars to their sentence end: assuming max_chars
    # each was 25-40 % short. Measured, eight replies land within 15 %.
    assert abs(eta - actual) / actual < 0.15, (eta, actual)


def test_generate_goes_through_the_blocklist_like_every_reply(tmp_path):
    # Every word begins with a letter, so every word is blocked: before, the
    # terminal got the model's text anyway.
    words = tmp_path / "everything.txt"
    words.write_text("\n".join(f"{c}*" for c in "abcdefghijklmnopqrstuvwxyz") + "\n")
    config = tmp_path / "teletype.toml"
    config.write_text(f'[moderation]\nblocklist = "{words}"\ntries = 1\n')
    run = subprocess.run(
        [sys.executable, "-m", "appliance.cli", "generate", "--config", str(config),
         "--seed", "2", "The keyboard"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 1, run.stdout
    assert run.stdout.strip() == ""
    assert "blocklist" in run.stderr and "Traceback" not in run.stderr


# --- idle connections ------------------------------------------------------------------------

FLOOD = """
import resource, socket, sys, time
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))
held = []
for _ in range(int(sys.argv[2])):
    s = socket.socket()
    s.connect(("127.0.0.1", int(sys.argv[1])))
    held.append(s)
print("holding", len(held), flush=True)
time.sleep(600)
"""


def test_a_flood_of_idle_connections_leaves_the_local_clients_answered(tmp_path, start_engine):
    import resource

    import aiohttp

    # The engine gets systemd's default file limit (1,024, hard 524,288 on
    # Debian): 1,100 idle sockets used to take every descriptor it had.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    engine = start_engine(f"file:{tmp_path / 'paper.txt'}", started=False)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(1024, hard), hard))
    try:
        engine.start()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    flood = subprocess.Popen(
        [sys.executable, "-c", FLOOD, str(engine.http_port), "1100"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert flood.stdout.readline().startswith("holding 1100")
        time.sleep(1.0)

        async def healthz() -> int:
            connector = aiohttp.UnixConnector(path=str(tmp_path / "run" / "engine.sock"))
            async with (
                aiohttp.ClientSession(connector=connector) as session,
                session.get("http://engine/healthz", timeout=aiohttp.ClientTimeout(10)) as r,
            ):
                return r.status

        import asyncio

        assert asyncio.run(healthz()) == 200
    finally:
        flood.kill()
        flood.wait()
    time.sleep(0.5)
    assert engine.json("GET", "/healthz")[0] == 200
    engine.close()
    log = engine.output()
    assert "Traceback" not in log and "out of system resource" not in log
    assert 1 <= log.count("refused") <= 2, log[-2000:]


def test_a_prompt_of_ones_own_keeps_its_lines_and_loses_only_what_cannot_print():
    from appliance.config import Config
    from appliance.engine.replies import Replies

    replies = Replies(Config(), generator=None)
    assert replies.prompt(None, "1. THE KEYBOARD\r\n2. THE\x1b PRINTER\ud800") == (
        "1. THE KEYBOARD\n2. THE PRINTER"
    )
    assert replies.prompt(None, " \x00\n") == Config().history.opening
