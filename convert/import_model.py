"""A gpt-2-simple checkpoint to a card-ready GGUF and its model card, in one step.

    python -m convert import checkpoint/run1 --out models/mine.q8_0.gguf

checkpoint -> transformers directory (convert.gpt2_simple) -> F32 GGUF
(llama.cpp's converter, every tensor checked) -> the quantisation asked
for (llama.cpp's quantiser) -> `FILE.md` beside it, saying where it came
from and which boards it fits. The work happens in a temporary folder
beside the output; the GGUF and its card appear only when both are whole.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from convert.errors import ConversionError
from convert.gguf import convert_to_gguf
from convert.gpt2_simple import Checkpoint, counter, import_checkpoint, open_checkpoint
from convert.quantize import QUANT_TYPES, quantize

OUT_TYPES = (*QUANT_TYPES, "f16", "f32")


def default_out(directory: Path, checkpoint: Checkpoint, out_type: str) -> Path:
    """models/NAME-SIZE.TYPE.gguf, NAME being the run's folder (run1, unless renamed)."""
    name = directory.resolve().name or "gpt2-simple"
    return Path("models") / f"{name}-{checkpoint.size_name}.{out_type}.gguf"


def import_to_gguf(
    directory: Path,
    out: Path | None = None,
    out_type: str = "q8_0",
    step: int | None = None,
    keep_hf: Path | None = None,
) -> tuple[Path, Path]:
    """Write the GGUF and its card; returns both paths."""
    if out_type not in OUT_TYPES:
        raise ConversionError(f"type must be one of {', '.join(OUT_TYPES)}, not {out_type!r}")
    checkpoint, _ = open_checkpoint(directory, step)  # every check before any work
    out = Path(out) if out else default_out(directory, checkpoint, out_type)
    if out.suffix != ".gguf":
        raise ConversionError(f"{out}: the output's name must end in .gguf")
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        hf = work / "hf"
        import_checkpoint(directory, hf, step)
        source_type = "f16" if out_type == "f16" else "f32"
        source = convert_to_gguf(hf, work / f"model.{source_type}.gguf", source_type)
        staged = work / out.name
        if out_type in QUANT_TYPES:
            quantize(source, staged, out_type)
        else:
            os.replace(source, staged)
        card = out.with_suffix(".md")
        staged_card = work / card.name
        staged_card.write_text(model_card(checkpoint, staged, out_type, out.name))
        if keep_hf is not None:
            if keep_hf.exists():
                raise ConversionError(f"{keep_hf} exists; choose another --hf-out")
            shutil.move(str(hf), keep_hf)
        os.replace(staged, out)
        os.replace(staged_card, card)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out, card


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def model_card(checkpoint: Checkpoint, gguf: Path, out_type: str, name: str) -> str:
    from appliance.engine.memory import BOARDS, fit_report, read_shape

    h = checkpoint.hparams
    steps = counter(checkpoint.directory) or "not recorded"
    size = gguf.stat().st_size
    lines = [
        f"# {name}",
        "",
        f"GPT-2 {checkpoint.size_name} fine-tuned with gpt-2-simple, imported by "
        "`python -m convert import` (no TensorFlow) and converted with llama.cpp's own "
        f"converter and quantiser to {out_type.upper()}.",
        "",
        "| | |",
        "|---|---|",
        f"| checkpoint | `{checkpoint.prefix.name}` of `{checkpoint.directory.name}` |",
        f"| steps trained (`counter`) | {steps} |",
        f"| shape | {h['n_layer']} layers, {h['n_embd']} wide, {h['n_head']} heads, "
        f"context {h['n_ctx']}, vocabulary {h['n_vocab']} |",
        f"| tokenizer | {checkpoint.tokenizer_note} |",
        f"| file | {size / 1e6:.1f} MB, sha256 `{_sha256(gguf)}` |",
        "",
        "## Which boards it fits",
        "",
        "What the engine checks at start (it refuses, exit 78, a model that does not fit):",
        "",
        "| board | fits |",
        "|---|---|",
    ]
    shape = read_shape(gguf)  # the GGUF's header, read once for every board
    for board in BOARDS:
        lines.append(f"| {board.name} | {fit_report(shape, board.mem_available_mb)} |")
    lines += [
        "",
        "Put the file on the card's boot partition beside `teletype.toml` and set",
        "",
        "```toml",
        "[model]",
        f'path = "{name}"',
        "```",
        "",
    ]
    return "\n".join(lines)
