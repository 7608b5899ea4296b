# `make demo` and `make test` do all set-up on a fresh machine: a venv, torch pinned first, then the package.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test install bench clean sandbox-deps

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip

# torch goes in first so nothing that depends on it resolves a newer (CUDA) build from the registry.
$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install "$(TORCH_SPEC)"
	$(PY) -m pip install -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

# the main job scores mbpp_synth programs, so it needs the sandbox too
demo: $(STAMP) sandbox-deps
	WANDB_MODE=offline $(VENV)/bin/dllm-compare

# MBPP programs run under bubblewrap (eval/sandbox.py). As root with apt-get (CI), install it when missing;
# otherwise say so: the sandbox tests then skip with the reason, and MBPP scoring (mbpp_synth in `make demo`
# included) refuses to run.
sandbox-deps:
	@command -v bwrap >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap >/dev/null || \
	    echo "WARNING: could not install bubblewrap; the sandbox tests will skip"; \
	  else \
	    echo "WARNING: bubblewrap (bwrap) is missing: install it (apt-get install bubblewrap) or the sandbox tests skip"; \
	  fi; }

test: $(STAMP) sandbox-deps
	WANDB_MODE=disabled HF_HUB_OFFLINE=1 $(PY) -m pytest -q tests

bench: $(STAMP)
	$(VENV)/bin/dllm-bench

clean:
	rm -rf $(VENV) build dist *.egg-info outputs multirun
