"""Peak memory and time of the Leffa attention flow, forward + backward: naive (materialised map) vs fused.

Every measurement runs in a fresh subprocess. On CPU the peak is the process's resident-set high-water
mark (VmHWM, reset through /proc/self/clear_refs after the inputs exist) minus the resident size at
that moment, so it counts every allocation torch makes; on CUDA it is torch's peak allocated memory.
The naive path is skipped where its estimated peak would not fit in the available memory.

    python -m benchmarks.bench_leffa                 # the docs/performance.md table (SD1.5 first level: 8 heads of 40)
    python -m benchmarks.bench_leffa --grids 16x12 32x24 --repeats 1
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import subprocess
import time
from pathlib import Path

import torch

from benchmarks.common import REPO_ROOT, rerun_command
from leffa_pl.data.layout import parse_size
from leffa_pl.losses.attention_flow import attention_flow, naive_attention_flow

METHODS = {"naive": naive_attention_flow, "fused": attention_flow}
NAIVE_MAPS_ALIVE = 3  # scores/softmax output and two backward temporaries of [B, heads, n, n]: measured ~3x


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def _release_free_memory() -> None:
    gc.collect()
    try:  # hand freed heap back to the OS so that it is not silently reused inside the measurement
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass


def _run(method, query, key, grid, probe, scale) -> None:
    flow = method(query, key, scale, grid)
    (flow * probe).sum().backward()
    query.grad = key.grad = None


def measure(method_name: str, grid: tuple[int, int], heads: int, head_dim: int, batch: int, repeats: int,
            device: str) -> dict:
    """One measurement (run inside a fresh process): peak bytes of the first run, median seconds."""
    method, tokens = METHODS[method_name], grid[0] * grid[1]
    generator = torch.Generator(device).manual_seed(0)

    def inputs(n):
        query, key = (torch.randn(batch, heads, n, head_dim, device=device, generator=generator)
                      for _ in range(2))
        return query.requires_grad_(), key.requires_grad_(), torch.randn(batch, n, 2, device=device)

    _run(method, *inputs(16)[:2], (4, 4), inputs(16)[2], head_dim ** -0.5 / 2)  # load kernels, start threads
    query, key, probe = inputs(tokens)
    scale = head_dim ** -0.5 / 2  # SD's 1/sqrt(d) with Leffa's tau = 2

    _release_free_memory()
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current resident size
        base = _status_kib("VmRSS") * 1024
    seconds = []
    for repeat in range(repeats):
        start = time.perf_counter()
        _run(method, query, key, grid, probe, scale)
        if device == "cuda":
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - start)
        if repeat == 0:
            high_water = torch.cuda.max_memory_allocated() if device == "cuda" else _status_kib("VmHWM") * 1024
            peak = high_water - base
    return {"peak_bytes": peak, "seconds": sorted(seconds)[len(seconds) // 2]}


def available_bytes(device: str) -> int:
    if device == "cuda":
        return torch.cuda.mem_get_info()[0]
    return _status_kib_meminfo("MemAvailable")


def _status_kib_meminfo(field: str) -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/meminfo has no {field}")


def measure_in_subprocess(method: str, grid: tuple[int, int], args: argparse.Namespace) -> dict:
    command = [*rerun_command(__spec__.name), "--measure", method, "--grids", f"{grid[0]}x{grid[1]}",
               "--heads", str(args.heads), "--head-dim", str(args.head_dim), "--batch", str(args.batch),
               "--repeats", str(args.repeats), "--device", args.device]
    result = subprocess.run(command, capture_output=True, text=True, check=False, cwd=REPO_ROOT)
    if result.returncode != 0:
        raise RuntimeError(f"measurement {method} {grid} failed:\n{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def mib(nbytes: float) -> str:
    return f"{nbytes / 2 ** 20:,.1f} MiB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--grids", nargs="+", default=["32x24", "64x48", "128x96"],
                        help="token grids h x w (128x96 is the first latent level of a 1024x768 image)")
    parser.add_argument("--heads", type=int, default=8, help="SD1.5's first level: 8 heads")
    parser.add_argument("--head-dim", type=int, default=40, help="SD1.5's first level: 320 / 8 heads")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per measurement (median)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--memory-fraction", type=float, default=0.5,
                        help="run naive only if its estimated peak is below this share of free memory")
    parser.add_argument("--measure", choices=sorted(METHODS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    grids = [parse_size(text) for text in args.grids]

    if args.measure:
        print(json.dumps(measure(args.measure, grids[0], args.heads, args.head_dim, args.batch, args.repeats,
                                 args.device)))
        return

    where = (torch.cuda.get_device_name() if args.device == "cuda"
             else f"CPU, {torch.get_num_threads()} threads")
    print(f"Leffa attention flow, forward + backward, float32, batch {args.batch}, {args.heads} heads of "
          f"{args.head_dim}, {where}, torch {torch.__version__}\n")
    print("| token grid | tokens | naive peak | fused peak | naive/fused memory | naive time | fused time "
          "| naive/fused time |")
    print("|---|---|---|---|---|---|---|---|")
    for grid in grids:
        tokens = grid[0] * grid[1]
        fused = measure_in_subprocess("fused", grid, args)
        naive_estimate = NAIVE_MAPS_ALIVE * args.batch * args.heads * tokens * tokens * 4
        if naive_estimate < args.memory_fraction * available_bytes(args.device):
            naive = measure_in_subprocess("naive", grid, args)
            cells = [mib(naive["peak_bytes"]), mib(fused["peak_bytes"]),
                     f"{naive['peak_bytes'] / fused['peak_bytes']:.1f}x", f"{naive['seconds']:.3f} s",
                     f"{fused['seconds']:.3f} s", f"{naive['seconds'] / fused['seconds']:.1f}x"]
        else:
            skipped = f"skipped (needs ~{naive_estimate / 2 ** 30:.0f} GiB)"
            cells = [skipped, mib(fused["peak_bytes"]), "-", "-", f"{fused['seconds']:.3f} s", "-"]
        print(f"| {grid[0]}x{grid[1]} | {tokens} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
