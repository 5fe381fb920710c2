"""Instructions in AArch64 libraries that a Raspberry Pi 3 or Zero 2 W cannot run.

Their Cortex-A53 (BCM2837, RP3A0) is ARMv8.0-A with the CRC extension and
without the cryptographic one. An instruction from a later architecture (a
dot product, half-precision arithmetic, SVE, an LSE atomic, ...) kills the
process with SIGILL, often not before the first token is generated. This
module disassembles every ELF file in the given wheels with binutils'
aarch64-linux-gnu-objdump and reports each instruction beyond that baseline,
per library: the instruction, how often, and where first.

    python -m appliance.testing.arm64_isa [--strict] [-v] [--no-cache] WHEEL_OR_DIR...
    (status 1 on a finding)

Some libraries carry code for newer cores and choose it only after asking
the CPU (DISPATCHED below: libgcc's outline atomics, numpy's float16 sort,
OpenBLAS's per-core kernels). Such code is recognised by its symbols, named
in the report, and not counted as a finding unless --strict.

Disassembling llama.cpp's and OpenBLAS's libraries takes minutes. The
verdict on each library in a wheel is kept in the teletype-gpt2 cache
(arm64-isa/), keyed by the library's bytes, its path in the wheel, this
module's source and the dispatch rules: the same bytes judged by the same
checker are not disassembled twice (`make wheels-arm64` judges them first,
`make test` again), and any change to either is judged afresh.
"""

from __future__ import annotations

import argparse
import dataclasses
import fnmatch
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

OBJDUMP = "aarch64-linux-gnu-objdump"
ELF_MAGIC = b"\x7fELF"
EM_AARCH64 = 183
BASELINE = "ARMv8.0-A+CRC"
CACHE = (
    Path(os.environ.get("TELETYPE_GPT2_CACHE") or Path.home() / ".cache" / "teletype-gpt2")
    / "arm64-isa"
)


@dataclass(frozen=True)
class Rule:
    """An extension, and how its instructions look in objdump's text.

    `mnemonic` must match the whole mnemonic; `operands`, if given, must be
    found in the operands (objdump's `<symbol>` and `// comment` removed).
    """

    extension: str
    mnemonic: str
    operands: str | None = None


# Registers of the Scalable Vector and Matrix Extensions: z0-z31 (vectors),
# p0-p15 (predicates: p0, p0.b, p0/z, p0/m, pn8), za and zt0 (SME's arrays).
_SVE_REGISTER = r"(?<![\w.])(z([12]?\d|3[01])|pn?(1[0-5]|\d)|za\w*|zt0)(?![\w])"
# Half-precision floating-point operands: h0-h31, or vectors of halves.
_HALF = r"(?<![\w.])(h([12]?\d|3[01])|v([12]?\d|3[01])\.(8h|4h|2h|h\[\d\]))(?![\w])"
# A general-purpose register as the first operand.
_GPR_FIRST = r"^\s*[wx]([12]?\d|3[01]|zr)\b"

