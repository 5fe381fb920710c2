"""HF -> GGUF: the converter we fetch, the two traps we handle, the tensor check."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from convert.errors import ConversionError, TensorMismatchError
from convert.gguf import convert_to_gguf, gguf_tensors, staged_model_dir, verify_tensors
from convert.llama_converter import converter_dir, runtime_version


def _fake_sdist(path: Path, version: str, with_converter: bool = True) -> Path:
    files = {
        "README.md": "not wanted",
        "vendor/llama.cpp/src/llama.cpp": "not wanted either",
        "vendor/llama.cpp/conversion/__init__.py": "# conversion package",
        "vendor/llama.cpp/gguf-py/gguf/__init__.py": "# gguf package",
        "vendor/llama.cpp/gguf-py/tests/test_x.py": "# not wanted",
    }
    if with_converter:
        files["vendor/llama.cpp/convert_hf_to_gguf.py"] = "# the converter"
    with tarfile.open(path, "w:gz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(f"llama_cpp_python-{version}/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_gguf_converter_is_unpacked_from_the_source_distribution(
    tmp_path, isolated_cache, monkeypatch
):
    sdist = _fake_sdist(tmp_path / "llama_cpp_python-9.9.9.tar.gz", "9.9.9")
    monkeypatch.setenv("TELETYPE_GPT2_LLAMA_SDIST", str(sdist))
    found = converter_dir("9.9.9")
    assert found == isolated_cache / "llama.cpp-converter-9.9.9"
    unpacked = sorted(str(p.relative_to(found)) for p in found.rglob("*") if p.is_file())
    assert unpacked == [
        "conversion/__init__.py",
        "convert_hf_to_gguf.py",
        "gguf-py/gguf/__init__.py",
    ]
    # Once per machine: the second call does not need the archive.
    monkeypatch.setenv("TELETYPE_GPT2_LLAMA_SDIST", str(tmp_path / "gone.tar.gz"))
    assert converter_dir("9.9.9") == found


def test_gguf_source_distribution_without_a_converter_is_refused(
    tmp_path, isolated_cache, monkeypatch
):
    sdist = _fake_sdist(tmp_path / "x.tar.gz", "9.9.8", with_converter=False)
    monkeypatch.setenv("TELETYPE_GPT2_LLAMA_SDIST", str(sdist))
    with pytest.raises(ConversionError, match="does not contain"):
        converter_dir("9.9.8")


def test_gguf_converter_comes_from_the_runtime_release():
    import llama_cpp

    assert runtime_version() == llama_cpp.__version__
    assert converter_dir().name == f"llama.cpp-converter-{llama_cpp.__version__}"


def test_gguf_staging_adds_n_ctx_and_leaves_the_model_alone(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    config = {"model_type": "gpt2", "n_positions": 512, "n_embd": 64}
    (model / "config.json").write_text(json.dumps(config))
    (model / "model.safetensors").write_bytes(b"weights")
    work = tmp_path / "work"
    work.mkdir()
    staged = staged_model_dir(model, work)
    assert json.loads((staged / "config.json").read_text())["n_ctx"] == 512
    assert (staged / "model.safetensors").read_bytes() == b"weights"
    assert json.loads((model / "config.json").read_text()) == config


def test_gguf_refuses_a_model_that_is_not_gpt2(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(ConversionError, match="model_type is 'llama'"):
        convert_to_gguf(tmp_path, tmp_path / "out.gguf")


def test_gguf_refuses_a_directory_without_a_config(tmp_path):
    with pytest.raises(ConversionError, match=r"no config\.json"):
        convert_to_gguf(tmp_path, tmp_path / "out.gguf")


def _run_plain_converter(model_dir: Path, out: Path) -> subprocess.CompletedProcess:
    converter = converter_dir()
    return subprocess.run(
        [
            sys.executable,
            str(converter / "convert_hf_to_gguf.py"),
            str(model_dir),
            "--outfile",
            str(out),
            "--outtype",
            "f32",
        ],
        capture_output=True,
        text=True,
    )


def test_gguf_trap_the_plain_converter_rejects_our_vocabulary(tiny_model, tmp_path):
    """Without our correction, llama.cpp's converter refuses the new vocabulary."""
    work = tmp_path / "work"
    work.mkdir()
    staged = staged_model_dir(tiny_model.hf_dir, work)
    result = _run_plain_converter(staged, tmp_path / "plain.gguf")
    assert result.returncode != 0
    assert "pre-tokenizer was not recognized" in result.stderr


def test_gguf_trap_the_converter_needs_n_ctx(tiny_model, tmp_path):
    """transformers 5 writes no n_ctx; the GPT-2 converter fails without our staging."""
    assert "n_ctx" not in json.loads((tiny_model.hf_dir / "config.json").read_text())
    converter = converter_dir()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "convert.run_converter",
            str(converter),
            str(tiny_model.hf_dir),
            "--outfile",
            str(tmp_path / "x.gguf"),
            "--outtype",
            "f32",
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0
    assert "n_ctx" in result.stderr


def test_gguf_file_says_gpt2_pre_tokenizer_and_end_of_text(tiny_model):
    from convert.evaluate import load_llama

    llm = load_llama(tiny_model.f32, n_ctx=128)
    assert llm.metadata["tokenizer.ggml.pre"] == "gpt-2"
    assert llm.metadata["general.architecture"] == "gpt2"
    assert int(llm.metadata["gpt2.context_length"]) == 128
    assert llm.detokenize([llm.token_eos()], special=True) == b"<|endoftext|>"
    llm.close()


def test_gguf_every_tensor_is_checked_by_name_and_shape(tiny_model):
    tensors = gguf_tensors(tiny_model.f32)
    assert tensors["token_embd.weight"] == (1024, 64)
    assert tensors["blk.0.attn_qkv.weight"] == (192, 64)
    assert tensors["blk.1.ffn_up.weight"] == (256, 64)
    assert len([n for n in tensors if n.startswith("blk.")]) == 2 * 12


def test_gguf_tensor_mismatch_names_the_tensor(tiny_model, tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    other = tmp_path / "other"
    config = GPT2Config(vocab_size=1024, n_positions=128, n_embd=32, n_layer=2, n_head=2)
    GPT2LMHeadModel(config).save_pretrained(other)
    with pytest.raises(TensorMismatchError, match=r"token_embd\.weight: shape \(1024, 64\)"):
        verify_tensors(other, tiny_model.f32)


def test_gguf_tensor_missing_from_the_file_is_named(tiny_model, tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    deeper = tmp_path / "deeper"
    config = GPT2Config(vocab_size=1024, n_positions=128, n_embd=64, n_layer=3, n_head=2)
    GPT2LMHeadModel(config).save_pretrained(deeper)
    with pytest.raises(TensorMismatchError, match=r"blk\.2\.attn_qkv\.weight: missing"):
        verify_tensors(deeper, tiny_model.f32)


def test_gguf_cli_converts_and_reports_errors(tiny_model, tmp_path):
    copy = tmp_path / "hf"
    shutil.copytree(tiny_model.hf_dir, copy)
    out = tmp_path / "m.f16.gguf"
    ok = subprocess.run(
        [sys.executable, "-m", "convert", "gguf", str(copy), "--out", str(out)],
        capture_output=True,
        text=True,
    )
    assert ok.returncode == 0, ok.stderr
    assert out.is_file()
    bad = subprocess.run(
        [sys.executable, "-m", "convert", "gguf", str(tmp_path / "nope"), "--out", str(out)],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 1
    assert "model directory not found" in bad.stderr
    assert "Traceback" not in bad.stderr
