"""Step 7: how good is a model, and how much did conversion and quantisation cost?

Perplexity of the validation text under any GGUF (llama-cpp-python) and
under the transformers model (torch), over the same token ids cut into the
same windows, so the numbers are directly comparable; and a repetition
measure on sampled text, because the failure users see is not a high
perplexity but a loop ("werehers werehers werehers").
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from convert.errors import ConversionError
from convert.tokenizer import encode_documents, load_tokenizer

DEFAULT_WINDOW = 256
SAMPLE_PROMPTS = (
    "THE TYPING UNIT",
    "To adjust the clutch",
    "The keyboard",
    "Lubricate the",
)


def load_llama(path: Path, n_ctx: int = DEFAULT_WINDOW, logits_all: bool = False):
    from appliance.engine.llama_open import cores_to_use, open_llama

    if not path.is_file():
        raise ConversionError(f"GGUF not found: {path}")
    return open_llama(
        path,
        n_ctx=n_ctx,
        n_batch=n_ctx or 512,
        logits_all=logits_all,
        n_threads=cores_to_use(),
        seed=0,
        verbose=False,
    )


def trained_context(llm) -> int:
    """How many positions the model learnt.

    GPT-2 has learnt absolute positions, and llama.cpp aborts the whole
    process (GGML_ASSERT in get_rows) when asked for one past them. Its
    context may be larger than this (it rounds n_ctx up to 256), so every
    generation must stop here, not at llm.n_ctx().
    """
    import llama_cpp

    return int(llama_cpp.llama_model_n_ctx_train(llm.model))


def llama_tokenize(llm, text: str) -> list[int]:
    # special=True: a literal "<|endoftext|>" is the end-of-text token, as it
    # is for the transformers tokenizer.
    return llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)


def llama_encode_documents(llm, text: str) -> list[int]:
    return encode_documents(text, lambda doc: llama_tokenize(llm, doc), llm.token_eos())


def windows(ids: list[int], window: int) -> list[list[int]]:
    """Whole, non-overlapping windows, as in training's validation loss."""
    n = len(ids) // window
    if n == 0:
        raise ConversionError(
            f"validation text has {len(ids)} tokens, fewer than one window ({window})"
        )
    return [ids[i * window : (i + 1) * window] for i in range(n)]


def _nll_from_logits(logits, targets) -> float:
    import numpy as np

    logits = logits.astype(np.float64)
    top = logits.max(axis=-1, keepdims=True)
    log_z = np.log(np.exp(logits - top).sum(axis=-1)) + top[:, 0]
    picked = logits[np.arange(len(targets)), targets]
    return float((log_z - picked).sum())


def gguf_logits(llm, ids: list[int]):
    """Logits at every position of `ids` (one window), shape (len(ids), vocab)."""
    import numpy as np

    llm.reset()
    llm.eval(ids)
    return np.array(llm.scores[: len(ids)], copy=True)


def gguf_perplexity(path: Path, ids: list[int], window: int = DEFAULT_WINDOW) -> float:
    llm = load_llama(path, n_ctx=window, logits_all=True)
    total, count = 0.0, 0
    for w in windows(ids, window):
        logits = gguf_logits(llm, w)
        total += _nll_from_logits(logits[:-1], w[1:])
        count += len(w) - 1
    llm.close()
    return math.exp(total / count)


def hf_perplexity(hf_dir: Path, ids: list[int], window: int = DEFAULT_WINDOW) -> float:
    import torch
    from transformers import GPT2LMHeadModel

    model = GPT2LMHeadModel.from_pretrained(str(hf_dir), dtype=torch.float32).eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for w in windows(ids, window):
            x = torch.tensor([w])
            loss = model(input_ids=x, labels=x).loss.item()
            total += loss * (len(w) - 1)
            count += len(w) - 1
    return math.exp(total / count)


def hf_encode_documents(hf_dir: Path, text: str) -> list[int]:
    """The validation ids exactly as training's validation loss saw them."""
    tokenizer = load_tokenizer(hf_dir)
    return encode_documents(
        text,
        lambda doc: tokenizer(doc, add_special_tokens=False)["input_ids"],
        tokenizer.eos_token_id,
    )


# --- repetition -------------------------------------------------------------

_WORDS = re.compile(r"[A-Za-z0-9']+")


