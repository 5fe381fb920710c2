"""The Twitch chat bridge: a real twitchio bot, a fake Twitch on loopback, the real engine.

The engine is a `teletype serve` process on the embedded model printing to
a pty (or, where only text matters, a transcript file); the bot is
appliance.chat.service's, run in this process against appliance.testing.fake_twitch, which
answers OAuth, Helix and EventSub the way Twitch does.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import stat
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from appliance.chat.bridge import OFFLINE, fit_for_chat
from appliance.chat.login import login
from appliance.chat.outbox import Outbox
from appliance.chat.supervisor import run_bot
from appliance.chat.tokens import TokenError, TwitchTokens, load_tokens, save_tokens, token_path
from appliance.config import Config, parse_config
from appliance.testing.engine_process import EngineProcess
from appliance.testing.fake_twitch import FakeTwitch, FakeUser, patch_twitchio
from appliance.testing.wire import PtyReader, check_ascii
from tests.conftest import FAST

CLIENT_ID = "fake-client-id"
MOD_BADGE = [{"set_id": "moderator", "id": "1", "info": ""}]


@dataclass
class Stage:
    fake: FakeTwitch
    engine: EngineProcess
    config: Config
    users: dict[str, FakeUser]
    teletype: PtyReader | None

    async def say(self, who: str, text: str, moderator: bool = False) -> None:
        await self.fake.push_chat(
            text,
            broadcaster=self.users["streamer"],
            chatter=self.users[who],
            badges=MOD_BADGE if moderator else [],
        )

    def posts(self) -> list[str]:
        return [m["message"] for m in self.fake.chat_messages]

    async def posted(self, pattern: str, timeout: float = 60.0) -> str:
        """The first post matching the pattern, once there is one."""
        found = re.compile(pattern)
        await self.fake.wait_until(lambda: any(found.search(p) for p in self.posts()), timeout)
        return next(p for p in self.posts() if found.search(p))

    async def history(self) -> list[dict]:
        return (await asyncio.to_thread(self.engine.json, "GET", "/v1/history"))[1]["lines"]

    async def engine_call(self, method: str, path: str, body=None):
        return await asyncio.to_thread(self.engine.json, method, path, body)

    async def until(self, check, what: str, timeout: float = 30.0) -> None:
        """Wait for `await check()` to be true (a state of the engine or the paper)."""
        deadline = time.monotonic() + timeout
        while not await check():
            assert time.monotonic() < deadline, f"never: {what}"
            await asyncio.sleep(0.05)


def _config(tmp: Path, chat: str = "") -> Config:
    if "global_cooldown" not in chat:
        chat += "\nglobal_cooldown = 0\n"  # most tests have several viewers asking at once
    text = f"""
[chat]
channel = "streamer"
bot = "teletypebot"
client_id = "{CLIENT_ID}"
{chat}
[engine]
runtime_dir = "{tmp / "run"}"
state_dir = "{tmp / "bot-state"}"
"""
    return parse_config(text.encode(), str(tmp / "chat.toml"))


def _users(fake: FakeTwitch) -> dict[str, FakeUser]:
    return {
        "streamer": fake.add_user("100", "streamer", "Streamer"),
        "teletypebot": fake.add_user("200", "teletypebot", "TeletypeBot"),
        "alice": fake.add_user("301", "alice", "Alice"),
        "bob": fake.add_user("302", "bob", "Bob"),
        "carol": fake.add_user("303", "carol", "Carol"),
    }


def _sign_in(fake: FakeTwitch, config: Config) -> TwitchTokens:
    access, refresh = fake.issue_user_token("200")
    tokens = TwitchTokens("200", "teletypebot", access, refresh, CLIENT_ID)
    save_tokens(token_path(Path(config.engine.state_dir)), tokens)
    return tokens


@contextlib.asynccontextmanager
async def stage(
    tmp: Path,
    engine: EngineProcess,
    teletype: PtyReader | None = None,
    chat: str = "",
) -> AsyncIterator[Stage]:
    """A fake Twitch, the bot signed in and running, subscribed to the channel's chat."""
    config = _config(tmp, chat)
    async with FakeTwitch(client_id=CLIENT_ID, client_secret=None) as fake:
        users = _users(fake)
        _sign_in(fake, config)
        with patch_twitchio(fake):
            bot = asyncio.create_task(run_bot(config))
            await fake.wait_until(
                lambda: (
                    any(s["status"] == "enabled" for s in fake.subscriptions.values()) or bot.done()
                ),
                timeout=20,
            )
            if bot.done():
                bot.result()  # the start-up error
            try:
                yield Stage(fake, engine, config, users, teletype)
            finally:
                bot.cancel()
                await asyncio.gather(bot, return_exceptions=True)


