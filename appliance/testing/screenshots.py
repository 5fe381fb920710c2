"""The README's pictures, made again: `make screenshots` writes appliance/testing/screenshots/*.png.

A real engine (`teletype serve` on the embedded model, through the test kit)
prints on a pty at four times the Teletype's pace while headless chromium
shoots the panel at desktop and phone size (mid-print: the badge, the job
list and the paper move) and the stream overlay over a colour-bar test
pattern. Then `teletype demo` runs in tmux as a user would drive it, and its
screen is drawn as a terminal in the same browser. Nothing here is mocked;
the text differs from run to run only where the engine's timing does.

Needs chromium, chromium-driver and tmux (Debian: apt-get install chromium
chromium-driver tmux).
"""

from __future__ import annotations

import html
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path

from appliance.testing.engine_process import EngineProcess, free_port
from appliance.testing.wire import PtyReader

ROOT = Path(__file__).resolve().parents[2]  # the repository

OUT = Path(__file__).resolve().parent / "screenshots"
OVERLAY_TOKEN = "screenshot-overlay-token"
# Fast enough to keep `make screenshots` short, slow enough that a reply is still
# printing while the panel is shot at both sizes.
SPEED = 4
CHAT = [
    ("ada", "how does the typing unit print a character?"),
    ("bob", "what does the keyboard send when a key is pressed?"),
    ("cy", "tell me about the selector"),
]
# All 72 columns, margin to margin: the phone's picture shows the whole line fits.
WHOLE_LINE = "OIL THE TYPEBOX ON FRIDAYS, THE SELECTOR CLUTCH AND THE CAMS EACH MONTH."
# SMPTE-like colour bars (75 % bars over a castellation strip and a PLUGE row),
# laid behind the transparent overlay as a scene would be in OBS.
BARS = ["#c0c0c0", "#c0c000", "#00c0c0", "#00c000", "#c000c0", "#c00000", "#0000c0"]
STRIP = ["#0000c0", "#131313", "#c000c0", "#131313", "#00c0c0", "#131313", "#c0c0c0"]
PLUGE = ["#00214c", "#ffffff", "#32006a", "#131313", "#131313", "#131313", "#131313"]


def wait_until(condition: Callable, timeout: float = 120.0, every: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(every)
    raise SystemExit(f"screenshots: timed out waiting for {condition.__doc__ or 'the page'}")


def missing_tools() -> list[str]:
    tools = {"chromium": "chromium", "chromedriver": "chromium-driver", "tmux": "tmux"}
    return [package for tool, package in tools.items() if shutil.which(tool) is None]


def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must not download a driver
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--disable-background-networking", "--disable-component-update",
                 "--no-first-run", "--hide-scrollbars", "--window-size=1280,800"):  # fmt: skip
        options.add_argument(flag)
    service = Service(executable_path=shutil.which("chromedriver"))
    driver = webdriver.Chrome(service=service, options=options)
    driver.set_page_load_timeout(30)
    return driver


def screen(driver, width: int, height: int, scale: float = 1, mobile: bool = False) -> None:
    """The viewport as a device has it: CSS pixels, and device pixels per CSS pixel."""
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": height, "deviceScaleFactor": scale, "mobile": mobile},
    )


def shoot(driver, name: str) -> Path:
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / name
    driver.save_screenshot(str(path))
    print(f"screenshots: {path.relative_to(ROOT)} ({path.stat().st_size // 1024} KB)")
    return path


# --- the engine, the panel and the overlay ----------------------------------------------


def start_engine(tmp: Path) -> tuple[EngineProcess, PtyReader]:
    reader = PtyReader()
    link = tmp / "ttyTELETYPE"
    link.symlink_to(reader.name)
    # On loopback without a token, as a Pi's own browser opens it: no sign-in.
    extra = f'overlay_token = "{OVERLAY_TOKEN}"'
    engine = EngineProcess(tmp, str(link), engine_extra=extra, max_chars=160, speed=SPEED)
    return engine.start(), reader


