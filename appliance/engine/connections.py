"""A cap on the engine's open HTTP connections and a deadline for each one's first request.

aiohttp accepts every connection it is offered and keeps one that never sends a request for
its keepalive_timeout (an hour by default in 3.14). 1,100 idle TCP connections were enough
to use up the engine's 1,024 file descriptors: the Unix socket and /healthz stopped
answering and asyncio logged thousands of "socket.accept() out of system resources"
tracebacks. The guard puts a proxy protocol in front of aiohttp's RequestHandler that
refuses connections over the cap and closes those that send no request head in time.

At the cap, a connection that has made its requests and sits idle on keep-alive makes
room for a new one before any is refused: 600 clients that asked once and went quiet
kept new TCP clients out for the whole keep-alive time (75 s). The idle one is closed
between requests, which HTTP clients expect of keep-alive and answer by reconnecting.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import resource
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

logger = logging.getLogger(__name__)

# Refusals and timeouts are summed into one warning line per this many seconds: a flood
# must not turn into a flood of log lines (the journal on an SD card pays for each).
REPORT_INTERVAL = 60.0

# For web.AppRunner(..., keepalive_timeout=KEEPALIVE_TIMEOUT). Once a connection has made a
# request the guard's deadline is off, and aiohttp's keep-alive timer closes it after this
# long idle, also when the next request head is left unfinished (the timer is not reset by
# partial data). aiohttp 3.14's default of 3630 s suits a reverse proxy; our clients are
# local and reconnect cheaply, and an idle connection holds one of a few hundred slots.
KEEPALIVE_TIMEOUT = 75.0

# A connection counts as idle this long after its last response was handed to aiohttp, so
# one closed to make room never loses a response still being written.
IDLE_AFTER = 0.5

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ConnectionGuard:
    """Counts the connections of every site that uses it, refuses those over the cap and
    closes those that deliver no request head within header_timeout seconds.

    TCP connections are refused once `limit` connections are open; Unix-socket connections
    only at `limit + reserve`, so a TCP flood cannot lock out the local clients (the chat
    bridge, the button) that reach the engine through its socket.
    """

    def __init__(
        self,
        limit: int = 256,
        header_timeout: float = 10.0,
        log: logging.Logger | None = None,
        reserve: int = 32,
    ) -> None:
        if limit < 1 or reserve < 0 or header_timeout <= 0:
            raise ValueError("limit must be >= 1, reserve >= 0 and header_timeout > 0")
        self.limit = limit
        self.reserve = reserve
        self.header_timeout = header_timeout
        self.log = log or logger
        self.open = 0  # connections admitted and not yet lost
        self.refused = 0  # totals for the process's life
        self.timed_out = 0
        # Admitted connections that have not yet made a request, with their deadlines.
        self._deadlines: dict[asyncio.BaseTransport, asyncio.TimerHandle] = {}
        # Connections between requests, the longest idle first, with when they went idle.
        self._idle: dict[asyncio.BaseTransport, float] = {}
        self._closing: set[asyncio.BaseTransport] = set()  # closed to make room, not yet lost
        self.made_room = 0  # idle connections closed for a new one, for the process's life
        self._open: set[asyncio.BaseTransport] = set()
        self._unreported_refused = 0
        self._unreported_timed_out = 0
        self._last_report = float("-inf")
        self._report_handle: asyncio.TimerHandle | None = None

        @web.middleware
        async def middleware(request: web.Request, handler: _Handler) -> web.StreamResponse:
            # The handler runs only once aiohttp has parsed the whole request head, which
            # is exactly what the deadline waits for.
            transport = request.transport
            if transport is not None:
                deadline = self._deadlines.pop(transport, None)
                if deadline is not None:
                    deadline.cancel()
                self._idle.pop(transport, None)
            try:
                return await handler(request)
            finally:
                if transport is not None and transport in self._open:
                    self._idle[transport] = asyncio.get_running_loop().time()

        self.middleware = middleware

    def install(self, app: web.Application) -> None:
        """Add the guard's middleware to `app`, before runner.setup() freezes it.

        It goes first, outermost: a middleware before it that answers by itself (a 401
        from the token check) would leave the connection looking as if it never asked.
        """
        app.middlewares.insert(0, self.middleware)

    def protocol_factory(self, runner: web.BaseRunner, *, unix: bool) -> Callable[[], Any]:
        """What a site passes to loop.create_server / create_unix_server."""
        server = runner.server
        if server is None:
            raise RuntimeError("call runner.setup() before starting a site")
        # Without the middleware every connection would be cut at header_timeout, however
        # many requests it had made (the event stream too): refuse to start instead.
        app = runner.app if isinstance(runner, web.AppRunner) else None
        if app is None or not app.middlewares or app.middlewares[0] is not self.middleware:
            raise RuntimeError("call guard.install(app) before runner.setup()")
        return lambda: _GuardedProtocol(self, server, unix)

    def _admit(self, transport: asyncio.BaseTransport, unix: bool) -> bool:
        cap = self.limit + (self.reserve if unix else 0)
        if self.open - len(self._closing) >= cap and not self._make_room():
            self.refused += 1
            self._unreported_refused += 1
            self._report_soon()
            return False
        self.open += 1
        self._open.add(transport)
        loop = asyncio.get_running_loop()
        self._deadlines[transport] = loop.call_later(self.header_timeout, self._expire, transport)
        return True

    def _make_room(self) -> bool:
        """Close the connection idle longest (if one has been idle IDLE_AFTER); whether one was."""
        now = asyncio.get_running_loop().time()
        for transport, since in self._idle.items():
            if now - since < IDLE_AFTER:
                break  # the rest went idle later still
            del self._idle[transport]
            self._closing.add(transport)
            self.made_room += 1
            transport.close()  # connection_lost follows and gives the slot back
            return True
        return False

    def _release(self, transport: asyncio.BaseTransport) -> None:
        self.open -= 1
        self._open.discard(transport)
        self._idle.pop(transport, None)
        self._closing.discard(transport)
        deadline = self._deadlines.pop(transport, None)
        if deadline is not None:
            deadline.cancel()

    def _expire(self, transport: asyncio.BaseTransport) -> None:
        del self._deadlines[transport]
        self.timed_out += 1
        self._unreported_timed_out += 1
        self._report_soon()
        # abort, not close: nothing of ours is queued to send, and the descriptor is free
        # at once. connection_lost follows and releases the slot.
        transport.abort()

    def _report_soon(self) -> None:
        if self._report_handle is not None:
            return  # a report is already due; it will include this one
        loop = asyncio.get_running_loop()
        wait = self._last_report + REPORT_INTERVAL - loop.time()
        if wait <= 0:
            self._report()
        else:
            self._report_handle = loop.call_later(wait, self._report)

    def _report(self) -> None:
        self._report_handle = None
        self._last_report = asyncio.get_running_loop().time()
        refused, self._unreported_refused = self._unreported_refused, 0
        timed_out, self._unreported_timed_out = self._unreported_timed_out, 0
        # Timeouts alone are routine (a browser's unused preconnect): worth a line, not a
        # warning. Refusals mean the cap was reached.
        self.log.log(
            logging.WARNING if refused else logging.INFO,
            "refused %d connection(s) at the cap and closed %d that sent no request head "
            "within %g s (since the last report); %d open, cap %d on TCP, %d on the Unix socket",
            refused,
            timed_out,
            self.header_timeout,
            self.open,
            self.limit,
            self.limit + self.reserve,
        )


class _GuardedProtocol(asyncio.Protocol):
    """Stands in front of aiohttp's RequestHandler for one connection.

    The handler is made only for an admitted connection, so a refused one costs no parser
    and never reaches aiohttp (which would count it in runner.server.connections).
    """

    __slots__ = ("_guard", "_handler", "_new_handler", "_transport", "_unix")

    def __init__(self, guard: ConnectionGuard, new_handler: Callable[[], Any], unix: bool) -> None:
        self._guard = guard
        self._new_handler = new_handler
        self._unix = unix
        self._handler: asyncio.Protocol | None = None
        self._transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if not self._guard._admit(transport, self._unix):
            transport.abort()  # frees the descriptor now; connection_lost finds no handler
            return
        self._transport = transport
        self._handler = self._new_handler()
        self._handler.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        handler, self._handler = self._handler, None
        if self._transport is not None:
            self._guard._release(self._transport)
            self._transport = None
        if handler is not None:
            handler.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._handler is not None:
            self._handler.data_received(data)

    def eof_received(self) -> bool | None:
        return self._handler.eof_received() if self._handler is not None else None

    def pause_writing(self) -> None:
        if self._handler is not None:
            self._handler.pause_writing()

    def resume_writing(self) -> None:
        if self._handler is not None:
            self._handler.resume_writing()


# The two sites repeat aiohttp 3.14's TCPSite.start and UnixSite.start (same arguments to
# create_server / create_unix_server), with the guard's factory in place of runner.server.


class GuardedTCPSite(web.TCPSite):
    __slots__ = ("_guard",)

    def __init__(
        self,
        runner: web.BaseRunner,
        guard: ConnectionGuard,
        host: str | None = None,
        port: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(runner, host, port, **kwargs)
        self._guard = guard

    async def start(self) -> None:
        factory = self._guard.protocol_factory(self._runner, unix=False)
        await web.BaseSite.start(self)  # registers the site with the runner
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            factory,
            self._host,
            self._port,
            ssl=self._ssl_context,
            backlog=self._backlog,
            reuse_address=self._reuse_address,
            reuse_port=self._reuse_port,
        )
        if self._server.sockets:
            self._bound_port = self._server.sockets[0].getsockname()[1]
        else:
            self._bound_port = self._port


class GuardedUnixSite(web.UnixSite):
    __slots__ = ("_guard",)

    def __init__(
        self,
        runner: web.BaseRunner,
        guard: ConnectionGuard,
        path: str | os.PathLike[str],
        **kwargs: Any,
    ) -> None:
        super().__init__(runner, path, **kwargs)
        self._guard = guard

    async def start(self) -> None:
        factory = self._guard.protocol_factory(self._runner, unix=True)
        await web.BaseSite.start(self)
        loop = asyncio.get_running_loop()
        self._server = await loop.create_unix_server(
            factory, self._path, ssl=self._ssl_context, backlog=self._backlog
        )


def raise_file_limit() -> int:
    """Raise this process's soft RLIMIT_NOFILE to its hard limit, if it can; return the
    soft limit now in force (systemd starts services at 1,024 soft, 524,288 hard)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
        # An unlimited hard limit cannot be a soft one on Linux (fs.nr_open): keep ours.
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return sys.maxsize if soft == resource.RLIM_INFINITY else soft


def default_limit(nofile: int) -> int:
    """The connection cap for a process allowed `nofile` descriptors.

    Well under the limit: the model, the serial port, the journal and the state files need
    descriptors too, the Unix socket's reserve comes on top, and asyncio accepts up to a
    listen backlog (128) at once before a refused connection is closed. Never above 512,
    however high the limit: pyserial waits with select(), which fails on a descriptor
    numbered 1,024 or more, as a reopened serial port could be with ~1,000 sockets open.
    """
    return max(1, min(512, nofile // 4))
