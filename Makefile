# The front door. `make` alone lists the targets.
#
# Variables (override on the command line, e.g. `make model CORPUS=path`):
#   PYTHON   the interpreter that creates the venv              (python3)
#   CORPUS   training text: a local path or an http(s) URL      (the Teletype manuals by URL)
#   BUILD    where the model pipeline writes its work           (build/model)
#   MODEL    a GGUF for `make eval`                             (the embedded model)
#   PYTEST   extra arguments for pytest                         (none)

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# The demo needs only what the Pi installs: no torch, no transformers.
APPLIANCE_STAMP := $(VENV)/.installed-appliance
BUILD  ?= build/model
CORPUS ?=
MODEL  ?= models/teletype-tiny.q8_0.gguf
PYTEST ?=
CONVERT := $(BIN)/python -m convert

corpus_arg = $(if $(CORPUS),--corpus $(CORPUS),)

.DEFAULT_GOAL := help
.PHONY: help setup system-deps demo test lint bench model model-sweep gguf quantize eval clean

help:
	@echo "make demo         set up, then run the appliance on the embedded model"
	@echo "make test         set up, then ruff and the whole test suite"
	@echo "make setup        create .venv and install (a no-op when nothing changed)"
	@echo "make bench        measure the demo and the engine (bench/*.md)"
	@echo "make model        corpus -> tokenizer -> train -> GGUF -> quantise -> eval -> models/"
	@echo "make model-sweep  measure validation loss against model size and time (for the card)"
	@echo "make gguf         $(BUILD)/hf -> $(BUILD)/gguf/model.f32.gguf and .f16.gguf"
	@echo "make quantize     $(BUILD)/gguf/model.f16.gguf -> Q8_0, Q6_K, Q5_K_M, Q4_K_M"
	@echo "make eval         perplexity table of every GGUF in $(BUILD)/gguf against the HF model"
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

# Reinstall only when the project's dependencies change.
$(STAMP): pyproject.toml | system-deps
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[convert,dev]'
	touch $@ $(APPLIANCE_STAMP)

$(APPLIANCE_STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e .
	touch $@

demo: $(APPLIANCE_STAMP)
	$(BIN)/teletype demo

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint
	$(BIN)/python -m pytest $(PYTEST)

bench: setup
	$(BIN)/python bench/virtual_teletype.py
	$(BIN)/python bench/engine.py

model: setup
	$(CONVERT) model $(corpus_arg) --build $(BUILD) --out models

model-sweep: setup
	$(CONVERT) sweep $(corpus_arg) --build build/sweep --out models/size-sweep.json

gguf: setup
	$(CONVERT) gguf $(BUILD)/hf --out $(BUILD)/gguf/model.f32.gguf --type f32
	$(CONVERT) gguf $(BUILD)/hf --out $(BUILD)/gguf/model.f16.gguf --type f16

quantize: setup
	$(CONVERT) quantize $(BUILD)/gguf/model.f16.gguf --out-dir $(BUILD)/gguf

eval: setup
	$(CONVERT) eval $(BUILD)/gguf/*.gguf --hf $(BUILD)/hf --validation $(BUILD)/corpus/validation.txt

clean:
	rm -rf build
