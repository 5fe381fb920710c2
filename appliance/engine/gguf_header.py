"""A GGUF file's header: its shape and size, read without loading a single weight.

The engine must know whether a model fits the board before llama.cpp maps
it, so this reads only the metadata and the table of tensors at the front
of the file (GGUF versions 2 and 3, little-endian): the architecture, the
context it was trained for, its width and depth, its vocabulary's size and
how many parameters it has.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from appliance.errors import ModelError

MAGIC = b"GGUF"
# Metadata value types and the sizes of the fixed-width ones.
_FIXED = {
    0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f",
    7: "<?", 10: "<Q", 11: "<q", 12: "<d",
}  # fmt: skip
_STRING, _ARRAY = 8, 9
# Header fields past these are not a model file (a 50,257-token vocabulary is
# about 1 MB of metadata; nothing real comes near these).
_MAX_STRING = 1 << 20
_MAX_COUNT = 1 << 24


@dataclass(frozen=True)
class ModelShape:
    architecture: str
    context_length: int
    embedding_length: int
    block_count: int
    head_count: int
    vocab_size: int
    parameters: int
    file_type: int | None
    file_size: int


class _Reader:
    def __init__(self, f: BinaryIO, path: Path) -> None:
        self.f, self.path = f, path

    def take(self, fmt: str):
        size = struct.calcsize(fmt)
        raw = self.f.read(size)
        if len(raw) != size:
            raise ModelError(f"{self.path} is truncated: its GGUF header ends early")
        return struct.unpack(fmt, raw)[0]

    def string(self) -> str:
        length = self.take("<Q")
        if length > _MAX_STRING:
            raise ModelError(f"{self.path}: a GGUF header string of {length} bytes")
        raw = self.f.read(length)
        if len(raw) != length:
            raise ModelError(f"{self.path} is truncated: its GGUF header ends early")
        return raw.decode("utf-8", errors="replace")

    def value(self, kind: int, keep: bool = True):
        if kind in _FIXED:
            return self.take(_FIXED[kind])
        if kind == _STRING:
            return self.string()
        if kind == _ARRAY:
            item_kind, count = self.take("<I"), self.take("<Q")
            if count > _MAX_COUNT:
                raise ModelError(f"{self.path}: a GGUF header array of {count} items")
            if item_kind in _FIXED and not keep:
                self.f.seek(count * struct.calcsize(_FIXED[item_kind]), 1)
                return count
            items = [self.value(item_kind, keep) for _ in range(count)]
            return items if keep else count
        raise ModelError(f"{self.path}: unknown GGUF metadata type {kind}")


def read_shape(path: Path) -> ModelShape:
    """The model's shape from its GGUF header; a ModelError for anything that is not one."""
    try:
        with path.open("rb") as f:
            r = _Reader(f, path)
            if f.read(4) != MAGIC:
                raise ModelError(f"{path} is not a GGUF model file (no GGUF magic)")
            version = r.take("<I")
            if version not in (2, 3):
                raise ModelError(f"{path}: GGUF version {version}, this engine reads 2 and 3")
            tensors, entries = r.take("<Q"), r.take("<Q")
            if tensors > _MAX_COUNT or entries > _MAX_COUNT:
                raise ModelError(f"{path}: a GGUF header with {tensors} tensors")
            meta: dict[str, object] = {}
            for _ in range(entries):
                key = r.string()
                kind = r.take("<I")
                # The vocabulary is only counted; every other value is kept.
                meta[key] = r.value(kind, keep=not key.startswith("tokenizer.ggml."))
            parameters = 0
            for _ in range(tensors):
                r.string()
                dims = [r.take("<Q") for _ in range(r.take("<I"))]
                r.take("<I")  # the tensor's type
                r.take("<Q")  # its offset
                count = 1
                for d in dims:
                    count *= d
                parameters += count
            size = path.stat().st_size
    except OSError as e:
        raise ModelError(f"cannot read {path}: {e.strerror or e}") from None
    arch = str(meta.get("general.architecture", "?"))

    def number(key: str) -> int:
        value = meta.get(f"{arch}.{key}")
        if not isinstance(value, int):
            raise ModelError(f"{path}: its GGUF header has no {arch}.{key}")
        return value

    vocab = meta.get("tokenizer.ggml.tokens")
    file_type = meta.get("general.file_type")
    return ModelShape(
        architecture=arch,
        context_length=number("context_length"),
        embedding_length=number("embedding_length"),
        block_count=number("block_count"),
        head_count=number("attention.head_count"),
        vocab_size=vocab if isinstance(vocab, int) else 0,
        parameters=parameters,
        file_type=file_type if isinstance(file_type, int) else None,
        file_size=size,
    )
