# Every target installs what it needs into .venv first (no manual set-up on a fresh clone).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed

.PHONY: install lint test

$(INSTALLED): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $@

install: $(INSTALLED)

# ruff: pyflakes (unused names), pycodestyle (line length), import order, bugbear; settings in pyproject.toml.
lint: $(INSTALLED)
	$(VENV)/bin/ruff check .

test: $(INSTALLED)
	$(PY) -m pytest -n 2 --dist loadfile -q tests

# ---- memory plan: `make plan CONFIG=configs/stages/vton_paper.yaml ARCH=sd15 MEMORY=80 [TRAINER=...] [DEVICES=8]`
# TRAINER: one trainer config or several, layered in order over configs/trainer/base.yaml (as the training targets
# and `leffa-pl fit --config base.yaml --config a --config b` do).
CONFIG ?= configs/stages/vton_paper.yaml
ARCH ?= sd15
MEMORY ?= 80
TRAINER_BASE := configs/trainer/base.yaml
TRAINER ?= configs/trainer/gpu.yaml
.PHONY: plan
plan: $(INSTALLED)
	$(PY) -m leffa_pl.planning.plan --stages $(CONFIG) --architecture $(ARCH) --memory-gib $(MEMORY) \
	  --trainer $(TRAINER_BASE) $(TRAINER) $(if $(filter command line,$(origin DEVICES)),--devices $(DEVICES))
	$(PY) -m leffa_pl.planning.disk --stages $(CONFIG) --architecture $(ARCH) --trainer $(TRAINER_BASE) $(TRAINER) \
	  $(if $(filter command line,$(origin DEVICES)),--devices $(DEVICES))

# What fits where (docs/fits.md): each stage of vton_paper (sd15) and pose_paper (sdxl) on one 24, 48, 80 GB GPU and
# on 8 x 80 GB, the levers that make it fit and the largest batch under each (planned; minutes of fake-tensor fits).
.PHONY: plan-fits
plan-fits: $(INSTALLED)
	$(PY) -m leffa_pl.planning.fits --out docs/fits.md

.PHONY: bench-leffa bench-ddp bench-leffa-stage
bench-leffa: $(INSTALLED)
	$(PY) -m benchmarks.bench_leffa

# What the Leffa loss adds to a step: activation bytes per sample (with the tensors it keeps at the peak) and the
# FLOP ratio, SD1.5 under fake tensors at 512x384 and 1024x768 and the tiny model; appended to benchmarks/results/.
bench-leffa-stage: $(INSTALLED)
	$(PY) -m benchmarks.bench_leffa_stage --breakdown

# 2-process CPU DDP step: plain ddp (unreached parameters frozen) vs find_unused_parameters (tiny model).
bench-ddp: $(INSTALLED)
	$(PY) -m benchmarks.bench_ddp

.PHONY: synthetic-data bench-data

# Synthetic VITON-HD + DressCode (256x192) and DeepFashion (220x150) datasets under data/synthetic/;
# existing folders are left alone.
SYNTHETIC := data/synthetic
MAKE_SYNTHETIC := $(PY) -m leffa_pl.data.make_synthetic --out $(SYNTHETIC)
synthetic-data: $(INSTALLED)
	$(MAKE_SYNTHETIC)

bench-data: $(INSTALLED)
	$(PY) -m benchmarks.bench_data

# Epoch start to first batch: training loader rebuilt every epoch vs kept with persistent workers (512x384, 2 workers);
# appended to benchmarks/results/loader_epochs.md.
.PHONY: bench-loader-epochs
bench-loader-epochs: $(INSTALLED)
	$(PY) -m benchmarks.bench_loader_epochs

# ---- training: `make train-vton|train-pose` (embedded demo) or `... DATA=... BASE_MODEL=... [INIT=...] [DEVICES=8]`
# ARGS: more leffa-pl fit arguments, e.g. ARGS="--run.dir=runs/vton1 --trainer.max_steps=20000 --ckpt_path=...".
# RESUME=1: resume the run folder's run from its last.ckpt (after a preemption or a crash).
DATA ?=
BASE_MODEL ?=
INIT ?=
DEVICES ?= 8
ARGS ?=
RESUME ?=
CLI := $(PY) -m leffa_pl.cli
FIT_EXTRA = $(if $(RESUME),--run.resume=true) $(ARGS)

