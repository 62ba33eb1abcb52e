# Every target installs what it needs into .venv first (no manual set-up on a fresh clone).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed

.PHONY: install test

$(INSTALLED): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $@

install: $(INSTALLED)

test: $(INSTALLED)
	$(PY) -m pytest -n 2 --dist loadfile -q tests

.PHONY: bench-eval
bench-eval: $(INSTALLED)
	$(PY) benchmarks/bench_eval.py
