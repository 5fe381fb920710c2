"""Step 5: a transformers GPT-2 directory -> GGUF (F32 or F16).

The conversion itself is llama.cpp's (see convert.llama_converter); this
module prepares its input, runs it, and checks every tensor of the result
against the checkpoint by name and shape.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from convert.errors import ConversionError, TensorMismatchError
from convert.llama_converter import converter_dir, gguf_module

OUT_TYPES = ("f32", "f16")


def staged_model_dir(hf_dir: Path, work: Path) -> Path:
    """A view of `hf_dir` the GPT-2 converter can read: links to every file, a fixed config.

    transformers 5 writes only `n_positions` into a GPT-2 config.json, but
    llama.cpp's GPT-2 converter reads `n_ctx` (the name GPT-2's original
    checkpoints used) and fails with a KeyError without it. Both mean the
    context length, so we add `n_ctx` from `n_positions`. The user's
    directory is left as it was; only the staged copy of config.json changes.
    """
    config_path = hf_dir / "config.json"
    if not config_path.is_file():
        raise ConversionError(f"{hf_dir} has no config.json: is it a transformers model directory?")
    config = json.loads(config_path.read_text())
    if config.get("model_type") != "gpt2":
        raise ConversionError(
            f"{config_path}: model_type is {config.get('model_type')!r}; "
            "this pipeline converts GPT-2"
        )
    if "n_ctx" not in config:
        if "n_positions" not in config:
            raise ConversionError(f"{config_path} gives neither n_ctx nor n_positions")
        config["n_ctx"] = config["n_positions"]
    staged = work / "model"
    staged.mkdir()
    for item in hf_dir.iterdir():
        if item.name != "config.json" and item.is_file():
            os.symlink(item.resolve(), staged / item.name)
    (staged / "config.json").write_text(json.dumps(config, indent=2))
    return staged


def convert_to_gguf(hf_dir: Path, out: Path, out_type: str = "f16") -> Path:
    """Convert with llama.cpp's converter, then verify every tensor against the checkpoint."""
    if out_type not in OUT_TYPES:
        raise ConversionError(f"output type must be one of {OUT_TYPES}, not {out_type!r}")
    if not hf_dir.is_dir():
        raise ConversionError(f"model directory not found: {hf_dir}")
    converter = converter_dir()
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as work:
        staged = staged_model_dir(hf_dir, Path(work))
        partial = out.with_name(out.name + ".part")
        cmd = [
            sys.executable,
            "-m",
            "convert.run_converter",
            str(converter),
            str(staged),
            "--outfile",
            str(partial),
            "--outtype",
            out_type,
        ]
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0:
            partial.unlink(missing_ok=True)
            tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-15:])
            raise ConversionError(f"llama.cpp's converter failed on {hf_dir}:\n{tail}")
    verify_tensors(hf_dir, partial)
    os.replace(partial, out)
    return out


def expected_tensors(hf_dir: Path) -> dict[str, tuple[int, ...]]:
    """GGUF tensor name -> shape (in torch order) that the checkpoint should turn into."""
    from safetensors import safe_open

    config = json.loads((hf_dir / "config.json").read_text())
    n_layer = config.get("n_layer") or config.get("num_hidden_layers")
    weights = sorted(hf_dir.glob("*.safetensors"))
    if not weights:
        raise ConversionError(f"{hf_dir} has no .safetensors weights")
    expected: dict[str, tuple[int, ...]] = {}
    with gguf_module() as gguf:
        names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.GPT2, n_layer)
        for path in weights:
            with safe_open(str(path), framework="pt") as f:
                for name in f.keys():  # noqa: SIM118 (a safetensors handle, not a dict)
                    if name.endswith((".attn.bias", ".attn.masked_bias")):
                        continue  # causal masks, not weights
                    shape = tuple(f.get_slice(name).get_shape())
                    # GPT-2's Conv1D stores (in, out); llama.cpp wants (out, in).
                    if name.endswith(("c_attn.weight", "c_proj.weight", "c_fc.weight")):
                        shape = shape[::-1]
                    gguf_name = names.get_name(name, try_suffixes=(".weight", ".bias"))
                    if gguf_name is None:
                        raise TensorMismatchError(f"{path.name}: no GGUF name for tensor {name}")
                    expected[gguf_name] = shape
    # The output head shares the token embedding (tied), as in GPT-2.
    expected.pop("output.weight", None)
    return expected


def gguf_tensors(path: Path) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape in torch order (GGUF lists dimensions innermost first)."""
    with gguf_module() as gguf:
        reader = gguf.GGUFReader(str(path))
        return {t.name: tuple(int(d) for d in reversed(t.shape)) for t in reader.tensors}


def verify_tensors(hf_dir: Path, gguf_path: Path) -> None:
    """Every checkpoint tensor is in the GGUF under its llama.cpp name, with the same shape."""
    want = expected_tensors(hf_dir)
    got = gguf_tensors(gguf_path)
    got.pop("output.weight", None)
    problems = []
    for name, shape in want.items():
        if name not in got:
            problems.append(f"{name}: missing from the GGUF")
        elif got[name] != shape:
            problems.append(f"{name}: shape {got[name]} in the GGUF, {shape} in the checkpoint")
    problems += [f"{name}: in the GGUF but not in the checkpoint" for name in got.keys() - want]
    if problems:
        raise TensorMismatchError(
            f"{gguf_path} does not match {hf_dir}:\n  " + "\n  ".join(problems)
        )
