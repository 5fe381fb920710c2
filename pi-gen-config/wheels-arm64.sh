#!/bin/bash
# `make wheels-arm64`: every wheel the appliance needs on a Raspberry Pi
# (aarch64, CPython 3.11 and glibc 2.36 as in Debian bookworm), for an
# offline install:
#
#   pip install --no-index --find-links OUT_DIR OUT_DIR/teletype_gpt2-*.whl
#
# Usage:
#   wheels-arm64.sh OUT_DIR        build the wheelhouse into OUT_DIR
#   wheels-arm64.sh --update-lock  resolve the dependencies afresh for the Pi
#                                  and rewrite requirements-arm64.lock (then
#                                  review the diff and commit it)
#
# What OUT_DIR gets:
# - llama-cpp-python, cross-compiled here from its source distribution with
#   Debian's aarch64-linux-gnu toolchain for ARMv8.0-A, the Cortex-A53 of a
#   Pi 3 and a Zero 2 W (PyPI has no aarch64 wheel of it), tagged
#   linux_aarch64; without OpenMP, so its libraries need only libc, libm,
#   libstdc++ and libgcc_s;
# - every other runtime dependency (the project's, and llama-cpp-python's
#   own) as it is on PyPI for the Pi: aarch64/cp311 or pure-python wheels;
# - the appliance's own wheel, built from this checkout every time.
# Not systemd-python: the image has Debian's python3-systemd.
#
# Versions and sha256 hashes are pinned in requirements-arm64.lock, next to
# this script; downloads are checked against it (pip --require-hashes).
#
# The slow part (the cross build, ~5 minutes on two cores, and the
# downloads) is cached in ${TELETYPE_GPT2_CACHE:-~/.cache/teletype-gpt2}/
# wheels-arm64/KEY, KEY from the lock file, this script and the cross
# compiler's (and CMake's) versions: a warm run takes seconds. The cache is
# written to a temporary folder and renamed into place, so an interrupted
# build leaves none behind.
#
# Every library is checked by appliance/testing/arm64_isa.py: no instruction beyond
# ARMv8.0-A+CRC (no dot products, FP16 arithmetic, SVE, LSE atomics or
# crypto), or the build fails. A passed check is remembered next to the
# cache (KEY.isa-CHECKER), per version of the checker.
#
# Needs python3 (3.11 or later) with pip, the cross toolchain
# (crossbuild-essential-arm64; not for --update-lock), and the package index
# for a cold cache or --update-lock.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
script="$here/$(basename "$0")"
lock="$here/requirements-arm64.lock"
checker="$repo/appliance/testing/arm64_isa.py"
python=${PYTHON:-python3}
cross=aarch64-linux-gnu
cache_root="${TELETYPE_GPT2_CACHE:-$HOME/.cache/teletype-gpt2}/wheels-arm64"

# pip takes each --platform literally: manylinux_2_36 does not imply the
# older manylinux_2_17 wheels that glibc 2.36 runs too, so all are named.
target=(--only-binary=:all: --python-version 311 --implementation cp --abi cp311)
for minor in $(seq 36 -1 17); do
	target+=(--platform "manylinux_2_${minor}_aarch64")
done
target+=(--platform manylinux2014_aarch64 --platform linux_aarch64)

say() { printf '== %s\n' "$*"; }
die() {
	printf 'wheels-arm64: %s\n' "$*" >&2
	exit 1
}

"$python" -m pip --version >/dev/null 2>&1 || die "$python has no pip"

tmp=$(mktemp -d)
build=""
isa_report=""
cleanup() {
	rm -rf "$tmp"
	if [ -n "$build" ]; then rm -rf "$build"; fi
	if [ -n "$isa_report" ]; then rm -f "$isa_report.part.$$"; fi
}
trap cleanup EXIT

# Python that bash would do badly: requirement markers, wheel metadata, zip.
# Each subcommand is described where it is used.
helper=$(
	cat <<'PY'
import base64, csv, email.parser, hashlib, io, pathlib, re, sys, tarfile, tomllib, zipfile
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
    "implementation_name": "cpython", "implementation_version": "3.11.2",
    "os_name": "posix", "platform_machine": "aarch64",
    "platform_python_implementation": "CPython", "platform_release": "",
    "platform_system": "Linux", "platform_version": "",
    "python_full_version": "3.11.2", "python_version": "3.11", "sys_platform": "linux",
    "extra": "",
}
HOST = {**default_environment(), "extra": ""}


def on_pi(req):
    return req.marker is None or req.marker.evaluate(PI)


