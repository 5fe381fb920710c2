"""TensorFlow's checkpoint format (a "tensor bundle"), read with numpy alone.

A checkpoint `PREFIX` is two kinds of file:

- `PREFIX.index`: a LevelDB-style sorted table. Its entry under the empty
  key is a BundleHeaderProto (number of shards, byte order); every other
  key is a variable's name and its value a BundleEntryProto (dtype, shape,
  shard, offset, size, crc32c of the bytes).
- `PREFIX.data-0000K-of-0000N`: the tensors' raw bytes, one after another.

Both layers are small enough to decode here (the protobuf wire format is
five field types), so importing a gpt-2-simple checkpoint never needs
TensorFlow, which is a 600 MB install and has no wheel for every Python a
user might have. Every tensor's crc32c is checked as it is read.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from convert.errors import CheckpointError

# LevelDB's table magic, which TensorFlow's table format keeps.
TABLE_MAGIC = 0xDB4775248B80FB57
FOOTER_SIZE = 48
BLOCK_TRAILER_SIZE = 5  # one byte of compression type, four of masked crc32c

# TensorFlow's DataType enum, for the types a checkpoint of weights holds.
DTYPES: dict[int, np.dtype] = {
    1: np.dtype("<f4"),  # DT_FLOAT
    2: np.dtype("<f8"),  # DT_DOUBLE
    3: np.dtype("<i4"),  # DT_INT32
    4: np.dtype("u1"),  # DT_UINT8
    5: np.dtype("<i2"),  # DT_INT16
    6: np.dtype("i1"),  # DT_INT8
    9: np.dtype("<i8"),  # DT_INT64
    10: np.dtype("?"),  # DT_BOOL
    19: np.dtype("<f2"),  # DT_HALF
}
DT_BFLOAT16 = 14
DTYPE_NAMES = {1: "float32", 2: "float64", 3: "int32", 7: "string", 9: "int64", 14: "bfloat16"}


@dataclass(frozen=True)
class Entry:
    """Where one tensor lies, as the index says."""

    name: str
    dtype: int
    shape: tuple[int, ...]
    shard: int
    offset: int
    size: int
    crc32c: int | None
    sliced: bool


# --- the protobuf wire format -------------------------------------------------------------


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise ValueError("varint runs past the end")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def _fields(buf: bytes) -> list[tuple[int, int, int | bytes]]:
    """(field number, wire type, value) for each field of one message."""
    out: list[tuple[int, int, int | bytes]] = []
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        value: int | bytes
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            value = struct.unpack_from("<Q", buf, pos)[0]
            pos += 8
        elif wire == 2:
            length, pos = _varint(buf, pos)
            value = buf[pos : pos + length]
            if len(value) != length:
                raise ValueError("field runs past the end")
            pos += length
        elif wire == 5:
            value = struct.unpack_from("<I", buf, pos)[0]
            pos += 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
        out.append((number, wire, value))
    return out


def _shape(buf: bytes) -> tuple[int, ...]:
    dims = []
    for number, _, value in _fields(buf):
        if number == 2:  # TensorShapeProto.dim
            size = 0
            for n, _, v in _fields(value):  # type: ignore[arg-type]
                if n == 1:
                    size = int(v)  # type: ignore[arg-type]
            dims.append(size)
        elif number == 3 and value:  # unknown_rank
            raise ValueError("a tensor of unknown rank")
    return tuple(dims)


def _entry(name: str, buf: bytes) -> Entry:
    dtype = shard = offset = size = 0
    shape: tuple[int, ...] = ()
    crc: int | None = None
    sliced = False
    for number, _, value in _fields(buf):
        if number == 1:
            dtype = int(value)  # type: ignore[arg-type]
        elif number == 2:
            shape = _shape(value)  # type: ignore[arg-type]
        elif number == 3:
            shard = int(value)  # type: ignore[arg-type]
        elif number == 4:
            offset = int(value)  # type: ignore[arg-type]
        elif number == 5:
            size = int(value)  # type: ignore[arg-type]
        elif number == 6:
            crc = int(value)  # type: ignore[arg-type]
        elif number == 7:
            sliced = True
    return Entry(name, dtype, shape, shard, offset, size, crc, sliced)


# --- the sorted table ---------------------------------------------------------------------


def _block_handle(buf: bytes, pos: int) -> tuple[int, int, int]:
    offset, pos = _varint(buf, pos)
    size, pos = _varint(buf, pos)
    return offset, size, pos


def _block(data: bytes, offset: int, size: int, what: str) -> bytes:
    import crc32c

    end = offset + size + BLOCK_TRAILER_SIZE
    if end > len(data):
        raise ValueError(f"{what} block runs past the end of the file")
    contents = data[offset : offset + size]
    kind = data[offset + size]
    stored = struct.unpack_from("<I", data, offset + size + 1)[0]
    if mask(crc32c.crc32c(contents + bytes([kind]))) != stored:
        raise ValueError(f"{what} block fails its checksum")
    if kind != 0:
        raise ValueError(f"{what} block is compressed (type {kind}), which bundles never are")
    return contents


def _block_entries(block: bytes) -> list[tuple[bytes, bytes]]:
    if len(block) < 4:
        raise ValueError("block too short")
    restarts = struct.unpack_from("<I", block, len(block) - 4)[0]
    end = len(block) - 4 - 4 * restarts
    if end < 0:
        raise ValueError("block's restart array runs past its start")
    entries = []
    pos, key = 0, b""
    while pos < end:
        shared, pos = _varint(block, pos)
        unshared, pos = _varint(block, pos)
        length, pos = _varint(block, pos)
        if shared > len(key) or pos + unshared + length > end:
            raise ValueError("block entry runs past its end")
        key = key[:shared] + block[pos : pos + unshared]
        pos += unshared
        entries.append((key, block[pos : pos + length]))
        pos += length
    return entries


def read_table(data: bytes) -> list[tuple[bytes, bytes]]:
    """Every (key, value) of a LevelDB-style table, in key order."""
    if len(data) < FOOTER_SIZE:
        raise ValueError(f"{len(data)} bytes, shorter than a table's footer")
    footer = data[-FOOTER_SIZE:]
    if struct.unpack_from("<Q", footer, FOOTER_SIZE - 8)[0] != TABLE_MAGIC:
        raise ValueError("no table footer (wrong magic number)")
    _, _, pos = _block_handle(footer, 0)  # the meta-index: bundles put nothing in it
    index_offset, index_size, _ = _block_handle(footer, pos)
    entries = []
    for _, handle in _block_entries(_block(data, index_offset, index_size, "index")):
        offset, size, _ = _block_handle(handle, 0)
        entries += _block_entries(_block(data, offset, size, "data"))
    return entries


# --- crc32c as TensorFlow stores it -------------------------------------------------------

_MASK_DELTA = 0xA282EAD8


def mask(crc: int) -> int:
    """LevelDB's masking, which keeps a crc of data that holds crcs from looking like one."""
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + _MASK_DELTA) & 0xFFFFFFFF


