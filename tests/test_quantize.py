from __future__ import annotations

import pytest

from convert.errors import ConversionError
from convert.evaluate import load_llama
from convert.quantize import QUANT_TYPES, quantize, quantize_all


def test_quantize_writes_every_type_and_each_one_runs(tiny_model, tmp_path):
    paths = quantize_all(tiny_model.f16, tmp_path, stem="tiny")
    assert [p.name for p in paths] == [f"tiny.{t}.gguf" for t in QUANT_TYPES]
    f16_size = tiny_model.f16.stat().st_size
    for path in paths:
        assert path.stat().st_size < f16_size, path.name
        llm = load_llama(path, n_ctx=128)
        text = llm.create_completion("The clutch", max_tokens=8, seed=1, temperature=0.0)
        assert text["choices"][0]["text"], path.name
        llm.close()
    assert not list(tmp_path.glob("*.part"))


def test_quantize_unknown_type_lists_the_known_ones(tiny_model, tmp_path):
    with pytest.raises(ConversionError, match="q8_0, q6_k, q5_k_m, q4_k_m"):
        quantize(tiny_model.f16, tmp_path / "x.gguf", "q3_k_s")


def test_quantize_missing_source_is_named(tmp_path):
    with pytest.raises(ConversionError, match=r"missing\.gguf"):
        quantize(tmp_path / "missing.gguf", tmp_path / "x.gguf")


def test_quantize_a_file_that_is_not_gguf_fails_cleanly(tmp_path):
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"this is not a model" * 100)
    with pytest.raises(ConversionError, match="could not quantise"):
        quantize(junk, tmp_path / "x.gguf")
    assert not (tmp_path / "x.gguf").exists()
