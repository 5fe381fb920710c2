"""Measure the demo as a user feels it: time from `!gpt2` to the first character, and the rate.

    python bench/virtual_teletype.py [--runs 3] [--out bench/virtual-teletype.md]

Runs the demo's engine (the one `teletype serve` runs) on the embedded model,
two chat lines and then a press of the button (the demo's empty line), with
a virtual Teletype at its real speed, recording when each character reaches
the terminal. Reports; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

from appliance.config import Config
from appliance.engine.engine import Engine
from appliance.engine.generator import Generator, find_model
from appliance.teletype import build_printer
from appliance.teletype.profiles import get_profile


class StampedScreen:
    """A terminal stand-in that notes when each printed character arrives."""

    def __init__(self):
        self.stamps: list[float] = []

    def write(self, text: str) -> None:
        now = time.monotonic()
        self.stamps += [now for ch in text if ch != "\n"]

    def flush(self) -> None:
        pass


def one_run(generator: Generator, seed: int, max_chars: int) -> dict:
    return asyncio.run(_one_run(generator, seed, max_chars))


async def _one_run(generator: Generator, seed: int, max_chars: int) -> dict:
    screen = StampedScreen()
    config = (
        Config()
        .replace("teletype", port="virtual")
        .replace("model", seed=seed, max_chars=max_chars)
    )
    printer = build_printer(config.teletype, out=screen)
    with tempfile.TemporaryDirectory() as state:
        engine = Engine(config, generator, printer, Path(state))
        engine.loop = asyncio.get_running_loop()
        worker = asyncio.create_task(engine.run_worker())
        try:
            for line in ("how does the typing unit print?", "what does the keyboard send?"):
                await engine.add_chat_line("you", line)
            started = time.monotonic()
            job = engine.new_job(None, use_history=True, source="button")
            await engine.submit(job)
            await asyncio.to_thread(job.done.wait)
        finally:
            engine.shut_down()
            worker.cancel()
            await asyncio.gather(worker, return_exceptions=True)
            await engine.close()
            printer.close()
    first = screen.stamps[0] - started
    span = screen.stamps[-1] - screen.stamps[0]
    rate = (len(screen.stamps) - 1) / span if span > 0 else float("nan")
    return {"first": first, "rate": rate, "chars": len(screen.stamps)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--max-chars", type=int, default=120)
    parser.add_argument("--out", type=Path, default=Path("bench/virtual-teletype.md"))
    args = parser.parse_args()
    generator = Generator(find_model(""))
    runs = [one_run(generator, seed, args.max_chars) for seed in range(1, args.runs + 1)]
    nominal = get_profile("asr33").characters_per_second()

    def summary(key: str, unit: str, digits: int) -> str:
        values = [r[key] for r in runs]
        return (
            f"{statistics.median(values):.{digits}f} {unit} "
            f"(min {min(values):.{digits}f}, max {max(values):.{digits}f})"
        )

    report = f"""# Virtual Teletype: what the demo user feels

Machine: {platform.machine()}, {os.cpu_count()} cores, {platform.python_version()};
embedded model; {args.runs} runs, replies of about {args.max_chars} characters.

| measure | median (min, max) |
|---|---|
| `!gpt2` to the first character on screen | {summary("first", "s", 3)} |
| characters per second (printable, after the first) | {summary("rate", "cps", 2)} |
| nominal ASR-33 rate | {nominal:.2f} cps (11 bits a character at 110 baud) |

Printable characters only are counted; the CR, LF and fills also take a
character time each on the wire, so the printable rate is a little below
the nominal rate on text with many line ends.
"""
    args.out.write_text(report)
    print(report)


if __name__ == "__main__":
    main()
