"""The engine's local HTTP API (aiohttp), on a Unix socket and optionally on TCP."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
from typing import Any

from aiohttp import web

from appliance.engine import Blocked, Engine, QueueFull
from appliance.openapi import OPENAPI

MAX_PROMPT = 2000


def _error(status: int, message: str, **headers: str) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers)


def build_app(engine: Engine, token: str = "") -> web.Application:
    @web.middleware
    async def guard(request: web.Request, handler):
        # A token, when set, is required on every route but the health check.
        if token and request.path != "/healthz":
            given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
            if not hmac.compare_digest(given.encode(), token.encode()):
                return _error(401, "missing or wrong API token (Authorization: Bearer ...)")
        try:
            return await handler(request)
        except web.HTTPException as e:
            if e.status >= 400:
                return _error(e.status, e.reason)
            raise

    app = web.Application(middlewares=[guard], client_max_size=64 * 1024)
    app["engine"] = engine
    app.add_routes(
        [
            web.get("/asr33bot/{prompt:.*}", seed_route),
            web.post("/v1/generate", generate),
            web.post("/v1/print", print_text),
            web.get("/v1/jobs/{id}", job_get),
            web.get("/v1/history", history_get),
            web.post("/v1/history", history_add),
            web.delete("/v1/history", history_clear),
            web.post("/v1/cancel", cancel),
            web.post("/v1/bell", bell),
            web.get("/v1/status", status),
            web.get("/v1/events", events),
            web.get("/healthz", healthz),
            web.get("/openapi.json", openapi),
        ]
    )
    return app


async def _json_body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json() if request.can_read_body else {}
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise web.HTTPBadRequest(reason="the body is not JSON") from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(reason="the body must be a JSON object")
    return body


def _field(body: dict, name: str, kind: type, default, check=None):
    value = body.get(name, default)
    if value is None:
        return default
    ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
    if not ok or (check is not None and not check(value)):
        raise web.HTTPBadRequest(reason=f"{name}: invalid value {value!r}")
    return value


def _submit(engine: Engine, job, spare: int = 0) -> web.Response | None:
    """Queue the job: None, or the 429 answer when the queue is full."""
    try:
        engine.submit(job, spare)
    except QueueFull as e:
        return _error(429, str(e), **{"Retry-After": str(e.retry_after)})
    return None


def _accepted(engine: Engine, job) -> web.Response:
    """202: the job is queued; where it is and when it should start."""
    body = job.summary()
    body["position"] = engine.waiting.index(job) + 1 if job in engine.waiting else 0
    body["printer_busy"] = engine.current is not None
    body["starts_in_seconds"] = round(engine.eta_seconds(before=job), 1)
    return web.json_response(body, status=202)


SOURCES = ("api", "button", "chat", "keyboard")


async def seed_route(request: web.Request) -> web.StreamResponse:
    """The seed project's GET /asr33bot/<prompt>: print a reply, answer with its text."""
    engine: Engine = request.app["engine"]
    prompt = request.match_info["prompt"][:MAX_PROMPT]
    job = engine.new_job(prompt, use_history=False)
    if busy := _submit(engine, job):
        return busy
    await engine.wait(job)
    if job.status == "failed":
        return web.Response(status=500, text=f"generation failed: {job.error}\n")
    return web.Response(text=job.text, content_type="text/plain")


