"""Shared fixtures: a small model built from the corpus in this test session.

The fidelity tests must run on a model made here, by the same pipeline as
the embedded one, not only on the committed file. It is tiny (two layers,
64 wide, a 1,024-token vocabulary) so the whole chain (corpus, tokenizer,
training, llama.cpp conversion, quantisation) takes well under a minute.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import settings

from appliance.testing.corpus import find_corpus, stand_in_corpus
from appliance.testing.engine_process import EngineProcess

# CI runs derandomised (HYPOTHESIS_PROFILE=ci in .ci/run): the same examples
# every time, so a red CI means a change broke something, not bad luck.
# No deadline in either: Hypothesis's 200 ms per example is a timed assertion,
# and on a machine busy with other work it failed a test that was right.
settings.register_profile("ci", derandomize=True, database=None, deadline=None)
settings.register_profile("dev", deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))

ROOT = Path(__file__).resolve().parent.parent
# The printer's pace where pacing is not what a test checks: a 60-character reply
# prints in a tenth of a second, not six. Tests of pacing keep the Teletype's own.
FAST = 100.0
EMBEDDED_MODEL = ROOT / "models" / "teletype-tiny.q8_0.gguf"

NO_CORPUS = (
    "the Teletype corpus is not on this machine (looked at $TELETYPE_CORPUS, "
    "../shared/corpus/teletype-manuals.txt and the download cache); this test needs it"
)


@pytest.fixture(scope="session")
def corpus_file() -> Path:
    found = find_corpus()
    if found is None:
        pytest.skip(NO_CORPUS)
    return found


# Enough text for the pipeline's mechanics; each pass over its validation part (the
# training's evaluations, the perplexity of seven model types) then takes seconds.
TRAINING_TEXT_CHARS = 100_000


@pytest.fixture(scope="session")
def training_text(tmp_path_factory) -> Path:
    """The start of the Teletype corpus if this machine has it, else of the stand-in
    (for tests of mechanics), cut at a line end."""
    folder = tmp_path_factory.mktemp("text")
    whole = find_corpus() or stand_in_corpus(folder / "stand-in.txt")
    text = whole.read_text(encoding="utf-8")
    cut = folder / "training-text.txt"
    cut.write_text(text[: text.rfind("\n", 0, TRAINING_TEXT_CHARS) + 1], encoding="utf-8")
    return cut


@dataclass
class TinyModel:
    corpus_dir: Path
    tokenizer_dir: Path
    hf_dir: Path
    f32: Path
    f16: Path
    q8_0: Path


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> TinyModel:
    from convert.corpus import prepare_corpus
    from convert.gguf import convert_to_gguf
    from convert.quantize import quantize
    from convert.tokenizer import train_tokenizer
    from convert.train import TrainConfig, train

    root = tmp_path_factory.mktemp("tiny-model")
    corpus = find_corpus()
    if corpus is None:
        corpus = stand_in_corpus(root / "stand-in.txt")
    prepared = prepare_corpus(str(corpus), root / "corpus", sha256=None)
    train_tokenizer(prepared.train, root / "tokenizer", vocab_size=1024)
    config = TrainConfig(
        out_dir=root / "hf",
        corpus_dir=root / "corpus",
        tokenizer_dir=root / "tokenizer",
        n_layer=2,
        n_head=2,
        n_embd=64,
        n_ctx=128,
        block_size=128,
        batch_size=8,
        learning_rate=3e-3,
        warmup_steps=10,
        max_steps=150,
        eval_interval=75,
        progress=False,
    )
    train(config)
    f32 = convert_to_gguf(config.out_dir, root / "gguf" / "model.f32.gguf", "f32")
    f16 = convert_to_gguf(config.out_dir, root / "gguf" / "model.f16.gguf", "f16")
    q8 = quantize(f16, root / "gguf" / "model.q8_0.gguf", "q8_0")
    return TinyModel(root / "corpus", root / "tokenizer", config.out_dir, f32, f16, q8)


@pytest.fixture
def isolated_cache(tmp_path, monkeypatch) -> Path:
    """A fresh download cache, restored afterwards (corpus and converter downloads)."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("TELETYPE_GPT2_CACHE", str(cache))
    return cache


