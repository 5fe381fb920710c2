"""The Pi's wheelhouse (`make wheels-arm64`) and the instruction-set checker behind it.

The checker is tried on objects assembled here, with instructions a Pi 3's
Cortex-A53 lacks and with ARMv8.0 ones that look like them. The wheelhouse,
where it has been built, must hold a wheel for every pin of the lock and
only wheels a Pi's pip accepts, and no library in it may use an
instruction beyond ARMv8.0-A+CRC.
"""

from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.tags import compatible_tags, cpython_tags
from packaging.utils import canonicalize_name, parse_wheel_filename

from appliance.testing import arm64_isa
from appliance.testing.arm64_isa import (
    CACHE,
    DISPATCHED,
    OBJDUMP,
    check,
    failures,
    main,
    scan_disassembly,
)

ROOT = Path(__file__).resolve().parent.parent
WHEELHOUSE = ROOT / "build" / "wheels-arm64"
LOCK = ROOT / "pi-gen-config" / "requirements-arm64.lock"
AS = "aarch64-linux-gnu-as"

# What pip accepts on the Pi: Debian bookworm's CPython 3.11, glibc 2.36, aarch64.
PI_PLATFORMS = [f"manylinux_2_{minor}_aarch64" for minor in range(36, 16, -1)]
PI_PLATFORMS += ["manylinux2014_aarch64", "linux_aarch64"]
PI_TAGS = set(cpython_tags((3, 11), ["cp311"], PI_PLATFORMS))
PI_TAGS |= set(compatible_tags((3, 11), "cp311", PI_PLATFORMS))
PI_ENVIRONMENT = {
    "platform_machine": "aarch64",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "python_version": "3.11",
    "python_full_version": "3.11.2",
    "implementation_name": "cpython",
    "extra": "",
}

# Beyond ARMv8.0-A+CRC: each line's mnemonic must be reported, with its extension.
BEYOND = {
    "sdot v0.4s, v1.16b, v2.16b": "dotprod (v8.2)",
    "udot v3.2s, v4.8b, v5.4b[1]": "dotprod (v8.2)",
    "ldadd w0, w1, [x2]": "LSE atomics (v8.1)",
    "casal x0, x1, [x2]": "LSE atomics (v8.1)",
    "swpb w0, w1, [x2]": "LSE atomics (v8.1)",
    "fadd v0.8h, v1.8h, v2.8h": "FP16 arithmetic (v8.2)",
    "fmla v0.4h, v1.4h, v2.h[3]": "FP16 arithmetic (v8.2)",
    "fmul h0, h1, h2": "FP16 arithmetic (v8.2)",
    "fcvtzs w0, h1": "FP16 arithmetic (v8.2)",
    "sqrdmlah v0.4s, v1.4s, v2.4s": "RDM (v8.1)",
    "ldapr w0, [x1]": "RCpc (v8.3)",
    "fjcvtzs w0, d1": "JSCVT (v8.3)",
    "frint32z s0, s1": "FRINTTS (v8.5)",
    "smmla v0.4s, v1.16b, v2.16b": "i8mm (v8.6)",
    "bfdot v0.4s, v1.8h, v2.8h": "BF16 (v8.6)",
    "aese v0.16b, v1.16b": "AES",
    "sha256h q0, q1, v2.4s": "SHA1/SHA256",
    "pmull v0.1q, v1.1d, v2.1d": "PMULL (crypto)",
    "ptrue p0.b": "SVE/SME",
    "ld1w {z0.s}, p0/z, [x0]": "SVE/SME",
    "add z0.s, z1.s, z2.s": "SVE/SME",  # a v8.0 mnemonic, on SVE registers
    "whilelo p1.s, x0, x1": "SVE/SME",
    "cntw x0": "SVE/SME",
}
BEYOND_MARCH = "-march=armv8.6-a+sve+fp16+rcpc+crypto+i8mm+bf16"

