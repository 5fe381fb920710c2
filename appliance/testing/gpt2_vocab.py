"""A tiny GPT-2 with GPT-2's own vocabulary, built here, that speaks in stray UTF-8 bytes.

GPT-2's byte-level vocabulary has a token for each of the 256 bytes, and a
real model samples them: half a character, or a byte that never starts
one. This model (2 layers, 64 wide, GPT-2's 50,257 tokens from
../shared/gpt2-vocab) is random but for its output: its last layer norm
gives the same vector whatever the input, so every next token is drawn
from the same few, half of them bytes that are not UTF-8 on their own,
half words and a full stop. llama-cpp-python's streaming completion held
such a reply back for good and decoded the held-back tail again at every
token (issue 23).
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the checkout: appliance/testing/ is two below it
VOCAB_DIR = ROOT.parent / "shared" / "gpt2-vocab"
NO_VOCAB = f"GPT-2's vocabulary is not on this machine ({VOCAB_DIR}); this test needs it"

# Lone continuation bytes, and lead bytes that the next token will not complete.
STRAY_BYTES = (0x80, 0x8F, 0x9A, 0xA5, 0xBF, 0xC3, 0xE2, 0xF0)
WORDS = (" the", " clutch", " lever", " spring", " typing", " unit", " oil", " motor")


def gpt2_byte_token(vocab: dict[str, int], byte: int) -> int:
    """GPT-2's token for one byte: bytes that are not printable Latin-1 are
    spelt with the characters from U+0100 on, in byte order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    if byte in printable:
        return vocab[chr(byte)]
    missing = [b for b in range(256) if b not in printable]
    return vocab[chr(256 + missing.index(byte))]


def gpt2_tokenizer():
    """GPT-2's own tokenizer (transformers), from the files in ../shared/gpt2-vocab."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    bpe = models.BPE.from_file(str(VOCAB_DIR / "vocab.json"), str(VOCAB_DIR / "merges.txt"))
    tok = Tokenizer(bpe)
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|endoftext|>", bos_token="<|endoftext|>"
    )


def build_stray_byte_model(out: Path) -> Path:
    """The GGUF (F16), built with convert/ from a transformers directory."""
    import json

    import torch

    from convert.gguf import convert_to_gguf
    from convert.train import TrainConfig, build_model

    vocab = json.loads((VOCAB_DIR / "vocab.json").read_text(encoding="utf-8"))
    eos = vocab["<|endoftext|>"]
    tokenizer = gpt2_tokenizer()
    hf = out.parent / "hf"
    torch.manual_seed(23)
    config = TrainConfig(out_dir=hf, corpus_dir=hf, n_layer=2, n_head=2, n_embd=64, n_ctx=256)
    model = build_model(config, len(vocab), eos)
    favoured = [gpt2_byte_token(vocab, b) for b in STRAY_BYTES]
    favoured += [vocab[w.replace(" ", "\u0120")] for w in WORDS] + [vocab["."]]
    with torch.no_grad():
        # The last layer norm ignores its input: its output is the bias, a
        # unit vector along dimension 0, so a token's logit is its weight
        # there (the output weights are the input embedding, tied).
        model.transformer.ln_f.weight.zero_()
        model.transformer.ln_f.bias.zero_()
        model.transformer.ln_f.bias[0] = 1.0
        model.transformer.wte.weight[:, 0] = 0.0
        model.transformer.wte.weight[favoured, 0] = 12.0
    model.save_pretrained(hf)
    tokenizer.save_pretrained(hf)
    return convert_to_gguf(hf, out, "f16")
