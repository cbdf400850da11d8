# make test / make demo set everything up themselves: a .venv at the repository root,
# the CPU build of torch first (so pip never pulls a multi-GB CUDA build), then the package.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: test demo lint benchmark clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(STAMP): $(PY) pyproject.toml
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

lint: $(STAMP)
	$(PY) -m ruff check .

test: $(STAMP) lint
	$(PY) -m pytest

# The main job: the shipped learned optimizers beside tuned Adam (the reference task and a
# held-out CNN), the shipped INR editors against
# the baselines (table + figure of edited digits), then the core's graph demo.
demo: $(STAMP)
	$(PY) -m lopt.demo --out runs/demo/lopt
	$(PY) -m editing.demo --limit 64 --out runs/demo/editing
	$(PY) -m graphs.demo

benchmark: $(STAMP)
	$(PY) -m benchmarks.graph_core

clean:
	rm -rf $(VENV) build *.egg-info
