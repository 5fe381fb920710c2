"""pi-gen-config/wheel_tools.py, as wheels-arm64.sh runs it: on wheels made here.

The real cross build is `make wheels-arm64` (tests/test_wheels_arm64.py checks what it made);
these check the bookkeeping around it on small wheels, including the failures.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

TOOLS = Path(__file__).resolve().parent.parent / "pi-gen-config" / "wheel_tools.py"


def tools(*args: object) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, TOOLS, *map(str, args)], capture_output=True, text=True, timeout=60
    )


def make_wheel(folder: Path, name: str, version: str, requires=(), tag="py3-none-any",
               extra: dict[str, bytes] | None = None) -> Path:  # fmt: skip
    info = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": b"",
        f"{info}/METADATA": (
            f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
            + "".join(f"Requires-Dist: {r}\n" for r in requires)
        ).encode(),
        f"{info}/WHEEL": f"Wheel-Version: 1.0\nTag: {tag}\n".encode(),
        **(extra or {}),
    }
    path = folder / f"{name}-{version}-{tag}.whl"
    with zipfile.ZipFile(path, "w") as z:
        for file, data in files.items():
            z.writestr(file, data)
        z.writestr(f"{info}/RECORD", "")
    return path


def make_sdist(folder: Path, name: str, version: str, requires=()) -> Path:
    path = folder / f"{name}-{version}.tar.gz"
    pkg_info = (
        f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
        + "".join(f"Requires-Dist: {r}\n" for r in requires)
    ).encode()
    with tarfile.open(path, "w:gz") as t:
        member = tarfile.TarInfo(f"{name}-{version}/PKG-INFO")
        member.size = len(pkg_info)
        t.addfile(member, io.BytesIO(pkg_info))
    return path


def test_the_requirements_are_judged_for_the_pi_not_for_this_machine(tmp_path):
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text(
        '[project]\nname = "x"\ndependencies = [\n'
        '  "gpiozero>=2",\n'
        "  \"lgpio; platform_machine == 'aarch64'\",\n"
        "  \"pywin32; sys_platform == 'win32'\",\n"
        '  "llama-cpp-python==0.3.36",\n]\n'
    )
    sdist = make_sdist(tmp_path, "llama_cpp_python", "0.3.36", ["numpy>=1.20", "diskcache"])
    done = tools("requirements", pyproject, sdist)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["gpiozero>=2", "lgpio", "numpy>=1.20", "diskcache"]


def test_a_lock_is_written_and_checked_and_a_missing_pin_named(tmp_path):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    make_wheel(wheels, "alpha", "1.0", ["beta>=2"])
    beta = make_wheel(wheels, "beta", "2.1")
    sdist = make_sdist(tmp_path, "llama_cpp_python", "0.3.36")
    lock = tmp_path / "requirements-arm64.lock"
    done = tools("lock", wheels, sdist, lock)
    assert done.returncode == 0, done.stderr
    text = lock.read_text()
    digest = hashlib.sha256(beta.read_bytes()).hexdigest()
    assert f"beta==2.1 --hash=sha256:{digest}" in text
    assert "llama-cpp-python==0.3.36 --hash=sha256:" in text
    make_wheel(wheels, "llama_cpp_python", "0.3.36")
    assert tools("check-lock", lock, wheels).returncode == 0

    beta.unlink()
    make_wheel(wheels, "beta", "1.5")  # alpha needs beta>=2, the lock says 2.1
    done = tools("check-lock", lock, wheels)
    assert done.returncode != 0
    assert "beta==2.1 is pinned but has no wheel" in done.stderr
    assert "needs beta>=2, but the lock has 2.1" not in done.stderr  # the pin itself is fine


def test_a_lock_refuses_a_marker_this_machine_judges_differently(tmp_path):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    make_wheel(wheels, "alpha", "1.0", ["gamma; platform_machine != 'aarch64'"])
    sdist = make_sdist(tmp_path, "llama_cpp_python", "0.3.36")
    done = tools("lock", wheels, sdist, tmp_path / "lock")
    machine = __import__("platform").machine()
    if machine == "aarch64":
        assert done.returncode == 0
    else:
        assert done.returncode != 0 and "judged differently on the Pi" in done.stderr
        assert not (tmp_path / "lock").exists()


def test_the_cross_built_wheel_is_retagged_for_the_pi_with_a_true_record(tmp_path):
    built = tmp_path / "built"
    built.mkdir()
    wheel = make_wheel(
        built, "llama_cpp_python", "0.3.36", tag="cp311-cp311-linux_x86_64",
        extra={"llama_cpp/lib/libllama.so": b"\x7fELF", "include/llama.h": b"",
               "lib/cmake/llama.cmake": b""},
    )  # fmt: skip
    done = tools("repack", wheel, tmp_path)
    assert done.returncode == 0, done.stderr
    name = done.stdout.strip()
    assert name == "llama_cpp_python-0.3.36-cp311-cp311-linux_aarch64.whl"
    with zipfile.ZipFile(tmp_path / name) as z:
        names = z.namelist()
        assert "llama_cpp/lib/libllama.so" in names
        assert not [n for n in names if n.startswith(("include/", "lib/"))]
        wheel_file = z.read("llama_cpp_python-0.3.36.dist-info/WHEEL").decode()
        assert "Tag: cp311-cp311-linux_aarch64" in wheel_file
        record = list(csv.reader(io.StringIO(z.read(names[-1]).decode())))
        for file, digest, size in record:
            if not digest:
                continue
            data = z.read(file)
            assert size == str(len(data))
            assert (
                digest
                == "sha256="
                + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            )
        assert {r[0] for r in record} == set(names)


def test_a_wrong_subcommand_says_how_to_call_it():
    done = tools("bogus")
    assert done.returncode != 0 and "usage: wheel_tools.py" in done.stderr
