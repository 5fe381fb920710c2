"""Importing a gpt-2-simple checkpoint, proved against TensorFlow and gpt-2-simple themselves.

TensorFlow writes the checkpoints (tests/gpt2_simple_reference.py, with
gpt-2-simple's own model code and Saver, as its `finetune` saves) and says
what the logits are; the import step, which never imports TensorFlow,
turns them into a GGUF that llama.cpp must run to the same logits. The
tokenizer is checked the same way: gpt-2-simple's encoder against
llama.cpp's on the corpus. Then every kind of bad input the issue names.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from convert.errors import CheckpointError, ConversionError
from convert.gpt2_simple import import_checkpoint, open_checkpoint
from convert.import_model import import_to_gguf
from convert.tf_bundle import Bundle, mask

ROOT = Path(__file__).resolve().parent.parent
GPT2_VOCAB = ROOT.parent / "shared" / "gpt2-vocab"
REFERENCE = Path(__file__).with_name("gpt2_simple_reference.py")
NO_TF = (
    "TensorFlow and gpt-2-simple are not installed in this environment; `make test` installs "
    "them (pip install -e '.[tf-reference]'), and without them the import cannot be "
    "checked against the real thing"
)
TINY = {"n_vocab": 50257, "n_ctx": 64, "n_embd": 64, "n_head": 4, "n_layer": 2}
GPT2_124M = {"n_vocab": 50257, "n_ctx": 1024, "n_embd": 768, "n_head": 12, "n_layer": 12}
# Token ids in GPT-2's vocabulary, end-of-text among them (what they spell does not matter to
# random weights; every position's logits are compared).
SEQUENCES = [
    [464, 1665, 4906, 9104, 4747, 20842, 379, 3478, 3435, 257, 1218, 13],
    [50256, 7, 1026, 318, 257, 1332, 13, 198, 32, 33, 34],
]


def _has_tensorflow() -> bool:
    probe = "import tensorflow, gpt_2_simple"
    return subprocess.run([sys.executable, "-c", probe], capture_output=True).returncode == 0


def run_reference(spec: dict, work: Path) -> list[dict]:
    if not GPT2_VOCAB.is_dir():
        pytest.skip(f"GPT-2's tokenizer files are not at {GPT2_VOCAB}")
    spec = {**spec, "vocab_dir": str(GPT2_VOCAB), "result": str(work / "result.json")}
    (work / "spec.json").write_text(json.dumps(spec))
    done = subprocess.run(
        [sys.executable, str(REFERENCE), str(work / "spec.json")], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((work / "result.json").read_text())


@pytest.fixture(scope="module")
def tensorflow_available() -> None:
    if not _has_tensorflow():
        pytest.skip(NO_TF)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tensorflow_available, corpus_lines) -> dict:
    """A tiny gpt-2-simple run, another model's checkpoint, an optimizer-only one, a SavedModel."""
    work = tmp_path_factory.mktemp("gpt2-simple")
    spec = {
        "runs": [
            {
                "out": str(work / "checkpoint" / "run1"),
                "hparams": TINY,
                "seed": 7,
                "step": 1000,
                "sequences": SEQUENCES,
                "lines": corpus_lines,
            }
        ],
        "others": [
            {
                "out": str(work / "bert" / "model"),
                "variables": {"bert/embeddings/word_embeddings": [100, 16], "bert/pooler/b": [16]},
            },
            {
                "out": str(work / "slots" / "model"),
                "variables": {"model/wte/Adam": [100, 16], "model/wte/Adam_1": [100, 16]},
            },
        ],
        "saved_model": str(work / "saved"),
    }
    result = run_reference(spec, work)[0]
    return {"work": work, "run": work / "checkpoint" / "run1", **result}


