"""Step 2: the tokenizer.

Training from scratch: a byte-level BPE over the training split, with
GPT-2's pre-tokenizer (the same regex and byte alphabet), saved the way
transformers saves GPT-2's own tokenizer so the GGUF converter reads it.
Fine-tuning keeps the base model's tokenizer (see convert.train).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from convert.corpus import END_OF_TEXT
from convert.errors import TokenizerError


def train_tokenizer(
    train_text: Path,
    out_dir: Path,
    vocab_size: int = 8192,
    min_frequency: int = 2,
) -> Path:
    """Train a byte-level BPE on `train_text`; write a transformers tokenizer to `out_dir`."""
    from tokenizers import models, pre_tokenizers, trainers

    if vocab_size < 257:
        raise TokenizerError(f"vocab size {vocab_size} is below the 256 bytes plus end-of-text")
    if not train_text.is_file():
        raise TokenizerError(f"training text not found: {train_text}")

    tokenizer = gpt2_byte_level(models.BPE())
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[END_OF_TEXT],
        # Every byte gets a token even if the corpus never uses it, so any
        # prompt (a chat line in any script) can be encoded.
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    # The corpus marks document ends with the literal "<|endoftext|>"; the
    # trainer must see it as the special token, not learn merges inside it.
    text = train_text.read_text(encoding="utf-8")
    documents = [d.strip("\n") for d in text.split(END_OF_TEXT)]
    tokenizer.train_from_iterator(_lines(documents), trainer=trainer)

    wrapped = as_transformers(tokenizer)
    out_dir.mkdir(parents=True, exist_ok=True)
    wrapped.save_pretrained(out_dir)
    (out_dir / "tokenizer_meta.json").write_text(
        json.dumps(
            {
                "kind": "byte-level BPE, GPT-2 pre-tokenizer",
                "vocab_size": len(wrapped),
                "requested_vocab_size": vocab_size,
                "min_frequency": min_frequency,
                "trained_on": str(train_text),
            },
            indent=2,
        )
        + "\n"
    )
    return out_dir


def gpt2_byte_level(bpe):
    """A tokenizer around `bpe` with GPT-2's own settings: no prefix space, its split regex,
    bytes as symbols (so llama.cpp's converter takes it as GPT-2's pre-tokenizer)."""
    from tokenizers import Tokenizer, decoders, pre_tokenizers, processors

    tokenizer = Tokenizer(bpe)
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    return tokenizer


def as_transformers(tokenizer, **settings):
    """The tokenizer as transformers saves GPT-2's, end-of-text its only special token."""
    from transformers import GPT2TokenizerFast

    return GPT2TokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=END_OF_TEXT,
        eos_token=END_OF_TEXT,
        unk_token=END_OF_TEXT,
        add_prefix_space=False,
        **settings,
    )


def _lines(documents: list[str]):
    for doc in documents:
        # Whole lines with their newline, so merges across "\n" are learnt
        # the way the model will see them.
        for line in doc.split("\n"):
            yield line + "\n"


def encode_documents(text: str, encode: Callable[[str], list[int]], eos: int) -> list[int]:
    """Token ids of a text whose documents are separated by "<|endoftext|>".

    Each document is encoded on its own and joined with the end-of-text id.
    Training, validation and evaluation all use this, with transformers' or
    llama.cpp's tokenizer as `encode`, so their numbers are over the same ids.
    """
    ids: list[int] = []
    for i, doc in enumerate(text.split(END_OF_TEXT)):
        if i:
            ids.append(eos)
        doc = doc.strip("\n")
        if doc:
            ids.extend(encode(doc + "\n"))
    return ids


def load_tokenizer(path: Path):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(path))
    except (OSError, ValueError) as e:
        raise TokenizerError(f"no tokenizer in {path}: {e}") from e