# --- chat lines, !gpt2 ----------------------------------------------------------------


async def _last_text_is(s: Stage, text: str) -> bool:
    lines = await s.history()
    return bool(lines) and lines[-1]["text"] == text


def test_chat_lines_become_the_history_of_five_and_are_printed(tmp_path, engine, teletype):
    hostile = "hi \x1b[31mthere\x07 ☃ “quotes” 😀"

    async def scenario():
        async with stage(tmp_path, engine, teletype) as s:
            await s.say("bob", hostile)
            for n in range(1, 7):
                await s.say("alice", f"line {n}")
            await s.say("carol", "!help")  # a command: not history
            await s.posted("Teletype")
            # Every line has reached the engine (on a busy machine the last may
            # come after the answer to !help)...
            await s.until(
                lambda: _last_text_is(s, "line 6"), "the history holds the last chat line"
            )
            # ...and the bot's own post comes back as chat (Twitch echoes it): it
            # must not reach the history (all names are checked below).
            await asyncio.sleep(1.0)
            return await s.history()

    lines = asyncio.run(scenario())
    assert [ln["text"] for ln in lines] == [f"line {n}" for n in range(2, 7)]
    assert all(ln["name"] == "Alice" for ln in lines)
    paper = check_ascii(teletype.collect(quiet=1.0))
    assert paper.problems == []  # nothing the Teletype cannot print, hostile or not
    assert "BOB: HI" in paper.text and "THERE" in paper.text
    assert "ALICE: LINE 1" in paper.text


def test_gpt2_prints_a_reply_and_posts_it(tmp_path, engine, teletype):
    async def scenario():
        async with stage(tmp_path, engine, teletype) as s:
            await s.say("bob", "how does the clutch work")
            await s.say("alice", "!gpt2 The clutch")
            reply = await s.posted(r"^@Alice ")
            await asyncio.sleep(0.5)
            return reply, s.posts(), (await s.engine_call("GET", "/v1/status"))[1]

    reply, posts, status = asyncio.run(scenario())
    text = reply.removeprefix("@Alice ")
    assert len(reply) <= 500 and text
    paper = check_ascii(teletype.collect(quiet=1.0))
    assert paper.problems == []
    words = re.findall(r"[A-Z0-9]+", text.upper())
    assert " ".join(words) in " ".join(re.findall(r"[A-Z0-9]+", paper.text))
    assert posts.count(reply) == 1  # posted once, not again as a "result from elsewhere"
    assert status["jobs_finished"] >= 1


def test_cooldowns_answer_once_per_viewer(tmp_path, start_engine):
    engine = start_engine(f"file:{tmp_path / 'paper.txt'}")
    try:

        async def scenario():
            chat = "user_cooldown = 120\n"
            async with stage(tmp_path, engine, chat=chat) as s:
                await s.say("alice", "!gpt2")
                await s.posted(r"^@Alice (?!the Teletype needs)")
                for _ in range(3):
                    await s.say("alice", "!gpt2 again")
                rest = await s.posted(r"^@Alice the Teletype needs a rest: try again in \d+ s")
                await s.say("bob", "!gpt2")  # another viewer is not held back
                await s.posted(r"^@Bob (?!the Teletype needs)")
                await asyncio.sleep(1.0)
                return rest, s.posts()

        rest, posts = asyncio.run(scenario())
    finally:
        engine.close()
    assert 100 <= int(re.search(r"(\d+) s", rest).group(1)) <= 120
    assert sum("needs a rest" in p for p in posts) == 1


