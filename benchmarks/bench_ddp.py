"""2-process CPU DDP step time: plain ``ddp`` (unreached parameters frozen) vs ``ddp_find_unused_parameters_true``.

One run, one fresh launch per configuration (Lightning's ``ddp`` re-executes this script for rank 1), the real
training step (``LeffaModule`` on in-memory samples, Leffa loss on, gradient clipping, AdamW; gloo). Rows:
plain DDP with the frozen set of ``leffa_pl.training.trainable`` (the default now); the same model under
``find_unused_parameters=True`` (DDP walks the autograd graph every step); and the previous setup, every UNet
weight trainable under ``find_unused_parameters=True``. Time: median step on rank 0 after the warm-up.

    python -m benchmarks.bench_ddp            # make bench-ddp
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess

import lightning.pytorch as pl
import torch

from benchmarks.bench_train import RepeatedSampleData, StepMeter
from benchmarks.common import REPO_ROOT, rerun_command
from leffa_pl.callbacks.stage_schedule import Stage, StageSchedule
from leffa_pl.losses.leffa_loss import LeffaLossSettings
from leffa_pl.training.leffa_module import LeffaModule

CONFIGURATIONS = [("ddp", True), ("ddp_find_unused_parameters_true", True),
                  ("ddp_find_unused_parameters_true", False)]


def measure(strategy: str, freeze_unreached: bool, resolution: tuple[int, int], batch: int, warmup: int,
            steps: int) -> dict:
    pl.seed_everything(0, verbose=False)
    module = LeffaModule(reference_dropout=0.0, leffa_loss=LeffaLossSettings(theta_timestep=1000))
    if not freeze_unreached:
        module.model.unet.requires_grad_(True)
        module.model.unet_encoder.requires_grad_(True)
    meter = StepMeter(warmup, "cpu")
    stage = Stage("bench", warmup + steps, resolution, batch, leffa_loss=True)
    trainer = pl.Trainer(accelerator="cpu", devices=2, strategy=strategy, gradient_clip_val=1.0,
                         callbacks=[StageSchedule([stage]), meter], logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                         num_sanity_val_steps=0)
    trainer.fit(module, datamodule=RepeatedSampleData(2 * (warmup + steps)))
    trainable = sum(p.numel() for p in module.model.parameters() if p.requires_grad)
    return {"seconds": statistics.median(meter.seconds), "trainable": trainable, "rank": trainer.global_rank}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--resolution", default="128x96")
    parser.add_argument("--batch-size", type=int, default=2, help="per process")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=7)
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    args = parser.parse_args()
    resolution = tuple(int(side) for side in args.resolution.split("x"))
    if args.measure:
        strategy, freeze = json.loads(args.measure)
        torch.set_num_threads(1)  # one core per process
        result = measure(strategy, freeze, resolution, args.batch_size, args.warmup, args.steps)
        if result["rank"] == 0:
            print("RESULT " + json.dumps(result), flush=True)
        return

    print(f"2-process DDP (gloo, 1 thread each) on CPU ({platform.machine()}, {os.cpu_count()} cores), tiny model, "
          f"{args.resolution}, batch {args.batch_size} per process, Leffa on; median of {args.steps} steps after "
          f"{args.warmup}; load average before {os.getloadavg()[0]:.1f}\n")
    print("| strategy | unreached parameters | trainable | step | vs plain ddp |")
    print("|---|---|---|---|---|")
    baseline = None
    for strategy, freeze in CONFIGURATIONS:
        command = [*rerun_command(__spec__.name), "--measure", json.dumps([strategy, freeze]),
                   "--resolution", args.resolution, "--batch-size", str(args.batch_size),
                   "--warmup", str(args.warmup), "--steps", str(args.steps)]
        run = subprocess.run(command, capture_output=True, text=True, check=False, cwd=REPO_ROOT)
        lines = [line for line in run.stdout.splitlines() if line.startswith("RESULT ")]
        if run.returncode != 0 or not lines:
            raise RuntimeError(f"{strategy} failed:\n{run.stderr[-4000:]}")
        result = json.loads(lines[-1].removeprefix("RESULT "))
        baseline = baseline or result["seconds"]
        print(f"| {strategy} | {'frozen' if freeze else 'trainable'} | {result['trainable']:,} "
              f"| {result['seconds']:.3f} s | {result['seconds'] / baseline:.2f}x |", flush=True)
    print(f"\nload average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