@pytest.fixture(scope="session", autouse=True)
def _threads():
    """Under pytest-xdist (`make test`) each worker, and all it starts, runs on its own
    share of the cores.

    llama.cpp's threads wait for each other at every step, spinning: with a
    thread per core in each worker (and in each engine a worker starts), a
    thread that lost its core held up the rest, and a perplexity that takes
    3 s alone took 51 s in the suite. The engine and the converter run a
    thread per core they may use (appliance/engine/llama_open.py).
    """
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    cores = sorted(os.sched_getaffinity(0))
    if workers > 1 and worker.startswith("gw"):
        share = max(1, len(cores) // workers)
        first = int(worker[2:]) * share % len(cores)
        os.sched_setaffinity(0, cores[first : first + share])
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, len(cores) // workers)))


# The groups `make test` hands out first, longest first: seconds on one of four workers
# (measured 2026-12-07). Handed out last, the soak alone kept the suite going for its
# minute and a half after the rest had finished. A group not named here only starts
# later; a stale figure costs time, never a result (tests/test_suite_grouping.py
# checks that each names a group that exists).
LONGEST_FIRST = {
    "tests/test_chat_soak.py": 85,
    "tests/test_gpt2_simple.py": 84,
    "tests/test_panel.py": 72,
    "tiny-model": 53,
    "tests/test_chat.py": 53,
    "tests/test_chat_health.py": 43,
    "tests/test_engine_faults.py": 42,
    "tests/test_engine.py": 41,
    "tests/test_whereabouts.py": 40,
    "tests/test_button.py": 39,
}


def suite_group(item: pytest.Item) -> str:
    return "tiny-model" if "tiny_model" in item.fixturenames else item.nodeid.split("::")[0]


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items):
    """Groups for pytest-xdist's --dist loadgroup: a file's tests stay together (its
    module fixtures are made once), and so do all that use the session's tiny model.
    The longest groups come first (the Makefile keeps this order: --no-loadscope-reorder).

    First of the hook's implementations: xdist's own reads the marks into the
    node ids, and run after it they came too late and every test was scheduled
    alone (tests/test_suite_grouping.py).
    """
    for item in items:
        item.add_marker(pytest.mark.xdist_group(suite_group(item)))
    items.sort(key=lambda item: -LONGEST_FIRST.get(suite_group(item), 0))  # stable


@pytest.fixture
def teletype(tmp_path):
    """A pty behind a stable name, as /dev/teletype would be (a udev symlink)."""
    from appliance.testing.wire import PtyReader

    reader = PtyReader()
    link = tmp_path / "ttyTELETYPE"
    link.symlink_to(reader.name)
    reader.link = link
    yield reader
    with contextlib.suppress(OSError):
        reader.close()


@pytest.fixture
def start_engine(tmp_path, teletype):
    """Starts real `teletype serve` processes; each is closed when the test ends.

    start_engine(port=None, *, speed=FAST, started=True, tmp=tmp_path, **options)
    prints to the `teletype` pty unless given a port ("file:PATH", a device),
    at FAST unless the test is about pacing (speed=1); options are
    EngineProcess's (max_chars, engine_extra, model_extra, env).
    """
    engines: list[EngineProcess] = []

    def start(
        port: str | None = None,
        *,
        speed: float = FAST,
        started: bool = True,
        tmp: Path | None = None,
        **options,
    ) -> EngineProcess:
        engine = EngineProcess(tmp or tmp_path, port or str(teletype.link), speed=speed, **options)
        engines.append(engine)
        return engine.start() if started else engine

    yield start
    for engine in engines:
        engine.close()


@pytest.fixture
def engine(request, start_engine) -> EngineProcess:
    """A running engine on the `teletype` pty, with the options of the nearest
    `@pytest.mark.engine(...)` (a test's own over its module's `pytestmark`)."""
    options: dict = {}
    for marker in reversed(list(request.node.iter_markers("engine"))):
        options.update(marker.kwargs)
    return start_engine(**options)


@pytest.fixture(scope="session")
def embedded_generator():
    """The embedded model, loaded once, for the tests that run the engine in this process."""
    from appliance.config import Config
    from appliance.engine.generator import load_generator

    generator = load_generator(Config().model)
    yield generator
    generator.close()
