# The front door. `make` alone lists the targets.
#
# Variables (override on the command line, e.g. `make model CORPUS=path`):
#   PYTHON   the interpreter that creates the venv              (python3)
#   CORPUS   training text: a local path or an http(s) URL      (the Teletype manuals by URL)
#   BUILD    where the model pipeline writes its work           (build/model)
#   MODEL    a GGUF for `make eval`                             (the embedded model)
#   CHECKPOINT  gpt-2-simple's run directory for `make model-import`
#   OUT, TYPE   its GGUF and quantisation                       (models/RUN-SIZE.q8_0.gguf)
#   PYTEST   extra arguments for pytest                         (none)
#   SOAK_ROUNDS, SOAK_SEED  `make soak-twitch`'s length and fault order  (120 rounds, a random seed)
#   STORM_CUTS, STORM_SEED  `make power-cut-storm`'s cuts and their moments (30, 1963)
#   SD_WINDOW  `make sd-writes`' window, idle and printing, in seconds  (300)
#   PIGEN_COMMIT  the pi-gen commit `make image` builds with      (the 2026-06-18 Bookworm arm64 release)
#   IMAGE_URL_BASE  where `make image`'s files will be served, for Imager's repository
#                   (none: a local manifest, file:// URLs that work on this machine only)

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# The demo needs only what the Pi installs: no torch, no transformers.
APPLIANCE_STAMP := $(VENV)/.installed-appliance
# TensorFlow and gpt-2-simple, for the import step's tests only.
TF_STAMP := $(VENV)/.installed-tf-reference
BUILD  ?= build/model
CORPUS ?=
MODEL  ?= models/teletype-tiny.q8_0.gguf
CHECKPOINT ?=
OUT    ?=
TYPE   ?= q8_0
PYTEST ?=
CONVERT := $(BIN)/python -m convert

corpus_arg = $(if $(CORPUS),--corpus $(CORPUS),)

.DEFAULT_GOAL := help
.PHONY: help setup venv system-deps test-deps test-setup demo test lint bench model model-import model-sweep gguf quantize eval clean \
	wheels-arm64 wheels-arm64-deps image-base image-check image-check-deps boot-check boot-check-deps board-fit \
	power-cut-storm sd-writes image wiring screenshots soak-twitch pi-warm-prompt

# pi-gen, pinned: the bookworm-arm64 branch at its 2026-06-18 release tag
# (the arm64 and master branches build Trixie now).
PIGEN_URL    ?= https://github.com/RPi-Distro/pi-gen.git
PIGEN_COMMIT ?= d7a31c6aa09f4b867902c51da2b45807c0a1709e

help:
	@echo "make demo         set up, then run the appliance on the embedded model"
	@echo "make test         set up, then ruff and the whole test suite"
	@echo "make setup        create .venv and install (a no-op when nothing changed)"
	@echo "make soak-twitch  teletype chat against a fake Twitch through seeded random faults (~10 min)"
	@echo "make bench        speed, memory, start-up and pacing, side by side (bench/results.md)"
	@echo "make model        corpus -> tokenizer -> train -> GGUF -> quantise -> eval -> models/"
	@echo "make model-import CHECKPOINT=checkpoint/run1 [OUT=FILE.gguf]  a gpt-2-simple model -> GGUF + card"
	@echo "make model-sweep  measure validation loss against model size and time (for the card)"
	@echo "make gguf         $(BUILD)/hf -> $(BUILD)/gguf/model.f32.gguf and .f16.gguf"
	@echo "make quantize     $(BUILD)/gguf/model.f16.gguf -> Q8_0, Q6_K, Q5_K_M, Q4_K_M"
	@echo "make eval         perplexity table of every GGUF in $(BUILD)/gguf against the HF model"
	@echo "make wheels-arm64 every runtime wheel for a Pi (aarch64), llama-cpp-python cross-built (build/wheels-arm64)"
	@echo "make image-check  install the image's stage into an arm64 Debian root here and check it (root)"
	@echo "make image-base   that root's cached base alone (debootstrap, Debian packages; no wheels needed) (root)"
	@echo "make boot-check   boot that root in an emulated Pi (QEMU) and drive it: paper, button, faults (root)"
	@echo "make board-fit    which GPT-2 fits which Pi: 124M and 355M in the emulated Pi per board (root)"
	@echo "make pi-warm-prompt  the warm prompt's cold/warm ratio on the smallest board, emulated (root)"
	@echo "make power-cut-storm  STORM_CUTS (30) power cuts at random moments in the emulated Pi; about 2 min a cut (root)"
	@echo "make sd-writes    MB an hour the emulated Pi writes to its card, idle and printing, read-only and not (root)"
	@echo "make image        build the SD-card image with pi-gen in Docker (needs Docker and the internet)"
	@echo "make wiring       redraw firmware/wiring.png"
	@echo "make screenshots  redraw the README's pictures of the panel, overlay and demo (appliance/testing/screenshots)"
	@echo "make clean        remove build/ (keeps .venv and models/)"

