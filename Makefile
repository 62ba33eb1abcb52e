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

# ---- training: `make train-vton` (embedded demo) or `make train-vton DATA=... BASE_MODEL=... [INIT=...] [DEVICES=8]`
DATA ?=
BASE_MODEL ?=
INIT ?=
DEVICES ?= 8
CLI := $(PY) -m leffa_pl.cli
DEMO := --config configs/trainer/cpu_demo.yaml --config configs/data/vitonhd_sample.yaml --config configs/stages/vton_demo.yaml

.PHONY: train-vton tensorboard
train-vton: $(INSTALLED)
ifeq ($(DATA),)
	@echo "train-vton: no DATA given -> embedded demo: generated VITON-HD sample (data/sample), tiny model, CPU;"
	@echo "            stages 1-2 in one process, the Leffa fine-tune under DDP with 2 CPU processes (gloo)."
	test -d data/sample/zalando-hd-resized || $(PY) -m leffa_pl.data.sample_vton --out data/sample
	$(CLI) fit $(DEMO) --trainer.max_steps=20
	$(CLI) fit $(DEMO) --trainer.strategy=ddp --trainer.devices=2 --ckpt_path=runs/vton-demo/checkpoints/last.ckpt
else
	@echo "train-vton: data $(DATA), base model $(or $(BASE_MODEL),<tiny demo model>), init $(or $(INIT),<base model>)"
	$(CLI) fit --config configs/trainer/gpu.yaml --config configs/data/vitonhd.yaml --config configs/stages/vton_paper.yaml \
	  --data.init_args.root=$(DATA) --trainer.devices=$(DEVICES) \
	  $(if $(BASE_MODEL),--model.base_model=$(BASE_MODEL)) $(if $(INIT),--model.init_checkpoint=$(INIT))
endif

tensorboard: $(INSTALLED)
	$(PY) -m tensorboard.main --logdir runs
.PHONY: bench-eval
bench-eval: $(INSTALLED)
	$(PY) benchmarks/bench_eval.py

# ---- experiment and training benchmark (not part of the tests)
.PHONY: exp-flow bench-train
# Attention-flow EPE vs the ground truth, fine-tuned with and without the Leffa loss (tiny model, CPU, ~10 min).
exp-flow: $(INSTALLED)
	$(PY) experiments/exp_flow.py

# Training step time and peak memory, Leffa loss off vs on (tiny on CPU; + SD1.5-sized UNets with CUDA).
bench-train: $(INSTALLED)
	$(PY) benchmarks/bench_train.py
