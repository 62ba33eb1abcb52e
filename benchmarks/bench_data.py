"""Data loading throughput: samples/s of one worker at 512x384 and 1024x768, masks on the fly vs precomputed.

Generates a 1024x768 sample in the VITON-HD and DressCode layouts in a temporary folder (real files are
1024x768 too), then times ``Dataset.__getitem__`` in this process (= one DataLoader worker) for the
training split with augmentation on: decode, resize, masks, augmentation, tensors. Prints one table.

    python benchmarks/bench_data.py [--pairs 12] [--repeats 2]
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import lightning
import torch

from leffa_pl.data import dresscode, synthetic_vton, vitonhd
from leffa_pl.data.transforms import AugmentConfig

NATIVE = (1024, 768)
RESOLUTIONS = ((512, 384), (1024, 768))


def throughput(dataset, repeats: int) -> float:
    dataset[0]  # warm caches (palette lookup, imports)
    start = time.perf_counter()
    for _ in range(repeats):
        for index in range(len(dataset)):
            dataset[index]
    return repeats * len(dataset) / (time.perf_counter() - start)


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
        viton_root = synthetic_vton.make_vitonhd(Path(tmp) / "zalando-hd-resized", args.pairs, 2, NATIVE)
        dc_pairs = max(1, args.pairs // 3)
        dc_root = synthetic_vton.make_dresscode(Path(tmp) / "DressCode", dc_pairs, 2, NATIVE)
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


if __name__ == "__main__":
    main()
