"""The API's guard in this process: guesses cost the guesser, odd bytes get 4xx, sessions end.

Clients on two loopback addresses (127.0.0.1 and 127.0.0.2) stand for the guesser and
the owner: Linux answers the whole of 127/8 on its loopback.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from http.cookies import SimpleCookie

import aiohttp
import pytest

from appliance.testing.engine_inprocess import running_engine

TOKEN = "tok-" + "x" * 28
PASSWORD = "correct horse"


@contextlib.asynccontextmanager
async def other_address():
    """A client session whose connections come from 127.0.0.2."""
    connector = aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=60)
    ) as session:
        yield session


async def raw(port: int, head: bytes, body: bytes = b"") -> tuple[int, bytes]:
    """One request written byte for byte (headers no client library would send)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        length = f"Content-Length: {len(body)}\r\n".encode() if body else b""
        writer.write(head + b"Host: 127.0.0.1\r\n" + length + b"Connection: close\r\n\r\n" + body)
        answer = await asyncio.wait_for(reader.read(), 30)
    finally:
        writer.close()
    return int(answer.split(b" ", 2)[1]), answer


def signed(tmp_path, generator):
    """The engine with a token and a panel password."""
    return running_engine(tmp_path, generator, token=TOKEN, password=PASSWORD)


def login(password: str) -> dict:
    return {"password": password}


def test_wrong_passwords_cost_the_guesser_and_never_the_owner(tmp_path, embedded_generator):
    async def scenario() -> None:
        async with (
            running_engine(tmp_path, embedded_generator, token=TOKEN, password=PASSWORD) as run,
            other_address() as owner,
        ):
            # Thirty guesses at once: one is checked, the rest are refused unchecked.
            answers = await asyncio.gather(
                *(run.call("POST", "/panel/login", login(f"guess {n}")) for n in range(30))
            )
            codes = sorted(status for status, _, _ in answers)
            assert codes == [401] + [429] * 29
            assert all(int(h["Retry-After"]) >= 1 for s, h, _ in answers if s == 429)
            # Even the right password is not checked for the guesser meanwhile...
            assert (await run.call("POST", "/panel/login", login(PASSWORD)))[0] == 429
            # ...and the owner, from another address, signs in at once.
            status, _, body = await run.call("POST", "/panel/login", login(PASSWORD), session=owner)
            assert status == 200 and body["signed_in"]

    asyncio.run(scenario())


def test_the_api_token_has_the_same_budget_as_the_password(tmp_path, embedded_generator):
    async def scenario() -> None:
        async with (
            running_engine(tmp_path, embedded_generator, token=TOKEN, password=PASSWORD) as run,
            other_address() as owner,
        ):
            wrong = {"Authorization": "Bearer not-the-token"}
            right = {"Authorization": f"Bearer {TOKEN}"}
            assert (await run.call("GET", "/v1/status", headers=wrong))[0] == 401
            assert (await run.call("GET", "/v1/status", headers=right))[0] == 429
            # A token guess costs the password guesses too: one budget.
            assert (await run.call("POST", "/panel/login", login(PASSWORD)))[0] == 429
            assert (await run.call("GET", "/v1/status", headers=right, session=owner))[0] == 200

    asyncio.run(scenario())


def test_a_bare_token_without_bearer_is_refused(tmp_path, embedded_generator):
    async def scenario() -> None:
        async with running_engine(tmp_path, embedded_generator, token=TOKEN) as run:
            assert (await run.call("GET", "/v1/status", headers={"Authorization": TOKEN}))[0] == 401
            headers = {"Authorization": f"bearer {TOKEN}"}  # the scheme is case-insensitive
            assert (await run.call("GET", "/v1/status", headers=headers))[0] == 200

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("head", "body", "expected"),
    [
        (b"POST /panel/login HTTP/1.1\r\nContent-Type: application/json\r\n",
         b'{"password": "\\ud800"}', 400),
        (b"POST /panel/login HTTP/1.1\r\nContent-Type: application/json\r\n",
         b'{"password": ' + b"[" * 5000 + b"]" * 5000 + b"}", 400),
        (b"GET /v1/status HTTP/1.1\r\nAuthorization: Bearer \xff\xfe\r\n", b"", 401),
    ],
)  # fmt: skip
def test_odd_bytes_from_a_client_are_a_4xx_never_a_500(
    tmp_path, embedded_generator, head, body, expected
):
    async def scenario() -> None:
        async with signed(tmp_path, embedded_generator) as run:
            status, answer = await raw(run.server.port, head, body)
            assert status == expected, answer

    asyncio.run(scenario())


async def _signed_in(run) -> tuple[str, str]:
    status, headers, body = await run.call("POST", "/panel/login", login(PASSWORD))
    assert status == 200
    return SimpleCookie(headers["Set-Cookie"])["teletype_session"].value, body["csrf"]


def test_a_csrf_token_of_odd_bytes_is_a_403(tmp_path, embedded_generator):
    async def scenario() -> None:
        async with signed(tmp_path, embedded_generator) as run:
            cookie, _ = await _signed_in(run)
            head = (
                b"POST /v1/bell HTTP/1.1\r\nCookie: teletype_session=" + cookie.encode()
                + b"\r\nX-CSRF-Token: \xff\xfe\r\n"
            )  # fmt: skip
            status, answer = await raw(run.server.port, head)
            assert status == 403, answer

    asyncio.run(scenario())


def test_the_seed_route_needs_the_csrf_token_with_a_session(tmp_path, embedded_generator):
    # A GET that prints: any page the owner visits could make the Teletype print.
    async def scenario() -> None:
        async with signed(tmp_path, embedded_generator) as run:
            cookie, _ = await _signed_in(run)
            session = {"Cookie": f"teletype_session={cookie}"}
            status, _, body = await run.call("GET", "/asr33bot/hello", headers=session)
            assert status == 403 and "CSRF" in body["error"]
            assert run.engine.waiting == [] and run.engine.jobs == {}

    asyncio.run(scenario())


def test_signing_in_again_ends_the_old_session(tmp_path, embedded_generator):
    async def scenario() -> None:
        async with signed(tmp_path, embedded_generator) as run:
            old, _ = await _signed_in(run)
            old_session = {"Cookie": f"teletype_session={old}"}
            assert (await run.call("GET", "/v1/status", headers=old_session))[0] == 200
            # The same browser signs in again (it sends its cookie).
            status, headers, _ = await run.call(
                "POST", "/panel/login", login(PASSWORD), headers=old_session
            )
            assert status == 200
            new = SimpleCookie(headers["Set-Cookie"])["teletype_session"].value
            assert new != old
            assert (await run.call("GET", "/v1/status", headers=old_session))[0] == 401
            new_session = {"Cookie": f"teletype_session={new}"}
            assert (await run.call("GET", "/v1/status", headers=new_session))[0] == 200

    asyncio.run(scenario())


def test_the_panels_full_line_with_its_newline_is_printed(tmp_path, embedded_generator):
    async def scenario() -> None:
        async with running_engine(tmp_path, embedded_generator) as run:
            # What app.js sends for a full input (maxlength 2,000): the line and "\n".
            status, _, body = await run.call("POST", "/v1/print", {"text": "a" * 2000 + "\n"})
            assert status == 202, body

    asyncio.run(scenario())


def test_the_page_shows_a_wait_after_a_wrong_password():
    # app.js tells a 429 (a guess too soon) from a 401 (a wrong password).
    from importlib import resources

    script = resources.files("appliance.engine.panel").joinpath("app.js").read_text()
    assert "response.status === 429" in script
    assert json.dumps("Wrong password.")[1:-1] in script
