"""Channels-last and torch.compile as levers on the training step: step time, peak memory, compile time.

The rows of ``bench_train.py`` (its ``Config``, ``build_module``, ``StepMeter``, ``RepeatedSampleData`` and
``measure_in_subprocess``: one fresh process per row, the real Lightning step with the Leffa loss on every
sample) with ``model.channels_last`` and ``model.torch_compile`` (inductor) off and on: eager / channels_last /
compile / both, the tiny model at the demo stages' resolutions on CPU. Step time is the median of the timed
steps; compile time is the first warm-up step minus that median (Dynamo + AOTAutograd + inductor's code
generation of both UNets, forward and backward), reported apart. Each compiled row gets an empty inductor cache
(``TORCHINDUCTOR_CACHE_DIR``): the cost a first run pays; a resumed run on the same machine reuses the cache.
GPU rows are ``make bench-gpu``.

    python -m benchmarks.bench_levers                  # make bench-levers
    python -m benchmarks.bench_levers --resolutions 64x48 --steps 3
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile

import torch

from benchmarks.bench_train import Config, gib, measure_in_subprocess
from leffa_pl.data.layout import parse_size

LEVERS = [("eager", False, False), ("channels_last", True, False), ("compile", False, True), ("both", True, True)]
DEMO_ROWS = {"64x48": 4, "128x96": 2}  # resolution: batch, the demo stages'


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--resolutions", nargs="+", default=list(DEMO_ROWS), choices=list(DEMO_ROWS))
    parser.add_argument("--warmup", type=int, default=2, help="optimizer steps before timing (the first compiles)")
    parser.add_argument("--steps", type=int, default=5, help="timed optimizer steps (median)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()

    print(f"Training step with the Leffa loss on every sample, tiny model, CPU ({platform.machine()}, "
          f"{os.cpu_count()} cores), torch {torch.__version__}, fp32; median of {args.steps} steps after "
          f"{args.warmup} warm-up; compile = inductor, empty cache; load average before "
          f"{os.getloadavg()[0]:.1f}\n")
    print("| resolution | batch | levers | step | vs eager | peak RSS | vs eager | first step | compile |")
    print("|---|---|---|---|---|---|---|---|---|")
    for resolution in args.resolutions:
        eager = None
        for name, channels_last, torch_compile in LEVERS:
            config = Config("tiny", parse_size(resolution), DEMO_ROWS[resolution], True, "cpu", "32-true", False,
                            args.warmup, args.steps, channels_last=channels_last, torch_compile=torch_compile)
            with tempfile.TemporaryDirectory(prefix="bench-levers-inductor-") as cache:
                os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache
                result = measure_in_subprocess(config, args.threads)
            eager = eager or result
            first = result["warmup_seconds"][0]
            compile_seconds = f"{first - result['seconds']:.1f} s" if torch_compile else "-"
            print(f"| {resolution} | {config.batch_size} | {name} | {result['seconds']:.3f} s "
                  f"| {result['seconds'] / eager['seconds']:.2f}x | {gib(result['peak_bytes'])} "
                  f"| {(result['peak_bytes'] - eager['peak_bytes']) / 2 ** 20:+,.0f} MiB | {first:.1f} s "
                  f"| {compile_seconds} |", flush=True)
    print(f"\nload average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
