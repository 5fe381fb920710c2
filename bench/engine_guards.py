"""Measure the engine's guards as an attacker and its owner feel them (issue 23).

    python bench/engine_guards.py [--out bench/engine-guards.md]

The engine's real app in this process on loopback (appliance/testing/engine_inprocess.py), the
embedded model, a file as the Teletype. Reports; asserts nothing. Runs against older
engines too (for the "before" figures): what they lack is measured the way they did it.

- guesses: wrong panel passwords and wrong API tokens, as fast as 10 connections from
  one address can send them for 3 s: how many were checked (401) a second; meanwhile
  the owner signs in from another address (127.0.0.2): the worst of 5 sign-ins.
- disk: /healthz's worst time while 200 chat lines are posted (20 at a time).
- log: the log lines that 2,000 malformed request heads write.
- cap: with the connection cap (64 here) filled by clients that asked once and went
  idle on keep-alive, how many of 10 new clients are served.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import logging
import platform
import tempfile
import time
from pathlib import Path

import aiohttp
from aiohttp import web

from appliance.config import Config
from appliance.engine.engine import Engine
from appliance.engine.generator import load_generator
from appliance.testing.engine_inprocess import running_engine

if not hasattr(Engine, "close"):  # an engine from before issue 23, for the "before" figures

    async def _nothing_to_close(self) -> None:
        return None

    Engine.close = _nothing_to_close

TOKEN = "t" * 32
PASSWORD = "the owner's password"


async def guesses(generator, tmp: Path) -> dict[str, float]:
    found: dict[str, float] = {}
    async with running_engine(tmp, generator, token=TOKEN, password=PASSWORD) as run:
        for kind in ("password", "token"):
            checked = 0
            stop = time.monotonic() + 3.0

            async def guesser(kind: str = kind, stop: float = stop) -> None:
                nonlocal checked
                async with aiohttp.ClientSession() as s:
                    while time.monotonic() < stop:
                        if kind == "password":
                            r = await s.post(run.base + "/panel/login", json={"password": "x"})
                        else:
                            r = await s.get(
                                run.base + "/v1/status", headers={"Authorization": "Bearer x"}
                            )
                        checked += r.status == 401
                        r.release()
                        if r.status == 429:  # a polite attacker would wait; this one does not
                            await asyncio.sleep(0)

            async def owner() -> float:
                worst = 0.0
                connector = aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))
                async with aiohttp.ClientSession(connector=connector) as s:
                    for _ in range(5):
                        await asyncio.sleep(0.4)
                        started = time.monotonic()
                        async with s.post(
                            run.base + "/panel/login", json={"password": PASSWORD}
                        ) as r:
                            assert r.status == 200, r.status
                        worst = max(worst, time.monotonic() - started)
                return worst

            results = await asyncio.gather(*(guesser() for _ in range(10)), owner())
            found[f"{kind} guesses checked a second, one address"] = checked / 3.0
            if kind == "password":
                found["owner's worst sign-in during it (s)"] = results[-1]
            await asyncio.sleep(1.5)  # the guesser's last delay runs out
    return found


async def healthz_under_history_posts(generator, tmp: Path) -> float:
    async with running_engine(tmp, generator) as run:
        worst = 0.0
        done = False

        async def watch() -> None:
            nonlocal worst
            async with aiohttp.ClientSession() as s:
                while not done:
                    started = time.monotonic()
                    async with s.get(run.base + "/healthz") as r:
                        await r.read()
                    worst = max(worst, time.monotonic() - started)
                    await asyncio.sleep(0.005)

        async def post(n: int) -> None:
            for i in range(n, 200, 20):
                body = {"name": "bench", "text": f"line {i}"}
                async with run.session.post(run.base + "/v1/history", json=body) as r:
                    assert r.status == 201, r.status

        watcher = asyncio.create_task(watch())
        await asyncio.gather(*(post(n) for n in range(20)))
        done = True
        await watcher
        return worst


async def log_lines_for_bad_requests(count: int) -> int:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    try:
        from appliance.engine.server import make_runner

        runner = make_runner(app)
    except ImportError:  # before: aiohttp's own logger
        runner = web.AppRunner(app, access_log=None, keepalive_timeout=75.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    for _ in range(count):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n")
        await reader.read()
        writer.close()
    await runner.cleanup()
    logging.basicConfig(level=logging.WARNING, force=True)
    return len(out.getvalue().splitlines())


async def new_clients_served_at_a_full_cap(limit: int = 64, newcomers: int = 10) -> int:
    from appliance.engine.connections import ConnectionGuard, GuardedTCPSite

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    guard = ConnectionGuard(limit=limit, reserve=0)
    guard.install(app)
    runner = web.AppRunner(app, access_log=None, keepalive_timeout=75.0)
    await runner.setup()
    site = GuardedTCPSite(runner, guard, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    head = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    idle = []
    for _ in range(limit):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(head)
        await reader.readuntil(b'{"ok": true}')
        idle.append(writer)
    await asyncio.sleep(1.0)  # idle for a second, as keep-alive clients are
    served = 0
    for _ in range(newcomers):
        with contextlib.suppress(OSError, asyncio.IncompleteReadError, TimeoutError):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(head)
            await asyncio.wait_for(reader.readuntil(b'{"ok": true}'), 5)
            served += 1
            idle.append(writer)
    for writer in idle:
        writer.close()
    await runner.cleanup()
    return served


async def main(out: Path | None) -> None:
    generator = load_generator(Config().model)
    rows: list[tuple[str, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, value in (await guesses(generator, Path(tmp) / "g")).items():
            rows.append((name, f"{value:.2f}"))
        worst = await healthz_under_history_posts(generator, Path(tmp) / "h")
        rows.append(("/healthz worst time during 200 history posts (ms)", f"{worst * 1000:.0f}"))
    lines = await log_lines_for_bad_requests(2000)
    rows.append(("log lines for 2,000 malformed request heads", str(lines)))
    served = await new_clients_served_at_a_full_cap()
    rows.append(("new clients served of 10, the cap (64) full of idle ones", str(served)))
    generator.close()
    text = (
        "# Engine guards: what an attacker gets, what the owner waits\n\n"
        f"Machine: {platform.machine()}, Python {platform.python_version()}; "
        "the engine's app in-process on loopback (bench/engine_guards.py).\n\n"
        "| measure | value |\n|---|---|\n" + "".join(f"| {k} | {v} |\n" for k, v in rows)
    )
    print(text)
    if out is not None:
        out.write_text(text)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path)
    asyncio.run(main(parser.parse_args().out))