setup: $(STAMP)

# systemd-python (a dev and Pi dependency) builds against libsystemd.
# As root with apt (CI, a Pi) we install it; otherwise we say what to install.
system-deps:
	@if ! pkg-config --exists libsystemd 2>/dev/null; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && apt-get install -y -qq libsystemd-dev pkg-config; \
	  else \
	    echo "make test needs libsystemd-dev and pkg-config: sudo apt-get install libsystemd-dev pkg-config"; \
	    exit 1; \
	  fi; \
	fi

# .venv with a Python the appliance can run (3.11 or newer). One made by an
# older Python, or whose Python has since gone, would fail every later make
# the same way: it is removed and made again, or make says what to do.
NEW_ENOUGH := import sys; sys.exit(sys.version_info < (3, 11))
venv:
	@if [ -e $(VENV) ] && ! $(BIN)/python -c '$(NEW_ENOUGH)' 2>/dev/null; then \
	  echo "$(VENV) was made with $$($(BIN)/python --version 2>&1 || echo a Python that is gone);" \
	    "the appliance needs Python 3.11 or newer: making $(VENV) again"; \
	  rm -rf $(VENV); \
	fi
	@if [ ! -e $(VENV) ] && ! $(PYTHON) -c '$(NEW_ENOUGH)' 2>/dev/null; then \
	  echo "make needs Python 3.11 or newer to make $(VENV), and $(PYTHON) is" \
	    "$$($(PYTHON) --version 2>&1 || echo not there): install one, then e.g." \
	    "make demo PYTHON=python3.11"; \
	  exit 1; \
	fi
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)

# Reinstall only when the project's dependencies change.
$(STAMP): pyproject.toml | system-deps venv
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[convert,dev]'
	touch $@ $(APPLIANCE_STAMP)

$(APPLIANCE_STAMP): pyproject.toml | venv
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e .
	touch $@

# Ctrl-C is the demo's alone (it takes the terminal's foreground while it runs):
# it stops a print, or leaves when idle, and make exits 0, not 130.
demo: $(APPLIANCE_STAMP)
	$(BIN)/teletype demo

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# All that make test installs, without running it: .ci/run makes it first, so that
# the boot check can start beside the tests with no second pip in the same venv.
test-setup: setup test-deps $(TF_STAMP)

# Two workers a core (pytest-xdist), at most 16: most of the suite's time is waiting
# (an engine printing, the fake Twitch, a browser), and with one a core the CPUs sat
# two thirds idle. A file's tests, and all that share the trained tiny model, stay
# on one worker (tests/conftest.py), so each is built once; the longest groups are
# handed out first, in the order conftest gives them.
TEST_WORKERS ?= $(shell n=$$(nproc); echo $$(( n * 2 < 16 ? n * 2 : 16 )))
test: lint test-setup
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadgroup --no-loadscope-reorder $(PYTEST)

# The chat bridge as a process, for SOAK_ROUNDS faults drawn at random (every
# fault once per 24 rounds); `make test` runs the 24 (tests/test_chat_soak.py).
SOAK_ROUNDS ?= 120
SOAK_SEED ?=
soak-twitch: setup
	$(BIN)/python -m tests.soak_twitch --rounds $(SOAK_ROUNDS) $(if $(SOAK_SEED),--seed $(SOAK_SEED),)

