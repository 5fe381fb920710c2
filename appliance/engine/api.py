"""The engine's local HTTP API (aiohttp), on a Unix socket and optionally on TCP.

The routes, and the shapes of what goes in and out, are in
appliance.schema; this module is what each route does, and the guard in
front of them all: the token, a browser's cross-site requests, and one
JSON answer for every error.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
from typing import TypeVar

import msgspec
from aiohttp import web
from aiohttp_sse import sse_response

from appliance.engine.engine import Engine
from appliance.engine.guesses import client_of, same_secret
from appliance.engine.overlay import is_overlay_read, overlay_address
from appliance.engine.panel import Sessions, csrf_refusal, is_panel_path, too_soon
from appliance.engine.panel import add_routes as add_panel_routes
from appliance.errors import (
    ApplianceError,
    BadChatLine,
    BellTooSoon,
    Blocked,
    QueueFull,
    ShuttingDown,
    StateError,
    TooLong,
    Withheld,
)
from appliance.schema import (
    MAX_PROMPT,
    NOT_BLANK,
    ROUTES,
    ChatLineRequest,
    ChatStateRequest,
    GenerateRequest,
    JobStatus,
    MotorRequest,
    PrintRequest,
    encode,
    openapi_document,
)

log = logging.getLogger("teletype.api")
T = TypeVar("T")


def _json(body, status: int = 200, **headers: str) -> web.Response:
    return web.Response(
        body=encode(body), status=status, headers=headers, content_type="application/json"
    )


def _error(status: int, message: str, **headers: str) -> web.Response:
    return _json({"error": message}, status, **headers)


def _answer(e: ApplianceError) -> web.Response:
    """An appliance error as the HTTP answer a client can act on."""
    if isinstance(e, QueueFull | BellTooSoon):
        return _error(429, str(e), **{"Retry-After": str(e.retry_after)})
    if isinstance(e, ShuttingDown | StateError):
        return _error(503, str(e), **{"Retry-After": "5"})
    if isinstance(e, Blocked | Withheld):
        return _error(422, str(e))
    if isinstance(e, TooLong):
        return _error(413, f"not queued: {e}")
    if isinstance(e, BadChatLine):
        return _error(400, str(e))
    return _error(500, str(e))


def build_app(
    engine: Engine,
    token: str = "",
    allowed_hosts: set[str] | frozenset[str] = frozenset(),
    panel_password: str = "",
    overlay_token: str = "",
) -> web.Application:
    sessions = Sessions(panel_password or token, directory=engine.state_dir)

    @web.middleware
    async def guard(request: web.Request, handler):
        refusal = _browser_refusal(request, allowed_hosts)
        if refusal:
            return _error(403, refusal)
        session = sessions.find(request)
        if is_panel_path(request.path):
            pass  # the page and its sign-in
        elif session is not None:
            # Signed in to the panel: a change must carry the session's CSRF token; so
            # must the seed route, a GET that prints.
            refusal = csrf_refusal(request, session, changes=request.path.startswith(PRINTS))
            if refusal:
                return _error(403, refusal)
        elif is_overlay_read(request, overlay_token):
            request["overlay"] = True  # the paper, read: all the overlay's token opens
        # Else a token, when set, is required on every route but the health check.
        elif token and request.path != "/healthz":
            refusal = _token_refusal(request, token, sessions)
            if refusal is not None:
                return refusal
        try:
            return await handler(request)
        except web.HTTPException as e:
            if e.status >= 400:
                return _error(e.status, e.reason)
            raise
        except ApplianceError as e:
            return _answer(e)
        except Exception:
            log.exception("%s %s failed", request.method, request.path)
            return _error(500, "the engine failed to answer; its log says why")

    app = web.Application(middlewares=[guard], client_max_size=64 * 1024)
    app["engine"] = engine
    handlers = globals()
    for route in ROUTES:
        # add_route, not web.get: no HEAD twin, so HEAD can never start a print.
        app.router.add_route(route.method, route.path, handlers[route.name])
    add_panel_routes(app, sessions, overlay_address(overlay_token) if overlay_token else "")
    return app


PRINTS = "/asr33bot/"  # the seed project's route prints on a GET


def _token_refusal(request: web.Request, token: str, sessions: Sessions) -> web.Response | None:
    """401 for a missing or wrong token, 429 for any token while the client's last wrong
    guess (of the token or the panel's password) still costs it; None to go on."""
    scheme, _, given = request.headers.get("Authorization", "").strip().partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        # A bare token is not a bearer token: a typo'd header must not half-work.
        return _error(401, "missing API token (Authorization: Bearer TOKEN)")
    client = client_of(request)
    wait = sessions.guesses.wait(client)
    if wait > 0:
        return too_soon(wait)
    if not same_secret(given.strip(), token):
        sessions.guesses.wrong(client)
        return _error(401, "wrong API token (Authorization: Bearer TOKEN)")
    return None


def _browser_refusal(request: web.Request, allowed_hosts) -> str | None:
    """Why a browser's request is refused, if it is: none of this stops curl or our clients.

    A page on any site could otherwise make the Teletype print: a form or a
    fetch() to the engine (Origin, Sec-Fetch-Site), an <img> pointing at
    /asr33bot/ (Sec-Fetch-Site), or a name of its own rebound to this
    machine's address (Host).
    """
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None and site not in ("same-origin", "none"):
        return f"refused: a request from another site ({site})"
    host = request.headers.get("Host", "")
    origin = request.headers.get("Origin")
    if origin is not None and origin.lower() not in (
        f"http://{host}".lower(),
        f"https://{host}".lower(),
    ):
        return "refused: a request from another origin"
    if _over_unix_socket(request):
        return None  # only local processes with the socket's group reach it
    name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    name = name.strip("[]").lower()
    if name in allowed_hosts or f"[{name}]" in allowed_hosts:
        return None
    with contextlib.suppress(ValueError):
        ipaddress.ip_address(name)
        return None
    return f"refused: unknown host name {name!r} (the engine answers to its own names)"


def _over_unix_socket(request: web.Request) -> bool:
    transport = request.transport
    return transport is not None and isinstance(transport.get_extra_info("sockname"), str)


async def _body(request: web.Request, kind: type[T], required: bool = False) -> T:
    """The request's JSON body as `kind`; 400 (415 for the wrong type) saying what is wrong."""
    raw = await request.read()
    if not raw:
        if required:
            raise web.HTTPBadRequest(reason="a JSON body is required")
        raw = b"{}"
    elif request.content_type != "application/json":
        # Also what keeps a web page's plain form from posting here.
        raise web.HTTPUnsupportedMediaType(reason="send the body as application/json")
    try:
        return msgspec.json.decode(raw, type=kind)
    except msgspec.ValidationError as e:
        why = str(e).replace(f"Expected `str` matching regex {NOT_BLANK!r}", "Blank text")
        raise web.HTTPBadRequest(reason=f"invalid body: {why}") from None
    except msgspec.DecodeError as e:
        raise web.HTTPBadRequest(reason=f"the body is not JSON: {e}") from None


def _accepted(engine: Engine, job) -> web.Response:
    """202: the job is queued; where it is and when it should start."""
    return _json(engine.placed(job), 202)


def _finished_status(job) -> int:
    return {JobStatus.FAILED: 500, JobStatus.WITHHELD: 422}.get(job.status, 200)


async def seed_route(request: web.Request) -> web.StreamResponse:
    """The seed project's GET /asr33bot/<prompt>: print a reply, answer with its text."""
    engine: Engine = request.app["engine"]
    prompt = request.match_info["prompt"][:MAX_PROMPT]
    job = engine.new_job(prompt, use_history=False)
    await engine.submit(job)
    await engine.wait(job)
    if job.status == JobStatus.FAILED:
        return web.Response(status=500, text=f"generation failed: {job.error}\n")
    if job.status == JobStatus.WITHHELD:
        return web.Response(status=422, text=f"nothing printed: {job.error}\n")
    return web.Response(text=job.text, content_type="text/plain")


async def generate(request: web.Request) -> web.StreamResponse:
    engine: Engine = request.app["engine"]
    body = await _body(request, GenerateRequest)
    use_history = not body.prompt if body.use_history is None else body.use_history
    job = engine.new_job(
        body.prompt, use_history, max_chars=body.max_chars, seed=body.seed, print=body.print,
        source=body.source,
    )  # fmt: skip
    await engine.submit(job)
    if not body.wait and not body.stream:
        return _accepted(engine, job)
    if not body.stream:
        await engine.wait(job)
        return _json(job.summary(), _finished_status(job))
    response = web.StreamResponse(headers={"Content-Type": "text/plain; charset=utf-8"})
    await response.prepare(request)
    sent = 0
    while True:
        finished = job.done.is_set() or engine.closed.is_set()
        if len(job.text) > sent:
            chunk = job.text[sent:]
            sent += len(chunk)
            await response.write(chunk.encode())
        if finished:
            break
        await asyncio.sleep(0.05)
    await response.write_eof()
    return response


async def print_text(request: web.Request) -> web.Response:
    """Print text as it is (a chat line, a login code); the blocklist still applies."""
    engine: Engine = request.app["engine"]
    body = await _body(request, PrintRequest, required=True)
    job = await engine.print_text(body.text, body.source, body.low_priority)
    return _accepted(engine, job)


async def queue_get(request: web.Request) -> web.Response:
    return _json({"jobs": request.app["engine"].queue_list()})


async def queue_clear(request: web.Request) -> web.Response:
    return _json({"cleared": await request.app["engine"].clear_queue()})


async def motor_switch(request: web.Request) -> web.Response:
    engine: Engine = request.app["engine"]
    body = await _body(request, MotorRequest, required=True)
    if not engine.motor.present:
        return _error(404, "no motor relay: [motor] pin = -1 in teletype.toml")
    try:
        engine.switch_motor(body.on)
    except StateError as e:
        return _error(409, str(e))
    return web.Response(status=204)


def _job(request: web.Request):
    engine: Engine = request.app["engine"]
    try:
        return engine.jobs[int(request.match_info["id"])]
    except (ValueError, KeyError):
        raise web.HTTPNotFound(
            reason="no such job (the last finished jobs are kept, across restarts)"
        ) from None


async def job_get(request: web.Request) -> web.Response:
    """A job by its id; with ?wait=N, wait up to N seconds for it to finish."""
    engine: Engine = request.app["engine"]
    job = _job(request)
    try:
        wait = float(request.query.get("wait", "0"))
    except ValueError:
        raise web.HTTPBadRequest(reason="wait: a number of seconds") from None
    if not 0 <= wait <= 300:  # also refuses nan
        raise web.HTTPBadRequest(reason="wait: between 0 and 300 seconds")
    if wait:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(engine.wait(job), wait)
    return _json(job.summary())


async def job_cancel(request: web.Request) -> web.Response:
    engine: Engine = request.app["engine"]
    job = _job(request)
    if not await engine.cancel_job(job):
        return _json(job.summary(), 409)
    return _json(job.summary())


async def history_get(request: web.Request) -> web.Response:
    engine: Engine = request.app["engine"]
    lines = [{"name": ln.name, "text": ln.text} for ln in engine.history.lines()]
    return _json({"lines": lines})


async def history_add(request: web.Request) -> web.Response:
    engine: Engine = request.app["engine"]
    body = await _body(request, ChatLineRequest, required=True)
    line = await engine.add_chat_line(body.name, body.text)
    return _json({"name": line.name, "text": line.text}, 201)


async def history_clear(request: web.Request) -> web.Response:
    await request.app["engine"].clear_history()
    return web.Response(status=204)


async def cancel(request: web.Request) -> web.Response:
    return _json({"cancelled": request.app["engine"].cancel_current()})


async def bell(request: web.Request) -> web.Response:
    wait = request.app["engine"].ring_bell()
    if wait:
        raise BellTooSoon(max(1, round(wait)))
    return _json({"rung": True})


async def status(request: web.Request) -> web.Response:
    return _json(request.app["engine"].status())


async def chat_state(request: web.Request) -> web.Response:
    body = await _body(request, ChatStateRequest, required=True)
    request.app["engine"].set_chat_state(body.state)
    return web.Response(status=204)


async def healthz(request: web.Request) -> web.Response:
    return _json({"ok": True})


async def openapi(request: web.Request) -> web.Response:
    return _json(openapi_document())


def _since(request: web.Request) -> int | None:
    """The paper event a view saw last: ?since=SEQ, or the Last-Event-ID its browser sends
    when it reconnects by itself (that one is newer); None for neither."""
    given = request.headers.get("Last-Event-ID") or request.query.get("since")
    if given is None or given == "":
        return None
    try:
        seq = int(given)
    except ValueError:
        raise web.HTTPBadRequest(reason="since: the number of a paper event") from None
    if seq < 0:
        raise web.HTTPBadRequest(reason="since: the number of a paper event") from None
    return seq


async def paper_get(request: web.Request) -> web.Response:
    """The paper's snapshot, or the paper events after ?since=SEQ while they are kept."""
    engine: Engine = request.app["engine"]
    since = _since(request)
    events = engine.paper.since(since) if since is not None else None
    if events is None:
        return _json({"snapshot": engine.paper.snapshot()})
    return _json({"events": events})


# What an overlay's read-only token may hear: the paper, nothing about the queue or chat.
OVERLAY_EVENTS = frozenset({"paper", "snapshot"})


async def events(request: web.Request) -> web.StreamResponse:
    """Server-sent events: queued, started, finished (with the text), port, chat, paper.

    Paper events carry their sequence number as the SSE id, so a browser that
    reconnects by itself resumes where it was (Last-Event-ID); one that asks
    from a number no longer kept gets a snapshot event first. The stream ends
    when the engine stops, so a shutdown never waits on a listener (the chat
    bridge always has one open).
    """
    engine: Engine = request.app["engine"]
    since = _since(request)
    only = OVERLAY_EVENTS if request.get("overlay") else None
    with (
        engine.subscribe(1024) as q,
        contextlib.suppress(ConnectionResetError, asyncio.CancelledError),
    ):
        # The replay is taken in the same step as the subscription (no await
        # between them): nothing falls between the two.
        if since is not None:
            replay = engine.paper.since(since)
            for event in replay if replay is not None else []:
                q.put_nowait({"event": "paper", "data": event})
            if replay is None:
                q.put_nowait({"event": "snapshot", "data": engine.paper.snapshot()})
        async with sse_response(request, sep="\n", ping_interval=15) as stream:
            # Subscribed: what happens from here on reaches this client.
            await stream.write(b": connected\n\n")
            waits = {
                "closing": asyncio.ensure_future(engine.closed.wait()),
                "gone": asyncio.ensure_future(stream.wait()),  # the client hung up
            }
            try:
                while True:
                    item = asyncio.ensure_future(q.get())
                    done, _ = await asyncio.wait(
                        {item, *waits.values()}, return_when=asyncio.FIRST_COMPLETED
                    )
                    if item not in done:
                        item.cancel()
                        break
                    event = item.result()
                    if only is not None and event["event"] not in only:
                        continue
                    data = event["data"]
                    seq = data.get("seq") if event["event"] in OVERLAY_EVENTS else None
                    await stream.send(
                        json.dumps(data, separators=(",", ":")),
                        id=None if seq is None else str(seq),
                        event=event["event"],
                    )
            finally:
                for waiting in waits.values():
                    waiting.cancel()
    return stream
