"""Import a gpt-2-simple checkpoint (`checkpoint/run1/`) as a transformers GPT-2 directory.

gpt-2-simple fine-tunes OpenAI's TensorFlow 1 GPT-2 and saves, in one
directory: `checkpoint` (a text file naming the latest save, with the
absolute path of the machine that trained it, often a Colab's), `counter`,
`hparams.json` (n_vocab, n_ctx, n_embd, n_head, n_layer), `encoder.json`
and `vocab.bpe` (the tokenizer) and `model-N.index` with
`model-N.data-0000K-of-0000M` (the weights; read by convert.tf_bundle,
never by TensorFlow).

The result is what the `gguf`, `quantize` and `eval` steps already take:
`config.json`, `model.safetensors` (written from numpy; no torch needed)
and the tokenizer, with GPT-2's names: OpenAI's `model/h3/attn/c_attn/w`
of shape [1, in, out] is transformers' `transformer.h.3.attn.c_attn.weight`
of shape [in, out] (both store GPT-2's Conv1D the same way round).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from convert.errors import CheckpointError
from convert.tf_bundle import Bundle

# The sizes OpenAI released (n_layer, n_embd, n_head), by parameter count.
GPT2_SIZES = {
    "124M": (12, 768, 12),
    "355M": (24, 1024, 16),
    "774M": (36, 1280, 20),
    "1558M": (48, 1600, 25),
}
HPARAM_KEYS = ("n_vocab", "n_ctx", "n_embd", "n_head", "n_layer")
# sha256 of OpenAI's GPT-2 tokenizer files, as gpt-2-simple downloads them.
GPT2_ENCODER_SHA256 = "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783"
GPT2_VOCAB_BPE_SHA256 = "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5"
END_OF_TEXT = "<|endoftext|>"
# Saved beside the weights by optimizers (Adam's two moments, its beta powers) or by
# TensorFlow's bookkeeping: never part of the model.
SLOT_SUFFIXES = (
    "/Adam",
    "/Adam_1",
    "/Momentum",
    "/RMSProp",
    "/RMSProp_1",
    "/ExponentialMovingAverage",
)
BOOKKEEPING = re.compile(r"^(beta[12]_power|global_step|_CHECKPOINTABLE_OBJECT_GRAPH)")

LAYER_PARTS = {
    # OpenAI's name under model/h{i}/ -> (transformers' name under transformer.h.{i}., rank)
    "ln_1/g": ("ln_1.weight", 1),
    "ln_1/b": ("ln_1.bias", 1),
    "attn/c_attn/w": ("attn.c_attn.weight", 3),
    "attn/c_attn/b": ("attn.c_attn.bias", 1),
    "attn/c_proj/w": ("attn.c_proj.weight", 3),
    "attn/c_proj/b": ("attn.c_proj.bias", 1),
    "ln_2/g": ("ln_2.weight", 1),
    "ln_2/b": ("ln_2.bias", 1),
    "mlp/c_fc/w": ("mlp.c_fc.weight", 3),
    "mlp/c_fc/b": ("mlp.c_fc.bias", 1),
    "mlp/c_proj/w": ("mlp.c_proj.weight", 3),
    "mlp/c_proj/b": ("mlp.c_proj.bias", 1),
}


@dataclass
class Checkpoint:
    """A gpt-2-simple run directory, checked: which save, its shapes, its tokenizer."""

    directory: Path
    prefix: Path
    hparams: dict[str, int]
    tokenizer_note: str

    @property
    def size_name(self) -> str:
        shape = (self.hparams["n_layer"], self.hparams["n_embd"], self.hparams["n_head"])
        for name, known in GPT2_SIZES.items():
            if known == shape:
                return name
        return "custom"


def what_is(directory: Path) -> str | None:
    """A sentence for a directory that is some other kind of model, else None."""
    if (directory / "saved_model.pb").is_file() or (directory / "saved_model.pbtxt").is_file():
        return (
            f"{directory} is a TensorFlow 2 SavedModel, not a gpt-2-simple checkpoint; no step "
            "takes it: load it in TensorFlow, save it as a transformers GPT-2 "
            "(TFGPT2LMHeadModel.save_pretrained) and give that to `python -m convert gguf`"
        )
    if (directory / "config.json").is_file() and (
        any(directory.glob("*.safetensors")) or any(directory.glob("pytorch_model*.bin"))
    ):
        return (
            f"{directory} is a Hugging Face transformers model directory: "
            f"`python -m convert gguf {directory} --out FILE.gguf` takes it "
            f"(then `python -m convert quantize`)"
        )
    if any(directory.glob("*.gguf")):
        return f"{directory} holds GGUF files already: copy one to the card's models/ folder"
    return None


def checkpoint_prefix(directory: Path, step: int | None = None) -> Path:
    """The save to import: `model-STEP` if given, else the one `checkpoint` names."""
    if step is not None:
        prefix = directory / f"model-{step}"
        if not prefix.with_name(prefix.name + ".index").is_file():
            saves = sorted(p.name[: -len(".index")] for p in directory.glob("*.index"))
            raise CheckpointError(
                f"{prefix.name}.index not found in {directory} "
                f"(it has: {', '.join(saves) or 'none'})"
            )
        return prefix
    state = directory / "checkpoint"
    if state.is_file():
        match = re.search(r'^model_checkpoint_path:\s*"(.*)"\s*$', state.read_text(), re.M)
        if match:
            # The path is absolute on the machine that trained it (often
            # /content/checkpoint/run1/model-1000 on Colab): only its name counts.
            name = match.group(1).replace("\\", "/").rsplit("/", 1)[-1]
            prefix = directory / name
            if prefix.with_name(name + ".index").is_file():
                return prefix
            raise CheckpointError(
                f"{state} names {name}, but {name}.index is not in {directory} "
                "(copy the whole run directory, or give --step)"
            )
    indexes = sorted(directory.glob("model-*.index"), key=_step_of)
    if not indexes:
        raise CheckpointError(
            f"{directory} holds no checkpoint: gpt-2-simple's run directory "
            "(checkpoint/run1) has `checkpoint`, hparams.json, encoder.json, vocab.bpe "
            "and model-N.index with model-N.data-00000-of-00001"
        )
    return indexes[-1].with_name(indexes[-1].name[: -len(".index")])


def _step_of(index: Path) -> int:
    match = re.search(r"-(\d+)\.index$", index.name)
    return int(match.group(1)) if match else -1


def read_hparams(directory: Path) -> dict[str, int]:
    path = directory / "hparams.json"
    if not path.is_file():
        raise CheckpointError(f"{path} not found: gpt-2-simple writes it beside the checkpoint")
    try:
        raw = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path} is not JSON: {e}") from None
    if not isinstance(raw, dict):
        raise CheckpointError(f"{path} is not a JSON object")
    hparams = {}
    for key in HPARAM_KEYS:
        value = raw.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise CheckpointError(f"{path}: {key} must be a positive whole number, not {value!r}")
        hparams[key] = value
    if hparams["n_embd"] % hparams["n_head"]:
        raise CheckpointError(f"{path}: n_embd {hparams['n_embd']} is not a multiple of n_head")
    return hparams


def expected_shapes(h: dict[str, int]) -> dict[str, tuple[int, ...]]:
    """OpenAI's variable name -> shape, for these hyperparameters."""
    e = h["n_embd"]
    shapes: dict[str, tuple[int, ...]] = {
        "model/wte": (h["n_vocab"], e),
        "model/wpe": (h["n_ctx"], e),
        "model/ln_f/g": (e,),
        "model/ln_f/b": (e,),
    }
    widths = {
        "attn/c_attn": (e, 3 * e),
        "attn/c_proj": (e, e),
        "mlp/c_fc": (e, 4 * e),
        "mlp/c_proj": (4 * e, e),
    }
    for i in range(h["n_layer"]):
        for part, (_, rank) in LAYER_PARTS.items():
            layer, leaf = part.rsplit("/", 1)
            if layer in widths:
                n_in, n_out = widths[layer]
                shape: tuple[int, ...] = (1, n_in, n_out) if leaf == "w" else (n_out,)
            else:
                shape = (e,)
            assert len(shape) == rank
            shapes[f"model/h{i}/{part}"] = shape
    return shapes