def test_a_burst_of_gpt2_queues_one_reply(tmp_path, start_engine):
    """Each chat message is its own task: the cooldown must hold before the engine answers."""
    engine = start_engine(f"file:{tmp_path / 'paper.txt'}")
    try:

        async def scenario():
            async with stage(tmp_path, engine, chat="user_cooldown = 120\n") as s:
                for _ in range(4):
                    await s.say("alice", "!gpt2")
                await s.posted(r"^@Alice (?!the Teletype needs)")
                await asyncio.sleep(1.0)
                status = (await s.engine_call("GET", "/v1/status"))[1]
                return s.posts(), status

        posts, status = asyncio.run(scenario())
    finally:
        engine.close()
    replies = [p for p in posts if p.startswith("@Alice") and "needs a rest" not in p]
    assert len(replies) == 1, posts
    assert status["jobs_finished"] == 1
    assert sum("needs a rest" in p for p in posts) == 1


def test_global_cooldown_holds_everyone_back(tmp_path, start_engine):
    engine = start_engine(f"file:{tmp_path / 'paper.txt'}")
    try:

        async def scenario():
            async with stage(tmp_path, engine, chat="global_cooldown = 60\n") as s:
                await s.say("alice", "!gpt2")
                await s.posted(r"^@Alice ")
                await s.say("bob", "!gpt2")
                return await s.posted(r"^@Bob ")

        assert "needs a rest" in asyncio.run(scenario())
    finally:
        engine.close()


@pytest.mark.engine(speed=1)  # the ETA is the Teletype's: 10 characters a second
def test_busy_printer_answers_with_the_place_in_the_queue_and_an_eta(tmp_path, engine, teletype):
    long_text = "THE TYPING UNIT PRINTS ONE CHARACTER AT A TIME. " * 4  # about 20 s

    async def scenario():
        async with stage(tmp_path, engine, teletype) as s:
            status, job = await s.engine_call("POST", "/v1/print", {"text": long_text})
            assert status == 202
            await asyncio.sleep(1.0)
            await s.say("alice", "!gpt2")
            eta = await s.posted(r"^@Alice you are number")
            await s.say("bob", "!stop")  # not a moderator
            refused = await s.posted(r"^@Bob only moderators")
            still = (await s.engine_call("GET", "/v1/status"))[1]["printing"]
            await s.say("carol", "!stop", moderator=True)
            stopped = await s.engine_call("GET", f"/v1/jobs/{job['id']}?wait=30")
            return eta, refused, still, stopped[1]

    eta, refused, still, stopped = asyncio.run(scenario())
    match = re.search(r"you are number (\d+) in the queue, about (\d+) s", eta)
    assert match, eta
    assert match.group(1) == "1"
    # 192 characters (with CR, LF and fills 207 frames) at 10 a second, a
    # second or two of it already printed.
    assert 10 <= int(match.group(2)) <= 22
    assert "stop the print" in refused
    assert still is not None and still["source"] == "api"  # bob's !stop did nothing
    assert stopped["status"] == "cancelled"


@pytest.mark.engine(speed=1)  # the reply must wait behind a print
def test_a_gpt2_waiting_when_the_engine_restarts_is_still_answered(tmp_path, engine, teletype):
    long_text = "THE TYPING UNIT PRINTS ONE CHARACTER AT A TIME. " * 4

    async def scenario():
        async with stage(tmp_path, engine, teletype) as s:
            assert (await s.engine_call("POST", "/v1/print", {"text": long_text}))[0] == 202

            async def printing() -> bool:
                return (await s.engine_call("GET", "/v1/status"))[1]["printing"] is not None

            await s.until(printing, "the print started")
            await s.say("alice", "!gpt2")
            await s.posted(r"^@Alice you are number 1")
            # systemctl restart teletype-engine: the queued reply is in the journal.
            assert await asyncio.to_thread(engine.terminate) == 0
            engine.set_speed(FAST)  # the journal's print again, then the reply: no need to wait
            await asyncio.to_thread(engine.start)
            return await s.posted(r"^@Alice (?!you are)")

    reply = asyncio.run(scenario())
    assert "restarted" not in reply and len(reply) > len("@Alice ") + 10, reply


def test_full_queue_is_said_in_chat(tmp_path, teletype, start_engine):
    # At the Teletype's pace: the prints must still be there when the !gpt2 comes.
    engine = start_engine(str(teletype.link), engine_extra="queue_size = 2", speed=1)
    try:

        async def scenario():
            async with stage(tmp_path, engine, teletype) as s:

                async def printing() -> bool:
                    return (await s.engine_call("GET", "/v1/status"))[1]["printing"] is not None

                for n in range(3):  # one printing, two waiting: full
                    status, _ = await s.engine_call("POST", "/v1/print", {"text": "WAIT " * 30})
                    assert status == 202
                    if n == 0:  # the worker takes it (after at most one idle chunk)
                        await s.until(printing, "the first print started")
                await s.say("alice", "!gpt2")
                return await s.posted(r"^@Alice ")

        assert "the queue is full" in asyncio.run(scenario())
    finally:
        engine.close()


