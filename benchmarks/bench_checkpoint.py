"""Peak host memory while a training checkpoint is written: Lightning's ``TorchCheckpointIO`` (serialises into a
``BytesIO``, then writes it) against ``AtomicCheckpointIO`` (streams ``torch.save`` into the temporary file).

The checkpoint is what Lightning writes for ``LeffaModule`` under ``configs/trainer/gpu.yaml``: the module's
state dict, AdamW's state after one step (two fp32 moments per trainable parameter) and ``LeffaEMA``'s shadow of
the trainable weights, for a Leffa model with SD1.5's UNet at a quarter of its width (64-128-256-256 channels,
random weights, nothing downloaded) and the tiny VAE. Each IO runs in a fresh process: the resident-set
high-water mark is reset just before the save (``/proc/self/clear_refs``), so the peak is the save's own.

    python benchmarks/bench_checkpoint.py          # make bench-checkpoint
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from leffa_pl.callbacks.ema import EMA_KEY
from leffa_pl.model.leffa_model import LeffaModel
from leffa_pl.model.presets import sd15_inpainting_unet_config, tiny_vae_config
from leffa_pl.training.atomic_checkpoint import AtomicCheckpointIO
from leffa_pl.training.trainable import select_trainable

IOS = {"lightning TorchCheckpointIO (before)": TorchCheckpointIO, "AtomicCheckpointIO (after)": AtomicCheckpointIO}
WIDTHS = (64, 128, 256, 256)
MIB = 2**20


def status_bytes(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def checkpoint() -> dict:
    torch.manual_seed(0)
    model = LeffaModel.from_configs(sd15_inpainting_unet_config(block_out_channels=WIDTHS), tiny_vae_config())
    select_trainable(model)
    trainable = [(f"model.{name}", p) for name, p in model.named_parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW([p for _, p in trainable])
    for _, p in trainable:
        p.grad = torch.zeros_like(p)
    optimizer.step()  # AdamW's state exists from the first step on
    for _, p in trainable:
        p.grad = None
    return {"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
            "optimizer_states": [optimizer.state_dict()], "global_step": 1,
            EMA_KEY: {"shadow": {name: p.detach().clone() for name, p in trainable}, "n_averaged": torch.tensor(1)}}


def measure(io_name: str, folder: Path) -> dict:
    content = checkpoint()
    path = folder / "measured.ckpt"
    before = status_bytes("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := current resident size
    started = time.perf_counter()
    IOS[io_name]().save_checkpoint(content, path)
    return {"seconds": time.perf_counter() - started, "before": before, "peak": status_bytes("VmHWM"),
            "file": path.stat().st_size}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        with tempfile.TemporaryDirectory() as folder:
            print(json.dumps(measure(args.measure, Path(folder))))
        return
    print(f"# bench-checkpoint: peak host RSS during one checkpoint save, fresh process per row, torch "
          f"{torch.__version__}, {platform.machine()} ({os.cpu_count()} cores), load average "
          f"{os.getloadavg()[0]:.1f}; command: python benchmarks/bench_checkpoint.py\n")
    print("| checkpoint IO | file | RSS before | peak RSS during the save | peak - before | seconds |")
    print("|---|---|---|---|---|---|")
    growth = {}
    for name in IOS:
        result = subprocess.run([sys.executable, __file__, "--measure", name], capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"{name}: {result.stderr[-4000:]}")
        row = json.loads(result.stdout.strip().splitlines()[-1])
        growth[name] = row["peak"] - row["before"]
        print(f"| {name} | {row['file'] / MIB:,.0f} MiB | {row['before'] / MIB:,.0f} MiB "
              f"| {row['peak'] / MIB:,.0f} MiB | {growth[name] / MIB:+,.0f} MiB | {row['seconds']:.1f} |", flush=True)
    before, after = growth.values()
    print(f"\nsave's own memory, before / after: {before / max(after, MIB):.0f}x; load average "
          f"{os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