def wheel_requires(path):
    with zipfile.ZipFile(path) as z:
        name = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        meta = email.parser.BytesParser().parsebytes(z.read(name))
    return [Requirement(r) for r in meta.get_all("Requires-Dist") or []]


def requirements(pyproject, sdist):
    """The project's dependencies on the Pi, and the sdist's (without markers)."""
    deps = tomllib.loads(pathlib.Path(pyproject).read_text())["project"]["dependencies"]
    with tarfile.open(sdist) as t:
        pkg_info = next(m for m in t.getmembers() if m.name.count("/") == 1
                        and m.name.endswith("/PKG-INFO"))
        meta = email.parser.BytesParser().parsebytes(t.extractfile(pkg_info).read())
    own = canonicalize_name(meta["Name"])
    for text in deps + (meta.get_all("Requires-Dist") or []):
        req = Requirement(text)
        if canonicalize_name(req.name) != own and on_pi(req):
            req.marker = None
            print(req)


def lock(wheels, sdist, out):
    """The lock file from what pip downloaded for the Pi.

    pip judged the markers of the dependencies' own requirements for this
    machine, not for the Pi: any that would differ is an error.
    """
    lines, problems = [], []
    for path in sorted(pathlib.Path(wheels).glob("*.whl")):
        name, version = path.name.split("-")[:2]
        for req in wheel_requires(path):
            if req.marker and req.marker.evaluate(HOST) != on_pi(req):
                problems.append(f"{path.name}: '{req}' is judged differently on the Pi")
        lines.append((canonicalize_name(name), version, path))
    name, version = pathlib.Path(sdist).name.removesuffix(".tar.gz").rsplit("-", 1)
    lines.append((canonicalize_name(name), version, pathlib.Path(sdist)))
    if problems:
        sys.exit("\n".join(problems))
    with open(out, "w") as f:
        f.write(
            "# The runtime dependencies of teletype-gpt2 on a Raspberry Pi (aarch64,\n"
            "# CPython 3.11, glibc 2.36), for pi-gen-config/wheels-arm64.sh. Each is the\n"
            "# wheel named above it; llama-cpp-python is its source distribution, built\n"
            "# for the Pi by the script.\n"
            "# Regenerate with: pi-gen-config/wheels-arm64.sh --update-lock\n"
        )
        for name, version, path in sorted(lines):
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            f.write(f"# {path.name}\n{name}=={version} --hash=sha256:{digest}\n")


def repack(wheel, out_dir):
    """The cross-built wheel as one for the Pi.

    Tagged linux_aarch64 instead of the build machine's platform, and
    without CMake's own install tree at the wheel's root (include/, lib/:
    headers, CMake files, a second copy of the libraries): llama_cpp loads
    its libraries from llama_cpp/lib.
    """
    wheel = pathlib.Path(wheel)
    platform = wheel.name.removesuffix(".whl").split("-")[-1]
    name = wheel.name.replace(platform, "linux_aarch64")
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(
        pathlib.Path(out_dir) / name, "w", zipfile.ZIP_DEFLATED
    ) as dst:
        record_name = next(n for n in src.namelist() if n.endswith(".dist-info/RECORD"))
        record = []
        for info in src.infolist():
            if info.filename.startswith(("include/", "lib/")) or info.filename == record_name:
                continue
            data = src.read(info)
            if info.filename.endswith(".dist-info/WHEEL"):
                data = re.sub(rb"(?m)^Tag: (.*)-" + platform.encode() + rb"$",
                              rb"Tag: \1-linux_aarch64", data)
                assert b"linux_aarch64" in data, data
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
            record.append((info.filename, f"sha256={digest.decode()}", str(len(data))))
            dst.writestr(info, data)
        text = io.StringIO()
        csv.writer(text, lineterminator="\n").writerows([*record, (record_name, "", "")])
        dst.writestr(record_name, text.getvalue())
    print(name)


def check_lock(lock_file, wheel_dir):
    """Every pinned wheel is in wheel_dir, and every requirement of theirs is pinned.

    (A dependency added to pyproject.toml without --update-lock shows here.)
    """
    pinned = {}
    for line in pathlib.Path(lock_file).read_text().splitlines():
        if line and not line.startswith("#"):
            name, version = line.split()[0].split("==")
            pinned[canonicalize_name(name)] = version
    found = {}
    for path in pathlib.Path(wheel_dir).glob("*.whl"):
        name, version = path.name.split("-")[:2]
        found[canonicalize_name(name)] = (version, path)
    problems = [f"{n}=={v} is pinned but has no wheel" for n, v in pinned.items()
                if found.get(n, ("",))[0] != v]
    for name, (_, path) in found.items():
        for req in wheel_requires(path):
            version = pinned.get(canonicalize_name(req.name))
            if on_pi(req) and not (version and req.specifier.contains(version, True)):
                problems.append(f"{path.name} needs {req}, but the lock has {version}")
    sys.exit("\n".join(problems) or None)


