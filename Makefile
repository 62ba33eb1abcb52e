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

.PHONY: bench-leffa
bench-leffa: $(INSTALLED)
	$(PY) benchmarks/bench_leffa.py

.PHONY: sample-data bench-data

# Generated VITON-HD + DressCode sample (256x192) under data/sample/; existing folders are left alone.
sample-data: $(INSTALLED)
	$(PY) -m leffa_pl.data.sample_vton --out data/sample

bench-data: $(INSTALLED)
	$(PY) benchmarks/bench_data.py