RULES: tuple[Rule, ...] = (
    # --- ARMv8.1-A ---------------------------------------------------------
    # LSE atomics: one instruction instead of a load/store-exclusive loop.
    Rule("LSE atomics (v8.1)", r"casp?(a|l|al)?[bh]?"),
    Rule("LSE atomics (v8.1)", r"swpp?(a|l|al)?[bh]?"),
    Rule("LSE atomics (v8.1)", r"ld(add|clr|eor|set|smax|smin|umax|umin)p?(a|l|al)?[bh]?"),
    Rule("LSE atomics (v8.1)", r"st(add|clr|eor|set|smax|smin|umax|umin)l?[bh]?"),
    Rule("RDM (v8.1)", r"sqrdml[as]h"),
    Rule("LOR (v8.1)", r"ldlar[bh]?|stllr[bh]?"),
    # --- ARMv8.2-A and later -----------------------------------------------
    Rule("dotprod (v8.2)", r"[su]dot"),
    Rule("i8mm (v8.6)", r"[su]mmla|usmmla|usdot|sudot"),
    Rule("BF16 (v8.6)", r"bf(dot|mmla|mlal[bt]?|cvt\w*)"),
    # Half-precision arithmetic: any floating-point instruction on halves.
    # fcvt, fcvtl and fcvtn (half <-> single conversions) are ARMv8.0, as
    # are loads, stores and integer instructions on .8h/.4h (none starts
    # with f).
    Rule("FP16 FHM (v8.2)", r"fml[as]l2?", _HALF),
    Rule("FP16 arithmetic (v8.2)", r"f(?!cvt[ln]?2?$)\w+", _HALF),
    Rule("FP16 arithmetic (v8.2)", r"[su]cvtf", _HALF),
    Rule("FCMA (v8.3)", r"fcmla|fcadd"),
    Rule("JSCVT (v8.3)", r"fjcvtzs"),
    Rule("FRINTTS (v8.5)", r"frint(32|64)[xz]"),
    # Load-acquire RCpc (8.3) and its unscaled forms (8.4).
    Rule("RCpc (v8.3)", r"ldapr[bh]?"),
    Rule("RCpc2 (v8.4)", r"ldapur(s?[bh]|sw)?|stlur[bh]?"),
    # Pointer authentication outside the hint space. paciasp, autiasp, bti
    # and friends are hints, no-ops on ARMv8.0: they are fine.
    Rule("PAuth (v8.3)", r"(pac|aut)[id]z?[ab]|pacga|xpac[id]"),
    Rule("PAuth (v8.3)", r"reta[ab]|bra[ab]z?|blra[ab]z?|ereta[ab]|ldra[ab]"),
    Rule("FlagM (v8.4)", r"cfinv|setf(8|16)|rmif|axflag|xaflag"),
    Rule("MTE (v8.5)", r"irg|gmi|subps?|ldgm?|stz?2?g|stgp|stz?gm"),
    Rule("RNG (v8.5)", r"mrs", r"\brndr(rs)?\b"),
    Rule("DPB (v8.2)", r"dc", r"^\s*cvad?p\b"),
    Rule("MOPS (v8.8)", r"cpyf?[pme]\w*|setg?[pme]\w*"),
    # The scalar forms only: the vector abs/cnt/smax/... are ARMv8.0.
    Rule("CSSC (v8.9)", r"abs|cnt|ctz|[su]m(ax|in)", _GPR_FIRST),
    # --- Cryptography: optional in ARMv8.0, absent on the Pi 3's SoC --------
    # (CRC32, the other optional part, it has: crc32* is not listed.)
    Rule("AES", r"aes(e|d|mc|imc)"),
    Rule("SHA1/SHA256", r"sha1(c|h|m|p|su0|su1)|sha256(h2?|su0|su1)"),
    # PMULL on 64-bit lanes is crypto; pmull on bytes (.8h <- .8b) is v8.0.
    Rule("PMULL (crypto)", r"pmull2?", r"\.1q\b"),
    Rule("SHA3/SHA512 (v8.2)", r"sha512(h2?|su0|su1)|eor3|rax1|xar|bcax"),
    Rule("SM3/SM4 (v8.2)", r"sm3\w*|sm4\w*"),
    # --- Scalable vectors and matrices --------------------------------------
    # Any instruction on a z, p or za register, and those on neither
    # (vector length, element counts, predicate set-up, streaming mode).
    Rule("SVE/SME", r"\S+", _SVE_REGISTER),
    Rule(
        "SVE/SME",
        r"rdvl|addvl|addpl|(cnt|inc|dec)[bhwd]|(sq|uq)(inc|dec)[bhwdp]|"
        r"ptrues?|pfalse|ptest|whilel[eost]|whileg[et]|whileh[is]|while(rw|wr)|"
        r"setffr|rdffr|wrffr|pnext|pfirst|smstart|smstop|rdsvl|addsvl|addspl",
    ),
)


@dataclass(frozen=True)
class Dispatched:
    """Code that its library runs only after asking the CPU whether it may.

    `library` is a glob on the file's path inside the wheel; `function` must
    match the whole symbol of the function the instruction is in; with
    `extensions`, only those are accepted there. A static helper between
    per-core kernels has no suffix of its own: with `owner`, a function
    that does not match `owner` belongs to the nearest function before it
    that does, and is judged by that one's name.
    """

    why: str
    library: str
    function: str
    extensions: tuple[str, ...] = ()
    owner: str | None = None


