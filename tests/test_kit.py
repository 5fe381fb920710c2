"""The test kit (appliance.testing): shared by tests, bench and the boot check; never on the Pi."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

from setuptools import find_packages

ROOT = Path(__file__).resolve().parent.parent


def test_kit_is_left_out_of_the_appliance_wheel():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    find = pyproject["tool"]["setuptools"]["packages"]["find"]
    packages = find_packages(str(ROOT), include=find["include"], exclude=find.get("exclude", ()))
    assert {"appliance", "appliance.teletype", "convert"} <= set(packages)
    assert [p for p in packages if p.startswith("appliance.testing")] == []


def test_package_discovery_never_walks_build(tmp_path):
    """pip's build of the checkout (make setup) must not walk build/: beside it, image-check
    mounts /proc in the arm64 root there, and the walk followed /proc/self/cwd for ever."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    find = pyproject["tool"]["setuptools"]["packages"]["find"]
    (tmp_path / "appliance").mkdir()
    (tmp_path / "appliance" / "__init__.py").touch()
    rootfs = tmp_path / "build" / "image-check" / "rootfs"
    rootfs.mkdir(parents=True)
    (rootfs / "proc").symlink_to("/proc")  # as good as a mount for a walk that follows links
    # As setuptools finds packages for a pyproject.toml (namespace packages, links followed).
    script = (
        "import sys; from setuptools.discovery import PEP420PackageFinder as F; "
        "print(F.find(sys.argv[1], include=sys.argv[2].split(), exclude=sys.argv[3].split()))"
    )
    args = [tmp_path, " ".join(find["include"]), " ".join(find.get("exclude", ()))]
    try:
        found = subprocess.run(
            [sys.executable, "-c", script, *map(str, args)],
            capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        raise AssertionError("setuptools walked into build/ (and /proc): never ending") from None
    assert "'appliance'" in found.stdout


def test_kit_is_imported_as_a_package_not_from_tests():
    """bench/, the boot check and the wheel script reach the kit without tests/ on a path."""
    files = [*ROOT.glob("bench/*.py"), *ROOT.glob("pi-gen-config/**/*.py")]
    files += ROOT.glob("pi-gen-config/**/*.sh")
    uses = re.compile(r"^\s*(from tests[. ]|import tests\b)|-m tests\.", re.M)
    offenders = [str(f.relative_to(ROOT)) for f in files if uses.search(f.read_text())]
    assert offenders == []


def test_kit_is_not_needed_by_the_appliance():
    kit = ROOT / "appliance" / "testing"
    users = [
        str(path.relative_to(ROOT))
        for path in (ROOT / "appliance").rglob("*.py")
        if kit not in path.parents and "appliance.testing" in path.read_text()
    ]
    assert users == []


def test_kit_arm64_checker_runs_on_a_bare_python_in_the_checkout():
    # As pi-gen-config/wheels-arm64.sh runs it: `cd REPO && python3 -m ...`, with no
    # venv and nothing installed (-S: no site-packages, so only the standard library).
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run(
        [sys.executable, "-S", "-m", "appliance.testing.arm64_isa", "--help"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "WHEEL" in result.stdout.upper()
