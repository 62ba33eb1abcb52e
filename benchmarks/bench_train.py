"""Training step time and peak memory, Leffa loss off vs on, through the real Lightning training step.

Each configuration runs in a fresh subprocess: a ``Trainer`` (gradient clipping 1.0, as configs/trainer)
with a one-stage ``StageSchedule`` fits ``LeffaModule`` on an in-memory batch of contract samples, so a
step is ``LeffaModule.training_step`` (VAE encoding, both UNets, losses) + backward + clipping + AdamW.
Time: median over the steps after the warm-up (CUDA: synchronised). Memory: CPU, the process's
resident-set high-water mark over the timed steps (VmHWM reset after the warm-up, so weights, gradients
and optimizer state are in it); CUDA, ``torch.cuda.max_memory_allocated`` over the timed steps.

With the Leffa loss on, every sample takes the loss (theta_timestep = 1000, no reference dropout): the
worst case, which sets the memory a stage needs; with the paper's theta_timestep = 500 about half the
samples of a batch do.

Configurations: on CPU the tiny model at the demo stages' resolutions; with CUDA also SD1.5-sized UNets
(built from the SD1.5 inpainting configs, random weights, nothing downloaded) at 512x384 and 1024x768
in bf16 mixed precision with gradient checkpointing.

    python benchmarks/bench_train.py                       # make bench-train
    python benchmarks/bench_train.py --device cpu --steps 3 --threads 1
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, Dataset

from leffa_pl.callbacks.stage_schedule import Stage, StageSchedule
from leffa_pl.model.leffa_model import LeffaModel
from leffa_pl.model.presets import sd15_inpainting_unet_config, sd15_vae_config
from leffa_pl.training.leffa_module import LeffaModule


@dataclass
class Config:
    model: str  # "tiny" or "sd15"
    resolution: tuple[int, int]
    batch_size: int
    leffa: bool
    device: str
    precision: str
    gradient_checkpointing: bool
    warmup: int
    steps: int
    channels_last: bool = False
    torch_compile: bool = False


def configurations(device: str, warmup: int, steps: int) -> list[Config]:
    runs = [("tiny", (64, 48), 4, "32-true", False), ("tiny", (128, 96), 2, "32-true", False)]
    if device == "cuda":
        runs += [("sd15", (512, 384), 8, "bf16-mixed", True), ("sd15", (1024, 768), 2, "bf16-mixed", True)]
    return [Config(model, resolution, batch, leffa, device, precision, checkpointing, warmup, steps)
            for model, resolution, batch, precision, checkpointing in runs for leffa in (False, True)]


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
    module = LeffaModule(reference_dropout=0.0, leffa_theta_timestep=1000,
                         gradient_checkpointing=config.gradient_checkpointing, channels_last=config.channels_last,
                         torch_compile=config.torch_compile)
    if config.model == "sd15":
        # LeffaModule builds the tiny model without a base-model folder; the SD1.5 architecture is built
        # from its configs instead (random weights: the timing does not depend on them).
        module.use_model(LeffaModel.from_configs(sd15_inpainting_unet_config(), sd15_vae_config()))
    return module


def measure(config: Config) -> dict:
    """One configuration, in this process."""
    pl.seed_everything(0, verbose=False)
    module = build_module(config)
    meter = StepMeter(config.warmup, config.device)
    stage = Stage("bench", config.warmup + config.steps, config.resolution, config.batch_size,
                  leffa_loss=config.leffa)
    trainer = pl.Trainer(accelerator=config.device, devices=1, precision=config.precision, gradient_clip_val=1.0,
                         callbacks=[StageSchedule([stage]), meter], logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                         num_sanity_val_steps=0)
    trainer.fit(module, datamodule=RepeatedSampleData(config.warmup + config.steps))
    return {"seconds": statistics.median(meter.seconds), "warmup_seconds": meter.warmup_seconds,
            "peak_bytes": meter.peak_bytes,
            "parameters": sum(p.numel() for p in module.model.parameters())}


def measure_in_subprocess(config: Config, threads: int | None) -> dict:
    command = [sys.executable, __file__, "--measure", json.dumps(asdict(config))]
    command += ["--threads", str(threads)] if threads else []
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"measurement {config} failed:\n{result.stderr[-4000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def gib(nbytes: float) -> str:
    return f"{nbytes / 2 ** 30:.2f} GiB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    parser.add_argument("--warmup", type=int, default=2, help="optimizer steps before timing")
    parser.add_argument("--steps", type=int, default=5, help="timed optimizer steps (median)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    if args.measure:
        fields = json.loads(args.measure)
        fields["resolution"] = tuple(fields["resolution"])
        print(json.dumps(measure(Config(**fields))))
        return

    where = (torch.cuda.get_device_name() if args.device == "cuda"
             else f"CPU ({platform.machine()}), {torch.get_num_threads()} threads")
    print(f"Training step (LeffaModule.training_step + backward + clip + AdamW) via Lightning, {where}, "
          f"torch {torch.__version__}; median of {args.steps} steps after {args.warmup} warm-up; "
          f"Leffa on = every sample takes the loss\n")
    memory = "peak allocated" if args.device == "cuda" else "peak RSS"
    print(f"| model | resolution | batch | precision | grad ckpt | step, Leffa off | step, Leffa on | on/off "
          f"| {memory}, off | {memory}, on | on - off |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    configs = configurations(args.device, args.warmup, args.steps)
    for off_config, on_config in zip(configs[::2], configs[1::2]):
        off, on = measure_in_subprocess(off_config, args.threads), measure_in_subprocess(on_config, args.threads)
        model = f"{off_config.model} ({off['parameters'] / 1e6:,.1f}M params)"
        print(f"| {model} | {off_config.resolution[0]}x{off_config.resolution[1]} | {off_config.batch_size} "
              f"| {off_config.precision} | {'yes' if off_config.gradient_checkpointing else 'no'} "
              f"| {off['seconds']:.3f} s | {on['seconds']:.3f} s | {on['seconds'] / off['seconds']:.2f}x "
              f"| {gib(off['peak_bytes'])} | {gib(on['peak_bytes'])} "
              f"| {(on['peak_bytes'] - off['peak_bytes']) / 2 ** 20:+,.0f} MiB |", flush=True)


if __name__ == "__main__":
    main()
