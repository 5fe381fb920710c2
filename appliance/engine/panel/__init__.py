"""The operator's panel: a web page served by the engine, on the engine's own API.

The page (appliance/engine/panel/: HTML, CSS and a script, no build step) shows
the state, the queue, the paper as it prints, the chat history and Twitch,
and its controls call the same API every other client calls: it adds no
privilege of its own.

Who may use it:
- Without `engine.token` the API listens on loopback only: the page is for
  a browser on the Pi itself (or through an SSH tunnel), no sign-in.
- With a token (required for the network), a person signs in with
  `engine.panel_password` (the token itself while that is empty). A wrong password costs
  the client that sent it a second before its next guess (appliance.engine.guesses): the owner,
  from another address, never waits behind a guesser. Signing in again ends the
  browser's old session.
- A session is a signed cookie (HttpOnly, SameSite=Strict, 12 hours): a random id, its
  expiry and an HMAC of both (and of the password, so a new password signs everyone
  out) under a key kept in the state directory, so an engine restart signs no one out.
  Every request that changes something must also carry the session's CSRF token (an
  HMAC of its id) in X-CSRF-Token, a header no other site's page can set, on top of the
  engine's Origin, Sec-Fetch-Site and Host checks. Signing out is kept in the same file
  until the session would have expired anyway.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import math
import secrets
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import msgspec
from aiohttp import web

from appliance.durable import write_atomic
from appliance.engine.guesses import Guesses, client_of, same_secret

log = logging.getLogger("teletype.panel")

COOKIE = "teletype_session"
SESSION_SECONDS = 12 * 3600
SESSIONS_FILE = "panel-sessions.json"  # the signing key and the signed-out sessions
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
    """Signed-in browsers: signed cookies, checked without a table, so they outlive a restart.

    `directory` (the state directory) keeps the key and the sessions signed out before
    their time; without one (tests) both live in memory.
    """

    def __init__(self, password: str, clock=time.time, guesses: Guesses | None = None,
                 directory: Path | None = None):  # fmt: skip
        self.password = password
        self.clock = clock
        self.guesses = guesses or Guesses()
        self.path = directory / SESSIONS_FILE if directory is not None else None
        self._key, self._ended = self._load()
        # A new password ends every session signed under the old one.
        self._password_mark = hashlib.sha256(password.encode()).hexdigest()[:16]

    @property
    def login_needed(self) -> bool:
        return bool(self.password)

    def new(self) -> tuple[str, Session]:
        sid = secrets.token_urlsafe(16)
        expires = int(self.clock()) + SESSION_SECONDS
        return f"{sid}.{expires}.{self._sign(f'{sid}.{expires}')}", self._session(sid, expires)

    def check(self, cookie: str) -> Session | None:
        """The session a cookie holds, if it is ours, unexpired and not signed out."""
        parts = cookie.split(".")
        if len(parts) != 3 or not parts[1].isdigit():
            return None
        sid, expires, signature = parts
        if not hmac.compare_digest(signature, self._sign(f"{sid}.{expires}")):
            return None
        if int(expires) < self.clock() or sid in self._ended:
            return None
        return self._session(sid, int(expires))

    def find(self, request: web.Request) -> Session | None:
        return self.check(request.cookies.get(COOKIE, ""))

    def end(self, request: web.Request) -> None:
        self.end_key(request.cookies.get(COOKIE, ""))

    def end_key(self, cookie: str) -> None:
        """Sign a session out for good: kept (until it would expire) across restarts."""
        session = self.check(cookie)
        if session is None:
            return
        now = self.clock()
        self._ended = {k: t for k, t in self._ended.items() if t >= now}
        self._ended[cookie.split(".")[0]] = session.expires
        self._save()

    def check_password(self, client: str, given: str) -> bool:
        """Whether `given` is the password; a wrong one costs `client` its next guesses for
        a while (ask self.guesses.wait(client) first)."""
        if same_secret(given, self.password):
            self.guesses.right(client)
            return True
        self.guesses.wrong(client)
        return False

    def _session(self, sid: str, expires: int) -> Session:
        return Session(self._sign(f"csrf:{sid}"), float(expires))

    def _sign(self, text: str) -> str:
        digest = hmac.new(self._key, f"{self._password_mark}:{text}".encode(), "sha256")
        return base64.urlsafe_b64encode(digest.digest()[:24]).decode()

    def _load(self) -> tuple[bytes, dict[str, float]]:
        if self.path is not None:
            try:
                kept = json.loads(self.path.read_bytes())
                key = bytes.fromhex(kept["key"])
                ended = {str(k): float(t) for k, t in kept.get("ended", {}).items()}
                if len(key) >= 32:
                    return key, ended
            except FileNotFoundError:
                pass
            except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
                log.warning("panel: a new session key (%s was unreadable: %s)", self.path, e)
        key = secrets.token_bytes(32)
        self._key, self._ended = key, {}
        self._save()
        return key, {}

    def _save(self) -> None:
        if self.path is None:
            return
        data = json.dumps({"key": self._key.hex(), "ended": self._ended}).encode()
        try:
            write_atomic(self.path, data, 0o600)
        except OSError as e:  # a full card: sessions then last as long as this engine
            log.warning("panel: cannot keep the sessions in %s: %s", self.path, e)


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
        body = resources.files("appliance.engine.panel").joinpath(name).read_bytes()
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