def test_clear_is_for_moderators_and_forgets_the_history(tmp_path, start_engine):
    engine = start_engine(f"file:{tmp_path / 'paper.txt'}")
    try:

        async def scenario():
            async with stage(tmp_path, engine) as s:
                await s.say("alice", "remember me")

                async def kept() -> bool:
                    return bool(await s.history())

                await s.until(kept, "the line reached the history")
                await s.say("bob", "!clear")
                await s.posted(r"^@Bob only moderators can clear")
                kept = await s.history()
                await s.say("carol", "!clear", moderator=True)
                await s.posted(r"^@Carol the Teletype has forgotten")
                return kept, await s.history()

        kept, cleared = asyncio.run(scenario())
    finally:
        engine.close()
    assert [ln["text"] for ln in kept] == ["remember me"]
    assert cleared == []


def test_long_replies_are_cut_for_chat_at_a_sentence_end(tmp_path, start_engine):
    engine = start_engine(f"file:{tmp_path / 'paper.txt'}", max_chars=400)
    try:

        async def scenario():
            async with stage(tmp_path, engine, chat="reply_chars = 120\n") as s:
                await s.say("alice", "!gpt2 The keyboard")
                return await s.posted(r"^@Alice ")

        reply = asyncio.run(scenario())
    finally:
        engine.close()
    paper = (tmp_path / "paper.txt").read_text()
    assert len(reply) <= 120
    assert len(" ".join(paper.split())) > 120  # the paper got the whole text
    assert reply.endswith((".", "!", "?", "..."))


def test_blocklist_keeps_chat_lines_and_replies_off_paper_and_chat(tmp_path, start_engine):
    blocklist = tmp_path / "blocklist.txt"
    blocklist.write_text("".join(f"{c}*\n" for c in "abcdefghijklmnopqrstuvwxyz"))
    extra = f'[moderation]\nblocklist = "{blocklist}"\ntries = 1\n'
    engine = start_engine(f"file:{tmp_path / 'paper.txt'}", engine_extra=extra)
    try:

        async def scenario():
            async with stage(tmp_path, engine) as s:
                await s.say("bob", "every word here is blocked")
                await s.say("alice", "!gpt2")
                reply = await s.posted(r"^@Alice ")
                return reply, await s.history()

        reply, history = asyncio.run(scenario())
    finally:
        engine.close()
    assert "nothing it could print" in reply
    assert history == []
    assert not re.search(r"[A-Z]", (tmp_path / "paper.txt").read_text())


def test_results_from_the_button_are_posted(tmp_path, start_engine):
    engine = start_engine(f"file:{tmp_path / 'paper.txt'}")
    try:

        async def scenario():
            async with stage(tmp_path, engine) as s:
                await asyncio.sleep(1.0)  # the bridge follows the engine's events
                # A sign-in code printed by twitch-login is for the paper only.
                notice = {"text": "SIGN IN WITH CODE ABCD1234", "source": "system"}
                assert (await s.engine_call("POST", "/v1/print", notice))[0] == 202
                status, job = await s.engine_call(
                    "POST", "/v1/generate", {"source": "button", "max_chars": 30}
                )
                assert status == 200
                await s.posted(re.escape(" ".join(job["text"].split())))
                return s.posts()

        posts = asyncio.run(scenario())
    finally:
        engine.close()
    assert not any("ABCD1234" in p for p in posts)


def test_bell_rings_and_is_rate_limited(tmp_path, engine, teletype):
    async def scenario():
        async with stage(tmp_path, engine, teletype) as s:
            await s.say("alice", "!bell")

            async def rang() -> bool:
                return bool({0x87, 0x07} & set(teletype.data))

            await s.until(rang, "the bell rang")
            await s.say("bob", "!bell")
            return await s.posted(r"^@Bob the bell rang a moment ago")

    asyncio.run(scenario())
    data = teletype.collect()
    assert data.count(bytes([0x87])) + data.count(bytes([0x07])) == 1


