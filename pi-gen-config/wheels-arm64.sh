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
# wheels-arm64/KEY, KEY from the lock file, this script, wheel_tools.py and the cross
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

# Python that bash would do badly (requirement markers, wheel metadata, zip):
# wheel_tools.py beside this script; each subcommand is described where it is used.
tools="$here/wheel_tools.py"
py() { "$python" "$tools" "$@"; }

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
key=$(cat "$lock" "$script" "$tools" <(echo "$compilers; $cmake_version") | sha256sum | cut -c1-16)
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

	py check-lock "$lock" "$build" || die "the wheels and the lock disagree"

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
py check-lock "$lock" "$out" ||
	die "pyproject.toml and the lock disagree: wheels-arm64.sh --update-lock"

say "$out: $(find "$out" -maxdepth 1 -name '*.whl' | wc -l) wheels"
find "$out" -maxdepth 1 -name '*.whl' -printf '   %f\n' | sort
say "llama-cpp-python's libraries"
cat "$cache/libraries.txt"
say "instruction set check"
sed 's/^/   /' "$isa_report"
