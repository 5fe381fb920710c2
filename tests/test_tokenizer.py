from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from convert.errors import TokenizerError
from convert.run_converter import splits_like_gpt2
from convert.tokenizer import load_tokenizer, train_tokenizer

TEXT = (
    "The typing unit prints 72 characters a line at 10 characters a second.\n"
    "To adjust the clutch, loosen the screw and move the stop lever 0.010 inch.\n"
    "<|endoftext|>\n"
    "The keyboard sends 11 bits: a start bit, 7 data bits, parity and 2 stop bits.\n"
) * 40


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    root = tmp_path_factory.mktemp("tok")
    (root / "train.txt").write_text(TEXT)
    train_tokenizer(root / "train.txt", root / "out", vocab_size=400)
    return load_tokenizer(root / "out")


def test_tokenizer_has_the_requested_size_and_one_end_of_text_token(tokenizer):
    assert len(tokenizer) <= 400
    assert tokenizer.eos_token == "<|endoftext|>"
    assert (
        tokenizer("a<|endoftext|>b", add_special_tokens=False)["input_ids"].count(
            tokenizer.eos_token_id
        )
        == 1
    )


def test_tokenizer_learnt_merges_from_the_text(tokenizer):
    # "clutch" is frequent in the training text: far fewer tokens than bytes.
    assert len(tokenizer("The typing unit prints")["input_ids"]) < 10


def test_tokenizer_splits_like_gpt2_so_llama_cpp_can_use_gpt2_rules(tokenizer):
    assert splits_like_gpt2(tokenizer)


@given(st.text(max_size=200))
@settings(max_examples=300, deadline=None)
def test_tokenizer_round_trips_any_unicode(tokenizer, text):
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == text


def test_tokenizer_rejects_a_vocabulary_smaller_than_the_bytes(tmp_path):
    (tmp_path / "t.txt").write_text("abc\n")
    with pytest.raises(TokenizerError, match="256 bytes"):
        train_tokenizer(tmp_path / "t.txt", tmp_path / "out", vocab_size=100)


def test_tokenizer_missing_text_is_named(tmp_path):
    with pytest.raises(TokenizerError, match=r"nowhere\.txt"):
        train_tokenizer(tmp_path / "nowhere.txt", tmp_path / "out")
