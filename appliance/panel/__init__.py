"""The operator's panel: a web page served by the engine, on the engine's own API.

The page (appliance/panel/: HTML, CSS and a script, no build step) shows
the state, the queue, the paper as it prints, the chat history and Twitch,
and its controls call the same API every other client calls: it adds no
privilege of its own.

Who may use it:
- Without `engine.token` the API listens on loopback only: the page is for
  a browser on the Pi itself (or through an SSH tunnel), no sign-in.
- With a token (required for the network), a person signs in with
  `engine.panel_password` (the token itself while that is empty). A wrong password costs
  the client that sent it a second before its next guess (appliance.guesses): the owner,
  from another address, never waits behind a guesser. Signing in again ends the
  browser's old session.
- A session is a random cookie (HttpOnly, SameSite=Strict, 12 hours); every
  request that changes something must also carry the session's CSRF token
  in X-CSRF-Token (a header no other site's page can set), on top of the
  engine's Origin, Sec-Fetch-Site and Host checks.
"""

from __future__ import annotations

import logging
import math
import secrets
import time
from dataclasses import dataclass
from importlib import resources

import msgspec
from aiohttp import web

from appliance.guesses import Guesses, client_of, same_secret

log = logging.getLogger("teletype.panel")

COOKIE = "teletype_session"
SESSION_SECONDS = 12 * 3600
MAX_SESSIONS = 64  # browsers signed in at once (a page load without a token makes one)
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
FILES = {
    "/": ("index.html", "text/html"),
    "/panel/app.js": ("app.js", "text/javascript"),
    "/panel/style.css": ("style.css", "text/css"),
    "/panel/paper.js": ("paper.js", "text/javascript"),
    "/panel/favicon.svg": ("favicon.svg", "image/svg+xml"),
    "/overlay": ("overlay.html", "text/html"),
    "/panel/overlay.js": ("overlay.js", "text/javascript"),
    "/panel/overlay.css": ("overlay.css", "text/css"),
}
# The page runs only its own script and styles, and no other site may frame it.
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}


class Login(msgspec.Struct):
    password: str


@dataclass
class Session:
    csrf: str
    expires: float


class Sessions:
    """Signed-in browsers, in memory (a restart signs everyone out)."""

    def __init__(self, password: str, clock=time.monotonic, guesses: Guesses | None = None):
        self.password = password
        self.clock = clock
        self._sessions: dict[str, Session] = {}
        self.guesses = guesses or Guesses()

    @property
    def login_needed(self) -> bool:
        return bool(self.password)

    def new(self) -> tuple[str, Session]:
        self._forget_expired()
        while len(self._sessions) >= MAX_SESSIONS:  # the oldest browser signs in again
            del self._sessions[min(self._sessions, key=lambda k: self._sessions[k].expires)]
        key = secrets.token_urlsafe(32)
        session = Session(secrets.token_urlsafe(32), self.clock() + SESSION_SECONDS)
        self._sessions[key] = session
        return key, session

    def find(self, request: web.Request) -> Session | None:
        key = request.cookies.get(COOKIE, "")
        session = self._sessions.get(key)
        if session is None or session.expires < self.clock():
            return None
        return session

    def end(self, request: web.Request) -> None:
        self._sessions.pop(request.cookies.get(COOKIE, ""), None)

    def check_password(self, client: str, given: str) -> bool:
        """Whether `given` is the password; a wrong one costs `client` its next guesses for
        a while (ask self.guesses.wait(client) first)."""
        if same_secret(given, self.password):
            self.guesses.right(client)
            return True
        self.guesses.wrong(client)
        return False

    def _forget_expired(self) -> None:
        now = self.clock()
        for key in [k for k, s in self._sessions.items() if s.expires < now]:
            del self._sessions[key]


def is_panel_path(path: str) -> bool:
    """The page and its sign-in: reachable before a session or a token."""
    return path in FILES or path in (
        "/panel/session",
        "/panel/login",
        "/panel/logout",
        "/panel/overlay-address",
    )


