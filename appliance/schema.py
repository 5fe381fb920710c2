"""The engine API, described once: every route, its request and response shapes.

The handlers (appliance.engine.api) decode requests with these types, so the
validation is the types' own, and /openapi.json is generated from the same
table. msgspec, not pydantic: on a 512 MB Pi it costs 3.7 MiB of memory to
pydantic's 18.4 MiB (bench/schema-memory.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta, Struct

MAX_PROMPT = 2000


class Source(StrEnum):
    """Who asked for a reply."""

    API = "api"
    BUTTON = "button"  # the front-panel button (appliance.button)
    PANEL = "panel"  # the web panel's press
    CHAT = "chat"  # !gpt2 in Twitch chat
    KEYBOARD = "keyboard"  # a line typed on the Teletype


class PrintSource(StrEnum):
    """Who asked for a text to be printed as it is: a trigger, or one of two of its own."""

    API = "api"
    BUTTON = "button"
    PANEL = "panel"
    CHAT = "chat"
    KEYBOARD = "keyboard"
    CHAT_LINE = "chat-line"  # a chat message
    SYSTEM = "system"  # a notice of our own (a sign-in code) the bridge must not repeat


class JobStatus(StrEnum):
    """Where a job is: waiting, on its way to paper, or one of the ends."""

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"  # printed (or generated)
    FAILED = "failed"  # the generator broke
    CANCELLED = "cancelled"  # someone stopped it
    WITHHELD = "withheld"  # nothing printable came of it (the blocklist, an empty reply)
    INTERRUPTED = "interrupted"  # the engine stopped or died while it was printing


FINISHED = frozenset(JobStatus) - {JobStatus.QUEUED, JobStatus.RUNNING}


# Something besides white space and control characters (as str.split and
# JSON Schema's regular expressions both see it): a blank line prints nothing.
NOT_BLANK = r"[^\s\x00-\x1f\x7f-\x9f]"


# --- requests ---------------------------------------------------------------------


class GenerateRequest(Struct, forbid_unknown_fields=True):
    """Text from the model: a reply to the chat history, or to a prompt of one's own."""

    prompt: Annotated[str, Meta(max_length=MAX_PROMPT)] = ""
    use_history: bool | None = None  # default: the history when there is no prompt
    max_chars: Annotated[int, Meta(ge=20, le=5000)] | None = None
    seed: Annotated[int, Meta(ge=0, lt=2**31)] | None = None
    print: bool = True
    stream: bool = False  # the text as it prints, as text/plain
    wait: bool = True  # False: 202 at once, with the position and when it starts
    source: Source = Source.API


class PrintRequest(Struct, forbid_unknown_fields=True):
    """Text to print as it is (the blocklist still applies)."""

    # The panel's line of MAX_PROMPT characters comes with its newline.
    text: Annotated[str, Meta(min_length=1, max_length=MAX_PROMPT + 1, pattern=NOT_BLANK)]
    source: PrintSource = PrintSource.API
    low_priority: bool = False  # only while at least half the queue is free


class ChatLineRequest(Struct, forbid_unknown_fields=True):
    name: Annotated[str, Meta(min_length=1, max_length=100)]
    text: Annotated[str, Meta(min_length=1, max_length=2000, pattern=NOT_BLANK)]


# --- responses --------------------------------------------------------------------


class JobOut(Struct):
    id: int
    source: str
    status: JobStatus
    print: bool
    max_chars: int
    text: str
    printed: int  # frames on the wire so far
    error: str | None
    blocked: int  # times the blocklist sent the text back to the model
    created: float
    started: float | None
    finished: float | None

    @property
    def is_finished(self) -> bool:
        return self.status in FINISHED


class Accepted(JobOut):
    position: int  # 1: next; 0: already printing
    printer_busy: bool
    starts_in_seconds: float
    asked: str  # what was asked, in a line: the text to print, or the prompt's last line


class ChatLineOut(Struct):
    name: str
    text: str


class HistoryOut(Struct):
    lines: list[ChatLineOut]


class PortOut(Struct):
    name: str
    state: str  # open, offline, unknown


class MotorOut(Struct):
    state: Literal["off", "starting", "on"]
    pin: int
    always_on: bool


class ChatOut(Struct):
    configured: bool  # [chat] names a channel
    state: str | None  # the bridge's own words (a sign-in code while it waits); None: not heard


class StatusOut(Struct):
    queue: int
    queue_max: int
    printing: JobOut | None
    progress: float | None
    eta_seconds: float
    jobs_finished: int
    model: str
    profile: str
    characters_per_second: float
    port: PortOut
    motor: MotorOut | None  # None: no relay ([motor] pin = -1)
    chat: ChatOut
    # Why the state directory refuses writes (a full card): jobs and chat lines are
    # refused (503) until it takes them again. None: all is well.
    state_error: str | None


