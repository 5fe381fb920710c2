"""Measure the engine as its clients feel it: status calls a second, POST to first byte.

    python bench/engine.py [--out bench/engine.md]

A real `teletype serve` process on the embedded model, a pty as the
Teletype. Reports the median of several runs with min and max; asserts
nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import tempfile
import threading
import time
from pathlib import Path

from appliance.testing.engine_process import EngineProcess
from appliance.testing.wire import PtyReader


async def status_rate(base: str, seconds: float, concurrency: int) -> float:
    import aiohttp

    done = 0
    stop = time.monotonic() + seconds

    async def client(session):
        nonlocal done
        while time.monotonic() < stop:
            async with session.get(base + "/v1/status") as r:
                await r.read()
                done += 1

    async with aiohttp.ClientSession() as session:
        started = time.monotonic()
        await asyncio.gather(*(client(session) for _ in range(concurrency)))
        return done / (time.monotonic() - started)


def first_byte_latency(engine: EngineProcess, pty: PtyReader, seed: int) -> float:
    pty.collect(quiet=0.3)
    before = len(pty.data)
    started = time.monotonic()
    threading.Thread(
        target=engine.json,
        args=("POST", "/v1/generate", {"max_chars": 20, "seed": seed, "prompt": "The clutch"}),
        daemon=True,
    ).start()
    while len(pty.data) == before:
        time.sleep(0.0005)
    latency = time.monotonic() - started
    # Let the job finish before the next one.
    while engine.json("GET", "/v1/status")[1]["printing"] is not None:
        time.sleep(0.2)
    return latency


def fmt(values: list[float], unit: str, digits: int) -> str:
    return (
        f"{statistics.median(values):.{digits}f} {unit} "
        f"(min {min(values):.{digits}f}, max {max(values):.{digits}f})"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("bench/engine.md"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        pty = PtyReader()
        link = Path(tmp) / "tty"
        link.symlink_to(pty.name)
        engine = EngineProcess(Path(tmp), str(link)).start()
        try:
            rates = [asyncio.run(status_rate(engine.base, 3.0, 20)) for _ in range(3)]
            latencies = [first_byte_latency(engine, pty, seed) for seed in range(args.runs)]
        finally:
            engine.close()
            pty.close()
    latency_ms = [v * 1000 for v in latencies]
    report = f"""# Engine: what its clients feel

Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()};
a real `teletype serve` on the embedded model, a pty as the Teletype (ASR-33, 110 baud pacing).

| measure | median (min, max) |
|---|---|
| `GET /v1/status`, 20 concurrent clients over TCP, 3 s | {fmt(rates, "requests/s", 0)} |
| `POST /v1/generate` to the first byte on the wire | {fmt(latency_ms, "ms", 1)} |
"""
    args.out.write_text(report)
    print(report)


if __name__ == "__main__":
    main()
