"""A client of the engine's local API, for the chat bridge and the button.

Over the engine's Unix socket by default (no network needed, and the
socket's file mode decides who may print), or over HTTP. It speaks the
engine's own words: answers come back as the types of appliance.schema,
and refusals as the ApplianceErrors the engine raised, so no caller reads
an HTTP status code.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import msgspec

from appliance.errors import (
    ApplianceError,
    BellTooSoon,
    Blocked,
    EngineRefused,
    EngineUnavailable,
    NoSuchJob,
    QueueFull,
    ShuttingDown,
    TooLong,
)
from appliance.schema import (
    Accepted,
    CancelledOut,
    ChatLineOut,
    JobOut,
    PrintSource,
    RungOut,
    Source,
    StatusOut,
)

__all__ = ["EngineClient", "EngineUnavailable"]

T = TypeVar("T")


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
        self,
        method: str,
        path: str,
        answer: type[T],
        body: dict | None = None,
        timeout: float | None = 10.0,
        too_soon: type[QueueFull | BellTooSoon] = QueueFull,
    ) -> T:
        """The engine's answer as `answer`; its refusal raised as an ApplianceError.

        `too_soon` is what a 429 means on this route: a full queue, or a bell that rang.
        """
        try:
            async with (
                self._session(aiohttp.ClientTimeout(total=timeout)) as session,
                session.request(method, self.base + path, json=body) as r,
            ):
                status, retry_after = r.status, r.headers.get("Retry-After", "")
                raw = await r.read()
        except (aiohttp.ClientError, OSError, TimeoutError) as e:
            raise EngineUnavailable(f"the engine at {self.where} is not answering: {e}") from e
        if status >= 400:
            raise _refusal(status, _error_text(status, raw), retry_after, too_soon)
        if answer is type(None):
            return None  # type: ignore[return-value]
        try:
            return msgspec.json.decode(raw, type=answer)
        except msgspec.DecodeError as e:  # ValidationError is one
            raise EngineRefused(f"the engine at {self.where} answered {path} oddly: {e}") from e

    async def status(self) -> StatusOut:
        return await self._call("GET", "/v1/status", StatusOut)

    async def generate(
        self,
        *,
        use_history: bool = True,
        prompt: str = "",
        max_chars: int | None = None,
        print: bool = True,
        source: Source = Source.API,
    ) -> JobOut:
        """Ask for a reply and wait until it is printed: the job as it ended (its status
        says whether it is done, withheld or failed)."""
        body: dict[str, Any] = {
            "use_history": use_history,
            "prompt": prompt,
            "print": print,
            "source": source,
        }
        if max_chars:
            body["max_chars"] = max_chars
        try:
            return await self._call("POST", "/v1/generate", JobOut, body, timeout=None)
        except _FinishedBadly as e:
            return e.job

    async def request_reply(self, extra: str = "", source: Source = Source.API) -> Accepted:
        """Queue a reply to the chat history (plus extra words) without waiting for it:
        the job with its position and starts_in_seconds. QueueFull when there is no room."""
        body = {"use_history": True, "prompt": extra, "wait": False, "source": source}
        return await self._call("POST", "/v1/generate", Accepted, body)

    async def job(self, job_id: int, wait: float = 0) -> JobOut:
        """A job; with `wait`, once it finishes or after that many seconds. NoSuchJob if
        the engine does not know it."""
        path = f"/v1/jobs/{job_id}" + (f"?wait={wait:g}" if wait else "")
        return await self._call("GET", path, JobOut, timeout=wait + 10)

    async def print_text(
        self, text: str, source: PrintSource = PrintSource.API, low_priority: bool = False
    ) -> Accepted:
        """Print text as it is; Blocked, QueueFull (with low_priority: while less than
        half the queue is free) or TooLong if not."""
        body = {"text": text, "source": source, "low_priority": low_priority}
        return await self._call("POST", "/v1/print", Accepted, body)

    async def cancel(self) -> bool:
        """Stop the job that is printing; False if nothing was."""
        return (await self._call("POST", "/v1/cancel", CancelledOut)).cancelled

    async def add_history(self, name: str, text: str) -> ChatLineOut:
        """The line as the history keeps it; Blocked if the blocklist refused it."""
        return await self._call("POST", "/v1/history", ChatLineOut, {"name": name, "text": text})

    async def clear_history(self) -> None:
        await self._call("DELETE", "/v1/history", type(None))

    async def bell(self) -> None:
        """Ring the bell; BellTooSoon if it rang a moment ago."""
        await self._call("POST", "/v1/bell", RungOut, too_soon=BellTooSoon)

    async def report_chat_state(self, state: str) -> None:
        """Tell the engine what the chat bridge is doing (for /v1/status and the paper)."""
        await self._call("PUT", "/v1/chat", type(None), {"state": state})

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


class _FinishedBadly(ApplianceError):
    """A waited-for job that ended withheld (422) or failed (500): the job still answers."""

    def __init__(self, job: JobOut):
        super().__init__(job.error or job.status)
        self.job = job


def _error_text(status: int, raw: bytes) -> str | JobOut:
    """The engine's words for a refusal: {"error": ...}, or a job that ended badly."""
    try:
        return msgspec.json.decode(raw, type=JobOut)
    except msgspec.DecodeError:
        pass
    try:
        data = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        data = None
    if isinstance(data, dict) and isinstance(data.get("error"), str):
        return data["error"]
    # aiohttp's own errors (404 for a route it lacks, 500) are plain text.
    return f"HTTP {status}: {raw[:200].decode('utf-8', 'replace')}"


def _refusal(
    status: int, said: str | JobOut, retry_after: str, too_soon: type[QueueFull | BellTooSoon]
) -> ApplianceError:
    """The ApplianceError that an answer of the engine's API stands for."""
    if isinstance(said, JobOut):
        return _FinishedBadly(said)
    if status == 429:
        return too_soon(int(retry_after) if retry_after.isdigit() else 1)
    if status == 422:
        return Blocked(said)
    if status == 413:
        return TooLong(said)
    if status == 404:
        return NoSuchJob(said)
    if status == 503:
        # Stopping, or a card that will not take the job: either way, ask again soon.
        return ShuttingDown(said)
    return EngineRefused(said)
