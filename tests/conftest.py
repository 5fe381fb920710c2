"""Shared fixtures: a small model built from the corpus in this test session.

The fidelity tests must run on a model made here, by the same pipeline as
the embedded one, not only on the committed file. It is tiny (two layers,
64 wide, a 1,024-token vocabulary) so the whole chain (corpus, tokenizer,
training, llama.cpp conversion, quantisation) takes well under a minute.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED_CORPUS = ROOT.parent / "shared" / "corpus" / "teletype-manuals.txt"
EMBEDDED_MODEL = ROOT / "models" / "teletype-tiny.q8_0.gguf"

NO_CORPUS = (
    "../shared/corpus/teletype-manuals.txt is absent (it exists only on the team's "
    "build machines); this test needs the full Teletype corpus"
)


@pytest.fixture(scope="session")
def corpus_file() -> Path:
    if not SHARED_CORPUS.is_file():
        pytest.skip(NO_CORPUS)
    return SHARED_CORPUS


@dataclass
class TinyModel:
    corpus_dir: Path
    tokenizer_dir: Path
    hf_dir: Path
    f32: Path
    f16: Path
    q8_0: Path


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory, corpus_file) -> TinyModel:
    from convert.corpus import prepare_corpus
    from convert.gguf import convert_to_gguf
    from convert.quantize import quantize
    from convert.tokenizer import train_tokenizer
    from convert.train import TrainConfig, train

    root = tmp_path_factory.mktemp("tiny-model")
    prepared = prepare_corpus(str(corpus_file), root / "corpus")
    train_tokenizer(prepared.train, root / "tokenizer", vocab_size=1024)
    config = TrainConfig(
        out_dir=root / "hf",
        corpus_dir=root / "corpus",
        tokenizer_dir=root / "tokenizer",
        n_layer=2,
        n_head=2,
        n_embd=64,
        n_ctx=128,
        block_size=128,
        batch_size=8,
        learning_rate=3e-3,
        warmup_steps=10,
        max_steps=150,
        eval_interval=75,
        progress=False,
    )
    train(config)
    f32 = convert_to_gguf(config.out_dir, root / "gguf" / "model.f32.gguf", "f32")
    f16 = convert_to_gguf(config.out_dir, root / "gguf" / "model.f16.gguf", "f16")
    q8 = quantize(f16, root / "gguf" / "model.q8_0.gguf", "q8_0")
    return TinyModel(root / "corpus", root / "tokenizer", config.out_dir, f32, f16, q8)


@pytest.fixture
def isolated_cache(tmp_path, monkeypatch) -> Path:
    """A fresh download cache, restored afterwards (corpus and converter downloads)."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("TELETYPE_GPT2_CACHE", str(cache))
    return cache


@pytest.fixture(scope="session", autouse=True)
def _threads():
    # Two cores here; more threads than cores only makes llama.cpp and torch fight.
    os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))
