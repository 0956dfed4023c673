# The two set-up commands of the README. Both create and reuse .venv in the repo.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# The CPU build of torch, pinned: plain `torch` from PyPI is a multi-GB CUDA build.
# Elsewhere, point pip at PyTorch's CPU wheel index with TORCH_PIP_ARGS="--index-url <that index>".
TORCH_SPEC ?= torch==2.13.0
TORCH_PIP_ARGS ?=
STAMP := $(VENV)/.uniroute-installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: install run test bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH_PIP_ARGS) "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[test,bench]"
	touch $(STAMP)

run: install
	$(VENV)/bin/uniroute demo --host 127.0.0.1 --port 8000

test: install
	$(PY) -m pytest -q

# Speed is measured here, never asserted in tests; the figures land in docs/benchmarks.md.
bench: install
	$(PY) -m benchmarks.routing_decision
	$(PY) -m benchmarks.gateway --embedder fast --write-docs
	$(PY) -m benchmarks.gateway --embedder accurate --write-docs
	$(PY) -m benchmarks.time_to_routable --write-docs

clean:
	rm -rf $(VENV) .pytest_cache
