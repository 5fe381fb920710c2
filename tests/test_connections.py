"""The connection guard on a real aiohttp app, over a real loopback port and Unix socket."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import resource
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from appliance.engine import connections
from appliance.engine.connections import (
    ConnectionGuard,
    GuardedTCPSite,
    GuardedUnixSite,
    default_limit,
    raise_file_limit,
)

NOFILE = resource.RLIMIT_NOFILE
HEAD = b"GET /healthz HTTP/1.1\r\nHost: x\r\n"


@contextlib.asynccontextmanager
async def serving(
    tmp_path: Path, guard: ConnectionGuard, keepalive_timeout: float = 30.0
) -> AsyncIterator[tuple[int, Path]]:
    """/healthz behind the guard, on 127.0.0.1 (an ephemeral port) and a Unix socket."""

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    guard.install(app)
    runner = web.AppRunner(app, access_log=None, keepalive_timeout=keepalive_timeout)
    await runner.setup()
    sock = tmp_path / "engine.sock"
    tcp = GuardedTCPSite(runner, guard, "127.0.0.1", 0)
    try:
        await GuardedUnixSite(runner, guard, str(sock)).start()
        await tcp.start()
        yield tcp.port, sock
    finally:
        await runner.cleanup()


async def healthz(port: int | None = None, sock: Path | None = None) -> int:
    """The status of GET /healthz on a new connection, TCP or (with sock) Unix socket."""
    if sock is not None:
        connector: aiohttp.BaseConnector = aiohttp.UnixConnector(path=str(sock))
        url = "http://engine/healthz"
    else:
        connector = aiohttp.TCPConnector()
        url = f"http://127.0.0.1:{port}/healthz"
    timeout = aiohttp.ClientTimeout(total=5)
    async with (
        aiohttp.ClientSession(connector=connector, timeout=timeout) as session,
        session.get(url) as response,
    ):
        await response.read()
        return response.status


async def raw_get(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> int:
    """One keep-alive GET /healthz on an open connection; its status."""
    writer.write(HEAD + b"\r\n")
    status = int((await asyncio.wait_for(reader.readline(), 5)).split()[1])
    length = 0
    while (line := await asyncio.wait_for(reader.readline(), 5)) != b"\r\n":
        name, _, value = line.decode().partition(":")
        if name.lower() == "content-length":
            length = int(value)
    await asyncio.wait_for(reader.readexactly(length), 5)
    return status


async def closed_within(reader: asyncio.StreamReader, seconds: float) -> bool:
    """Whether the server closes (FIN or reset) a connection that expects no data."""
    try:
        return await asyncio.wait_for(reader.read(1024), seconds) == b""
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False


async def until(condition, seconds: float = 3.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        await asyncio.sleep(0.01)


@contextlib.contextmanager
def spare_descriptors(spare: int) -> Iterator[None]:
    """Lower this process's soft file limit to leave about `spare` descriptors free, as
    the engine's 1,024 did, so that running out shows as it would in the engine."""
    if not os.path.isdir("/proc/self/fd"):
        pytest.skip("needs /proc/self/fd")
    soft, hard = resource.getrlimit(NOFILE)
    taken = {int(fd) for fd in os.listdir("/proc/self/fd")}
    # New descriptors take the lowest free numbers: leave `spare` of them under the limit.
    free = (n for n in range(soft) if n not in taken)
    resource.setrlimit(NOFILE, (next(itertools.islice(free, spare - 1, None)) + 1, hard))
    try:
        yield
    finally:
        resource.setrlimit(NOFILE, (soft, hard))


def close_all(writers: list[asyncio.StreamWriter]) -> None:
    for w in writers:
        w.close()


