"""llama.cpp's own HF -> GGUF converter, from the llama-cpp-python release we run.

llama-cpp-python's source distribution carries the llama.cpp it was built
from, converter included (vendor/llama.cpp/convert_hf_to_gguf.py, its
conversion/ package and gguf-py). Taking the converter from the same release
as the runtime means a GGUF we write is always one that runtime can load;
a converter from another llama.cpp version can write files it cannot.

The three pieces are unpacked once per machine into the cache, keyed by the
release. Offline, point TELETYPE_GPT2_LLAMA_SDIST at the .tar.gz.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from convert.errors import ConversionError
from convert.paths import cache_dir

PACKAGE = "llama-cpp-python"
# What we need from the source distribution, relative to its vendor/llama.cpp.
WANTED = ("convert_hf_to_gguf.py", "conversion/", "gguf-py/gguf/")


def runtime_version() -> str:
    """The llama-cpp-python release installed beside us: the runtime the GGUF must suit."""
    try:
        return importlib.metadata.version(PACKAGE)
    except importlib.metadata.PackageNotFoundError as e:
        raise ConversionError(f"{PACKAGE} is not installed; run `make setup`") from e


def converter_dir(version: str | None = None) -> Path:
    """The unpacked converter for `version` (default: the runtime's), fetched if needed."""
    version = version or runtime_version()
    target = cache_dir() / f"llama.cpp-converter-{version}"
    if (target / "convert_hf_to_gguf.py").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as work:
        sdist = _source_distribution(version, Path(work))
        staging = Path(work) / "unpacked"
        _unpack(sdist, staging)
        # Another process may have won the race; either copy is the same.
        with contextlib.suppress(OSError):
            os.replace(staging, target)
    if not (target / "convert_hf_to_gguf.py").is_file():
        raise ConversionError(f"unpacking the converter into {target} failed")
    return target


def _source_distribution(version: str, work: Path) -> Path:
    local = os.environ.get("TELETYPE_GPT2_LLAMA_SDIST")
    if local:
        path = Path(local)
        if not path.is_file():
            raise ConversionError(f"TELETYPE_GPT2_LLAMA_SDIST={local}: no such file")
        return path
    # pip knows the package index this machine is set up for (and its
    # caches); the source distribution is the only file that has vendor/.
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--quiet",
        "--no-deps",
        "--no-binary",
        ":all:",
        f"{PACKAGE}=={version}",
        "--dest",
        str(work),
    ]
    result = subprocess.run(cmd, capture_output=True, text=True)
    found = sorted(work.glob("llama_cpp_python-*.tar.gz"))
    if result.returncode != 0 or not found:
        raise ConversionError(
            f"could not fetch the {PACKAGE}=={version} source distribution for its "
            f"GGUF converter (pip said: {result.stderr.strip()[-500:]}); "
            "set TELETYPE_GPT2_LLAMA_SDIST to a local copy"
        )
    return found[0]


def _unpack(sdist: Path, dest: Path) -> None:
    dest.mkdir(parents=True)
    with tarfile.open(sdist) as tar:
        root = None
        for member in tar.getmembers():
            parts = member.name.split("/", 1)
            if len(parts) < 2:
                continue
            inner = parts[1]
            marker = "vendor/llama.cpp/"
            if not inner.startswith(marker):
                continue
            rel = inner[len(marker) :]
            if not rel.startswith(WANTED) or not member.isfile():
                continue
            root = parts[0]
            out = dest / rel
            out.parent.mkdir(parents=True, exist_ok=True)
            source = tar.extractfile(member)
            if source is None:
                continue
            with source, out.open("wb") as f:
                shutil.copyfileobj(source, f)
    if root is None or not (dest / "convert_hf_to_gguf.py").is_file():
        raise ConversionError(f"{sdist} does not contain vendor/llama.cpp/convert_hf_to_gguf.py")


@contextlib.contextmanager
def gguf_module(version: str | None = None):
    """Import llama.cpp's gguf-py (the reader and name tables) from the converter's copy."""
    path = str(converter_dir(version) / "gguf-py")
    sys.path.insert(0, path)
    try:
        import gguf

        yield gguf
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(path)