# ARMv8.0-A+CRC, and close to the forbidden: none may be reported.
WITHIN = [
    "add v0.8h, v1.8h, v2.8h",  # integer arithmetic on halfword vectors
    "mul v3.8h, v4.8h, v5.h[2]",
    "umov w0, v1.h[2]",
    "fcvtl v0.4s, v1.4h",  # half <-> single conversions
    "fcvtn v2.4h, v3.4s",
    "fcvtl2 v0.4s, v1.8h",
    "fcvt s0, h1",
    "ldr h0, [x0]",
    "ld1 {v0.8h}, [x0]",
    "fadd v0.4s, v1.4s, v2.4s",  # single and double precision
    "fmla v0.2d, v1.2d, v2.d[1]",
    "pmull v0.8h, v1.8b, v2.8b",  # polynomial multiply on bytes
    "crc32w w0, w1, w2",  # CRC: the A53 has it
    "crc32cx w0, w1, x2",
    "ldaxr w0, [x1]",  # load/store-exclusive, acquire/release
    "stlxr w2, w0, [x1]",
    "ldar x0, [x1]",
    "stlr x0, [x1]",
    "hint #25",  # paciasp: a hint, a no-op on v8.0
    "hint #29",  # autiasp
    "prfm pldl1keep, [x0]",
    "smax v0.4s, v1.4s, v2.4s",
    "cnt v0.8b, v1.8b",
    "bfi w0, w1, #3, #4",
]


def assemble(tmp_path: Path, name: str, lines: list[str], march: str) -> Path:
    if shutil.which(AS) is None:
        pytest.skip(f"{AS} is not installed (apt-get install binutils-aarch64-linux-gnu)")
    source = tmp_path / f"{name}.s"
    source.write_text(".text\n" + "".join(f"\t{line}\n" for line in lines))
    obj = tmp_path / f"{name}.o"
    subprocess.run([AS, march, "-o", str(obj), str(source)], check=True)
    return obj


def test_checker_reports_every_instruction_beyond_armv8_0(tmp_path):
    obj = assemble(tmp_path, "beyond", list(BEYOND), BEYOND_MARCH)
    findings = check([obj])
    reported = {f.instruction: f.extension for f in findings}
    expected = {line.split()[0]: extension for line, extension in BEYOND.items()}
    assert reported == expected
    assert failures(findings) == findings  # none of it is dispatched code
    assert all(f.count == 1 for f in findings)
    first = min(findings, key=lambda f: f.first_address)
    assert (first.instruction, first.first_address) == ("sdot", 0)


def test_checker_accepts_armv8_0_lookalikes(tmp_path):
    obj = assemble(tmp_path, "within", WITHIN, "-march=armv8-a+crc")
    assert check([obj]) == []


def test_checker_looks_inside_wheels_and_says_where(tmp_path, capsys):
    beyond = assemble(tmp_path, "beyond", ["nop", "sdot v0.4s, v1.16b, v2.16b"], BEYOND_MARCH)
    within = assemble(tmp_path, "within", WITHIN, "-march=armv8-a+crc")
    wheel = tmp_path / "demo-1.0-cp311-cp311-linux_aarch64.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.write(beyond, "demo/_fast.so")
        archive.write(beyond, "demo/_fast.so.1")  # a copy, as zip stores symbolic links
        archive.write(within, "demo/_plain.so")
        archive.writestr("demo/__init__.py", "")
    findings = check([tmp_path])  # a folder: its wheels
    assert [(f.library, f.instruction, f.count, f.first_address) for f in findings] == [
        (f"{wheel.name}:demo/_fast.so", "sdot", 1, 4)
    ]
    assert main(["--no-cache", str(wheel)]) == 1
    out = capsys.readouterr().out
    assert "demo/_fast.so: sdot (dotprod (v8.2)) x1, first at 0x4" in out
    assert "3 ELF file(s) checked" in out and "1 finding(s)" in out
    assert main(["--no-cache", str(tmp_path / "within.o")]) == 0


def test_a_verdict_is_kept_for_the_same_bytes_and_checker_only(tmp_path, monkeypatch):
    beyond = assemble(tmp_path, "beyond", ["nop", "sdot v0.4s, v1.16b, v2.16b"], BEYOND_MARCH)
    within = assemble(tmp_path, "within", WITHIN, "-march=armv8-a+crc")
    cache = tmp_path / "cache"

    def wheel_of(obj: Path, name: str) -> Path:
        wheel = tmp_path / name / "demo-1.0-cp311-cp311-linux_aarch64.whl"
        wheel.parent.mkdir()
        with zipfile.ZipFile(wheel, "w") as archive:
            archive.write(obj, "demo/_fast.so")
        return wheel

    bad, good = wheel_of(beyond, "bad"), wheel_of(within, "good")
    first = check([bad], cache=cache)
    assert [f.instruction for f in first] == ["sdot"] and len(list(cache.iterdir())) == 1
    assert check([good], cache=cache) == []  # the same name, other bytes: judged anew
    assert len(list(cache.iterdir())) == 2

    disassembled: list[str] = []
    real = arm64_isa.check_elf

    def counted(path, *args, **kwargs):
        disassembled.append(path.name)
        return real(path, *args, **kwargs)

    monkeypatch.setattr(arm64_isa, "check_elf", counted)
    assert check([bad], cache=cache) == first and disassembled == []  # kept: not disassembled
    assert check([bad], (), cache=cache) == [dataclasses.replace(first[0], dispatched=None)]
    assert disassembled == ["_fast.so"]  # other dispatch rules: judged anew
    (next(p for p in cache.iterdir() if p.stat().st_size > 2)).write_text("{damaged")
    assert [f.instruction for f in check([bad], cache=cache)] == ["sdot"]


