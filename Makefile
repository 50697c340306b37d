# `make run` sets up a virtual environment and runs the main job on the embedded MNIST sample;
# `make test` sets it up and runs the test suite (what CI runs through .ci/run).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test setup clean

$(BIN)/advgen: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -e '.[test]'
	@touch $@

setup: $(BIN)/advgen

run: setup
	$(BIN)/advgen evaluate --out runs/evaluate --overwrite

test: setup
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) runs .pytest_cache
