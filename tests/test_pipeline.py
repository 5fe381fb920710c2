"""`python -m convert model` end to end, on a tiny recipe: every step, the card, the files."""

from __future__ import annotations

import json

from convert.pipeline import EMBEDDED_NAME, run_model


def test_pipeline_model_writes_the_gguf_card_and_recipe(tmp_path, training_text):
    tiny = {
        "shape": {"name": "test", "n_layer": 1, "n_head": 2, "n_embd": 64},
        "vocab_size": 512,
        "n_ctx": 128,
        "block_size": 128,
        "batch_size": 4,
        "max_steps": 20,
        "max_minutes": 5.0,
        "eval_interval": 10,
        "warmup_steps": 4,
    }
    out = tmp_path / "models"
    summary = run_model(
        str(training_text), tmp_path / "build", out, sha256=None, recipe=tiny, progress=False
    )

    gguf = out / f"{EMBEDDED_NAME}.q8_0.gguf"
    assert gguf.is_file() and gguf.stat().st_size < 25_000_000
    kinds = [row["kind"] for row in summary["evaluation"]]
    assert kinds == ["hf", "f32", "f16", "q8_0", "q6_k", "q5_k_m", "q4_k_m"]
    card = (out / "MODEL_CARD.md").read_text()
    assert "| model.q8_0.gguf | q8_0 |" in card
    assert f"{summary['training']['steps']} steps" in card
    assert (out / "loss-curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    recorded = json.loads((out / f"{EMBEDDED_NAME}.recipe.json").read_text())
    assert recorded["training"]["steps"] == 20
    assert len(recorded["samples"]) == 4
    assert all(s.strip() for s in recorded["samples"])
