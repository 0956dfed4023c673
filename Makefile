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

.PHONY: install promtool run test bench wrk bench-peer clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH_PIP_ARGS) "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[test,bench]"
	touch $(STAMP)

# promtool (Debian's `prometheus` package) lets the tests check the Prometheus config, the alert
# rules and a live /metrics. When it is missing and apt is there, the package is downloaded and only
# promtool is unpacked into the venv (nothing installed system-wide, no server started); without apt
# (or, not root, without apt lists) those tests skip, and fail under CI=true.
promtool: $(STAMP)
	@command -v promtool >/dev/null 2>&1 || test -x $(VENV)/bin/promtool || { \
	  tmp=$$(mktemp -d); \
	  if command -v apt-get >/dev/null 2>&1 && { [ "$$(id -u)" != 0 ] || apt-get update -qq; } \
	     && (cd $$tmp && apt-get download -qq prometheus) && dpkg-deb -x $$tmp/prometheus_*.deb $$tmp/root; then \
	    cp $$tmp/root/usr/bin/promtool $(VENV)/bin/promtool && echo "promtool unpacked into $(VENV)/bin"; \
	  else echo "note: promtool not installed (needs apt-get; Debian's prometheus package): its tests skip" >&2; fi; \
	  rm -rf $$tmp; }

run: install
	$(VENV)/bin/uniroute demo --host 127.0.0.1 --port 8000

# The suite in TEST_WORKERS processes; a file's tests stay in one process (--dist loadfile), so
# module fixtures are built once.
TEST_WORKERS ?= 2
test: install promtool
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile

# wrk (Debian's package) sends benchmarks.peer's load; installed when missing and apt-get runs as
# root. Without it the benchmark falls back to the project's Python load generator.
wrk:
	@command -v wrk >/dev/null 2>&1 || { \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] \
	     && { apt-get install -y -qq wrk >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq wrk; }; }; then \
	    echo "wrk installed"; \
	  else echo "note: wrk not installed (needs apt-get as root): benchmarks.peer uses its Python load generator" >&2; fi; }

# The peer gateway benchmarks.peer compares with: the LiteLLM proxy, in a venv of its own (its many
# pinned dependencies stay out of .venv, so `make test` is unaffected; it runs as its own process
# and needs nothing of uniroute). Without it (no PyPI) the benchmark leaves out the peer column.
PEER_VENV := .venv-peer
LITELLM_SPEC ?= litellm[proxy]==1.108.7
bench-peer:
	@test -x $(PEER_VENV)/bin/litellm || { \
	  { test -x $(PEER_VENV)/bin/python || $(PYTHON) -m venv $(PEER_VENV); } \
	  && $(PEER_VENV)/bin/python -m pip install --quiet "$(LITELLM_SPEC)" \
	  || echo "note: LiteLLM not installed into $(PEER_VENV): benchmarks.peer runs without the peer" >&2; }

# Speed is measured here, never asserted in tests; the figures land in docs/benchmarks.md.
bench: install wrk bench-peer
	$(PY) -m benchmarks.routing_decision
	$(PY) -m benchmarks.gateway --embedder fast --write-docs
	$(PY) -m benchmarks.gateway --embedder accurate --write-docs
	$(PY) -m benchmarks.time_to_routable --write-docs
	$(PY) -m benchmarks.peer --write-docs

clean:
	rm -rf $(VENV) $(PEER_VENV) .pytest_cache