# --- Twitch and the engine coming and going -----------------------------------------


def test_reconnects_and_resubscribes_when_twitch_drops_the_socket(tmp_path, start_engine):
    engine = start_engine(f"file:{tmp_path / 'paper.txt'}")
    try:

        async def scenario():
            async with stage(tmp_path, engine) as s:
                await s.fake.close_sessions()
                await s.fake.wait_until(
                    lambda: len(s.fake.subscription_posts) >= 2 and s.fake.open_sessions(),
                    timeout=30,
                )
                await s.fake.wait_until(
                    lambda: any(v["status"] == "enabled" for v in s.fake.subscriptions.values())
                )
                await s.say("alice", "still here")
                for _ in range(100):
                    if await s.history():
                        break
                    await asyncio.sleep(0.1)
                return len(s.fake.sessions), await s.history()

        sessions, history = asyncio.run(scenario())
    finally:
        engine.close()
    assert sessions >= 2
    assert [ln["text"] for ln in history] == ["still here"]


def test_engine_down_is_said_once_and_lines_wait_for_it(tmp_path, start_engine):
    engine = start_engine(f"file:{tmp_path / 'paper.txt'}")
    try:

        async def scenario():
            nonlocal engine
            async with stage(tmp_path, engine) as s:
                await asyncio.sleep(0.5)
                await asyncio.to_thread(engine.close)
                await s.say("alice", "hello while it sleeps")
                await s.say("alice", "!gpt2")
                await s.posted(re.escape(OFFLINE))
                await s.say("bob", "!gpt2")
                await asyncio.sleep(1.0)
                said = s.posts().count(OFFLINE)
                engine = await asyncio.to_thread(start_engine, f"file:{tmp_path / 'paper.txt'}")
                s.engine = engine
                for _ in range(100):
                    if await s.history():
                        break
                    await asyncio.sleep(0.1)
                return said, await s.history()

        said, history = asyncio.run(scenario())
    finally:
        engine.close()
    assert said == 1
    assert [ln["text"] for ln in history] == ["hello while it sleeps"]


def test_helix_429_backs_off_and_posts(tmp_path, start_engine):
    engine = start_engine(f"file:{tmp_path / 'paper.txt'}")
    try:

        async def scenario():
            async with stage(tmp_path, engine) as s:
                busy = {"error": "Too Many Requests", "status": 429, "message": "slow down"}
                s.fake.queue_response("POST", "/helix/chat/messages", 429, busy)
                s.fake.queue_response("POST", "/helix/chat/messages", 429, busy)
                started = time.monotonic()
                await s.say("alice", "!help")
                await s.posted("!gpt2")
                took = time.monotonic() - started
                codes = [r.status for r in s.fake.requests if r.path == "/helix/chat/messages"]
                return took, codes

        took, codes = asyncio.run(scenario())
    finally:
        engine.close()
    assert codes[:3] == [429, 429, 200]
    assert took >= 3.0  # waited 1 s, then 2 s


def test_expired_token_is_refreshed_and_saved(tmp_path, start_engine):
    engine = start_engine(f"file:{tmp_path / 'paper.txt'}")
    try:

        async def scenario():
            async with stage(tmp_path, engine) as s:
                path = token_path(Path(s.config.engine.state_dir))
                before = load_tokens(path)
                s.fake.expire_token(before.token)
                await s.say("alice", "!help")
                await s.posted("!gpt2")
                return path, before, load_tokens(path)

        path, before, after = asyncio.run(scenario())
    finally:
        engine.close()
    assert after.token != before.token and after.refresh != before.refresh
    assert after.user_id == "200" and after.login == "teletypebot"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


# --- signing in -----------------------------------------------------------------------


def _login(
    tmp_path: Path, as_user: str, caplog, twitch_first=None
) -> tuple[list, TwitchTokens | Exception]:
    config = _config(tmp_path)
    shown: list[tuple[str, str]] = []

    async def scenario():
        async with FakeTwitch(client_id=CLIENT_ID, client_secret=None, device_interval=1) as fake:
            users = _users(fake)
            if twitch_first is not None:
                twitch_first(fake)

            async def show(url: str, code: str) -> None:
                shown.append((url, code))
                # The person at the phone, a moment later.
                asyncio.get_running_loop().call_later(
                    0.3, fake.authorize_device, code, users[as_user].id
                )

            with patch_twitchio(fake):
                try:
                    return await login(config, show)
                except TokenError as e:
                    return e

    with caplog.at_level("DEBUG"):
        result = asyncio.run(scenario())
    return shown, result


