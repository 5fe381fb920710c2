"""The soak's short variant (`make soak-twitch` is the long one): every fault once.

tests/soak_twitch.py says what it does and asserts. The seed is fixed here
so that `make test` is repeatable; SOAK_SEED=N draws another order.
"""

from __future__ import annotations

import asyncio
import os

from tests.soak_twitch import Soak, soak


def test_teletype_chat_through_every_fault_loses_no_line_and_answers_every_gpt2(tmp_path):
    seed = int(os.environ.get("SOAK_SEED", "26"))
    print(f"soak seed {seed}")
    figures = asyncio.run(soak(tmp_path, len(Soak.FAULTS), seed, log=print))
    print(figures)
    assert set(figures["faults"]) == set(Soak.FAULTS)
    assert figures["lines_said"] > 0 and figures["lines_said_while_the_session_moved"] > 0
    assert figures["gpt2_asked"] == figures["gpt2_answered"] + figures["gpt2_told_why"]
