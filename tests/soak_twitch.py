"""The chat bridge's soak: `teletype chat` as a process against the fake Twitch, faults at random.

    python -m tests.soak_twitch [--rounds N] [--seed S]      (make soak-twitch)

A real `teletype serve` engine (the embedded model, a transcript for paper),
a real `teletype chat` process (appliance/testing/twitch_at.py: only Twitch's address and
the bridge's own clocks differ), and this script as systemd: a notify socket,
WATCHDOG_USEC, a restart after a failure, and a kill when the watchdog is not
fed in time. Each round injects one fault drawn by a seeded RNG, waits until
Twitch can reach the bridge again, then says chat lines and !gpt2 and waits
(on states, never on clocks) until each line is in the engine's history and
each !gpt2 is answered or told why not.

What it asserts: every line Twitch delivered reaches the history exactly
once; every !gpt2 gets its answer or a reason; the watchdog fires in every
total stall (no traffic, no new socket, for longer than WatchdogSec) and
never elsewhere; the bridge stops cleanly (exit 0) at the end.

Time: the bridge's health checks run 30 times faster than on the Pi
(check_every 15 s -> 0.5 s, repair_for 90 s -> 30 s, call_timeout 30 s ->
3 s) and its hourly token check every 10 s; Twitch's keepalive is real (10 s:
twitchio asks for no less). "Fake minutes" below are wall minutes x 30.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import random
import signal
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from appliance.testing.engine_process import EngineProcess, NotifySocket
from appliance.testing.fake_twitch import FakeTwitch, FakeUser

CLIENT_ID = "fake-client-id"
BOT_ID = "200"
COMPRESSION = 30  # the bridge's health clocks, Pi time per soak second
CLOCKS = "check_every=0.5,ask_twitch_every=4,repair_for=30,call_timeout=3,validate_every=10,silence_grace=1"  # noqa: E501
CALL_TIMEOUT = 3.0
# WatchdogSec (the Pi: 180): the bridge pings every 1.5 s while it hears. Not the
# clocks' 30 times shorter: what a sign-in or a reconnect takes here is round trips
# to Twitch, which no clock shortens, and on a busy machine a dozen of them took
# over 6 s (CI's soak, when it was 6).
WATCHDOG = 15.0
RESTART_SEC = 1.0  # RestartSec (the Pi: 10)
SETTLE = 240.0  # the longest any one state may take to come (a bug, not a slow machine)

# What the bridge posts when it cannot answer a !gpt2 with a reply: the reasons.
TOLD_WHY = (
    "needs a rest",
    "the queue is full",
    "had nothing it could print",
    "your print was stopped",
    "restarted during your print",
    "generator failed",
)


@dataclass
class Figures:
    seed: int
    rounds: int = 0
    faults: Counter = field(default_factory=Counter)
    lines_said: int = 0
    # Twitch had no socket to send them on (as Twitch would lose them): not said.
    undeliverable: Counter = field(default_factory=Counter)  # by the round's fault
    said_while_moving: int = 0  # delivered on the old socket of a planned reconnect
    duplicates_pushed: int = 0
    asked: int = 0
    answered: int = 0
    told_why: int = 0
    watchdog_fired: list[str] = field(default_factory=list)  # the fault of each round it fired in
    # The longest the watchdog went unfed while the bridge ran, by the round's fault:
    # the margin under WATCHDOG that a slow machine eats into.
    longest_unfed: dict = field(default_factory=dict)
    exits: Counter = field(default_factory=Counter)
    pings: int = 0
    validations: int = 0
    sign_ins: int = 0
    sessions: int = 0
    wall_s: float = 0.0

    def report(self) -> dict:
        return {
            "seed": self.seed,
            "rounds": self.rounds,
            "wall_minutes": round(self.wall_s / 60, 2),
            "fake_minutes": round(self.wall_s / 60 * COMPRESSION, 1),
            "faults": dict(sorted(self.faults.items())),
            "lines_said": self.lines_said,
            "lines_received_once": self.lines_said,
            "lines_said_while_the_session_moved": self.said_while_moving,
            "lines_undeliverable_by_fault": dict(self.undeliverable),
            "duplicate_deliveries": self.duplicates_pushed,
            "gpt2_asked": self.asked,
            "gpt2_answered": self.answered,
            "gpt2_told_why": self.told_why,
            "watchdog_fired_in": self.watchdog_fired,
            "longest_unfed_s": {k: round(v, 1) for k, v in sorted(self.longest_unfed.items())},
            "bridge_exits": dict(self.exits),
            "watchdog_pings": self.pings,
            "token_validations": self.validations,
            "sign_ins": self.sign_ins,
            "eventsub_sessions": self.sessions,
        }


class Soak:
    def __init__(self, tmp: Path, fake: FakeTwitch, engine: EngineProcess, seed: int, log):
        self.tmp = tmp
        self.fake = fake
        self.engine = engine
        self.rng = random.Random(seed)
        self.log = log
        self.figures = Figures(seed)
        self.systemd = NotifySocket(tmp / "chat-notify.sock")  # systemd's, read as it does
        self.streamer = fake.add_user("100", "streamer", "Streamer")
        fake.add_user(BOT_ID, "teletypebot", "TeletypeBot")
        self.chatters = [fake.add_user(str(301 + n), f"chatter{n}") for n in range(5)]
        self.viewers = 0
        self.said: list[str] = []  # every line Twitch delivered
        self.highest: Counter = Counter()  # most copies of a line seen in one history
        self.asks: dict[str, str] = {}  # viewer's display name -> the ask's text
        self.fault = "start"
        self.deaf = False  # a total stall is on: the watchdog may (and must) fire
        self.stopping = False
        self.process: asyncio.subprocess.Process | None = None
        self.config = tmp / "chat.toml"
        self.config.write_text(
            f'[chat]\nchannel = "streamer"\nbot = "teletypebot"\nclient_id = "{CLIENT_ID}"\n'
            "global_cooldown = 0\nuser_cooldown = 0\nprint_chat = false\n"
            "post_button_results = false\n"
            f'[engine]\nruntime_dir = "{tmp / "run"}"\nstate_dir = "{tmp / "bot-state"}"\n'
        )

    # --- systemd's part ----------------------------------------------------------------

    async def supervise(self) -> None:
        """Start the bridge, restart it after a failure (RestartSec), kill it when the
        watchdog was not fed within WatchdogSec since READY or the last ping."""
        stderr = (self.tmp / "chat.stderr").open("ab")
        while not self.stopping:
            started = time.monotonic()
            self.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "appliance.testing.twitch_at",
                self.fake.base,
                "chat",
                "--config",
                str(self.config),
                env={
                    **os.environ,
                    "NOTIFY_SOCKET": str(self.systemd.path),
                    "WATCHDOG_USEC": str(int(WATCHDOG * 1e6)),
                    "TWITCH_AT_CLOCKS": CLOCKS,
                },
                stderr=stderr,
            )
            while self.process.returncode is None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(self.process.wait()), 0.25)
                ready = self.systemd.last("READY=1", since=started)
                if ready is None or self.stopping or self.process.returncode is not None:
                    continue
                fed = max(ready, self.systemd.last("WATCHDOG=1", since=started) or 0.0)
                unfed = time.monotonic() - fed
                longest = self.figures.longest_unfed
                longest[self.fault] = max(longest.get(self.fault, 0.0), unfed)
                if unfed > WATCHDOG:
                    self.log(f"watchdog fired during {self.fault}")
                    self.figures.watchdog_fired.append(self.fault)
                    self.process.send_signal(signal.SIGABRT)  # as systemd does
                    await self.process.wait()
            if self.stopping:
                break
            self.figures.exits[str(self.process.returncode)] += 1
            # In a total stall, the bridge's end (the watchdog's kill, or one of its own,
            # which the check reports) is the stall's end: new sockets are let through.
            if self.deaf:
                self.fake.stop_stalling("GET", "/ws")
            self.log(f"the bridge ended ({self.process.returncode}); restarting")
            await asyncio.sleep(RESTART_SEC)
        stderr.close()

    async def stop(self) -> int | None:
        self.stopping = True
        assert self.process is not None
        if self.process.returncode is None:
            self.process.terminate()
            await asyncio.wait_for(self.process.wait(), 30)
        return self.process.returncode

    # --- the person with a phone ---------------------------------------------------------

    async def sign_in_when_asked(self) -> None:
        """A code printed on paper is typed in at twitch.tv/activate (as the bot)."""
        while True:
            for dc in list(self.fake.device_codes.values()):
                if dc.user_id is None and not dc.used and dc.rejection is None:
                    self.fake.authorize_device(dc.user_code, BOT_ID)
                    self.figures.sign_ins += 1
            await asyncio.sleep(0.2)

    # --- Twitch's part -----------------------------------------------------------------

    def reachable(self) -> bool:
        """Twitch has a live socket of the bridge's holding the chat subscription."""
        live = {s.id for s in self.fake.open_sessions() if not s.silenced}
        return any(
            sub["status"] == "enabled" and sub["transport"].get("session_id") in live
            for sub in self.fake.subscriptions.values()
        )

    async def until(self, what: str, predicate, timeout: float = SETTLE) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"round {self.figures.rounds} ({self.fault}): {what}")
            await asyncio.sleep(0.1)

    async def say(self, text: str, chatter: FakeUser | None = None) -> bool:
        duplicate = self.rng.random() < 0.1
        try:
            n = await self.fake.push_chat(
                text,
                broadcaster=self.streamer,
                chatter=chatter or self.rng.choice(self.chatters),
                duplicate=duplicate,
            )
        except (AssertionError, ConnectionError, RuntimeError):
            n = None
        if not n:
            self.figures.undeliverable[self.fault] += 1
            return False
        self.figures.duplicates_pushed += duplicate
        return True

    async def line(self, during: bool = False) -> None:
        text = f"round {self.figures.rounds} line {len(self.said)}" + (
            " (moving)" if during else ""
        )
        if await self.say(text):
            self.said.append(text)
            self.figures.lines_said += 1
            self.figures.said_while_moving += during

    async def ask(self) -> None:
        self.viewers += 1
        viewer = self.fake.add_user(
            str(10_000 + self.viewers), f"v{self.viewers}", f"V{self.viewers}"
        )
        text = f"!gpt2 question {self.viewers}"
        if await self.say(text, viewer):
            self.asks[viewer.display_name] = text
            self.figures.asked += 1

    # --- the faults ----------------------------------------------------------------------

    async def inject(self, fault: str) -> None:
        f, rng = self.fake, self.rng
        if fault == "planned reconnect, lines on the old socket":
            stalled = len(f.stalled)
            f.stall_next("GET", "/ws", 1.5)
            await f.send_session_reconnect()
            await self.until("the new socket's handshake", lambda: len(f.stalled) > stalled, 30)
            for _ in range(2):
                await self.line(during=True)
        elif fault == "connection reset":
            gone = {s.id for s in f.open_sessions()}
            f.reset_sessions()
            # Lines said before the fake itself sees the reset would be written to
            # a dead connection: Twitch would lose them too. Said after it.
            await self.until("the reset", lambda: not gone & {s.id for s in f.open_sessions()}, 30)
        elif fault.startswith("close "):
            await f.close_sessions(int(fault.split()[1]))
        elif fault.startswith("revocation "):
            await f.revoke_subscriptions(fault.split()[1])
        elif fault == "helix 429 with Ratelimit-Reset":
            f.rate_limit_next("POST", "/helix/chat/messages", reset_in=rng.uniform(0.5, 3), n=2)
        elif fault == "chat rate limit (msg_ratelimit)":
            f.chat_limit = (1, 4.0)
        elif fault.startswith("stall "):
            method, path = fault.split()[1:3]
            f.stall_next(method, path, 2 * CALL_TIMEOUT + 1)
            if path == "/ws":
                await f.close_sessions(4000)
        elif fault == "validate failures":
            f.fail_next("GET", "/oauth2/validate", 503, n=2)
            f.reset_next("GET", "/oauth2/validate", n=3)
        elif fault == "refresh failure (500)":
            self.expire_tokens()
            f.fail_next("POST", "/oauth2/token", 500)
        elif fault == "refresh refused (new sign-in)":
            f.refuse_refresh = True
            codes = len(f.device_codes)
            self.expire_tokens()
            await self.until("a new sign-in code", lambda: len(f.device_codes) > codes, 60)
            f.refuse_refresh = False
        elif fault == "total stall (deaf)":
            self.deaf = True
            # Every new socket held until the watchdog has fired (a state, not a time):
            # deaf for as long as that takes, but not so long that the bridge gives up
            # by itself first (repair_for).
            f.stall_next("GET", "/ws", SETTLE, n=1000)
            ends = sum(self.figures.exits.values())
            deadline = time.monotonic() + SETTLE
            while sum(self.figures.exits.values()) == ends:
                # Silenced again and again: a socket whose handshake was under way
                # when the stall began (a reconnect the last round set off) is
                # welcomed after it, and would hear for the bridge.
                f.silence()
                assert time.monotonic() < deadline, (
                    f"round {self.figures.rounds} ({self.fault}): the bridge outlived a "
                    f"total stall of {SETTLE:.0f} s"
                )
                await asyncio.sleep(0.1)
        else:
            raise ValueError(fault)

    def expire_tokens(self) -> None:
        for access, info in list(self.fake.tokens.items()):
            if info.user_id == BOT_ID and info.valid:
                self.fake.expire_token(access)

    FAULTS = (
        "planned reconnect, lines on the old socket",
        "connection reset",
        *(f"close {code}" for code in range(4000, 4008)),
        "revocation version_removed",
        "revocation user_removed",
        "revocation notification_failures_exceeded",
        "revocation authorization_revoked",
        "helix 429 with Ratelimit-Reset",
        "chat rate limit (msg_ratelimit)",
        "stall GET /oauth2/validate",
        "stall GET /helix/eventsub/subscriptions",
        "stall POST /helix/chat/messages",
        "stall GET /ws",
        "validate failures",
        "refresh failure (500)",
        "refresh refused (new sign-in)",
        "total stall (deaf)",
    )

    # --- a round -------------------------------------------------------------------------

    def posts(self) -> list[str]:
        return [m["message"] for m in self.fake.chat_messages]

    def unsettled_asks(self) -> list[str]:
        """The viewers whose !gpt2 has no final answer posted (a reply or why not)."""
        finals = {}
        for post in self.posts():
            name, _, rest = post.partition(" ")
            if name.startswith("@V") and not rest.startswith("you are number"):
                finals[name[1:]] = rest
        return [name for name in self.asks if name not in finals]

    def settled_asks(self) -> bool:
        return not self.unsettled_asks()

    async def history(self) -> list[str]:
        status, body = await asyncio.to_thread(self.engine.json, "GET", "/v1/history")
        assert status == 200, body
        lines = [ln["text"] for ln in body["lines"]]
        for text, n in Counter(lines).items():
            self.highest[text] = max(self.highest[text], n)
        return lines

    async def round(self, fault: str) -> None:
        self.figures.rounds += 1
        self.fault = fault
        self.figures.faults[fault] += 1
        self.log(f"round {self.figures.rounds}: {fault}")
        await self.inject(fault)
        await self.until("Twitch can reach the bridge again", self.reachable)
        self.deaf = False
        for _ in range(self.rng.randint(2, 5)):
            await self.line()
        for _ in range(2 if "msg_ratelimit" in fault else self.rng.randint(0, 1)):
            await self.ask()
        history: list[str] = []

        async def all_heard() -> bool:
            nonlocal history
            history = await self.history()
            return all(text in history for text in self.said[-8:])

        deadline = time.monotonic() + SETTLE
        while not await all_heard():
            assert time.monotonic() < deadline, (
                f"round {self.figures.rounds} ({fault}): lines never reached the history: "
                f"{[t for t in self.said[-8:] if t not in history]}"
            )
            await asyncio.sleep(0.2)
        try:
            await self.until("every !gpt2 answered or told why", self.settled_asks)
        except AssertionError as e:
            posts = [p for p in self.posts() if p.startswith("@V")][-6:]
            raise AssertionError(f"{e}: not {self.unsettled_asks()}; last posts {posts}") from None
        self.fake.chat_limit = (20, 30.0)
        fed_after = time.monotonic()
        await self.until(
            "the watchdog fed while the bridge hears",
            lambda: self.systemd.last("WATCHDOG=1", since=fed_after) is not None,
            WATCHDOG + 10,
        )

    async def run(self, rounds: int) -> dict:
        started = time.monotonic()
        supervisor = asyncio.create_task(self.supervise())
        signer = asyncio.create_task(self.sign_in_when_asked())
        try:
            await self.until("the first subscription", self.reachable, 60)
            deck: list[str] = []
            for _ in range(rounds):
                if not deck:  # every fault once, in a seeded order, then again
                    deck = self.rng.sample(self.FAULTS, len(self.FAULTS))
                await self.round(deck.pop())
            rc = await self.stop()
        finally:
            self.stopping = True
            signer.cancel()
            if self.process is not None and self.process.returncode is None:
                self.process.kill()
            await asyncio.gather(supervisor, signer, return_exceptions=True)
            self.systemd.close()
        self.figures.wall_s = time.monotonic() - started
        self.check(rc)
        return self.figures.report()

    def check(self, rc: int | None) -> None:
        f = self.figures
        assert rc == 0, f"the bridge did not stop cleanly: {rc}"
        twice = {t: n for t, n in self.highest.items() if t in self.said and n > 1}
        assert not twice, f"lines in the history more than once: {twice}"
        missing = [t for t in self.said if t not in self.highest]
        assert not missing, f"lines that never reached the history: {missing}"
        finals = {}
        for post in self.posts():
            name, _, rest = post.partition(" ")
            if name.startswith("@V") and not rest.startswith("you are number"):
                finals.setdefault(name[1:], rest)
        f.told_why = sum(any(w in finals[n] for w in TOLD_WHY) for n in self.asks)
        f.answered = len(self.asks) - f.told_why
        wrongly = [fault for fault in f.watchdog_fired if fault != "total stall (deaf)"]
        assert not wrongly, f"the watchdog fired while the bridge could hear: {wrongly}"
        stalls = f.faults["total stall (deaf)"]
        assert f.watchdog_fired.count("total stall (deaf)") >= stalls, (
            f"the watchdog was fed through a total stall: {f.watchdog_fired} for {stalls} stalls"
        )
        f.pings = self.systemd.count("WATCHDOG=1")
        f.validations = sum(r.path == "/oauth2/validate" for r in self.fake.requests)
        f.sessions = len(self.fake.sessions)