$(TF_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[convert,dev,tf-reference]'
	touch $@

# What tests/test_imager_repo.py and tests/test_state_partition.py make small
# SD cards with (parted: Raspberry Pi OS's own first-boot grow), and the
# browser tests/test_panel.py drives (as root with apt they are installed;
# otherwise those tests skip, naming the package).
test-deps:
	@missing=""; \
	command -v mcopy >/dev/null || missing="$$missing mtools"; \
	PATH="$$PATH:/usr/sbin:/sbin" command -v mkfs.vfat >/dev/null || missing="$$missing dosfstools"; \
	PATH="$$PATH:/usr/sbin:/sbin" command -v sfdisk >/dev/null || missing="$$missing fdisk"; \
	PATH="$$PATH:/usr/sbin:/sbin" command -v debugfs >/dev/null || missing="$$missing e2fsprogs"; \
	PATH="$$PATH:/usr/sbin:/sbin" command -v parted >/dev/null || missing="$$missing parted"; \
	command -v xz >/dev/null || missing="$$missing xz-utils"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v chromedriver >/dev/null || missing="$$missing chromium-driver"; \
	if [ -n "$$missing" ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  apt-get update -qq && apt-get install -y -qq $$missing; \
	elif [ -n "$$missing" ]; then echo "some tests will skip without:$$missing"; fi

bench: setup
	$(BIN)/python bench/run.py
	$(BIN)/python bench/virtual_teletype.py
	$(BIN)/python bench/engine.py
	$(BIN)/python bench/schema_memory.py

model: setup
	$(CONVERT) model $(corpus_arg) --build $(BUILD) --out models

# A gpt-2-simple checkpoint (checkpoint/run1) -> a card-ready GGUF and its card.
model-import: setup
	@test -n "$(CHECKPOINT)" || { echo "usage: make model-import CHECKPOINT=path/to/run1 [OUT=FILE.gguf] [TYPE=q8_0]"; exit 2; }
	$(CONVERT) import "$(CHECKPOINT)" --type $(TYPE) $(if $(OUT),--out "$(OUT)",)

model-sweep: setup
	$(CONVERT) sweep $(corpus_arg) --build build/sweep --out models/size-sweep.json

gguf: setup
	$(CONVERT) gguf $(BUILD)/hf --out $(BUILD)/gguf/model.f32.gguf --type f32
	$(CONVERT) gguf $(BUILD)/hf --out $(BUILD)/gguf/model.f16.gguf --type f16

quantize: setup
	$(CONVERT) quantize $(BUILD)/gguf/model.f16.gguf --out-dir $(BUILD)/gguf

eval: setup
	$(CONVERT) eval $(BUILD)/gguf/*.gguf --hf $(BUILD)/hf --validation $(BUILD)/corpus/validation.txt

# Every runtime dependency as wheels for a Raspberry Pi (aarch64, CPython
# 3.11), pinned by pi-gen-config/requirements-arm64.lock, llama-cpp-python
# cross-compiled here for ARMv8.0-A; checked for instructions a Pi 3 lacks.
# Needs only python3 with pip and the cross toolchain (no venv, no torch).
wheels-arm64: wheels-arm64-deps
	PYTHON=$(PYTHON) pi-gen-config/wheels-arm64.sh build/wheels-arm64

wheels-arm64-deps:
	@if ! command -v aarch64-linux-gnu-g++ >/dev/null || ! command -v aarch64-linux-gnu-objdump >/dev/null; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && apt-get install -y -qq crossbuild-essential-arm64; \
	  else echo "make wheels-arm64 needs crossbuild-essential-arm64: sudo apt-get install crossbuild-essential-arm64"; exit 1; fi; \
	fi

image-check-deps:
	@missing=""; \
	command -v shellcheck >/dev/null || missing="$$missing shellcheck"; \
	PATH="$$PATH:/usr/sbin" command -v debootstrap >/dev/null || missing="$$missing debootstrap"; \
	command -v qemu-aarch64-static >/dev/null || missing="$$missing qemu-user-static"; \
	PATH="$$PATH:/usr/sbin" command -v update-binfmts >/dev/null || missing="$$missing binfmt-support"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && apt-get install -y -qq $$missing; \
	  else echo "make image-check needs root, and:$$missing"; exit 1; fi; \
	fi

# The stage installed, as pi-gen would, into Debian bookworm arm64 (run
# through qemu-user-static), from the wheels the image gets.
image-check: wheels-arm64 image-check-deps
	pi-gen-config/image-check.sh build/wheels-arm64

# Its base root alone (debootstrap and the Debian packages; cached): it needs
# no wheels, so CI makes it while they build.
image-base: image-check-deps
	pi-gen-config/image-check.sh --base

boot-check-deps:
	@missing=""; \
	command -v qemu-system-aarch64 >/dev/null || missing="$$missing qemu-system-arm"; \
	command -v dtc >/dev/null || missing="$$missing device-tree-compiler"; \
	command -v mcopy >/dev/null || missing="$$missing mtools"; \
	PATH="$$PATH:/usr/sbin" command -v mkfs.vfat >/dev/null || missing="$$missing dosfstools"; \
	PATH="$$PATH:/usr/sbin" command -v sfdisk >/dev/null || missing="$$missing fdisk"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && apt-get install -y -qq $$missing; \
	  else echo "make boot-check needs root, and:$$missing"; exit 1; fi; \
	fi

# The root file system image-check leaves, booted by QEMU as a Zero 2 W-sized
# board and driven from outside (pi-gen-config/boot-check/run.py).
boot-check: image-check boot-check-deps $(APPLIANCE_STAMP)
	PATH="$$PATH:/usr/sbin" $(BIN)/python pi-gen-config/boot-check/run.py build/image-check/rootfs build/boot-check

# The plug pulled at random moments (during boot and the Wi-Fi password's
# removal from the card, a print, history and job-journal writes), the board
# checked after each (pi-gen-config/boot-check/storm.py). About 2 min a cut.
power-cut-storm: image-check boot-check-deps $(APPLIANCE_STAMP)
	PATH="$$PATH:/usr/sbin" $(BIN)/python pi-gen-config/boot-check/storm.py build/image-check/rootfs build/power-cut-storm

# Sectors written to each partition of the card (/proc/diskstats in the
# guest), idle and printing, read-only root and read-write; in MB an hour.
sd-writes: image-check boot-check-deps $(APPLIANCE_STAMP)
	PATH="$$PATH:/usr/sbin" $(BIN)/python pi-gen-config/boot-check/sd_writes.py build/image-check/rootfs build/sd-writes

# Which GPT-2 fits which board: 124M and 355M (real shapes, random weights,
# built once into bench/cache) at Q8_0, Q5_K_M and Q4_K_M on the card, each
# run by the engine in the emulated Pi with each board's memory; then a chat
# line, the button and a reply on paper from 124M Q8_0. About an hour.
FIT_MODELS := $(foreach size,124M 355M,$(foreach q,q8_0 q5_k_m q4_k_m,gpt2-$(size).$(q).gguf=bench/cache/$(if $(filter 124M,$(size)),small/small,medium/medium).$(q).gguf))
board-fit: image-check boot-check-deps setup
	$(BIN)/python bench/models.py small medium
	PATH="$$PATH:/usr/sbin" $(BIN)/python pi-gen-config/boot-check/board_fit.py build/image-check/rootfs build/board-fit $(FIT_MODELS)

# The warm prompt's gain on the smallest board: cold and warm first text for a
# 124M Q8_0 with GPT-2's own vocabulary, in the emulated Zero 2 W. About 15
# minutes; the ratio goes to bench/pi-warm-prompt.txt.
pi-warm-prompt: image-check boot-check-deps setup
	model=$$($(BIN)/python bench/models.py gpt2-vocab) && \
	PATH="$$PATH:/usr/sbin" $(BIN)/python -u pi-gen-config/boot-check/warm_prompt.py \
	  build/image-check/rootfs build/pi-warm-prompt "$$model" > bench/pi-warm-prompt.txt; \
	status=$$?; cat bench/pi-warm-prompt.txt; exit $$status

# The real image: arm64, built by pi-gen in Docker (not possible on the
# build machines here: no Docker engine), from the same wheels as the checks.
image: wheels-arm64
	test -d build/pi-gen/.git || git clone $(PIGEN_URL) build/pi-gen
	git -C build/pi-gen fetch --quiet origin $(PIGEN_COMMIT) || true
	git -C build/pi-gen checkout --quiet --force $(PIGEN_COMMIT)
	pi-gen-config/stage-files.sh build/wheels-arm64
	rm -rf build/pi-gen/stage-teletype
	cp -r pi-gen-config/stage-teletype build/pi-gen/stage-teletype
	cp pi-gen-config/config build/pi-gen/config
	touch build/pi-gen/stage2/SKIP_IMAGES
	# A failed build leaves pi-gen's container behind, and the next one would refuse to start.
	-docker rm -v pigen_work >/dev/null 2>&1
	cd build/pi-gen && ./build-docker.sh
	# pi-gen's image_DATE-teletype-gpt2.img.xz becomes build/image/teletype-gpt2-DATE.img.xz,
	# with its sha256 and a Raspberry Pi Imager repository (which offers Imager's
	# settings for it: user, Wi-Fi, SSH) once the image is shown to handle them.
	rm -rf build/image && mkdir -p build/image
	set -e; built=$$(ls -t build/pi-gen/deploy/image_*-teletype-gpt2.img.xz | head -1); \
	  date=$$(basename "$$built" | sed -E 's/^image_([0-9-]+)-.*/\1/'); \
	  name=teletype-gpt2-$$date.img.xz; \
	  cp "$$built" build/image/$$name; \
	  (cd build/image && sha256sum $$name > $$name.sha256); \
	  $(PYTHON) pi-gen-config/imager-repo.py build/image/$$name --out build/image --release-date $$date \
	    $(if $(IMAGE_URL_BASE),--url-base $(IMAGE_URL_BASE),--local)
	@echo $(if $(IMAGE_URL_BASE),"Imager repository for $(IMAGE_URL_BASE): publish the files in build/image there","Imager repository with file:// URLs, for this computer only (teletype-gpt2-local.rpi-imager-manifest); set IMAGE_URL_BASE for one that works where it is published")
	@ls -l build/image

wiring: setup
	$(BIN)/python firmware/draw_wiring.py

# A real engine on the embedded model, headless chromium and tmux (test-deps
# installs chromium; tmux: apt-get install tmux).
screenshots: setup test-deps
	$(BIN)/python -m appliance.testing.screenshots

clean:
	rm -rf build