# $(1) run name under runs/, $(2) its configs. Stages 1-2 in one process, then the Leffa stage resumed under
# plain DDP with 2 CPU processes (what never gets a gradient is frozen: leffa_pl/training/trainable.py).
define train_demo
	@echo "            stages 1-2 in one process, the Leffa fine-tune under DDP with 2 CPU processes (gloo)."
	@echo "            Starts afresh: the previous demo run in runs/$(1) is removed (--run.overwrite)."
	$(CLI) fit $(2) --run.dir=runs/$(1) --run.overwrite=true --trainer.max_steps=12 $(ARGS)
	$(CLI) fit $(2) --run.dir=runs/$(1) --trainer.strategy=ddp --trainer.devices=2 --run.resume=true $(ARGS)
endef

# $(1) data config, $(2) stage schedule: the paper's recipe on GPUs (TRAINER: configs/trainer/gpu.yaml, or several
# layered, e.g. TRAINER="configs/trainer/gpu.yaml configs/trainer/gpu_fsdp.yaml" for sharded training; all over
# configs/trainer/base.yaml).
define train_real
	@echo "$@: data $(DATA), base model $(or $(BASE_MODEL),<tiny demo model>), init $(or $(INIT),<base model>)"
	$(CLI) fit $(foreach config,$(TRAINER_BASE) $(TRAINER),--config $(config)) --config $(1) --config $(2) \
	  --data.init_args.root=$(DATA) --trainer.devices=$(DEVICES) \
	  $(if $(BASE_MODEL),--model.base_model=$(BASE_MODEL)) $(if $(INIT),--model.init_checkpoint=$(INIT)) $(FIT_EXTRA)
endef

.PHONY: train-vton train-pose tensorboard
train-vton: $(INSTALLED)
ifeq ($(DATA),)
	@echo "train-vton: no DATA given -> embedded demo: synthetic VITON-HD ($(SYNTHETIC)), tiny model, CPU;"
	test -d $(SYNTHETIC)/zalando-hd-resized || $(MAKE_SYNTHETIC) --datasets vitonhd
	$(call train_demo,vton-demo,--config $(TRAINER_BASE) --config configs/trainer/cpu_demo.yaml \
	  --config configs/data/vitonhd_synthetic.yaml --config configs/stages/vton_demo.yaml)
else
	$(call train_real,configs/data/vitonhd.yaml,configs/stages/vton_paper.yaml)
endif

train-pose: $(INSTALLED)
ifeq ($(DATA),)
	@echo "train-pose: no DATA given -> embedded demo: synthetic DeepFashion ($(SYNTHETIC)), tiny model, CPU;"
	test -d $(SYNTHETIC)/deepfashion || $(MAKE_SYNTHETIC) --datasets deepfashion
	$(call train_demo,pose-demo,--config $(TRAINER_BASE) --config configs/trainer/cpu_demo.yaml \
	  --config configs/data/deepfashion_synthetic.yaml --config configs/stages/pose_demo.yaml)
else
	$(call train_real,configs/data/deepfashion.yaml,configs/stages/pose_paper.yaml)
endif

tensorboard: $(INSTALLED)
	$(PY) -m tensorboard.main --logdir runs

# Peak host RAM while a checkpoint is written: Lightning's BytesIO save vs AtomicCheckpointIO's streamed save.
.PHONY: bench-checkpoint
bench-checkpoint: $(INSTALLED)
	$(PY) -m benchmarks.bench_checkpoint

.PHONY: bench-eval bench-fingerprint bench-preprocess
bench-eval: $(INSTALLED)
	$(PY) -m benchmarks.bench_eval

# SHA-256 of the weights that prediction records in prediction.json: time per GiB.
bench-fingerprint: $(INSTALLED)
	$(PY) -m benchmarks.bench_fingerprint

bench-preprocess: $(INSTALLED)
	$(PY) -m benchmarks.bench_preprocess

# ---- evaluation: predict a test split with a checkpoint, then score it (leffa-pl-evaluate).
# `make eval-vton` / `make eval-deepfashion` with no DATA: the synthetic dataset, the demo export when
# `make train-*` made one, else the tiny model (random weights), few steps on CPU.
# `make eval-vton DATA=... CKPT=... [BASE_MODEL=...] [RES=1024x768] [DATASET=dresscode] [DEVICES=8] [OUT=...]`
CKPT ?=
RES ?=
STEPS ?=
DATASET ?= vitonhd
EVALUATE := $(PY) -m leffa_pl.evaluation.evaluate
VTON_DEMO_CKPT := runs/vton-demo/export/leffa.safetensors
POSE_DEMO_CKPT := runs/pose-demo/export/leffa.safetensors
EVAL_ARGS = $(if $(CKPT),--checkpoint $(CKPT)) $(if $(BASE_MODEL),--base-model $(BASE_MODEL)) $(if $(STEPS),--steps $(STEPS))

