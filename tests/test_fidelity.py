"""Does llama.cpp run the model we trained, exactly? The heart of the pipeline.

All on a model built in this test session from the corpus (conftest.tiny_model),
converted with llama.cpp's own converter and run by the llama-cpp-python we ship.
"""

from __future__ import annotations

import numpy as np
import pytest

from appliance.testing.corpus import find_corpus
from convert.evaluate import (
    gguf_logits,
    gguf_perplexity,
    hf_encode_documents,
    llama_tokenize,
    load_llama,
)
from convert.tokenizer import load_tokenizer

# Beyond the corpus: what chat will throw at the model.
EXTRA_LINES = [
    "Ünïcödé — 90° § 3.14159 {braces} |pipes| ~tilde~ `backquote`",
    "   leading spaces\n\n\ttabs and\r\nwindows line ends",
    "Numbers: 0 1 12 123 1234 12345 3.3 3..3 -0.010 inch, 1/2, 50%, $5.00",
    "emoji 🚀🦙 and CJK 我想在 and Cyrillic нещо",
    "<|endoftext|>The next document",
    "it's we've they'll I'M 'quoted' \"double\"",
]


def _corpus_lines(tiny_model, n: int = 400) -> list[str]:
    # The raw corpus where we have it, before our cleaning: it still has the
    # em dashes, degree and section signs. Else the training text.
    source = find_corpus() or tiny_model.corpus_dir / "train.txt"
    lines = [line for line in source.read_text(encoding="utf-8").splitlines() if line.strip()]
    step = max(1, len(lines) // n)
    return lines[::step][:n]


def test_fidelity_token_ids_equal_transformers(tiny_model):
    hf = load_tokenizer(tiny_model.hf_dir)
    llm = load_llama(tiny_model.f32, n_ctx=128)
    lines = _corpus_lines(tiny_model) + EXTRA_LINES
    assert any(not line.isascii() for line in lines)
    assert any(ch.isdigit() for line in lines for ch in line)
    mismatches = [
        line
        for line in lines
        if hf(line, add_special_tokens=False)["input_ids"] != llama_tokenize(llm, line)
    ]
    llm.close()
    assert len(lines) >= 400
    assert mismatches == []


def test_fidelity_f32_logits_match_transformers(tiny_model):
    import torch
    from transformers import GPT2LMHeadModel

    model = GPT2LMHeadModel.from_pretrained(str(tiny_model.hf_dir)).eval()
    text = (tiny_model.corpus_dir / "validation.txt").read_text()
    ids = hf_encode_documents(tiny_model.hf_dir, text)
    llm = load_llama(tiny_model.f32, n_ctx=128, logits_all=True)
    windows = [ids[i : i + 128] for i in range(0, 128 * 6, 128)]
    for window in windows:
        with torch.no_grad():
            expected = model(input_ids=torch.tensor([window])).logits[0].numpy()
        got = gguf_logits(llm, window)
        scale = max(1.0, float(np.abs(expected).max()))
        worst = float(np.abs(got - expected).max())
        assert worst <= 1e-3 * scale, f"max |difference| {worst} with largest logit {scale}"
        disagree = np.flatnonzero(got.argmax(-1) != expected.argmax(-1))
        assert disagree.size == 0, f"top-1 token differs at positions {disagree.tolist()}"
    llm.close()


def test_fidelity_q8_0_perplexity_within_two_percent_of_f16(tiny_model):
    text = (tiny_model.corpus_dir / "validation.txt").read_text()
    ids = hf_encode_documents(tiny_model.hf_dir, text)
    f16 = gguf_perplexity(tiny_model.f16, ids, window=128)
    q8 = gguf_perplexity(tiny_model.q8_0, ids, window=128)
    # A trained model, not noise: well below the 1,024 of a uniform guess.
    assert f16 < 512
    assert abs(q8 / f16 - 1) <= 0.02, f"Q8_0 {q8:.3f} against F16 {f16:.3f}"


def test_fidelity_gguf_perplexity_equals_the_training_validation_loss(tiny_model):
    """F32 in llama.cpp scores the validation text as torch did during training."""
    import json
    import math

    history = json.loads((tiny_model.hf_dir / "training_log.json").read_text())["history"]
    text = (tiny_model.corpus_dir / "validation.txt").read_text()
    ids = hf_encode_documents(tiny_model.hf_dir, text)
    f32 = gguf_perplexity(tiny_model.f32, ids, window=128)
    assert math.log(f32) == pytest.approx(history[-1]["validation_loss"], abs=2e-3)
