"""The engine in this process: its real API app on a loopback port, without `teletype serve`.

For what is visible at the API (the guard, the journal, the queue) this is a second's
start, where a process is several; the worker runs only when a test asks for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from aiohttp.test_utils import TestServer

from appliance.config import parse_config
from appliance.engine.api import build_app
from appliance.engine.engine import Engine
from appliance.engine.generator import load_generator
from appliance.teletype import build_printer


class EventTimes:
    """When each kind of the engine's events was first emitted, by time.monotonic().

    `engine.subscribers.add(EventTimes())`: the engine emits synchronously, as
    the thing happens, so these are the moments themselves, not when a waiter
    on a busy machine got round to noting them (a job's "finished" comes
    before the engine starts counting a quiet spell).
    """

    def __init__(self) -> None:
        self.at: dict[str, float] = {}

    def put_nowait(self, event: dict) -> None:
        self.at.setdefault(event["event"], time.monotonic())


@dataclass
class Running:
    engine: Engine
    server: TestServer
    session: aiohttp.ClientSession

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server.port}"

    async def call(self, method: str, path: str, body=None, headers=None, session=None):
        """(status, headers, the JSON body or the text) of one request."""
        session = session or self.session
        kw = {"json": body} if body is not None and not isinstance(body, bytes) else {}
        if isinstance(body, bytes):
            kw = {"data": body, "headers": {"Content-Type": "application/json"}}
        headers = {**kw.pop("headers", {}), **(headers or {})}
        async with session.request(method, self.base + path, headers=headers, **kw) as r:
            raw = await r.read()
            try:
                data = await r.json(content_type=None) if raw else None
            except ValueError:
                data = raw.decode()
            return r.status, r.headers, data


def engine_config(tmp_path: Path, extra: str = "", port: str = ""):
    """A config with a file for the Teletype (or `port`); `extra` is TOML to add: keys of
    [teletype] first, then any sections ([engine], [model]...)."""
    port = port or f"file:{tmp_path / 'paper.txt'}"
    text = f'[teletype]\nport = "{port}"\n{extra}\n'
    return parse_config(text.encode(), "test.toml")


def build_engine(
    tmp_path: Path, extra: str = "", generator=None, *, port: str = "", relay=None
) -> Engine:
    """The engine in this process, its Teletype's port open (engine_config's), its state in
    TMP/state: no API and no worker. The model is `generator`, or the one the config names."""
    config = engine_config(tmp_path, extra, port)
    if generator is None:
        generator = load_generator(config.model)
    printer = build_printer(config.teletype)
    printer.port.open()
    return Engine(config, generator, printer, tmp_path / "state", relay)


@contextlib.asynccontextmanager
async def running_engine(
    tmp_path: Path, generator, extra: str = "", token: str = "", password: str = "",
    worker: bool = False, engine: Engine | None = None,
) -> AsyncIterator[Running]:  # fmt: skip
    """The engine's app on 127.0.0.1 (an ephemeral port); its worker only with `worker`."""
    engine = engine or build_engine(tmp_path, extra, generator)
    printer = engine.printer
    engine.loop = asyncio.get_running_loop()
    app = build_app(engine, token, frozenset(), password)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    tasks = [asyncio.create_task(engine.run_worker())] if worker else []
    timeout = aiohttp.ClientTimeout(total=60)
    try:
        async with aiohttp.ClientSession(timeout=timeout) as session:
            yield Running(engine, server, session)
    finally:
        engine.shut_down()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.close()
        await engine.close()
        printer.close()