def test_checker_flags_an_x86_library(tmp_path):
    # An ELF header, 64-bit little-endian, e_machine 62 (x86-64): enough to be told apart.
    header = b"\x7fELF\x02\x01\x01" + bytes(11) + (62).to_bytes(2, "little") + bytes(44)
    library = tmp_path / "_speedups.cpython-311-x86_64-linux-gnu.so"
    library.write_bytes(header)
    findings = check([library])
    assert [(f.instruction, f.extension) for f in findings] == [("(e_machine 62)", "not AArch64")]


def _disassembly(*functions: tuple[str, list[str]]) -> list[str]:
    """objdump's text for functions of (name, instructions)."""
    lines, address = [], 0x1000
    for name, instructions in functions:
        lines.append(f"{address:016x} <{name}>:\n")
        for instruction in instructions:
            lines.append(f"  {address:x}:\t{instruction.replace(' ', chr(9), 1)}\n")
            address += 4
        lines.append("\n")
    return lines


def test_dispatched_code_is_recognised_by_its_symbols_only():
    atomics = next(d for d in DISPATCHED if "outline atomics" in d.why)
    text = _disassembly(
        ("__aarch64_ldadd4_acq_rel", ["ldaddal w0, w1, [x2]", "ret"]),
        ("my_function", ["ldaddal w0, w1, [x2]", "ret"]),
        ("__aarch64_cas8_sync", ["sdot v0.4s, v1.16b, v2.16b"]),  # not an atomic
    )
    findings = scan_disassembly(text, "lib.so", [atomics])
    assert [(f.instruction, f.first_function, f.dispatched is not None) for f in findings] == [
        ("ldaddal", "my_function", False),
        ("sdot", "__aarch64_cas8_sync", False),
        ("ldaddal", "__aarch64_ldadd4_acq_rel", True),
    ]


def test_openblas_helpers_belong_to_the_core_kernels_before_them():
    openblas = next(d for d in DISPATCHED if "OpenBLAS" in d.why)
    sve = "ptrue p0.s"
    text = _disassembly(
        ("sgemm_kernel_NEOVERSEV1", [sve]),
        ("tobf16_compute", [sve]),  # a static helper of the NEOVERSEV1 kernels
        ("sgemm_kernel_CORTEXA53", ["nop"]),
        ("tobf16_compute", [sve, sve]),  # ... and of the Cortex-A53's: on the Pi
        ("dgemm_kernel_ARMV8", ["fmla v0.4h, v1.4h, v2.4h"]),
    )
    findings = scan_disassembly(text, "libscipy_openblas.so", [openblas])
    bad = failures(findings)
    assert [(f.instruction, f.count, f.first_function) for f in bad] == [
        ("ptrue", 2, "tobf16_compute"),
        ("fmla", 1, "dgemm_kernel_ARMV8"),
    ]
    assert bad[0].first_address == 0x100C
    allowed = [f for f in findings if f.dispatched]
    assert [(f.instruction, f.count) for f in allowed] == [("ptrue", 2)]


# --- the wheelhouse -----------------------------------------------------------

needs_wheelhouse = pytest.mark.skipif(
    not WHEELHOUSE.is_dir(), reason=f"{WHEELHOUSE} does not exist: run `make wheels-arm64` first"
)


def pins() -> dict[str, str]:
    """The lock file's name==version pins."""
    pinned = {}
    for line in LOCK.read_text().splitlines():
        if line and not line.startswith("#"):
            requirement, digest = line.split(" --hash=sha256:")
            name, version = requirement.split("==")
            assert len(digest) == 64, line
            pinned[canonicalize_name(name)] = version
    return pinned


