"""What wheels-arm64.sh needs that bash would do badly: requirement markers judged for
the Pi, wheel metadata, and a wheel repacked for the Pi.

    wheel_tools.py requirements PYPROJECT SDIST   the Pi's requirements, one a line
    wheel_tools.py lock WHEEL_DIR SDIST OUT       the lock file from downloaded wheels
    wheel_tools.py repack WHEEL OUT_DIR           a cross-built wheel tagged linux_aarch64
    wheel_tools.py check-lock LOCK WHEEL_DIR      the wheels and the lock agree

Run by the build machine's python3 (3.11 or later) with only pip: `packaging`
is pip's own copy where it is not installed.
"""

from __future__ import annotations

import base64
import csv
import email.parser
import hashlib
import io
import re
import sys
import tarfile
import tomllib
import zipfile
from pathlib import Path

try:
    from packaging.markers import default_environment
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name
except ImportError:  # pip always has it
    from pip._vendor.packaging.markers import default_environment
    from pip._vendor.packaging.requirements import Requirement
    from pip._vendor.packaging.utils import canonicalize_name

# The Pi: Debian bookworm's python3 (3.11.2) on aarch64.
PI = {
    "implementation_name": "cpython",
    "implementation_version": "3.11.2",
    "os_name": "posix",
    "platform_machine": "aarch64",
    "platform_python_implementation": "CPython",
    "platform_release": "",
    "platform_system": "Linux",
    "platform_version": "",
    "python_full_version": "3.11.2",
    "python_version": "3.11",
    "sys_platform": "linux",
    "extra": "",
}
HOST = {**default_environment(), "extra": ""}
LOCK_HEADER = (
    "# The runtime dependencies of teletype-gpt2 on a Raspberry Pi (aarch64,\n"
    "# CPython 3.11, glibc 2.36), for pi-gen-config/wheels-arm64.sh. Each is the\n"
    "# wheel named above it; llama-cpp-python is its source distribution, built\n"
    "# for the Pi by the script.\n"
    "# Regenerate with: pi-gen-config/wheels-arm64.sh --update-lock\n"
)


def on_pi(req: Requirement) -> bool:
    return req.marker is None or req.marker.evaluate(PI)


def wheel_requires(path: Path) -> list[Requirement]:
    with zipfile.ZipFile(path) as z:
        name = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        meta = email.parser.BytesParser().parsebytes(z.read(name))
    return [Requirement(r) for r in meta.get_all("Requires-Dist") or []]


def requirements(pyproject: str, sdist: str) -> str:
    """The project's dependencies on the Pi, and the sdist's (without markers)."""
    deps = tomllib.loads(Path(pyproject).read_text())["project"]["dependencies"]
    with tarfile.open(sdist) as t:
        pkg_info = next(
            m for m in t.getmembers() if m.name.count("/") == 1 and m.name.endswith("/PKG-INFO")
        )
        member = t.extractfile(pkg_info)
        assert member is not None, pkg_info.name
        meta = email.parser.BytesParser().parsebytes(member.read())
    own = canonicalize_name(meta["Name"])
    lines = []
    for text in deps + (meta.get_all("Requires-Dist") or []):
        req = Requirement(text)
        if canonicalize_name(req.name) != own and on_pi(req):
            req.marker = None
            lines.append(str(req))
    return "\n".join(lines)


def lock(wheels: str, sdist: str, out: str) -> str:
    """The lock file from what pip downloaded for the Pi.

    pip judged the markers of the dependencies' own requirements for this
    machine, not for the Pi: any that would differ is an error.
    """
    entries, problems = [], []
    for path in sorted(Path(wheels).glob("*.whl")):
        name, version = path.name.split("-")[:2]
        for req in wheel_requires(path):
            if req.marker and req.marker.evaluate(HOST) != on_pi(req):
                problems.append(f"{path.name}: '{req}' is judged differently on the Pi")
        entries.append((canonicalize_name(name), version, path))
    name, version = Path(sdist).name.removesuffix(".tar.gz").rsplit("-", 1)
    entries.append((canonicalize_name(name), version, Path(sdist)))
    if problems:
        raise SystemExit("\n".join(problems))
    text = LOCK_HEADER
    for name, version, path in sorted(entries):
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        text += f"# {path.name}\n{name}=={version} --hash=sha256:{digest}\n"
    Path(out).write_text(text)
    return ""


def repack(wheel: str, out_dir: str) -> str:
    """The cross-built wheel as one for the Pi; its file name.

    Tagged linux_aarch64 instead of the build machine's platform, and
    without CMake's own install tree at the wheel's root (include/, lib/:
    headers, CMake files, a second copy of the libraries): llama_cpp loads
    its libraries from llama_cpp/lib.
    """
    source = Path(wheel)
    platform = source.name.removesuffix(".whl").split("-")[-1]
    name = source.name.replace(platform, "linux_aarch64")
    with (
        zipfile.ZipFile(source) as src,
        zipfile.ZipFile(Path(out_dir) / name, "w", zipfile.ZIP_DEFLATED) as dst,
    ):
        record_name = next(n for n in src.namelist() if n.endswith(".dist-info/RECORD"))
        record = []
        for info in src.infolist():
            if info.filename.startswith(("include/", "lib/")) or info.filename == record_name:
                continue
            data = src.read(info)
            if info.filename.endswith(".dist-info/WHEEL"):
                data = re.sub(
                    rb"(?m)^Tag: (.*)-" + re.escape(platform.encode()) + rb"$",
                    rb"Tag: \1-linux_aarch64",
                    data,
                )
                if b"linux_aarch64" not in data:
                    raise SystemExit(f"{source.name}: no Tag line to retag in its WHEEL file")
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
            record.append((info.filename, f"sha256={digest.decode()}", str(len(data))))
            dst.writestr(info, data)
        text = io.StringIO()
        csv.writer(text, lineterminator="\n").writerows([*record, (record_name, "", "")])
        dst.writestr(record_name, text.getvalue())
    return name


def check_lock(lock_file: str, wheel_dir: str) -> str:
    """Every pinned wheel is in wheel_dir, and every requirement of theirs is pinned.

    (A dependency added to pyproject.toml without --update-lock shows here.)
    """
    pinned = {}
    for line in Path(lock_file).read_text().splitlines():
        if line and not line.startswith("#"):
            name, version = line.split()[0].split("==")
            pinned[canonicalize_name(name)] = version
    found = {}
    for path in Path(wheel_dir).glob("*.whl"):
        name, version = path.name.split("-")[:2]
        found[canonicalize_name(name)] = (version, path)
    problems = [
        f"{n}=={v} is pinned but has no wheel"
        for n, v in pinned.items()
        if found.get(n, ("",))[0] != v
    ]
    for _, path in found.values():
        for req in wheel_requires(path):
            version = pinned.get(canonicalize_name(req.name))
            if on_pi(req) and not (version and req.specifier.contains(version, True)):
                problems.append(f"{path.name} needs {req}, but the lock has {version}")
    if problems:
        raise SystemExit("\n".join(problems))
    return ""


COMMANDS = {
    "requirements": requirements,
    "lock": lock,
    "repack": repack,
    "check-lock": check_lock,
}


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in COMMANDS:
        raise SystemExit(f"usage: wheel_tools.py {{{','.join(COMMANDS)}}} ARGS...")
    printed = COMMANDS[argv[0]](*argv[1:])
    if printed:
        print(printed)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
