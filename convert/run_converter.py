"""Run llama.cpp's convert_hf_to_gguf.py with one correction (a subprocess entry point).

    python -m convert.run_converter CONVERTER_DIR [converter arguments ...]

The converter recognises a BPE pre-tokenizer by hashing the token ids it
gets for a fixed test string, and knows only the vocabularies of published
models. Our tokenizer is a new vocabulary, so its hash is unknown and the
converter stops with NotImplementedError, even though it splits text exactly
as GPT-2 does (same ByteLevel pre-tokenizer, same regex). Here, and only
when the tokenizer really is configured as GPT-2's, we answer "gpt-2" for
it; llama.cpp then applies GPT-2's split regex, and its token ids equal the
transformers tokenizer's (tests/test_fidelity.py checks that).
"""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

GPT2_PRE_TOKENIZER = {"type": "ByteLevel", "add_prefix_space": False, "use_regex": True}


def splits_like_gpt2(tokenizer) -> bool:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return False
    pre = json.loads(backend.to_str()).get("pre_tokenizer") or {}
    return all(pre.get(k) == v for k, v in GPT2_PRE_TOKENIZER.items())


def main(argv: list[str]) -> None:
    converter = Path(argv[0])
    sys.path.insert(0, str(converter))
    sys.path.insert(1, str(converter / "gguf-py"))
    from conversion.base import TextModel

    recognise = TextModel.get_vocab_base_pre

    def get_vocab_base_pre(self, tokenizer) -> str:
        try:
            return recognise(self, tokenizer)
        except NotImplementedError:
            if splits_like_gpt2(tokenizer):
                return "gpt-2"
            raise

    TextModel.get_vocab_base_pre = get_vocab_base_pre
    sys.argv = [str(converter / "convert_hf_to_gguf.py"), *argv[1:]]
    runpy.run_path(sys.argv[0], run_name="__main__")


if __name__ == "__main__":
    main(sys.argv[1:])
