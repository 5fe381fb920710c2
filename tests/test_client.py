"""The engine's client speaks the domain: the schema's types back, ApplianceErrors raised.

Against the real engine app in this process (its worker only where a job must finish).
"""

from __future__ import annotations

import asyncio

import pytest

from appliance.client import EngineClient
from appliance.errors import (
    ApplianceError,
    BellTooSoon,
    Blocked,
    NoSuchJob,
    QueueFull,
    ShuttingDown,
)
from appliance.schema import (
    Accepted,
    ChatLineOut,
    JobOut,
    JobStatus,
    PrintSource,
    Source,
    StatusOut,
)
from appliance.testing.engine_inprocess import running_engine


def _blocklist(tmp_path) -> str:
    words = tmp_path / "blocklist.txt"
    words.write_text("marmalade\n")
    return f'[moderation]\nblocklist = "{words}"\ntries = 1\n'


def test_client_answers_in_the_schemas_types(tmp_path, embedded_generator):
    async def scenario():
        async with running_engine(tmp_path, embedded_generator) as run:
            client = EngineClient(url=run.base)
            assert isinstance(await client.status(), StatusOut)
            line = await client.add_history("ada", "hello   there")
            assert line == ChatLineOut("ada", "hello there")
            queued = await client.print_text("hi\n", Source.API)
            assert isinstance(queued, Accepted) and queued.status is JobStatus.QUEUED
            assert isinstance(await client.job(queued.id), JobOut)

    asyncio.run(scenario())


def test_client_raises_the_engines_refusals_as_appliance_errors(tmp_path, embedded_generator):
    extra = _blocklist(tmp_path) + "[engine]\nqueue_size = 1\n"

    async def scenario():
        async with running_engine(tmp_path, embedded_generator, extra) as run:
            client = EngineClient(url=run.base)
            with pytest.raises(Blocked, match="marmalade"):
                await client.add_history("ada", "more marmalade")
            with pytest.raises(Blocked):
                await client.print_text("marmalade\n")
            with pytest.raises(Blocked):
                await client.report_chat_state("marmalade")
            await client.print_text("one\n")
            with pytest.raises(QueueFull) as full:
                await client.request_reply("", Source.CHAT)
            assert full.value.retry_after >= 1
            with pytest.raises(NoSuchJob):
                await client.job(12345)
            await client.bell()
            with pytest.raises(BellTooSoon) as soon:
                await client.bell()
            assert soon.value.retry_after >= 1
            run.engine.shut_down()
            with pytest.raises(ShuttingDown):
                await client.print_text("two\n")

    asyncio.run(scenario())


def test_every_error_of_the_appliance_is_an_appliance_error():
    import importlib
    import inspect
    import pkgutil

    import appliance

    outside = []
    for info in pkgutil.walk_packages(appliance.__path__, "appliance."):
        module = importlib.import_module(info.name)
        for name, value in vars(module).items():
            if (
                inspect.isclass(value)
                and issubclass(value, BaseException)
                and value.__module__ == info.name
                and not issubclass(value, ApplianceError)
            ):
                outside.append(f"{info.name}.{name}")
    assert outside == []


# --- the engine's own rules, whoever calls ---------------------------------------------


def test_the_blocklist_guards_every_way_into_the_history(tmp_path):
    from appliance.config import parse_config
    from appliance.engine.history import History, PersistentHistory
    from appliance.engine.moderation import blocklist_from

    blocklist = blocklist_from(parse_config(_blocklist(tmp_path).encode(), "test.toml"))
    with pytest.raises(Blocked):
        History(5, blocklist=blocklist).add("ada", "Marmalade!")
    with pytest.raises(Blocked):
        History(5, blocklist=blocklist).add("marmalade", "hello")
    with pytest.raises(Blocked):  # a control character hides nothing
        History(5, blocklist=blocklist).add("ada", "marma\x7flade")
    kept = PersistentHistory(tmp_path / "history.json", 5, blocklist=blocklist)
    with pytest.raises(Blocked):
        kept.add("ada", "marmalade")
    with pytest.raises(Blocked):
        asyncio.run(kept.add_async("ada", "marmalade"))
    kept.add("ada", "toast")
    again = PersistentHistory(tmp_path / "history.json", 5, blocklist=blocklist)
    assert [line.text for line in again.lines()] == ["toast"]


def test_the_engine_prints_keeps_the_chat_state_and_hands_out_events(tmp_path, embedded_generator):
    async def scenario():
        async with running_engine(tmp_path, embedded_generator, _blocklist(tmp_path)) as run:
            engine = run.engine
            with engine.subscribe() as events:
                engine.set_chat_state("  waiting for\na sign-in ")
                assert events.get_nowait() == {
                    "event": "chat",
                    "data": {"state": "waiting for a sign-in"},
                }
                job = await engine.print_text("hello\n", PrintSource.CHAT_LINE, low_priority=True)
                assert events.get_nowait()["data"]["id"] == job.id
                with pytest.raises(Blocked):
                    await engine.print_text("marmalade\n")
                with pytest.raises(Blocked):
                    engine.set_chat_state("marmalade")
            assert engine.status()["chat"]["state"] == "waiting for a sign-in"
            assert not engine.subscribers

    asyncio.run(scenario())