# OpenBLAS's cores whose kernels use SVE, SME, BF16, dot products, FP16...:
# a Cortex-A53 is given the _CORTEXA53 kernels (the _ARMV8 ones on an
# unknown core), which must be clean and are checked like everything else.
_OPENBLAS_NEWER_CORES = "A64FX|ARMV8SVE|ARMV9SME|NEOVERSEN1|NEOVERSEN2|NEOVERSEV1|NEOVERSEV2"

DISPATCHED: tuple[Dispatched, ...] = (
    Dispatched(
        "libgcc's outline atomics: each helper tests __aarch64_have_lse_atomics "
        "(HWCAP_ATOMICS) and otherwise runs a load/store-exclusive loop",
        "*",
        r"__aarch64_(casp?|swp|ld(add|clr|eor|set))\d+_(relax|acq|rel|acq_rel|sync)",
        ("LSE atomics (v8.1)",),
    ),
    Dispatched(
        "numpy's float16 sort (Highway), compiled for its ASIMDHP target and "
        "called only from QSort_ASIMDHP, which numpy selects on FP16 cores",
        "numpy/_core/_multiarray_umath.*",
        r"_ZN3hwy\d+N_NEON\w*float16_t[\w.]*",
        ("FP16 arithmetic (v8.2)",),
    ),
    Dispatched(
        "OpenBLAS DYNAMIC_ARCH: kernels for one core each (the suffix), chosen at "
        "start-up from the CPU's ID registers",
        "numpy.libs/libscipy_openblas*",
        rf"\w+_({_OPENBLAS_NEWER_CORES})",
        owner=r"\w+_(ARMV[89]\w*|CORTEX\w+|NEOVERSE\w+|THUNDERX\w*|A64FX|TSV110|EMAG8180)",
    ),
)


class _Classifier:
    """RULES, with the rules that can apply worked out once per mnemonic."""

    def __init__(self, rules: Iterable[Rule]) -> None:
        self.rules = [
            (rule, re.compile(rule.mnemonic), rule.operands and re.compile(rule.operands))
            for rule in rules
        ]
        self.by_mnemonic: dict[str, list[tuple[str, re.Pattern[str] | None]]] = {}

    def _candidates(self, mnemonic: str) -> list[tuple[str, re.Pattern[str] | None]]:
        candidates = []
        for rule, mnemonic_re, operands_re in self.rules:
            if mnemonic_re.fullmatch(mnemonic):
                candidates.append((rule.extension, operands_re or None))
                if not operands_re:
                    break  # the mnemonic alone decides
        self.by_mnemonic[mnemonic] = candidates
        return candidates

    def __call__(self, mnemonic: str, operands: str) -> str | None:
        candidates = self.by_mnemonic.get(mnemonic)
        if candidates is None:
            candidates = self._candidates(mnemonic)
        if not candidates:
            return None
        if "<" in operands or "//" in operands:
            operands = re.sub(r"<[^>]*>|//.*", "", operands)
        for extension, operands_re in candidates:
            if operands_re is None or operands_re.search(operands):
                return extension
        return None


classify = _Classifier(RULES)


@dataclass
class Finding:
    """One instruction beyond the baseline in one library."""

    library: str
    instruction: str
    extension: str
    count: int
    first_address: int
    first_function: str
    dispatched: str | None = None  # why it is allowed, if it is

    def __str__(self) -> str:
        text = (
            f"{self.library}: {self.instruction} ({self.extension}) x{self.count}, "
            f"first at 0x{self.first_address:x} in {self.first_function}"
        )
        return text + (f" [dispatched: {self.dispatched}]" if self.dispatched else "")


def _dispatch_for(library: str, dispatched: Iterable[Dispatched]) -> list[Dispatched]:
    return [d for d in dispatched if fnmatch.fnmatch(library, d.library)]


