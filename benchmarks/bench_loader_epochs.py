"""Time from an epoch's start to its first batch: training loader rebuilt every epoch vs kept, persistent workers.

Generates a synthetic VITON-HD training split at 1024x768 (the real files' size) in a temporary folder and
iterates the data module's training loader (512x384, augmentation on) for ``--epochs`` epochs, as the stage
schedule does within a stage: ``rebuilt, 2 iter()`` is what main did before loaders were kept per stage: a new
loader every epoch, whose iterator (workers started, batches prefetched) Lightning creates twice from the second
epoch on (``FitLoop.setup_data`` after a reload, then ``_TrainingEpochLoop.on_run_start``), a plain DataLoader
standing in for the old eager ``ResumableDataLoader.__iter__``; ``rebuilt`` builds a new loader every epoch
(one worker start: today's loader starts its workers at the first batch taken); ``persistent`` keeps one loader
with ``persistent_workers=True`` (its first epoch starts the workers: reported apart). ``--ballast-gib`` makes
the parent process that big first (a training process holds the model: forking workers copies its page
tables). Appends a table to benchmarks/results/loader_epochs.md with the machine, load, commit and command.

    python -m benchmarks.bench_loader_epochs [--pairs 16] [--epochs 6] [--workers 2] [--ballast-gib 0 1.5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import lightning
import torch
from torch.utils.data import DataLoader

from benchmarks.common import recorded
from leffa_pl.data.datamodule import VitonHDDataModule
from leffa_pl.datasets.vitonhd import synthetic as vitonhd_synthetic

NATIVE = (1024, 768)


def epochs(root: Path, mode: str, args) -> list[tuple[float, float]]:
    """(seconds to the first batch, seconds for the whole epoch) per epoch."""
    lightning.seed_everything(0, workers=True, verbose=False)
    module = VitonHDDataModule(str(root), resolution=(512, 384), batch_size=args.batch_size,
                               num_workers=args.workers, persistent_workers=mode == "persistent", pin_memory=False,
                               file_check="exists")
    module.setup("fit")
    times = []
    for epoch in range(args.epochs):
        if mode == "rebuilt, 2 iter()":
            loader = DataLoader(module.train_dataset(), batch_size=args.batch_size, shuffle=True,
                                num_workers=args.workers)
        else:
            if mode == "rebuilt":
                module.teardown("fit")  # drop the loader: the next call builds a new one
            loader = module.train_dataloader()
        start = time.perf_counter()
        batches = iter(loader)
        if mode == "rebuilt, 2 iter()" and epoch > 0:
            batches = iter(loader)  # the first iterator's workers end here
        next(batches)
        first = time.perf_counter() - start
        for _ in batches:
            pass
        times.append((first, time.perf_counter() - start))
    module.teardown("fit")
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=16, help="training pairs (pairs / batch size batches per epoch)")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--ballast-gib", type=float, nargs="+", default=[0.0, 1.5],
                        help="parent process sizes to measure at (GiB allocated and touched before the loaders)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with recorded("loader_epochs"), tempfile.TemporaryDirectory() as tmp:
        print(f"{args.workers} workers, batch {args.batch_size} at 512x384 ({args.pairs} pairs: "
              f"{args.pairs // args.batch_size} batches per epoch), {args.epochs} epochs, augmentation on, files "
              f"{NATIVE[0]}x{NATIVE[1]} in the page cache\n")
        print("| parent ballast | loader | first epoch: to 1st batch | later epochs: to 1st batch (median) "
              "| later epochs: whole epoch (median) |\n|---|---|---|---|---|", flush=True)
        root = vitonhd_synthetic.make_vitonhd(Path(tmp) / "zalando-hd-resized", args.pairs, 1, NATIVE)
        for gib in args.ballast_gib:
            ballast = torch.ones(int(gib * 2**30) // 4) if gib else None  # written: resident, not just reserved
            for mode in ("rebuilt, 2 iter()", "rebuilt", "persistent"):
                times = epochs(root, mode, args)
                later = times[1:]
                print(f"| {gib:g} GiB | {mode} | {times[0][0] * 1000:.0f} ms "
                      f"| {statistics.median(t[0] for t in later) * 1000:.0f} ms "
                      f"| {statistics.median(t[1] for t in later) * 1000:.0f} ms |", flush=True)
            del ballast


if __name__ == "__main__":
    main()
