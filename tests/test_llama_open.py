"""The model opens and writes on this machine's llama.cpp build, AMX or not.

On a CPU with AMX (this kind of machine, since December 2026) a native
llama.cpp build crashed the process at the first decode (llama.cpp issue
20824): every test that generated a word died with a segmentation fault.
The checks run in a child process, so a crash is a failure, not the end
of the test run.
"""

from __future__ import annotations

import subprocess
import sys

from appliance.engine.llama_open import build_has_amx
from tests.conftest import EMBEDDED_MODEL, ROOT

# llama_print_system_info() of two builds: an x86 one made on an AMX machine, and the Pi's.
X86_AMX = (
    "CPU : SSE3 = 1 | SSSE3 = 1 | AVX = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | AVX512 = 1 | "
    "AVX512_VNNI = 1 | AVX512_BF16 = 1 | AMX_INT8 = 1 | LLAMAFILE = 1 | OPENMP = 1 | REPACK = 1 | "
)
PI_ARM = "CPU : NEON = 1 | ARM_FMA = 1 | FP16_VA = 1 | DOTPROD = 1 | LLAMAFILE = 1 | REPACK = 1 | "


def test_only_a_build_with_amx_loads_without_the_extra_buffers():
    assert build_has_amx(X86_AMX)
    assert not build_has_amx(PI_ARM)  # the Pi keeps its repacked weights
    assert not build_has_amx(X86_AMX.replace("AMX_INT8 = 1", "AMX_INT8 = 0"))


def run_child(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )


def test_the_engines_generator_writes_in_a_process_of_its_own():
    done = run_child(
        "from pathlib import Path\n"
        "from appliance.engine.generator import Generator\n"
        f"g = Generator(Path({str(EMBEDDED_MODEL)!r}), threads=2)\n"
        "assert g.prepare('THE TELETYPE')\n"
        "text = ''.join(g.stream('THE TELETYPE', 40))\n"
        "print(repr(text))\n"
    )
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stderr[-2000:]}"
    assert done.stdout.strip() not in ("", "''")


def test_the_converters_evaluation_opens_the_model_and_decodes():
    done = run_child(
        "from pathlib import Path\n"
        "from convert.evaluate import load_llama\n"
        f"llm = load_llama(Path({str(EMBEDDED_MODEL)!r}), n_ctx=64)\n"
        "llm.eval(llm.tokenize(b'THE KEYBOARD SENDS'))\n"
        "print(llm.n_tokens)\n"
    )
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stderr[-2000:]}"
    assert int(done.stdout) > 0


def test_the_generator_runs_a_thread_per_core_it_may_use():
    """Under taskset, a systemd CPUAffinity= or a test worker's share, llama.cpp runs as
    many threads as there are cores to run them (os.cpu_count() counts every core of
    the machine, and threads beyond the share wait on each other at every step)."""
    done = run_child(
        "import os\n"
        "from pathlib import Path\n"
        "os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})\n"
        "from appliance.engine.generator import Generator\n"
        f"g = Generator(Path({str(EMBEDDED_MODEL)!r}))\n"
        "print(g.llm.n_threads, os.cpu_count())\n"
    )
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stderr[-2000:]}"
    threads, _machine = map(int, done.stdout.split())
    assert threads == 1