class MotorRequest(Struct, forbid_unknown_fields=True):
    """The operator's switch: on (for a quiet spell), or off while nothing prints."""

    on: bool


class QueueOut(Struct):
    jobs: list[Accepted]  # the job printing (position 0) and the waiting ones


class ClearedOut(Struct):
    cleared: int


class ChatStateRequest(Struct, forbid_unknown_fields=True):
    """What the chat bridge is doing, in a line (shown in /v1/status and on paper)."""

    state: Annotated[str, Meta(min_length=1, max_length=300, pattern=NOT_BLANK)]


class ErrorOut(Struct):
    error: str


class CancelledOut(Struct):
    cancelled: bool


class RungOut(Struct):
    rung: bool


class HealthOut(Struct):
    ok: bool


# --- the routes ---------------------------------------------------------------------

TEXT = "text/plain"
EVENTS = "text/event-stream"
Body = type | str | None  # a Struct (JSON), a media type, or no body


@dataclass(frozen=True)
class Route:
    name: str  # the handler's name in appliance.engine.api
    method: str
    path: str
    summary: str
    body: type | None = None  # the JSON request body's type
    body_required: bool = False
    query: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> JSON schema
    responses: dict[int, tuple[str, Body]] = field(default_factory=dict)


_BAD = (400, ("a problem with the request", ErrorOut))
_FULL = (429, ("the queue is full (Retry-After says when to ask again)", ErrorOut))
_STOPPING = (503, ("the engine is stopping or cannot save the job; ask again soon", ErrorOut))
_TOO_LONG = (413, ("its printed form would run past engine.max_paper_seconds", ErrorOut))
_UNSAVED = (503, ("the journal cannot be saved: nothing changed", ErrorOut))