async def generate(request: web.Request) -> web.StreamResponse:
    engine: Engine = request.app["engine"]
    body = await _json_body(request)
    prompt = _field(body, "prompt", str, "", lambda v: len(v) <= MAX_PROMPT)
    use_history = _field(body, "use_history", bool, not prompt)
    max_chars = _field(body, "max_chars", int, None, lambda v: 20 <= v <= 5000)
    seed = _field(body, "seed", int, None, lambda v: 0 <= v < 2**31)
    to_print = _field(body, "print", bool, True)
    stream = _field(body, "stream", bool, False)
    wait = _field(body, "wait", bool, True)
    source = _field(body, "source", str, "api", lambda v: v in SOURCES)
    job = engine.new_job(
        prompt, use_history, max_chars=max_chars, seed=seed, print=to_print, source=source
    )
    if busy := _submit(engine, job):
        return busy
    if not wait and not stream:
        return _accepted(engine, job)
    if not stream:
        await engine.wait(job)
        status = 500 if job.status == "failed" else 200
        return web.json_response(job.summary(), status=status)
    response = web.StreamResponse(headers={"Content-Type": "text/plain; charset=utf-8"})
    await response.prepare(request)
    sent = 0
    while True:
        finished = job.done.is_set()
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
    body = await _json_body(request)
    text = _field(body, "text", str, None, lambda v: 0 < len(v) <= MAX_PROMPT)
    if text is None or not text.split():
        raise web.HTTPBadRequest(reason="text is required and must not be blank")
    # chat-line: a chat message; system: a notice of our own (a sign-in code)
    # that the chat bridge must not repeat in chat.
    source = _field(body, "source", str, "api", lambda v: v in (*SOURCES, "chat-line", "system"))
    # Low priority: only while at least half the queue is free.
    spare = engine.queue.maxsize // 2 if _field(body, "low_priority", bool, False) else 0
    hit = engine.blocklist.find(text)
    if hit is not None:
        return _error(422, f"not printed: blocked by the blocklist ({hit.term})")
    job = engine.new_print(text, source)
    if busy := _submit(engine, job, spare):
        return busy
    return _accepted(engine, job)


async def job_get(request: web.Request) -> web.Response:
    """A job by its id; with ?wait=N, wait up to N seconds for it to finish."""
    engine: Engine = request.app["engine"]
    try:
        job = engine.jobs[int(request.match_info["id"])]
    except (ValueError, KeyError):
        raise web.HTTPNotFound(reason="no such job (finished jobs are kept for a while)") from None
    try:
        wait = float(request.query.get("wait", "0"))
    except ValueError:
        raise web.HTTPBadRequest(reason="wait: a number of seconds") from None
    if not 0 <= wait <= 300:
        raise web.HTTPBadRequest(reason="wait: between 0 and 300 seconds")
    if wait:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(engine.wait(job), wait)
    return web.json_response(job.summary())


async def history_get(request: web.Request) -> web.Response:
    engine: Engine = request.app["engine"]
    lines = [{"name": ln.name, "text": ln.text} for ln in engine.history.lines()]
    return web.json_response({"lines": lines})


async def history_add(request: web.Request) -> web.Response:
    engine: Engine = request.app["engine"]
    body = await _json_body(request)
    name = _field(body, "name", str, None, lambda v: 0 < len(v) <= 100)
    text = _field(body, "text", str, None, lambda v: 0 < len(v) <= 2000)
    if name is None or text is None:
        raise web.HTTPBadRequest(reason="name and text are required")
    if not text.split():
        # All whitespace (a no-break space, say): nothing would be left of it.
        raise web.HTTPBadRequest(reason="text is blank")
    try:
        line = engine.add_chat_line(name, text)
    except Blocked as e:
        return _error(422, f"not added: {e}")
    return web.json_response({"name": line.name, "text": line.text}, status=201)


async def history_clear(request: web.Request) -> web.Response:
    request.app["engine"].history.clear()
    return web.Response(status=204)


async def cancel(request: web.Request) -> web.Response:
    return web.json_response({"cancelled": request.app["engine"].cancel_current()})


async def bell(request: web.Request) -> web.Response:
    wait = request.app["engine"].ring_bell()
    if wait:
        seconds = max(1, round(wait))
        return _error(
            429,
            f"the bell rang a moment ago; again in {seconds} s",
            **{"Retry-After": str(seconds)},
        )
    return web.json_response({"rung": True})


async def status(request: web.Request) -> web.Response:
    return web.json_response(request.app["engine"].status())


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(OPENAPI)


async def events(request: web.Request) -> web.StreamResponse:
    """Server-sent events: queued, started, finished (with the text), port."""
    engine: Engine = request.app["engine"]
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    await response.prepare(request)
    q: asyncio.Queue = asyncio.Queue(maxsize=256)
    engine.subscribers.add(q)
    try:
        await response.write(b": connected\n\n")
        while True:
            try:
                item = await asyncio.wait_for(q.get(), timeout=15)
            except TimeoutError:
                await response.write(b": keepalive\n\n")
                continue
            payload = json.dumps(item["data"])
            await response.write(f"event: {item['event']}\ndata: {payload}\n\n".encode())
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        engine.subscribers.discard(q)
    return response