def call(engine: EngineProcess, method: str, path: str, body: dict | None = None) -> dict:
    status, answer = engine.json(method, path, body)
    if status >= 300:
        raise SystemExit(f"screenshots: {method} {path} answered {status}: {answer}")
    return answer or {}


def finish(engine: EngineProcess, job: dict) -> None:
    call(engine, "GET", f"/v1/jobs/{job['id']}?wait=120")


def printing_a_reply(engine: EngineProcess) -> Callable[[], bool]:
    """Prints a backlog (a reply, a line from the panel), then starts a second reply with a
    line queued behind it; the answer says when that reply is well under way."""
    for name, text in CHAT:
        call(engine, "POST", "/v1/history", {"name": name, "text": text})
    finish(engine, call(engine, "POST", "/v1/generate", {"wait": False, "source": "panel"}))
    finish(engine, call(engine, "POST", "/v1/print", {"text": WHOLE_LINE + "\n"}))
    # Another line in the chat: the second reply answers something new.
    call(engine, "POST", "/v1/history", {"name": "dee", "text": "why does the bell ring?"})
    reply = call(engine, "POST", "/v1/generate", {"wait": False, "source": "button"})
    call(engine, "POST", "/v1/print", {"text": "THE STREAM SAYS HELLO.\n"})

    def under_way() -> bool:
        """the second reply to print 40 characters"""
        job = call(engine, "GET", f"/v1/jobs/{reply['id']}")
        return job.get("status") == "running" and job.get("printed", 0) >= 40

    return under_way


def panel_shots(driver, engine: EngineProcess) -> None:
    from selenium.webdriver.common.by import By

    under_way = printing_a_reply(engine)
    screen(driver, 1280, 800)
    driver.get(engine.base + "/")
    wait_until(lambda: driver.find_element(By.ID, "panel").is_displayed())
    wait_until(under_way, every=0.05)
    shoot(driver, "panel-desktop.png")
    # A phone held upright, at its real pixel density (the 72 columns are legible).
    screen(driver, 390, 844, scale=2, mobile=True)
    driver.refresh()
    wait_until(lambda: driver.find_element(By.ID, "panel").is_displayed())
    wait_until(lambda: driver.find_elements(By.CSS_SELECTOR, "#paper .line"))
    shoot(driver, "panel-phone.png")


def overlay_shot(driver, engine: EngineProcess) -> None:
    from selenium.webdriver.common.by import By

    wait_until(lambda: not call(engine, "GET", "/v1/jobs").get("jobs"))
    # OBS's 1920 x 1080 browser source, drawn at half size to keep the file small.
    screen(driver, 1920, 1080, scale=0.5)
    driver.get(f"{engine.base}/overlay?token={OVERLAY_TOKEN}&lines=8")
    wait_until(lambda: len(driver.find_elements(By.CSS_SELECTOR, "#paper .line")) > 3)
    rows = [("67%", BARS), ("8%", STRIP), ("25%", PLUGE)]
    driver.execute_script(
        "const pattern = document.createElement('div'); document.body.prepend(pattern);"
        "Object.assign(pattern.style, {position: 'fixed', inset: '0', zIndex: '-1',"
        " display: 'grid', gridTemplateRows: arguments[0].map((r) => r[0]).join(' ')});"
        "for (const [, colours] of arguments[0]) { const row = document.createElement('div');"
        "  Object.assign(row.style, {display: 'grid', gridTemplateColumns: 'repeat(7, 1fr)'});"
        "  for (const c of colours) { const bar = document.createElement('div');"
        "    bar.style.background = c; row.append(bar); }"
        "  pattern.append(row); }",
        rows,
    )
    shoot(driver, "overlay.png")


# --- the demo in a terminal ----------------------------------------------------------------