async def soak(tmp: Path, rounds: int, seed: int, log=print) -> dict:
    engine = EngineProcess(
        tmp, f"file:{tmp / 'paper.txt'}", max_chars=20, model_extra="[history]\nlines = 50"
    ).start()
    try:
        async with FakeTwitch(client_id=CLIENT_ID, client_secret=None, device_interval=1) as fake:
            access, refresh = fake.issue_user_token(BOT_ID)
            from appliance.chat.tokens import TwitchTokens, save_tokens, token_path

            save_tokens(
                token_path(tmp / "bot-state"),
                TwitchTokens(BOT_ID, "teletypebot", access, refresh, CLIENT_ID),
            )
            return await Soak(tmp, fake, engine, seed, log).run(rounds)
    finally:
        engine.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5 * len(Soak.FAULTS))
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 30)
    print(f"soak seed {seed} (again with --seed {seed})", flush=True)
    started = time.monotonic()
    # A client that gave up on a stalled handshake makes aiohttp's server log
    # a traceback in the fake: the soak's own lines are what matter here.
    logging.getLogger("aiohttp.server").setLevel(logging.CRITICAL)

    def log(text: str) -> None:
        print(f"[{time.monotonic() - started:7.1f} s] {text}", flush=True)

    with tempfile.TemporaryDirectory(prefix="soak-twitch-") as tmp:
        try:
            figures = asyncio.run(soak(Path(tmp), args.rounds, seed, log))
        except AssertionError as e:
            print(f"SOAK FAILED (seed {seed}): {e}", flush=True)
            words = (Path(tmp) / "chat.stderr").read_text(errors="replace")
            kept = Path("build") / f"soak-twitch-{seed}.stderr"
            kept.parent.mkdir(exist_ok=True)
            kept.write_text(words)
            print(f"--- the bridge's last words (all of them: {kept}) ---\n{words[-6000:]}",
                  flush=True)  # fmt: skip
            return 1
    print(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
