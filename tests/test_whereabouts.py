"""The status block: where the appliance is, on paper, at the first start and on a change.

The engine here is the real one (the embedded model, a printer); only the
machine's edge is ours to set in the in-process tests: its hostname and
its list of addresses. The process test runs `teletype serve` as systemd
does, on a pty, with the machine's own addresses.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path

from appliance.config import parse_config
from appliance.engine.whereabouts import (
    Whereabouts,
    interface_addresses,
    keep_announcing,
    network_manager_done,
    reachable,
    status_block,
)
from appliance.testing.wire import PtyReader, check_ascii

TOKEN = "a-very-secret-api-token-1234"


def config_for(tmp_path: Path, extra: str = ""):
    text = (
        f'[teletype]\nport = "file:{tmp_path / "paper.txt"}"\n'
        f'[engine]\ntcp_host = "0.0.0.0"\ntoken = "{TOKEN}"\n{extra}'
    )
    return parse_config(text.encode(), "test.toml")


# --- the block -----------------------------------------------------------------------


def test_a_long_chat_state_is_two_printed_lines_at_most(tmp_path):
    # 300 characters that transliterate to 28 letters each became a 156-line block.
    from appliance.teletype.discipline import LineDiscipline
    from appliance.teletype.profiles import get_profile

    config = config_for(tmp_path)
    where = Whereabouts("teletype", ("192.168.1.23",))
    lines = {}
    for state in (None, "\ufdfd" * 300):
        block = status_block(where, config, "tiny.q8_0.gguf", state, local_name=False)
        layout = LineDiscipline(get_profile(config.teletype.profile))
        frames = layout.feed(block) + layout.flush() + layout.end_line()
        lines[state] = sum(frame.line_end for frame in frames)
    assert lines["\ufdfd" * 300] <= lines[None] + 2, lines


def test_the_block_says_name_addresses_model_twitch_and_api_and_nothing_secret(tmp_path):
    config = config_for(tmp_path, '[chat]\nchannel = "streamer"\nclient_id = "abcdefghij"\n')
    where = Whereabouts("teletype", ("192.168.1.23", "2001:db8::23"))
    waiting = (
        "waiting for sign-in: open https://www.twitch.tv/activate and enter the code ABCD-EFGH"
    )
    block = status_block(where, config, "/usr/share/teletype-gpt2/models/tiny.q8_0.gguf",
                         waiting, local_name=True)  # fmt: skip
    assert block.splitlines() == [
        "TELETYPE GPT-2 STATUS",
        "NAME: TELETYPE (TELETYPE.LOCAL)",
        "ADDRESS: 192.168.1.23",
        "ADDRESS: 2001:DB8::23",
        "MODEL: TINY.Q8_0.GGUF",
        "TWITCH: WAITING FOR SIGN-IN: OPEN HTTPS://WWW.TWITCH.TV/ACTIVATE AND ENTER THE CODE "
        "ABCD-EFGH",
        "API: HTTP://TELETYPE.LOCAL:5599/ WITH THE TOKEN IN TELETYPE.TOML",
    ]
    assert TOKEN.upper() not in block and "ABCDEFGHIJ" not in block  # no token, no client id


def test_the_block_without_network_twitch_or_lan_api_says_so(tmp_path):
    config = parse_config(b"", "test.toml")
    problem = "/boot/firmware/teletype.toml: network.country is 'UK': the code ... is GB"
    block = status_block(Whereabouts("teletype", (), problem), config, "m.gguf", None, False)
    lines = block.splitlines()
    assert lines[1] == "NAME: TELETYPE"  # no avahi, no .local
    assert lines[2].startswith("ADDRESS: NONE YET")
    assert lines[3] == f"NETWORK SETTINGS NOT APPLIED: {problem.upper()}"
    assert "TWITCH: NOT SET UP ([CHAT] IN TELETYPE.TOML)" in lines
    assert lines[-1] == "API: ON THIS PI ONLY, 127.0.0.1:5599 (ENGINE.TCP_HOST FOR THE NETWORK)"


def test_only_addresses_others_can_reach_are_shown():
    found = [
        *[("lo", "127.0.0.1"), ("lo", "::1"), ("wlan0", "192.168.1.23")],
        *[("wlan0", "fe80::1%wlan0"), ("wlan0", "2001:db8::23"), ("eth0", "10.0.0.5")],
    ]
    assert reachable(found) == ["10.0.0.5", "192.168.1.23", "2001:db8::23"]


def test_the_machines_addresses_come_from_the_kernel():
    found = interface_addresses()
    assert ("lo", "127.0.0.1") in found  # every Linux machine has its loopback


def test_what_counts_as_a_change():
    base = Whereabouts("teletype", ("192.168.1.23", "2001:db8:0:1::23"))
    same = base.fingerprint("boot-1")
    # A privacy address that rotates within its /64 is the same network.
    assert Whereabouts("teletype", ("192.168.1.23", "2001:db8:0:1::99")).fingerprint("b") == same
    assert Whereabouts("teletype", ("192.168.1.24", "2001:db8:0:1::23")).fingerprint("b") != same
    # A new IPv6 prefix beside the same IPv4 address is not (providers rotate them daily)...
    assert Whereabouts("teletype", ("192.168.1.23", "2001:db8:0:2::23")).fingerprint("b") == same
    # ...but on a network without IPv4 it is.
    only6 = Whereabouts("teletype", ("2001:db8:0:1::23",)).fingerprint("b")
    assert Whereabouts("teletype", ("2001:db8:0:2::23",)).fingerprint("b") != only6
    assert Whereabouts("asr33", base.addresses).fingerprint("b") != same
    # A problem is said once a boot, not once ever.
    wrong = Whereabouts("teletype", base.addresses, "wrong")
    assert wrong.fingerprint("boot-1") != wrong.fingerprint("boot-2")


# --- the engine prints it ------------------------------------------------------------------


class Machine:
    """The edge of the machine: its name and its addresses, as a test sets them."""

    def __init__(self, hostname: str, addresses: list[str]):
        self.hostname = hostname
        self.addresses = addresses
        self.network_started = False  # NetworkManager's startup (nm-online -s), as set

    async def network_done(self) -> bool:
        return self.network_started

    def name(self) -> str:
        return self.hostname

    def interfaces(self) -> list[tuple[str, str]]:
        return [("lo", "127.0.0.1"), *(("wlan0", a) for a in self.addresses)]


def run_engine(tmp_path: Path, machine: Machine, seconds: float, result: Path | None = None,
               chat_state: str | None = None, config_extra: str = "",
               chat_state_after_block: str | None = None,
               root_mode: Path | None = None) -> str:  # fmt: skip
    """The real engine, announcing with short timings for `seconds`; what it printed."""
    from appliance.engine.engine import Engine
    from appliance.engine.generator import load_generator
    from appliance.teletype import build_printer

    config = config_for(tmp_path, config_extra)
    paper = tmp_path / "paper.txt"
    paper.unlink(missing_ok=True)
    generator = load_generator(config.model)
    printer = build_printer(config.teletype)
    printer.port.open()
    engine = Engine(config, generator, printer, tmp_path / "state")
    engine.chat_state = chat_state

    async def run() -> None:
        engine.loop = asyncio.get_running_loop()
        worker = asyncio.create_task(engine.run_worker())
        announcer = asyncio.create_task(
            keep_announcing(engine, tmp_path / "state", addresses=machine.interfaces,
                            hostname=machine.name, network_done=machine.network_done,
                            result_path=result or tmp_path / "none.json",
                            root_mode_path=root_mode or tmp_path / "no-root-mode",
                            every=0.05, settle=0.3, wait_for_network=1.0, wait_for_chat=0.5)
        )  # fmt: skip
        if chat_state_after_block is not None:
            # The bridge reports only once the block is on paper (it was slower).
            while "API: " not in (paper.read_text() if paper.exists() else ""):
                await asyncio.sleep(0.05)
            engine.chat_state = chat_state_after_block
        await asyncio.sleep(seconds)
        while engine.current or engine.waiting:
            await asyncio.sleep(0.1)
        announcer.cancel()
        worker.cancel()
        await asyncio.gather(announcer, worker, return_exceptions=True)

    try:
        asyncio.run(run())
    finally:
        printer.close()
        generator.close()
    return paper.read_bytes().decode("ascii", "replace") if paper.exists() else ""


def blocks(paper: str) -> int:
    return paper.count("TELETYPE GPT-2 STATUS")


def test_first_start_prints_the_block_and_a_restart_on_the_same_network_does_not(tmp_path):
    machine = Machine("teletype", ["192.168.1.23"])
    first = run_engine(tmp_path, machine, 1.5)
    assert blocks(first) == 1
    assert "ADDRESS: 192.168.1.23" in first
    assert "NAME: TELETYPE" in first
    again = run_engine(tmp_path, machine, 1.5)
    assert blocks(again) == 0


def test_a_new_address_or_name_is_printed_once_it_has_settled(tmp_path):
    machine = Machine("teletype", ["192.168.1.23"])
    run_engine(tmp_path, machine, 1.0)
    machine.addresses = ["10.0.0.7"]
    moved = run_engine(tmp_path, machine, 1.5)
    assert blocks(moved) == 1 and "ADDRESS: 10.0.0.7" in moved
    machine.hostname = "asr33"
    renamed = run_engine(tmp_path, machine, 1.5)
    assert blocks(renamed) == 1 and "NAME: ASR33" in renamed


def test_no_network_waits_for_an_address_before_saying_none(tmp_path):
    machine = Machine("teletype", [])
    # Within wait_for_network (1 s) nothing; after it, the block says so.
    early = run_engine(tmp_path, machine, 0.6)
    assert blocks(early) == 0
    late = run_engine(tmp_path, machine, 2.0)
    assert blocks(late) == 1 and "ADDRESS: NONE YET" in late


def test_no_network_is_said_once_networkmanager_has_brought_up_all_it_would(tmp_path):
    # NetworkManager's startup is over (every connection it would bring up at boot
    # tried, as network-online.target waits for): no address is coming, so the block
    # says so without waiting out the minute. A Pi with no network heard in seconds.
    machine = Machine("teletype", [])
    machine.network_started = True
    early = run_engine(tmp_path, machine, 0.6)
    assert blocks(early) == 1 and "ADDRESS: NONE YET" in early


def _nm_online(folder: Path, body: str) -> Path:
    """nm-online at the edge of the machine: a script that answers as it would, and
    notes what it was asked."""
    folder.mkdir(exist_ok=True)
    path = folder / "nm-online"
    path.write_text(f'#!/bin/sh\necho "$@" > {folder / "asked"}\n{body}\n')
    path.chmod(0o755)
    return path


def test_networkmanagers_startup_is_read_from_nm_online(tmp_path):
    done = _nm_online(tmp_path / "done", "exit 0")
    assert asyncio.run(network_manager_done(done)) is True
    assert (tmp_path / "done" / "asked").read_text().split() == ["-s", "-q", "-t", "0"]
    # Still starting; not running (nm-online says 1 then too); absent; not answering:
    # each means the full minute's wait.
    assert asyncio.run(network_manager_done(_nm_online(tmp_path / "pending", "exit 1"))) is False
    assert asyncio.run(network_manager_done(tmp_path / "absent")) is False
    killed = _nm_online(tmp_path / "killed", "kill -SYS $$")
    assert asyncio.run(network_manager_done(killed)) is False
    hung = _nm_online(tmp_path / "hung", "exec sleep 30")
    started = time.monotonic()
    assert asyncio.run(network_manager_done(hung, timeout=0.5)) is False
    assert time.monotonic() - started < 30


def test_the_bridges_state_is_in_the_block(tmp_path):
    paper = run_engine(tmp_path, Machine("teletype", ["192.168.1.23"]), 1.5,
                       chat_state="subscribed to #streamer as teletypebot",
                       config_extra='[chat]\nchannel = "streamer"\n')  # fmt: skip
    assert "TWITCH: SUBSCRIBED TO #STREAMER AS TELETYPEBOT" in paper


def test_a_bridge_slower_than_the_block_has_its_state_printed_when_it_comes(tmp_path):
    paper = run_engine(tmp_path, Machine("teletype", ["192.168.1.23"]), 1.0,
                       chat_state_after_block="waiting for sign-in: code ABCD-EFGH",
                       config_extra='[chat]\nchannel = "streamer"\n')  # fmt: skip
    block, _, after = paper.partition("API: ")
    assert "TWITCH: #STREAMER, THE BRIDGE IS STARTING" in block
    assert "TWITCH: WAITING FOR SIGN-IN: CODE ABCD-EFGH" in after
    assert blocks(paper) == 1


def test_a_bridge_that_reported_in_time_is_not_printed_twice(tmp_path):
    paper = run_engine(tmp_path, Machine("teletype", ["192.168.1.23"]), 1.0,
                       chat_state="waiting for sign-in: code ABCD-EFGH",
                       config_extra='[chat]\nchannel = "streamer"\n')  # fmt: skip
    assert paper.count("TWITCH:") == 1


def test_the_block_says_how_the_root_file_system_runs(tmp_path):
    mode = tmp_path / "teletype-root"
    mode.write_text("read-only\n")
    paper = run_engine(tmp_path, Machine("teletype", ["192.168.1.23"]), 1.5, root_mode=mode)
    assert "ROOT: READ-ONLY" in paper
    # Switched at the next boot: the block is printed again, with the new mode.
    mode.write_text("writable (read_only_root = false in teletype.toml)\n")
    again = run_engine(tmp_path, Machine("teletype", ["192.168.1.23"]), 1.5, root_mode=mode)
    assert blocks(again) == 1 and "ROOT: WRITABLE (READ_ONLY_ROOT = FALSE" in again


def test_network_settings_not_applied_are_one_line_on_paper_once_a_boot(tmp_path):
    result = tmp_path / "result.json"
    problem = "/boot/firmware/teletype.toml: network.password must be 8 to 63 characters long"
    result.write_text(json.dumps({"problem": problem, "changed": [], "wifi": "Lab"}))
    machine = Machine("teletype", ["192.168.1.23"])
    paper = run_engine(tmp_path, machine, 1.5, result=result)
    assert paper.count("NOT APPLIED") == 1
    assert "NETWORK.PASSWORD MUST BE 8 TO 63" in " ".join(paper.split())  # word-wrapped at 72
    assert blocks(run_engine(tmp_path, machine, 1.5, result=result)) == 0  # same boot


# --- `teletype serve`, as systemd runs it --------------------------------------------------


def test_the_engine_process_prints_the_block_unless_turned_off(tmp_path, teletype, start_engine):
    # Two engines, the one turned off started first: once the other has printed its
    # block (settled: 15 s; a minute with only loopback), the first had as long.
    quiet_paper = PtyReader()
    try:
        off = start_engine(quiet_paper.name, tmp=_mkdir(tmp_path / "off"),
                           engine_extra="status_on_paper = false")  # fmt: skip
        on = start_engine(tmp=_mkdir(tmp_path / "on"), engine_extra="status_on_paper = true")
        deadline = time.monotonic() + 120
        while not on.json("GET", "/v1/status")[1]["jobs_finished"]:
            assert time.monotonic() < deadline, "no status block within two minutes"
            time.sleep(0.5)
        paper = teletype.collect(quiet=1.0)
        status = on.json("GET", "/v1/status")[1]
        quiet = check_ascii(quiet_paper.collect(quiet=1.0))
        assert off.json("GET", "/v1/status")[1]["jobs_finished"] == 0
    finally:
        quiet_paper.close()
    report = check_ascii(paper)
    assert report.problems == [] and quiet.problems == []
    assert "TELETYPE GPT-2 STATUS" in report.text
    assert "TELETYPE GPT-2 STATUS" not in quiet.text
    assert re.search(r"NAME: \S+", report.text)
    assert f"API: ON THIS PI ONLY, 127.0.0.1:{on.http_port}" in report.text
    assert status["jobs_finished"] == 1


def _mkdir(path: Path) -> Path:
    path.mkdir()
    return path


def test_the_chat_state_is_checked_like_anything_that_reaches_paper(tmp_path, start_engine):
    blocklist = tmp_path / "blocklist.txt"
    blocklist.write_text("frobnicate\n")
    extra = f'[moderation]\nblocklist = "{blocklist}"\n'
    engine = start_engine(f"file:{tmp_path / 'p.txt'}", engine_extra=extra)
    try:
        assert engine.json("GET", "/v1/status")[1]["chat"] == {"configured": False, "state": None}
        said = {"state": "subscribed to  #streamer\tas bot"}
        assert engine.request("PUT", "/v1/chat", said)[0] == 204
        chat = engine.json("GET", "/v1/status")[1]["chat"]
        assert chat == {"configured": True, "state": "subscribed to #streamer as bot"}
        assert engine.request("PUT", "/v1/chat", {"state": "we frobnicate"})[0] == 422
        assert engine.request("PUT", "/v1/chat", {"state": " \t"})[0] == 400
        assert engine.request("PUT", "/v1/chat", {"state": "x", "code": "1"})[0] == 400
        assert engine.json("GET", "/v1/status")[1]["chat"] == chat
    finally:
        engine.close()
