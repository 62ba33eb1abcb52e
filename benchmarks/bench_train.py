"""Training step time and peak memory, Leffa loss off vs on, through the real Lightning training step (CPU).

Each configuration runs in a fresh subprocess: a ``Trainer`` (gradient clipping 1.0, as configs/trainer)
with a one-stage ``StageSchedule`` fits ``LeffaModule`` on an in-memory batch of contract samples, so a
step is ``LeffaModule.training_step`` (VAE encoding, both UNets, losses) + backward + clipping + optimizer.
Time: median over the steps after the warm-up (CUDA: synchronised). Memory: CPU, the process's
resident-set high-water mark over the timed steps (VmHWM reset after the warm-up, so weights, gradients
and optimizer state are in it); CUDA, ``torch.cuda.max_memory_allocated`` over the timed steps.

With the Leffa loss on, every sample takes the loss (theta_timestep = 1000, no reference dropout): the
worst case, which sets the memory a stage needs; with the paper's theta_timestep = 500 about half the
samples of a batch do.

Rows (``--rows``, default all):

- ``tiny``: the tiny model at the demo stages' resolutions, AdamW.
- ``sd15``: the SD1.5-size model (``leffa_pl.planning.plan.ARCHITECTURES["sd15"]``: random weights, nothing
  downloaded, 2 x 860M UNet parameters) at 256x192 and 384x288, batch 1, fp32, gradient checkpointing, two
  trainable sets: both UNets (full training) with plain SGD (``SGDLeffaModule``: no optimizer state, so
  weights + gradients fit a 24 GiB machine; AdamW's two moments would add 12 GiB), and LoRA rank 64
  (``model.trainable=lora``, ``configs/model/lora.yaml``'s targets, frozen base in fp32: CPU trains in fp32)
  with AdamW; beside the planner's prediction (``plan.step_peak``: weights, gradients, optimizer state exact from
  ``plan.static_memory``, activations from the activation model fitted for that setting). The process's baseline
  RSS (Python, the torch/Lightning/diffusers libraries, before the model is built) is not in the planner: it is
  measured and shown apart.
- ``sdxl``: the SDXL-size architecture built on the meta device; the planner's parameter, gradient and
  optimizer memory under the GPU trainer configs (nothing is run).

The GPU rows (SD1.5 size at 512x384 and 1024x768, bf16, DDP) are ``benchmarks/bench_gpu.py``, which imports
the pieces here (``Config``, ``measure_in_subprocess``, ``planner_prediction``, ...).

    python -m benchmarks.bench_train                     # make bench-train
    python -m benchmarks.bench_train --rows sd15         # make bench-train ROWS=sd15
    python -m benchmarks.bench_train --rows sd15 --leffa on --threads 2

Each run is appended to benchmarks/results/train_cpu.md with the machine, load, commit and command.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, Dataset
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop, sdpa_flop

from benchmarks.common import REPO_ROOT, recorded, rerun_command
from leffa_pl.callbacks.stage_schedule import Stage, StageSchedule
from leffa_pl.config import TRAINER_BASE
from leffa_pl.losses.leffa_loss import LeffaLossSettings
from leffa_pl.model.lora import LoraSettings
from leffa_pl.planning.activations import StepActivations, StepSettings, probe_step
from leffa_pl.planning.plan import (
    ARCHITECTURES,
    GIB,
    StaticMemory,
    TrainingSetup,
    build_model,
    fit_activations,
    read_setup,
    static_memory,
    step_peak,
)
from leffa_pl.testing.training import SGDLeffaModule
from leffa_pl.training.leffa_module import LeffaModule

ROWS = ("tiny", "sd15", "sdxl")


def _raw_formula(formula):
    """A formula of torch.utils.flop_counter (already taking tensors) for ``custom_mapping``, not wrapped again."""
    def counted(*args, **kwargs):
        return formula(*args, **kwargs)
    counted._get_raw = True
    return counted


# PyTorch's counter knows the CUDA attention kernels only; CPU flash attention has the same arguments and FLOPs.
CPU_ATTENTION_FLOPS = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _raw_formula(sdpa_flop),
                       torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward:
                           _raw_formula(sdpa_backward_flop)}


@dataclass
class Config:
    model: str  # a key of plan.ARCHITECTURES: "tiny", "sd15"
    resolution: tuple[int, int]
    batch_size: int
    leffa: bool
    device: str
    precision: str
    gradient_checkpointing: bool
    warmup: int
    steps: int
    optimizer: str = "adamw"  # or "sgd": SGDLeffaModule
    strategy: str = "auto"  # Lightning's: "auto" (one device) or "ddp"
    count_flops: bool = False  # model FLOPs of one step (count_step_flops)
    channels_last: bool = False  # model.channels_last
    torch_compile: bool = False  # model.torch_compile (inductor)
    lora_rank: int = 0  # > 0: model.trainable=lora at this rank (LoraSettings' other defaults), else both UNets
    lora_frozen_dtype: str = "float32"  # model.lora.frozen_dtype (bfloat16: bf16-mixed only)

    @property
    def lora(self) -> LoraSettings | None:
        return LoraSettings(rank=self.lora_rank, frozen_dtype=self.lora_frozen_dtype) if self.lora_rank else None

    @property
    def trainable(self) -> str:
        return "lora" if self.lora_rank else "both"

    @property
    def label(self) -> str:
        """The trainable set and optimizer, as the tables name them."""
        return f"LoRA r{self.lora_rank}, {self.optimizer}" if self.lora_rank else f"full, {self.optimizer}"


def configurations(rows: list[str], warmup: int | None, steps: int | None,
                   leffa: tuple[bool, ...] = (False, True)) -> list[Config]:
    """CPU rows, Leffa off then on for each setting (sd15: the settings in ``leffa``)."""
    runs = []
    if "tiny" in rows:
        runs += [("tiny", (64, 48), 4, False, "adamw", 0, 2, 5), ("tiny", (128, 96), 2, False, "adamw", 0, 2, 5)]
    if "sd15" in rows:  # a CPU step of the full-size pair takes tens of seconds: fewer steps
        runs += [("sd15", size, 1, True, optimizer, rank, 1, 2)
                 for optimizer, rank in (("sgd", 0), ("adamw", 64)) for size in ((256, 192), (384, 288))]
    return [Config(model, resolution, batch, loss, "cpu", "32-true", checkpointing,
                   warmup if warmup is not None else row_warmup, steps or row_steps, optimizer, lora_rank=rank)
            for model, resolution, batch, checkpointing, optimizer, rank, row_warmup, row_steps in runs
            for loss in ((False, True) if model == "tiny" else leffa)]


class RepeatedSamples(Dataset):
    """Contract samples at the stage's resolution: a garment-like reference, a central loss region."""

    def __init__(self, resolution: tuple[int, int], length: int):
        height, width = resolution
        generator = torch.Generator().manual_seed(0)
        person = torch.rand(3, height, width, generator=generator) * 2 - 1
        mask = torch.zeros(1, height, width)
        mask[:, height // 4: 3 * height // 4, width // 4: 3 * width // 4] = 1
        self.sample = {"person": person, "reference": torch.roll(person, (height // 8, width // 8), (1, 2)),
                       "inpaint_mask": mask, "agnostic": person * (1 - mask), "densepose": person.flip(0),
                       "loss_region": mask.clone()}
        self.length = length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict:
        return dict(self.sample, person_id=f"{index:05d}_00.jpg", reference_id=f"{index:05d}_00.jpg")


class RepeatedSampleData(pl.LightningDataModule):
    """In memory, so that data loading is not part of the step time; ``set_stage`` for the StageSchedule."""

    def __init__(self, length: int):
        super().__init__()
        self.length, self.resolution, self.batch_size = length, (64, 48), 1

    def set_stage(self, resolution: tuple[int, int], batch_size: int) -> None:
        self.resolution, self.batch_size = tuple(resolution), batch_size

    def train_dataloader(self) -> DataLoader:
        return DataLoader(RepeatedSamples(self.resolution, self.length * self.batch_size), self.batch_size)


def _status_bytes(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def _meminfo_gib(field: str) -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024 / GIB
    raise RuntimeError(f"/proc/meminfo has no {field}")


class StepMeter(pl.Callback):
    """Seconds of every optimizer step; peak memory over the steps after ``warmup``."""

    def __init__(self, warmup: int, device: str):
        self.warmup, self.device = warmup, device
        self.seconds: list[float] = []
        self.warmup_seconds: list[float] = []  # where compilation and first allocations happen
        self.peak_bytes = 0

    def _sync(self) -> None:
        if self.device == "cuda":
            torch.cuda.synchronize()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._sync()
        if trainer.global_step == self.warmup:
            if self.device == "cuda":
                torch.cuda.reset_peak_memory_stats()
            else:
                Path("/proc/self/clear_refs").write_text("5")  # VmHWM := current resident size
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._sync()
        seconds = time.perf_counter() - self._start
        if trainer.global_step <= self.warmup:  # global_step already counts this step
            self.warmup_seconds.append(seconds)
        else:
            self.seconds.append(seconds)
            self.peak_bytes = (torch.cuda.max_memory_allocated() if self.device == "cuda"
                               else _status_bytes("VmHWM"))


def build_module(config: Config) -> LeffaModule:
    # theta_timestep 1000 and no reference dropout: every sample takes the Leffa loss (see the docstring).
    module_class = SGDLeffaModule if config.optimizer == "sgd" else LeffaModule
    with torch.device(config.device):  # random initialisation where the model will run (fast on a GPU)
        module = module_class(reference_dropout=0.0, leffa_loss=LeffaLossSettings(theta_timestep=1000),
                              gradient_checkpointing=config.gradient_checkpointing,
                              channels_last=config.channels_last, torch_compile=config.torch_compile,
                              trainable=config.trainable, lora=config.lora)
        if config.model != "tiny":
            # LeffaModule builds the tiny model without a base-model folder; larger architectures come from the
            # planner's presets instead (random weights: the timing does not depend on them).
            module.use_model(ARCHITECTURES[config.model]())
    return module


def count_step_flops(model, resolution: tuple[int, int], leffa: bool, device: str) -> int:
    """Model FLOPs of one training step per sample: ``FlopCounterMode`` over the planner's probe step (the
    training step's computation: VAE encodings, both UNets, MSE, the Leffa loss, backward) at batch 1 without
    gradient checkpointing, whose recomputed forward is not model FLOPs. Every op counted is linear in the batch.
    """
    unets = (model.unet, model.unet_encoder)
    checkpointing = [unet.is_gradient_checkpointing for unet in unets]
    with torch.device(device), FlopCounterMode(display=False, custom_mapping=CPU_ATTENTION_FLOPS) as counter:
        probe_step(model, 1, resolution, StepSettings(leffa, gradient_checkpointing=False, precision="32-true"))
    for unet, enabled in zip(unets, checkpointing):
        if enabled:
            unet.enable_gradient_checkpointing()
    model.zero_grad(set_to_none=True)
    if device == "cuda":
        torch.cuda.empty_cache()  # the batch-1 step without checkpointing must not shape the timed steps' cache
    return counter.get_total_flops()


def measure(config: Config) -> dict:
    """One configuration, in this process."""
    baseline = _status_bytes("VmRSS")  # Python + the libraries imported so far, before any model exists
    pl.seed_everything(0, verbose=False)
    module = build_module(config)
    flops = count_step_flops(module.model, config.resolution, config.leffa, config.device) if config.count_flops \
        else None
    meter = StepMeter(config.warmup, config.device)
    stage = Stage("bench", config.warmup + config.steps, config.resolution, config.batch_size,
                  leffa_loss=config.leffa)
    trainer = pl.Trainer(accelerator=config.device, devices=1, strategy=config.strategy, precision=config.precision,
                         gradient_clip_val=1.0, callbacks=[StageSchedule([stage]), meter], logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         limit_val_batches=0, num_sanity_val_steps=0)
    try:
        trainer.fit(module, datamodule=RepeatedSampleData(config.warmup + config.steps))
    except torch.cuda.OutOfMemoryError:
        return {"oom": True}
    return {"seconds": statistics.median(meter.seconds), "warmup_seconds": meter.warmup_seconds,
            "peak_bytes": meter.peak_bytes, "baseline_bytes": baseline,
            "parameters": sum(p.numel() for p in module.model.parameters()),
            "trainable_parameters": sum(p.numel() for p in module.model.parameters() if p.requires_grad),
            "flops_per_sample": flops}


def measure_in_subprocess(config: Config, threads: int | None = None, timeout: float | None = None) -> dict:
    """``measure`` in a fresh process (``--measure`` of this script): its own memory high-water mark and CUDA
    peak statistics. A process that runs past ``timeout`` seconds is stopped and reported as ``timed_out``."""
    command = [*rerun_command(__spec__.name), "--measure", json.dumps(asdict(config))]
    command += ["--threads", str(threads)] if threads else []
    started = time.perf_counter()
    try:
        result = subprocess.run(command, capture_output=True, text=True, check=False, timeout=timeout, cwd=REPO_ROOT)
    except subprocess.TimeoutExpired:
        return {"timed_out": True, "wall_seconds": time.perf_counter() - started}
    if result.returncode != 0:
        raise RuntimeError(f"measurement {config} failed:\n{result.stderr[-4000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1]) | {"wall_seconds": time.perf_counter() - started}


def planner_setup(config: Config) -> TrainingSetup:
    """What the planner is told about a configuration: one device, no EMA (the benchmark has none). For SGD the
    optimizer terms are replaced by 0 in ``planner_prediction`` (AdamW stands in: the planner has no SGD)."""
    return TrainingSetup(devices=1, strategy="ddp", precision=config.precision,
                         gradient_checkpointing=config.gradient_checkpointing, trainable=config.trainable,
                         optimizer="adamw", ema=False, lora=config.lora, device_type=config.device)


def planner_prediction(config: Config, leffa: tuple[bool, ...] = (False, True)
                       ) -> tuple[StaticMemory, dict[bool, StepActivations]]:
    """The planner's exact terms for ``config``'s architecture and trainable set, and its activation models (Leffa
    loss off, on)."""
    setup = planner_setup(config)
    static = static_memory(build_model(config.model, setup.trainable, setup.lora), setup)
    if config.optimizer == "sgd":  # no state, and an in-place update
        static = replace(static, optimizer=0, optimizer_step=0)
    return static, {loss: fit_activations(config.model, setup, loss) for loss in leffa}


def gib(nbytes: float) -> str:
    return f"{nbytes / GIB:.2f} GiB"


def tiny_table(configs: list[Config], threads: int | None) -> None:
    print("| model | resolution | batch | precision | grad ckpt | step, Leffa off | step, Leffa on | on/off "
          "| peak RSS, off | peak RSS, on | on - off |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for off_config, on_config in zip(configs[::2], configs[1::2]):
        off, on = measure_in_subprocess(off_config, threads), measure_in_subprocess(on_config, threads)
        model = f"{off_config.model} ({off['parameters'] / 1e6:,.1f}M params)"
        print(f"| {model} | {off_config.resolution[0]}x{off_config.resolution[1]} | {off_config.batch_size} "
              f"| {off_config.precision} | {'yes' if off_config.gradient_checkpointing else 'no'} "
              f"| {off['seconds']:.3f} s | {on['seconds']:.3f} s | {on['seconds'] / off['seconds']:.2f}x "
              f"| {gib(off['peak_bytes'])} | {gib(on['peak_bytes'])} "
              f"| {(on['peak_bytes'] - off['peak_bytes']) / 2 ** 20:+,.0f} MiB |", flush=True)


def planned_table(configs: list[Config], threads: int | None) -> None:
    """Measured rows beside the planner's prediction (the planner's fits first, so they do not share the CPU with
    a measurement)."""
    predictions = {}
    for config in configs:
        if config.label not in predictions:
            started = time.perf_counter()
            static, activations = planner_prediction(config, tuple(sorted({c.leffa for c in configs})))
            predictions[config.label] = static, activations
            print(f"planner, {config.label}: weights {gib(static.weights)}, gradients {gib(static.gradients)}, "
                  f"optimizer {gib(static.optimizer)}, optimizer step {gib(static.optimizer_step)} (exact); "
                  f"activation models fitted in {time.perf_counter() - started:.0f} s")
    print("\n| model | trainable, optimizer | resolution | batch | grad ckpt | Leffa | step | baseline RSS "
          "| planned: static + max(activations, optimizer step) | peak RSS - baseline | measured / planned "
          "| peak RSS | wall |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for config in configs:
        static, activations = predictions[config.label]
        result = measure_in_subprocess(config, threads)
        activation = activations[config.leffa].bytes(config.batch_size, config.resolution)
        planned = step_peak(static, activation)
        above_baseline = result["peak_bytes"] - result["baseline_bytes"]
        print(f"| {config.model} ({result['parameters'] / 1e6:,.0f}M params, "
              f"{result['trainable_parameters'] / 1e6:,.1f}M trainable) | {config.label} "
              f"| {config.resolution[0]}x{config.resolution[1]} | {config.batch_size} "
              f"| {'yes' if config.gradient_checkpointing else 'no'} | {'on' if config.leffa else 'off'} "
              f"| {result['seconds']:.1f} s | {gib(result['baseline_bytes'])} "
              f"| {gib(static.total)} + max({gib(activation)}, {gib(static.optimizer_step)}) = {gib(planned)} "
              f"| {gib(above_baseline)} | {above_baseline / planned:.2f} | {gib(result['peak_bytes'])} "
              f"| {result['wall_seconds']:.0f} s |", flush=True)


def sdxl_report() -> None:
    """The SDXL-size architecture on the meta device: the planner's exact per-device terms under the trainer configs'
    settings: configs/trainer/gpu.yaml (DDP, AdamW, EMA), with 8-bit AdamW, and gpu_fsdp.yaml over 8 devices."""
    gpu = [TRAINER_BASE, Path("configs/trainer/gpu.yaml")]
    ddp = read_setup(gpu, devices=1)
    fsdp = read_setup([*gpu, Path("configs/trainer/gpu_fsdp.yaml")], devices=8)
    model = build_model("sdxl", ddp.trainable)
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    print(f"SDXL-size architecture (meta device): {total:,} parameters, {trainable:,} trainable ({ddp.trainable})\n")
    print("| trainer | weights | gradients | optimizer | EMA | total per device |")
    print("|---|---|---|---|---|---|")
    for label, setup in ((f"gpu.yaml: ddp, {ddp.optimizer}, EMA", ddp),
                         ("gpu.yaml: ddp, adamw8bit, EMA", replace(ddp, optimizer="adamw8bit")),
                         (f"gpu_fsdp.yaml: fsdp over 8, {fsdp.optimizer}, EMA {'on' if fsdp.ema else 'off'}", fsdp)):
        memory = static_memory(model, setup)
        print(f"| {label} | {gib(memory.weights)} | {gib(memory.gradients)} | {gib(memory.optimizer)} "
              f"| {gib(memory.ema)} | {gib(memory.total)} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", nargs="+", choices=ROWS, default=list(ROWS))
    parser.add_argument("--warmup", type=int, help="optimizer steps before timing (default: per row, 2 tiny, 1 sd15)")
    parser.add_argument("--steps", type=int, help="timed optimizer steps, median (default: per row, 5 tiny, 2 sd15)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--leffa", nargs="+", choices=["off", "on"], default=["off", "on"],
                        help="Leffa loss settings of each row (default both)")
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    if args.measure:
        fields = json.loads(args.measure)
        fields["resolution"] = tuple(fields["resolution"])
        print(json.dumps(measure(Config(**fields))))
        return

    with recorded("train_cpu"):
        report(args)


def report(args: argparse.Namespace) -> None:
    started = time.perf_counter()
    print(f"Training step (LeffaModule.training_step + backward + clip + optimizer) via Lightning, CPU "
          f"({platform.machine()}, {os.cpu_count()} cores), {torch.get_num_threads()} threads, torch "
          f"{torch.__version__}; median of the steps after the warm-up; Leffa on = every sample takes the loss; "
          f"load average {os.getloadavg()[0]:.1f}\n")
    configs = configurations(args.rows, args.warmup, args.steps, tuple(loss == "on" for loss in args.leffa))
    tiny = [c for c in configs if c.model == "tiny"]
    if tiny:
        print(f"tiny: median of {tiny[0].steps} steps after {tiny[0].warmup} warm-up\n")
        tiny_table(tiny, args.threads)
        print()
    sd15 = [c for c in configs if c.model == "sd15"]
    if sd15:
        print(f"sd15: median of {sd15[0].steps} steps after {sd15[0].warmup} warm-up; free memory "
              f"{_meminfo_gib('MemAvailable'):.1f} GiB before\n")
        planned_table(sd15, args.threads)
        print()
    if "sdxl" in args.rows:
        sdxl_report()
        print()
    print(f"elapsed {time.perf_counter() - started:.0f} s; load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
