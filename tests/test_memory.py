"""Does a model fit the board? The GGUF header read here against llama.cpp's own reading,
and the engine's refusal of a model too big for the memory it has."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance.config import load_config
from appliance.engine.gguf_header import read_shape
from appliance.engine.memory import (
    HEADROOM,
    check_fits,
    mem_available,
    need_bytes,
    need_for_type,
)
from appliance.errors import EX_CONFIG, ModelError
from tests.conftest import EMBEDDED_MODEL


def test_the_header_says_what_llama_cpp_says():
    import llama_cpp

    from appliance.engine.llama_open import open_llama

    shape = read_shape(EMBEDDED_MODEL)
    llm = open_llama(EMBEDDED_MODEL, n_ctx=64, verbose=False)
    model = llm.model
    assert shape.architecture == "gpt2"
    assert shape.context_length == llama_cpp.llama_model_n_ctx_train(model)
    assert shape.embedding_length == llama_cpp.llama_model_n_embd(model)
    assert shape.block_count == llama_cpp.llama_model_n_layer(model)
    assert shape.head_count == llama_cpp.llama_model_n_head(model)
    assert shape.vocab_size == llm.n_vocab()
    assert shape.parameters == llama_cpp.llama_model_n_params(model)
    assert shape.file_size == EMBEDDED_MODEL.stat().st_size


def test_a_file_that_is_not_a_model(tmp_path):
    junk = tmp_path / "model.gguf"
    junk.write_bytes(b"PK\x03\x04 a zip file")
    with pytest.raises(ModelError, match="not a GGUF model file"):
        read_shape(junk)


def test_a_truncated_model(tmp_path):
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(EMBEDDED_MODEL.read_bytes()[:5000])
    with pytest.raises(ModelError, match="truncated"):
        read_shape(cut)


def test_a_model_that_fits_is_loaded():
    shape = check_fits(EMBEDDED_MODEL, available=need_bytes(read_shape(EMBEDDED_MODEL)) + HEADROOM)
    assert shape.architecture == "gpt2"


def test_without_a_figure_from_the_kernel_nothing_is_refused():
    assert check_fits(EMBEDDED_MODEL, available=None).file_size > 0


def test_a_model_too_big_is_refused_naming_a_quantisation_that_fits():
    shape = read_shape(EMBEDDED_MODEL)
    # Room for the Q4_K_M of this model but not for the Q8_0 it is.
    available = need_for_type(shape, "q4_k_m") + HEADROOM + 1
    assert available < need_bytes(shape) + HEADROOM
    with pytest.raises(ModelError) as refused:
        check_fits(EMBEDDED_MODEL, available)
    message = str(refused.value)
    assert refused.value.exit_code == EX_CONFIG
    assert "\n" not in message
    assert message.startswith(f"{EMBEDDED_MODEL.name} needs about")
    assert "Q4_K_M quantisation would fit" in message


def test_a_model_nothing_can_save_says_so():
    with pytest.raises(ModelError, match="no quantisation of it fits"):
        check_fits(EMBEDDED_MODEL, available=1_000_000)


def test_mem_available_reads_the_kernels_figure(tmp_path):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:  436000 kB\nMemFree:  100 kB\nMemAvailable:  338000 kB\n")
    assert mem_available(meminfo) == 338000 * 1024
    meminfo.write_text("MemTotal:  436000 kB\n")  # a kernel before 3.14
    assert mem_available(meminfo) is None
    assert mem_available(tmp_path / "absent") is None
    assert (mem_available() or 1) > 0  # this machine's own


def test_a_model_named_beside_the_config_file(tmp_path: Path):
    toml = tmp_path / "teletype.toml"
    toml.write_text('[model]\npath = "mine.q8_0.gguf"\n')
    assert load_config(toml).model.path == str(tmp_path / "mine.q8_0.gguf")
    toml.write_text('[model]\npath = "/opt/models/mine.gguf"\n')
    assert load_config(toml).model.path == "/opt/models/mine.gguf"
    toml.write_text("[model]\n")
    assert load_config(toml).model.path == ""


def test_a_model_the_engine_will_not_load_is_said_on_paper_and_exit_78(tmp_path: Path):
    """A headless Pi's refusal reaches the person at the Teletype, not only the journal."""
    import os
    import subprocess
    import sys

    paper = tmp_path / "paper.txt"
    config = tmp_path / "teletype.toml"
    config.write_text(
        f'[teletype]\nport = "file:{paper}"\n'
        f'[engine]\nstate_dir = "{tmp_path / "state"}"\nruntime_dir = "{tmp_path / "run"}"\n'
        'status_on_paper = false\n[model]\npath = "gpt2-355M.q8_0.gguf"\n'
    )
    run = subprocess.run(
        [sys.executable, "-m", "appliance.cli", "serve", "--config", str(config)],
        capture_output=True, text=True, timeout=120, env={**os.environ, "NOTIFY_SOCKET": ""},
    )  # fmt: skip
    assert run.returncode == EX_CONFIG, run.stderr
    assert "Traceback" not in run.stderr
    printed = paper.read_bytes().decode("ascii", "replace")
    assert "THE ENGINE DID NOT START: MODEL FILE NOT FOUND" in printed, printed
    assert "GPT2-355M.Q8_0.GGUF" in printed.replace("\n", "")  # wrapped at 72 columns