def test_device_code_login_stores_the_tokens_for_us_alone(tmp_path, caplog):
    shown, tokens = _login(tmp_path, "teletypebot", caplog)
    assert len(shown) == 1 and "activate" in shown[0][0] and shown[0][1]
    assert isinstance(tokens, TwitchTokens) and tokens.login == "teletypebot"
    path = token_path(tmp_path / "bot-state")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_tokens(path) == tokens
    assert tokens.token not in caplog.text and tokens.refresh not in caplog.text
    assert tokens.token not in repr(tokens)
    assert not Path(".tio.tokens.json").exists()


def test_a_rate_limited_or_slowed_sign_in_waits_and_goes_on(tmp_path, caplog):
    # A 429 on /oauth2/device is Twitch's limit, not a bad Client ID: an
    # exit 78 would leave the bridge stopped for good (RestartPreventExitStatus).
    def busy(fake: FakeTwitch) -> None:
        fake.rate_limit_next("POST", "/oauth2/device", reset_in=0.5)
        fake.slow_down_next()

    shown, tokens = _login(tmp_path, "teletypebot", caplog, twitch_first=busy)
    assert isinstance(tokens, TwitchTokens), tokens
    assert len(shown) == 1


def test_the_journal_gets_no_secret_in_any_field():
    # The real JournalHandler's fields, caught at its sender: it sends the raw
    # exception (EXCEPTION_INFO) and every attribute of the record.
    import logging

    journal = pytest.importorskip("systemd.journal")
    from appliance.logs import RedactSecrets, secret

    token = "u9876543210fedcba98765432"
    secret(token)
    sent: list[dict] = []
    handler = journal.JournalHandler(
        sender_function=lambda MESSAGE, **fields: sent.append({"MESSAGE": MESSAGE, **fields})
    )
    handler.addFilter(RedactSecrets())
    log = logging.getLogger("test.journal")
    log.addHandler(handler)
    try:
        try:
            raise ValueError(f"Authorization: Bearer {token} was refused")
        except ValueError:
            log.exception("failed with %s", token)
    finally:
        log.removeHandler(handler)
    assert len(sent) == 1
    assert "[redacted]" in sent[0]["MESSAGE"] and "ValueError" in sent[0]["MESSAGE"]
    for name, value in sent[0].items():
        assert token not in str(value), name


def test_login_as_the_wrong_account_is_refused(tmp_path, caplog):
    _, error = _login(tmp_path, "streamer", caplog)
    assert isinstance(error, TokenError)
    assert "signed in as 'streamer'" in str(error) and "chat.bot" in str(error)
    assert not token_path(tmp_path / "bot-state").exists()


def test_tokens_saved_by_root_belong_to_the_state_directory_owner(tmp_path):
    """`sudo teletype twitch-login`: the service user must still be able to read them."""
    if os.geteuid() != 0:
        pytest.skip("only root can save a file for another user")
    state = tmp_path / "state"
    state.mkdir()
    os.chown(state, 65534, 65534)  # nobody, standing in for the teletype user
    path = token_path(state)
    save_tokens(path, TwitchTokens("200", "teletypebot", "t", "r", CLIENT_ID))
    assert (path.stat().st_uid, path.stat().st_gid) == (65534, 65534)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def _cli(tmp_path: Path, config_text: str) -> subprocess.CompletedProcess:
    config = tmp_path / "teletype.toml"
    config.write_text(config_text)
    return subprocess.run(
        [sys.executable, "-m", "appliance.cli", "chat", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "STATE_DIRECTORY": str(tmp_path / "state")},
    )


def test_chat_without_a_client_id_says_what_to_do(tmp_path):
    # Without tokens it signs in from the Teletype (tests/test_chat_health.py);
    # without a Client ID there is nothing to sign in to.
    result = _cli(tmp_path, '[chat]\nchannel = "streamer"\n')
    assert result.returncode == 78  # EX_CONFIG: systemd does not restart on it
    assert "chat.client_id is not set" in result.stderr
    assert "Traceback" not in result.stderr