def repetition(text: str) -> dict[str, float]:
    """How loopy is a text?

    - repeated_trigrams: share of word trigrams that already occurred earlier
      in the same text (0 for fresh prose, near 1 for a loop);
    - longest_loop: the most times any run of 1 to 4 words repeats back to
      back ("werehers werehers werehers" is 3).
    """
    words = [w.lower() for w in _WORDS.findall(text)]
    trigrams = [tuple(words[i : i + 3]) for i in range(len(words) - 2)]
    seen: set[tuple[str, ...]] = set()
    repeated = 0
    for t in trigrams:
        repeated += t in seen
        seen.add(t)
    longest = 1 if words else 0
    for n in range(1, 5):
        for start in range(len(words) - n):
            count = 1
            while words[start + count * n : start + (count + 1) * n] == words[start : start + n]:
                count += 1
            longest = max(longest, count)
    return {
        "repeated_trigrams": repeated / len(trigrams) if trigrams else 0.0,
        "longest_loop": float(longest),
    }


def sample(
    path: Path,
    prompts=SAMPLE_PROMPTS,
    max_tokens: int = 120,
    seed: int = 1,
    temperature: float = 0.75,
    top_p: float = 0.9,
    repeat_penalty: float = 1.0,
) -> list[str]:
    """Texts sampled from a GGUF, one per prompt, reproducible by seed.

    The defaults are the seed project's sampler (temperature 0.75, top_p 0.9)
    with no repetition penalty, so the measure shows the model's own habits.
    """
    llm = load_llama(path, n_ctx=0)
    trained = trained_context(llm)
    out = []
    for i, prompt in enumerate(prompts):
        room = trained - len(llama_tokenize(llm, prompt))
        result = llm.create_completion(
            prompt,
            max_tokens=min(max_tokens, room),
            temperature=temperature,
            top_p=top_p,
            repeat_penalty=repeat_penalty,
            seed=seed + i,
        )
        out.append(prompt + result["choices"][0]["text"])
    llm.close()
    return out


# --- the table --------------------------------------------------------------


@dataclass
class EvalRow:
    name: str
    kind: str  # "hf" or the GGUF type (f32, f16, q8_0, ...)
    size_bytes: int
    perplexity: float
    change_vs_f16: float | None
    repeated_trigrams: float | None
    longest_loop: float | None


def gguf_kind(path: Path) -> str:
    """The type from our file names (model.q8_0.gguf); else the last dotted part."""
    parts = path.name.split(".")
    return parts[-2] if len(parts) >= 3 else path.stem


def evaluate(
    ggufs: list[Path],
    validation: Path,
    hf_dir: Path | None = None,
    window: int = DEFAULT_WINDOW,
    samples: bool = True,
) -> list[EvalRow]:
    text = validation.read_text(encoding="utf-8")
    if hf_dir is not None:
        ids = hf_encode_documents(hf_dir, text)
    else:
        llm = load_llama(ggufs[0], n_ctx=window)
        ids = llama_encode_documents(llm, text)
        llm.close()
    rows: list[EvalRow] = []
    if hf_dir is not None:
        weights = sum(p.stat().st_size for p in hf_dir.glob("*.safetensors"))
        rows.append(
            EvalRow(
                "transformers", "hf", weights, hf_perplexity(hf_dir, ids, window), None, None, None
            )
        )
    for path in ggufs:
        ppl = gguf_perplexity(path, ids, window)
        rep = {"repeated_trigrams": None, "longest_loop": None}
        if samples:
            measures = [repetition(t) for t in sample(path)]
            rep = {k: sum(m[k] for m in measures) / len(measures) for k in measures[0]}
        rows.append(EvalRow(path.name, gguf_kind(path), path.stat().st_size, ppl, None, **rep))
    f16 = next((r.perplexity for r in rows if r.kind == "f16"), None)
    if f16:
        for r in rows:
            r.change_vs_f16 = (r.perplexity / f16 - 1) * 100
    return rows


def table(rows: list[EvalRow]) -> str:
    lines = [
        "| model | type | size (MB) | perplexity | vs F16 | repeated trigrams | longest loop |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        change = "" if r.change_vs_f16 is None else f"{r.change_vs_f16:+.2f}%"
        rep = "" if r.repeated_trigrams is None else f"{r.repeated_trigrams:.3f}"
        loop = "" if r.longest_loop is None else f"{r.longest_loop:.1f}"
        lines.append(
            f"| {r.name} | {r.kind} | {r.size_bytes / 1e6:.1f} | {r.perplexity:.3f} "
            f"| {change} | {rep} | {loop} |"
        )
    return "\n".join(lines)


def write_report(rows: list[EvalRow], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps([asdict(r) for r in rows], indent=2) + "\n")
