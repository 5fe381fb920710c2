"""The training text for tests and bench: the Teletype manuals, or a stand-in."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def find_corpus() -> Path | None:
    """The Teletype manuals, wherever this machine has them; never downloaded by tests."""
    from convert.corpus import DEFAULT_SHA256, default_cache_dir

    candidates = [
        Path(os.environ.get("TELETYPE_CORPUS", "")),
        ROOT.parent / "shared" / "corpus" / "teletype-manuals.txt",
        default_cache_dir() / f"{DEFAULT_SHA256}.txt",
    ]
    return next((p for p in candidates if str(p) != "." and p.is_file()), None)


def stand_in_corpus(path: Path) -> Path:
    """Without the manuals, the project's own prose and code: any text tests fidelity."""
    files = sorted(ROOT.glob("*.md")) + sorted(ROOT.glob("models/*.md"))
    files += sorted(ROOT.glob("convert/*.py")) + sorted(ROOT.glob("appliance/**/*.py"))
    documents = [f.read_text(encoding="utf-8") for f in files]
    path.write_text("\n<|endoftext|>\n".join(documents), encoding="utf-8")
    return path