def test_a_flood_of_idle_tcp_connections_leaves_the_unix_socket_answering(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    limit, flood = 8, 48
    # A deadline longer than the test: here the cap alone must hold the flood off.
    guard = ConnectionGuard(limit=limit, header_timeout=30.0, reserve=4)

    async def scenario() -> None:
        async with serving(tmp_path, guard) as (port, sock):
            # Unguarded, the flood needs 2 x 48 descriptors (both ends are in this
            # process); guarded, 48 + 8 and a few for the checks.
            with spare_descriptors(72):
                clients = []
                for _ in range(flood):
                    clients.append(await asyncio.open_connection("127.0.0.1", port))
                    await asyncio.sleep(0.005)  # as a flood arrives: spread, not one batch
                try:
                    closed = await asyncio.gather(*(closed_within(r, 1.0) for r, _ in clients))
                    assert closed.count(True) == flood - limit
                    assert guard.open == limit
                    assert guard.refused == flood - limit
                    # TCP is full, the Unix socket's reserve is not.
                    assert await healthz(sock=sock) == 200
                    with pytest.raises(aiohttp.ClientError):
                        await healthz(port)
                finally:
                    close_all([w for _, w in clients])
                # Slots are given back as connections go.
                await until(lambda: guard.open == 0)
                assert await healthz(port) == 200

    asyncio.run(scenario())

    warnings = [
        r for r in caplog.records if r.levelno == logging.WARNING and "refused" in r.getMessage()
    ]
    assert 1 <= len(warnings) <= 2
    assert "refused 1 connection" in warnings[0].getMessage()
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert errors == []


def test_refusals_are_summed_into_one_line_per_interval(tmp_path, caplog, monkeypatch):
    caplog.set_level(logging.INFO)
    monkeypatch.setattr(connections, "REPORT_INTERVAL", 0.3)
    guard = ConnectionGuard(limit=1, header_timeout=30.0)

    async def scenario() -> None:
        async with serving(tmp_path, guard) as (port, _):
            clients = [await asyncio.open_connection("127.0.0.1", port) for _ in range(6)]
            try:
                await until(lambda: guard.refused == 5)
                await asyncio.sleep(0.5)  # past the interval: the rest is reported
            finally:
                close_all([w for _, w in clients])

    asyncio.run(scenario())
    lines = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(lines) == 2
    assert lines[0].startswith("refused 1 connection(s)")
    assert lines[1].startswith("refused 4 connection(s)")


def test_a_request_head_left_unfinished_is_cut_at_the_deadline(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    guard = ConnectionGuard(limit=8, header_timeout=0.5)

    async def scenario() -> None:
        async with serving(tmp_path, guard) as (port, sock):
            started = time.monotonic()
            slow_reader, slow = await asyncio.open_connection("127.0.0.1", port)
            slow.write(HEAD)  # and never the blank line that ends the head
            # The Unix socket's clients have the same deadline.
            idle_reader, idle = await asyncio.open_unix_connection(str(sock))
            try:
                assert await healthz(port) == 200
                assert await closed_within(slow_reader, 3.0)
                # Not before the deadline; that it was the guard's deadline that cut
                # it (and not a later one) is guard.timed_out below, not a clock,
                # which a busy machine can stretch.
                assert time.monotonic() - started >= 0.4
                assert await closed_within(idle_reader, 1.0)
            finally:
                close_all([slow, idle])
            assert guard.timed_out == 2
            await until(lambda: guard.open == 0)

    asyncio.run(scenario())
    # Reported (the second within the next minute's line), and only as news, not a warning.
    reports = [r for r in caplog.records if "no request head" in r.getMessage()]
    assert [r.levelno for r in reports] == [logging.INFO]
    assert "refused 0 connection(s) at the cap and closed 1 " in reports[0].getMessage()


def test_an_idle_keep_alive_connection_is_left_to_aiohttps_keepalive_timeout(tmp_path):
    # The deadline is for the first request head only. After a response, aiohttp's
    # keepalive_timeout governs: the connection may idle past header_timeout and ask
    # again, and an unfinished second head is cut when that keep-alive time runs out.
    guard = ConnectionGuard(limit=8, header_timeout=0.5)

    async def scenario() -> None:
        async with serving(tmp_path, guard, keepalive_timeout=1.5) as (port, _):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                assert await raw_get(reader, writer) == 200
                await asyncio.sleep(0.8)
                assert await raw_get(reader, writer) == 200  # the same connection
                writer.write(HEAD)
                answered = time.monotonic()
                assert await closed_within(reader, 4.0)
                # Idle past the head deadline (0.5 s) and cut by the keep-alive time
                # (1.5 s), not by the guard (timed_out stays 0).
                assert time.monotonic() - answered >= 1.2
            finally:
                writer.close()
            assert guard.timed_out == 0

    asyncio.run(scenario())


def test_a_site_will_not_start_without_the_middleware(tmp_path):
    async def scenario() -> None:
        runner = web.AppRunner(web.Application())
        await runner.setup()
        try:
            with pytest.raises(RuntimeError, match="install"):
                await GuardedTCPSite(runner, ConnectionGuard(), "127.0.0.1", 0).start()
            assert runner.sites == set()
        finally:
            await runner.cleanup()

    asyncio.run(scenario())


def test_raise_file_limit_lifts_the_soft_limit_to_the_hard_one():
    soft, hard = resource.getrlimit(NOFILE)
    lowered = max(64, max(int(fd) for fd in os.listdir("/proc/self/fd")) + 16)
    if hard != resource.RLIM_INFINITY and hard <= lowered:
        pytest.skip(f"the hard file limit ({hard}) leaves no room to test")
    try:
        assert raise_file_limit() >= soft
        resource.setrlimit(NOFILE, (lowered, hard))
        got = raise_file_limit()
        assert got >= lowered
        assert got == resource.getrlimit(NOFILE)[0]
        if hard != resource.RLIM_INFINITY:
            assert got == hard
    finally:
        resource.setrlimit(NOFILE, (soft, hard))


def test_default_limit_stays_well_under_the_file_limit():
    assert default_limit(1024) == 256
    assert default_limit(524288) == 512
    for nofile in (16, 64, 256, 1024, 4096, 524288):
        limit = default_limit(nofile)
        assert 1 <= limit <= nofile // 4
        # The Unix socket's default reserve fits too, once there is room for anything.
        if nofile >= 128:
            assert limit + 32 < nofile // 2


def test_idle_keep_alive_connections_make_room_for_new_ones_at_the_cap(tmp_path, monkeypatch):
    # 600 clients that asked once and went idle kept new TCP clients out for the whole
    # keep-alive time. (connections.IDLE_AFTER is made 0: idle as soon as answered.)
    monkeypatch.setattr(connections, "IDLE_AFTER", 0.0, raising=False)
    limit = 4
    guard = ConnectionGuard(limit=limit, header_timeout=30.0, reserve=0)

    async def scenario() -> None:
        async with serving(tmp_path, guard) as (port, _):
            idle = [await asyncio.open_connection("127.0.0.1", port) for _ in range(limit)]
            try:
                for reader, writer in idle:
                    assert await raw_get(reader, writer) == 200
                # At the cap, each newcomer is served; the longest idle one made room.
                newcomers = []
                for oldest in range(2):
                    newcomers.append(await asyncio.open_connection("127.0.0.1", port))
                    assert await raw_get(*newcomers[-1]) == 200
                    assert await closed_within(idle[oldest][0], 3.0)
                assert guard.made_room == 2 and guard.refused == 0
                # A connection that has not asked yet is never the one closed: with the
                # idle ones gone, the cap refuses.
                close_all([w for _, w in idle + newcomers])
                await until(lambda: guard.open == 0)
                fresh = [await asyncio.open_connection("127.0.0.1", port) for _ in range(limit)]
                try:
                    await until(lambda: guard.open == limit)
                    with pytest.raises(aiohttp.ClientError):
                        await healthz(port)
                    assert guard.made_room == 2
                finally:
                    close_all([w for _, w in fresh])
            finally:
                close_all([w for _, w in idle])

    asyncio.run(scenario())


def test_malformed_request_heads_are_counted_not_each_logged(tmp_path, caplog):
    # 2,000 bad requests were 24,000 lines of traceback; now one summary line a minute.
    from appliance.engine.server import make_runner

    caplog.set_level(logging.DEBUG)
    sent = 200

    async def scenario() -> None:
        async def healthz(request: web.Request) -> web.Response:
            return web.json_response({"ok": True})

        app = web.Application()
        app.router.add_get("/healthz", healthz)
        guard = ConnectionGuard(limit=64)
        guard.install(app)
        runner = make_runner(app)
        await runner.setup()
        site = GuardedTCPSite(runner, guard, "127.0.0.1", 0)
        await site.start()
        try:
            for n in range(sent):
                reader, writer = await asyncio.open_connection("127.0.0.1", site.port)
                bad = b"Content-Length: x" if n % 2 else b"Bad Header Without A Colon"
                writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + bad + b"\r\n\r\n")
                assert (await asyncio.wait_for(reader.readline(), 5)).split()[1] == b"400"
                writer.close()
            assert await raw_get(*await asyncio.open_connection("127.0.0.1", site.port)) == 200
        finally:
            await runner.cleanup()

    asyncio.run(scenario())
    assert [r for r in caplog.records if r.exc_info] == []
    summaries = [r.getMessage() for r in caplog.records if "malformed request" in r.getMessage()]
    assert len(summaries) == 1 and summaries[0].startswith("answered 1 malformed request(s)")
    assert len(caplog.records) <= 3, [r.getMessage() for r in caplog.records]
