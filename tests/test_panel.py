"""The operator's panel in a real browser: Debian's chromium, driven through its chromedriver.

The engine is the real one (`teletype serve`, the embedded model) printing
on a pty whose reader keeps every byte: what the page shows as paper is
compared with what went down the wire. Screenshots go to build/panel/
(the README's picture is one of them).
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
import urllib.request
from http.cookies import SimpleCookie
from pathlib import Path

import pytest

from appliance.testing.engine_process import EngineProcess

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
SCREENSHOTS = Path(__file__).resolve().parent.parent / "build" / "panel"
TOKEN, PASSWORD = "api-token-0123456789", "let the teletype talk"

needs_browser = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="the panel's browser tests need Debian's chromium and chromium-driver "
    "(make test installs them as root)",
)


def paper_of(data: bytes) -> str:
    """The wire's codes drawn as a Teletype prints them (what the page must show)."""
    lines, column = [""], 0
    for byte in data:
        code = byte & 0x7F
        if code == 0x0D:
            column = 0
        elif code == 0x0A:
            lines.append("")
        elif 0x20 <= code < 0x7F:
            line = lines[-1].ljust(column)
            lines[-1] = line[:column] + chr(code) + line[column + 1 :]
            column += 1
    return "\n".join(lines)


def page_lines(browser) -> str:
    """The printed lines on the page (not the job marks between them), as paper_of gives them."""
    lines = browser.execute_script(
        "return [...document.querySelectorAll('#paper .line')].map((e) => e.textContent)"
    )
    return "\n".join(line.rstrip() for line in lines).rstrip()


def trimmed(paper: str) -> str:
    return "\n".join(line.rstrip() for line in paper.split("\n")).rstrip()


def lan_address() -> str:
    """This machine's address on its network (as a phone on the same Wi-Fi reaches the
    Pi), or loopback where it has none."""
    from appliance.engine.whereabouts import interface_addresses, reachable

    return next((a for a in reachable(interface_addresses()) if ":" not in a), "127.0.0.1")


@pytest.fixture
def engine(start_engine):
    # Open to the network, as a streamer sets it: then a token and a password.
    extra = f'tcp_host = "0.0.0.0"\ntoken = "{TOKEN}"\npanel_password = "{PASSWORD}"'
    # At the Teletype's pace: the page watches a print and cancels it.
    process = start_engine(engine_extra=extra, max_chars=200, speed=1)
    process.lan = f"http://{lan_address()}:{process.http_port}"
    return process


@pytest.fixture
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must not download a driver
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--window-size=1280,900"):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def wait_until(condition, timeout: float = 30.0, every: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every)
    raise AssertionError("timed out waiting")


def sign_in(browser, base: str, password: str = PASSWORD) -> None:
    from selenium.webdriver.common.by import By

    browser.get(base + "/")
    wait_until(lambda: browser.find_element(By.ID, "login").is_displayed())
    field = browser.find_element(By.ID, "password")
    field.clear()
    field.send_keys(password)
    browser.find_element(By.CSS_SELECTOR, "#login button").click()


def contrast(browser, selector: str) -> float:
    """WCAG's contrast ratio of an element's text on its own background."""
    colours = browser.execute_script(
        "const s = getComputedStyle(document.querySelector(arguments[0]));"
        "return [s.color, s.backgroundColor];",
        selector,
    )

    def luminance(rgb: str) -> float:
        channels = [int(c) / 255 for c in rgb[rgb.index("(") + 1 : -1].split(",")[:3]]
        linear = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
        return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]

    light, dark = sorted(map(luminance, colours), reverse=True)
    return (light + 0.05) / (dark + 0.05)


