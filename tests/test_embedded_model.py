"""The committed default model: what `make demo` runs on a fresh machine."""

from __future__ import annotations

import json
import re

import pytest

from convert.evaluate import load_llama, trained_context
from tests.conftest import EMBEDDED_MODEL, ROOT

CARD = ROOT / "models" / "MODEL_CARD.md"
RECIPE = ROOT / "models" / "teletype-tiny.recipe.json"


@pytest.fixture(scope="module")
def llm():
    model = load_llama(EMBEDDED_MODEL, n_ctx=0)
    yield model
    model.close()


def test_embedded_model_is_small_enough_for_the_repository():
    assert EMBEDDED_MODEL.is_file()
    assert EMBEDDED_MODEL.stat().st_size <= 25_000_000


def test_embedded_model_is_a_gpt2_q8_0_with_room_for_a_chat_prompt_and_reply(llm):
    assert llm.metadata["general.architecture"] == "gpt2"
    # 5 chat lines (about 120 tokens) and a 500-character reply (about 130).
    assert trained_context(llm) >= 384


def test_embedded_model_same_seed_same_text(llm):
    def run(seed: int) -> str:
        out = llm.create_completion(
            "THE TYPING UNIT", max_tokens=40, temperature=0.75, top_p=0.9, seed=seed
        )
        return out["choices"][0]["text"]

    assert run(7) == run(7)
    assert run(7) != run(8)


def test_embedded_model_writes_words_from_the_manuals(llm, corpus_file):
    vocabulary = set(re.findall(r"[a-z]+", corpus_file.read_text(encoding="utf-8").lower()))
    out = llm.create_completion(
        "THE TYPING UNIT", max_tokens=120, temperature=0.75, top_p=0.9, repeat_penalty=1.1, seed=3
    )["choices"][0]["text"]
    words = re.findall(r"[a-z]+", out.lower())
    assert len(words) >= 30
    known = sum(w in vocabulary for w in words) / len(words)
    # Recognisable manual prose: nearly every word is one the manuals use.
    assert known >= 0.9, out


def test_embedded_model_card_carries_the_measured_numbers():
    card = CARD.read_text()
    recipe = json.loads(RECIPE.read_text())
    rows = {r["kind"]: r for r in recipe["evaluation"]}
    assert f"{rows['q8_0']['perplexity']:.2f}" in card
    assert f"{EMBEDDED_MODEL.stat().st_size / 1e6:.1f} MB" in card
    assert abs(rows["q8_0"]["change_vs_f16"]) <= 2.0
    assert (ROOT / "models" / "loss-curve.png").is_file()
    assert "No size sweep was recorded" not in card
