"""Peak host memory while a training checkpoint is written and read back: Lightning's ``TorchCheckpointIO``
(serialises into a ``BytesIO``, then writes it; reads the whole file into memory) against ``AtomicCheckpointIO``
(streams ``torch.save`` into the temporary file; loads memory-mapped). At a resume every rank loads the checkpoint.

The checkpoint is what Lightning writes for ``LeffaModule`` under ``configs/trainer/gpu.yaml``: the module's
state dict, AdamW's state after one step (two fp32 moments per trainable parameter) and ``LeffaEMA``'s shadow of
the trainable weights, for a Leffa model with SD1.5's UNet at a quarter of its width (64-128-256-256 channels,
random weights, nothing downloaded) and the tiny VAE. Each IO runs in a fresh process: the resident-set
high-water mark is reset just before the save or load (``/proc/self/clear_refs``), so the peak is its own. A load
row reads the file the save row wrote, after dropping it from the page cache where allowed (``posix_fadvise``).

    python -m benchmarks.bench_checkpoint          # make bench-checkpoint
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from benchmarks.common import REPO_ROOT, recorded, rerun_command
from leffa_pl.model.checkpoint import EMA_KEY
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


def measure(io_name: str, operation: str, path: Path) -> dict:
    io = IOS[io_name]()
    if operation == "save":
        content = checkpoint()
    else:
        with path.open("rb") as file:  # the page cache would make a load look free
            os.posix_fadvise(file.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
    before = status_bytes("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := current resident size
    started = time.perf_counter()
    if operation == "save":
        io.save_checkpoint(content, path)
    else:
        loaded = io.load_checkpoint(path)
    seconds = time.perf_counter() - started
    result = {"seconds": seconds, "before": before, "peak": status_bytes("VmHWM"), "file": path.stat().st_size}
    if operation == "load":
        result["tensors"] = sum(t.numel() * t.element_size() for t in _tensors(loaded))
    return result


def _tensors(tree) -> list[torch.Tensor]:
    if isinstance(tree, torch.Tensor):
        return [tree]
    values = tree.values() if isinstance(tree, dict) else tree if isinstance(tree, (list, tuple)) else []
    return [tensor for value in values for tensor in _tensors(value)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--measure", nargs=3, help=argparse.SUPPRESS)  # io name, save|load, path
    args = parser.parse_args()
    if args.measure:
        name, operation, path = args.measure
        print(json.dumps(measure(name, operation, Path(path))))
        return
    with recorded("checkpoint"), tempfile.TemporaryDirectory() as folder:
        print("Peak host RSS during one checkpoint save and one load, a fresh process per row\n")
        print("| checkpoint IO | operation | file | RSS before | peak RSS during it | peak - before | seconds |")
        print("|---|---|---|---|---|---|---|")
        growth = {}
        for operation in ("save", "load"):
            for name in IOS:
                path = Path(folder) / f"{name.split()[0]}.ckpt"
                result = subprocess.run([*rerun_command(__spec__.name), "--measure", name, operation, str(path)],
                                        capture_output=True, text=True, cwd=REPO_ROOT)
                if result.returncode != 0:
                    raise RuntimeError(f"{name} {operation}: {result.stderr[-4000:]}")
                row = json.loads(result.stdout.strip().splitlines()[-1])
                growth[name, operation] = row["peak"] - row["before"]
                print(f"| {name} | {operation} | {row['file'] / MIB:,.0f} MiB | {row['before'] / MIB:,.0f} MiB "
                      f"| {row['peak'] / MIB:,.0f} MiB | {growth[name, operation] / MIB:+,.0f} MiB "
                      f"| {row['seconds']:.1f} |", flush=True)
        before, after = IOS
        print("\n" + "; ".join(f"{operation}'s own memory: {growth[before, operation] / MIB:+,.0f} MiB before, "
                               f"{growth[after, operation] / MIB:+,.0f} MiB after" for operation in ("save", "load")))

if __name__ == "__main__":
    main()
