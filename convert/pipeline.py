"""The whole recipe: corpus -> tokenizer -> train -> GGUF -> quantise -> eval -> models/.

`python -m convert model` (and `make model`) runs it; `python -m convert
sweep` measures validation loss against model size at a fixed time budget,
which is how the embedded model's size was chosen (see MODEL_CARD.md).
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from convert.corpus import DEFAULT_SHA256, DEFAULT_URL, prepare_corpus
from convert.evaluate import evaluate, sample, table, write_report
from convert.gguf import convert_to_gguf
from convert.quantize import DEFAULT_TYPES, quantize_all
from convert.tokenizer import train_tokenizer
from convert.train import TrainConfig, train

EMBEDDED_NAME = "teletype-tiny"


@dataclass(frozen=True)
class Shape:
    name: str
    n_layer: int
    n_head: int
    n_embd: int


# Candidates for the embedded model; every one fits the 25 MB cap at Q8_0.
SHAPES = {
    "xs": Shape("xs", 3, 3, 192),
    "s": Shape("s", 4, 4, 256),
    "m": Shape("m", 6, 6, 384),
}

# The embedded model's recipe. The shape was picked with `sweep` (the card
# shows the measurement); the step count fills about 20 minutes of two CPU
# cores, with a wall-clock guard so `make model` stays under 30 minutes.
RECIPE = {
    "shape": "xs",
    "vocab_size": 8192,
    "n_ctx": 512,
    "block_size": 512,
    "batch_size": 4,
    "learning_rate": 1e-3,
    "warmup_steps": 50,
    "max_steps": 1200,
    "max_minutes": 22.0,
    "eval_interval": 100,
    "dropout": 0.1,
    "seed": 1337,
}


def _log(message: str) -> None:
    print(f"[convert] {message}", flush=True)


@dataclass
class Timings:
    corpus: float = 0.0
    tokenizer: float = 0.0
    training: float = 0.0
    gguf: float = 0.0
    quantize: float = 0.0
    evaluation: float = 0.0


def run_model(
    corpus: str | None,
    build: Path,
    out: Path,
    sha256: str | None = DEFAULT_SHA256,
    recipe: dict | None = None,
    progress: bool = True,
) -> dict:
    """Run the whole pipeline; write the embedded model and its card into `out`."""
    from convert.card import write_card

    recipe = {**RECIPE, **(recipe or {})}
    shape = recipe["shape"]
    shape = SHAPES[shape] if isinstance(shape, str) else Shape(**shape)
    timings = Timings()
    started = time.monotonic()
    source = corpus or DEFAULT_URL

    _log(f"corpus: {source}")
    t = time.monotonic()
    prepared = prepare_corpus(source, build / "corpus", sha256=sha256 or None, seed=recipe["seed"])
    timings.corpus = time.monotonic() - t
    _log(
        f"corpus: {prepared.stats.train_chars} training and "
        f"{prepared.stats.validation_chars} validation characters"
    )

    t = time.monotonic()
    train_tokenizer(prepared.train, build / "tokenizer", recipe["vocab_size"])
    timings.tokenizer = time.monotonic() - t
    _log(f"tokenizer: {timings.tokenizer:.1f} s")

    config = TrainConfig(
        out_dir=build / "hf",
        corpus_dir=build / "corpus",
        tokenizer_dir=build / "tokenizer",
        n_layer=shape.n_layer,
        n_head=shape.n_head,
        n_embd=shape.n_embd,
        **{
            k: recipe[k]
            for k in (
                "n_ctx",
                "block_size",
                "batch_size",
                "learning_rate",
                "warmup_steps",
                "max_steps",
                "max_minutes",
                "eval_interval",
                "dropout",
                "seed",
            )
        },
        progress=progress,
    )
    _log(f"training {shape} for up to {config.max_steps} steps / {config.max_minutes} min")
    t = time.monotonic()
    result = train(config)
    timings.training = time.monotonic() - t
    _log(
        f"training: {result.steps} steps, validation loss {result.validation_loss:.3f}, "
        f"{result.tokens_per_second:.0f} tokens/s"
    )

    gguf_dir = build / "gguf"
    t = time.monotonic()
    f32 = convert_to_gguf(config.out_dir, gguf_dir / "model.f32.gguf", "f32")
    f16 = convert_to_gguf(config.out_dir, gguf_dir / "model.f16.gguf", "f16")
    timings.gguf = time.monotonic() - t
    t = time.monotonic()
    quantised = quantize_all(f16, gguf_dir, DEFAULT_TYPES)
    timings.quantize = time.monotonic() - t
    _log(f"gguf: {timings.gguf:.1f} s, quantise: {timings.quantize:.1f} s")

    t = time.monotonic()
    rows = evaluate(
        [f32, f16, *quantised], prepared.validation, hf_dir=config.out_dir, window=config.block_size
    )
    timings.evaluation = time.monotonic() - t
    write_report(rows, build / "eval.json")
    _log("evaluation:\n" + table(rows))

    out.mkdir(parents=True, exist_ok=True)
    q8 = gguf_dir / "model.q8_0.gguf"
    embedded = out / f"{EMBEDDED_NAME}.q8_0.gguf"
    shutil.copyfile(q8, embedded)
    samples = sample(embedded, max_tokens=100)
    summary = {
        "recipe": {**recipe, "shape": shape.name},
        "shape": asdict(shape),
        "corpus": asdict(prepared.stats),
        "training": asdict(replace(result, out_dir=str(result.out_dir))),
        "timings_seconds": {k: round(v, 1) for k, v in asdict(timings).items()},
        "total_seconds": round(time.monotonic() - started, 1),
        "evaluation": [asdict(r) for r in rows],
        "samples": samples,
        "history": json.loads((config.out_dir / "training_log.json").read_text())["history"],
    }
    (out / f"{EMBEDDED_NAME}.recipe.json").write_text(json.dumps(summary, indent=2) + "\n")
    write_card(summary, out)
    _log(f"wrote {embedded} ({embedded.stat().st_size / 1e6:.1f} MB) and {out / 'MODEL_CARD.md'}")
    return summary


def run_sweep(
    corpus: str | None,
    build: Path,
    out: Path,
    minutes: float = 6.0,
    shapes: list[str] | None = None,
    sha256: str | None = DEFAULT_SHA256,
    progress: bool = True,
    learning_rate: float | None = None,
) -> list[dict]:
    """Train each candidate shape for the same wall-clock time; record validation loss.

    Results are merged into `out` by (shape, learning rate), so a sweep can
    be extended run by run.
    """
    recipe = {**RECIPE, "learning_rate": learning_rate or RECIPE["learning_rate"]}
    prepared = prepare_corpus(
        corpus or DEFAULT_URL, build / "corpus", sha256=sha256 or None, seed=recipe["seed"]
    )
    train_tokenizer(prepared.train, build / "tokenizer", recipe["vocab_size"])
    results = []
    for key in shapes or list(SHAPES):
        shape = SHAPES[key]
        run_dir = build / f"run-{key}"
        shutil.rmtree(run_dir, ignore_errors=True)
        config = TrainConfig(
            out_dir=run_dir,
            corpus_dir=build / "corpus",
            tokenizer_dir=build / "tokenizer",
            n_layer=shape.n_layer,
            n_head=shape.n_head,
            n_embd=shape.n_embd,
            n_ctx=recipe["n_ctx"],
            block_size=recipe["block_size"],
            batch_size=recipe["batch_size"],
            learning_rate=recipe["learning_rate"],
            warmup_steps=recipe["warmup_steps"],
            max_steps=100_000,
            max_minutes=minutes,
            eval_interval=25,
            dropout=recipe["dropout"],
            seed=recipe["seed"],
            progress=progress,
        )
        _log(f"sweep: {shape} for {minutes} min")
        result = train(config)
        best = min(
            h["validation_loss"]
            for h in json.loads((run_dir / "training_log.json").read_text())["history"]
        )
        results.append(
            {
                "shape": asdict(shape),
                "learning_rate": recipe["learning_rate"],
                "parameters": result.parameters,
                "q8_0_megabytes_estimate": round(result.parameters * 1.0625 / 1e6, 1),
                "steps": result.steps,
                "minutes": round(result.seconds / 60, 2),
                "tokens_per_second": round(result.tokens_per_second),
                "final_validation_loss": result.validation_loss,
                "best_validation_loss": best,
            }
        )
        _log(f"sweep: {key}: {results[-1]}")
    out.parent.mkdir(parents=True, exist_ok=True)
    merged = results
    if out.is_file():
        earlier = json.loads(out.read_text())
        if earlier.get("minutes_each") == minutes:
            new = {(r["shape"]["name"], r["learning_rate"]) for r in results}
            kept = [
                r
                for r in earlier["results"]
                if (r["shape"]["name"], r.get("learning_rate", RECIPE["learning_rate"])) not in new
            ]
            merged = kept + results
    out.write_text(json.dumps({"minutes_each": minutes, "results": merged}, indent=2) + "\n")
    return results
