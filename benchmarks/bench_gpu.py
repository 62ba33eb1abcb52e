"""GPU check of the paper's setting, in under 8 minutes on one GPU: SD1.5-size training steps, measured and planned.

Rows: SD1.5-size model (random weights, nothing downloaded) at 512x384 (batch 32) and 1024x768 (batch 8), the
per-device batches of configs/stages/vton_paper.yaml, with the paper's settings: bf16-mixed, gradient
checkpointing, AdamW, gradient clipping 1.0 (no EMA); Leffa loss off and on (every sample takes it); Lightning's
single-device strategy and ``ddp`` with one process. Then LoRA (``model.trainable=lora``, rank 64 by default,
``--lora-ranks``; ``configs/model/lora.yaml``'s targets, the frozen base in bf16 under bf16-mixed) with AdamW at each
resolution and batch, Leffa on, single device. Then the speed levers, one row each at the first resolution
with the Leffa loss, single device: ``model.channels_last`` and ``model.torch_compile`` (inductor; its compile time
is in the warm-up steps, so in the row's wall time, not in its step time). Each row is one fresh process
(``bench_train.measure``: model built on the device, warm-up steps, timed steps). A batch that does not fit is
reported as out of memory, not shrunk: the planner's column says whether it should have fitted.

Columns: median step time, samples/s, peak ``torch.cuda.max_memory_allocated`` over the timed steps, the planner's
prediction for it (``leffa_pl.planning``: exact weights, gradients, AdamW state and step temporaries; fitted
activations; for each trainable set), model FLOPs
of a step (``bench_train.count_step_flops``: FlopCounterMode over one step at batch 1 without checkpointing, times
the batch) and model FLOPs utilisation against the device's dense bf16 peak (``PEAK_BF16_TFLOPS`` by device name,
or ``--peak-tflops``). The planner's activation fits (CPU, fake tensors) run in a process of their own beside the
GPU rows. Rows not started within ``--budget-s`` are reported as skipped; the elapsed time is printed.

Budget (an estimate: no GPU was available to measure it): per row ~10 s of start-up and model build on the GPU,
2 warm-up + 4 timed steps of about a second each at these batches on an H100-class GPU; the 8 paper rows in 4-6
minutes, the two LoRA rows in about one, the channels-last row in under one, the compile row with an unmeasured
compilation (skipped if the budget is spent).

    python -m benchmarks.bench_gpu                                                   # make bench-gpu
    python -m benchmarks.bench_gpu --device cpu --model tiny --resolutions 64x48 --batch-sizes 2 --precision 32-true \\
         --leffa on --strategies auto --lora-ranks 4 --levers --warmup 1 --steps 1 --peak-tflops 1 --threads 1
                                                                                       # CPU smoke (a test)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch

from benchmarks.bench_train import Config, measure_in_subprocess, planner_prediction
from benchmarks.common import REPO_ROOT, rerun_command
from leffa_pl.data.layout import parse_size
from leffa_pl.planning.activations import ActivationModel, StepActivations
from leffa_pl.planning.plan import GIB, StaticMemory, step_peak

# Dense bf16 tensor-core peaks (TFLOPS), matched as substrings of the device name, longest first.
PEAK_BF16_TFLOPS = {"H100 PCIe": 756.0, "H100 NVL": 835.0, "H100": 989.0, "H200": 989.0, "A100": 312.0,
                    "L40S": 362.0, "L4": 121.0}
STRATEGIES = {"auto": "single device", "ddp": "ddp, 1 process"}
LEVERS = {"channels_last": "channels-last", "torch_compile": "torch.compile"}


def peak_tflops(device_name: str) -> float | None:
    return next((PEAK_BF16_TFLOPS[key] for key in sorted(PEAK_BF16_TFLOPS, key=len, reverse=True)
                 if key in device_name), None)


def configurations(args: argparse.Namespace) -> list[Config]:
    if len(args.resolutions) != len(args.batch_sizes):
        raise SystemExit("--resolutions and --batch-sizes need one batch size per resolution")
    # FLOPs depend on neither the strategy nor the levers: counted in the first row of each setting.
    paper = [Config(args.model, resolution, batch, leffa == "on", args.device, args.precision, True, args.warmup,
                    args.steps, strategy=strategy, count_flops=strategy == args.strategies[0])
             for resolution, batch in zip(args.resolutions, args.batch_sizes)
             for leffa in args.leffa for strategy in args.strategies]
    frozen = "bfloat16" if args.precision == "bf16-mixed" else "float32"
    lora = [Config(args.model, resolution, batch, args.leffa[-1] == "on", args.device, args.precision, True,
                   args.warmup, args.steps, lora_rank=rank, lora_frozen_dtype=frozen)
            for rank in args.lora_ranks for resolution, batch in zip(args.resolutions, args.batch_sizes)]
    # Last, so that the budget skips them first.
    levers = [Config(args.model, args.resolutions[0], args.batch_sizes[0], args.leffa[-1] == "on", args.device,
                     args.precision, True, args.warmup, args.steps, **{lever: True}) for lever in args.levers]
    return paper + lora + levers


def setting(config: Config) -> str:
    """The strategy column: the strategy, LoRA, and the lever a row switches on."""
    levers = [text for lever, text in LEVERS.items() if getattr(config, lever)]
    lora = [f"LoRA r{config.lora_rank}"] if config.lora_rank else []
    return " + ".join([STRATEGIES[config.strategy], *lora, *levers])


def start_prediction(configs: list[Config], threads: int | None) -> subprocess.Popen:
    """The planner's prediction in a process of its own (``--predict``), running while the rows are measured: one
    per trainable set (``Config.label``)."""
    groups = {config.label: asdict(config) for config in configs}
    request = {"configs": list(groups.values()), "leffa": sorted({config.leffa for config in configs})}
    command = [*rerun_command(__spec__.name), "--predict", json.dumps(request)]
    command += ["--threads", str(threads)] if threads else []
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO_ROOT)


def collect_prediction(process: subprocess.Popen) -> dict[str, tuple[StaticMemory, dict[bool, StepActivations]]]:
    """{trainable set label: (static terms, {Leffa on: activation model})}."""
    out, err = process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"planner prediction failed:\n{err[-4000:]}")
    predictions = {}
    for label, fields in json.loads(out.strip().splitlines()[-1]).items():
        predictions[label] = (StaticMemory(**fields["static"]), {
            leffa == "on": StepActivations(ActivationModel(**model["forward"]), ActivationModel(**model["backward"]))
            for leffa, model in fields["activations"].items()})
    return predictions


def format_row(config: Config, result: dict, flops_per_sample: int | None, planned: float | None,
               peak: float | None) -> str:
    head = (f"| {config.resolution[0]}x{config.resolution[1]} | {config.batch_size} "
            f"| {'on' if config.leffa else 'off'} | {setting(config)} ")
    planned_text = f"{planned / GIB:.1f}" if planned is not None else "-"
    for flag, text in (("skipped", "skipped (budget)"), ("timed_out", "timed out"), ("oom", "out of memory")):
        if result.get(flag):
            return head + f"| {text} | - | - | - | - | {planned_text} | - | - |"
    seconds = result["seconds"]
    step_flops = flops_per_sample * config.batch_size if flops_per_sample else None
    mfu = f"{step_flops / seconds / (peak * 1e12):.1%}" if step_flops and peak else "-"
    measured = result["peak_bytes"]
    ratio = f"{planned / measured:.2f}" if planned is not None else "-"
    flops_text = f"{step_flops / 1e12:.3g}" if step_flops else "-"
    return head + (f"| {seconds:.3f} s | {config.batch_size / seconds:.2f} | {flops_text} | {mfu} "
                   f"| {measured / GIB:.1f} | {planned_text} | {ratio} | {result['wall_seconds']:.0f} s |")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--model", default="sd15", choices=["sd15", "tiny"])
    parser.add_argument("--resolutions", nargs="+", type=parse_size, default=[(512, 384), (1024, 768)])
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[32, 8], help="per device, one per resolution")
    parser.add_argument("--leffa", nargs="+", choices=["off", "on"], default=["off", "on"])
    parser.add_argument("--strategies", nargs="+", choices=list(STRATEGIES), default=list(STRATEGIES))
    parser.add_argument("--lora-ranks", nargs="*", type=int, default=[64],
                        help="LoRA rows: one per rank and resolution (none: --lora-ranks with no value)")
    parser.add_argument("--levers", nargs="*", choices=list(LEVERS), default=list(LEVERS),
                        help="one extra row each (none: --levers with no value)")
    parser.add_argument("--precision", default="bf16-mixed", help="the paper's; 32-true for a quick CPU smoke run")
    parser.add_argument("--warmup", type=int, default=2, help="optimizer steps before timing")
    parser.add_argument("--steps", type=int, default=4, help="timed optimizer steps (median)")
    parser.add_argument("--peak-tflops", type=float, help="dense bf16 peak of the device (default: by its name)")
    parser.add_argument("--budget-s", type=float, default=450, help="no row starts after this many seconds")
    parser.add_argument("--threads", type=int, help="torch CPU threads per process (default: torch's choice)")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON here")
    parser.add_argument("--predict", help=argparse.SUPPRESS)
    return parser


def main() -> None:
    args = build_parser().parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    if args.predict:
        request, predictions = json.loads(args.predict), {}
        for fields in request["configs"]:
            config = Config(**fields | {"resolution": tuple(fields["resolution"])})
            static, activations = planner_prediction(config, tuple(request["leffa"]))
            predictions[config.label] = {"static": asdict(static), "activations": {
                "on" if leffa else "off": asdict(model) for leffa, model in activations.items()}}
        print(json.dumps(predictions))
        return

    started = time.perf_counter()
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("bench-gpu: no CUDA device here (for the plumbing on CPU: --device cpu --model tiny ...)")
    name = torch.cuda.get_device_name() if args.device == "cuda" else "CPU"
    peak = args.peak_tflops or peak_tflops(name)
    configs = configurations(args)
    prediction = start_prediction(configs, args.threads)
    print(f"bench-gpu: {name}, {args.model}, {args.precision}, gradient checkpointing, AdamW, clip 1.0; median of "
          f"{args.steps} steps after {args.warmup} warm-up; bf16 peak "
          f"{f'{peak:g} TFLOPS' if peak else 'unknown (pass --peak-tflops for MFU)'}\n", flush=True)
    results, flops = [], {}
    for config in configs:
        remaining = args.budget_s - (time.perf_counter() - started)
        result = measure_in_subprocess(config, args.threads, remaining) if remaining > 0 else {"skipped": True}
        if result.get("flops_per_sample"):
            flops[(config.resolution, config.batch_size, config.leffa)] = result["flops_per_sample"]
        results.append(result)
        print(f"  measured {config.resolution} batch {config.batch_size} Leffa {config.leffa} {setting(config)}: "
              f"{result} at {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    predictions = collect_prediction(prediction)

    print("| resolution | batch | Leffa | strategy | step | samples/s | TFLOP/step | MFU | peak allocated GiB "
          "| planned GiB | planned / measured | wall |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    rows = []
    for config, result in zip(configs, results):
        per_sample = flops.get((config.resolution, config.batch_size, config.leffa))
        static, activations = predictions[config.label]
        planned = step_peak(static, activations[config.leffa].bytes(config.batch_size, config.resolution))
        print(format_row(config, result, per_sample, planned, peak), flush=True)
        rows.append(asdict(config) | result | {"planned_bytes": planned, "flops_per_sample": per_sample,
                                               "peak_tflops": peak})
    print()
    for label, (static, _) in predictions.items():
        print(f"planner, {label}: weights {static.weights / GIB:.1f} + gradients {static.gradients / GIB:.1f} + AdamW "
              f"{static.optimizer / GIB:.1f} GiB exact, + max(activations fitted, AdamW step "
              f"{static.optimizer_step / GIB:.1f} GiB)")
    print(f"elapsed {time.perf_counter() - started:.0f} s; load average {os.getloadavg()[0]:.1f}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
