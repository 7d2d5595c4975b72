# Quick start: `make demo` (predict with the bundled model) and `make test` (the test suite).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup demo test test-fast gpu-check clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e '.[torch,openvino,ray,triton,dev]'
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(VENV)/bin/segrt predict examples/images --out predictions --overlay

test: setup
	$(PY) -m pytest -q

test-fast: setup
	$(PY) -m pytest -q -m "not slow"

# on a machine with an NVIDIA GPU: install onnxruntime-gpu, run every GPU path, record the results
# in benchmarks/results/gpu-*; elsewhere one line and exit 0
gpu-check: setup
	$(PY) benchmarks/gpu_check.py

clean:
	rm -rf $(VENV) predictions .pytest_cache