@pytest.fixture(scope="module")
def corpus_lines() -> list[str]:
    from appliance.testing.corpus import find_corpus

    corpus = find_corpus()
    text = corpus.read_text(encoding="utf-8") if corpus else Path(__file__).read_text()
    lines = [line for line in text.splitlines() if line.strip() and "<|endoftext|>" not in line]
    # Every 37th line across the whole text (300 of them), and a few hostile ones.
    picked = lines[:: max(1, len(lines) // 300)][:300]
    return [*picked, "naïve café — “quotes” 😀", "  two  spaces\tand a tab", "UPPER lower 1234"]


def llama_logits(gguf: Path, sequences: list[list[int]], n_ctx: int) -> list[np.ndarray]:
    from appliance.engine.llama_open import open_llama

    llm = open_llama(gguf, n_ctx=n_ctx, logits_all=True, verbose=False, seed=0)
    out = []
    for ids in sequences:
        llm.reset()
        llm.eval(ids)
        out.append(np.array(llm.scores[: len(ids)], dtype=np.float64))
    return out


def assert_same_logits(ours: list[np.ndarray], theirs: list, tolerance: float = 1e-3) -> None:
    for got, want in zip(ours, theirs, strict=True):
        want = np.array(want, dtype=np.float64)
        assert got.shape == want.shape
        scale = float(np.abs(want).max())
        worst = float(np.abs(got - want).max())
        assert worst <= tolerance * scale, f"largest difference {worst:.3g}, logit {scale:.3g}"
        assert (got.argmax(-1) == want.argmax(-1)).all(), "a different top token"


# --- the real thing -----------------------------------------------------------------------


@pytest.mark.slow
def test_imported_gguf_gives_tensorflows_logits(reference, tmp_path):
    gguf, card = import_to_gguf(reference["run"], tmp_path / "tiny.f32.gguf", "f32")
    assert_same_logits(llama_logits(gguf, SEQUENCES, TINY["n_ctx"]), reference["logits"])
    assert "gpt-2-simple" in card.read_text() and "sha256" in card.read_text()


@pytest.mark.slow
def test_gpt2_simple_encoder_and_llama_tokenizer_agree(reference, tmp_path, corpus_lines):
    from appliance.engine.llama_open import open_llama

    gguf, _ = import_to_gguf(reference["run"], tmp_path / "tiny.f32.gguf", "f32")
    llm = open_llama(gguf, vocab_only=True, verbose=False)
    mismatched = [
        line
        for line, ids in zip(corpus_lines, reference["ids"], strict=True)
        if llm.tokenize(line.encode(), add_bos=False, special=False) != ids
    ]
    assert not mismatched, mismatched[:3]
    assert len(corpus_lines) > 250


@pytest.mark.slow
def test_quantised_import_runs_and_keeps_the_top_token_mostly(reference, tmp_path):
    gguf, _ = import_to_gguf(reference["run"], tmp_path / "tiny.q8_0.gguf", "q8_0")
    got = llama_logits(gguf, SEQUENCES, TINY["n_ctx"])
    for ours, theirs in zip(got, reference["logits"], strict=True):
        agree = (ours.argmax(-1) == np.array(theirs).argmax(-1)).mean()
        assert agree >= 0.8, f"Q8_0 keeps the top token at only {agree:.0%} of positions"


def cached_reference(name: str, run_spec: dict) -> tuple[Path, dict]:
    """A reference run kept between test sessions, keyed by everything that goes into it.

    TensorFlow takes most of a minute to make and save 124M random weights;
    what it made is the same for the same script, spec and TensorFlow, so
    it is made once per machine (in the pipeline's cache, outside the
    checkout). The import and llama.cpp, which are under test, run every time.
    """
    from importlib.metadata import version

    from convert.paths import cache_dir

    key = hashlib.sha256(
        REFERENCE.read_bytes()
        + json.dumps(run_spec, sort_keys=True).encode()
        + version("tensorflow").encode()
        + version("gpt-2-simple").encode()
    ).hexdigest()[:16]
    home = cache_dir() / "gpt2-simple-reference" / f"{name}-{key}"
    if not (home / "result.json").is_file():
        home.parent.mkdir(parents=True, exist_ok=True)
        building = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=home.parent))
        try:
            spec = {"runs": [{**run_spec, "out": str(building / "run1")}]}
            result = run_reference(spec, building)[0]
            (building / "result.json").write_text(json.dumps(result))
            building.rename(home)
        finally:
            shutil.rmtree(building, ignore_errors=True)
    return home / "run1", json.loads((home / "result.json").read_text())