# --- what goes into chat --------------------------------------------------------------


def _outbox_run(
    texts: list[str], per_window: int, window: float, expect: int
) -> list[tuple[float, str]]:
    sent: list[tuple[float, str]] = []

    async def scenario():
        async def send(text: str) -> bool:
            sent.append((time.monotonic(), text))
            return True

        outbox = Outbox(send, per_window=per_window, window=window)
        runner = asyncio.create_task(outbox.run())
        for text in texts:
            await outbox.post(text)
        deadline = time.monotonic() + 10
        while len(sent) < expect and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.2)  # and nothing more after that
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)

    asyncio.run(scenario())
    return sent


def test_outbox_keeps_to_the_send_rate():
    sent = _outbox_run([f"message {n}" for n in range(7)], 3, 0.5, expect=7)
    assert [t for _, t in sent] == [f"message {n}" for n in range(7)]
    times = [at for at, _ in sent]
    # Never more than 3 in any half second.
    assert all(times[i + 3] - times[i] >= 0.5 for i in range(len(times) - 3))


def test_outbox_never_posts_the_same_text_twice_in_a_row():
    sent = _outbox_run(["a", "a", "b", "a", "a"], 20, 30, expect=3)
    assert [t for _, t in sent] == ["a", "b", "a"]


def test_outbox_repeats_a_text_once_twitchs_window_has_passed():
    sent: list[str] = []

    async def scenario():
        async def send(text: str) -> bool:
            sent.append(text)
            return True

        outbox = Outbox(send, per_window=20, window=0.3)
        runner = asyncio.create_task(outbox.run())
        await outbox.post("the queue is full")
        await outbox.post("the queue is full")  # at once: dropped
        await asyncio.sleep(0.5)
        await outbox.post("the queue is full")  # later: Twitch takes it again
        await asyncio.sleep(0.2)
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)

    asyncio.run(scenario())
    assert sent == ["the queue is full", "the queue is full"]


def test_fit_for_chat_cuts_at_a_sentence_end():
    text = "The clutch trips. The cam turns once. " * 30
    cut = fit_for_chat(text, 100)
    # The last whole sentence that fits: the next one would not.
    assert len(cut) <= 100 and cut.endswith(".")
    assert text.startswith(cut) and len(cut) + len(" The cam turns once.") > 100
    assert fit_for_chat("short\nand sweet", 100) == "short and sweet"
    assert fit_for_chat("word " * 200, 50).endswith("...")


@given(st.text(min_size=0, max_size=1500), st.integers(min_value=50, max_value=500))
def test_fit_for_chat_never_goes_past_the_limit(text, limit):
    cut = fit_for_chat(text, limit)
    assert len(cut) <= limit
    flat = " ".join(text.split())
    assert cut == flat or flat.startswith(cut.removesuffix("..."))


def test_the_bridge_tells_the_engine_how_chat_is(tmp_path, engine):
    """For /v1/status and the status block on paper: the bridge's own words."""

    async def scenario():
        async with stage(tmp_path, engine) as s:
            for _ in range(100):
                status = (await s.engine_call("GET", "/v1/status"))[1]
                if status.get("chat", {}).get("state"):
                    return status["chat"]
                await asyncio.sleep(0.1)
            return status.get("chat")

    chat = asyncio.run(scenario())
    assert chat == {"configured": True, "state": "subscribed to #streamer as teletypebot"}


# --- `teletype chat` as systemd runs it ---------------------------------------------


