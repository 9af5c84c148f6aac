# trimodal: `make run` (install, build if needed, serve, classify the samples) and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_PACKAGES := espeak-ng sox libb64-0d
PYTEST_ARGS ?=

.PHONY: help install apt build render run serve test lint unit integration tools bench clean

help:
	@echo "make run    install, build if needed, serve on 8000/8001/8002 and classify the bundled samples"
	@echo "make test   install, build if needed, lint, unit + integration tests (real tritonserver)"
	@echo "make build  dataset -> training -> ONNX -> model_repository (cached)"
	@echo "make bench  benchmarks (see benchmarks/)"

apt:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then echo "apt: installing$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing >/dev/null; fi

$(INSTALLED): pyproject.toml
	@$(MAKE) --no-print-directory apt
	@[ -x $(BIN)/python ] || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	@touch $@

install: $(INSTALLED)

tools: install
	@if [ -f deploy/tools.sh ]; then bash deploy/tools.sh; fi

build: install
	$(BIN)/trimodal build

render: install
	$(BIN)/trimodal render

run: build
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

test: build tools lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: build
	$(BIN)/trimodal bench

clean:
	rm -rf build/data build/checkpoints build/onnx build/features build/stamps build/triton
	find model_repository -path '*/1/*' ! -name model.py ! -name .gitkeep -delete
