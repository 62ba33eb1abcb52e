"""Data loading throughput and the cost of the file check levels.

Generates synthetic 1024x768 VITON-HD and DressCode datasets in a temporary folder (real files are 1024x768
too), then (1) times ``Dataset.__getitem__`` in this process (= one DataLoader worker) for the training split
with augmentation on: decode, resize, masks, augmentation, tensors; (2) times the data module's file check
(``check_files``, what ``setup()`` and ``leffa-pl-check-data`` run) of the training split at each level with
one thread, and extrapolates it to the real training splits (VITON-HD 11,647 pairs, DressCode 48,392). The file
cache is warm (the files were just written): a cold disk adds its read time to every level but ``exists``.

    python -m benchmarks.bench_data [--pairs 12] [--repeats 2]
"""

from __future__ import annotations

import argparse
import platform
import shutil
import tempfile
import time
from pathlib import Path

import lightning
import torch

from leffa_pl.data.datamodule import DressCodeDataModule, VitonHDDataModule
from leffa_pl.data.files import CHECK_LEVELS
from leffa_pl.data.layout import FLOW_FOLDER
from leffa_pl.data.transforms import AugmentConfig
from leffa_pl.datasets.dresscode import reader as dresscode
from leffa_pl.datasets.dresscode import synthetic as dresscode_synthetic
from leffa_pl.datasets.vitonhd import reader as vitonhd
from leffa_pl.datasets.vitonhd import synthetic as vitonhd_synthetic

NATIVE = (1024, 768)
RESOLUTIONS = ((512, 384), (1024, 768))
REAL_TRAIN_PAIRS = {"VITON-HD": 11_647, "DressCode": 48_392}


def throughput(dataset, repeats: int) -> float:
    dataset[0]  # warm caches (palette lookup, imports)
    start = time.perf_counter()
    for _ in range(repeats):
        for index in range(len(dataset)):
            dataset[index]
    return repeats * len(dataset) / (time.perf_counter() - start)


def check_cost(module, repeats: int) -> dict[str, float]:
    """Seconds per training pair of ``check_files`` at each level, one thread (best of ``repeats``)."""
    pairs = len(module.pairs("train")[0])
    costs = {}
    for level in CHECK_LEVELS:
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            report = module.check_files(["train"], level=level, workers=1)
            best = min(best, time.perf_counter() - start)
        assert report.ok, report.format()
        costs[level] = best / pairs
    return costs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=12,
                        help="VITON-HD training pairs (DressCode: a third per category)")
    parser.add_argument("--repeats", type=int, default=2, help="passes over the pairs per measurement")
    args = parser.parse_args()
    torch.set_num_threads(1)  # one worker = one core
    lightning.seed_everything(0, verbose=False)
    augment = AugmentConfig()
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        viton_root = vitonhd_synthetic.make_vitonhd(Path(tmp) / "zalando-hd-resized", args.pairs, 2, NATIVE)
        dc_pairs = max(1, args.pairs // 3)
        dc_root = dresscode_synthetic.make_dresscode(Path(tmp) / "DressCode", dc_pairs, 2, NATIVE)
        print(f"generated {args.pairs} + {3 * dc_pairs} train pairs at {NATIVE[0]}x{NATIVE[1]} "
              f"in {time.perf_counter() - start:.1f} s")
        print(f"CPU: {platform.processor() or platform.machine()}, torch threads 1, augmentation on (train split)")
        print(f"{'dataset':<22}{'masks':<14}{'resolution':<12}{'samples/s/worker':>18}")
        viton_pairs = vitonhd.read_pairs(viton_root, "train")
        dc_all, _ = dresscode.read_pairs(dc_root, "train", "all")
        for size in RESOLUTIONS:
            resolution = f"{size[0]}x{size[1]}"
            for source in ("precomputed", "computed"):
                data = vitonhd.VitonHDDataset(viton_root, viton_pairs, size, source,
                                              augment=vitonhd.vitonhd_augment(augment))
                print(f"{'VITON-HD':<22}{source:<14}{resolution:<12}{throughput(data, args.repeats):>18.1f}")
            data = dresscode.DressCodeDataset(dc_root, dc_all, size, augment=dresscode.dresscode_augment(augment))
            print(f"{'DressCode (all)':<22}{'computed':<14}{resolution:<12}{throughput(data, args.repeats):>18.1f}")
        print(f"\nfile check of the train split, 1 thread, {NATIVE[0]}x{NATIVE[1]} files: ms per pair "
              "(the real train split: minutes on 1 thread / on 8 threads if it scaled linearly, not measured)")
        for flow in [*viton_root.glob(f"*/{FLOW_FOLDER}"), *dc_root.glob(f"*/{FLOW_FOLDER}")]:
            shutil.rmtree(flow)  # real copies have no ground-truth flow
        modules = {"VITON-HD": VitonHDDataModule(str(viton_root), mask_source="computed"),
                   "DressCode": DressCodeDataModule(str(dc_root))}
        for name, module in modules.items():
            cells = []
            for level, seconds in check_cost(module, args.repeats).items():
                real = seconds * REAL_TRAIN_PAIRS[name]
                cells.append(f"{level} {seconds * 1000:.2f} ms ({real / 60:.1f} / {real / 480:.1f} min)")
            print(f"{name:<12}" + "   ".join(cells))


if __name__ == "__main__":
    main()