.PHONY: eval-vton eval-deepfashion
eval-vton: $(INSTALLED)
ifeq ($(DATA),)
	test -d $(SYNTHETIC)/zalando-hd-resized || $(MAKE_SYNTHETIC) --datasets vitonhd
	@echo "eval-vton: no DATA given -> synthetic VITON-HD ($(SYNTHETIC)/zalando-hd-resized), model:" \
	  "$(or $(wildcard $(VTON_DEMO_CKPT)),tiny model with random weights (no demo export; make train-vton makes one))"
	$(EVALUATE) --dataset vitonhd --data $(SYNTHETIC)/zalando-hd-resized --out runs/eval/vton-demo \
	  --resolution $(or $(RES),128x96) --steps $(or $(STEPS),10) --batch-size 4 --num-workers 1 --accelerator cpu \
	  $(if $(wildcard $(VTON_DEMO_CKPT)),--checkpoint $(VTON_DEMO_CKPT))
else
	$(EVALUATE) --dataset $(DATASET) --data $(DATA) --out $(or $(OUT),runs/eval/$(DATASET)) --resolution $(or $(RES),1024x768) \
	  --pairing both --devices $(DEVICES) $(EVAL_ARGS)
endif

eval-deepfashion: $(INSTALLED)
ifeq ($(DATA),)
	test -d $(SYNTHETIC)/deepfashion || $(MAKE_SYNTHETIC) --datasets deepfashion
	@echo "eval-deepfashion: no DATA given -> synthetic DeepFashion ($(SYNTHETIC)/deepfashion), model:" \
	  "$(or $(wildcard $(POSE_DEMO_CKPT)),tiny model with random weights (no demo export))"
	$(EVALUATE) --dataset deepfashion --data $(SYNTHETIC)/deepfashion --out runs/eval/pose-demo \
	  --resolution $(or $(RES),128x88) --steps $(or $(STEPS),10) --batch-size 4 --num-workers 1 --accelerator cpu \
	  $(if $(wildcard $(POSE_DEMO_CKPT)),--checkpoint $(POSE_DEMO_CKPT))
else
	$(EVALUATE) --dataset deepfashion --data $(DATA) --out $(or $(OUT),runs/eval/deepfashion) --resolution $(or $(RES),256x176) \
	  --devices $(DEVICES) $(EVAL_ARGS)
endif
# ---- experiment and training benchmark (not part of the tests)
.PHONY: exp-flow bench-train
# Held-out attention-flow EPE, fine-tuned with and without the Leffa loss from teacher-seeded inits (tiny model,
# CPU; 17.5 min on the 2-core machine otherwise idle, docs/experiments.md); the figure needs matplotlib
# (`experiments` extra).
EXPERIMENTS_INSTALLED := $(VENV)/.installed-experiments
$(EXPERIMENTS_INSTALLED): $(INSTALLED)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[experiments]'
	touch $@

exp-flow: $(EXPERIMENTS_INSTALLED)
	$(PY) experiments/exp_flow.py

# Training step time and peak memory on CPU, Leffa loss off vs on: tiny; SD1.5 size beside the planner's prediction;
# the SDXL size's planned parameter memory. `make bench-train ROWS=sd15` for some of them (tiny sd15 sdxl).
ROWS ?=
bench-train: $(INSTALLED)
	$(PY) -m benchmarks.bench_train $(if $(ROWS),--rows $(ROWS))

# One GPU, under 8 minutes: SD1.5 size at 512x384 and 1024x768, paper settings, Leffa off/on, ddp vs single device,
# peak memory beside the planner's, samples/s, MFU (not run yet: no GPU was available).
.PHONY: bench-gpu
bench-gpu: $(INSTALLED)
	$(PY) -m benchmarks.bench_gpu

# Channels-last and torch.compile (inductor) on the training step: eager / channels_last / compile / both (tiny, CPU).
.PHONY: bench-levers
bench-levers: $(INSTALLED)
	$(PY) -m benchmarks.bench_levers