def csrf_refusal(request: web.Request, session: Session, changes: bool = False) -> str | None:
    """Why a signed-in request is refused, if it is: a change (any method but a read's,
    or a read that prints, `changes`) must carry the session's CSRF token."""
    if request.method in SAFE_METHODS and not changes:
        return None
    given = request.headers.get(CSRF_HEADER, "")
    if not same_secret(given, session.csrf):
        return f"refused: a change from the panel needs its {CSRF_HEADER}"
    return None


def too_soon(wait: float) -> web.Response:
    """429 for a guess that came too soon after a wrong one (password or token)."""
    seconds = max(1, math.ceil(wait))
    return web.json_response(
        {"error": f"a wrong password or token from here a moment ago; again in {seconds} s"},
        status=429, headers={**HEADERS, "Retry-After": str(seconds)},
    )  # fmt: skip


def add_routes(app: web.Application, sessions: Sessions, overlay: str = "") -> None:
    """The page, its files and its sign-in; `overlay`: the stream overlay's address, with its
    read-only token, shown to whoever is signed in."""

    async def page(request: web.Request) -> web.Response:
        name, kind = FILES[request.path]
        body = resources.files("appliance.panel").joinpath(name).read_bytes()
        return web.Response(body=body, content_type=kind, charset="utf-8", headers=HEADERS)

    def signed_in(session: Session, key: str | None = None) -> web.Response:
        answer = {"signed_in": True, "csrf": session.csrf, "password": sessions.login_needed}
        response = web.json_response(answer, headers=HEADERS)
        if key is not None:
            response.set_cookie(COOKIE, key, max_age=SESSION_SECONDS, httponly=True,
                                samesite="Strict", path="/")  # fmt: skip
        return response

    async def session_get(request: web.Request) -> web.Response:
        session = sessions.find(request)
        if session is not None:
            return signed_in(session)
        if not sessions.login_needed:
            # No token: the engine listens on loopback only, and its API asks
            # no one for anything; the page gets a session for the CSRF check.
            key, session = sessions.new()
            return signed_in(session, key)
        return web.json_response(
            {"signed_in": False, "csrf": None, "password": True}, headers=HEADERS
        )

    async def login(request: web.Request) -> web.Response:
        if request.content_type != "application/json":
            raise web.HTTPUnsupportedMediaType(reason="send the body as application/json")
        try:
            given = msgspec.json.decode(await request.read(), type=Login).password
        except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
            raise web.HTTPBadRequest(reason='send {"password": "..."}') from None
        client = client_of(request)
        wait = sessions.guesses.wait(client)
        if wait > 0:  # not even checked: this client's last guess was wrong a moment ago
            return too_soon(wait)
        if not sessions.check_password(client, given):
            log.warning("panel: a wrong password from %s", client)
            return web.json_response({"error": "wrong password"}, status=401, headers=HEADERS)
        sessions.end(request)  # a browser signing in again leaves no old session behind
        key, session = sessions.new()
        log.info("panel: signed in from %s", client)
        return signed_in(session, key)

    async def logout(request: web.Request) -> web.Response:
        sessions.end(request)
        response = web.Response(status=204, headers=HEADERS)
        response.del_cookie(COOKIE, path="/")
        return response

    async def overlay_address(request: web.Request) -> web.Response:
        if sessions.find(request) is None:
            return web.json_response({"error": "sign in first"}, status=401, headers=HEADERS)
        return web.json_response({"address": overlay or "/overlay"}, headers=HEADERS)

    for path in FILES:
        app.router.add_route("GET", path, page)
    app.router.add_route("GET", "/panel/overlay-address", overlay_address)
    app.router.add_route("GET", "/panel/session", session_get)
    app.router.add_route("POST", "/panel/login", login)
    app.router.add_route("POST", "/panel/logout", logout)
