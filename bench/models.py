"""GPT-2 models of the real shapes, for the benchmarks: built by convert/, cached, never committed.

"small" (124M: 12 layers x 768, 12 heads) and "medium" (355M: 24 x 1024,
16 heads), context 1024, vocabulary 50,257, with random weights: a forward
pass costs the same whatever the weights are, and nothing here may download
OpenAI's. The vocabulary is our own tokenizer (trained on the corpus, as in
`make model`) filled up to 50,257 with made-up words, so that generated
text has about as many characters a token as real GPT-2 text and a random
model prints something of the right length.

Cached in bench/cache/<name>/ (git ignores it): the transformers directory
and the GGUFs at F16, Q8_0, Q6_K, Q5_K_M and Q4_K_M.
"""

from __future__ import annotations

import random
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "bench" / "cache"
VOCAB = 50257
N_CTX = 1024
QUANTS = ("f16", "q8_0", "q6_k", "q5_k_m", "q4_k_m")


@dataclass(frozen=True)
class BenchShape:
    name: str
    n_layer: int
    n_head: int
    n_embd: int


SHAPES = {
    "small": BenchShape("small", 12, 12, 768),
    "medium": BenchShape("medium", 24, 16, 1024),
}


def _corpus() -> Path:
    from appliance.testing.corpus import find_corpus, stand_in_corpus

    found = find_corpus()
    if found is not None:
        return found
    return stand_in_corpus(CACHE / "stand-in.txt")


def _pseudo_words(count: int, taken: set[str], seed: int = 7) -> list[str]:
    """Made-up words (" brelto", " quandis"): about 5 characters a token, like GPT-2's."""
    rng = random.Random(seed)
    onsets = [*"bcdfghjklmnprstvwz", "qu", "br", "cl", "dr", "fl", "gr", "pl", "pr", "sh", "st"]
    vowels = [*"aeiou", "ai", "ea", "io", "ou"]
    words: list[str] = []
    seen = set(taken)
    while len(words) < count:
        word = "".join(rng.choice(onsets) + rng.choice(vowels) for _ in range(rng.randint(1, 2)))
        token = " " + word + rng.choice(["", "", "s", "n", "t", "ed", "."])
        if token not in seen:
            seen.add(token)
            words.append(token)
    return words


def tokenizer_dir() -> Path:
    out = CACHE / "tokenizer"
    if (out / "tokenizer.json").is_file():
        return out
    from transformers import AutoTokenizer

    from convert.tokenizer import train_tokenizer

    train_tokenizer(_corpus(), out, vocab_size=8192)
    tokenizer = AutoTokenizer.from_pretrained(out)
    filler = _pseudo_words(VOCAB - len(tokenizer), set(tokenizer.get_vocab()))
    tokenizer.add_tokens(filler)
    assert len(tokenizer) == VOCAB, len(tokenizer)
    tokenizer.save_pretrained(out)
    return out


def build(name: str, log=print) -> dict[str, Path]:
    """The shape's GGUFs (and its transformers directory, as "hf"), built once."""
    shape = SHAPES[name]
    base = CACHE / name
    paths = {q: base / f"{name}.{q}.gguf" for q in QUANTS}
    paths["hf"] = base / "hf"
    if all(p.exists() for p in paths.values()):
        return paths
    import time

    import torch
    from transformers import AutoTokenizer

    from convert.gguf import convert_to_gguf
    from convert.quantize import quantize
    from convert.train import TrainConfig, build_model

    started = time.monotonic()
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir())
    if not (paths["hf"] / "config.json").is_file():
        torch.manual_seed(1234)
        # The pipeline's own model builder, at the real shape.
        shape_config = TrainConfig(
            out_dir=paths["hf"],
            corpus_dir=CACHE,
            n_layer=shape.n_layer,
            n_head=shape.n_head,
            n_embd=shape.n_embd,
            n_ctx=N_CTX,
        )
        model = build_model(shape_config, VOCAB, tokenizer.eos_token_id)
        # Random, but with the end-of-text token never likely: a random
        # model should run to the length asked, as a trained one does.
        with torch.no_grad():
            model.lm_head.weight[tokenizer.eos_token_id].zero_()
        model.save_pretrained(paths["hf"])
        tokenizer.save_pretrained(paths["hf"])
        log(f"[bench] {name}: {sum(p.numel() for p in model.parameters()) / 1e6:.0f}M parameters")
    if not paths["f16"].exists():
        convert_to_gguf(paths["hf"], paths["f16"], "f16")
    for q in QUANTS[1:]:
        if not paths[q].exists():
            quantize(paths["f16"], paths[q], q)
    log(f"[bench] {name}: built in {time.monotonic() - started:.0f} s")
    return paths


def build_gpt2_vocab(log=print) -> Path:
    """The 124M shape at Q8_0 with GPT-2's own vocabulary (../shared/gpt2-vocab), for
    the warm-prompt rows: the made-up words above are added tokens, and llama.cpp
    tokenises text against every added token in turn (0.4 s for 900 tokens here),
    which real GPT-2 files never ask of it. Random weights, as above."""
    base = CACHE / "small-gpt2-vocab"
    q8 = base / "small.q8_0.gguf"
    if q8.exists():
        return q8
    import time

    import torch

    sys.path.insert(0, str(ROOT))
    from appliance.testing.gpt2_vocab import gpt2_tokenizer
    from convert.gguf import convert_to_gguf
    from convert.quantize import quantize
    from convert.train import TrainConfig, build_model

    started = time.monotonic()
    tokenizer = gpt2_tokenizer()
    shape = SHAPES["small"]
    torch.manual_seed(1234)
    config = TrainConfig(out_dir=base / "hf", corpus_dir=CACHE, n_layer=shape.n_layer,
                         n_head=shape.n_head, n_embd=shape.n_embd, n_ctx=N_CTX)  # fmt: skip
    model = build_model(config, VOCAB, tokenizer.eos_token_id)
    with torch.no_grad():
        model.lm_head.weight[tokenizer.eos_token_id].zero_()
    model.save_pretrained(base / "hf")
    tokenizer.save_pretrained(base / "hf")
    f16 = convert_to_gguf(base / "hf", base / "small.f16.gguf", "f16")
    quantize(f16, q8, "q8_0")
    log(f"small with GPT-2's vocabulary: built in {time.monotonic() - started:.0f} s")
    return q8


if __name__ == "__main__":
    if sys.argv[1:] == ["gpt2-vocab"]:  # the warm-prompt model, for make pi-warm-prompt
        print(build_gpt2_vocab(log=lambda line: print(line, file=sys.stderr)))
        sys.exit(0)
    for shape_name in sys.argv[1:] or list(SHAPES):
        for kind, path in build(shape_name).items():
            size = path.stat().st_size if path.is_file() else 0
            print(f"{shape_name} {kind}: {path} ({size / 1e6:.0f} MB)")