def check_names(bundle: Bundle, prefix: Path) -> None:
    """A checkpoint of GPT-2's weights, or one line saying what it is instead."""
    names = set(bundle.entries)
    weights = {n for n in names if not n.endswith(SLOT_SUFFIXES) and not BOOKKEEPING.match(n)}
    if not weights:
        if names:
            raise CheckpointError(
                f"{prefix.name} holds only optimizer state ({sorted(names)[0]}, ...), "
                "no model weights: import the model's own save (gpt-2-simple's model-N)"
            )
        raise CheckpointError(f"{prefix.name} holds no tensors")
    if "model/wte" not in weights:
        sample = ", ".join(sorted(weights)[:3])
        raise CheckpointError(
            f"{prefix.name} is not a GPT-2 checkpoint: it has no model/wte "
            f"(its variables: {sample}, ...)"
        )


def check_shapes(bundle: Bundle, hparams: dict[str, int], prefix: Path) -> None:
    """Every GPT-2 variable present with the shape hparams.json implies, and nothing else."""
    wte = bundle.entries["model/wte"].shape
    want = expected_shapes(hparams)
    if wte != want["model/wte"]:
        raise CheckpointError(
            f"hparams.json (n_vocab {hparams['n_vocab']}, n_embd {hparams['n_embd']}) "
            f"disagrees with {prefix.name}: model/wte is {list(wte)}"
        )
    problems = []
    for name, shape in want.items():
        entry = bundle.entries.get(name)
        if entry is None:
            problems.append(f"{name} is missing")
        elif entry.shape != shape:
            problems.append(f"{name} is {list(entry.shape)}, hparams.json implies {list(shape)}")
    extra = sorted(
        n
        for n in bundle.entries
        if n not in want and not n.endswith(SLOT_SUFFIXES) and not BOOKKEEPING.match(n)
    )
    if extra:
        layer = re.match(r"model/h(\d+)/", extra[0])
        if layer and int(layer.group(1)) >= hparams["n_layer"]:
            problems.append(f"{extra[0]} is past hparams.json's n_layer {hparams['n_layer']}")
        else:
            problems.append(f"{extra[0]} is not a GPT-2 variable")
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise CheckpointError(f"hparams.json disagrees with {prefix.name}: {problems[0]}{more}")


