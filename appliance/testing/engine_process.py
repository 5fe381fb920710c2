"""A real `teletype serve` process for tests: its config, its notify socket, its paper."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class NotifySocket:
    """The AF_UNIX datagram socket systemd would listen on (NOTIFY_SOCKET).

    Read continuously, as systemd does: a full socket would block the
    sender, and the engine pings the watchdog several times a second.
    """

    def __init__(self, path: Path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.1)
        self.messages: list[str] = []
        self.times: list[float] = []  # when each message came (time.monotonic)
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self):
        while not self._closed.is_set():
            try:
                message = self.sock.recv(4096).decode()
            except TimeoutError:
                continue
            except OSError:
                return
            self.times.append(time.monotonic())
            self.messages.append(message)

    def when(self, text: str) -> list[float]:
        """When each message holding `text` came."""
        # A message's time is kept first: read together, `times` may be one longer.
        pairs = zip(list(self.times), list(self.messages), strict=False)
        return [t for t, m in pairs if text in m]

    def last(self, text: str, since: float = 0.0) -> float | None:
        """When the latest message holding `text` came, if one came at `since` or later."""
        times = [t for t in self.when(text) if t >= since]
        return times[-1] if times else None

    def wait_for(
        self, text: str, timeout: float = 300.0, alive: Callable[[], bool] | None = None
    ) -> str:
        """The first message holding `text`: waited for while `alive()` (the sender is
        still running), however slow a busy machine makes it; `timeout` only ends a
        hang."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = next((m for m in list(self.messages) if text in m), None)
            if found:
                return found
            if alive is not None and not alive():
                raise AssertionError(
                    f"the sender ended before {text!r}; it said {self.messages[-5:]}"
                )
            time.sleep(0.02)
        raise AssertionError(f"no {text!r} on the notify socket; got {self.messages[-5:]}")

    def count(self, text: str) -> int:
        return sum(text in m for m in list(self.messages))

    def close(self):
        self._closed.set()
        self._thread.join()
        self.sock.close()


class EngineProcess:
    def __init__(
        self,
        tmp: Path,
        port_spec: str,
        engine_extra: str = "",
        env: dict | None = None,
        max_chars: int = 60,
        model_extra: str = "",
        speed: float = 1.0,
    ):
        """`speed` multiplies the printer's pace (1: the Teletype's 10 characters a second)."""
        self.tmp = tmp
        self.http_port = free_port()
        self.config = tmp / "teletype.toml"
        # The status block is a test of its own (test_whereabouts.py); it
        # would come between the replies the other tests read off paper.
        quiet = "" if "status_on_paper" in engine_extra else "status_on_paper = false"
        self.config.write_text(
            f"""
[teletype]
port = "{port_spec}"
speed = {speed}
[engine]
tcp_port = {self.http_port}
state_dir = "{tmp / "state"}"
runtime_dir = "{tmp / "run"}"
{quiet}
{engine_extra}
[model]
max_chars = {max_chars}
seed = 1
{model_extra}
"""
        )
        self.notify = NotifySocket(tmp / f"notify-{self.http_port}.sock")
        self.env = {
            **os.environ,
            "NOTIFY_SOCKET": str(self.notify.path),
            "WATCHDOG_USEC": "300000",
            "PYTHONUNBUFFERED": "1",
            **(env or {}),
        }
        self.log = tmp / f"engine-{self.http_port}.log"
        self.process: subprocess.Popen | None = None

    def set_speed(self, speed: float) -> None:
        """The printer's pace from the next start on."""
        text = self.config.read_text()
        self.config.write_text(re.sub(r"(?m)^speed = .*$", f"speed = {speed}", text, count=1))

    def start(self) -> EngineProcess:
        # A restart is ready at its own READY=1, not at the last process's.
        self.notify.messages.clear()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "appliance.cli", "serve", "--config", str(self.config)],
            stdout=self.log.open("a"),
            stderr=subprocess.STDOUT,
            env=self.env,
        )
        process = self.process
        try:
            self.notify.wait_for("READY=1", alive=lambda: process.poll() is None)
        except AssertionError as e:
            raise AssertionError(f"{e}\n{self.log.read_text(errors='replace')[-3000:]}") from None
        return self

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def request(self, method: str, path: str, body=None, headers=None, timeout: float = 120):
        data = None
        headers = dict(headers or {})
        if body is not None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            headers.setdefault("Content-Type", "application/json")
        req = urllib.request.Request(self.base + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, r.headers, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.headers, e.read()

    def json(self, method: str, path: str, body=None):
        status, _, raw = self.request(method, path, body)
        return status, (json.loads(raw) if raw else None)

    def terminate(self, timeout: float = 30) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)

    def close(self):
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.notify.close()

    def output(self) -> str:
        return self.log.read_text()
