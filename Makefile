# Two commands a researcher needs: `make demo` and `make test` (see README.md).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed-stamp

.PHONY: demo test test-slow venv clean-demo bench

# Create the venv and install the package (editable) with the tested versions.
$(STAMP): setup.cfg pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

# The behaviour suite (under 4 minutes on 2 cores): everything not marked slow, on
# TEST_WORKERS pytest-xdist workers that steal work from each other; the expensive fixtures
# are built once per run for all workers (tests/conftest.py).
TEST_WORKERS ?= 2
test: $(STAMP)
	$(PY) -m pytest -q --durations=15 -n $(TEST_WORKERS) --dist worksteal tests

# The slow set: torch-fidelity equivalence on the real Inception architecture, the torchrun
# tests and the learnability tests. CI runs it after `make test`.
test-slow: $(STAMP)
	$(PY) -m pytest -q --durations=15 -m slow tests

# MTF_CACHE_DIR (metric and classifier caches, weights hashes) inside demo-out: the demo writes
# nothing under the home folder, and `make clean-demo` removes it all.
demo: $(STAMP)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" MTF_CACHE_DIR="$(CURDIR)/demo-out/cache" bash scripts/demo.sh demo-out

clean-demo:
	rm -rf demo-out