def shoot(browser, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / name
    browser.save_screenshot(str(path))
    return path


# --- in the browser ----------------------------------------------------------------


@needs_browser
def test_sign_in_watch_the_paper_and_cancel_at_column_zero(engine, browser, teletype):
    from selenium.webdriver.common.by import By

    sign_in(browser, engine.lan, "not the password")
    error = wait_until(lambda: browser.find_element(By.ID, "login-error").text)
    assert error == "Wrong password."
    assert not browser.find_element(By.ID, "panel").is_displayed()

    def let_in() -> bool:
        # Right after a wrong guess this address waits a second (429, said on the page);
        # no lockout: then the owner gets in.
        sign_in(browser, engine.lan)
        panel = browser.find_element(By.ID, "panel")
        said = lambda: browser.find_element(By.ID, "login-error").text  # noqa: E731
        wait_until(lambda: panel.is_displayed() or "again in" in said())
        return panel.is_displayed()

    wait_until(let_in, timeout=15, every=0.5)
    wait_until(lambda: browser.find_element(By.ID, "state").text.upper() == "READY")

    bearer = {"Authorization": f"Bearer {TOKEN}"}
    for name, text in (("ada", "how does the clutch work"), ("bob", "what oils the typebox")):
        assert engine.request("POST", "/v1/history", {"name": name, "text": text}, bearer)[0] == 201
    browser.find_element(By.CSS_SELECTOR, "[data-action=press]").click()
    page_paper = lambda: browser.find_element(By.ID, "paper").text  # noqa: E731
    wait_until(lambda: len(page_paper().replace("\n", "")) >= 90, timeout=120)
    assert "ada: how does the clutch work" in browser.find_element(By.ID, "history").text
    assert browser.find_element(By.ID, "state").text.upper() == "PRINTING"
    assert "panel" in browser.find_element(By.ID, "queue").text
    printing = _api(engine, "GET", "/v1/jobs")["jobs"][0]
    assert printing["position"] == 0 and printing["source"] == "panel"
    shoot(browser, "panel-desktop.png")
    browser.find_element(By.CSS_SELECTOR, "[data-action=cancel]").click()
    wait_until(browser.find_element(By.ID, "confirm").is_displayed)
    browser.find_element(By.ID, "confirm-yes").click()  # a cancel is asked first
    job = wait_until(
        lambda: (
            (j := _api(engine, "GET", f"/v1/jobs/{printing['id']}"))["status"] != "running" and j
        ),
        timeout=60,
    )
    assert job["status"] == "cancelled"

    wire = teletype.collect(quiet=1.0)
    codes = [b & 0x7F for b in wire if b & 0x7F not in (0x00, 0x7F)]
    # Stopped at column 0: the line was finished, nothing after the last CR LF.
    assert codes[-2:] == [0x0D, 0x0A] or codes[-1] == 0x0D
    wait_until(lambda: page_lines(browser) == trimmed(paper_of(wire)), timeout=10)


def _api(engine, method: str, path: str) -> dict:
    """As curl would call it: with the API token."""
    headers = {"Authorization": f"Bearer {TOKEN}"}
    status, _, raw = engine.request(method, path, headers=headers)
    assert status == 200, raw
    return json.loads(raw)


@needs_browser
def test_a_phone_sized_screen_has_every_control_in_reach(streamer, browser):
    from selenium.webdriver.common.by import By

    browser.set_window_size(390, 844)  # a phone, held upright
    sign_in(browser, streamer.lan)
    wait_until(lambda: browser.find_element(By.ID, "panel").is_displayed())
    wait_until(lambda: browser.find_element(By.ID, "state").text.upper() == "READY")
    width = browser.execute_script("return document.documentElement.scrollWidth")
    inner = browser.execute_script("return window.innerWidth")
    assert width <= inner  # nothing to scroll sideways
    for name in ("press", "cancel", "clear-queue", "bell", "clear-history"):
        button = browser.find_element(By.CSS_SELECTOR, f"[data-action={name}]")
        box = button.rect
        assert button.is_displayed() and box["x"] >= 0 and box["x"] + box["width"] <= inner
        assert box["height"] >= 44  # a finger's size
    # AA contrast on the badge (it was 4.1:1), the state in the title, and an icon.
    assert contrast(browser, "#state") >= 4.5
    assert browser.title.startswith("READY")
    assert browser.execute_script("return document.querySelector('main #login') !== null")
    icon = browser.find_element(By.CSS_SELECTOR, "link[rel=icon]").get_attribute("href")
    assert urllib.request.urlopen(icon, timeout=30).status == 200
    browser.find_element(By.CSS_SELECTOR, "[data-action=bell]").click()
    wait_until(lambda: browser.find_element(By.ID, "message").text == "The bell rang.")
    # No motor relay here: its switches are not shown.
    assert not browser.find_element(By.CSS_SELECTOR, "[data-action=motor-on]").is_displayed()
    shoot(browser, "panel-phone.png")


@pytest.fixture(scope="module")
def on_loopback(tmp_path_factory):
    """One engine as it starts by default, for the tests that leave it as they found it."""
    from appliance.testing.wire import PtyReader

    tmp = tmp_path_factory.mktemp("loopback")
    reader = PtyReader()
    link = tmp / "ttyTELETYPE"
    link.symlink_to(reader.name)
    process = EngineProcess(tmp, str(link)).start()
    yield process
    process.close()
    reader.close()


@needs_browser
def test_on_loopback_without_a_token_the_panel_needs_no_sign_in(on_loopback, browser):
    from selenium.webdriver.common.by import By

    browser.get(on_loopback.base + "/")
    wait_until(lambda: browser.find_element(By.ID, "panel").is_displayed())
    assert not browser.find_element(By.ID, "login").is_displayed()
    wait_until(lambda: browser.find_element(By.ID, "twitch").text.startswith("not set up"))
    # No password to sign in with again: no "Sign out" that would lock the page.
    assert not browser.find_element(By.ID, "logout").is_displayed()


CONTROLS = "#controls button, #line"


@needs_browser
def test_with_the_engine_down_the_controls_are_disabled_and_the_page_says_it_retries(
    tmp_path, start_engine, browser
):
    from selenium.webdriver.common.by import By

    engine = start_engine()
    try:
        browser.get(engine.base + "/")
        wait_until(lambda: browser.find_element(By.ID, "state").text.upper() == "READY")
        controls = browser.find_elements(By.CSS_SELECTOR, CONTROLS)
        assert controls and all(c.is_enabled() for c in controls)
    finally:
        engine.close()
    state = browser.find_element(By.ID, "state")
    wait_until(lambda: "RETRYING" in state.text.upper())
    assert "FAULT" not in state.text.upper()
    assert all(not c.is_enabled() for c in browser.find_elements(By.CSS_SELECTOR, CONTROLS))
    assert "trying again" in browser.find_element(By.ID, "message").text
    shoot(browser, "panel-engine-down.png")


@needs_browser
@pytest.mark.parametrize("action", ["clear-history", "clear-queue", "cancel"])
def test_destructive_actions_ask_first(on_loopback, browser, action):
    from selenium.webdriver.common.by import By

    engine = on_loopback
    assert engine.request("DELETE", "/v1/history")[0] == 204  # as the last test may have left it
    line = {"name": "ada", "text": "how does the clutch work"}
    assert engine.request("POST", "/v1/history", line)[0] == 201
    browser.get(engine.base + "/")
    history = browser.find_element(By.ID, "history")
    wait_until(lambda: "ada: how does the clutch work" in history.text)
    ask = browser.find_element(By.ID, "confirm")
    button = browser.find_element(By.CSS_SELECTOR, f"[data-action={action}]")

    button.click()
    wait_until(ask.is_displayed)
    assert browser.find_element(By.ID, "confirm-text").text
    browser.find_element(By.ID, "confirm-no").click()
    wait_until(lambda: not ask.is_displayed())
    said = browser.find_element(By.ID, "message")
    wait_until(lambda: said.text == "Nothing was changed.")
    assert len(engine.json("GET", "/v1/history")[1]["lines"]) == 1

    button.click()
    wait_until(ask.is_displayed)
    browser.find_element(By.ID, "confirm-yes").click()
    wait_until(lambda: not ask.is_displayed())
    # Nothing printing, nothing waiting here: the message says so, not "done".
    after = {
        "cancel": "Nothing was printing.",
        "clear-queue": "The queue was already empty.",
        "clear-history": "The chat history is cleared.",
    }[action]
    wait_until(lambda: said.text == after)
    if action == "clear-history":
        wait_until(lambda: engine.json("GET", "/v1/history")[1]["lines"] == [])
        wait_until(lambda: history.text == "")


# --- the rules, over HTTP -------------------------------------------------------------------


def _login(engine, password: str) -> tuple[int, dict, str]:
    status, headers, raw = engine.request("POST", "/panel/login", {"password": password})
    return status, headers, raw.decode()


def test_sessions_need_their_csrf_token_and_a_wrong_guess_costs_the_guesser(engine):
    status, headers, raw = _login(engine, PASSWORD)
    assert status == 200
    cookie = SimpleCookie(headers["Set-Cookie"])["teletype_session"]
    assert cookie["httponly"] and cookie["samesite"] == "Strict" and cookie["path"] == "/"
    csrf = json.loads(raw)["csrf"]
    session = {"Cookie": f"teletype_session={cookie.value}"}

    assert engine.request("GET", "/v1/status", headers=session)[0] == 200  # reading: no CSRF
    assert engine.request("POST", "/v1/bell", headers=session)[0] == 403  # a change: CSRF
    assert engine.request("POST", "/v1/bell", headers={**session, "X-CSRF-Token": "x"})[0] == 403
    ok = engine.request("POST", "/v1/bell", headers={**session, "X-CSRF-Token": csrf})
    assert ok[0] == 200
    # Another site's page, even with the cookie and the token, is refused.
    evil = {**session, "X-CSRF-Token": csrf, "Origin": "http://evil.example"}
    assert engine.request("DELETE", "/v1/history", headers=evil)[0] == 403
    # No cookie, no token: 401; the token alone (curl, the clients) still works.
    assert engine.request("POST", "/v1/cancel")[0] == 401
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    assert engine.request("POST", "/v1/cancel", headers=bearer)[0] == 200
    # After signing out the cookie is worth nothing.
    engine.request("POST", "/panel/logout", headers=session)
    assert engine.request("GET", "/v1/status", headers=session)[0] == 401

    # A wrong guess costs this client its next guesses for a second: they are refused
    # unchecked (429), at once, and nothing waits on a lock. Details: test_api_guard.py.
    codes: list[int] = []

    def guess() -> None:
        codes.append(_login(engine, "guess")[0])

    guessers = [threading.Thread(target=guess) for _ in range(3)]
    for t in guessers:
        t.start()
    for t in guessers:
        t.join()
    assert 401 in codes and set(codes) <= {401, 429}
    # The owner on the same address waits out Retry-After (a second), and is let in.
    wait_until(lambda: _login(engine, PASSWORD)[0] == 200, timeout=10)


def test_the_page_is_locked_down_and_shows_no_secret(engine):
    with urllib.request.urlopen(engine.base + "/", timeout=30) as page:
        html = page.read().decode()
        policy = page.headers["Content-Security-Policy"]
        assert page.headers["X-Frame-Options"] == "DENY"
    assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert "<script>" not in html  # no inline script: the policy allows none
    session = engine.json("GET", "/panel/session")[1]
    assert session == {"signed_in": False, "csrf": None, "password": True}
    _, headers, raw = _login(engine, PASSWORD)
    cookie = SimpleCookie(headers["Set-Cookie"])["teletype_session"].value
    seen = raw
    for path in ("/panel/app.js", "/panel/session", "/v1/status", "/v1/jobs", "/v1/history"):
        seen += engine.request("GET", path, headers={"Cookie": f"teletype_session={cookie}"})[
            2
        ].decode()
    assert TOKEN not in seen and PASSWORD not in seen


def test_sessions_survive_a_restart_expire_and_stay_signed_out(tmp_path):
    from appliance.engine.panel import SESSION_SECONDS, Sessions

    now = [1_000_000.0]
    sessions = Sessions("pw", clock=lambda: now[0], directory=tmp_path)
    kept, session = sessions.new()
    gone, _ = sessions.new()
    sessions.end_key(gone)
    # A new engine (the same state directory): the browser is still signed in, same CSRF.
    again = Sessions("pw", clock=lambda: now[0], directory=tmp_path)
    found = again.check(kept)
    assert found is not None and found.csrf == session.csrf
    assert again.check(gone) is None  # signed out stays signed out
    sid, expires, signature = kept.split(".")
    assert again.check(f"{sid}.{int(expires) + 3600}.{signature}") is None  # tampered
    assert again.check("") is None and again.check("a.b") is None
    assert Sessions("new password", clock=lambda: now[0], directory=tmp_path).check(kept) is None
    now[0] += SESSION_SECONDS + 1
    assert again.check(kept) is None  # expired
    # Page loads without a password keep nothing on the engine: they cannot pile up.
    open_page = Sessions("", directory=tmp_path)
    assert all(open_page.new() for _ in range(1000))
    assert len((tmp_path / "panel-sessions.json").read_bytes()) < 4096


# --- the paper model in the page, and the stream overlay -------------------------------------
# One engine for these (a start is seconds): a token, a password and an overlay token, as a
# streamer sets it up.

OVERLAY = "overlay-token-abcdefghijk"


@pytest.fixture(scope="module")
def streamer(tmp_path_factory):
    from appliance.testing.wire import PtyReader

    tmp = tmp_path_factory.mktemp("streamer")
    reader = PtyReader()
    link = tmp / "ttyTELETYPE"
    link.symlink_to(reader.name)
    extra = (
        f'tcp_host = "0.0.0.0"\ntoken = "{TOKEN}"\npanel_password = "{PASSWORD}"\n'
        f'overlay_token = "{OVERLAY}"'
    )
    process = EngineProcess(tmp, str(link), engine_extra=extra, max_chars=200).start()
    process.lan = f"http://{lan_address()}:{process.http_port}"
    process.wire = reader
    yield process
    process.close()
    reader.close()


def _print(engine, text: str) -> int:
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    status, _, raw = engine.request("POST", "/v1/print", {"text": text}, bearer)
    assert status == 202, raw
    return json.loads(raw)["id"]


def _finish(engine, job_id: int) -> None:
    assert _api(engine, "GET", f"/v1/jobs/{job_id}?wait=120")["status"] == "done"


def _current_line(browser) -> tuple[str, int]:
    """The line under the carriage on the page, and the caret's column."""
    return tuple(
        browser.execute_script(
            "const c = document.querySelector('#paper .current');"
            "const caret = c.querySelector('.caret');"
            "let column = 0; for (const n of c.childNodes) { if (n === caret) break;"
            " column += n.textContent.length; }"
            "return [c.textContent, column];"
        )
    )


@needs_browser
def test_all_72_columns_show_on_a_phone_without_sideways_scroll(streamer, browser):
    from selenium.webdriver.common.by import By

    full = "0123456789" * 7 + "AB"  # a whole line: 72 columns
    _finish(streamer, _print(streamer, full + "\n"))
    browser.set_window_size(390, 844)
    sign_in(browser, streamer.lan)
    wait_until(lambda: browser.find_element(By.ID, "panel").is_displayed())
    wait_until(lambda: full in page_lines(browser).split("\n"))
    fits = browser.execute_script(
        "const box = document.getElementById('paper-box');"
        "const line = [...document.querySelectorAll('#paper .line')]"
        "  .find((e) => e.textContent === arguments[0]);"
        "const range = document.createRange(); range.selectNodeContents(line);"
        "const ink = range.getBoundingClientRect(), inside = box.getBoundingClientRect();"
        "return {ink: [ink.left, ink.right], box: [inside.left, inside.right],"
        "  scroll: [box.scrollWidth, box.clientWidth],"
        "  page: [document.documentElement.scrollWidth, window.innerWidth]};",
        full,
    )
    assert fits["box"][0] <= fits["ink"][0] and fits["ink"][1] <= fits["box"][1], fits
    assert fits["scroll"][0] <= fits["scroll"][1], fits  # the paper does not scroll sideways
    assert fits["page"][0] <= fits["page"][1], fits  # nor does the page
    shoot(browser, "panel-phone-72.png")


@needs_browser
def test_a_reload_mid_print_shows_the_whole_current_line_at_its_column(streamer, browser):
    from selenium.webdriver.common.by import By

    sign_in(browser, streamer.lan)
    wait_until(lambda: browser.find_element(By.ID, "panel").is_displayed())
    first = "THE CLUTCH TRIPS AND THE TYPEBOX TURNS"
    second = "ONE CHARACTER AT A TIME, TEN EACH SECOND, OIL THE SHAFT"
    job = _print(streamer, f"{first}\n{second}\n")
    wire = streamer.wire

    def mid_second_line() -> int:
        line = paper_of(bytes(wire.data)).split("\n")[-1]
        return len(line) if line.startswith("ONE CHARACTER") else 0

    printed = wait_until(lambda: mid_second_line() >= 20, timeout=60, every=0.05)
    browser.refresh()  # mid-line: the page must start from the engine's copy of the paper
    wait_until(lambda: browser.find_element(By.ID, "panel").is_displayed())
    line, column = wait_until(lambda: (c := _current_line(browser))[0].strip() and c, every=0.05)
    # The whole line so far, from column 0, and the caret where the carriage is.
    assert column >= printed and line[:column] == second[:column], (line, column, printed)
    assert first in page_lines(browser).split("\n")  # and the backlog above it
    _finish(streamer, job)
    wait_until(lambda: second in page_lines(browser).split("\n"))
    shoot(browser, "panel-reload.png")


@needs_browser
def test_the_overlay_is_transparent_and_its_token_reads_only(streamer, browser):
    from selenium.webdriver.common.by import By

    _finish(streamer, _print(streamer, "ON THE STREAM\n"))
    browser.set_window_size(1920, 1080)
    browser.get(f"{streamer.lan}/overlay?token={OVERLAY}&size=30&lines=8")
    wait_until(lambda: "ON THE STREAM" in page_lines(browser).split("\n"))
    backgrounds = browser.execute_script(
        "return [document.documentElement, document.body, document.getElementById('paper-box')]"
        ".map((e) => getComputedStyle(e).backgroundColor)"
    )
    assert backgrounds == ["rgba(0, 0, 0, 0)"] * 3
    assert browser.find_element(By.ID, "problem").is_displayed() is False
    # What it prints next reaches it (the event stream, with the token in the address).
    _finish(streamer, _print(streamer, "LIVE\n"))
    wait_until(lambda: "LIVE" in page_lines(browser).split("\n"))
    # For the README: the overlay over a test pattern, as it sits over a scene.
    browser.execute_script(
        "const bars = document.createElement('div'); document.body.prepend(bars);"
        "Object.assign(bars.style, {position: 'fixed', inset: '0', zIndex: '-1',"
        " background: 'repeating-linear-gradient(90deg, #c00 0 240px, #0a0 240px 480px,"
        " #00c 480px 720px, #ccc 720px 960px)'});"
    )
    shoot(browser, "overlay.png")

    # The token reads the paper and nothing else; it changes nothing, in any form.
    page_post = browser.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "fetch('/v1/print?token=' + arguments[0], {method: 'POST',"
        " headers: {'Content-Type': 'application/json'}, body: '{\"text\": \"HI\"}'})"
        ".then((r) => done(r.status), () => done(-1));",
        OVERLAY,
    )
    assert page_post == 401
    for method, path in [
        ("POST", "/v1/print"), ("POST", "/v1/bell"), ("DELETE", "/v1/history"),
        ("DELETE", "/v1/jobs"), ("GET", "/v1/status"), ("GET", "/v1/history"),
    ]:  # fmt: skip
        body = {"text": "HI"} if method == "POST" else None
        assert streamer.request(method, f"{path}?token={OVERLAY}", body)[0] == 401, path
    assert streamer.request("GET", f"/v1/paper?token={OVERLAY}")[0] == 200
    assert streamer.request("GET", "/v1/paper?token=wrong")[0] == 401
    # As an API token it is a wrong guess (then the guesser waits: 429).
    as_bearer = {"Authorization": f"Bearer {OVERLAY}"}
    assert streamer.request("POST", "/v1/print", {"text": "HI"}, as_bearer)[0] == 401


