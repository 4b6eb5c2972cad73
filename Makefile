# The two commands of the README: `make run` and `make test`. Both create .venv when missing
# and install the project (with its test extra) before doing anything else.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: run test lint format bench bench-torch-venv bench-pyod-venv browser nnabla-venv clean

# constraints.txt pins every package at the version the suite last passed with (pip freeze), so a
# fresh install next year gets the same set; pyproject.toml keeps the ranges the code supports.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/appliance run --console

# The console's end-to-end test drives Debian's Chromium; installed here when missing (needs root or sudo).
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
		{ $(SUDO) apt-get install -y -q chromium chromium-driver || \
		  { $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q chromium chromium-driver; }; }

# nnabla 1.39 (the library behind Neural Network Console) needs CPython 3.10: the NNC tests make
# .nnp files with it and run ours in it. Built when a Python 3.10 is found (PATH, then pyenv);
# without one those tests are skipped, except under .ci/run, which requires it.
NNABLA_PYTHON ?= $(shell for p in python3.10 $$HOME/.pyenv/versions/3.10*/bin/python3.10; do \
	"$$p" -c 'import sys; assert sys.version_info[:2] == (3, 10)' 2>/dev/null && { command -v "$$p"; break; }; done)
NNABLA_STAMP := .venv-nnabla/.installed-stamp

$(NNABLA_STAMP): constraints-nnabla.txt
	test -x .venv-nnabla/bin/python || $(NNABLA_PYTHON) -m venv .venv-nnabla
	.venv-nnabla/bin/python -m pip install --quiet --disable-pip-version-check -c constraints-nnabla.txt nnabla==1.39.0
	touch $(NNABLA_STAMP)

nnabla-venv:
	@if [ -n "$(NNABLA_PYTHON)" ]; then $(MAKE) --no-print-directory $(NNABLA_STAMP); \
	else echo "no Python 3.10 found: the nnabla (NNC) tests will be skipped"; fi

test: $(STAMP) browser nnabla-venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest -n 2 --dist loadfile --durations=15 $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .

format: $(STAMP)
	$(BIN)/ruff check --fix .

# PyTorch CPU in a separate venv, used only by benchmarks to compare against.
bench-torch-venv:
	test -x .venv-torch/bin/python || $(PYTHON) -m venv .venv-torch
	.venv-torch/bin/python -m pip install --quiet torch==2.13.0 numpy

# PyOD in a separate venv, the reference of benchmarks/vector_quality.py (PyOD 2.0.5 needs scikit-learn < 1.6).
bench-pyod-venv:
	test -x .venv-pyod/bin/python || $(PYTHON) -m venv .venv-pyod
	.venv-pyod/bin/python -m pip install --quiet pyod==2.0.5 scikit-learn==1.5.2 numpy==2.4.6 scipy==1.17.1

bench: $(STAMP)
	$(BIN)/python benchmarks/engine_bench.py

clean:
	rm -rf $(VENV) .venv-nnabla .pytest_cache .ruff_cache *.egg-info