class Tmux:
    """`teletype demo` in a tmux of its own (its own server socket: the user's is untouched)."""

    def __init__(self, command: list[str], env: dict[str, str], columns: int, rows: int):
        self.socket = f"teletype-screenshots-{os.getpid()}"
        self._tmux(
            "new-session", "-d", "-s", "demo", "-x", str(columns), "-y", str(rows),
            *[f"-e{k}={v}" for k, v in env.items()], " ".join(command),
        )  # fmt: skip

    def _tmux(self, *args: str) -> str:
        done = subprocess.run(
            ["tmux", "-L", self.socket, *args], capture_output=True, text=True, check=True
        )
        return done.stdout

    def type(self, line: str) -> None:
        self._tmux("send-keys", "-t", "demo", "-l", line)
        self._tmux("send-keys", "-t", "demo", "Enter")

    def text(self) -> str:
        return self._tmux("capture-pane", "-p", "-t", "demo")

    def close(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True)


def demo_text(tmp: Path) -> str:
    """The demo's screen after two chat lines and a press of Enter, once the reply is done."""
    port = free_port()
    config = tmp / "demo.toml"
    config.write_text(f"[engine]\ntcp_port = {port}\n[model]\nmax_chars = 200\nseed = 3\n")
    command = [sys.executable, "-m", "appliance.cli", "demo", "--config", str(config)]
    # A home of its own: the demo's state and log go there, said on screen as ~/...
    env = {"HOME": str(tmp / "home"), "PYTHONPATH": str(ROOT)}
    terminal = Tmux([*command, "--speed", "10"], env, columns=80, rows=30)

    def prompts() -> int:
        """the demo's prompt"""
        screen = terminal.text().rstrip()
        return screen.count("> ") + 1 if screen.endswith(">") else 0

    try:
        for _, text in CHAT[:2]:
            seen = wait_until(prompts)  # each line typed at its own prompt, as a user does
            terminal.type(text)
            wait_until(lambda seen=seen: prompts() > seen)
        terminal.type("")  # Enter alone: the Teletype answers

        def reply_done() -> bool:
            """the demo's reply"""
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/jobs", timeout=10) as r:
                jobs = json.load(r)["jobs"]
            screen = terminal.text().rstrip()
            after = screen.rpartition(CHAT[1][1])[2]  # the paper below the last chat line
            return not jobs and screen.endswith(">") and "\n  | " in after

        wait_until(reply_done, every=0.5)
        return terminal.text().rstrip() + "\n"
    finally:
        terminal.close()


def demo_shot(driver, text: str) -> None:
    from selenium.webdriver.common.by import By

    page = (
        "<!doctype html><meta charset=utf-8><style>"
        "body { margin: 0; background: #1e1e1e; }"
        "pre { display: inline-block; margin: 0; padding: 12px 16px; color: #d8d8d8;"
        " background: #1e1e1e; font: 14px/1.3 'DejaVu Sans Mono', monospace; }"
        f"</style><pre>{html.escape(text)}</pre>"
    )
    screen(driver, 1000, 800)
    driver.get("data:text/html;charset=utf-8," + urllib.parse.quote(page))
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / "demo.png"
    driver.find_element(By.TAG_NAME, "pre").screenshot(str(path))
    print(f"screenshots: {path.relative_to(ROOT)} ({path.stat().st_size // 1024} KB)")


def main() -> int:
    if missing := missing_tools():
        print(f"screenshots: needs {' '.join(missing)} (apt-get install {' '.join(missing)})")
        return 1
    with tempfile.TemporaryDirectory(prefix="teletype-screenshots-") as name:
        tmp = Path(name)
        driver = browser()
        engine, reader = start_engine(tmp)
        try:
            panel_shots(driver, engine)
            overlay_shot(driver, engine)
        finally:
            engine.close()
            reader.close()
        try:
            demo_shot(driver, demo_text(tmp))
        finally:
            driver.quit()
    return 0


if __name__ == "__main__":
    sys.exit(main())
