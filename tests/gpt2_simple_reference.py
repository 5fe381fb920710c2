"""The reference side of tests/test_gpt2_simple.py, run by a Python that has TensorFlow.

    python tests/gpt2_simple_reference.py SPEC.json

Writes a gpt-2-simple run directory exactly as gpt-2-simple's `finetune`
saves one (its own model code builds the graph; a Saver over the model's
trainable variables, `model-N` with `global_step`, `counter`, and the
tokenizer and hparams.json copied beside it), with random weights, then
records what TensorFlow computes from it: the logits for some token
sequences, and gpt-2-simple's own encoder's ids for some lines of text.

SPEC.json: {"runs": [{"out": run directory, "hparams": {...}, "seed": N,
"step": N, "sequences": [[ids]], "lines": [text]}], "vocab_dir": folder with
vocab.json and merges.txt, "others": [{"out": prefix, "variables": {name:
shape}}], "saved_model": folder, "result": path of the JSON to write}.
"others" are checkpoints of something that is not GPT-2, saved by the same
Saver; "saved_model" a TensorFlow 2 SavedModel. One TensorFlow start does
them all (it takes seconds). Kept apart from the test process on purpose:
TensorFlow is a test-only extra, never imported by the import step, and it
loads its own copies of libraries torch also loads.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def main(spec_path: str) -> None:
    import tensorflow as tf

    spec = json.loads(Path(spec_path).read_text())
    tf.compat.v1.disable_eager_execution()
    results = [gpt2_simple_run(run, Path(spec["vocab_dir"])) for run in spec.get("runs", [])]
    for other in spec.get("others", []):
        other_checkpoint(other)
    if "saved_model" in spec:
        saved_model(Path(spec["saved_model"]))
    Path(spec["result"]).write_text(json.dumps(results))


def gpt2_simple_run(spec: dict, vocab: Path) -> dict:
    import numpy as np
    import tensorflow as tf
    from gpt_2_simple.src import encoder, model

    out = Path(spec["out"])
    out.mkdir(parents=True, exist_ok=True)
    (out / "hparams.json").write_text(json.dumps(spec["hparams"]))
    # gpt-2-simple's names for GPT-2's tokenizer files.
    shutil.copyfile(vocab / "vocab.json", out / "encoder.json")
    shutil.copyfile(vocab / "merges.txt", out / "vocab.bpe")

    hparams = model.default_hparams()
    hparams.override_from_dict(spec["hparams"])
    rng = np.random.default_rng(spec["seed"])
    with tf.compat.v1.Session(graph=tf.Graph()) as sess:
        context = tf.compat.v1.placeholder(tf.int32, [1, None])
        output = model.model(hparams=hparams, X=context)
        # As gpt_2.finetune: the model's trainable variables, nothing else.
        all_vars = [v for v in tf.compat.v1.trainable_variables() if "model" in v.name]
        saver = tf.compat.v1.train.Saver(var_list=all_vars, max_to_keep=1)
        sess.run(tf.compat.v1.global_variables_initializer())
        # Random weights on every variable (gains near 1, biases not zero), so
        # that a swapped, transposed or dropped tensor changes the logits.
        for var in all_vars:
            shape = var.shape.as_list()
            scale = 0.02 if var.name.endswith(("/w:0", "wte:0", "wpe:0")) else 0.1
            value = rng.normal(0.0, scale, shape)
            if var.name.endswith("/g:0"):
                value += 1.0
            var.load(value.astype(np.float32), sess)
        saver.save(sess, str(out / "model"), global_step=spec["step"])
        (out / "counter").write_text(f"{spec['step']}\n")
        logits = [
            sess.run(output["logits"], feed_dict={context: [ids]})[0].tolist()
            for ids in spec["sequences"]
        ]
    enc = encoder.get_encoder(str(out))
    return {"logits": logits, "ids": [enc.encode(line) for line in spec["lines"]]}


def other_checkpoint(spec: dict) -> None:
    """Variables of another model (or only an optimizer's), saved as any TF1 script saves."""
    import numpy as np
    import tensorflow as tf

    with tf.compat.v1.Session(graph=tf.Graph()) as sess:
        variables = [
            tf.compat.v1.get_variable(name, shape=shape, dtype=tf.float32)
            for name, shape in spec["variables"].items()
        ]
        sess.run(tf.compat.v1.global_variables_initializer())
        for var in variables:
            var.load(np.zeros(var.shape.as_list(), np.float32), sess)
        tf.compat.v1.train.Saver(var_list=variables).save(sess, spec["out"], global_step=1)


def saved_model(out: Path) -> None:
    """A TensorFlow 2 SavedModel, which some people have instead (TF2 scripts, Keras)."""
    import subprocess

    # Eager execution is off in this process; a SavedModel wants it on.
    code = (
        "import tensorflow as tf; m = tf.Module(); m.w = tf.Variable([1.0, 2.0]); "
        f"tf.saved_model.save(m, {str(out)!r})"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


if __name__ == "__main__":
    main(sys.argv[1])
