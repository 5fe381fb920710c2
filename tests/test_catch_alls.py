"""Catch-alls that keep a long-running task alive say why, with the traceback, and a
bug is never retried forever as if it were the network."""

from __future__ import annotations

import asyncio
import logging

import pytest

from appliance.chat.outbox import Outbox
from appliance.engine.whereabouts import keep_announcing
from appliance.testing.engine_inprocess import running_engine


def test_a_message_the_sender_chokes_on_is_dropped_with_its_traceback(caplog):
    async def scenario():
        async def send(text: str) -> bool:
            raise RuntimeError("a bug in the sender")

        outbox = Outbox(send, per_window=20, window=30)
        runner = asyncio.create_task(outbox.run())
        await outbox.post("hello")
        while not outbox.dropped:
            await asyncio.sleep(0.01)
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)

    # On the logger itself: a test before may have run setup_logging, which stops
    # teletype's records short of the root logger that caplog listens on.
    chat_log = logging.getLogger("teletype.chat")
    chat_log.addHandler(caplog.handler)
    try:
        asyncio.run(scenario())
    finally:
        chat_log.removeHandler(caplog.handler)
    assert "dropped a chat message (RuntimeError: a bug in the sender)" in caplog.text
    assert "Traceback (most recent call last)" in caplog.text


def test_a_bug_in_reading_the_network_surfaces_from_the_status_block(tmp_path, embedded_generator):
    def broken() -> list[tuple[str, str]]:
        raise TypeError("a bug, not the network")

    async def scenario():
        async with running_engine(tmp_path, embedded_generator) as run:
            announcing = keep_announcing(
                run.engine, tmp_path / "state", addresses=broken, every=0.01,
                result_path=tmp_path / "none.json",
            )  # fmt: skip
            # A generous bound, only so that the old endless retry fails rather than hangs.
            await asyncio.wait_for(announcing, 60)

    with pytest.raises(TypeError, match="a bug, not the network"):
        asyncio.run(scenario())
