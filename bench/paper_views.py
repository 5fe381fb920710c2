"""Measure the paper's views as their users feel them: page weight, event to page, reload.

    python bench/paper_views.py [--loads 10] [--out bench/paper-views.md]

Runs a real `teletype serve` (the embedded model) on a pty at the Teletype's own speed,
with a backlog of 400 full lines in its state directory (as after a day's printing), and
drives Debian's chromium:
- page weight: the bytes of the panel's and the overlay's files, as served;
- event to page: from the paper event's stamp (the bytes left the port) to the page
  having drawn it, for every event of a 300-character print;
- reload to backlog: from the navigation's start to the backlog and the line under the
  carriage on the page (the "paper-drawn" mark), over several loads.
Reports; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from appliance.testing.engine_process import EngineProcess  # noqa: E402
from appliance.testing.wire import PtyReader  # noqa: E402

PANEL = ["/", "/panel/style.css", "/panel/paper.js", "/panel/app.js", "/panel/favicon.svg"]
OVERLAY = ["/overlay", "/panel/overlay.css", "/panel/paper.js", "/panel/overlay.js"]
HOOK = """
window.lag = [];
const view = paper, apply = view.apply.bind(view);
view.apply = (e) => {
  apply(e);
  if (e.text !== undefined) window.lag.push(Date.now() - e.t * 1000);
};
"""


def weight(base: str, paths: list[str]) -> int:
    total = 0
    for path in paths:
        with urllib.request.urlopen(base + path, timeout=30) as r:
            total += len(r.read())
    return total


def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ["SE_OFFLINE"] = "true"
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--window-size=1280,900"):  # fmt: skip
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)


def wait_for(condition, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.02)
    raise TimeoutError("timed out")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--loads", type=int, default=10)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "paper-views.md")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    tmp = Path(tempfile.mkdtemp(prefix="paper-views-"))
    state = tmp / "state"
    state.mkdir()
    line = "THE CLUTCH TRIPS, THE TYPEBOX TURNS AND THE HAMMER STRIKES THE PAPER NOW"[:72]
    backlog = [{"text": line} for _ in range(400)]
    (state / "paper.json").write_text(
        json.dumps({"seq": 1, "backlog": backlog, "line": "", "column": 0, "job": None})
    )
    wire = PtyReader()
    link = tmp / "ttyTELETYPE"
    link.symlink_to(wire.name)
    engine = EngineProcess(tmp, str(link)).start()
    driver = browser()
    try:
        panel_bytes, overlay_bytes = weight(engine.base, PANEL), weight(engine.base, OVERLAY)
        drawn = []
        mark = (
            "const m = performance.getEntriesByName('paper-drawn');"
            "return m.length && m[0].startTime;"
        )
        for _ in range(args.loads):
            driver.get(engine.base + "/")
            drawn.append(wait_for(lambda: driver.execute_script(mark)))
        shown = driver.execute_script("return document.querySelectorAll('#paper .line').length")
        wait_for(lambda: driver.execute_script("return paper.source && paper.source.readyState"))
        driver.execute_script(HOOK)
        text = " ".join(["OIL THE TYPEBOX SHAFT EVERY WEEK"] * 10)[:300]
        _, _, raw = engine.request("POST", "/v1/print", {"text": text + "\n"})
        job = json.loads(raw)["id"]
        engine.request("GET", f"/v1/jobs/{job}?wait=120")
        lag = wait_for(lambda: driver.execute_script("return window.lag.length && window.lag"))
        time.sleep(1.0)  # the last events reach the page
        lag = driver.execute_script("return window.lag")
    finally:
        driver.quit()
        engine.close()
        wire.close()
    lag.sort()
    p95 = lag[min(len(lag) - 1, int(len(lag) * 0.95))]
    latency = (
        f"median {statistics.median(lag):.1f} ms, 95th percentile {p95:.1f} ms, "
        f"max {lag[-1]:.1f} ms ({len(lag)} events)"
    )
    reload = (
        f"median {statistics.median(drawn):.0f} ms (min {min(drawn):.0f}, "
        f"max {max(drawn):.0f}; {len(drawn)} loads)"
    )
    report = f"""# The paper's views: what their users feel

Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()};
`teletype serve` with the embedded model on a pty at 10 characters a second, Debian's
chromium (headless), a backlog of 400 full lines in the state directory.
Made by `python bench/paper_views.py`; the machine's load average was {load_before:.1f}
(other work shares its cores: the tails are the scheduler's, the medians ours).

| measure | figure |
|---|---|
| panel page weight (HTML, CSS, scripts, icon; uncompressed) | {panel_bytes / 1024:.1f} KB |
| overlay page weight | {overlay_bytes / 1024:.1f} KB |
| event to page: the bytes leave the port -> drawn on the page | {latency} |
| reload to backlog: navigation start -> {shown - 1} lines and the carriage | {reload} |
"""
    args.out.write_text(report)
    print(report)


if __name__ == "__main__":
    main()