@contextlib.asynccontextmanager
async def chat_process(
    fake: FakeTwitch, config_file: Path, notify, **env: str
) -> AsyncIterator[asyncio.subprocess.Process]:
    """`teletype chat` as systemd starts it (a notify socket, its stderr kept), with
    only Twitch's address changed: the fake's. Killed on the way out if still running."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "appliance.testing.twitch_at",
        fake.base,
        "chat",
        "--config",
        str(config_file),
        env={**os.environ, "NOTIFY_SOCKET": str(notify.path), **env},
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        yield process
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def stop_as_systemd_does(process: asyncio.subprocess.Process) -> str:
    """SIGTERM, and up to 30 s to end; what the process said on stderr."""
    process.terminate()
    _, err = await asyncio.wait_for(process.communicate(), 30)
    return err.decode()


def test_teletype_chat_process_notifies_ready_and_stops_on_sigterm(tmp_path, engine):
    """The console command itself, with a notify socket; only Twitch's address is ours."""
    from appliance.testing.engine_process import NotifySocket

    config = _config(tmp_path)
    config_file = tmp_path / "chat.toml"
    config_file.write_text(
        f'[chat]\nchannel = "streamer"\nbot = "teletypebot"\nclient_id = "{CLIENT_ID}"\n'
        f'[engine]\nruntime_dir = "{tmp_path / "run"}"\nstate_dir = "{tmp_path / "bot-state"}"\n'
    )
    notify = NotifySocket(tmp_path / "chat-notify.sock")

    async def scenario():
        async with FakeTwitch(client_id=CLIENT_ID, client_secret=None) as fake:
            users = _users(fake)
            _sign_in(fake, config)
            async with chat_process(fake, config_file, notify) as process:
                await asyncio.to_thread(
                    notify.wait_for, "READY=1", alive=lambda: process.returncode is None
                )
                await fake.push_chat("hello from chat", broadcaster=users["streamer"],
                                     chatter=users["alice"])  # fmt: skip
                # Until the line is there (a busy machine is slow, not wrong); the
                # bound only ends a hang.
                deadline = asyncio.get_running_loop().time() + 120
                while True:
                    lines = (await asyncio.to_thread(engine.json, "GET", "/v1/history"))[1]
                    if lines["lines"] or asyncio.get_running_loop().time() > deadline:
                        break
                    await asyncio.sleep(0.1)
                err = await stop_as_systemd_does(process)
            return lines["lines"], process.returncode, err

    try:
        lines, code, err = asyncio.run(scenario())
    finally:
        notify.close()
    assert [ln["text"] for ln in lines] == ["hello from chat"]
    assert code == 0, err
    assert "subscribed to #streamer as teletypebot" in notify.wait_for("READY=1")


def test_outbox_waits_for_ratelimit_reset_and_keeps_a_message_through_passing_failures():
    from appliance.chat.outbox import SendFailed, TryLater

    tries: list[float] = []
    failures = [
        SendFailed("Twitch answered HTTP 500 (during a token refresh)", transient=True),
        *[TryLater("too many requests (429)", retry_at=None) for _ in range(5)],
    ]

    async def scenario():
        reset_at = time.time() + 0.5

        async def send(text: str) -> bool:
            tries.append(time.time())
            if len(tries) == 1:
                raise TryLater("too many requests (429)", retry_at=reset_at)
            if failures:
                raise failures.pop(0)
            return True

        outbox = Outbox(send, per_window=100, window=0.2)
        runner = asyncio.create_task(outbox.run())
        await outbox.post("x" * 600)
        while outbox.sent + outbox.dropped == 0:
            await asyncio.sleep(0.05)
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
        return outbox, reset_at

    outbox, reset_at = asyncio.run(scenario())
    assert outbox.sent == 1 and outbox.dropped == 0
    assert tries[1] >= reset_at  # not before Twitch's Ratelimit-Reset
    assert len(tries) == 8  # one 429, one 500, five more 429s, then sent


def test_a_broken_config_is_said_on_paper_once_by_a_bridge_that_cannot_start(
    tmp_path, engine, teletype
):
    # The engine runs (it was started before teletype.toml broke); the
    # bridge cannot read the file, so it finds the engine where systemd's
    # units put it ($RUNTIME_DIRECTORY here) and says why on paper; the retry
    # timer starting it again every 15 minutes does not say it again.
    broken = tmp_path / "teletype.toml.broken"
    broken.write_text("[chat\nchannel = ")
    env = {
        **os.environ,
        "RUNTIME_DIRECTORY": str(tmp_path / "run"),
        "STATE_DIRECTORY": str(tmp_path / "chat-state"),
    }
    runs = [
        subprocess.run(
            [sys.executable, "-m", "appliance.cli", "chat", "--config", str(broken)],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )
        for _ in range(2)
    ]
    assert [r.returncode for r in runs] == [78, 78]
    paper = " ".join(check_ascii(teletype.collect(quiet=1.0)).text.split())
    assert paper.count("THE TWITCH CHAT BRIDGE DID NOT START") == 1
    assert "NOT VALID TOML" in paper