def scan_disassembly(
    lines: Iterable[str], library: str, dispatched: Iterable[Dispatched] = ()
) -> list[Finding]:
    """Findings in objdump -d --no-show-raw-insn output for one library.

    `dispatched`: the allowances that apply to this library.

    A function starts at "0000000000001234 <name>:", an instruction reads
    "    1234:\tmnemonic\toperands".
    """
    rules = [(d, re.compile(d.function), d.owner and re.compile(d.owner)) for d in dispatched]
    owners: list[str] = ["" for _ in rules]
    found: dict[tuple[str, str | None], Finding] = {}
    function = "?"
    for line in lines:
        if line[:1] != " ":
            if line.endswith(">:\n") and "<" in line:
                function = line[line.index("<") + 1 : -3]
                for i, (_, _, owner_re) in enumerate(rules):
                    if owner_re and owner_re.fullmatch(function):
                        owners[i] = function
            continue
        parts = line.rstrip("\n").split("\t")
        if len(parts) < 2 or not parts[0].endswith(":") or parts[1].startswith("."):
            continue  # not an instruction, or .word/.inst: data, an unknown encoding
        mnemonic = parts[1]
        extension = classify(mnemonic, parts[2] if len(parts) > 2 else "")
        if extension is None:
            continue
        why = None
        for i, (d, function_re, owner_re) in enumerate(rules):
            if d.extensions and extension not in d.extensions:
                continue
            named = function if not owner_re or owner_re.fullmatch(function) else owners[i]
            if function_re.fullmatch(named):
                why = d.why
                break
        key = (mnemonic, why)
        if key in found:
            found[key].count += 1
        else:
            address = int(parts[0][:-1], 16)
            found[key] = Finding(library, mnemonic, extension, 1, address, function, why)
    return sorted(found.values(), key=lambda f: (f.dispatched is not None, f.first_address))


def _objdump() -> str:
    path = shutil.which(OBJDUMP)
    if path is None:
        raise FileNotFoundError(f"{OBJDUMP} not found (apt-get install binutils-aarch64-linux-gnu)")
    return path


def check_elf(
    path: Path,
    library: str | None = None,
    dispatched: Iterable[Dispatched] = DISPATCHED,
    member: str | None = None,
) -> list[Finding]:
    """Findings in one ELF file (a shared library or an object file).

    `member` is its path inside a wheel, which DISPATCHED's globs are about.
    """
    library = library or path.name
    dispatched = _dispatch_for(member or path.name, dispatched)
    with path.open("rb") as f:
        header = f.read(20)
    if header[:4] != ELF_MAGIC:
        raise ValueError(f"{library}: not an ELF file")
    machine = int.from_bytes(header[18:20], "little")
    if machine != EM_AARCH64:
        return [Finding(library, f"(e_machine {machine})", "not AArch64", 1, 0, "-")]
    command = [_objdump(), "-d", "--no-show-raw-insn", str(path)]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True, errors="replace") as p:
        assert p.stdout is not None
        findings = scan_disassembly(p.stdout, library, dispatched)
    if p.returncode != 0:
        raise RuntimeError(f"{OBJDUMP} failed on {library}")
    return findings


def elf_members(wheel: Path) -> list[str]:
    """The ELF files inside a wheel."""
    with zipfile.ZipFile(wheel) as archive:
        return [
            info.filename
            for info in archive.infolist()
            if not info.is_dir() and archive.open(info).read(4) == ELF_MAGIC
        ]


def verdict_key(data: bytes, member: str, dispatched: Iterable[Dispatched]) -> str:
    """What a library's verdict depends on: its bytes, its path in the wheel (the dispatch
    rules' globs are about it), the rules, and this checker's source."""
    key = hashlib.sha256(Path(__file__).read_bytes())
    for part in (repr(list(dispatched)).encode(), member.encode(), data):
        key.update(hashlib.sha256(part).digest())
    return key.hexdigest()[:40]


def _cached(cache: Path | None, key: str, library: str) -> list[Finding] | None:
    if cache is None:
        return None
    try:
        rows = json.loads((cache / f"{key}.json").read_text())
        return [Finding(**{**row, "library": library}) for row in rows]
    except (OSError, ValueError, TypeError):
        return None  # not judged yet, or a damaged entry: judge it again


