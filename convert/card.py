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
        "| shape | layers x width | parameters | steps | tokens/s | best validation loss |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in sweep["results"]:
        s = r["shape"]
        lines.append(
            f"| {s['name']} | {s['n_layer']} x {s['n_embd']} | {r['parameters'] / 1e6:.1f}M "
            f"| {r['steps']} | {r['tokens_per_second']} | {r['best_validation_loss']:.3f} |"
        )
    return "\n".join(lines) + "\n"


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
{training["validation_loss"]:.3f} nats/token.

## Why this size

{_sweep_section(out_dir)}
The embedded model must be at most 25 MB at Q8_0, train within the
30-minute budget of `make model` on two CPU cores, and print faster than a
Teletype on a Pi. The shape with the lowest validation loss at equal time
is the one above; bigger shapes get too few steps in the budget to catch up
on a corpus this small.

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
- For better text, fine-tune a real GPT-2 (124M or 355M) with
  `python -m convert finetune --base <dir or hub name>`.
"""
    path = out_dir / "MODEL_CARD.md"
    path.write_text(card)
    return path
