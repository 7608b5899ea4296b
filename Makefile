# `make demo` and `make test` do all set-up on a fresh machine: a venv, torch pinned first, then the package.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test install bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip

# torch goes in first so nothing that depends on it resolves a newer (CUDA) build from the registry.
$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install "$(TORCH_SPEC)"
	$(PY) -m pip install -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	WANDB_MODE=offline $(VENV)/bin/dllm-compare

test: $(STAMP)
	WANDB_MODE=disabled HF_HUB_OFFLINE=1 $(PY) -m pytest -q tests

bench: $(STAMP)
	$(VENV)/bin/dllm-bench

clean:
	rm -rf $(VENV) build dist *.egg-info outputs multirun