def unmask(masked: int) -> int:
    rot = (masked - _MASK_DELTA) & 0xFFFFFFFF
    return ((rot >> 17) | (rot << 15)) & 0xFFFFFFFF


# --- the bundle ---------------------------------------------------------------------------


class Bundle:
    """One checkpoint: its index read at once, tensors read (and checked) on demand."""

    def __init__(self, prefix: Path) -> None:
        self.prefix = prefix
        index = prefix.with_name(prefix.name + ".index")
        if not index.is_file():
            raise CheckpointError(f"{index} not found")
        try:
            rows = read_table(index.read_bytes())
        except (ValueError, struct.error) as e:
            raise CheckpointError(f"{index} is not a TensorFlow checkpoint index: {e}") from None
        self.num_shards = 1
        self.entries: dict[str, Entry] = {}
        try:
            for key, value in rows:
                if key == b"":
                    self._header(value, index)
                else:
                    name = key.decode("utf-8")
                    self.entries[name] = _entry(name, value)
        except (ValueError, UnicodeDecodeError) as e:
            raise CheckpointError(f"{index}: an entry cannot be read: {e}") from None

    def _header(self, value: bytes, index: Path) -> None:
        for number, _, v in _fields(value):
            if number == 1:
                self.num_shards = int(v)  # type: ignore[arg-type]
            elif number == 2 and v == 1:
                raise CheckpointError(f"{index}: a big-endian checkpoint, which is not supported")

    def shard_path(self, shard: int) -> Path:
        return self.prefix.with_name(
            f"{self.prefix.name}.data-{shard:05d}-of-{self.num_shards:05d}"
        )

    def read(self, name: str) -> np.ndarray:
        """The tensor `name`, after checking its length and its crc32c."""
        import crc32c

        entry = self.entries[name]
        if entry.sliced:
            raise CheckpointError(f"{name} is saved in slices (a partitioned variable)")
        if entry.dtype == DT_BFLOAT16:
            dtype = np.dtype("<u2")
        elif entry.dtype in DTYPES:
            dtype = DTYPES[entry.dtype]
        else:
            kind = DTYPE_NAMES.get(entry.dtype, f"type {entry.dtype}")
            raise CheckpointError(f"{name} holds {kind}, not numbers this step reads")
        count = int(np.prod(entry.shape, dtype=np.int64))
        if count * dtype.itemsize != entry.size:
            raise CheckpointError(
                f"{name}: the index gives {entry.size} bytes for shape {list(entry.shape)}"
            )
        path = self.shard_path(entry.shard)
        if not path.is_file():
            raise CheckpointError(f"{path.name} is missing (it holds {name})")
        with path.open("rb") as f:
            f.seek(entry.offset)
            raw = f.read(entry.size)
        if len(raw) != entry.size:
            raise CheckpointError(
                f"{path.name} is truncated: {name} needs bytes {entry.offset} to "
                f"{entry.offset + entry.size}, the file has {path.stat().st_size}"
            )
        if entry.crc32c is not None and unmask(entry.crc32c) != crc32c.crc32c(raw):
            raise CheckpointError(f"{name} fails its crc32c check: {path.name} is damaged")
        array = np.frombuffer(raw, dtype=dtype).reshape(entry.shape)
        if entry.dtype == DT_BFLOAT16:  # the top half of a float32
            array = (array.astype(np.uint32) << 16).view(np.float32)
        return array