@pytest.mark.slow
def test_the_real_124m_shape(tensorflow_available, tmp_path):
    """GPT-2 small's real shape (124M parameters, random weights) through the whole import."""
    run_spec = {
        "hparams": GPT2_124M,
        "seed": 3,
        "step": 10000,
        "sequences": SEQUENCES[:1],
        "lines": [],
    }
    run, reference = cached_reference("124M", run_spec)
    checkpoint, _ = open_checkpoint(run)
    assert checkpoint.size_name == "124M"
    gguf, card = import_to_gguf(run, tmp_path / "gpt2.f32.gguf", "f32")
    assert_same_logits(llama_logits(gguf, SEQUENCES[:1], 1024), reference["logits"])
    assert "124M" in card.read_text()


def test_the_checkpoint_file_names_a_colab_path(reference, tmp_path):
    """gpt-2-simple writes the training machine's absolute path; only its name counts."""
    run = shutil.copytree(reference["run"], tmp_path / "run1")
    (run / "checkpoint").write_text(
        'model_checkpoint_path: "/content/checkpoint/run1/model-1000"\n'
        'all_model_checkpoint_paths: "/content/checkpoint/run1/model-1000"\n'
    )
    checkpoint, _ = open_checkpoint(run)
    assert checkpoint.prefix == run / "model-1000"
    assert checkpoint.tokenizer_note.startswith("GPT-2's own tokenizer")


def test_every_tensor_has_its_crc_checked(reference):
    bundle = Bundle(reference["run"] / "model-1000")
    assert len(bundle.entries) == 4 + 12 * TINY["n_layer"]
    assert all(e.crc32c is not None for e in bundle.entries.values())
    # The stored value is the masked crc32c of the bytes, as TensorFlow writes it.
    import crc32c

    entry = bundle.entries["model/wpe"]
    raw = (reference["run"] / "model-1000.data-00000-of-00001").read_bytes()
    assert mask(crc32c.crc32c(raw[entry.offset : entry.offset + entry.size])) == entry.crc32c


def test_tensorflow_is_never_imported(reference, tmp_path):
    code = (
        "import sys; from pathlib import Path; from convert.gpt2_simple import import_checkpoint; "
        f"import_checkpoint(Path({str(reference['run'])!r}), Path({str(tmp_path / 'hf')!r})); "
        "assert 'tensorflow' not in sys.modules, 'tensorflow was imported'"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "hf" / "model.safetensors").is_file()


# --- bad input: one clear line, nothing half-written -------------------------------------------


def _copy(reference, tmp_path) -> Path:
    return Path(shutil.copytree(reference["run"], tmp_path / "run1"))


def _refused(run: Path, out: Path, *fragments: str) -> str:
    """The import refuses with one line holding every fragment, and leaves nothing behind."""
    before = set(out.parent.iterdir()) if out.parent.exists() else set()
    with pytest.raises((CheckpointError, ConversionError)) as caught:
        import_to_gguf(run, out, "f32")
    message = str(caught.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message
    after = set(out.parent.iterdir()) if out.parent.exists() else set()
    assert after == before, f"left behind: {sorted(after - before)}"
    return message


def test_an_empty_directory(tmp_path):
    (tmp_path / "run1").mkdir()
    _refused(tmp_path / "run1", tmp_path / "out" / "m.gguf", "is empty", "checkpoint/run1")


def test_a_directory_with_no_checkpoint(tmp_path):
    (tmp_path / "run1").mkdir()
    (tmp_path / "run1" / "notes.txt").write_text("hello")
    _refused(tmp_path / "run1", tmp_path / "out" / "m.gguf", "holds no checkpoint")


def test_a_missing_data_shard(reference, tmp_path):
    run = _copy(reference, tmp_path)
    (run / "model-1000.data-00000-of-00001").unlink()
    _refused(run, tmp_path / "out" / "m.gguf", "model-1000.data-00000-of-00001 is missing")


def test_a_truncated_data_shard(reference, tmp_path):
    run = _copy(reference, tmp_path)
    shard = run / "model-1000.data-00000-of-00001"
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    _refused(run, tmp_path / "out" / "m.gguf", "is truncated")


def test_a_crc_mismatch(reference, tmp_path):
    run = _copy(reference, tmp_path)
    shard = run / "model-1000.data-00000-of-00001"
    data = bytearray(shard.read_bytes())
    data[len(data) // 3] ^= 0x40
    shard.write_bytes(bytes(data))
    _refused(run, tmp_path / "out" / "m.gguf", "fails its crc32c check", "damaged")


def test_a_damaged_index(reference, tmp_path):
    run = _copy(reference, tmp_path)
    index = run / "model-1000.index"
    index.write_bytes(index.read_bytes()[:-10])
    _refused(run, tmp_path / "out" / "m.gguf", "not a TensorFlow checkpoint index")


def test_another_models_checkpoint(reference, tmp_path):
    run = tmp_path / "bert"
    shutil.copytree(reference["work"] / "bert", run)
    shutil.copy(reference["run"] / "hparams.json", run)
    _refused(run, tmp_path / "out" / "m.gguf", "not a GPT-2 checkpoint", "bert/")


def test_a_checkpoint_of_optimizer_slots_only(reference, tmp_path):
    run = tmp_path / "slots"
    shutil.copytree(reference["work"] / "slots", run)
    shutil.copy(reference["run"] / "hparams.json", run)
    _refused(run, tmp_path / "out" / "m.gguf", "only optimizer state")


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"n_layer": 3}, "model/h2/"),
        ({"n_layer": 1}, "past hparams.json's n_layer 1"),
        ({"n_embd": 128}, "model/wte is [50257, 64]"),
        ({"n_ctx": 1024}, "model/wpe"),
        ({"n_head": 5}, "not a multiple of n_head"),
        ({"n_vocab": "many"}, "n_vocab must be a positive whole number"),
    ],
)
def test_hparams_that_disagree_with_the_tensors(reference, tmp_path, change, fragment):
    run = _copy(reference, tmp_path)
    (run / "hparams.json").write_text(json.dumps({**TINY, **change}))
    _refused(run, tmp_path / "out" / "m.gguf", fragment)


