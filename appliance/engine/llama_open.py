"""Opening a GGUF with llama-cpp-python, on every machine it is built for.

llama.cpp built for an x86 CPU with AMX (Intel Xeon from Sapphire Rapids
on, and the cloud machines made of them) moves the weights into an "AMX
buffer" at load, and its first decode then crashes the whole process with
a segmentation fault: llama.cpp issue 20824, with a fix proposed in pull
request 26954 (the worker threads never ask Linux for AMX's tile state).
`make setup` builds llama.cpp for the CPU it runs on, so on such a machine
`make demo` and every test that generated a word died.

The AMX buffer is one of llama.cpp's "extra buffer types", which repack
weights for the CPU's wider instructions. Where the build has AMX we load
without them: the weights stay as the GGUF has them and the plain CPU code
reads them (the Pi's ARM builds never have AMX, and keep the repacking).
Llama() has no argument for it, so its model parameters are made with the
flag cleared, for the one call that opens the model.
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# Llama() reads the parameters' defaults through the module; one opening at a time
# may change them.
_opening = threading.Lock()


def cores_to_use() -> int:
    """The cores this process may run on (a systemd CPUAffinity=, taskset or a test
    worker's share), where os.cpu_count() says every core of the machine: llama.cpp
    threads beyond them wait on each other at every step."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1


def build_has_amx(system_info: str) -> bool:
    """Whether llama.cpp was built with its AMX path, from llama_print_system_info()."""
    return "AMX_INT8 = 1" in system_info


@functools.cache  # the build cannot change while the process runs
def extra_buffers_safe() -> bool:
    """False where this llama.cpp's extra buffer types include the AMX one."""
    import llama_cpp

    return not build_has_amx(llama_cpp.llama_print_system_info().decode(errors="replace"))


@contextlib.contextmanager
def _without_extra_buffers() -> Iterator[None]:
    # Llama() calls llama_model_default_params() of the bindings module itself.
    import llama_cpp.llama_cpp as bindings

    defaults = bindings.llama_model_default_params

    def without():
        params = defaults()
        params.use_extra_bufts = False
        return params

    bindings.llama_model_default_params = without
    try:
        yield
    finally:
        bindings.llama_model_default_params = defaults


def open_llama(path: Path | str, **settings: Any):
    """llama_cpp.Llama(model_path=path, **settings), without the AMX buffer where
    the build has one."""
    from llama_cpp import Llama

    with _opening, contextlib.nullcontext() if extra_buffers_safe() else _without_extra_buffers():
        return Llama(model_path=str(path), **settings)
