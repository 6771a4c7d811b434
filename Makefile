# livedrag: two commands do all set-up on a fresh machine.
#   make serve  -> http://127.0.0.1:8000 with the embedded default model
#   make test   -> every test (Python, JS protocol, browser)
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8000
# glibc malloc fragments badly under PyTorch's CPU allocation pattern (see docs/BENCHMARKS.md)
export MALLOC_MMAP_MAX_ ?= 0
export MALLOC_TRIM_THRESHOLD_ ?= 68719476736
export MALLOC_TOP_PAD_ ?= 1073741824
# OpenMP threads that spin while waiting make PyTorch 15-40x slower on a busy machine
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: venv serve test lint clean

$(VENV)/.installed: pyproject.toml scripts/bootstrap.sh
	bash scripts/bootstrap.sh $(VENV)
	touch $@

venv: $(VENV)/.installed

serve: venv
	$(VENV)/bin/livedrag serve --host $(HOST) --port $(PORT)

test: venv
	bash scripts/test.sh

lint: venv
	$(VENV)/bin/ruff check server tests scripts
	$(VENV)/bin/ruff format --check server tests scripts

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
