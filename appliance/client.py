"""A client of the engine's local API, for the chat bridge and the button.

Over the engine's Unix socket by default (no network needed, and the
socket's file mode decides who may print), or over HTTP.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp

from appliance.errors import ApplianceError


class EngineUnavailable(ApplianceError, ConnectionError):
    """The engine is not running or not answering."""


class EngineClient:
    def __init__(self, socket_path: Path | None = None, url: str = "", token: str = ""):
        if url:
            self.base = url.rstrip("/")
            self._connector = lambda: None
        else:
            if socket_path is None:
                raise ValueError("an engine client needs a socket path or a URL")
            self.base = "http://engine"
            self._connector = lambda: aiohttp.UnixConnector(path=str(socket_path))
        self.where = url or str(socket_path)
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}

    def _session(self, timeout: aiohttp.ClientTimeout) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(
            connector=self._connector(), headers=self.headers, timeout=timeout
        )

    async def _call(
        self, method: str, path: str, body: dict | None = None, timeout: float | None = 10.0
    ) -> tuple[int, Any]:
        try:
            async with (
                self._session(aiohttp.ClientTimeout(total=timeout)) as session,
                session.request(method, self.base + path, json=body) as r,
            ):
                if r.content_type == "application/json":
                    return r.status, await r.json()
                # aiohttp's own errors (404, 405, 500) are plain text.
                return r.status, {"error": f"HTTP {r.status}: {(await r.text())[:200]}"}
        except (aiohttp.ClientError, OSError, TimeoutError) as e:
            raise EngineUnavailable(f"the engine at {self.where} is not answering: {e}") from e

    async def status(self) -> dict:
        return (await self._call("GET", "/v1/status"))[1]

    async def generate(
        self,
        *,
        use_history: bool = True,
        prompt: str = "",
        max_chars: int | None = None,
        print: bool = True,
        source: str = "api",
    ) -> tuple[int, dict]:
        """Ask for a reply and wait until it is printed: (HTTP status, job or error)."""
        body: dict[str, Any] = {
            "use_history": use_history,
            "prompt": prompt,
            "print": print,
            "source": source,
        }
        if max_chars:
            body["max_chars"] = max_chars
        return await self._call("POST", "/v1/generate", body, timeout=None)

    async def request_reply(self, extra: str = "", source: str = "api") -> tuple[int, dict]:
        """Queue a reply to the chat history (plus extra words) without waiting for it.

        (202, the job with its position and starts_in_seconds), or (429, error).
        """
        body = {"use_history": True, "prompt": extra, "wait": False, "source": source}
        return await self._call("POST", "/v1/generate", body)

    async def job(self, job_id: int, wait: float = 0) -> tuple[int, dict]:
        """A job; with `wait`, once it finishes or after that many seconds."""
        path = f"/v1/jobs/{job_id}" + (f"?wait={wait:g}" if wait else "")
        return await self._call("GET", path, timeout=wait + 10)

    async def print_text(
        self, text: str, source: str = "api", low_priority: bool = False
    ) -> tuple[int, dict]:
        body = {"text": text, "source": source, "low_priority": low_priority}
        return await self._call("POST", "/v1/print", body)

    async def cancel(self) -> bool:
        return bool((await self._call("POST", "/v1/cancel"))[1].get("cancelled"))

    async def add_history(self, name: str, text: str) -> tuple[int, dict]:
        """(201, the line as stored), (422, why the blocklist refused it) or (400, ...)."""
        return await self._call("POST", "/v1/history", {"name": name, "text": text})

    async def clear_history(self) -> None:
        await self._call("DELETE", "/v1/history")

    async def bell(self) -> tuple[int, dict]:
        """(200, ...) when it rang; (429, ...) when it rang too recently."""
        return await self._call("POST", "/v1/bell")

    async def report_chat_state(self, state: str) -> None:
        """Tell the engine what the chat bridge is doing (for /v1/status and the paper)."""
        await self._call("PUT", "/v1/chat", {"state": state})

    async def events(self) -> AsyncIterator[tuple[str, dict]]:
        """The engine's events as (kind, data), until the connection ends.

        The first is ("connected", {}), once the engine has answered.
        """
        try:
            # No total limit: the stream runs for as long as the engine does.
            async with (
                self._session(aiohttp.ClientTimeout(total=None, sock_read=60)) as session,
                session.get(self.base + "/v1/events") as r,
            ):
                if r.status != 200:
                    raise EngineUnavailable(f"the engine at {self.where} answered {r.status}")
                yield "connected", {}
                kind = ""
                async for raw in r.content:
                    line = raw.decode("utf-8").rstrip("\r\n")
                    if line.startswith("event: "):
                        kind = line[7:]
                    elif line.startswith("data: ") and kind:
                        try:
                            data = json.loads(line[6:])
                        except ValueError:
                            data = None
                        if isinstance(data, dict):
                            yield kind, data
                        kind = ""
        except (aiohttp.ClientError, OSError, TimeoutError) as e:
            raise EngineUnavailable(f"the engine at {self.where} is not answering: {e}") from e
