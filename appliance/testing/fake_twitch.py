"""A fake Twitch (OAuth + Helix + EventSub websocket) on loopback, for offline tests
of a twitchio 3.3.x bot.

One aiohttp.web app on 127.0.0.1:<random port> serves three "hosts" by path prefix:

    /oauth2/...   stands in for https://id.twitch.tv/           (twitchio Route.ID_BASE)
    /helix/...    stands in for https://api.twitch.tv/helix/    (twitchio Route.BASE)
    /ws           stands in for wss://eventsub.wss.twitch.tv/ws (twitchio.eventsub.websockets.WSS)

`patch_twitchio(fake)` points twitchio at it (those three module globals are the only
places twitchio 3.3.2 hard-codes a Twitch host; every OAuth/Helix request is built by
twitchio.http.Route at call time, and the websocket URL is an f-string over the module
global WSS evaluated in Websocket.connect()).

The fake is deliberately strict where twitchio's behaviour depends on it (status codes,
error bodies, the JSON fields twitchio indexes with [] ), and lenient elsewhere. Scopes are
enforced only where the chat bridge needs them: channel.chat.message subscriptions need
user:read:chat, Send Chat Message with a user token needs user:write:chat.

Everything the bot does is recorded (`requests`, `chat_messages`, `dropped_messages`,
`subscription_posts`, `sessions`) and `wait_until(predicate)` waits for it without sleeps.

Twitch's failure modes, all off until a test asks for them:

    revoke_subscriptions()      EventSub `revocation` frames (authorization_revoked, ...)
    unused_session_timeout      close 4003 "connection unused" for a socket with no subscription
    silence()                   keepalives stop on the open sockets (a dead network path)
    push_chat(duplicate=True)   the same notification twice (at-least-once delivery)
    push_chat(source_broadcaster=...)  a shared-chat message from another channel
    drop_next_posts()           Send Chat Message answers 200 with is_sent=false + drop_reason
    fail_next() / stall_next()  5xx answers / slow answers on OAuth, Helix and the /ws upgrade
    reset_next()                the connection dropped with no answer (a reset)
    rate_limit_next()           429 with Twitch's Ratelimit-Limit/-Remaining/-Reset headers
    chat_limit                  Send Chat Message over 20 in 30 s: dropped, msg_ratelimit
    slow_down_next()            the device-code poll answers 400 "slow_down"
    ban()                       the bot is banned: chat_user_banned, posts dropped msg_banned
    reset_sessions()            EventSub connections dropped with no close frame
    send_session_reconnect()    events go on the old socket until the new one is welcomed;
                                an old socket not closed within reconnect_grace: 4004
    refuse_refresh, revoke_user_tokens()   refresh refused / the user disconnected the app
    expire_device_code(), decline_device(), device_code_lifetime   device-code flow endings
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import itertools
import json
import secrets
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

__all__ = ["FakeTwitch", "FakeUser", "TokenInfo", "patch_twitchio", "rfc3339"]

# Per-request storage key for the parsed JSON body (aiohttp >= 3.13 warns on str keys).
_JSON_KEY = web.RequestKey("json", object) if hasattr(web, "RequestKey") else "json"

# The "error" field of Twitch's error bodies.
_PHRASES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    409: "Conflict",
    422: "Unprocessable Entity",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


def rfc3339(dt: datetime.datetime | None = None) -> str:
    """Timestamp the way Twitch writes them (UTC, 'Z' suffix; Twitch sends 9 fractional digits)."""
    dt = dt or datetime.datetime.now(datetime.UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.%f") + "000Z"


@dataclass
class FakeUser:
    id: str
    login: str
    display_name: str

    def helix(self, base: str) -> dict[str, Any]:
        # twitchio.User.__init__ indexes every one of these keys except "email" (.get).
        return {
            "id": self.id,
            "login": self.login,
            "display_name": self.display_name,
            "type": "",
            "broadcaster_type": "",
            "description": "",
            "profile_image_url": f"{base}static/{self.login}.png",
            "offline_image_url": "",
            "view_count": 0,
            "created_at": "2020-01-01T00:00:00Z",
        }


@dataclass
class TokenInfo:
    access: str
    refresh: str | None  # None for app tokens
    user_id: str | None  # None for app tokens
    scopes: list[str]
    expires_at: float  # time.monotonic() deadline
    revoked: bool = False

    @property
    def is_app(self) -> bool:
        return self.user_id is None

    def expires_in(self) -> int:
        return max(0, int(self.expires_at - time.monotonic()))

    @property
    def valid(self) -> bool:
        return not self.revoked and time.monotonic() < self.expires_at


@dataclass
class RecordedRequest:
    method: str
    path: str  # e.g. "/helix/chat/messages", "/oauth2/token"
    query: dict[str, list[str]]
    json: Any
    authorization: str | None
    status: int = 0


@dataclass
class Session:
    """One EventSub websocket connection as the fake sees it."""

    id: str
    ws: web.WebSocketResponse
    requested_keepalive: int
    connected_at: float = field(default_factory=time.monotonic)
    closed_at: float | None = None
    close_code: int | None = None  # the code the fake closed with, else the client's
    keepalive_task: asyncio.Task[None] | None = None
    unused_task: asyncio.Task[None] | None = None  # the 4003 "connection unused" timer
    silenced: bool = False  # FakeTwitch.silence(): no more keepalives on this socket
    last_sent: float = 0.0  # when the fake last sent a frame on it (keepalives follow silence)
    transport: Any = None  # the TCP connection under it (reset_sessions aborts it)

    @property
    def open(self) -> bool:
        return self.closed_at is None and not self.ws.closed


@dataclass
class _DeviceCode:
    device_code: str
    user_code: str
    scopes: list[str]
    expires_at: float  # time.monotonic() deadline (expires_in from POST /oauth2/device)
    user_id: str | None = None  # set by FakeTwitch.authorize_device()
    used: bool = False
    rejection: str | None = None  # set by FakeTwitch.decline_device(): the poll's message


@dataclass
class _CannedResponse:
    status: int
    body: Any
    headers: dict[str, str]


class FakeTwitch:
    """In-process fake of the parts of Twitch twitchio's Bot uses.

    Parameters
    ----------
    client_id / client_secret:
        The app credentials the fake accepts (client_secret=None -> a public client: the
        client_credentials grant is refused, like Twitch does for public clients).
    keepalive_interval:
        Seconds between `session_keepalive` frames. "session" (the default) is Twitch's
        own: a keepalive after each keepalive_timeout_seconds the session asked for (10
        for twitchio) with nothing else sent. None = never send keepalives.
    echo_sent_messages:
        Like real Twitch, a message sent via POST chat/messages comes back as a
        channel.chat.message notification (chatter == sender), so the bot sees its own
        messages and must ignore them.
    device_interval:
        The `interval` POST /oauth2/device answers (seconds between token polls).
    device_code_lifetime:
        The `expires_in` POST /oauth2/device answers (Twitch: 1800). A device code polled
        after that many seconds (monotonic) answers 400 "invalid device code".
    """

    def __init__(
        self,
        *,
        client_id: str = "fake-client-id",
        client_secret: str | None = "fake-client-secret",
        keepalive_interval: float | str | None = "session",
        echo_sent_messages: bool = True,
        device_interval: int = 5,
        device_code_lifetime: int = 1800,
    ) -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        self.keepalive_interval = keepalive_interval
        self.echo_sent_messages = echo_sent_messages
        self.device_interval = device_interval
        self.device_code_lifetime = device_code_lifetime
        # Answer the next N websocket upgrade attempts with HTTP 503 (Twitch down / network
        # trouble) to exercise twitchio's reconnect backoff. Counted in refused_ws_attempts
        # (so is every upgrade answered by fail_next/queue_response on "/ws").
        self.refuse_websockets = 0
        self.refused_ws_attempts = 0
        # Close a socket that holds no enabled subscription this many seconds after its
        # welcome (or after a revocation took its last one) with 4003 "connection unused".
        # None = never. Real Twitch: 10 s.
        self.unused_session_timeout: float | None = None
        # True: the refresh_token grant answers 400 "Invalid refresh token" even for a valid
        # refresh token (which stays valid, so a test can switch this back off).
        self.refuse_refresh = False
        # Send Chat Message: at most this many messages per sender in this many seconds
        # (Twitch: 20 in 30 s, 100 for a moderator); over it, dropped with msg_ratelimit.
        self.chat_limit: tuple[int, float] | None = (20, 30.0)
        self._chat_sent: dict[str, list[float]] = {}
        self.banned: set[str] = set()  # user ids banned from the channel's chat
        # After a session_reconnect, seconds the old socket may stay open once the new
        # one is welcomed; then Twitch closes it 4004 "reconnect grace time expired".
        self.reconnect_grace = 30.0
        self._slow_downs = 0
        self._resets: dict[tuple[str, str], int] = {}

        self.users: dict[str, FakeUser] = {}
        self.tokens: dict[str, TokenInfo] = {}  # access token -> info
        self.refresh_tokens: dict[str, TokenInfo] = {}  # refresh token -> info
        self.device_codes: dict[str, _DeviceCode] = {}

        # --- recordings (read these from tests) ---
        self.requests: list[RecordedRequest] = []
        self.stalled: list[RecordedRequest] = []  # requests held by stall_next, when held
        self.chat_messages: list[dict[str, Any]] = []  # POST chat/messages bodies (+ "_token_user")
        # POST chat/messages answered is_sent=false by drop_next_posts() (+ "drop_reason").
        self.dropped_messages: list[dict[str, Any]] = []
        self.subscription_posts: list[dict[str, Any]] = []  # every POST eventsub/subscriptions body
        self.subscriptions: dict[
            str, dict[str, Any]
        ] = {}  # id -> subscription object (as returned)
        self.sessions: list[Session] = []  # every websocket connection, in order

        self._canned: dict[tuple[str, str], list[_CannedResponse]] = {}
        self._stalls: dict[tuple[str, str], list[float]] = {}
        self._quick_again = asyncio.Event()  # set by stop_stalling: held requests go on
        self._drops: list[dict[str, str]] = []
        self._ids = itertools.count(1)
        self._changed = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self.port: int = 0

        app = web.Application()
        app.router.add_post("/oauth2/token", self._oauth_token)
        app.router.add_post("/oauth2/device", self._oauth_device)
        app.router.add_get("/oauth2/validate", self._oauth_validate)
        app.router.add_post("/oauth2/revoke", self._oauth_revoke)
        app.router.add_get("/helix/users", self._helix_users)
        app.router.add_post("/helix/eventsub/subscriptions", self._helix_sub_create)
        app.router.add_get("/helix/eventsub/subscriptions", self._helix_sub_list)
        app.router.add_delete("/helix/eventsub/subscriptions", self._helix_sub_delete)
        app.router.add_post("/helix/chat/messages", self._helix_chat_send)
        app.router.add_get("/ws", self._ws)
        app.middlewares.append(self._record_and_can)
        self.app = app

    # ------------------------------------------------------------------ lifecycle
    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    @property
    def helix_base(self) -> str:
        return f"{self.base}helix/"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    async def start(self) -> None:
        self._runner = web.AppRunner(
            self.app, handle_signals=False, access_log=None, shutdown_timeout=1.0
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        # Close websockets ourselves first: runner.cleanup() would otherwise wait on them.
        for s in self.sessions:
            if s.open:
                s.close_code = 1001
                await s.ws.close(code=1001, message=b"server shutdown")
        if self._runner:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeTwitch:
        await self.start()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.stop()

    # ------------------------------------------------------------------ test-facing setup
    def add_user(self, user_id: str, login: str, display_name: str | None = None) -> FakeUser:
        user = FakeUser(user_id, login, display_name or login)
        self.users[user_id] = user
        return user

    def issue_user_token(
        self, user_id: str, scopes: list[str] | None = None, *, expires_in: int = 4 * 3600
    ) -> tuple[str, str]:
        """Mint a user access token + refresh token. Keep expires_in > 3600: twitchio
        refreshes any token whose validate says expires_in <= 3600 when it is added."""
        info = TokenInfo(
            access="u" + secrets.token_hex(12),
            refresh="r" + secrets.token_hex(12),
            user_id=user_id,
            scopes=list(scopes or ["user:read:chat", "user:write:chat", "user:bot"]),
            expires_at=time.monotonic() + expires_in,
        )
        self.tokens[info.access] = info
        self.refresh_tokens[info.refresh] = info  # type: ignore[index]
        return info.access, info.refresh  # type: ignore[return-value]

    def expire_token(self, access: str) -> None:
        """Make a token invalid: validate -> 401, Helix -> 401 'Invalid OAuth token'."""
        self.tokens[access].expires_at = 0

    def queue_response(
        self,
        method: str,
        path: str,
        status: int,
        body: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Answer the next `method path` (e.g. "POST", "/helix/chat/messages") with this
        canned response instead of the normal handler. Queue several for several calls."""
        self._canned.setdefault((method.upper(), path), []).append(
            _CannedResponse(status, body, headers or {})
        )

    def fail_next(
        self, method: str, path: str, status: int = 500, n: int = 1, *, message: str | None = None
    ) -> None:
        """Answer the next `n` requests to `method path` with HTTP `status` and Twitch's error
        body (Helix: {"error", "status", "message"}; id.twitch.tv: {"status", "message"}),
        instead of handling them. Works for any route: "/oauth2/validate", "/oauth2/token"
        (refresh and device polling alike), "POST /helix/eventsub/subscriptions",
        "/helix/chat/messages", ... For "GET /ws" the websocket upgrade is refused with that
        status (no body) and counted in `refused_ws_attempts`.

        Note twitchio retries a 503 once, after 3 s, before giving up."""
        # Twitch API reference "Response Codes": 500 Internal Server Error, 503 Service
        # Unavailable; the body is Twitch's usual error object.
        text = message if message is not None else _PHRASES.get(status, "Error")
        body: Any
        if path == "/ws":
            body = None
        elif path.startswith("/oauth2/"):
            body = {"status": status, "message": text}
        else:
            body = {"error": _PHRASES.get(status, "Error"), "status": status, "message": text}
        for _ in range(n):
            self.queue_response(method, path, status, body)

    def stall_next(self, method: str, path: str, seconds: float, n: int = 1) -> None:
        """Make the next `n` requests to `method path` wait `seconds` before they are handled
        normally (or answered by fail_next/queue_response): Twitch being slow, so a client's
        timeout fires. Works for every route, including the "GET /ws" upgrade (the
        handshake is held, so ws_connect times out)."""
        # No Twitch doc page: latency is a property of the network path, not an API shape.
        self._stalls.setdefault((method.upper(), path), []).extend([seconds] * n)

    def stop_stalling(self, method: str, path: str) -> None:
        """Twitch is quick again on `method path`: the stalls still queued are dropped and
        the requests held now go on (a client that gave up on one sees a reset)."""
        self._stalls.pop((method.upper(), path), None)
        self._quick_again.set()
        self._quick_again = asyncio.Event()

    def reset_next(self, method: str, path: str, n: int = 1) -> None:
        """The next `n` requests to `method path` get no answer: the connection is dropped
        (a reset on a flaky network path). aiohttp raises ServerDisconnectedError or
        ClientOSError in the client."""
        key = (method.upper(), path)
        self._resets[key] = self._resets.get(key, 0) + n

    def rate_limit_next(self, method: str, path: str, reset_in: float = 1.0, n: int = 1) -> None:
        """The next `n` requests to `method path` answer 429 with Twitch's rate-limit
        headers: Ratelimit-Limit, Ratelimit-Remaining 0 and Ratelimit-Reset, the Unix time
        (whole seconds, as Twitch sends it; rounded up) at which the bucket is full again."""
        # API reference, "Rate limits": a 429 carries Ratelimit-Reset, an epoch timestamp.
        reset = str(int(time.time() + reset_in) + 1)
        headers = {"Ratelimit-Limit": "800", "Ratelimit-Remaining": "0", "Ratelimit-Reset": reset}
        body = {"error": "Too Many Requests", "status": 429, "message": "Too Many Requests"}
        if path.startswith("/oauth2/"):
            body = {"status": 429, "message": "Too Many Requests"}
        for _ in range(n):
            self.queue_response(method, path, 429, body, headers)

    def slow_down_next(self, n: int = 1) -> None:
        """The next `n` device-code token polls answer 400 "slow_down" (RFC 8628: the
        client must add 5 s to its interval)."""
        self._slow_downs += n

    async def ban(self, user_id: str) -> None:
        """The broadcaster bans `user_id`: Twitch revokes the chat subscriptions it holds as
        that user with chat_user_banned, and drops its posts with msg_banned."""
        self.banned.add(user_id)
        await self.revoke_subscriptions(
            "chat_user_banned", match=lambda sub: sub["condition"].get("user_id") == user_id
        )

    def drop_next_posts(self, code: str, message: str, n: int = 1) -> None:
        """The next `n` otherwise valid POST /helix/chat/messages are not delivered: Twitch
        answers 200 with {"data": [{"message_id": "", "is_sent": false,
        "drop_reason": {"code": code, "message": message}}]} (Send Chat Message reference,
        Response Body). They are recorded in `dropped_messages`, not in `chat_messages`, and
        not echoed back as chat.

        Twitch's Send Chat Message reference documents drop_reason only as {code, message}
        and lists no codes; the codes seen in practice are the chat NOTICE msg-ids Twitch
        documents ("IRC msg-id reference"), e.g.:

            msg_duplicate       "Your message was not sent because it is identical to the
                                 previous one you sent, less than 30 seconds ago."
            msg_ratelimit       "Your message was not sent because you are sending messages
                                 too quickly."
            msg_slowmode        "This room is in slow mode and you are sending messages too
                                 quickly. You will be able to talk again in 5 seconds."
            msg_followersonly   "This room is in 10 minutes followers-only mode. Follow
                                 streamer to join the community!"
            msg_subsonly, msg_emoteonly, msg_verified_email, msg_banned, msg_timedout,
            msg_channel_suspended, msg_rejected (AutoMod)
        """
        self._drops.extend({"code": code, "message": message} for _ in range(n))

    def authorize_device(self, user_code: str, user_id: str) -> None:
        """The human side of the device-code flow: user `user_id` enters `user_code`."""
        self._device_by_user_code(user_code).user_id = user_id

    def expire_device_code(self, user_code: str) -> None:
        """Let the device code behind `user_code` run out now (as after `expires_in`): the
        token poll answers 400 {"status": 400, "message": "invalid device code"}."""
        self._device_by_user_code(user_code).expires_at = 0.0

    def decline_device(self, user_code: str, *, message: str = "invalid device code") -> None:
        """The person at twitch.tv/activate declines (clicks "Cancel") instead of
        authorizing. Twitch's device-flow doc documents no answer for this; after a decline
        the code is no longer usable, which Twitch answers like any unusable code: 400
        "invalid device code" (the one rejection twitchio's DeviceCodeRejection knows besides
        "invalid refresh token"). Pass `message` to try another answer (twitchio turns an
        unknown one into a ValueError, not a DeviceCodeFlowException)."""
        self._device_by_user_code(user_code).rejection = message

    def revoke_user_tokens(self, user_id: str) -> int:
        """The user disconnects the app in their Twitch settings (Connections): every access
        and refresh token of that user stops working. validate -> 401 "invalid access token",
        Helix -> 401 "Invalid OAuth token", refresh -> 400 "Invalid refresh token".
        Returns how many access tokens were invalidated. (Twitch also revokes the user's
        EventSub subscriptions with status authorization_revoked; call
        `revoke_subscriptions()` for that.)"""
        # Authentication guide "Tokens don't last forever": a user disconnecting the app
        # invalidates its access and refresh tokens.
        n = 0
        for info in self.tokens.values():
            if info.user_id == user_id and not info.revoked:
                info.revoked = True
                n += 1
        for refresh, info in list(self.refresh_tokens.items()):
            if info.user_id == user_id:
                del self.refresh_tokens[refresh]
        return n

    def _device_by_user_code(self, user_code: str) -> _DeviceCode:
        for dc in self.device_codes.values():
            if dc.user_code == user_code:
                return dc
        raise KeyError(user_code)

    # ------------------------------------------------------------------ waiting
    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def wait_until(self, predicate: Callable[[], Any], timeout: float = 5.0) -> Any:
        """Wait until predicate() is truthy (re-checked on every recorded change)."""
        async with asyncio.timeout(timeout):
            async with self._changed:
                await self._changed.wait_for(predicate)
        return predicate()

    def open_sessions(self) -> list[Session]:
        return [s for s in self.sessions if s.open]

    # ------------------------------------------------------------------ EventSub: pushing events
    def chat_event(
        self,
        text: str,
        *,
        broadcaster: FakeUser,
        chatter: FakeUser,
        badges: list[dict[str, str]] | None = None,
        color: str = "#1E90FF",
        message_id: str | None = None,
        reply: dict[str, Any] | None = None,
        source_broadcaster: FakeUser | None = None,
        source_badges: list[dict[str, str]] | None = None,
    ) -> dict[str, Any]:
        """A channel.chat.message `event` object, field for field as Twitch sends it.

        twitchio.ChatMessage indexes (KeyError if missing): broadcaster_user_id/_login/_name,
        chatter_user_id/_login/_name, message_id, message.text, message.fragments[*].text/.type,
        color, badges[*].set_id/.id/.info, message_type, cheer, reply,
        channel_points_custom_reward_id, channel_points_animation_id, source_broadcaster_user_id.
        It .get()s: source_message_id, source_badges, is_source_only.

        source_broadcaster: the message was sent in that channel and reaches `broadcaster`'s
        chat through a shared-chat session: source_broadcaster_user_id/_login/_name name it,
        source_message_id is the message's ID over there, source_badges the chatter's badges
        over there (default []). All four are null for a message sent in the channel itself.
        """
        # EventSub subscription types reference, channel.chat.message: the source_* fields are
        # null unless the message comes from another channel of a shared-chat session.
        shared = source_broadcaster is not None
        return {
            "broadcaster_user_id": broadcaster.id,
            "broadcaster_user_login": broadcaster.login,
            "broadcaster_user_name": broadcaster.display_name,
            "source_broadcaster_user_id": source_broadcaster.id if shared else None,
            "source_broadcaster_user_login": source_broadcaster.login if shared else None,
            "source_broadcaster_user_name": source_broadcaster.display_name if shared else None,
            "chatter_user_id": chatter.id,
            "chatter_user_login": chatter.login,
            "chatter_user_name": chatter.display_name,
            "message_id": message_id or str(uuid.uuid4()),
            "source_message_id": str(uuid.uuid4()) if shared else None,
            "is_source_only": False if shared else None,
            "message": {
                "text": text,
                "fragments": [
                    {
                        "type": "text",
                        "text": text,
                        "cheermote": None,
                        "emote": None,
                        "mention": None,
                    }
                ],
            },
            "color": color,
            "badges": badges if badges is not None else [],
            "source_badges": (source_badges or []) if shared else None,
            "message_type": "text",
            "cheer": None,
            "reply": reply,
            "channel_points_custom_reward_id": None,
            "channel_points_animation_id": None,
        }

    async def push_notification(
        self,
        sub_type: str,
        event: dict[str, Any],
        *,
        match: Callable[[dict], bool],
        duplicate: bool = False,
    ) -> int:
        """Send `event` to every open session holding an enabled subscription of `sub_type`
        for which match(condition) is true. Returns how many notifications were sent.

        duplicate: send each frame twice, byte for byte (same metadata.message_id), as
        Twitch's at-least-once delivery may."""
        sent = 0
        for sub in list(self.subscriptions.values()):
            if sub["type"] != sub_type or sub["status"] != "enabled" or not match(sub["condition"]):
                continue
            session = self._session(sub["transport"]["session_id"])
            if session is None or not session.open:
                continue
            frame = {
                "metadata": {
                    "message_id": str(uuid.uuid4()),
                    "message_type": "notification",
                    "message_timestamp": rfc3339(),
                    "subscription_type": sub_type,
                    "subscription_version": sub["version"],
                },
                "payload": {"subscription": sub, "event": event},
            }
            text = json.dumps(frame)
            await session.ws.send_str(text)
            session.last_sent = time.monotonic()
            if duplicate:
                # WebSocket reference, metadata.message_id: "Twitch sends messages at least
                # once ... you may receive a notification twice ... the message ID will be
                # the same."
                await session.ws.send_str(text)
            sent += 1
        return sent

    async def push_chat(
        self,
        text: str,
        *,
        broadcaster: FakeUser,
        chatter: FakeUser,
        badges: list[dict[str, str]] | None = None,
        duplicate: bool = False,
        source_broadcaster: FakeUser | None = None,
        **kw: Any,
    ) -> str:
        """A chatter says `text` in `broadcaster`'s chat. Returns the message_id.
        Raises if no open session is subscribed (the bot would never see it).

        duplicate: the notification arrives twice, identical (at-least-once delivery).
        source_broadcaster: the chatter said it in that channel, and it reaches
        `broadcaster`'s chat through a shared-chat session (see chat_event); it still
        arrives on the subscription for `broadcaster`."""
        event = self.chat_event(
            text,
            broadcaster=broadcaster,
            chatter=chatter,
            badges=badges,
            source_broadcaster=source_broadcaster,
            **kw,
        )
        n = await self.push_notification(
            "channel.chat.message",
            event,
            match=lambda c: c.get("broadcaster_user_id") == broadcaster.id,
            duplicate=duplicate,
        )
        if not n:
            raise AssertionError(
                "no open websocket session is subscribed to channel.chat.message for this channel"
            )
        return event["message_id"]

    async def close_sessions(
        self, code: int = 4000, message: bytes = b"test: forced disconnect"
    ) -> None:
        """Server-side close of every open EventSub websocket. twitchio reconnects on any
        code except 4001 (client sent a message) and 4003 (connection unused): those close
        for good."""
        for s in self.open_sessions():
            s.close_code = code
            await s.ws.close(code=code, message=message)

    def reset_sessions(self) -> int:
        """The network drops every open EventSub connection: no close frame, the TCP
        connection is just gone (a Wi-Fi roam, a NAT timeout). Returns how many."""
        n = 0
        for s in self.open_sessions():
            if s.transport is not None:
                s.close_code = 1006  # "abnormal closure": what a client reports for it
                s.transport.abort()
                n += 1
        return n

    async def send_session_reconnect(self) -> None:
        """Twitch's planned migration: `session_reconnect` with a reconnect_url. The client
        opens the new URL and keeps its subscriptions there (no re-POST)."""
        for s in self.open_sessions():
            frame = {
                "metadata": self._meta("session_reconnect"),
                "payload": {
                    "session": {
                        "id": s.id,
                        "status": "reconnecting",
                        "keepalive_timeout_seconds": None,
                        "reconnect_url": f"{self.ws_url}?reconnect_from={s.id}",
                        "connected_at": rfc3339(),
                    }
                },
            }
            await s.ws.send_str(json.dumps(frame))

    async def revoke_subscriptions(
        self,
        status: str = "authorization_revoked",
        match: Callable[[dict[str, Any]], bool] | None = None,
    ) -> int:
        """Twitch revokes subscriptions: every enabled subscription for which match(sub) is
        true (all, if match is None) gets `status` and its session one `revocation` frame:
        metadata message_type "revocation" + subscription_type/_version, payload
        {"subscription": <the subscription, with the new status>}. Returns how many frames
        were sent. The socket stays open (Twitch does not close it for a revocation), but a
        session left with no enabled subscription is subject to `unused_session_timeout`.

        Documented statuses: "authorization_revoked" (the user revoked the token the
        subscription relied on), "user_removed" (the user no longer exists),
        "version_removed" (type/version no longer supported). twitchio 3.3.2 also knows
        "notification_failures_exceeded" and "chat_user_banned" (RevocationReason); any
        other status makes its SubscriptionRevoked raise ValueError."""
        # Handling WebSocket Events, "Revocation message": sent once, then no more messages
        # for that subscription; the frame carries the subscription object with its status.
        sent = 0
        emptied: set[str] = set()
        for sub in list(self.subscriptions.values()):
            if sub["status"] != "enabled" or (match is not None and not match(sub)):
                continue
            sub["status"] = status
            if status == "authorization_revoked" and sub["condition"].get("user_id"):
                # The user took the app's access away: its tokens go with it.
                self.revoke_user_tokens(sub["condition"]["user_id"])
            session = self._session(sub["transport"].get("session_id", ""))
            if session is None or not session.open:
                continue
            frame = {
                "metadata": {
                    **self._meta("revocation"),
                    "subscription_type": sub["type"],
                    "subscription_version": sub["version"],
                },
                "payload": {"subscription": dict(sub)},
            }
            with contextlib.suppress(ConnectionResetError, RuntimeError):
                await session.ws.send_str(json.dumps(frame))
                sent += 1
            emptied.add(session.id)
        for sid in emptied:
            session = self._session(sid)
            if session is not None and session.open and not self._enabled_subs(sid):
                self._arm_unused(session)
        await self._notify()
        return sent

    def silence(self) -> int:
        """A dead network path: keepalives stop on every open socket, which stays open (no
        close frame). twitchio notices after keepalive_timeout_seconds + 5 s and reconnects;
        new sockets get keepalives as usual. (`keepalive_interval = None` instead stops
        them for every socket, new ones included.) Returns how many sockets went quiet.
        Notifications pushed meanwhile are still delivered: push none to mimic the dead
        path fully."""
        # Handling WebSocket Events, "Keepalive message": no event or keepalive for longer
        # than keepalive_timeout_seconds means the connection is lost.
        n = 0
        for s in self.open_sessions():
            s.silenced = True
            if s.keepalive_task:
                s.keepalive_task.cancel()
            n += 1
        return n

    # ------------------------------------------------------------------ internals
    def _meta(self, message_type: str) -> dict[str, Any]:
        return {
            "message_id": str(uuid.uuid4()),
            "message_type": message_type,
            "message_timestamp": rfc3339(),
        }

    def _session(self, session_id: str) -> Session | None:
        return next((s for s in self.sessions if s.id == session_id), None)

    def _enabled_subs(self, session_id: str) -> list[dict[str, Any]]:
        return [
            sub
            for sub in self.subscriptions.values()
            if sub["status"] == "enabled" and sub["transport"].get("session_id") == session_id
        ]

    def _arm_unused(self, session: Session) -> None:
        """(Re)start the 4003 timer of a session, if unused_session_timeout is set."""
        if self.unused_session_timeout is None:
            return
        if session.unused_task:
            session.unused_task.cancel()
        session.unused_task = asyncio.create_task(
            self._close_if_unused(session, self.unused_session_timeout)
        )

    async def _close_if_unused(self, session: Session, after: float) -> None:
        # Handling WebSocket Events, close code 4003 "Connection unused": "you must create a
        # subscription within 10 seconds or the connection is closed".
        await asyncio.sleep(after)
        if session.open and not self._enabled_subs(session.id):
            session.close_code = 4003
            with contextlib.suppress(ConnectionResetError, RuntimeError):
                await session.ws.close(code=4003, message=b"connection unused")

    @staticmethod
    def _error(status: int, message: str) -> web.Response:
        # Helix's error body; twitchio reads e.extra["message"] in several places
        # (401 refresh logic, 409 subscribe).
        return web.json_response(
            {"error": _PHRASES.get(status, "Error"), "status": status, "message": message},
            status=status,
        )

    @staticmethod
    def _id_error(status: int, message: str) -> web.Response:
        # id.twitch.tv's error body has no "error" field ("Validating Tokens":
        # {"status": 401, "message": "invalid access token"}; device flow:
        # {"status": 400, "message": "authorization_pending"}). twitchio reads
        # e.extra["message"] (device-code polling, DeviceCodeRejection).
        return web.json_response({"status": status, "message": message}, status=status)

    @web.middleware
    async def _record_and_can(self, request: web.Request, handler: Any) -> web.StreamResponse:
        body: Any = None
        if request.can_read_body and request.content_type == "application/json":
            body = await request.json()
        rec = RecordedRequest(
            method=request.method,
            path=request.path,
            query={k: request.query.getall(k) for k in set(request.query)},
            json=body,
            authorization=request.headers.get("Authorization"),
        )
        request[_JSON_KEY] = body
        resets = self._resets.get((request.method, request.path), 0)
        if resets:
            self._resets[(request.method, request.path)] = resets - 1
            assert request.transport is not None
            request.transport.abort()  # no answer at all: the client sees a reset
            rec.status = -1
            self.requests.append(rec)
            await self._notify()
            raise asyncio.CancelledError  # aiohttp ends the handler quietly
        stalls = self._stalls.get((request.method, request.path))
        if stalls:
            self.stalled.append(rec)  # the stall has begun: a test may act meanwhile
            await self._notify()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._quick_again.wait(), stalls.pop(0))
        canned = self._canned.get((request.method, request.path))
        if canned:
            c = canned.pop(0)
            resp: web.StreamResponse = (
                web.json_response(c.body, status=c.status, headers=c.headers)
                if c.body is not None
                else web.Response(status=c.status, headers=c.headers)
            )
            if request.path == "/ws":
                self.refused_ws_attempts += 1
                await self._notify()
        else:
            resp = await handler(request)
        rec.status = resp.status
        if request.path != "/ws":
            self.requests.append(rec)
            await self._notify()
        return resp

    @staticmethod
    def _params(request: web.Request, form: dict[str, str]) -> dict[str, str]:
        # twitchio puts OAuth parameters in the *query string* (Route params) and sends no
        # body; real clients use a form body. Accept both.
        out = dict(form)
        out.update({k: v for k, v in request.query.items()})
        return out

    def _bearer(self, request: web.Request) -> TokenInfo | None:
        auth = request.headers.get("Authorization", "")
        for prefix in ("Bearer ", "OAuth "):
            if auth.startswith(prefix):
                return self.tokens.get(auth[len(prefix) :])
        return None

    def _mint(
        self, user_id: str | None, scopes: list[str], expires_in: int = 4 * 3600
    ) -> TokenInfo:
        info = TokenInfo(
            access=("u" if user_id else "a") + secrets.token_hex(12),
            refresh=("r" + secrets.token_hex(12)) if user_id else None,
            user_id=user_id,
            scopes=scopes,
            expires_at=time.monotonic() + expires_in,
        )
        self.tokens[info.access] = info
        if info.refresh:
            self.refresh_tokens[info.refresh] = info
        return info

    @staticmethod
    def _token_body(info: TokenInfo) -> dict[str, Any]:
        # RefreshTokenPayload / DeviceCodeTokenResponse index all five keys.
        return {
            "access_token": info.access,
            "refresh_token": info.refresh,
            "expires_in": info.expires_in(),
            "scope": info.scopes,
            "token_type": "bearer",
        }

    # ---- id.twitch.tv
    async def _oauth_token(self, request: web.Request) -> web.Response:
        p = self._params(request, dict(await request.post()))
        if p.get("client_id") != self.client_id:
            return self._id_error(400, "invalid client")
        grant = p.get("grant_type")

        if grant == "client_credentials":
            if self.client_secret is None or p.get("client_secret") != self.client_secret:
                return self._id_error(403, "invalid client secret")
            info = self._mint(None, [], expires_in=5_000_000)
            # ClientCredentialsPayload: access_token, expires_in, token_type
            return web.json_response(
                {
                    "access_token": info.access,
                    "expires_in": info.expires_in(),
                    "token_type": "bearer",
                }
            )

        if grant == "refresh_token":
            if self.refuse_refresh:
                # Refreshing Access Tokens: a refresh that fails answers 400 "Invalid refresh
                # token" (tokens stop refreshing e.g. after a password change).
                return self._id_error(400, "Invalid refresh token")
            old = self.refresh_tokens.pop(p.get("refresh_token", ""), None)
            if old is None:
                return self._id_error(400, "Invalid refresh token")
            old.revoked = True  # Twitch invalidates the old access token on refresh
            assert old.user_id is not None
            new = self._mint(old.user_id, old.scopes)
            return web.json_response(self._token_body(new))

        if grant == "urn:ietf:params:oauth:grant-type:device_code":
            dc = self.device_codes.get(p.get("device_code", ""))
            if dc is None or dc.used:
                return self._id_error(400, "invalid device code")
            if dc.rejection is not None:
                return self._id_error(400, dc.rejection)
            if time.monotonic() >= dc.expires_at:
                # Getting OAuth Access Tokens, device code grant flow: the code lives
                # `expires_in` seconds; after that it is an invalid device code.
                return self._id_error(400, "invalid device code")
            if self._slow_downs:
                self._slow_downs -= 1
                return self._id_error(400, "slow_down")
            if dc.user_id is None:
                # twitchio compares message.lower() to "authorization_pending", then
                # sleeps `interval`.
                return self._id_error(400, "authorization_pending")
            dc.used = True
            return web.json_response(self._token_body(self._mint(dc.user_id, dc.scopes)))

        return self._id_error(400, f"unsupported grant_type {grant!r}")

    async def _oauth_device(self, request: web.Request) -> web.Response:
        p = self._params(request, dict(await request.post()))
        if p.get("client_id") != self.client_id:
            return self._id_error(400, "invalid client")
        dc = _DeviceCode(
            device_code=secrets.token_urlsafe(24),
            user_code=secrets.token_hex(4).upper(),
            scopes=p.get("scopes", "").split(),  # twitchio sends "a%3Ab+c%3Ad" -> "a:b c:d"
            expires_at=time.monotonic() + self.device_code_lifetime,
        )
        self.device_codes[dc.device_code] = dc
        await self._notify()
        # DeviceCodeFlowResponse: device_code, expires_in, interval, user_code, verification_uri
        return web.json_response(
            {
                "device_code": dc.device_code,
                "expires_in": self.device_code_lifetime,
                "interval": self.device_interval,
                "user_code": dc.user_code,
                "verification_uri": f"https://www.twitch.tv/activate?public=true&device-code={dc.user_code}",
            }
        )

    async def _oauth_validate(self, request: web.Request) -> web.Response:
        info = self._bearer(request)
        if info is None or not info.valid:
            return self._id_error(401, "invalid access token")
        # ValidateTokenPayload indexes client_id, scopes, expires_in; .get()s login, user_id.
        # An app token = no login/user_id (that is how twitchio tells them apart).
        body: dict[str, Any] = {
            "client_id": self.client_id,
            "scopes": info.scopes,
            "expires_in": info.expires_in(),
        }
        if info.user_id:
            body.update(login=self.users[info.user_id].login, user_id=info.user_id)
        return web.json_response(body)

    async def _oauth_revoke(self, request: web.Request) -> web.Response:
        p = self._params(request, dict(await request.post()))
        info = self.tokens.get(p.get("token", ""))
        if info:
            info.revoked = True
        return web.Response(status=200)

    # ---- api.twitch.tv/helix
    def _helix_auth(self, request: web.Request) -> TokenInfo | web.Response:
        info = self._bearer(request)
        if info is None or not info.valid:
            # twitchio's ManagedHTTPClient refreshes + retries only on 401 whose message is
            # "invalid access token" or "invalid oauth token" (case-insensitive).
            return self._error(401, "Invalid OAuth token")
        if request.headers.get("Client-Id") != self.client_id:
            return self._error(401, "Client ID and OAuth token do not match")
        return info

    async def _helix_users(self, request: web.Request) -> web.Response:
        auth = self._helix_auth(request)
        if isinstance(auth, web.Response):
            return auth
        ids = request.query.getall("id", [])
        logins = request.query.getall("login", [])
        if not ids and not logins:
            if auth.is_app:
                return self._error(400, "Must provide an ID, Login or OAuth Token")
            ids = [auth.user_id]  # type: ignore[list-item]
        found = [u for u in self.users.values() if u.id in ids or u.login in logins]
        return web.json_response({"data": [u.helix(self.base) for u in found]})

    async def _helix_sub_create(self, request: web.Request) -> web.Response:
        auth = self._helix_auth(request)
        if isinstance(auth, web.Response):
            return auth
        body = request[_JSON_KEY] or {}
        self.subscription_posts.append({**body, "_token_user": auth.user_id})
        transport = body.get("transport", {})
        if transport.get("method") == "websocket":
            if auth.is_app:
                return self._error(400, "websocket transport requires a user access token")
            session = self._session(transport.get("session_id", ""))
            if session is None or not session.open:
                return self._error(
                    400, "websocket transport session does not exist or has already disconnected"
                )
        condition = body.get("condition", {})
        if (
            body.get("type") == "channel.chat.message"
            and not auth.is_app
            and "user:read:chat" not in auth.scopes
        ):
            # Create EventSub Subscription, 403: "The access token is missing the required
            # scopes" (channel.chat.message: user:read:chat); Twitch's message text is
            # "subscription missing proper authorization".
            return self._error(403, "subscription missing proper authorization")
        if body.get("type") == "channel.chat.message" and condition.get("user_id") != auth.user_id:
            return self._error(403, "user_id in condition must match the user access token")
        for sub in self.subscriptions.values():
            if (sub["type"], sub["condition"], sub["transport"]) == (
                body.get("type"),
                condition,
                transport,
            ) and sub["status"] == "enabled":
                return self._error(409, f"subscription already exists id={sub['id']}")
        sub = {
            "id": str(uuid.uuid4()),
            "status": "enabled",
            "type": body.get("type"),
            "version": body.get("version", "1"),
            "condition": condition,
            "created_at": rfc3339(),
            "transport": (
                {**transport, "connected_at": rfc3339()}
                if transport.get("method") == "websocket"
                else transport
            ),
            "cost": 0,
        }
        # Store the transport exactly as sent so the duplicate check above compares like with like.
        self.subscriptions[sub["id"]] = {**sub, "transport": transport}
        # twitchio only reads resp["data"][*]["id"].
        return web.json_response(
            {
                "data": [sub],
                "total": len(self.subscriptions),
                "total_cost": 0,
                "max_total_cost": 10,
            },
            status=202,
        )

    async def _helix_sub_list(self, request: web.Request) -> web.Response:
        auth = self._helix_auth(request)
        if isinstance(auth, web.Response):
            return auth
        data = list(self.subscriptions.values())
        return web.json_response(
            {
                "data": data,
                "total": len(data),
                "total_cost": 0,
                "max_total_cost": 10,
                "pagination": {},
            }
        )

    async def _helix_sub_delete(self, request: web.Request) -> web.Response:
        auth = self._helix_auth(request)
        if isinstance(auth, web.Response):
            return auth
        if self.subscriptions.pop(request.query.get("id", ""), None) is None:
            return self._error(404, "subscription not found")
        return web.Response(status=204)

    async def _helix_chat_send(self, request: web.Request) -> web.Response:
        auth = self._helix_auth(request)
        if isinstance(auth, web.Response):
            return auth
        body = request[_JSON_KEY] or {}
        sender = str(body.get("sender_id"))
        if not auth.is_app and "user:write:chat" not in auth.scopes:
            # Send Chat Message, 401 Unauthorized: "The user access token must include the
            # user:write:chat scope." (Twitch's message text: "Missing scope: ...".)
            return self._error(401, "Missing scope: user:write:chat")
        if not auth.is_app and auth.user_id != sender:
            return self._error(403, "sender_id must match the user ID in the user access token")
        text = str(body.get("message", ""))
        if len(text) > 500:
            # Send Chat Message, "message": limited to a maximum of 500 characters.
            return self._error(400, "The message is too long.")
        if sender in self.banned:
            self._drops.insert(0, {"code": "msg_banned", "message": "You are banned."})
        elif self.chat_limit is not None:
            most, window = self.chat_limit
            now = time.monotonic()
            recent = [t for t in self._chat_sent.get(sender, []) if now - t < window]
            if len(recent) >= most:
                self._drops.insert(
                    0,
                    {
                        "code": "msg_ratelimit",
                        "message": "Your message was not sent because you are sending "
                        "messages too quickly.",
                    },
                )
            else:
                recent.append(now)
            self._chat_sent[sender] = recent
        if self._drops:
            # Send Chat Message, Response Body: 200, is_sent false, drop_reason {code, message}.
            drop = self._drops.pop(0)
            self.dropped_messages.append(
                {
                    **body,
                    "_token": "app" if auth.is_app else f"user:{auth.user_id}",
                    "drop_reason": drop,
                }
            )
            return web.json_response(
                {"data": [{"message_id": "", "is_sent": False, "drop_reason": drop}]}
            )
        msg_id = str(uuid.uuid4())
        record = {
            **body,
            "_token": "app" if auth.is_app else f"user:{auth.user_id}",
            "_message_id": msg_id,
        }
        self.chat_messages.append(record)
        if (
            self.echo_sent_messages
            and sender in self.users
            and str(body.get("broadcaster_id")) in self.users
        ):
            event = self.chat_event(
                body.get("message", ""),
                broadcaster=self.users[str(body["broadcaster_id"])],
                chatter=self.users[sender],
                message_id=msg_id,
            )
            bid = str(body["broadcaster_id"])
            task = asyncio.create_task(
                self.push_notification(
                    "channel.chat.message",
                    event,
                    match=lambda c: c.get("broadcaster_user_id") == bid,
                )
            )
            self._background.add(task)
            task.add_done_callback(self._background.discard)
        # SentMessage indexes message_id, is_sent; .get()s drop_reason
        # ({code, message} -> MessageRejectedError).
        return web.json_response(
            {"data": [{"message_id": msg_id, "is_sent": True, "drop_reason": None}]}
        )

    # ---- eventsub.wss.twitch.tv
    async def _ws(self, request: web.Request) -> web.StreamResponse:
        if self.refuse_websockets > 0:
            self.refuse_websockets -= 1
            self.refused_ws_attempts += 1
            await self._notify()
            return web.Response(status=503, text="refused by test")
        ws = web.WebSocketResponse()  # autoping: answers twitchio's aiohttp heartbeat pings
        await ws.prepare(request)
        requested = int(request.query.get("keepalive_timeout_seconds", "10"))
        reconnect_from = request.query.get("reconnect_from")
        session = Session(
            id=f"session-{next(self._ids)}-{secrets.token_hex(4)}",
            ws=ws,
            requested_keepalive=requested,
            transport=request.transport,
        )
        if reconnect_from:
            # Migration (session_reconnect): until now events went to the old session;
            # from its welcome on they go to the new one, and the old one has
            # reconnect_grace seconds to be closed by the client, else 4004.
            for sub in self.subscriptions.values():
                if sub["transport"].get("session_id") == reconnect_from:
                    sub["transport"] = {**sub["transport"], "session_id": session.id}
            old = self._session(reconnect_from)
            if old is not None and old.open:
                self._spawn(self._close_after(old, self.reconnect_grace, 4004))
        self.sessions.append(session)
        welcome = {
            "metadata": self._meta("session_welcome"),
            "payload": {
                "session": {
                    "id": session.id,  # the only field twitchio needs; WebsocketWelcome also reads
                    "status": "connected",  # keepalive_timeout_seconds and connected_at
                    "connected_at": rfc3339(),
                    "keepalive_timeout_seconds": requested,
                    "reconnect_url": None,
                    "recovery_url": None,
                }
            },
        }
        await ws.send_str(json.dumps(welcome))
        if self.keepalive_interval is not None:
            session.keepalive_task = asyncio.create_task(self._keepalive(session))
        session.last_sent = time.monotonic()
        if not self._enabled_subs(session.id):  # a migrated session keeps its subscriptions
            self._arm_unused(session)
        await self._notify()
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    # Twitch: clients must not send messages -> close 4001.
                    session.close_code = 4001
                    await ws.close(code=4001, message=b"client sent inbound traffic")
                    break
        finally:
            if session.keepalive_task:
                session.keepalive_task.cancel()
            if session.unused_task:
                session.unused_task.cancel()
            session.closed_at = time.monotonic()
            if session.close_code is None:  # the client closed (or the server's close failed)
                session.close_code = ws.close_code
            # Twitch disables a websocket's subscriptions when it disconnects.
            for sub in self.subscriptions.values():
                if sub["transport"].get("session_id") == session.id and sub["status"] == "enabled":
                    sub["status"] = "websocket_disconnected"
            await self._notify()
        return ws

    async def _keepalive(self, session: Session) -> None:
        # Handling WebSocket Events, "Keepalive message": sent when no event was sent
        # within keepalive_timeout_seconds.
        with contextlib.suppress(ConnectionResetError, RuntimeError):
            while not session.ws.closed:
                every = self.keepalive_interval
                if every is None or session.silenced:  # switched off mid-test
                    return
                if every == "session":
                    every = float(session.requested_keepalive)
                    await asyncio.sleep(max(0.0, session.last_sent + every - time.monotonic()))
                    if time.monotonic() - session.last_sent < every:
                        continue  # a notification went out meanwhile
                else:
                    await asyncio.sleep(float(every))
                if self.keepalive_interval is None or session.silenced:
                    return
                await session.ws.send_str(
                    json.dumps({"metadata": self._meta("session_keepalive"), "payload": {}})
                )
                session.last_sent = time.monotonic()

    async def _close_after(self, session: Session, seconds: float, code: int) -> None:
        await asyncio.sleep(seconds)
        if session.open:
            session.close_code = code
            with contextlib.suppress(ConnectionResetError, RuntimeError):
                await session.ws.close(code=code, message=b"reconnect grace time expired")

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)


@contextlib.contextmanager
def patch_twitchio(fake: FakeTwitch) -> Iterator[None]:
    """Point twitchio 3.3.x at `fake`. These are ALL the Twitch hosts twitchio hard-codes:

    twitchio.http.Route.BASE               "https://api.twitch.tv/helix/"  (all Helix calls)
    twitchio.http.Route.ID_BASE            "https://id.twitch.tv/"         (token, validate, device,
                                                                             revoke, authorize URL)
    twitchio.eventsub.websockets.WSS       "wss://eventsub.wss.twitch.tv/ws"

    All three are read at call time, so patching after import works. (session_reconnect
    uses the reconnect_url Twitch sends; asset URLs come from Helix payloads.)
    """
    import twitchio.eventsub.websockets as tw_ws
    import twitchio.http as tw_http

    saved = (tw_http.Route.BASE, tw_http.Route.ID_BASE, tw_ws.WSS)
    tw_http.Route.BASE = fake.helix_base
    tw_http.Route.ID_BASE = fake.base
    tw_ws.WSS = fake.ws_url
    try:
        yield
    finally:
        tw_http.Route.BASE, tw_http.Route.ID_BASE, tw_ws.WSS = saved
