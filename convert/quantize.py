"""Step 6: GGUF (F16 or F32) -> the quantised types a Pi runs, with llama.cpp's own quantiser."""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

from convert.errors import ConversionError

# Our names for the types, and llama.cpp's file types behind them.
QUANT_TYPES = {
    "q8_0": "LLAMA_FTYPE_MOSTLY_Q8_0",
    "q6_k": "LLAMA_FTYPE_MOSTLY_Q6_K",
    "q5_k_m": "LLAMA_FTYPE_MOSTLY_Q5_K_M",
    "q4_k_m": "LLAMA_FTYPE_MOSTLY_Q4_K_M",
}
DEFAULT_TYPES = tuple(QUANT_TYPES)


def quantize(source: Path, out: Path, quant_type: str = "q8_0", threads: int | None = None) -> Path:
    """Write `out`, the `quant_type` quantisation of `source`.

    The K-quants work on blocks of 256 values; a row whose length is not a
    multiple of 256 (narrow test models) falls back to a compatible type for
    that tensor, as llama.cpp decides.
    """
    import llama_cpp

    from appliance.engine.llama_open import cores_to_use

    if quant_type not in QUANT_TYPES:
        raise ConversionError(
            f"quant type must be one of {', '.join(QUANT_TYPES)}, not {quant_type!r}"
        )
    if not source.is_file():
        raise ConversionError(f"GGUF not found: {source}")
    out.parent.mkdir(parents=True, exist_ok=True)
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, QUANT_TYPES[quant_type])
    params.nthread = threads or cores_to_use()
    partial = out.with_name(out.name + ".part")
    status = llama_cpp.llama_model_quantize(
        str(source).encode(), str(partial).encode(), ctypes.byref(params)
    )
    if status != 0 or not partial.is_file():
        partial.unlink(missing_ok=True)
        raise ConversionError(
            f"llama.cpp could not quantise {source} to {quant_type} (status {status})"
        )
    os.replace(partial, out)
    return out


def quantize_all(
    source: Path, out_dir: Path, types=DEFAULT_TYPES, stem: str = "model"
) -> list[Path]:
    return [quantize(source, out_dir / f"{stem}.{t}.gguf", t) for t in types]
