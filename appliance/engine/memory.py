"""Will this model fit this board? Asked at start, before llama.cpp maps a byte of it.

A model too big for the board is not refused by llama.cpp: it maps the
file, starts generating, and the kernel kills the engine mid-print once the
weights, the KV cache and the scratch buffers outgrow the memory the board
has. So the engine adds up what the model will take (from its GGUF header)
and compares it with MemAvailable, and refuses at once (exit 78, one line
naming a quantisation that would fit) instead.

What a model takes, measured in the emulated Pi and here (README, "Which
model on which board"):
- its weights: the whole file, memory-mapped (mmap, never mlock): every
  page is read for every token, so all of it stays resident; mapped pages
  are page cache, which the kernel could drop, but only to read them back
  for the next token;
- the KV cache: two F16 tensors per layer, context x width;
- llama.cpp's compute buffer, which grows with the batch (prompt tokens
  evaluated at once) and the context.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from appliance.engine.gguf_header import ModelShape, read_shape
from appliance.errors import ModelError

MB = 1_000_000
# The engine's batch: prompt tokens evaluated in one pass. llama.cpp sizes
# its compute buffer for a whole batch of logits over GPT-2's 50,257-token
# vocabulary: 103 MB at 512 (its default), 26 MB at 128, for 124M and 355M
# alike. On a 512 MB board those 77 MB decide whether 124M fits at all; a
# 400-token prompt is evaluated in four passes instead of one.
BATCH = 128
# Room left to the kernel and the other units beyond the model's own need:
# a reply's token buffers, Python's growth, the page cache the OS needs.
HEADROOM = 24 * MB

# Bytes a parameter takes in each quantisation: whole files over
# parameters, for GPT-2 124M (the larger ratio of the two measured; 355M:
# 1.077, 0.836, 0.756, 0.69), for naming a type that would fit.
BYTES_PER_PARAMETER = {
    "q8_0": 1.093,
    "q6_k": 0.853,
    "q5_k_m": 0.789,
    "q4_k_m": 0.728,
}


@dataclass(frozen=True)
class Board:
    name: str
    # MemAvailable (MB) with every unit running, the engine with no model
    # loaded yet, as measured in the emulated Pi with the board's memory.
    mem_available_mb: int


# MemAvailable measured by `make board-fit` in the emulated Pi, every unit
# running, just after boot, with Linux given what Raspberry Pi OS leaves it
# on each board (MemTotal 411, 902 and 1906 MB there).
BOARDS = (
    Board("Zero 2 W, 3 A+ (512 MB)", 279),
    Board("3 B, 3 B+, 4 (1 GB)", 669),
    Board("4, 5 (2 GB and more)", 1610),
)


def kv_cache_bytes(shape: ModelShape, context: int) -> int:
    return 2 * context * shape.block_count * shape.embedding_length * 2


def compute_bytes(shape: ModelShape, batch: int = BATCH) -> int:
    """llama.cpp's CPU compute buffer for a GPT-2 with flash attention.

    It holds a batch's logits (a float for every token of the vocabulary,
    for every token of the batch) and a few rows of activations; with flash
    attention it does not grow with the context. This matches the sizes
    llama.cpp reports to within 1%: 25.67 MiB for GPT-2 124M at batch 128,
    102.66 MiB at 512, and 8.56 MiB for the embedded model at 256.
    """
    return batch * 4 * (shape.vocab_size + 3 * shape.embedding_length)


def need_bytes(
    shape: ModelShape, context: int | None = None, batch: int = BATCH, weights: int | None = None
) -> int:
    """What loading and running this model adds to the engine's memory: its weights (the
    file, unless `weights` says otherwise), the KV cache and the compute buffers."""
    ctx = context or shape.context_length
    weights = shape.file_size if weights is None else weights
    return weights + kv_cache_bytes(shape, ctx) + compute_bytes(shape, batch)


def need_for_type(shape: ModelShape, quant: str, context: int | None = None) -> int:
    """need_bytes for the same model quantised to `quant`."""
    return need_bytes(shape, context, weights=int(shape.parameters * BYTES_PER_PARAMETER[quant]))


def mem_available(meminfo: Path = Path("/proc/meminfo")) -> int | None:
    """MemAvailable in bytes, or None where the kernel does not say."""
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def check_fits(path: Path, available: int | None, context: int | None = None) -> ModelShape:
    """The model's shape; a ModelError (exit 78) naming a type that fits, if it does not."""
    shape = read_shape(path)
    if available is None:
        return shape
    need = need_bytes(shape, context)
    if need + HEADROOM <= available:
        return shape
    advice = _advice(shape, available, context)
    raise ModelError(
        f"{path.name} needs about {need / MB:.0f} MB and this board has "
        f"{available / MB:.0f} MB available: {advice}"
    )


def _advice(shape: ModelShape, available: int, context: int | None) -> str:
    for quant in BYTES_PER_PARAMETER:
        smaller = int(shape.parameters * BYTES_PER_PARAMETER[quant]) < shape.file_size * 0.95
        if smaller and need_for_type(shape, quant, context) + HEADROOM <= available:
            return (
                f"its {quant.upper()} quantisation would fit "
                f"(python -m convert quantize --types {quant}), or a board with more memory"
            )
    return (
        "no quantisation of it fits; use a smaller model (GPT-2 124M) or a board with more memory"
    )


def fit_report(shape: ModelShape, available_mb: int) -> str:
    """One cell of the model card's table: yes, with the margin, or no."""
    need = need_bytes(shape) + HEADROOM
    spare = available_mb * MB - need
    if spare >= 0:
        return f"yes ({need / MB:.0f} MB of {available_mb} MB available)"
    return f"no (needs {need / MB:.0f} MB, {available_mb} MB available)"
