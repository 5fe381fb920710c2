"""The Makefile's venv step: a venv made with a Python too old is made again, or make says why."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _old_python(path: Path) -> Path:
    """A stand-in for Python 3.9: it says its version and fails the 3.11 check."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text('#!/bin/sh\n[ "$1" = --version ] && echo "Python 3.9.2" && exit 0\nexit 1\n')
    path.chmod(0o755)
    return path


def _make(tmp_path: Path, python: Path) -> subprocess.CompletedProcess:
    shutil.copy(ROOT / "Makefile", tmp_path / "Makefile")
    return subprocess.run(
        ["make", "--no-print-directory", "venv", f"PYTHON={python}"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_make_venv_made_with_an_old_python_is_made_again(tmp_path):
    _old_python(tmp_path / ".venv/bin/python")
    done = _make(tmp_path, Path(sys.executable))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Python 3.9.2" in done.stdout and "making .venv again" in done.stdout
    version = subprocess.run(
        [tmp_path / ".venv/bin/python", "-c", "import sys; print(sys.version_info[:2])"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert version.stdout.strip() == str(sys.version_info[:2])


def test_make_venv_with_an_old_python_says_what_to_do(tmp_path):
    old = _old_python(tmp_path / "bin/python3")
    done = _make(tmp_path, old)
    assert done.returncode != 0
    assert "Python 3.11 or newer" in done.stdout and "PYTHON=python3.11" in done.stdout
    assert not (tmp_path / ".venv").exists()
