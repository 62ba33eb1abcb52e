"""Experiment: does the Leffa loss make approximately-right attention flow match the ground truth better?

The Leffa loss only sharpens correspondence that attention already has (pretrained SD); a randomly
initialised tiny model has none. So, per seed and teacher-error size, on the synthetic VITON-HD
dataset (whose ``ground-truth-flow/`` files give the exact person -> garment flow):

1. init: the tiny model trained with the diffusion loss plus a supervised attention-flow term toward a
   *teacher* flow = ground truth shifted by a known number of pixels (``teacher_flow.TeacherSeededModule``,
   experiment-only), exported. With ``--base-model`` this stage is off: the pretrained attention is the init;
2. two fine-tunes from that checkpoint on the real training path (Lightning ``Trainer``, ``StageSchedule``,
   ``LeffaModule``'s training step with augmentation, random timesteps, reference dropout), identical except
   the Leffa loss (same data order, noise, timesteps); with the loss at the paper's tau, theta_resolution,
   theta_timestep and ``--leffa-weight``; the first configuration also gets an arm at the paper's lambda;
3. held-out evaluation on the paired test pairs no stage trains on: every Leffa layer's attention flow
   (tau 2, fixed noise per pair and timestep, no reference dropout) against the ground truth
   (``end_point_error``, pixels at the training resolution), and the diffusion MSE on the same inputs;
   also during the fine-tunes (the curve of the figure).

Beside them: per flow grid, the floor (the lowest EPE the grid can express once upsampled as the loss does) and
the Leffa loss's own optimum near the truth; each fine-tune's gain as the share of the removable error (init -
floor) it closed. A sweep over more teacher shifts (first seed) shows how far from the truth the init may start.
Fixed kernels (``CPU_PINS``), one thread per worker and deterministic algorithms make the numbers the same on
machines of one kind; ``results.json`` records torch, the CPU and the data's digest to check that.
Writes ``results.md``, ``results.json`` and ``epe_vs_step.png`` under ``--out``.

    python experiments/exp_flow.py                       # make exp-flow (3 seeds x 2 teacher shifts)
    python experiments/exp_flow.py --seeds 0 --teacher-shifts 3 --sweep-shifts --finetune-steps 20   # a quick look
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import statistics
import sys
import time
import zlib
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

# The same CPU kernels on every x86-64 machine with AVX2, whatever wider instructions it has (ATen's dispatch,
# MKL's code path, oneDNN's): read when torch loads, inherited by the worker processes. Set one to override.
CPU_PINS = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
for _name, _value in CPU_PINS.items():
    os.environ.setdefault(_name, _value)

import lightning.pytorch as pl  # noqa: E402  (after the pins)
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from leffa_pl.callbacks.stage_schedule import Stage, StageSchedule  # noqa: E402
from leffa_pl.data import make_synthetic  # noqa: E402
from leffa_pl.data.datamodule import VitonHDDataModule  # noqa: E402
from leffa_pl.data.layout import FLOW_FOLDER  # noqa: E402
from leffa_pl.losses.leffa_loss import PAPER_TRAIN_TIMESTEPS, LeffaLoss, LeffaLossSettings  # noqa: E402
from leffa_pl.metrics.flow_error import end_point_error, upsample_flow  # noqa: E402
from leffa_pl.training.leffa_module import LeffaModule  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from teacher_flow import TeacherSeededModule, shift_vector  # noqa: E402  (experiment-only module beside this file)

ARM_TITLES = {"init": "initialisation", "no_leffa": "without Leffa loss", "leffa": "with Leffa loss",
              "leffa_paper_lambda": "with Leffa loss, paper's lambda"}
EVAL_TAU = 2.0  # the paper's temperature: the same flow definition for every model compared
TRAINED_T = 500  # the Leffa loss's theta_timestep: the flow is compared at t below it


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="data/synthetic-exp-flow/zalando-hd-resized",
                        help=f"VITON-HD root with {FLOW_FOLDER}/ (generated here if missing, --test-pairs held out)")
    parser.add_argument("--test-pairs", type=int, default=32, help="held-out pairs when the data is generated")
    parser.add_argument("--out", default="runs/exp-flow")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--teacher-shifts", type=float, nargs="+", default=[3.0, 6.0],
                        help="teacher error: ground truth shifted by this many pixels (direction from the seed)")
    parser.add_argument("--sweep-shifts", type=float, nargs="*", default=[],
                        help="more teacher shifts, first seed only: where the loss stops helping")
    parser.add_argument("--resolution", type=int, nargs=2, default=[64, 48], metavar=("H", "W"),
                        help="the tiny model's flow grids are then 8x6, 4x3 and 2x2")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--base-steps", type=int, default=80, help="steps of the teacher-seeded init stage")
    parser.add_argument("--base-learning-rate", type=float, default=2e-3)
    parser.add_argument("--teacher-weight", type=float, default=1.0, help="factor of the teacher term (pixels)")
    parser.add_argument("--finetune-steps", type=int, default=150, help="optimizer steps of each fine-tune")
    parser.add_argument("--learning-rate", type=float, default=1e-4, help="fine-tune lr (paper: 1e-5, on SD)")
    parser.add_argument("--leffa-weight", type=float, default=1.0, help="lambda of the with-loss arms")
    parser.add_argument("--paper-leffa-weight", type=float, default=1e-3,
                        help="lambda of the extra arm on the first configuration (paper: 1e-3); 0: no such arm")
    parser.add_argument("--leffa-tau", type=float, default=2.0, help="training temperature (paper: 2)")
    parser.add_argument("--timesteps", type=int, nargs="+", default=[100, 200, 300, 400, 700],
                        help="evaluation timesteps (the loss trains t < 500)")
    parser.add_argument("--curve-every", type=int, default=25, help="held-out EPE every this many fine-tune steps")
    parser.add_argument("--base-model", help="diffusers SD inpainting folder: its attention is the init "
                        "(no teacher stage; one configuration per seed)")
    parser.add_argument("--accelerator", default="cpu", help="Lightning accelerator (gpu with --base-model)")
    parser.add_argument("--precision", default="32-true", help="Lightning precision (bf16-mixed on a GPU)")
    parser.add_argument("--workers", type=int, default=2, help="configurations trained in parallel processes")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads per worker; fixed, not from the machine's CPU count: the thread count "
                        "changes how float sums are split, hence the numbers")
    return parser.parse_args(argv)


def ensure_data(root: Path, test_pairs: int) -> None:
    if root.is_dir():
        return
    if root.name != "zalando-hd-resized":
        raise FileNotFoundError(f"{root}: no such VITON-HD folder")
    make_synthetic.main(["--out", str(root.parent), "--datasets", "vitonhd", "--test", str(test_pairs)])


def data_digest(root: Path) -> str:
    """SHA-256 over every file's path and bytes: the same digest on two machines = the same data."""
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def machine() -> dict:
    """What decides the floats: torch and its kernels' ISA, the CPU, the thread count, the pins."""
    cpu = {}
    if Path("/proc/cpuinfo").exists():
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "flags") and key.strip() not in cpu:
                cpu[key.strip()] = value.strip()
    return {"torch": torch.__version__, "python": platform.python_version(), "machine": platform.machine(),
            "cpu_model": cpu.get("model name", platform.processor()), "cpu_flags": cpu.get("flags", ""),
            "cpus": os.cpu_count(), "aten_cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "mkl": torch.backends.mkl.is_available(), "env": {k: os.environ.get(k) for k in CPU_PINS}}


def make_data(root: Path, args: argparse.Namespace) -> VitonHDDataModule:
    return VitonHDDataModule(root=str(root), resolution=tuple(args.resolution), batch_size=args.batch_size,
                             num_workers=0, pin_memory=False, val_size=1)


def held_out_batches(root: Path, args: argparse.Namespace) -> list[dict]:
    """The paired test split (never trained on), loaded once, without augmentation."""
    data = make_data(root, args)
    data.setup("test")
    return list(data.test_dataloader())


@torch.no_grad()
def evaluate(module: LeffaModule, batches: list[dict], timesteps: list[int]) -> dict:
    """Per timestep: EPE (pixels) of every Leffa layer's flow, diffusion MSE, and the Leffa loss's own term
    (unweighted masked smooth-L1 warp error). Noise, VAE samples and timesteps depend only on (pair, t), so
    every model sees the same inputs. Returns {"epe": {t: {layer: EPE}}, "mse": {t: v}, "warp": {t: v},
    "grids": {layer: "hxw"}}."""
    was_training, device = module.training, module.device
    module.eval()
    # every sample (t < 1000 on the paper's scale), plain warp error
    flow_loss = LeffaLoss(tau=EVAL_TAU, weight=1.0, theta_timestep=PAPER_TRAIN_TIMESTEPS)
    num_train = module.noise_scheduler.config.num_train_timesteps
    errors: dict[int, dict[str, list[torch.Tensor]]] = {t: {} for t in timesteps}
    sums = {"mse": dict.fromkeys(timesteps, 0.0), "warp": dict.fromkeys(timesteps, 0.0)}
    count, grids = 0, {}
    for batch in batches:
        batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        count += len(batch["person"])
        for t in timesteps:
            generators = [torch.Generator().manual_seed(zlib.crc32(f"eval:{pid}:{t}".encode()))
                          for pid in batch["person_id"]]
            steps = torch.full((len(generators),), t, dtype=torch.long)
            noisy, noise, steps, conditioning, _ = module.diffusion_inputs(batch, generators, steps,
                                                                           reference_dropout=0.0)
            records = []
            prediction = module.model(noisy, steps, conditioning, attention_records=records)
            per_sample_mse = F.mse_loss(prediction.float(), noise.float(), reduction="none").mean(dim=(1, 2, 3))
            sums["mse"][t] += per_sample_mse.sum().item()
            output = flow_loss(records, batch["reference"], batch["person"], batch["loss_region"], steps,
                               num_train)
            sums["warp"][t] += output.loss.item() * len(steps)
            for layer in output.layers:
                grids[layer.name] = f"{layer.grid[0]}x{layer.grid[1]}"
                errors[t].setdefault(layer.name, []).append(end_point_error(layer.flow, batch["flow"]).cpu())
    module.train(was_training)
    return {"epe": {t: {name: torch.cat(values).nanmean().item() for name, values in layers.items()}
                    for t, layers in errors.items()},
            "mse": {t: total / count for t, total in sums["mse"].items()},
            "warp": {t: total / count for t, total in sums["warp"].items()}, "grids": grids}


def grid_measures(batches: list[dict], grid: tuple[int, int], steps: int = 300) -> dict[str, float]:
    """Held-out EPE of three flows on an ``h x w`` token grid, upsampled as the loss does (``upsample_flow``):

    - ``pooled``: the ground truth averaged over each token's cell (defined pixels only); not a floor: a cell
      only partly on the garment averages away from its centre;
    - ``floor``: the lowest EPE the grid can express, the grid values optimised directly for EPE (Adam from
      ``pooled``; per pair the lower of the two). Any value in [-1, 1]^2 is a convex combination of token
      coordinates, so attention can express it;
    - ``loss_optimum``: the Leffa loss's own optimum near the truth: from the floor's flow, the grid values
      optimised directly for the loss's warp term (smooth-L1 on the loss region, no network in between).
    """
    truth = torch.cat([batch["flow"].float() for batch in batches])
    reference, target = torch.cat([b["reference"] for b in batches]), torch.cat([b["person"] for b in batches])
    region = torch.cat([b["loss_region"] for b in batches])
    height, width = truth.shape[-2:]
    valid = (~torch.isnan(truth).any(dim=1, keepdim=True)).float()
    filled = torch.nan_to_num(truth)
    sums, counts = F.adaptive_avg_pool2d(filled * valid, grid), F.adaptive_avg_pool2d(valid, grid)
    mean = sums.sum(dim=(2, 3), keepdim=True) / counts.sum(dim=(2, 3), keepdim=True).clamp(min=1e-12)
    pooled = torch.where(counts > 0, sums / counts.clamp(min=1e-12), mean).permute(0, 2, 3, 1)
    to_pixels = torch.tensor([width / 2, height / 2]).view(1, 2, 1, 1)

    def epe_sum(flow):  # end_point_error's EPE on NaN-free tensors, so that gradients stay finite
        distance = ((upsample_flow(flow, (height, width)) - filled) * to_pixels).square().sum(dim=1) + 1e-12
        return (distance.sqrt() * valid[:, 0]).sum()

    def warp_sum(flow):
        warped = LeffaLoss._warp(reference, flow, (height, width))
        return F.smooth_l1_loss(warped * region, target * region, reduction="none").mean(dim=(1, 2, 3)).sum()

    def descend(start, objective, lr):
        flow = start.clone().requires_grad_(True)
        optimizer = torch.optim.Adam([flow], lr=lr)
        for _ in range(steps):
            optimizer.zero_grad()
            objective(flow).backward()
            optimizer.step()
        return flow.detach().clamp(-1, 1)

    with torch.enable_grad():
        best = descend(pooled, epe_sum, 0.01)
        optimum = descend(best, warp_sum, 0.002)
    floor = torch.minimum(end_point_error(pooled, truth), end_point_error(best, truth))
    return {"pooled": end_point_error(pooled, truth).nanmean().item(), "floor": floor.nanmean().item(),
            "loss_optimum": end_point_error(optimum, truth).nanmean().item()}


def layer_mean(grids: dict[str, dict[str, float]], layer_grids: dict[str, str], key: str) -> float:
    """Mean over the Leffa layers (as ``mean_epe``) of a per-grid measure."""
    return statistics.fmean(grids[g][key] for g in layer_grids.values())


def mean_epe(result: dict) -> float:
    """Mean over layers and the trained timesteps (t < 500)."""
    return statistics.fmean(statistics.fmean(layers.values()) for t, layers in result["epe"].items()
                            if int(t) < TRAINED_T)  # int: JSON keys are strings


class HeldOutCurve(pl.Callback):
    """Held-out mean EPE every ``every`` optimizer steps of a fine-tune: [(step, EPE), ...]."""

    def __init__(self, batches: list[dict], timesteps: list[int], every: int):
        self.batches, self.timesteps, self.every = batches, [t for t in timesteps if t < TRAINED_T], every
        self.points: list[tuple[int, float]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if step % self.every == 0 and (not self.points or self.points[-1][0] != step):
            self.points.append((step, mean_epe(evaluate(pl_module, self.batches, self.timesteps))))


def fit(module: LeffaModule, data_root: Path, stage: Stage, seed: int, args: argparse.Namespace,
        callbacks: list[pl.Callback] = ()) -> float:
    """Train ``module`` for one stage with the project's Trainer settings; returns seconds."""
    pl.seed_everything(seed, verbose=False)  # same data order and augmentation in every arm
    trainer = pl.Trainer(accelerator=args.accelerator, devices=1, precision=args.precision, gradient_clip_val=1.0,
                         callbacks=[StageSchedule([stage]), *callbacks], logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                         num_sanity_val_steps=0)
    start = time.perf_counter()
    trainer.fit(module, datamodule=make_data(data_root, args))
    return time.perf_counter() - start


def run_configuration(seed: int, shift_size: float | None, arms: dict[str, float], args: argparse.Namespace,
                      data_root: Path, out: Path) -> dict:
    """One initialisation (teacher stage, or ``--base-model``) and its fine-tunes, ``arms`` = {name: lambda}."""
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    device = "cuda" if args.accelerator in ("gpu", "cuda") else "cpu"
    resolution = tuple(args.resolution)
    batches = held_out_batches(data_root, args)
    common = dict(base_model=args.base_model, leffa_loss=LeffaLossSettings(tau=args.leffa_tau))
    seconds, shift = {}, None
    if args.base_model:
        init_checkpoint, init = None, LeffaModule(**common)
    else:
        shift = shift_vector(shift_size, seed)
        pl.seed_everything(seed, verbose=False)
        init = TeacherSeededModule(teacher_shift=shift, teacher_weight=args.teacher_weight, seed=seed,
                                   learning_rate=args.base_learning_rate, **common)
        stage = Stage("teacher-seeded init", args.base_steps, resolution, args.batch_size, leffa_loss=False)
        seconds["init"] = fit(init, data_root, stage, seed, args)
        init_checkpoint = str(init.model.export(out / f"init-seed{seed}-shift{shift_size:g}.safetensors"))
    results = {"init": evaluate(init.to(device), batches, args.timesteps)}
    del init
    curves = {}
    for arm, weight in arms.items():
        module = LeffaModule(base_model=args.base_model, init_checkpoint=init_checkpoint, seed=seed + 1000,
                             learning_rate=args.learning_rate,
                             leffa_loss=LeffaLossSettings(tau=args.leffa_tau, weight=weight))
        curve = HeldOutCurve(batches, args.timesteps, args.curve_every)
        stage = Stage(f"fine-tune {arm}", args.finetune_steps, resolution, args.batch_size, leffa_loss=weight > 0)
        seconds[arm] = fit(module, data_root, stage, seed + 1000, args, [curve])
        results[arm] = evaluate(module.to(device), batches, args.timesteps)
        curves[arm] = [(0, mean_epe(results["init"]))] + [p for p in curve.points if p[0] < args.finetune_steps] \
            + [(args.finetune_steps, mean_epe(results[arm]))]
    return {"seed": seed, "shift_size": shift_size, "shift": shift, "pairs": sum(len(b["person"]) for b in batches),
            "seconds": seconds, "threads": torch.get_num_threads(), "arms": results, "curves": curves}


def configurations(args: argparse.Namespace) -> list[tuple[int, float | None, dict[str, float]]]:
    """(seed, teacher shift, arms) of every init; the first one also gets the paper's-lambda arm."""
    arms = {"no_leffa": 0.0, "leffa": args.leffa_weight}
    if args.base_model:
        jobs = [(seed, None, dict(arms)) for seed in args.seeds]
    else:
        jobs = [(seed, shift, dict(arms)) for shift in args.teacher_shifts for seed in args.seeds]
        jobs += [(args.seeds[0], shift, dict(arms)) for shift in args.sweep_shifts if shift not in args.teacher_shifts]
    if args.paper_leffa_weight and args.paper_leffa_weight != args.leffa_weight:
        jobs[0][2]["leffa_paper_lambda"] = args.paper_leffa_weight
    return jobs


def run_all(args: argparse.Namespace, data_root: Path, out: Path) -> list[dict]:
    jobs = configurations(args)
    if args.workers <= 1:
        return [run_configuration(seed, shift, arms, args, data_root, out) for seed, shift, arms in jobs]
    with ProcessPoolExecutor(args.workers, mp_context=get_context("spawn")) as pool:
        futures = [pool.submit(run_configuration, seed, shift, arms, args, data_root, out)
                   for seed, shift, arms in jobs]
        runs = []
        for future in futures:
            runs.append(future.result())
            print(f"done: seed {runs[-1]['seed']}, shift {runs[-1]['shift_size']}: "
                  + ", ".join(f"{arm} {mean_epe(r):.2f}" for arm, r in runs[-1]["arms"].items()), flush=True)
        return runs


def fixed_flow_errors(batches: list[dict]) -> dict[str, float]:
    """EPE of two fixed flows for scale: zero displacement (each person pixel samples the garment image at
    its own position) and the reference centre (what uniform attention gives: the mean coordinate)."""
    values: dict[str, list[torch.Tensor]] = {"zero displacement": [], "uniform attention": []}
    for batch in batches:
        batch_size, (height, width) = len(batch["flow"]), batch["flow"].shape[-2:]
        ys, xs = torch.meshgrid(torch.linspace(-1 + 1 / height, 1 - 1 / height, height),
                                torch.linspace(-1 + 1 / width, 1 - 1 / width, width), indexing="ij")
        identity = torch.stack([xs, ys], dim=-1).expand(batch_size, -1, -1, -1)
        values["zero displacement"].append(end_point_error(identity, batch["flow"]))
        values["uniform attention"].append(end_point_error(torch.zeros(batch_size, 1, 1, 2), batch["flow"]))
    return {name: torch.cat(errors).nanmean().item() for name, errors in values.items()}


def mean_mse(result: dict) -> float:
    return statistics.fmean(result["mse"].values())


def short_layer(name: str) -> str:
    """``down_blocks.0.attentions.1.transformer_blocks.0.attn1`` -> ``down0.1``."""
    parts = name.split(".")
    if parts[0] == "mid_block":
        return f"mid.{parts[2]}"
    return f"{parts[0].split('_')[0]}{parts[1]}.{parts[3]}"


def target_met(run: dict) -> bool:
    """The issue's target: with-loss EPE at least 30 % below without-loss, and below the init."""
    init, without, with_loss = (mean_epe(run["arms"][arm]) for arm in ("init", "no_leffa", "leffa"))
    return with_loss <= 0.7 * without and with_loss < init


def change(epe: dict[str, float]) -> str:
    """With-loss EPE relative to without-loss."""
    return f"{100 * (epe['leffa'] / epe['no_leffa'] - 1):+.0f} %"


def shift_label(run: dict) -> str:
    return "pretrained" if run["shift_size"] is None else f"{run['shift_size']:g} px"


def closed(init: float, value: float, floor: float) -> str:
    """Share of the removable error (init - floor) that a fine-tune closed."""
    return f"{100 * (init - value) / (init - floor):+.0f} %"


def markdown(runs: list[dict], args: argparse.Namespace, fixed: dict[str, float],
             grids: dict[str, dict[str, float]]) -> str:
    layer_grids = runs[0]["arms"]["init"]["grids"]
    floor, optimum = layer_mean(grids, layer_grids, "floor"), layer_mean(grids, layer_grids, "loss_optimum")
    main_runs = [r for r in runs if r["shift_size"] is None or r["shift_size"] in args.teacher_shifts]
    arms = ("init", "no_leffa", "leffa")
    trained_t = [t for t in args.timesteps if t < TRAINED_T]
    lines = [
        f"Held-out attention-flow end-point error (pixels at {args.resolution[0]}x{args.resolution[1]}, lower is "
        f"better) on the {runs[0]['pairs']} paired test pairs no stage trains on: mean over the "
        f"{len(runs[0]['arms']['init']['grids'])} layers the loss uses and t in {trained_t}, flow at tau = "
        f"{EVAL_TAU}. Diffusion MSE: the same inputs, mean over t in {args.timesteps}. Change: with vs without. "
        f"Floor: the lowest EPE the layers' flow grids can express ({floor:.2f} px, mean over the layers; per grid "
        f"below); closed: the share of the removable error (init - floor) that each fine-tune removed. The Leffa "
        f"loss's own optimum near the truth lies at {optimum:.2f} px.",
        "",
        "| teacher shift | seed | shift (dx, dy) px | EPE init | EPE without | EPE with | floor | change "
        "| closed without | closed with | MSE init | MSE without | MSE with | target met |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for run in main_runs:
        epe = {arm: mean_epe(run["arms"][arm]) for arm in arms}
        mse = {arm: mean_mse(run["arms"][arm]) for arm in arms}
        vector = "-" if run["shift"] is None else f"({run['shift'][0]:+.1f}, {run['shift'][1]:+.1f})"
        lines.append(f"| {shift_label(run)} | {run['seed']} | {vector} | "
                     + " | ".join(f"{epe[a]:.2f}" for a in arms)
                     + f" | {floor:.2f} | {change(epe)} | {closed(epe['init'], epe['no_leffa'], floor)} | "
                     + f"{closed(epe['init'], epe['leffa'], floor)} | " + " | ".join(f"{mse[a]:.4f}" for a in arms)
                     + f" | {'yes' if target_met(run) else 'no'} |")
    for label in dict.fromkeys(shift_label(r) for r in main_runs):
        group = [r for r in main_runs if shift_label(r) == label]
        epe = {a: statistics.fmean(mean_epe(r["arms"][a]) for r in group) for a in arms}
        mse = {a: statistics.fmean(mean_mse(r["arms"][a]) for r in group) for a in arms}
        lines.append(f"| **{label}, mean** | {len(group)} seeds | | " + " | ".join(f"**{epe[a]:.2f}**" for a in arms)
                     + f" | {floor:.2f} | **{change(epe)}** | {closed(epe['init'], epe['no_leffa'], floor)} | "
                     + f"**{closed(epe['init'], epe['leffa'], floor)}** | "
                     + " | ".join(f"{mse[a]:.4f}" for a in arms)
                     + f" | {sum(target_met(r) for r in group)}/{len(group)} |")
    lines += ["", "Mean EPE per timestep (all runs above):", "",
              "| model | " + " | ".join(f"t={t}" for t in args.timesteps) + " |",
              "|---|" + "---|" * len(args.timesteps)]
    for arm in arms:
        cells = [statistics.fmean(statistics.fmean(r["arms"][arm]["epe"][t].values()) for r in main_runs)
                 for t in args.timesteps]
        lines.append(f"| {ARM_TITLES[arm]} | " + " | ".join(f"{c:.2f}" for c in cells) + " |")
    lines += ["", "Per flow grid, on the same held-out pairs (EPE, px): the ground truth averaged onto the grid "
              "(not a floor: a token cell only partly on the garment averages away from its centre), the floor (the "
              "grid values optimised for EPE) and the Leffa loss's optimum (the grid values optimised for the loss's "
              "warp term, starting from the floor's flow):", "",
              "| grid | layers | truth averaged | floor | loss optimum |", "|---|---|---|---|---|"]
    for grid, values in grids.items():
        count = sum(g == grid for g in layer_grids.values())
        lines.append(f"| {grid} | {count} | {values['pooled']:.2f} | {values['floor']:.2f} | "
                     f"{values['loss_optimum']:.2f} |")
    names = list(layer_grids)
    labels = list(dict.fromkeys(shift_label(r) for r in main_runs))
    lines += ["", "Per layer (mean over seeds and t < 500), init / without / with; floor of its grid:", "",
              "| layer | grid | floor | " + " | ".join(labels) + " |", "|---|---|---|" + "---|" * len(labels)]
    for name in names:
        cells = []
        for label in labels:
            group = [r for r in main_runs if shift_label(r) == label]
            means = [statistics.fmean(r["arms"][a]["epe"][t][name] for r in group for t in trained_t) for a in arms]
            cells.append(" / ".join(f"{value:.2f}" for value in means))
        lines.append(f"| {short_layer(name)} | {layer_grids[name]} | {grids[layer_grids[name]]['floor']:.2f} | "
                     + " | ".join(cells) + " |")
    sweep = sorted((r for r in runs if r["seed"] == args.seeds[0] and r["shift_size"] is not None),
                   key=lambda r: r["shift_size"])
    if len(sweep) > 1:
        lines += ["", f"Distance from init (seed {args.seeds[0]}): the teacher shift sets how far the init starts "
                  "from the truth.", "", "| teacher shift | EPE init | EPE without | EPE with | change | "
                  "with - init |", "|---|---|---|---|---|---|"]
        for run in sweep:
            epe = {arm: mean_epe(run["arms"][arm]) for arm in arms}
            lines.append(f"| {shift_label(run)} | " + " | ".join(f"{epe[a]:.2f}" for a in arms)
                         + f" | {change(epe)} | {epe['leffa'] - epe['init']:+.2f} |")
    paper = [r for r in runs if "leffa_paper_lambda" in r["arms"]]
    if paper:
        run = paper[0]
        lines += ["", f"Paper's lambda {args.paper_leffa_weight:g} (seed {run['seed']}, shift {shift_label(run)}): "
                  f"EPE {mean_epe(run['arms']['leffa_paper_lambda']):.2f} against init "
                  f"{mean_epe(run['arms']['init']):.2f}, without {mean_epe(run['arms']['no_leffa']):.2f} and "
                  f"lambda {args.leffa_weight:g} {mean_epe(run['arms']['leffa']):.2f}; MSE "
                  f"{mean_mse(run['arms']['leffa_paper_lambda']):.4f}."]
    warp = {a: statistics.fmean(statistics.fmean(r["arms"][a]["warp"][t] for t in trained_t) for r in main_runs)
            for a in arms}
    lines += ["", "The Leffa loss's own term on the held-out pairs (masked smooth-L1 warp error, mean over layers "
              "and t < 500): " + ", ".join(f"{ARM_TITLES[a]} {warp[a]:.4f}" for a in arms) + ".",
              "", f"Fixed flows for scale: zero displacement {fixed['zero displacement']:.2f} px; the reference "
              f"centre everywhere (uniform attention) {fixed['uniform attention']:.2f} px."]
    seconds = sum(sum(r["seconds"].values()) for r in runs)
    init = ("the pretrained attention of " + args.base_model if args.base_model else
            f"{args.base_steps} steps of diffusion + teacher-flow loss (weight {args.teacher_weight:g}, "
            f"lr {args.base_learning_rate:g})")
    lines += ["", f"Setup: {'SD (' + args.base_model + ')' if args.base_model else 'tiny model'}, batch "
              f"{args.batch_size}, AdamW, grad clip 1.0; init: {init}; fine-tunes: {args.finetune_steps} steps at lr "
              f"{args.learning_rate:g}, reference dropout 0.1, augmentation, uniform t; Leffa lambda "
              f"{args.leffa_weight:g}, tau {args.leffa_tau:g}, theta_resolution 1/32, theta_timestep 500, smooth-L1; "
              f"{seconds:.0f} s of training in all, {args.workers} worker(s) x {runs[0]['threads']} thread(s); torch "
              f"{torch.__version__}, kernels {torch.backends.cpu.get_cpu_capability()} ("
              + ", ".join(f"{k}={os.environ.get(k)}" for k in CPU_PINS) + f") on {machine()['cpu_model']}."]
    return "\n".join(lines) + "\n"


def figure(runs: list[dict], args: argparse.Namespace, path: Path) -> None:
    """Held-out EPE vs fine-tune step, both arms, one panel per teacher shift; and the distance sweep."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(dict.fromkeys(shift_label(r) for r in runs if r["shift_size"] is None
                                or r["shift_size"] in args.teacher_shifts))
    sweep = sorted((r for r in runs if r["seed"] == args.seeds[0] and r["shift_size"] is not None),
                   key=lambda r: r["shift_size"])
    panels = len(labels) + (len(sweep) > 1)
    fig, axes = plt.subplots(1, panels, figsize=(4.2 * panels, 3.4), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for axis, label in zip(axes[0], labels):
        for index, run in enumerate(r for r in runs if shift_label(r) == label):
            for arm, style in (("no_leffa", "--"), ("leffa", "-")):
                steps, values = zip(*run["curves"][arm])
                axis.plot(steps, values, style, color=colors[index % len(colors)],
                          label=f"seed {run['seed']}, {ARM_TITLES[arm]}")
        axis.set(title=f"init: teacher shift {label}", xlabel="fine-tune step", ylabel="held-out EPE (px)")
        axis.legend(fontsize=6)
    if len(sweep) > 1:
        axis = axes[0][-1]
        init = [mean_epe(r["arms"]["init"]) for r in sweep]
        for arm, style in (("no_leffa", "o--"), ("leffa", "o-")):
            axis.plot(init, [mean_epe(r["arms"][arm]) for r in sweep], style, label=ARM_TITLES[arm])
        axis.plot(init, init, ":", color="grey", label="no change")
        for run, x in zip(sweep, init):
            axis.annotate(shift_label(run), (x, x), fontsize=6)
        axis.set(title=f"distance from init (seed {args.seeds[0]})", xlabel="init EPE (px)",
                 ylabel="EPE after fine-tune (px)")
        axis.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    data_root, out = Path(args.data), Path(args.out)
    ensure_data(data_root, args.test_pairs)
    out.mkdir(parents=True, exist_ok=True)
    runs = run_all(args, data_root, out)
    torch.set_num_threads(args.threads)
    batches = held_out_batches(data_root, args)
    fixed = fixed_flow_errors(batches)
    grids = {g: grid_measures(batches, tuple(int(v) for v in g.split("x")))
             for g in dict.fromkeys(runs[0]["arms"]["init"]["grids"].values())}
    table = markdown(runs, args, fixed, grids)
    (out / "results.md").write_text(table)
    (out / "results.json").write_text(json.dumps({"args": vars(args), "machine": machine(),
                                                  "data_sha256": data_digest(data_root), "fixed_flow_epe": fixed,
                                                  "grids": grids, "runs": runs}, indent=1))
    figure(runs, args, out / "epe_vs_step.png")
    print(table)
    print(f"wrote {out / 'results.md'}, results.json and epe_vs_step.png in {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
