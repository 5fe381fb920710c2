"""Signing the bot in to Twitch with the device-code flow: a code on paper, a phone, done.

The chat service runs this by itself when it has no tokens, or when Twitch
refuses them for good, so a headless Pi needs no shell: the Teletype
prints the address and the code, and prints a new code when one expires.
`teletype twitch-login` runs the same flow for those with a shell.

Written against Twitch's OAuth endpoints directly (with aiohttp), not
twitchio's flow helpers: those end an expired or declined code in an
exception twitchio cannot name, and a flaky network in a traceback.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aiohttp

from appliance.chat.tokens import TokenError
from appliance.errors import ApplianceError

log = logging.getLogger("teletype.chat")

RETRY_AFTER = (2, 5, 10, 30, 60)  # seconds between tries after a network or Twitch error


@dataclass(frozen=True)
class DeviceCode:
    url: str  # where to enter the code (twitch.tv/activate)
    code: str  # the user code, eight letters
    expires_in: int  # seconds


@dataclass(frozen=True)
class SignedIn:
    user_id: str
    login: str
    token: str
    refresh: str


class Declined(ApplianceError):
    """The person at the phone pressed "Cancel", or the code was not theirs to use."""


def _id_base() -> str:
    # Read at call time: twitchio's own setting, so tests that point twitchio
    # at a fake Twitch point this at it too.
    from twitchio.http import Route

    return Route.ID_BASE


async def _post(session: aiohttp.ClientSession, path: str, form: dict) -> tuple[int, dict]:
    async with session.post(_id_base() + path, data=form) as r:
        try:
            body = await r.json(content_type=None)
        except ValueError:
            body = {}
        body = body if isinstance(body, dict) else {}
        if r.status == 429:
            body["_retry_at"] = r.headers.get("Ratelimit-Reset")
        return r.status, body


async def _too_many(what: str, body: dict) -> None:
    """A 429: wait until Twitch's Ratelimit-Reset (within reason), then try again."""
    try:
        wait = float(body.get("_retry_at") or 0) - time.time()
    except ValueError:
        wait = 0.0
    wait = min(max(wait, RETRY_AFTER[0]), 60.0)
    log.warning("Twitch %s: too many requests (429); trying again in %.0f s", what, wait)
    await asyncio.sleep(wait)


async def _transient(what: str, attempt: int, error: object) -> None:
    wait = RETRY_AFTER[min(attempt, len(RETRY_AFTER) - 1)]
    log.warning("Twitch %s failed (%s); trying again in %d s", what, error, wait)
    await asyncio.sleep(wait)


async def request_code(session, client_id: str, scopes: list[str]) -> tuple[DeviceCode, str, int]:
    """A new device code: (what to show, the device code, the polling interval)."""
    for attempt in itertools.count():
        try:
            status, body = await _post(
                session, "oauth2/device", {"client_id": client_id, "scopes": " ".join(scopes)}
            )
        except (aiohttp.ClientError, TimeoutError) as e:
            await _transient("sign-in", attempt, type(e).__name__)
            continue
        if status == 429 or (status == 400 and body.get("message") == "slow_down"):
            # Twitch's rate limit, not our Client ID: wait, never give up (an
            # exit 78 here would leave the bridge stopped for good).
            await _too_many("sign-in", body)
            continue
        if status == 200:
            shown = DeviceCode(body["verification_uri"], body["user_code"], int(body["expires_in"]))
            return shown, body["device_code"], int(body.get("interval", 5))
        if 400 <= status < 500:
            raise TokenError(
                f"Twitch will not start a sign-in for chat.client_id ({status}: "
                f"{body.get('message', '')}): check the Client ID and that the application "
                "is a Public client"
            )
        await _transient("sign-in", attempt, f"HTTP {status}")
    raise AssertionError("itertools.count() never ends")


async def wait_for_approval(
    session, client_id: str, scopes: list[str], device_code: str, interval: int, lifetime: int
) -> tuple[str, str] | None:
    """The token pair once the code is approved; None when the code expires first."""
    form = {
        "client_id": client_id,
        "scopes": " ".join(scopes),
        "device_code": device_code,
        "grant_type": "urn:ietf:params:oauth:grant-type:device_code",
    }
    deadline = time.monotonic() + lifetime
    while time.monotonic() < deadline:
        await asyncio.sleep(interval)
        try:
            status, body = await _post(session, "oauth2/token", form)
        except (aiohttp.ClientError, TimeoutError) as e:
            log.warning("Twitch sign-in: no answer (%s); still waiting", type(e).__name__)
            continue
        if status == 200:
            return body["access_token"], body["refresh_token"]
        message = str(body.get("message", "")).lower()
        if status == 400 and message == "authorization_pending":
            continue
        if status == 400 and message == "slow_down":
            interval += 5
            continue
        if status == 429:
            await _too_many("sign-in", body)
            continue
        if status == 400 and ("denied" in message or "declined" in message):
            raise Declined(message)
        if status == 400:
            return None  # expired or unknown: a new code
        log.warning("Twitch sign-in: HTTP %d; still waiting", status)
    return None


async def who(session, token: str) -> tuple[str, str] | None:
    """(user id, login) of a user token; None if Twitch says it is not valid."""
    for attempt in itertools.count():
        try:
            async with session.get(
                _id_base() + "oauth2/validate", headers={"Authorization": f"OAuth {token}"}
            ) as r:
                if r.status == 200:
                    body = await r.json(content_type=None)
                    return str(body["user_id"]), str(body.get("login", ""))
                if r.status in (400, 401, 403):
                    return None
                error: object = f"HTTP {r.status}"
        except (aiohttp.ClientError, TimeoutError) as e:
            error = type(e).__name__
        await _transient("token check", attempt, error)
    raise AssertionError("itertools.count() never ends")


async def sign_in(
    client_id: str,
    scopes: list[str],
    show: Callable[[DeviceCode], Awaitable[None]],
    *,
    codes: int | None = None,
    on_declined: Callable[[], Awaitable[None]] | None = None,
) -> SignedIn:
    """Show a code, wait for it for its whole lifetime, show a new one when it expires.

    `codes` limits how many codes are shown (None: until someone signs in);
    TokenError when they are used up. Network and Twitch errors are
    retried with backoff, never raised.
    """
    timeout = aiohttp.ClientTimeout(total=30)
    shown = 0
    async with aiohttp.ClientSession(timeout=timeout) as session:
        while codes is None or shown < codes:
            device, device_code, interval = await request_code(session, client_id, scopes)
            shown += 1
            await show(device)
            try:
                pair = await wait_for_approval(
                    session, client_id, scopes, device_code, interval, device.expires_in
                )
            except Declined:
                log.warning("the Twitch sign-in was declined on the phone")
                if on_declined is not None:
                    await on_declined()
                if codes is not None and shown >= codes:
                    raise TokenError("the sign-in was declined on the phone") from None
                continue
            if pair is None:
                log.info("the sign-in code %s expired unused", device.code)
                continue
            token, refresh = pair
            identity = await who(session, token)
            if identity is None:
                log.warning("Twitch refused the token it just gave; signing in again")
                continue
            return SignedIn(identity[0], identity[1], token, refresh)
    raise TokenError("the sign-in code expired before anyone entered it")
