"""Cost of the weights fingerprint that prediction records in prediction.json (SHA-256 of the state dict).

Hashes the tiny model's state dict and a 1 GiB float32 state dict, 3 times each, in this process, and
projects the time for an SD1.5-sized Leffa model (2 x 860M UNet + 84M VAE parameters, float32).
"""

from __future__ import annotations

import os
import platform
import statistics
import time

import torch

from leffa_pl.model.checkpoint import weights_fingerprint
from leffa_pl.model.leffa_model import LeffaModel

SD15_LEFFA_PARAMETERS = 2 * 860e6 + 84e6
REPEATS = 3


def seconds(state: dict[str, torch.Tensor]) -> float:
    times = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        weights_fingerprint(state)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    tiny = LeffaModel.tiny().state_dict()
    tiny_bytes = sum(t.numel() * t.element_size() for t in tiny.values())
    gib = {f"layer{i}": torch.zeros(64, 1024, 1024 // 64) for i in range(256)}  # 256 tensors, 1 GiB in all
    gib_bytes = sum(t.numel() * t.element_size() for t in gib.values())
    tiny_s, gib_s = seconds(tiny), seconds(gib)
    rate = gib_bytes / gib_s
    print(f"# bench-fingerprint: median of {REPEATS}, torch {torch.__version__}, {platform.machine()}, "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"tiny model ({tiny_bytes / 2**20:.1f} MiB): {tiny_s * 1000:.1f} ms")
    print(f"1 GiB float32 state dict: {gib_s:.2f} s ({rate / 2**30:.2f} GiB/s)")
    sd15 = SD15_LEFFA_PARAMETERS * 4
    print(f"SD1.5-sized Leffa model ({sd15 / 2**30:.1f} GiB float32), projected: {sd15 / rate:.1f} s")


if __name__ == "__main__":
    main()
