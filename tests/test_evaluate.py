from __future__ import annotations

import json
import subprocess
import sys

import pytest

from convert.evaluate import evaluate, repetition, table


def test_evaluate_repetition_sees_the_seed_models_loop():
    loop = repetition("The keyboard werehers werehers werehers and so on")
    assert loop["longest_loop"] == 3


def test_evaluate_repetition_of_fresh_prose_is_zero():
    fresh = repetition("The clutch trip lever engages the stop lug when the magnet releases.")
    assert fresh == {"repeated_trigrams": 0.0, "longest_loop": 1.0}


def test_evaluate_repetition_finds_phrase_loops_and_repeated_trigrams():
    text = "adjust the spring, adjust the spring, adjust the spring, adjust the spring."
    measure = repetition(text)
    assert measure["longest_loop"] == 4
    assert measure["repeated_trigrams"] == pytest.approx(7 / 10)


def test_evaluate_empty_text():
    assert repetition("") == {"repeated_trigrams": 0.0, "longest_loop": 0.0}


def test_evaluate_table_compares_every_type_with_f16(tiny_model):
    rows = evaluate(
        [tiny_model.f32, tiny_model.f16, tiny_model.q8_0],
        tiny_model.corpus_dir / "validation.txt",
        hf_dir=tiny_model.hf_dir,
        window=128,
    )
    assert [r.kind for r in rows] == ["hf", "f32", "f16", "q8_0"]
    by_kind = {r.kind: r for r in rows}
    assert by_kind["f16"].change_vs_f16 == 0.0
    # F32 in llama.cpp and transformers score the same ids the same way.
    assert by_kind["f32"].perplexity == pytest.approx(by_kind["hf"].perplexity, rel=1e-3)
    assert abs(by_kind["q8_0"].change_vs_f16) < 2.0
    for r in rows[1:]:
        assert 0.0 <= r.repeated_trigrams <= 1.0
        assert r.longest_loop >= 1.0
    rendered = table(rows)
    assert "| model.q8_0.gguf | q8_0 |" in rendered


def test_evaluate_cli_without_the_hf_model(tiny_model, tmp_path):
    out = tmp_path / "rows.json"
    # The command's plumbing, on a slice of the validation text: the scores themselves are
    # checked on the whole of it above.
    validation = tmp_path / "validation.txt"
    lines = (tiny_model.corpus_dir / "validation.txt").read_text().splitlines(keepends=True)
    validation.write_text("".join(lines[:60]))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "convert",
            "eval",
            str(tiny_model.f16),
            str(tiny_model.q8_0),
            "--validation",
            str(validation),
            "--window",
            "128",
            "--no-samples",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert "| model.q8_0.gguf | q8_0 |" in result.stdout
    rows = json.loads(out.read_text())
    assert [r["kind"] for r in rows] == ["f16", "q8_0"]
    assert rows[1]["repeated_trigrams"] is None
