"""Where the pipeline keeps things it downloads once per machine."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """$TELETYPE_GPT2_CACHE, else $XDG_CACHE_HOME/teletype-gpt2, else ~/.cache/teletype-gpt2.

    Outside the checkout on purpose: a clean clone (CI) reuses the corpus and
    the converter that an earlier run on the same machine fetched.
    """
    if env := os.environ.get("TELETYPE_GPT2_CACHE"):
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "teletype-gpt2"
