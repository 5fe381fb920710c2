from __future__ import annotations

import subprocess
import sys


def _convert(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "convert", *args], capture_output=True, text=True)


def test_convert_cli_lists_every_step():
    result = _convert("--help")
    assert result.returncode == 0
    for step in ("corpus", "tokenizer", "train", "finetune", "gguf", "quantize", "eval", "model"):
        assert step in result.stdout


def test_convert_cli_missing_corpus_is_one_clear_line(tmp_path):
    result = _convert("corpus", "--corpus", str(tmp_path / "nowhere.txt"), "--out", str(tmp_path))
    assert result.returncode == 1
    assert "corpus file not found" in result.stderr
    assert "nowhere.txt" in result.stderr
    assert "Traceback" not in result.stderr


def test_convert_cli_corpus_then_tokenizer(tmp_path, corpus_file):
    out = tmp_path / "corpus"
    result = _convert("corpus", "--corpus", str(corpus_file), "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "25 documents" in result.stdout
    result = _convert(
        "tokenizer",
        "--train",
        str(out / "train.txt"),
        "--out",
        str(tmp_path / "tok"),
        "--vocab-size",
        "600",
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "tok" / "tokenizer.json").is_file()


def test_convert_cli_train_prints_its_settings_and_result(tmp_path, training_text):
    out = tmp_path / "corpus"
    made = _convert("corpus", "--corpus", str(training_text), "--sha256", "", "--out", str(out))
    assert made.returncode == 0, made.stderr
    assert (
        _convert(
            "tokenizer",
            "--train",
            str(out / "train.txt"),
            "--out",
            str(tmp_path / "tok"),
            "--vocab-size",
            "300",
        ).returncode
        == 0
    )
    result = _convert(
        "train",
        "--corpus-dir",
        str(out),
        "--tokenizer",
        str(tmp_path / "tok"),
        "--out",
        str(tmp_path / "hf"),
        "--n-layer",
        "1",
        "--n-head",
        "1",
        "--n-embd",
        "16",
        "--n-ctx",
        "32",
        "--block-size",
        "32",
        "--max-steps",
        "4",
        "--eval-interval",
        "2",
    )
    assert result.returncode == 0, result.stderr
    assert "n_embd = 16" in result.stdout
    assert "4 steps" in result.stdout
