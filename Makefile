# trimodal: `make run` (install, build if needed, serve, classify the samples) and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
LOAD_VENV ?= .venv-load
LOAD_INSTALLED := $(LOAD_VENV)/.installed
ANALYZER_VENV ?= .venv-analyzer
ANALYZER_INSTALLED := $(ANALYZER_VENV)/.installed
ANALYZER_PIN := triton-model-analyzer==1.58.* numpy<2
TUNE_ARGS ?=
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_PACKAGES := espeak-ng sox libb64-0d python3-venv
DOCTOR := $(PYTHON) trimodal/doctor.py --venv $(VENV)
PYTEST_ARGS ?=

.PHONY: help doctor preflight install loadtest analyzer tune apt build render run serve test lint unit integration tools bench evidence clean

help:
	@echo "make run    install, build if needed, serve on 8000/8001/8002 and classify the bundled samples"
	@echo "make test   install, build if needed, lint, unit + integration tests (real tritonserver)"
	@echo "make build  dataset -> training -> ONNX -> model_repository (cached)"
	@echo "make bench  benchmarks (see benchmarks/)"
	@echo "make tune   Model Analyzer quick config search of the ONNX models (TUNE_ARGS='fusion_classifier ...')"
	@echo "make evidence  copy the build's and tests' figures into benchmarks/ and re-render README's figures"
	@echo "make doctor preflight: Python, glibc, disk, apt packages, ports, a half-made venv (seconds)"

doctor:
	@$(DOCTOR) --ports 8000,8001,8002

apt:
	@command -v dpkg >/dev/null || exit 0; \
	missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then echo "apt: installing$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing >/dev/null; fi

# The preflight runs first (seconds): it stops on what would fail later and removes a half-made venv.
$(INSTALLED): pyproject.toml
	@$(DOCTOR) --quiet --repair
	@$(MAKE) --no-print-directory apt
	@[ -x $(BIN)/python ] || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	@touch $@

install: $(INSTALLED)

# locust in a venv of its own (the `loadtest` extra: the client + locust, no server; see pyproject.toml).
$(LOAD_INSTALLED): pyproject.toml
	@$(DOCTOR) --venv $(LOAD_VENV) --quiet --repair
	@[ -x $(LOAD_VENV)/bin/python ] || $(PYTHON) -m venv $(LOAD_VENV)
	$(LOAD_VENV)/bin/pip install -q --upgrade pip
	$(LOAD_VENV)/bin/pip install -q -e '.[loadtest]'
	@touch $@

loadtest: $(LOAD_INSTALLED)

# Model Analyzer in a venv of its own: it pins its own tritonclient/protobuf/numpy; numpy<2 as nvidia-pytriton.
$(ANALYZER_INSTALLED):
	@$(DOCTOR) --venv $(ANALYZER_VENV) --quiet --repair
	@[ -x $(ANALYZER_VENV)/bin/python ] || $(PYTHON) -m venv $(ANALYZER_VENV)
	$(ANALYZER_VENV)/bin/pip install -q --upgrade pip
	$(ANALYZER_VENV)/bin/pip install -q $(foreach p,$(ANALYZER_PIN),'$(p)')
	@touch $@

analyzer: $(ANALYZER_INSTALLED)

tune: build analyzer
	$(BIN)/trimodal tune $(TUNE_ARGS)

tools: install
	@if [ -f deploy/tools.sh ]; then bash deploy/tools.sh; fi

build: install
	$(BIN)/trimodal build

render: install
	$(BIN)/trimodal render

run:
	@$(DOCTOR) --quiet --ports 8000,8001,8002
	@$(MAKE) --no-print-directory build
	$(BIN)/trimodal serve --demo

serve: build
	$(BIN)/trimodal serve

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

unit: install
	$(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

integration: build
	$(BIN)/python -m pytest tests/integration $(PYTEST_ARGS)

# preflight first (make builds prerequisites left to right): the doctor's checks before anything is installed
test: preflight build loadtest analyzer tools lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

preflight:
	@$(DOCTOR) --quiet

bench: build
	$(BIN)/trimodal bench

# After `make test` (it writes parity, batching): commit benchmarks/ and README.md afterwards.
evidence: install
	$(BIN)/trimodal evidence --collect --write

clean:
	rm -rf build/data build/checkpoints build/onnx build/features build/stamps build/triton
	find model_repository -path '*/1/*' ! -name model.py ! -name .gitkeep -delete
