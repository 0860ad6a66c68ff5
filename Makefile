# The README's two commands: `make demo` (the main job) and `make test`. Each does its own set-up on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# torch/torchvision pinned to the wheels this project's machines hold on disk (see README, "Installing").
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1
RUN ?= runs/demo
BUNDLE ?= bundles/demo

.PHONY: install test lint demo gpu-check clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_PINS)
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

test: install
	$(PY) -m pytest -q

lint: install
	$(VENV)/bin/ruff check .

demo: install
	$(PY) -m resnet_deploy.cli info

gpu-check: install
	@echo "gpu-check: filled in by the training and export issues"

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