def describe_tokenizer(directory: Path, hparams: dict[str, int]) -> str:
    """Whether encoder.json and vocab.bpe are GPT-2's own; one sentence either way."""
    encoder, bpe = directory / "encoder.json", directory / "vocab.bpe"
    for path in (encoder, bpe):
        if not path.is_file():
            raise CheckpointError(
                f"{path} not found: gpt-2-simple keeps the tokenizer beside the checkpoint"
            )
    if (
        hashlib.sha256(encoder.read_bytes()).hexdigest() == GPT2_ENCODER_SHA256
        and hashlib.sha256(bpe.read_bytes()).hexdigest() == GPT2_VOCAB_BPE_SHA256
    ):
        return "GPT-2's own tokenizer (encoder.json and vocab.bpe unchanged)"
    try:
        vocab = json.loads(encoder.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{encoder} is not JSON: {e}") from None
    if not isinstance(vocab, dict) or not all(isinstance(v, int) for v in vocab.values()):
        raise CheckpointError(f"{encoder} is not a token -> id table")
    ids = sorted(vocab.values())
    if ids != list(range(len(ids))):
        raise CheckpointError(f"{encoder}: the ids are not 0 to {len(ids) - 1} without gaps")
    if len(vocab) != hparams["n_vocab"]:
        raise CheckpointError(
            f"{encoder} has {len(vocab)} tokens, hparams.json's n_vocab is {hparams['n_vocab']}"
        )
    if END_OF_TEXT not in vocab:
        raise CheckpointError(f"{encoder} has no {END_OF_TEXT} token")
    merges = [m for m in bpe.read_text(encoding="utf-8").splitlines()[1:] if m.strip()]
    return (
        f"a tokenizer that is not GPT-2's own ({len(vocab)} tokens, {len(merges)} merges), "
        "used as it is"
    )


def open_checkpoint(directory: Path, step: int | None = None) -> tuple[Checkpoint, Bundle]:
    """The run directory checked from end to end, before anything is written."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"{directory} is not a directory")
    if other := what_is(directory):
        raise CheckpointError(other)
    if not any(directory.iterdir()):
        raise CheckpointError(
            f"{directory} is empty: give gpt-2-simple's run directory (checkpoint/run1)"
        )
    prefix = checkpoint_prefix(directory, step)
    hparams = read_hparams(directory)
    bundle = Bundle(prefix)
    check_names(bundle, prefix)
    check_shapes(bundle, hparams, prefix)
    note = describe_tokenizer(directory, hparams)
    return Checkpoint(directory, prefix, hparams, note), bundle


def hf_config(hparams: dict[str, int], eos: int) -> dict:
    return {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": hparams["n_vocab"],
        "n_positions": hparams["n_ctx"],
        # llama.cpp's GPT-2 converter reads n_ctx (GPT-2's original name).
        "n_ctx": hparams["n_ctx"],
        "n_embd": hparams["n_embd"],
        "n_layer": hparams["n_layer"],
        "n_head": hparams["n_head"],
        "n_inner": None,
        # OpenAI's model.py: gelu with the tanh approximation, layer norm epsilon 1e-5.
        "activation_function": "gelu_new",
        "layer_norm_epsilon": 1e-5,
        "initializer_range": 0.02,
        "resid_pdrop": 0.0,
        "embd_pdrop": 0.0,
        "attn_pdrop": 0.0,
        "bos_token_id": eos,
        "eos_token_id": eos,
        "tie_word_embeddings": True,
        "dtype": "float32",
    }


def hf_tensors(bundle: Bundle, hparams: dict[str, int]):
    """(transformers name, float32 array) for every weight, read and crc-checked one at a time."""
    yield "transformer.wte.weight", bundle.read("model/wte")
    yield "transformer.wpe.weight", bundle.read("model/wpe")
    for i in range(hparams["n_layer"]):
        for part, (name, rank) in LAYER_PARTS.items():
            array = bundle.read(f"model/h{i}/{part}")
            yield f"transformer.h.{i}.{name}", array[0] if rank == 3 else array
    yield "transformer.ln_f.weight", bundle.read("model/ln_f/g")
    yield "transformer.ln_f.bias", bundle.read("model/ln_f/b")


def write_tokenizer(directory: Path, out: Path, n_ctx: int) -> int:
    """encoder.json + vocab.bpe -> a transformers GPT-2 tokenizer; returns the end-of-text id."""
    from tokenizers import models

    from convert.tokenizer import as_transformers, gpt2_byte_level

    bpe = models.BPE.from_file(str(directory / "encoder.json"), str(directory / "vocab.bpe"))
    wrapped = as_transformers(gpt2_byte_level(bpe), model_max_length=n_ctx)
    wrapped.save_pretrained(out)
    return int(wrapped.eos_token_id)


def import_checkpoint(directory: Path, out: Path, step: int | None = None) -> Checkpoint:
    """Write `out`, a transformers GPT-2 directory, from a gpt-2-simple run directory.

    Everything is checked first (names, shapes, the tokenizer) and every
    tensor's crc32c as it is read; the directory appears only complete.
    """
    from safetensors.numpy import save_file

    checkpoint, bundle = open_checkpoint(directory, step)
    out = Path(out)
    if (out.is_dir() and any(out.iterdir())) or (out.exists() and not out.is_dir()):
        raise CheckpointError(f"{out} exists and is not empty; choose another --out")
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        tensors = {
            name: np.ascontiguousarray(array, dtype=np.float32)
            for name, array in hf_tensors(bundle, checkpoint.hparams)
        }
        save_file(tensors, str(work / "model.safetensors"), metadata={"format": "pt"})
        del tensors
        eos = write_tokenizer(directory, work, checkpoint.hparams["n_ctx"])
        (work / "config.json").write_text(
            json.dumps(hf_config(checkpoint.hparams, eos), indent=2) + "\n"
        )
        (work / "import.json").write_text(
            json.dumps(
                {
                    "imported_from": "gpt-2-simple checkpoint",
                    "checkpoint": checkpoint.prefix.name,
                    "steps": counter(directory),
                    "hparams": checkpoint.hparams,
                    "size": checkpoint.size_name,
                    "tokenizer": checkpoint.tokenizer_note,
                },
                indent=2,
            )
            + "\n"
        )
        if out.is_dir():
            out.rmdir()
        os.replace(work, out)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return checkpoint


def counter(directory: Path) -> int | None:
    """gpt-2-simple's `counter`: the number of steps trained, or None."""
    try:
        return int((directory / "counter").read_text().strip())
    except (OSError, ValueError):
        return None