@needs_browser
def test_the_job_list_says_from_where_and_what_and_cancels_one_job_after_asking(streamer, browser):
    from selenium.webdriver.common.by import By

    sign_in(browser, streamer.lan)
    wait_until(lambda: browser.find_element(By.ID, "panel").is_displayed())
    printing = _print(streamer, "A LONG LINE TO KEEP THE PRINTER BUSY FOR A WHILE\n" * 3)
    waiting = _print(streamer, "PLEASE OIL THE TYPEBOX\n")
    queue = browser.find_element(By.ID, "queue")
    wait_until(lambda: "PLEASE OIL THE TYPEBOX" in queue.text)
    item = next(li for li in queue.find_elements(By.TAG_NAME, "li") if "TYPEBOX" in li.text)
    assert "from the API" in item.text and "starts in about" in item.text
    assert "Printing" in queue.text and str(waiting) not in queue.text  # no 13-digit ids
    ask = browser.find_element(By.ID, "confirm")

    item.find_element(By.TAG_NAME, "button").click()
    wait_until(ask.is_displayed)
    browser.find_element(By.ID, "confirm-no").click()
    wait_until(lambda: browser.find_element(By.ID, "message").text == "Nothing was changed.")
    assert _api(streamer, "GET", f"/v1/jobs/{waiting}")["status"] == "queued"

    item = next(li for li in queue.find_elements(By.TAG_NAME, "li") if "TYPEBOX" in li.text)
    item.find_element(By.TAG_NAME, "button").click()
    wait_until(ask.is_displayed)
    browser.find_element(By.ID, "confirm-yes").click()
    wait_until(lambda: browser.find_element(By.ID, "message").text == "The job is off the queue.")
    assert _api(streamer, "GET", f"/v1/jobs/{waiting}")["status"] == "cancelled"
    wait_until(lambda: "TYPEBOX" not in queue.text)
    shoot(browser, "panel-queue.png")
    assert _api(streamer, "DELETE", f"/v1/jobs/{printing}")["status"] in ("running", "cancelled")


