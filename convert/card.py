"""MODEL_CARD.md and the loss curve, written from what the pipeline measured."""

from __future__ import annotations

import json
import platform
from pathlib import Path

LOSS_CURVE = "loss-curve.png"


def plot_loss(history: list[dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no screen on a build machine
    import matplotlib.pyplot as plt

    steps = [h["step"] for h in history]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    ax.plot(steps, [h["train_loss"] for h in history], label="training (one batch)")
    ax.plot(steps, [h["validation_loss"] for h in history], label="validation (held-out regions)")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.set_title("teletype-tiny: loss while training")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)


def _sweep_section(out_dir: Path) -> str:
    path = out_dir / "size-sweep.json"
    if not path.is_file():
        return "No size sweep was recorded (run `make model-sweep`).\n"
    sweep = json.loads(path.read_text())
    lines = [
        f"Each candidate trained for {sweep['minutes_each']} minutes on the same machine, "
        "same data, same schedule shape (`make model-sweep`):",
        "",
        "| shape | layers x width | parameters | learning rate | steps | tokens/s "
        "| best validation loss |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in sweep["results"]:
        s = r["shape"]
        lines.append(
            f"| {s['name']} | {s['n_layer']} x {s['n_embd']} | {r['parameters'] / 1e6:.1f}M "
            f"| {r.get('learning_rate', 1e-3):g} | {r['steps']} | {r['tokens_per_second']} "
            f"| {r['best_validation_loss']:.3f} |"
        )
    return "\n".join(lines) + "\n"


def _choice(out_dir: Path, shape: dict, recipe: dict) -> str:
    path = out_dir / "size-sweep.json"
    if not path.is_file():
        return ""
    sweep = json.loads(path.read_text())
    best = min(sweep["results"], key=lambda r: r["best_validation_loss"])
    name = best["shape"]["name"]
    lr = best.get("learning_rate", 1e-3)
    verdict = (
        "The embedded model uses that shape and rate."
        if name == shape["name"] and lr == recipe["learning_rate"]
        else f"The embedded model uses shape {shape['name']} at {recipe['learning_rate']:g}."
    )
    return (
        f"At equal time the lowest validation loss was shape {name} at learning rate {lr:g} "
        f"({best['best_validation_loss']:.3f}). {verdict} Smaller shapes take more steps in "
        "the same time, and with about 180,000 training tokens, two CPU cores and a "
        "30-minute budget for the whole pipeline, steps matter more than width. Every "
        "candidate fits the 25 MB cap at Q8_0. The sweep ran for "
        f"{sweep['minutes_each']:g} minutes a shape; a larger shape might catch up over "
        "the longer final run, which was not measured."
    )


def _gap_note(training: dict) -> str:
    gap = training["validation_loss"] - training["train_loss"]
    if gap < 0.5:
        return ""
    return (
        f" The gap of {gap:.2f} between them is the model learning the training text "
        "by heart: at this budget it sees each training token many times. More dropout "
        "or a larger corpus would narrow it."
    )


def _kquant_note(shape: dict) -> str:
    if shape["n_embd"] % 256 == 0:
        return ""
    return (
        f"- Width {shape['n_embd']} is not a multiple of 256, the block size of the K-quants: "
        "llama.cpp quantises most matrices of the Q6_K, Q5_K_M and Q4_K_M files as Q8_0, "
        "Q5_1 or Q5_0 instead (it says so while quantising), so those files are barely "
        "smaller than Q8_0. Q8_0 is the one to use for this model."
    )


def write_card(summary: dict, out_dir: Path) -> Path:
    history = summary["history"]
    plot_loss(history, out_dir / LOSS_CURVE)
    recipe, shape, corpus = summary["recipe"], summary["shape"], summary["corpus"]
    training, timings = summary["training"], summary["timings_seconds"]
    rows = summary["evaluation"]
    q8 = next(r for r in rows if r["kind"] == "q8_0")
    table = [
        "| file | type | size (MB) | perplexity | vs F16 | repeated trigrams | longest loop |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        change = "" if r["change_vs_f16"] is None else f"{r['change_vs_f16']:+.2f}%"
        rep = "" if r["repeated_trigrams"] is None else f"{r['repeated_trigrams']:.3f}"
        loop = "" if r["longest_loop"] is None else f"{r['longest_loop']:.1f}"
        table.append(
            f"| {r['name']} | {r['kind']} | {r['size_bytes'] / 1e6:.1f} | {r['perplexity']:.2f} "
            f"| {change} | {rep} | {loop} |"
        )
    samples = "\n\n".join(f"```\n{s.strip()}\n```" for s in summary["samples"])
    card = f"""# teletype-tiny: the embedded default model

A small GPT-2 trained from scratch on Teletype Corporation technical manuals,
quantised to Q8_0 GGUF for llama-cpp-python. It is what `make demo` runs on
a fresh machine, and what the appliance falls back to when no other model is
configured. It writes manual-flavoured prose in the style of the 1960s
Model 33 documentation; it knows nothing else and is often wrong about that.
This file is written by `make model`; every number below was measured by
that run.

## Data and license

- Text: Teletype Model 33 technical manuals and bulletins (OCR, late 1960s
  and early 1970s) with a short introduction, from the public repository
  hughpyle/ASR33 (file gpt2/training.txt), MIT license, Copyright (c)
  2014-2019 Hugh Pyle. sha256 `{corpus["sha256"]}`.
- Cleaning (`python -m convert corpus`): NFC, the few non-ASCII characters
  folded to ASCII, {corpus["debris_lines_dropped"]} OCR debris lines dropped,
  {corpus["duplicate_lines_dropped"]} repeated paragraphs dropped.
- Split: one contiguous region of each long document held out for
  validation ({corpus["validation_fraction"]:.0%}, seed {corpus["seed"]}):
  {corpus["train_chars"]:,} training and {corpus["validation_chars"]:,}
  validation characters. The validation text is unseen prose, not lines
  interleaved with training lines.

## Recipe

- Tokenizer: byte-level BPE with GPT-2's pre-tokenizer, {recipe["vocab_size"]}
  tokens, trained on the training split only.
- Model: GPT-2, {shape["n_layer"]} layers, {shape["n_head"]} heads, width
  {shape["n_embd"]}, context {recipe["n_ctx"]}, {training["parameters"]:,}
  parameters, dropout {recipe["dropout"]}.
- Training: AdamW (0.9, 0.95, weight decay 0.1), learning rate
  {recipe["learning_rate"]} with {recipe["warmup_steps"]} warmup steps and
  cosine decay to a tenth, batch {recipe["batch_size"]} x
  {recipe["block_size"]} tokens, seed {recipe["seed"]}.
  {training["steps"]} steps in {training["seconds"] / 60:.1f} minutes
  ({training["tokens_per_second"]:.0f} tokens/s), stopped by the
  {training["stopped_by"]} budget.
- Conversion: llama.cpp's own converter from the llama-cpp-python source
  distribution that runs it; quantisation with llama.cpp's quantiser.
- Measured on: {platform.machine()}, Python {platform.python_version()}.

![loss curve]({LOSS_CURVE})

Final training loss {training["train_loss"]:.3f}, validation loss
{training["validation_loss"]:.3f} nats/token.{_gap_note(training)}

## Why this size

{_sweep_section(out_dir)}
{_choice(out_dir, shape, recipe)}

## Quality per quantisation type

Perplexity of the validation text (windows of {recipe["block_size"]}
tokens; the same token ids for every row). Repetition: over sampled texts
(temperature 0.75, top_p 0.9, no repetition penalty), the share of word
trigrams that repeat an earlier one and the longest back-to-back loop.

{chr(10).join(table)}

The embedded file is `teletype-tiny.q8_0.gguf` ({q8["size_bytes"] / 1e6:.1f} MB).

## Samples (Q8_0, seeded)

{samples}

## Timings of this run

Corpus {timings["corpus"]} s, tokenizer {timings["tokenizer"]} s, training
{timings["training"]} s, GGUF conversion (F32 and F16) {timings["gguf"]} s,
quantisation (four types) {timings["quantize"]} s, evaluation
{timings["evaluation"]} s; {summary["total_seconds"] / 60:.1f} minutes in all.

## Limits

- Trained on under a megabyte of text: it imitates the manuals' voice and
  vocabulary, repeats their phrases, and invents adjustments that do not
  exist. Never follow its instructions on a real machine.
- English only, upper and lower case (the printer folds to upper case).
- No safety tuning: the appliance filters what it prints and posts.
{_kquant_note(shape)}
- For better text, fine-tune a real GPT-2 (124M or 355M) with
  `python -m convert finetune --base <dir or hub name>`.
"""
    path = out_dir / "MODEL_CARD.md"
    path.write_text(card)
    return path