def wheels() -> dict[str, tuple[str, Path]]:
    found = {}
    for path in WHEELHOUSE.glob("*.whl"):
        name, version, _, _ = parse_wheel_filename(path.name)
        assert name not in found, f"two wheels of {name}"
        found[name] = (str(version), path)
    return found


def test_lock_pins_every_requirement_of_the_project():
    pinned = pins()
    assert "systemd-python" not in pinned  # the image has Debian's python3-systemd
    assert pinned["llama-cpp-python"] == "0.3.36"
    assert "lgpio" in pinned and "numpy" in pinned


@needs_wheelhouse
def test_wheelhouse_has_a_wheel_for_every_pin_and_the_appliance():
    found = wheels()
    missing = {n: v for n, v in pins().items() if found.get(n, ("",))[0] != v}
    assert missing == {}
    assert set(found) - set(pins()) == {"teletype-gpt2"}


@needs_wheelhouse
def test_every_wheel_installs_on_the_pi():
    for path in WHEELHOUSE.glob("*.whl"):
        assert "x86" not in path.name and "amd64" not in path.name, path.name
        tags = parse_wheel_filename(path.name)[3]
        assert tags & PI_TAGS, f"{path.name}: no tag a Pi's pip accepts"
        assert all(t.platform == "any" or t.platform.endswith("_aarch64") for t in tags)


@needs_wheelhouse
def test_every_requirement_of_every_wheel_is_in_the_wheelhouse():
    found = wheels()
    for name, (_, path) in found.items():
        with zipfile.ZipFile(path) as archive:
            metadata = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
            text = archive.read(metadata).decode()
        for line in text.splitlines():
            if not line.startswith("Requires-Dist: "):
                continue
            requirement = Requirement(line.removeprefix("Requires-Dist: "))
            marker = requirement.marker or Marker("python_version >= '3'")
            if not marker.evaluate(PI_ENVIRONMENT):
                continue
            have = found.get(canonicalize_name(requirement.name))
            assert have, f"{name} needs {requirement}: no wheel"
            assert requirement.specifier.contains(have[0], prereleases=True), (name, have)


# What the image has anyway (libc6, libstdc++6, libgcc-s1): anything else,
# libgomp1 for an OpenMP build say, would have to be added to its packages.
BASE_SYSTEM = {"libc.so.6", "libm.so.6", "libstdc++.so.6", "libgcc_s.so.1"}


@needs_wheelhouse
def test_llama_libraries_are_aarch64_and_need_only_the_base_system(tmp_path):
    (wheel,) = WHEELHOUSE.glob("llama_cpp_python-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        libraries = [n for n in archive.namelist() if ".so" in Path(n).name]
        assert {Path(n).name.split(".so")[0] for n in libraries} == {
            "libllama",
            "libggml",
            "libggml-base",
            "libggml-cpu",
        }
        for name in libraries:
            assert name.startswith("llama_cpp/lib/"), name
            header = archive.open(name).read(20)
            assert header[:5] == b"\x7fELF\x02", name  # 64-bit ELF
            assert int.from_bytes(header[18:20], "little") == 183, name  # EM_AARCH64
        archive.extractall(tmp_path, libraries)
    readelf = shutil.which("aarch64-linux-gnu-readelf")
    if readelf is None:
        pytest.skip("aarch64-linux-gnu-readelf is not installed: NEEDED not checked")
    ours = {Path(n).name for n in libraries}
    for name in libraries:
        out = subprocess.run(
            [readelf, "-h", "-d", str(tmp_path / name)], capture_output=True, text=True, check=True
        ).stdout
        assert re.search(r"Machine:\s+AArch64", out), name
        needed = set(re.findall(r"\(NEEDED\)\s+Shared library: \[(.+?)\]", out))
        assert needed and needed <= BASE_SYSTEM | ours, (name, needed)


@needs_wheelhouse
def test_wheelhouse_has_no_instruction_a_pi3_lacks():
    if shutil.which(OBJDUMP) is None:
        pytest.skip(f"{OBJDUMP} is not installed (apt-get install binutils-aarch64-linux-gnu)")
    # Each library's verdict as make wheels-arm64 left it, if the same checker judged the
    # same bytes (test_a_verdict_is_kept_for_the_same_bytes_and_checker_only); else judged now.
    findings = check([WHEELHOUSE], cache=CACHE)
    assert failures(findings) == []
    # The cross-built llama.cpp is clean without any allowance.
    assert not [f for f in findings if f.library.startswith("llama_cpp_python")]