# --- accessibility: axe-core (the selenium-axe-python wheel bundles axe.min.js) ---------------


def axe_findings(browser) -> list[str]:
    """What axe-core finds on the page as it stands: every serious or critical violation,
    and any of the contrast and landmark rules whatever their impact."""
    from selenium_axe_python import Axe

    Axe(browser).inject()
    results = browser.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "axe.run(document, {resultTypes: ['violations']})"
        ".then((r) => done(r.violations), (e) => done([{id: 'axe-failed', impact: 'critical',"
        " nodes: [{target: [String(e)]}]}]));"
    )
    watched = ("color-contrast", "region", "landmark")
    return [
        f"{v['id']} ({v['impact']}): {[n['target'] for n in v['nodes']]}"
        for v in results
        if v["impact"] in ("serious", "critical") or v["id"].startswith(watched)
    ]


@needs_browser
def test_axe_finds_no_contrast_or_landmark_problem_signed_out_signed_in_or_on_the_overlay(
    streamer, browser
):
    from selenium.webdriver.common.by import By

    browser.get(streamer.lan + "/")
    wait_until(lambda: browser.find_element(By.ID, "login").is_displayed())
    sign_in(browser, streamer.lan, "not the password")  # the error shows, in its colour
    wait_until(lambda: browser.find_element(By.ID, "login-error").text)
    assert axe_findings(browser) == []

    # Signed in, with all the page can show: paper with a done and a cancelled job,
    # chat, a job printing and one waiting, a message, then the confirmation.
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    line = {"name": "ada", "text": "how does the clutch work"}
    assert streamer.request("POST", "/v1/history", line, bearer)[0] == 201
    # More lines than the paper's box holds: it scrolls, and a keyboard must reach it.
    _finish(streamer, _print(streamer, "".join(f"{n}\n" for n in range(16)) + "OIL THE TYPEBOX\n"))
    cancelled = _print(streamer, "A LINE THAT IS CANCELLED\n")
    _api(streamer, "DELETE", f"/v1/jobs/{cancelled}")
    printing = _print(streamer, "A LONG LINE TO KEEP THE PRINTER BUSY FOR A WHILE\n" * 3)
    _print(streamer, "PLEASE WAIT YOUR TURN\n")
    wait_until(lambda: sign_in(browser, streamer.lan) or browser.find_element(By.ID, "panel"))
    wait_until(lambda: browser.find_element(By.ID, "panel").is_displayed())
    wait_until(lambda: "PLEASE WAIT YOUR TURN" in browser.find_element(By.ID, "queue").text)
    browser.find_element(By.CSS_SELECTOR, "[data-action=bell]").click()
    wait_until(lambda: browser.find_element(By.ID, "message").text)
    assert axe_findings(browser) == []
    browser.find_element(By.CSS_SELECTOR, "[data-action=clear-queue]").click()
    wait_until(browser.find_element(By.ID, "confirm").is_displayed)
    assert axe_findings(browser) == []
    browser.find_element(By.ID, "confirm-no").click()
    _api(streamer, "DELETE", "/v1/jobs")
    _api(streamer, "DELETE", f"/v1/jobs/{printing}")

    browser.get(f"{streamer.lan}/overlay?token={OVERLAY}")
    wait_until(lambda: "OIL THE TYPEBOX" in page_lines(browser).split("\n"))
    assert axe_findings(browser) == []