ROUTES = [
    Route(
        "seed_route", "GET", "/asr33bot/{prompt}",
        "The seed project's route: print a reply to the prompt, answer with its text",
        responses=dict([(200, ("the text", TEXT)), _FULL,
                        (422, ("nothing printable came of it", TEXT)),
                        (500, ("generation failed", TEXT)), _STOPPING, _TOO_LONG]),
    ),
    Route(
        "generate", "POST", "/v1/generate",
        "Generate (and print) text; the job when done, 202 at once with wait=false, "
        "or the text as it prints with stream=true",
        body=GenerateRequest,
        responses=dict([(200, ("the job (or, with stream, its text as it comes)", JobOut)),
                        (202, ("queued: where the job is and about when it starts", Accepted)),
                        _BAD, _FULL,
                        (422, ("nothing printable came of it (the job says why)", JobOut)),
                        (500, ("generation failed", JobOut)), _STOPPING, _TOO_LONG]),
    ),
    Route(
        "print_text", "POST", "/v1/print",
        "Print text as it is (the blocklist applies); low_priority only while half the "
        "queue is free",
        body=PrintRequest, body_required=True,
        responses=dict([(202, ("queued", Accepted)), _BAD,
                        (422, ("blocked by the blocklist", ErrorOut)), _FULL, _STOPPING,
                        _TOO_LONG]),
    ),
    Route(
        "queue_get", "GET", "/v1/jobs",
        "The job printing and the waiting ones: source, position, when each starts",
        responses={200: ("the queue", QueueOut)},
    ),
    Route(
        "queue_clear", "DELETE", "/v1/jobs",
        "Take every waiting job off the queue (the one printing goes on)",
        responses=dict([(200, ("how many were taken off", ClearedOut)), _UNSAVED]),
    ),
    Route(
        "job_get", "GET", "/v1/jobs/{id}",
        "A job (queued, running or one of the last finished, across restarts); wait=N "
        "waits up to N seconds for it to finish",
        query={"wait": {"type": "number", "minimum": 0, "maximum": 300}},
        responses=dict([(200, ("the job", JobOut)), _BAD,
                        (404, ("no such job", ErrorOut)), _STOPPING]),
    ),
    Route(
        "job_cancel", "DELETE", "/v1/jobs/{id}",
        "Cancel a job: taken off the queue, or stopped at the end of its line if printing",
        responses=dict([(200, ("the job as it is now", JobOut)),
                        (404, ("no such job", ErrorOut)),
                        (409, ("the job has already finished", JobOut)), _UNSAVED]),
    ),
    Route(
        "history_get", "GET", "/v1/history", "The last chat lines",
        responses={200: ("the lines, oldest first", HistoryOut)},
    ),
    Route(
        "history_add", "POST", "/v1/history", "Add a chat line",
        body=ChatLineRequest, body_required=True,
        responses=dict([(201, ("the line as it is kept", ChatLineOut)), _BAD,
                        (422, ("blocked by the blocklist", ErrorOut)),
                        (503, ("the history cannot be saved", ErrorOut))]),
    ),
    Route(
        "history_clear", "DELETE", "/v1/history", "Forget the chat history",
        responses=dict([(204, ("cleared", None)),
                        (503, ("the history cannot be saved", ErrorOut))]),
    ),
    Route(
        "cancel", "POST", "/v1/cancel", "Stop the job that is printing (its line is finished)",
        responses={200: ("whether anything was printing", CancelledOut)},
    ),
    Route(
        "bell", "POST", "/v1/bell",
        "Ring the Teletype's bell (at most once per engine.bell_interval)",
        responses=dict([(200, ("rung", RungOut)), (429, ("rang a moment ago", ErrorOut))]),
    ),
    Route(
        "status", "GET", "/v1/status", "Queue, the job printing, progress, ETA, model and port",
        responses={200: ("the engine's state", StatusOut)},
    ),
    Route(
        "motor_switch", "PUT", "/v1/motor",
        "Switch the motor: on for a quiet spell ([motor] idle_seconds), off while idle",
        body=MotorRequest, body_required=True,
        responses=dict([(204, ("switched", None)), _BAD,
                        (404, ("no relay ([motor] pin = -1)", ErrorOut)),
                        (409, ("something prints or waits: the motor stays on", ErrorOut))]),
    ),
    Route(
        "chat_state", "PUT", "/v1/chat",
        "The chat bridge says what it is doing (subscribed, waiting for a sign-in...)",
        body=ChatStateRequest, body_required=True,
        responses=dict([(204, ("noted", None)), _BAD,
                        (422, ("blocked by the blocklist", ErrorOut))]),
    ),
    Route(
        "paper_get", "GET", "/v1/paper",
        "The paper: the backlog, the current line and its column, and the last event's "
        "number; with since=SEQ the paper events after SEQ (or the snapshot, when those "
        "are no longer kept)",
        query={"since": {"type": "integer", "minimum": 0}},
        responses=dict([(200, ("{snapshot: ...} or {events: [...]}", "application/json")),
                        _BAD]),
    ),
    Route(
        "events", "GET", "/v1/events",
        "Server-sent events: queued, started, finished (with the text), port, chat, and "
        "paper (numbered: the codes as they left the port, job marks); since=SEQ or "
        "Last-Event-ID first replays the paper after SEQ, or sends a snapshot event",
        query={"since": {"type": "integer", "minimum": 0}},
        responses={200: ("an event stream; it ends when the engine stops", EVENTS)},
    ),
    Route("healthz", "GET", "/healthz", "Liveness", responses={200: ("alive", HealthOut)}),
    Route(
        "openapi", "GET", "/openapi.json", "This document",
        responses={200: ("OpenAPI 3.1", "application/json")},
    ),
]  # fmt: skip


def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 document for ROUTES (JSON Schema 2020-12, as msgspec writes it)."""
    shapes = {r.body for r in ROUTES if r.body} | {
        body for r in ROUTES for _, body in r.responses.values() if isinstance(body, type)
    }
    ordered = sorted(shapes, key=lambda t: t.__name__)
    refs, components = msgspec.json.schema_components(
        ordered, ref_template="#/components/schemas/{name}"
    )
    ref = dict(zip(ordered, refs, strict=True))
    paths: dict[str, dict[str, Any]] = {}
    for route in ROUTES:
        op: dict[str, Any] = {"operationId": route.name, "summary": route.summary}
        params = [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in _path_params(route.path)
        ]
        params += [
            {"name": name, "in": "query", "required": False, "schema": schema}
            for name, schema in route.query.items()
        ]
        if params:
            op["parameters"] = params
        if route.body is not None:
            op["requestBody"] = {
                "required": route.body_required,
                "content": {"application/json": {"schema": ref[route.body]}},
            }
        op["responses"] = {
            str(code): _response(description, body, ref)
            for code, (description, body) in route.responses.items()
        }
        paths.setdefault(route.path, {})[route.method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": "Teletype GPT-2 engine", "version": "2"},
        "paths": paths,
        "components": {"schemas": components},
    }


def _response(description: str, body: Body, ref: dict) -> dict[str, Any]:
    out: dict[str, Any] = {"description": description}
    if isinstance(body, type):
        out["content"] = {"application/json": {"schema": ref[body]}}
    elif isinstance(body, str):
        out["content"] = {body: {}}
    return out


def _path_params(path: str) -> list[str]:
    return [part[1:-1].split(":")[0] for part in path.split("/") if part.startswith("{")]


def encode(value: Any) -> bytes:
    return msgspec.json.encode(value)