def test_a_tensorflow_2_saved_model(reference, tmp_path):
    _refused(reference["work"] / "saved", tmp_path / "out" / "m.gguf", "TensorFlow 2 SavedModel")


def test_a_hugging_face_directory_given_by_mistake(reference, tmp_path):
    hf = tmp_path / "hf"
    import_checkpoint(reference["run"], hf)
    _refused(hf, tmp_path / "out" / "m.gguf", "Hugging Face", "python -m convert gguf")


def test_a_checkpoint_file_naming_a_save_that_is_not_there(reference, tmp_path):
    run = _copy(reference, tmp_path)
    (run / "checkpoint").write_text('model_checkpoint_path: "/content/run1/model-2000"\n')
    _refused(run, tmp_path / "out" / "m.gguf", "names model-2000", "--step")


def test_a_tokenizer_that_is_not_gpt2s(reference, tmp_path):
    run = _copy(reference, tmp_path)
    vocab = json.loads((run / "encoder.json").read_text())
    vocab.pop(max(vocab, key=vocab.get))  # one token short
    (run / "encoder.json").write_text(json.dumps(vocab))
    _refused(run, tmp_path / "out" / "m.gguf", "has 50256 tokens", "n_vocab is 50257")


def test_the_command_line_says_one_line_and_exits_1(tmp_path):
    (tmp_path / "run1").mkdir()
    done = subprocess.run(
        [sys.executable, "-m", "convert", "import", str(tmp_path / "run1"), "--out",
         str(tmp_path / "m.gguf")],
        capture_output=True, text=True, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.strip().count("\n") == 0, done.stderr
    assert "is empty" in done.stderr


@pytest.mark.parametrize(
    ("size", "parameters"),
    [("124M", 124_439_808), ("355M", 354_823_168), ("774M", 774_030_080)],
)
def test_the_released_shapes_add_up_to_their_parameter_counts(size, parameters):
    """OpenAI's three sizes a gpt-2-simple user fine-tunes: every variable, every shape."""
    from convert.gpt2_simple import GPT2_SIZES, expected_shapes

    n_layer, n_embd, n_head = GPT2_SIZES[size]
    hparams = {"n_vocab": 50257, "n_ctx": 1024, "n_embd": n_embd, "n_head": n_head}
    shapes = expected_shapes({**hparams, "n_layer": n_layer})
    assert sum(int(np.prod(s)) for s in shapes.values()) == parameters
    assert len(shapes) == 4 + 12 * n_layer