globals()[sys.argv[1]](*sys.argv[2:])
PY
)
py() { "$python" -c "$helper" "$@"; }

if [ "${1:-}" = --update-lock ]; then
	# The pin of llama-cpp-python is the project's own (convert/ takes the
	# GGUF converter from that release); the rest resolves to the newest
	# releases that pyproject.toml allows.
	llama=$(
		"$python" -c 'import sys, tomllib
deps = tomllib.load(open(sys.argv[1], "rb"))["project"]["dependencies"]
print(next(d for d in deps if d.replace("_", "-").startswith("llama-cpp-python==")))' \
			"$repo/pyproject.toml"
	)
	say "resolving for aarch64/cp311: $llama and the rest of pyproject.toml"
	"$python" -m pip download --quiet --no-deps --no-binary=:all: --dest "$tmp/sdist" "$llama"
	sdist=$(echo "$tmp"/sdist/*.tar.gz)
	py requirements "$repo/pyproject.toml" "$sdist" >"$tmp/requirements.txt"
	sed 's/^/   /' "$tmp/requirements.txt"
	"$python" -m pip download --quiet "${target[@]}" --dest "$tmp/wheels" -r "$tmp/requirements.txt"
	py lock "$tmp/wheels" "$sdist" "$lock"
	say "wrote $lock: $(grep -vc '^#' "$lock") pins (review the diff, then commit it)"
	exit 0
fi

out=${1:?usage: wheels-arm64.sh OUT_DIR | --update-lock}
for tool in gcc g++ readelf objdump; do
	command -v "$cross-$tool" >/dev/null ||
		die "$cross-$tool not found: apt-get install crossbuild-essential-arm64"
done
[ -f "$lock" ] || die "$lock is missing: wheels-arm64.sh --update-lock"
mkdir -p "$out" "$cache_root"
out=$(cd "$out" && pwd)

compilers="$("$cross-gcc" --version | head -1); $("$cross-g++" --version | head -1)"
cmake_version=$(cmake --version 2>/dev/null | head -1 || echo "no cmake (pip brings one)")
key=$(cat "$lock" "$script" <(echo "$compilers; $cmake_version") | sha256sum | cut -c1-16)
cache="$cache_root/$key"
isa_report="$cache.isa-$(sha256sum <"$checker" | cut -c1-16)"

# isa_check DIR: appliance/testing/arm64_isa.py on every wheel in DIR; its report is kept
# (as $isa_report) only if it passes.
isa_check() {
	say "instruction set check (ARMv8.0-A+CRC) of every library"
	if (cd "$repo" && "$python" -m appliance.testing.arm64_isa "$1") >"$isa_report.part.$$"; then
		mv "$isa_report.part.$$" "$isa_report"
	else
		cat "$isa_report.part.$$"
		rm -f "$isa_report.part.$$"
		die "instructions a Pi 3 cannot run (above): the build needs fixing"
	fi
}

if [ -d "$cache" ]; then
	say "cached: $cache"
else
	started=$SECONDS
	say "cold cache: building $cache (about 5 minutes)"
	# Built next to where it goes (one file system: one atomic rename).
	build="$cache_root/.$key.part.$$"
	mkdir -p "$build"
	grep -v '^#' "$lock" | grep '^llama-cpp-python==' >"$tmp/sdist.txt" ||
		die "the lock pins no llama-cpp-python"
	grep -v '^#' "$lock" | grep -v '^llama-cpp-python==' >"$tmp/wheels.txt"

	say "downloading $(wc -l <"$tmp/wheels.txt") wheels for aarch64/cp311 (hash-checked)"
	"$python" -m pip download --quiet --no-deps --require-hashes "${target[@]}" \
		--dest "$build" -r "$tmp/wheels.txt"

	say "downloading $(cut -d' ' -f1 "$tmp/sdist.txt") (source, hash-checked)"
	"$python" -m pip download --quiet --no-deps --no-binary=:all: --require-hashes \
		--dest "$tmp/sdist" -r "$tmp/sdist.txt"

	say "cross-compiling llama-cpp-python for ARMv8.0-A with $cross-gcc"
	# The toolchain and where CMake may look: only the arm64 root for
	# libraries and headers (else it finds this machine's x86-64 OpenSSL).
	cmake_args=(
		-DCMAKE_SYSTEM_NAME=Linux -DCMAKE_SYSTEM_PROCESSOR=aarch64
		-DCMAKE_C_COMPILER="$cross-gcc" -DCMAKE_CXX_COMPILER="$cross-g++"
		-DCMAKE_FIND_ROOT_PATH="/usr/$cross"
		-DCMAKE_FIND_ROOT_PATH_MODE_PROGRAM=NEVER -DCMAKE_FIND_ROOT_PATH_MODE_LIBRARY=ONLY
		-DCMAKE_FIND_ROOT_PATH_MODE_INCLUDE=ONLY -DCMAKE_FIND_ROOT_PATH_MODE_PACKAGE=ONLY
		# The Cortex-A53 is ARMv8.0-A: no dot products, i8mm, SVE, FP16
		# arithmetic. ggml's own choice (GGML_NATIVE) would ask this machine.
		-DGGML_NATIVE=OFF -DGGML_CPU_ARM_ARCH=armv8-a
		# Nor LSE atomics: GCC's default outline atomics would put a call and
		# a CPU-feature test around every atomic of ggml's thread pool; the
		# A53 runs the inline load/store-exclusive loops directly.
		-DCMAKE_C_FLAGS=-mno-outline-atomics -DCMAKE_CXX_FLAGS=-mno-outline-atomics
		# ggml's own thread pool instead of OpenMP: no libgomp1 on the image.
		-DGGML_OPENMP=OFF
		# Text only: no multimodal library (llama_cpp imports it lazily), and
		# no HTTPS downloads in llama.cpp's common code.
		-DLLAVA_BUILD=OFF -DLLAMA_OPENSSL=OFF
	)
	CMAKE_ARGS="${cmake_args[*]}" "$python" -m pip wheel --verbose --no-deps --wheel-dir "$tmp/built" \
		"$tmp"/sdist/*.tar.gz >"$tmp/build.log" 2>&1 || {
		tail -40 "$tmp/build.log"
		die "the cross build failed (log above)"
	}
	llama_wheel=$(py repack "$tmp"/built/*.whl "$build")

	# What the Pi's loader will be asked for: each library's machine and
	# NEEDED entries (also kept in the cache, shown on every run).
	"$python" -m zipfile -e "$build/$llama_wheel" "$tmp/llama"
	for lib in "$tmp"/llama/llama_cpp/lib/*.so; do
		machine=$("$cross-readelf" -h "$lib" | awk -F: '/Machine:/ {gsub(/^ +/, "", $2); print $2}')
		[ "$machine" = AArch64 ] || die "$(basename "$lib") is for $machine, not AArch64"
		needed=$("$cross-readelf" -d "$lib" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | xargs)
		printf '   %-18s %s, NEEDED: %s\n' "$(basename "$lib")" "$machine" "$needed"
	done >"$build/libraries.txt"

	py check_lock "$lock" "$build" || die "the wheels and the lock disagree"

	isa_check "$build"
	cp "$tmp/build.log" "$build/build.log"
	(cd "$build" && sha256sum -- *.whl >SHA256SUMS)

	# Into place in one step: a cache folder is complete or absent (and if
	# another build got there first, it stays).
	mv -T "$build" "$cache" 2>/dev/null || true
	say "cached in $((SECONDS - started)) s"
fi

# The cache as it was written, checked by this version of the checker (a
# cold build was, before it was renamed into place).
(cd "$cache" && sha256sum --quiet --check SHA256SUMS) || die "$cache is damaged: delete it"
[ -f "$isa_report" ] || isa_check "$cache"
rm -f "$out"/*.whl
cp "$cache"/*.whl "$out/"

say "the appliance's wheel, from this checkout"
"$python" -m pip wheel --quiet --no-deps --wheel-dir "$out" "$repo"
for wheel in "$out"/teletype_gpt2-*.whl; do
	case $wheel in *-py3-none-any.whl) ;; *) die "$(basename "$wheel") is not pure Python" ;; esac
done
(cd "$repo" && "$python" -m appliance.testing.arm64_isa "$out"/teletype_gpt2-*.whl) >/dev/null ||
	die "the appliance's wheel has libraries a Pi 3 cannot run"
py check_lock "$lock" "$out" ||
	die "pyproject.toml and the lock disagree: wheels-arm64.sh --update-lock"

say "$out: $(find "$out" -maxdepth 1 -name '*.whl' | wc -l) wheels"
find "$out" -maxdepth 1 -name '*.whl' -printf '   %f\n' | sort
say "llama-cpp-python's libraries"
cat "$cache/libraries.txt"
say "instruction set check"
sed 's/^/   /' "$isa_report"
