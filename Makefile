# Quick start: `make demo` (predict with the bundled model; installs no torch) and `make test`
# (the full install and the test suite).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup demo test test-fast docs docs-build gpu-check clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

# what predict needs: the base package (numpy, pillow, click, tqdm, onnx, onnxruntime, threadpoolctl, isal; no torch)
$(VENV)/.base: pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install -q -e .
	touch $@

# everything: export, training, OpenVINO, TIFF stacks, serve, Ray, Triton client, smp models, tests, docs (torch with CUDA wheels: ~5 GB)
$(VENV)/.installed: pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e '.[torch,openvino,tiff,serve,ray,triton,smp,dev,docs]'
	touch $@ $(VENV)/.base

setup: $(VENV)/.installed

demo: $(VENV)/.base
	$(VENV)/bin/segrt predict examples/images --out predictions --overlay

# then as an AVX2-only CPU would see it (no VNNI, no bf16: segrt's one capability probe, patched), the
# fast suite and the OpenVINO and bundled-model tests: what this CPU cannot run is skipped, never a failure
test: setup
	$(PY) -m pytest -q
	$(MAKE) docs-build
	SEGRT_SIMULATE_ISA=avx2 $(PY) -m pytest -q -m "not slow"
	SEGRT_SIMULATE_ISA=avx2 $(PY) -m pytest -q tests/test_openvino.py tests/test_default_model.py

# the documentation site: strict (a broken link or a page left out of the navigation fails the build)
docs-build: setup
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet

docs: docs-build
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs serve --dev-addr 127.0.0.1:8001

test-fast: setup
	$(PY) -m pytest -q -m "not slow"

# the GPU check (benchmarks/gpu_check.py): offline, with the machine's own packages, one device call
# of at most 540 s, results in $$OUT (else benchmarks/results/); elsewhere one line and exit 0
gpu-check:
	PYTHONPATH=. $(PYTHON) benchmarks/gpu_check.py

clean:
	rm -rf $(VENV) predictions .pytest_cache site
