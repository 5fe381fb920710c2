"""Password and token guessing: each wrong guess costs the client that made it, no one else.

The panel's password and the API's bearer token share one budget per client: after a
wrong guess that client's next guess (of either) is refused, without being checked,
until WRONG_GUESS_DELAY has passed. There is no sleep and no lock: an answer goes out at
once (401, or 429 with Retry-After), so nothing runs on after a client hangs up, and
the owner signing in from another address never waits behind a guesser. A guesser gets
1 / WRONG_GUESS_DELAY guesses a second per address (a /64 for IPv6, which hands out
addresses by the billion); the owner at worst waits that long, if they share one.
"""

from __future__ import annotations

import hmac
import ipaddress
import socket
import struct
import time
from collections import OrderedDict

from aiohttp import web

WRONG_GUESS_DELAY = 1.0  # seconds a client waits after a wrong guess
MAX_CLIENTS = 4096  # clients remembered; the oldest go first (their delay is long over)


def same_secret(given: str, secret: str) -> bool:
    """A constant-time comparison that takes any string a client can send.

    A header holding bytes that are not UTF-8 arrives with lone surrogates in it
    (aiohttp's surrogateescape), and a JSON body can spell one: str.encode() would
    raise, and the answer was a 500.
    """
    return hmac.compare_digest(
        given.encode("utf-8", "surrogatepass"), secret.encode("utf-8", "surrogatepass")
    )


def client_of(request: web.Request) -> str:
    """Who is guessing: the address (its /64 for IPv6), or the local user on the socket."""
    transport = request.transport
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is not None and sock.family == socket.AF_UNIX:
        try:
            creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
            return f"uid:{struct.unpack('3i', creds)[1]}"
        except OSError:
            return "unix"
    address = request.remote or ""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


class Guesses:
    """When each client may guess again, after its last wrong guess."""

    def __init__(self, delay: float = WRONG_GUESS_DELAY, clock=time.monotonic):
        self.delay = delay
        self.clock = clock
        self._next: OrderedDict[str, float] = OrderedDict()
        self.wrong_total = 0  # for the log and the tests

    def wait(self, client: str) -> float:
        """Seconds until `client` may guess again; 0 when it may now."""
        until = self._next.get(client)
        if until is None:
            return 0.0
        left = until - self.clock()
        if left <= 0:
            del self._next[client]
            return 0.0
        return left

    def wrong(self, client: str) -> None:
        self.wrong_total += 1
        self._next.pop(client, None)
        self._next[client] = self.clock() + self.delay
        while len(self._next) > MAX_CLIENTS:
            self._next.popitem(last=False)

    def right(self, client: str) -> None:
        self._next.pop(client, None)
