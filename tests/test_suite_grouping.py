"""`make test`'s groups hold: a file's tests run on one worker, and the tiny model's too.

tests/conftest.py marks each test with its group for pytest-xdist's --dist
loadgroup. With pytest 9.2 the marks were read and then lost (the node ids
no longer carried them), so every test was scheduled alone and each file's
module fixtures (a model trained, TensorFlow's reference) were made on both
workers. This runs a small suite the way the Makefile runs ours.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

A_FILE = """
import time

import pytest


@pytest.mark.parametrize("n", range(6))
def test_one(n):
    time.sleep(0.05)
"""


def test_a_files_tests_all_run_on_one_worker(tmp_path: Path):
    (tmp_path / "conftest.py").write_text(
        f"import sys\nsys.path.insert(0, {str(ROOT)!r})\n"
        "from tests.conftest import pytest_collection_modifyitems  # noqa: F401, E402\n"
    )
    for name in ("test_a.py", "test_b.py"):
        (tmp_path / name).write_text(A_FILE)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-n", "2", "--dist", "loadgroup", "-v",
         "-p", "no:cacheprovider", "-p", "no:randomly", str(tmp_path)],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:]
    workers: dict[str, set[str]] = {}
    for worker, file in re.findall(r"^\[(gw\d)\].*PASSED (test_\w)\.py", done.stdout, re.M):
        workers.setdefault(file, set()).add(worker)
    assert set(workers) == {"test_a", "test_b"}, done.stdout[-3000:]
    assert all(len(ran_on) == 1 for ran_on in workers.values()), workers


def test_the_groups_handed_out_first_exist():
    # A renamed file would silently drop to the end of the queue, the soak's old place.
    from tests.conftest import LONGEST_FIRST

    gone = [g for g in LONGEST_FIRST if g != "tiny-model" and not (ROOT / g).is_file()]
    assert not gone, f"tests/conftest.py LONGEST_FIRST names files that are gone: {gone}"
    assert list(LONGEST_FIRST.values()) == sorted(LONGEST_FIRST.values(), reverse=True)
