"""`python -m convert <step>`: a thin command line over the pipeline's functions."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from convert.errors import ConvertError


def _corpus(args) -> None:
    from convert.corpus import DEFAULT_URL, prepare_corpus

    prepared = prepare_corpus(
        args.corpus or DEFAULT_URL,
        args.out,
        sha256=args.sha256 or None,
        validation_fraction=args.validation_fraction,
        seed=args.seed,
    )
    s = prepared.stats
    print(
        f"{s.documents} documents; dropped {s.debris_lines_dropped} debris and "
        f"{s.duplicate_lines_dropped} repeated lines; {s.train_chars} training and "
        f"{s.validation_chars} validation characters -> {args.out}"
    )


def _tokenizer(args) -> None:
    from convert.tokenizer import train_tokenizer

    out = train_tokenizer(args.train, args.out, args.vocab_size)
    print(f"tokenizer -> {out}")


def _train_args(args) -> dict:
    keys = (
        "n_layer",
        "n_head",
        "n_embd",
        "n_ctx",
        "dropout",
        "batch_size",
        "block_size",
        "learning_rate",
        "warmup_steps",
        "max_steps",
        "max_minutes",
        "eval_interval",
        "seed",
        "device",
    )
    return {k: getattr(args, k) for k in keys}


def _train(args) -> None:
    from convert.train import config_from_args, train

    config = config_from_args(
        {
            "out_dir": args.out,
            "corpus_dir": args.corpus_dir,
            "tokenizer_dir": args.tokenizer,
            **_train_args(args),
        }
    )
    _print_config(config)
    _report(train(config))


def _finetune(args) -> None:
    from convert.train import config_from_args, train

    settings = {
        "out_dir": args.out,
        "corpus_dir": args.corpus_dir,
        "init_from": args.base,
        **_train_args(args),
    }
    # Fine-tuning a pretrained model wants a gentler learning rate than
    # training from scratch; flags still win.
    if args.learning_rate is None:
        settings["learning_rate"] = 1e-4
    _print_config(config := config_from_args(settings))
    _report(train(config))


def _print_config(config) -> None:
    for key, value in config.to_json().items():
        if key != "extra":
            print(f"  {key} = {value}")


def _report(result) -> None:
    print(
        f"{result.steps} steps in {result.seconds:.0f} s "
        f"({result.tokens_per_second:.0f} tokens/s), "
        f"stopped by {result.stopped_by}; loss {result.train_loss:.3f}, "
        f"validation loss {result.validation_loss:.3f} -> {result.out_dir}"
    )


def _gguf(args) -> None:
    from convert.gguf import convert_to_gguf

    print(convert_to_gguf(args.model_dir, args.out, args.type))


def _quantize(args) -> None:
    from convert.quantize import quantize_all

    stem = args.source.name.split(".")[0]
    for path in quantize_all(args.source, args.out_dir or args.source.parent, args.types, stem):
        print(f"{path} ({path.stat().st_size / 1e6:.1f} MB)")


def _eval(args) -> None:
    from convert.evaluate import evaluate, table, write_report

    rows = evaluate(
        args.gguf, args.validation, hf_dir=args.hf, window=args.window, samples=not args.no_samples
    )
    print(table(rows))
    if args.json:
        write_report(rows, args.json)


def _gpt2_simple(args) -> None:
    from convert.gpt2_simple import import_checkpoint

    checkpoint = import_checkpoint(args.checkpoint, args.out, args.step)
    print(
        f"{checkpoint.prefix.name} (GPT-2 {checkpoint.size_name}; {checkpoint.tokenizer_note})"
        f" -> {args.out}"
    )


def _import(args) -> None:
    from convert.import_model import import_to_gguf

    gguf, card = import_to_gguf(args.checkpoint, args.out, args.type, args.step, args.hf_out)
    print(f"{gguf} ({gguf.stat().st_size / 1e6:.1f} MB), its card {card}")


def _model(args) -> None:
    from convert.pipeline import run_model

    run_model(args.corpus, args.build, args.out, sha256=args.sha256 or None)


def _card(args) -> None:
    import json

    from convert.card import write_card
    from convert.pipeline import EMBEDDED_NAME

    recipe = args.out / f"{EMBEDDED_NAME}.recipe.json"
    if not recipe.is_file():
        raise ConvertError(f"{recipe} not found: run `python -m convert model` first")
    print(write_card(json.loads(recipe.read_text()), args.out))


def _sweep(args) -> None:
    from convert.pipeline import run_sweep

    run_sweep(
        args.corpus,
        args.build,
        args.out,
        minutes=args.minutes,
        shapes=args.shapes,
        learning_rate=args.learning_rate,
        sha256=args.sha256 or None,
    )


def _add_training_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--corpus-dir", type=Path, required=True, help="holds train.txt, validation.txt")
    p.add_argument("--out", type=Path, required=True, help="model directory (resumes if present)")
    p.add_argument("--n-layer", type=int)
    p.add_argument("--n-head", type=int)
    p.add_argument("--n-embd", type=int)
    p.add_argument("--n-ctx", type=int)
    p.add_argument("--dropout", type=float)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--block-size", type=int)
    p.add_argument("--learning-rate", type=float)
    p.add_argument("--warmup-steps", type=int)
    p.add_argument("--max-steps", type=int, help="step budget")
    p.add_argument("--max-minutes", type=float, help="wall-clock budget")
    p.add_argument("--eval-interval", type=int, help="steps between validation and checkpoint")
    p.add_argument("--seed", type=int)
    p.add_argument("--device", help="auto (CUDA when present), cpu, cuda, ...")


def parser() -> argparse.ArgumentParser:
    from convert.corpus import DEFAULT_SHA256
    from convert.quantize import DEFAULT_TYPES, QUANT_TYPES

    top = argparse.ArgumentParser(prog="python -m convert", description=__doc__)
    steps = top.add_subparsers(dest="step", required=True, metavar="STEP")

    p = steps.add_parser("corpus", help="fetch, clean, dedupe and split the training text")
    p.add_argument("--corpus", help="local path or URL (default: the Teletype manuals by URL)")
    p.add_argument("--sha256", default=DEFAULT_SHA256, help="expected checksum ('' for none)")
    p.add_argument("--out", type=Path, default=Path("build/model/corpus"))
    p.add_argument("--validation-fraction", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=1337)
    p.set_defaults(run=_corpus)

    p = steps.add_parser("tokenizer", help="train a byte-level BPE on the training split")
    p.add_argument("--train", type=Path, default=Path("build/model/corpus/train.txt"))
    p.add_argument("--out", type=Path, default=Path("build/model/tokenizer"))
    p.add_argument("--vocab-size", type=int, default=8192)
    p.set_defaults(run=_tokenizer)

    p = steps.add_parser("train", help="train a small GPT-2 from scratch")
    _add_training_flags(p)
    p.add_argument("--tokenizer", type=Path, required=True, help="from the tokenizer step")
    p.set_defaults(run=_train)

    p = steps.add_parser("finetune", help="fine-tune a GPT-2 checkpoint (its own tokenizer)")
    _add_training_flags(p)
    p.add_argument("--base", required=True, help="local GPT-2 directory or a hub name")
    p.set_defaults(run=_finetune)

    p = steps.add_parser("gguf", help="transformers directory -> GGUF with llama.cpp's converter")
    p.add_argument("model_dir", type=Path)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--type", choices=("f32", "f16"), default="f16")
    p.set_defaults(run=_gguf)

    p = steps.add_parser("quantize", help="GGUF -> Q8_0, Q6_K, Q5_K_M, Q4_K_M")
    p.add_argument("source", type=Path)
    p.add_argument("--out-dir", type=Path)
    p.add_argument("--types", nargs="+", choices=list(QUANT_TYPES), default=list(DEFAULT_TYPES))
    p.set_defaults(run=_quantize)

    p = steps.add_parser("eval", help="perplexity and repetition of GGUFs (and the HF model)")
    p.add_argument("gguf", type=Path, nargs="+")
    p.add_argument("--validation", type=Path, required=True)
    p.add_argument("--hf", type=Path, help="the transformers model, for its perplexity")
    p.add_argument("--window", type=int, default=256)
    p.add_argument("--no-samples", action="store_true", help="skip the repetition measure")
    p.add_argument("--json", type=Path, help="also write the rows here")
    p.set_defaults(run=_eval)

    p = steps.add_parser(
        "gpt2-simple", help="a gpt-2-simple checkpoint (checkpoint/run1) -> transformers directory"
    )
    p.add_argument("checkpoint", type=Path, help="gpt-2-simple's run directory")
    p.add_argument("--out", type=Path, required=True, help="the transformers directory to write")
    p.add_argument(
        "--step", type=int, help="import model-STEP (default: the one `checkpoint` names)"
    )
    p.set_defaults(run=_gpt2_simple)

    from convert.import_model import OUT_TYPES

    p = steps.add_parser(
        "import", help="a gpt-2-simple checkpoint -> a card-ready GGUF and its model card"
    )
    p.add_argument("checkpoint", type=Path, help="gpt-2-simple's run directory")
    p.add_argument("--out", type=Path, help="the GGUF (default models/RUN-SIZE.TYPE.gguf)")
    p.add_argument("--type", choices=OUT_TYPES, default="q8_0")
    p.add_argument(
        "--step", type=int, help="import model-STEP (default: the one `checkpoint` names)"
    )
    p.add_argument("--hf-out", type=Path, help="also keep the transformers directory here")
    p.set_defaults(run=_import)

    p = steps.add_parser("model", help="the whole pipeline -> models/ (the embedded model)")
    p.add_argument("--corpus", help="local path or URL (default: the Teletype manuals by URL)")
    p.add_argument("--sha256", default=DEFAULT_SHA256)
    p.add_argument("--build", type=Path, default=Path("build/model"))
    p.add_argument("--out", type=Path, default=Path("models"))
    p.set_defaults(run=_model)

    p = steps.add_parser("card", help="rewrite MODEL_CARD.md from the recorded run")
    p.add_argument("--out", type=Path, default=Path("models"))
    p.set_defaults(run=_card)

    p = steps.add_parser("sweep", help="validation loss against model size at equal time")
    p.add_argument("--corpus")
    p.add_argument("--sha256", default=DEFAULT_SHA256)
    p.add_argument("--build", type=Path, default=Path("build/sweep"))
    p.add_argument("--out", type=Path, default=Path("models/size-sweep.json"))
    p.add_argument("--minutes", type=float, default=6.0)
    p.add_argument("--shapes", nargs="+")
    p.add_argument("--learning-rate", type=float)
    p.set_defaults(run=_sweep)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        args.run(args)
    except ConvertError as e:
        print(f"python -m convert {args.step}: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; a training run resumes from its last checkpoint", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
