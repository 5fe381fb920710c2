"""The operator's panel: a web page served by the engine, on the engine's own API.

The page (appliance/panel/: HTML, CSS and a script, no build step) shows
the state, the queue, the paper as it prints, the chat history and Twitch,
and its controls call the same API every other client calls: it adds no
privilege of its own.

Who may use it:
- Without `engine.token` the API listens on loopback only: the page is for
  a browser on the Pi itself (or through an SSH tunnel), no sign-in.
- With a token (required for the network), a person signs in with
  `engine.panel_password` (the token itself while that is empty). A wrong password costs a
  second, one guess at a time: a delay, never a lockout of the owner.
- A session is a random cookie (HttpOnly, SameSite=Strict, 12 hours); every
  request that changes something must also carry the session's CSRF token
  in X-CSRF-Token (a header no other site's page can set), on top of the
  engine's Origin, Sec-Fetch-Site and Host checks.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import secrets
import time
from dataclasses import dataclass
from importlib import resources

from aiohttp import web

log = logging.getLogger("teletype.panel")

COOKIE = "teletype_session"
SESSION_SECONDS = 12 * 3600
MAX_SESSIONS = 64  # browsers signed in at once (a page load without a token makes one)
WRONG_PASSWORD_DELAY = 1.0
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
FILES = {
    "/": ("index.html", "text/html"),
    "/panel/app.js": ("app.js", "text/javascript"),
    "/panel/style.css": ("style.css", "text/css"),
}
# The page runs only its own script and styles, and no other site may frame it.
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}


@dataclass
class Session:
    csrf: str
    expires: float


class Sessions:
    """Signed-in browsers, in memory (a restart signs everyone out)."""

    def __init__(self, password: str, clock=time.monotonic):
        self.password = password
        self.clock = clock
        self._sessions: dict[str, Session] = {}
        self._guessing = asyncio.Lock()

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

    async def check_password(self, given: str) -> bool:
        # One guess at a time, each wrong one a second: a delay, not a lockout.
        async with self._guessing:
            if hmac.compare_digest(given.encode(), self.password.encode()):
                return True
            await asyncio.sleep(WRONG_PASSWORD_DELAY)
            return False

    def _forget_expired(self) -> None:
        now = self.clock()
        for key in [k for k, s in self._sessions.items() if s.expires < now]:
            del self._sessions[key]


def is_panel_path(path: str) -> bool:
    """The page and its sign-in: reachable before a session or a token."""
    return path in FILES or path in ("/panel/session", "/panel/login", "/panel/logout")


def csrf_refusal(request: web.Request, session: Session) -> str | None:
    if request.method in SAFE_METHODS:
        return None
    given = request.headers.get(CSRF_HEADER, "")
    if not hmac.compare_digest(given.encode(), session.csrf.encode()):
        return f"refused: a change from the panel needs its {CSRF_HEADER}"
    return None


def add_routes(app: web.Application, sessions: Sessions) -> None:
    async def page(request: web.Request) -> web.Response:
        name, kind = FILES[request.path]
        body = resources.files("appliance.panel").joinpath(name).read_bytes()
        return web.Response(body=body, content_type=kind, charset="utf-8", headers=HEADERS)

    def signed_in(session: Session, key: str | None = None) -> web.Response:
        response = web.json_response({"signed_in": True, "csrf": session.csrf}, headers=HEADERS)
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
        return web.json_response({"signed_in": False, "csrf": None}, headers=HEADERS)

    async def login(request: web.Request) -> web.Response:
        if request.content_type != "application/json":
            raise web.HTTPUnsupportedMediaType(reason="send the body as application/json")
        try:
            given = (await request.json()).get("password", "")
        except (ValueError, AttributeError):
            given = None
        if not isinstance(given, str):
            raise web.HTTPBadRequest(reason='send {"password": "..."}')
        if not await sessions.check_password(given):
            log.warning("panel: a wrong password from %s", request.remote or "the socket")
            return web.json_response({"error": "wrong password"}, status=401, headers=HEADERS)
        key, session = sessions.new()
        log.info("panel: signed in from %s", request.remote or "the socket")
        return signed_in(session, key)

    async def logout(request: web.Request) -> web.Response:
        sessions.end(request)
        response = web.Response(status=204, headers=HEADERS)
        response.del_cookie(COOKIE, path="/")
        return response

    for path in FILES:
        app.router.add_route("GET", path, page)
    app.router.add_route("GET", "/panel/session", session_get)
    app.router.add_route("POST", "/panel/login", login)
    app.router.add_route("POST", "/panel/logout", logout)
