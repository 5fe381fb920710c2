"""A client of the engine's local API, for the chat bridge and the button.

Over the engine's Unix socket by default (no network needed, and the
socket's file mode decides who may print), or over HTTP.
"""

from __future__ import annotations

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

    async def _call(
        self, method: str, path: str, body: dict | None = None, timeout: float | None = 10.0
    ) -> tuple[int, Any]:
        try:
            async with (
                aiohttp.ClientSession(
                    connector=self._connector(),
                    headers=self.headers,
                    timeout=aiohttp.ClientTimeout(total=timeout),
                ) as session,
                session.request(method, self.base + path, json=body) as r,
            ):
                data = await r.json() if r.content_type == "application/json" else None
                return r.status, data
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
    ) -> tuple[int, dict]:
        """Ask for a reply and wait until it is printed: (HTTP status, job or error)."""
        body: dict[str, Any] = {"use_history": use_history, "prompt": prompt, "print": print}
        if max_chars:
            body["max_chars"] = max_chars
        return await self._call("POST", "/v1/generate", body, timeout=None)

    async def cancel(self) -> bool:
        return bool((await self._call("POST", "/v1/cancel"))[1]["cancelled"])

    async def add_history(self, name: str, text: str) -> None:
        await self._call("POST", "/v1/history", {"name": name, "text": text})