def _keep(cache: Path | None, key: str, findings: list[Finding]) -> None:
    if cache is None:
        return
    try:
        cache.mkdir(parents=True, exist_ok=True)
        part = cache / f".{key}.{os.getpid()}"
        part.write_text(json.dumps([dataclasses.asdict(f) for f in findings]))
        part.replace(cache / f"{key}.json")  # whole or absent
    except OSError:
        pass  # a cache that cannot be written costs time, never a verdict


def check_wheel(
    wheel: Path, dispatched: Iterable[Dispatched] = DISPATCHED, cache: Path | None = None
) -> list[Finding]:
    """Findings in every ELF file of one wheel (each verdict kept in `cache`, if given).

    A library stored more than once (libllama.so, .so.0, .so.0.5.0: zip has
    no symbolic links) is disassembled once, reported under its first name.
    """
    dispatched = list(dispatched)
    findings: list[Finding] = []
    seen: set[str] = set()
    with tempfile.TemporaryDirectory() as tmp, zipfile.ZipFile(wheel) as archive:
        for name in elf_members(wheel):
            data = archive.read(name)
            digest = hashlib.sha256(data).hexdigest()
            if digest in seen:
                continue
            seen.add(digest)
            library = f"{wheel.name}:{name}"
            key = verdict_key(data, name, dispatched)
            found = _cached(cache, key, library)
            if found is None:
                target = Path(archive.extract(name, tmp))
                found = check_elf(target, library, dispatched, member=name)
                _keep(cache, key, found)
            findings += found
    return findings


def inputs(paths: Iterable[Path]) -> Iterator[Path]:
    """The files given, and the wheels in the folders given."""
    for path in paths:
        if path.is_dir():
            yield from sorted(path.glob("*.whl"))
        else:
            yield path


def check(
    paths: Iterable[Path], dispatched: Iterable[Dispatched] = DISPATCHED, cache: Path | None = None
) -> list[Finding]:
    """Findings in wheels, folders of wheels and ELF files; dispatched ones marked. The
    verdicts on wheels' libraries are kept in `cache` (a folder), if given."""
    dispatched = list(dispatched)
    findings: list[Finding] = []
    for path in inputs(paths):
        if path.suffix == ".whl":
            findings += check_wheel(path, dispatched, cache)
        else:
            findings += check_elf(path, dispatched=dispatched)
    return findings


def failures(findings: Iterable[Finding]) -> list[Finding]:
    """The findings that are not in code dispatched at run time."""
    return [f for f in findings if f.dispatched is None]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m appliance.testing.arm64_isa",
        description=f"Report instructions beyond {BASELINE} (a Raspberry Pi 3's Cortex-A53).",
    )
    parser.add_argument("paths", nargs="+", type=Path, help="wheels, folders of wheels, ELF files")
    parser.add_argument(
        "--strict", action="store_true", help="count code dispatched at run time as well"
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="list dispatched instructions one by one"
    )
    parser.add_argument(
        "--no-cache", action="store_true", help=f"judge every library again (cache: {CACHE})"
    )
    args = parser.parse_args(argv)
    findings = check(
        args.paths, () if args.strict else DISPATCHED, None if args.no_cache else CACHE
    )
    bad = failures(findings)
    for finding in bad:
        print(finding)
    dispatched: dict[tuple[str, str], int] = {}
    for finding in findings:
        if finding.dispatched:
            if args.verbose:
                print(finding)
            key = (finding.library, finding.dispatched)
            dispatched[key] = dispatched.get(key, 0) + finding.count
    for (library, why), count in dispatched.items():
        print(f"{library}: {count} instructions in code dispatched at run time ({why})")
    count = sum(len(elf_members(p)) if p.suffix == ".whl" else 1 for p in inputs(args.paths))
    verdict = f"{len(bad)} finding(s)" if bad else "no findings"
    print(f"arm64_isa: {count} ELF file(s) checked against {BASELINE}: {verdict}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
