"""The API's OpenAPI 3 document, served at /openapi.json and checked by schemathesis."""

from __future__ import annotations

_ERROR = {
    "description": "a problem with the request",
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "properties": {"error": {"type": "string"}},
                "required": ["error"],
            }
        }
    },
}
_JOB = {
    "type": "object",
    "required": ["id", "status", "text"],
    "properties": {
        "id": {"type": "integer"},
        "source": {"type": "string"},
        "status": {
            "type": "string",
            "enum": ["queued", "running", "done", "failed", "cancelled", "withheld"],
        },
        "print": {"type": "boolean"},
        "max_chars": {"type": "integer"},
        "text": {"type": "string"},
        "printed": {"type": "integer"},
        "error": {"type": "string", "nullable": True},
        "blocked": {"type": "integer"},
        "created": {"type": "number"},
        "started": {"type": "number", "nullable": True},
        "finished": {"type": "number", "nullable": True},
    },
}
_LINE = {
    "type": "object",
    "required": ["name", "text"],
    "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 100},
        "text": {"type": "string", "minLength": 1, "maxLength": 2000},
    },
}
_QUEUED = {
    "description": "queued: where the job is and about when it starts",
    "content": {
        "application/json": {
            "schema": {
                **_JOB,
                "required": [*_JOB["required"], "position", "starts_in_seconds"],
                "properties": {
                    **_JOB["properties"],
                    "position": {"type": "integer"},
                    "printer_busy": {"type": "boolean"},
                    "starts_in_seconds": {"type": "number"},
                },
            }
        }
    },
}
_SOURCES = ["api", "button", "chat", "keyboard"]
_BUSY = {
    "description": "the queue is full",
    "headers": {"Retry-After": {"schema": {"type": "string"}}},
}


def _json(schema: dict, description: str = "OK") -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


OPENAPI = {
    "openapi": "3.0.3",
    "info": {"title": "Teletype GPT-2 engine", "version": "1"},
    "paths": {
        "/asr33bot/{prompt}": {
            "get": {
                "summary": "The seed project's route: print a reply to the prompt, return its text",
                "parameters": [
                    {"name": "prompt", "in": "path", "required": True, "schema": {"type": "string"}}
                ],
                "responses": {
                    "200": {"description": "the text", "content": {"text/plain": {}}},
                    "429": _BUSY,
                    "500": {"description": "generation failed", "content": {"text/plain": {}}},
                },
            }
        },
        "/v1/generate": {
            "post": {
                "summary": "Generate (and print) text; JSON when done, or streamed as it prints",
                "requestBody": {
                    "required": False,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "properties": {
                                    "prompt": {"type": "string", "maxLength": 2000},
                                    "use_history": {"type": "boolean"},
                                    "max_chars": {
                                        "type": "integer",
                                        "minimum": 20,
                                        "maximum": 5000,
                                    },
                                    "seed": {
                                        "type": "integer",
                                        "minimum": 0,
                                        "maximum": 2147483647,
                                    },
                                    "print": {"type": "boolean"},
                                    "stream": {"type": "boolean"},
                                    "wait": {"type": "boolean"},
                                    "source": {"type": "string", "enum": _SOURCES},
                                },
                            }
                        }
                    },
                },
                "responses": {
                    "200": {
                        "description": "the job (or, with stream, its text as it comes)",
                        "content": {"application/json": {"schema": _JOB}, "text/plain": {}},
                    },
                    "202": _QUEUED,
                    "400": _ERROR,
                    "429": _BUSY,
                    "500": _json(_JOB, "generation failed"),
                },
            }
        },
        "/v1/print": {
            "post": {
                "summary": "Print text as it is (the blocklist applies); low_priority only "
                "while half the queue is free",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["text"],
                                "properties": {
                                    "text": {"type": "string", "minLength": 1, "maxLength": 2000},
                                    "source": {
                                        "type": "string",
                                        "enum": [*_SOURCES, "chat-line", "system"],
                                    },
                                    "low_priority": {"type": "boolean"},
                                },
                            }
                        }
                    },
                },
                "responses": {
                    "202": _QUEUED,
                    "400": _ERROR,
                    "422": {**_ERROR, "description": "blocked by the blocklist"},
                    "429": _BUSY,
                },
            }
        },
        "/v1/jobs/{id}": {
            "get": {
                "summary": "A job (queued, running or recently finished); wait=N waits up to "
                "N seconds for it to finish",
                "parameters": [
                    {"name": "id", "in": "path", "required": True, "schema": {"type": "integer"}},
                    {
                        "name": "wait",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "number", "minimum": 0, "maximum": 300},
                    },
                ],
                "responses": {
                    "200": _json(_JOB),
                    "400": _ERROR,
                    "404": {**_ERROR, "description": "no such job"},
                },
            }
        },
        "/v1/history": {
            "get": {
                "summary": "The last chat lines",
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["lines"],
                            "properties": {"lines": {"type": "array", "items": _LINE}},
                        }
                    )
                },
            },
            "post": {
                "summary": "Add a chat line",
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": {**_LINE}}},
                },
                "responses": {
                    "201": _json(_LINE, "added"),
                    "400": _ERROR,
                    "422": {**_ERROR, "description": "blocked by the blocklist"},
                },
            },
            "delete": {
                "summary": "Forget the chat history",
                "responses": {"204": {"description": "cleared"}},
            },
        },
        "/v1/cancel": {
            "post": {
                "summary": "Stop the job that is printing (the line is finished)",
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["cancelled"],
                            "properties": {"cancelled": {"type": "boolean"}},
                        }
                    )
                },
            }
        },
        "/v1/bell": {
            "post": {
                "summary": "Ring the Teletype's bell (at most once per engine.bell_interval)",
                "responses": {
                    "200": _json({"type": "object", "properties": {"rung": {"type": "boolean"}}}),
                    "429": _BUSY,
                },
            }
        },
        "/v1/status": {
            "get": {
                "summary": "Queue, the job printing, progress, ETA, model and port",
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["queue", "queue_max", "eta_seconds", "model", "port"],
                            "properties": {
                                "queue": {"type": "integer"},
                                "queue_max": {"type": "integer"},
                                "printing": {**_JOB, "nullable": True},
                                "progress": {"type": "number", "nullable": True},
                                "eta_seconds": {"type": "number"},
                                "jobs_finished": {"type": "integer"},
                                "model": {"type": "string"},
                                "profile": {"type": "string"},
                                "characters_per_second": {"type": "number"},
                                "port": {"type": "object"},
                            },
                        }
                    )
                },
            }
        },
        "/v1/events": {
            "get": {
                "summary": "Server-sent events: queued, started, finished (with text), port",
                "responses": {
                    "200": {"description": "an event stream", "content": {"text/event-stream": {}}}
                },
            }
        },
        "/healthz": {
            "get": {
                "summary": "Liveness",
                "responses": {
                    "200": _json({"type": "object", "properties": {"ok": {"type": "boolean"}}})
                },
            }
        },
    },
}
