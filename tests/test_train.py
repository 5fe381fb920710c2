from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from convert.errors import TrainingError
from convert.train import LOG_FILE, TrainConfig, encode_file, lr_at, train, validation_loss

SENTENCES = [
    "The clutch trip lever engages the stop lug when the selector magnet releases.",
    "Lubricate the typing unit every 500 hours or every six months.",
    "The keyboard sends a start bit, seven data bits, a parity bit and two stop bits.",
    "To adjust the print hammer, loosen the screw and move the bracket 0.010 inch.",
    "The answer-back drum is coded by breaking off tines.",
]


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny corpus and tokenizer: enough for a loss to fall in a few steps."""
    from convert.tokenizer import train_tokenizer

    root = tmp_path_factory.mktemp("small")
    corpus = root / "corpus"
    corpus.mkdir()
    lines = [SENTENCES[(i * 7) % 5] + f" Step {i}." for i in range(600)]
    (corpus / "train.txt").write_text("\n".join(lines[:540]) + "\n")
    (corpus / "validation.txt").write_text("\n".join(lines[540:]) + "\n")
    train_tokenizer(corpus / "train.txt", root / "tokenizer", vocab_size=512)
    return corpus, root / "tokenizer"


def _config(out: Path, corpus: Path, tokenizer: Path, **kw) -> TrainConfig:
    settings = dict(
        out_dir=out,
        corpus_dir=corpus,
        tokenizer_dir=tokenizer,
        n_layer=1,
        n_head=2,
        n_embd=32,
        n_ctx=64,
        block_size=64,
        batch_size=4,
        learning_rate=3e-3,
        warmup_steps=4,
        max_steps=40,
        eval_interval=10,
        progress=False,
    )
    settings.update(kw)
    return TrainConfig(**settings)


def _history(out: Path) -> list[dict]:
    return json.loads((out / LOG_FILE).read_text())["history"]


def test_train_from_scratch_lowers_the_validation_loss(tmp_path, small_corpus):
    corpus, tokenizer = small_corpus
    result = train(_config(tmp_path / "run", corpus, tokenizer))
    history = _history(tmp_path / "run")
    assert [h["step"] for h in history] == [10, 20, 30, 40]
    assert result.steps == 40 and result.stopped_by == "steps"
    # Untrained, the loss is about ln(vocabulary); training must beat that clearly.
    assert result.validation_loss < math.log(512) - 1.0
    assert history[-1]["validation_loss"] < history[0]["validation_loss"]
    # An ordinary transformers directory: the next steps need nothing else.
    for name in ("config.json", "model.safetensors", "tokenizer.json", "training_state.pt"):
        assert (tmp_path / "run" / name).is_file(), name


def test_train_same_seed_same_model(tmp_path, small_corpus):
    corpus, tokenizer = small_corpus
    a = train(_config(tmp_path / "a", corpus, tokenizer, max_steps=10))
    b = train(_config(tmp_path / "b", corpus, tokenizer, max_steps=10))
    c = train(_config(tmp_path / "c", corpus, tokenizer, max_steps=10, seed=2))
    assert a.validation_loss == b.validation_loss
    assert a.validation_loss != c.validation_loss


def test_train_resume_continues_the_step_count(tmp_path, small_corpus):
    corpus, tokenizer = small_corpus
    out = tmp_path / "run"
    first = train(_config(out, corpus, tokenizer, max_steps=10))
    assert first.steps == 10
    second = train(_config(out, corpus, tokenizer, max_steps=30))
    assert second.steps == 30
    assert [h["step"] for h in _history(out)] == [10, 20, 30]


def test_train_resume_matches_an_uninterrupted_run(tmp_path, small_corpus):
    """Optimizer state, sampling RNG and dropout RNG all survive a restart."""
    corpus, tokenizer = small_corpus
    straight = train(_config(tmp_path / "straight", corpus, tokenizer, max_steps=20))
    resumed_dir = tmp_path / "resumed"
    interrupted = train(_config(resumed_dir, corpus, tokenizer, max_steps=20, stop_after=10))
    assert interrupted.steps == 10 and interrupted.stopped_by == "stop_after"
    resumed = train(_config(resumed_dir, corpus, tokenizer, max_steps=20))
    assert resumed.steps == 20
    assert resumed.validation_loss == pytest.approx(straight.validation_loss, abs=1e-6)


def test_train_refuses_to_resume_with_another_shape(tmp_path, small_corpus):
    corpus, tokenizer = small_corpus
    out = tmp_path / "run"
    train(_config(out, corpus, tokenizer, max_steps=5, eval_interval=5))
    with pytest.raises(TrainingError, match="n_embd=32"):
        train(_config(out, corpus, tokenizer, max_steps=10, n_embd=64))


def test_train_wall_clock_budget_stops_the_run(tmp_path, small_corpus):
    corpus, tokenizer = small_corpus
    result = train(
        _config(tmp_path / "run", corpus, tokenizer, max_steps=100_000, max_minutes=0.02)
    )
    assert result.stopped_by == "time"
    assert 0 < result.steps < 100_000
    # The budget's end is a checkpoint too.
    assert _history(tmp_path / "run")[-1]["step"] == result.steps


def test_train_learning_rate_warms_up_then_decays_to_a_tenth():
    config = TrainConfig(
        out_dir=Path("x"), corpus_dir=Path("x"), learning_rate=1e-3, warmup_steps=10, max_steps=100
    )
    assert lr_at(config, 0, 0) == pytest.approx(1e-4)
    assert lr_at(config, 9, 0) == pytest.approx(1e-3)
    assert lr_at(config, 55, 0) < 1e-3
    assert lr_at(config, 100, 0) == pytest.approx(1e-4)


def test_train_time_budget_drives_the_schedule_when_it_is_further_along():
    config = TrainConfig(
        out_dir=Path("x"),
        corpus_dir=Path("x"),
        learning_rate=1e-3,
        warmup_steps=10,
        max_steps=1000,
        max_minutes=1.0,
    )
    assert lr_at(config, 100, 60.0) == pytest.approx(1e-4)


def test_train_bad_shape_is_explained(tmp_path, small_corpus):
    corpus, tokenizer = small_corpus
    with pytest.raises(TrainingError, match="multiple of n_head"):
        train(_config(tmp_path / "run", corpus, tokenizer, n_embd=30, n_head=4))


def test_train_missing_corpus_points_to_the_corpus_step(tmp_path, small_corpus):
    _, tokenizer = small_corpus
    with pytest.raises(TrainingError, match="convert corpus"):
        train(_config(tmp_path / "run", tmp_path / "nowhere", tokenizer))


def test_finetune_from_a_base_checkpoint_keeps_its_tokenizer(tmp_path, small_corpus):
    """A random-initialised GPT-2 saved to disk stands in for the 124M checkpoint."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from convert.tokenizer import load_tokenizer

    corpus, tokenizer_dir = small_corpus
    tokenizer = load_tokenizer(tokenizer_dir)
    base = tmp_path / "base"
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=64, n_embd=32, n_layer=1, n_head=2)
    GPT2LMHeadModel(config).save_pretrained(base)
    tokenizer.save_pretrained(base)
    before = json.loads((base / "tokenizer.json").read_text())["model"]["vocab"]
    ids = encode_file(tokenizer, corpus / "validation.txt")
    base_loss = validation_loss(GPT2LMHeadModel.from_pretrained(base), ids, 64, 4, "cpu")

    result = train(
        _config(
            tmp_path / "tuned",
            corpus,
            None,
            init_from=str(base),
            max_steps=20,
            n_layer=9,
            n_embd=999,
        )
    )
    tuned = tmp_path / "tuned"
    assert json.loads((tuned / "tokenizer.json").read_text())["model"]["vocab"] == before
    # The base decides the shape; the flags for a new model are ignored.
    assert json.loads((tuned / "config.json").read_text())["n_embd"] == 32
    assert result.validation_loss < base_loss - 1.0


def test_finetune_base_that_does_not_exist_is_named(tmp_path, small_corpus):
    corpus, _ = small_corpus
    with pytest.raises(TrainingError, match="no-such-base"):
        train(_config(tmp_path / "run", corpus, None, init_from=str(tmp_path / "no-such-base")))
