"""``make plan-fits``: what fits where. For every stage of the paper's two schedules (try-on: vton_paper, SD1.5;
pose transfer: pose_paper, SDXL) on one 24, 48 or 80 GB GPU and on 8 x 80 GB: whether it fits as configured
(``configs/trainer/gpu.yaml``), which levers make it fit, and the largest per-device batch under each lever
combination. Planned, not measured: every number comes from ``leffa_pl.planning.plan`` (its default headroom).

Levers, in a fixed order of preference (cheapest in quality first), cumulative: each column adds one to the one
before, except that LoRA replaces the trainable subset and FSDP (LoRA refused there) goes back to the full trainable
set (``LADDER``). Gradient checkpointing, the first lever, is already on in gpu.yaml, so it is in "as configured".

    python -m leffa_pl.planning.fits --out docs/fits.md
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import hashlib
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from leffa_pl.callbacks.stage_schedule import Stage
from leffa_pl.config import TRAINER_BASE
from leffa_pl.planning.activations import StepActivations, StepSettings, fit_activation_model
from leffa_pl.planning.plan import (
    GIB,
    HEADROOM,
    StagePlan,
    TrainingSetup,
    build_model,
    plan_stage,
    read_setup,
    read_stages,
    static_memory,
)
from leffa_pl.revision import commit

ROOT = Path(__file__).resolve().parents[2]
GPU_YAML, FSDP_YAML = Path("configs/trainer/gpu.yaml"), Path("configs/trainer/gpu_fsdp.yaml")
LORA_YAML = Path("configs/model/lora.yaml")
SCHEDULES = ((Path("configs/stages/vton_paper.yaml"), "sd15"), (Path("configs/stages/pose_paper.yaml"), "sdxl"))
PAPER_DEVICES = 8  # the schedules' global batches are batch x accumulation x gpu.yaml's 8 devices
# Lower LoRA ranks take the activations of this rank's fit: an upper bound (the adapters' intermediates grow with
# the rank, the rest is the same), which spares a fit per rank; their weights, gradients and optimizer are exact.
FIT_LORA_RANK = 64
ACCURACY = "benchmarks/results/train_cpu.md"  # measured / planned peaks (bench_train.py, SD1.5 size on CPU)
# What the table is computed from: this code, and what the configs resolve to through leffa-pl's parser (each
# rung's training setup, each schedule's stages; inputs_digest), so that a comment or a setting the planner does not
# read leaves it alone. When one changes, tests/test_fits.py asks for docs/fits.md to be regenerated.
INPUTS = ("leffa_pl/planning/fits.py", "leffa_pl/planning/plan.py", "leffa_pl/planning/activations.py",
          "leffa_pl/planning/memory_probe.py", "leffa_pl/model/presets.py", "leffa_pl/model/lora.py",
          "leffa_pl/training/trainable.py", "leffa_pl/training/sharding.py")


@dataclass(frozen=True)
class Gpus:
    devices: int
    memory_gib: float

    def __str__(self) -> str:
        return f"{self.devices} x {self.memory_gib:g} GB"


GPUS = (Gpus(1, 24), Gpus(1, 48), Gpus(1, 80), Gpus(8, 80))


@dataclass(frozen=True)
class Rung:
    """A lever combination: trainer configs layered in order, then the optimizer, trainable set or LoRA rank."""

    label: str
    trainers: tuple[Path, ...] = (TRAINER_BASE, GPU_YAML)
    optimizer: str | None = None
    trainable: str | None = None
    lora_rank: int | None = None
    sharded: bool = False  # FSDP: only with several devices

    def setup(self, devices: int) -> TrainingSetup:
        base = read_setup([ROOT / path for path in self.trainers], devices)
        changes = {"optimizer": self.optimizer, "trainable": self.trainable}
        if self.lora_rank:
            changes["lora"] = dataclasses.replace(base.lora, rank=self.lora_rank, alpha=self.lora_rank)
        return dataclasses.replace(base, **{key: value for key, value in changes.items() if value})


LADDER = (
    Rung("as configured"),
    Rung("+ adamw8bit", optimizer="adamw8bit"),
    Rung("+ generative only", optimizer="adamw8bit", trainable="generative"),
    Rung("LoRA r64 + adamw8bit", (TRAINER_BASE, GPU_YAML, LORA_YAML), optimizer="adamw8bit"),
    Rung("LoRA r16 + adamw8bit", (TRAINER_BASE, GPU_YAML, LORA_YAML), optimizer="adamw8bit", lora_rank=16),
    Rung("FSDP + adamw8bit, EMA off", (TRAINER_BASE, GPU_YAML, FSDP_YAML), optimizer="adamw8bit", sharded=True),
)


@functools.cache
@functools.cache
def _activations(architecture: str, setup: TrainingSetup, leffa_loss: bool) -> StepActivations:
    """The fitted activation model (``setup``: see ``_activation_setup``)."""
    model = build_model(architecture, setup.trainable, setup.lora)  # the fit turns it into fake tensors
    return fit_activation_model(model, StepSettings(leffa_loss, setup.gradient_checkpointing, setup.precision))


def _activation_setup(setup: TrainingSetup) -> TrainingSetup:
    """``setup`` without what does not change the activations (optimizer, devices, strategy, EMA), and LoRA below
    ``FIT_LORA_RANK`` at that rank: one fake-tensor fit each (minutes at SDXL size)."""
    lora = setup.lora
    if lora is not None and lora.rank < FIT_LORA_RANK:
        lora = dataclasses.replace(lora, rank=FIT_LORA_RANK, alpha=FIT_LORA_RANK)
    return TrainingSetup(1, "ddp", setup.precision, setup.gradient_checkpointing, setup.trainable, "adamw", False,
                         lora)


def plan_cell(architecture: str, stage: Stage, rung: Rung, gpus: Gpus, headroom: float = HEADROOM
              ) -> StagePlan | None:
    """The planner's plan of ``stage`` under ``rung`` on ``gpus`` (None: FSDP on one device), its accumulation
    chosen to keep the paper's global batch (that of 8 devices)."""
    if rung.sharded and gpus.devices == 1:
        return None
    setup = rung.setup(gpus.devices)
    static = static_memory(build_model(architecture, setup.trainable, setup.lora), setup)
    activations = _activations(architecture, _activation_setup(setup), stage.leffa_loss)
    paper = dataclasses.replace(stage, accumulate_grad_batches=stage.accumulate_grad_batches * PAPER_DEVICES
                                // gpus.devices)
    return plan_stage(paper, static, activations, setup, gpus.memory_gib * GIB * (1 - headroom))


def first_fitting(plans: list[StagePlan | None]) -> tuple[int | None, int | None]:
    """Index of the first rung that fits the configured batch, and of the first that fits a batch keeping the
    paper's global batch by accumulation (None: none does)."""
    configured = next((i for i, plan in enumerate(plans) if plan and plan.fits), None)
    at_all = next((i for i, plan in enumerate(plans) if plan and plan.accumulation_for_global), None)
    return configured, at_all


def table_row(stage: Stage, gpus: Gpus, plans: list[StagePlan | None]) -> str:
    cells = ["-" if plan is None else f"**{plan.largest_batch}**" if plan.fits else str(plan.largest_batch)
             for plan in plans]
    configured, at_all = first_fitting(plans)
    smaller = "nothing fits"
    if at_all is not None:
        batch, accumulation = plans[at_all].accumulation_for_global
        smaller = f"{LADDER[at_all].label}: {batch} x {accumulation} accum"
    return (f"| {stage.name}{' (Leffa)' if stage.leffa_loss else ''} {stage.resolution[0]}x{stage.resolution[1]}, "
            f"batch {stage.batch_size} | {gpus} | {' | '.join(cells)} "
            f"| {'none' if configured is None else LADDER[configured].label} | {smaller} |")


def static_table(architecture: str) -> list[str]:
    """Per-device GiB that do not depend on the batch, per rung (single device; FSDP on 8)."""
    lines = ["| levers | trainable parameters | weights | gradients | optimizer | EMA | total |",
             "|---|---|---|---|---|---|---|"]
    for rung in LADDER:
        setup = rung.setup(PAPER_DEVICES if rung.sharded else 1)
        model = build_model(architecture, setup.trainable, setup.lora)
        static = static_memory(model, setup)
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        lines.append(f"| {rung.label} | {trainable:,} | {static.weights / GIB:.1f} | {static.gradients / GIB:.1f} "
                     f"| {static.optimizer / GIB:.1f} | {static.ema / GIB:.1f} | {static.total / GIB:.1f} |")
    return lines


def schedule_section(stages_path: Path, architecture: str, gpus_list: tuple[Gpus, ...] = GPUS) -> str:
    stages = read_stages(ROOT / stages_path)
    lines = [f"## {stages_path} ({architecture})", "", *static_table(architecture), "",
             "Largest batch per device under each lever combination (bold: the configured batch fits; 0: not one "
             "sample; -: FSDP needs several devices), the first combination that fits the configured batch, and "
             "the first that fits a smaller batch with the accumulation keeping the paper's global batch:", "",
             f"| stage | GPUs | {' | '.join(rung.label for rung in LADDER)} | fits the configured batch "
             "| fits at all (batch x accumulation) |",
             "|---" * (len(LADDER) + 4) + "|"]
    for stage in stages:
        lines += [table_row(stage, gpus, [plan_cell(architecture, stage, rung, gpus) for rung in LADDER])
                  for gpus in gpus_list]
    return "\n".join(lines)


def inputs_digest() -> str:
    """SHA-256 (first 16 hex digits) of ``INPUTS`` (names and contents), the training setup of every rung and the
    stages of every schedule, as read from the configs."""
    digest = hashlib.sha256()
    for name in INPUTS:
        digest.update(name.encode() + b"\0" + (ROOT / name).read_bytes() + b"\0")
    for rung in LADDER:  # the device count is the rung's own (Gpus): only what the configs set is digested
        digest.update(f"{rung.label}: {rung.setup(PAPER_DEVICES)!r}\0".encode())
    for stages, architecture in SCHEDULES:
        digest.update(f"{stages} {architecture}: {read_stages(ROOT / stages)!r}\0".encode())
    return digest.hexdigest()[:16]


def header() -> str:
    levers = ", ".join(rung.label for rung in LADDER)
    return f"""# What fits where: the paper's schedules on 24, 48, 80 GB and 8 x 80 GB GPUs

**Planned, not measured.** Generated by `make plan-fits` (`python -m leffa_pl.planning.fits --out docs/fits.md`,
`leffa_pl/planning/fits.py`) at commit {commit()}; inputs digest {inputs_digest()} (the planner, presets, trainable
set, and the settings and stages it reads from the configs through `leffa-pl fit`'s parser: `tests/test_fits.py` fails
when they change until this file is regenerated).

Every number is the memory planner's (`leffa_pl/planning/plan.py`, [performance.md](performance.md), *Memory plan*,
with its default {HEADROOM:.0%} headroom): weights, gradients, optimizer state and EMA exact on the meta device,
activations from its fitted fake-tensor model, bf16-mixed as in `configs/trainer/gpu.yaml`. How close the planner
comes to measured peaks (measured / planned, SD1.5 size on CPU):
[{ACCURACY}](../{ACCURACY}); no GPU measurement yet. "Largest batch" extrapolates the activation model far beyond
its small fit sizes and is optimistic at large batches (performance.md); the configured batches are the
better-founded cells. GB here are the planner's GiB (`--memory-gib`).

Levers, in order of preference, cumulative ({levers}):
- gradient checkpointing: already on in gpu.yaml (`model.gradient_checkpointing`), so part of "as configured";
- `model.optimizer: adamw8bit` (bitsandbytes, CUDA only; guarded, [non_finite_guard.md](non_finite_guard.md));
- `model.trainable: generative`: the reference UNet frozen (the other subset, `self_attention`, is not in the table);
- LoRA ([lora.md](lora.md), `configs/model/lora.yaml`: generative UNet's self-attention, frozen base in bf16) at
  rank 64, then 16; it replaces the trainable subset (rank 16's activations are rank 64's, an upper bound:
  `FIT_LORA_RANK` in fits.py);
- FSDP (`configs/trainer/gpu_fsdp.yaml`, 8 devices only): the full trainable set sharded; EMA off (LeffaEMA refuses
  FSDP) and no LoRA (refused under FSDP).

Single GPUs keep the paper's global batch (that of 8 devices) by gradient accumulation; under DDP, 8 x 80 GB holds
per device what 1 x 80 GB does. Regenerate: `make plan-fits`.
"""


def render() -> str:
    return header() + "".join(f"\n{schedule_section(stages, architecture)}\n" for stages, architecture in SCHEDULES)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, help="write the table here (default: print it)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    text = render()
    if args.out:
        args.out.write_text(text)
    else:
        print(text)
    print(f"plan-fits: {len(SCHEDULES)} schedules x {len(GPUS)} GPU setups x {len(LADDER)} lever combinations in "
          f"{time.perf_counter() - started:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
