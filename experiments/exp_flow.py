"""Experiment: does the Leffa loss make the attention flow match the ground-truth flow?

From one initialisation (per seed), on the synthetic VITON-HD dataset (whose ``ground-truth-flow/``
files give the exact person -> garment flow):

1. base: the tiny model (or ``--base-model``) trained without the Leffa loss (Lightning ``Trainer`` +
   ``StageSchedule``), exported to a checkpoint: the common initialisation;
2. two fine-tunes loaded from that checkpoint (``LeffaModule(init_checkpoint=...)``), identical in
   everything (data order, augmentation, noise, timesteps, optimizer) except the Leffa loss: off / on;
3. evaluation of the base and both fine-tunes on the held-out paired test pairs: the attention flow of
   every layer the loss uses (``LeffaLoss`` at the paper's tau = 2, every sample active) against the
   ground truth (``end_point_error``, pixels at the training resolution), at fixed timesteps with
   fixed noise, no reference dropout.

Writes ``results.md`` and ``results.json`` under ``--out`` and prints the table.

    python experiments/exp_flow.py                          # make exp-flow (2 seeds, ~10 min on 2 cores)
    python experiments/exp_flow.py --seeds 0 --leffa-weight 0.1
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import sys
import time
import zlib
from pathlib import Path

import lightning.pytorch as pl
import torch

from leffa_pl.callbacks.stage_schedule import Stage, StageSchedule
from leffa_pl.data import make_synthetic
from leffa_pl.data.datamodule import VitonHDDataModule
from leffa_pl.losses.leffa_loss import LeffaLoss
from leffa_pl.metrics.flow_error import end_point_error
from leffa_pl.training.leffa_module import LeffaModule

ARMS = ("init", "no_leffa", "leffa")
ARM_TITLES = {"init": "initialisation (base stage)", "no_leffa": "fine-tuned without Leffa loss",
              "leffa": "fine-tuned with Leffa loss"}
EVAL_TAU = 2.0  # the paper's temperature: the same flow definition for every model compared


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="data/synthetic/zalando-hd-resized",
                        help="VITON-HD root with ground-truth-flow/ (generated here if missing)")
    parser.add_argument("--out", default="runs/exp-flow")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--resolution", type=int, nargs=2, default=[128, 96], metavar=("H", "W"))
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--base-steps", type=int, default=100, help="optimizer steps without Leffa (the init)")
    parser.add_argument("--finetune-steps", type=int, default=150, help="optimizer steps of each fine-tune")
    parser.add_argument("--learning-rate", type=float, default=3e-4,
                        help="higher than the paper's 1e-5: a randomly initialised tiny model, not SD")
    parser.add_argument("--leffa-weight", type=float, default=1.0,
                        help="lambda (paper: 1e-3, which has no measurable effect at this scale)")
    parser.add_argument("--leffa-tau", type=float, default=2.0, help="training temperature (paper: 2)")
    parser.add_argument("--timesteps", type=int, nargs="+", default=[100, 200, 300, 400, 700],
                        help="evaluation timesteps (the loss trains t < 500)")
    parser.add_argument("--base-model", help="diffusers SD inpainting folder to start from (default: tiny model)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    return parser.parse_args(argv)


def ensure_data(root: Path) -> None:
    if root.is_dir():
        return
    if root.name != "zalando-hd-resized":
        raise FileNotFoundError(f"{root}: no such VITON-HD folder")
    make_synthetic.main(["--out", str(root.parent), "--datasets", "vitonhd"])


def make_data(root: Path, resolution: tuple[int, int], batch_size: int) -> VitonHDDataModule:
    return VitonHDDataModule(root=str(root), resolution=resolution, batch_size=batch_size, num_workers=0,
                             pin_memory=False, val_size=1)


def fit(module: LeffaModule, data: VitonHDDataModule, stage: Stage, seed: int) -> float:
    """Train ``module`` for one stage on CPU with the project's Trainer settings; returns seconds."""
    pl.seed_everything(seed, verbose=False)  # same data order and augmentation in every arm
    trainer = pl.Trainer(accelerator="cpu", devices=1, precision="32-true", gradient_clip_val=1.0,
                         callbacks=[StageSchedule([stage])], logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                         num_sanity_val_steps=0)
    start = time.perf_counter()
    trainer.fit(module, datamodule=data)
    return time.perf_counter() - start


@torch.no_grad()
def flow_errors(module: LeffaModule, data: VitonHDDataModule, timesteps: list[int]) -> dict:
    """EPE (pixels) of every Leffa layer's attention flow on the paired test split, per timestep.

    Noise, VAE samples and timesteps depend only on (pair, timestep), so every model sees the same inputs.
    Also the Leffa loss's own term on these pairs (unweighted masked smooth-L1 warp error, mean over layers).
    Returns {"per_timestep": {t: {layer: mean EPE}}, "warp_error": {t: value}, "grids": {layer: "hxw"}}.
    """
    module.eval()
    model = module.model
    # Flows of every sample at every t; weight 1: its loss is the plain masked warp error.
    flow_loss = LeffaLoss(tau=EVAL_TAU, weight=1.0, theta_timestep=math.inf)
    data.setup("test")
    errors: dict[int, dict[str, list[torch.Tensor]]] = {t: {} for t in timesteps}
    warp_error_sums, count, grids = {t: 0.0 for t in timesteps}, 0, {}
    for batch in data.test_dataloader():
        count += len(batch["person"])
        for t in timesteps:
            generators = [torch.Generator().manual_seed(zlib.crc32(f"eval:{pid}:{t}".encode()))
                          for pid in batch["person_id"]]
            steps = torch.full((len(generators),), t, dtype=torch.long)
            noisy, _, steps, conditioning, _ = module.diffusion_inputs(batch, generators, steps, reference_dropout=0.0)
            records = []
            model(noisy, steps, conditioning, attention_records=records)
            output = flow_loss(records, batch["reference"], batch["person"], batch["loss_region"], steps,
                               module.noise_scheduler.config.num_train_timesteps, keep_warped=False)
            warp_error_sums[t] += output.loss.item() * len(steps)
            for layer in output.layers:
                grids[layer.name] = f"{layer.grid[0]}x{layer.grid[1]}"
                errors[t].setdefault(layer.name, []).append(end_point_error(layer.flow, batch["flow"]))
    per_timestep = {t: {name: torch.cat(values).nanmean().item() for name, values in layers.items()}
                    for t, layers in errors.items()}
    warp_error = {t: total / count for t, total in warp_error_sums.items()}
    return {"per_timestep": per_timestep, "warp_error": warp_error, "grids": grids}


def reference_flow_errors(data: VitonHDDataModule) -> dict[str, float]:
    """EPE of two fixed flows for scale: zero displacement (each person pixel samples the garment image at
    its own position) and the reference centre (what uniform attention gives: the mean coordinate)."""
    data.setup("test")
    values: dict[str, list[torch.Tensor]] = {"zero displacement": [], "uniform attention": []}
    for batch in data.test_dataloader():
        batch_size, (height, width) = len(batch["flow"]), batch["flow"].shape[-2:]
        ys, xs = torch.meshgrid(torch.linspace(-1 + 1 / height, 1 - 1 / height, height),
                                torch.linspace(-1 + 1 / width, 1 - 1 / width, width), indexing="ij")
        identity = torch.stack([xs, ys], dim=-1).expand(batch_size, -1, -1, -1)
        values["zero displacement"].append(end_point_error(identity, batch["flow"]))
        values["uniform attention"].append(end_point_error(torch.zeros(batch_size, 1, 1, 2), batch["flow"]))
    return {name: torch.cat(errors).nanmean().item() for name, errors in values.items()}


def layer_mean(per_layer: dict[str, float]) -> float:
    return statistics.fmean(per_layer.values())


def run_seed(seed: int, args: argparse.Namespace, data_root: Path, out: Path) -> dict:
    resolution = tuple(args.resolution)
    common = dict(base_model=args.base_model, learning_rate=args.learning_rate, leffa_weight=args.leffa_weight,
                  leffa_tau=args.leffa_tau, log_images_every_n_steps=0)
    pl.seed_everything(seed, verbose=False)
    base = LeffaModule(seed=seed, **common)
    base_stage = Stage("base", args.base_steps, resolution, args.batch_size, leffa_loss=False)
    seconds = {"base": fit(base, make_data(data_root, resolution, args.batch_size), base_stage, seed)}
    init_path = base.model.export(out / f"seed{seed}-init.safetensors")
    results = {"init": flow_errors(base, make_data(data_root, resolution, args.batch_size), args.timesteps)}
    del base
    for arm, leffa in (("no_leffa", False), ("leffa", True)):
        module = LeffaModule(init_checkpoint=str(init_path), seed=seed + 1000, **common)
        stage = Stage(f"finetune-{arm}", args.finetune_steps, resolution, args.batch_size, leffa_loss=leffa)
        seconds[arm] = fit(module, make_data(data_root, resolution, args.batch_size), stage, seed + 1000)
        results[arm] = flow_errors(module, make_data(data_root, resolution, args.batch_size), args.timesteps)
    return {"seed": seed, "seconds": seconds, "arms": results}


def summarise(runs: list[dict], timesteps: list[int]) -> dict:
    """Per arm: mean over layers at each timestep, over the loss's timesteps (< 500), per layer; per seed."""
    trained_t = [t for t in timesteps if t < 500]
    summary = {}
    for arm in ARMS:
        per_seed = []
        for run in runs:
            per_t = run["arms"][arm]["per_timestep"]
            per_seed.append({
                "per_timestep": {t: layer_mean(per_t[t]) for t in timesteps},
                "trained_t_mean": statistics.fmean(layer_mean(per_t[t]) for t in trained_t),
                "warp_error": statistics.fmean(run["arms"][arm]["warp_error"][t] for t in trained_t),
                "per_layer_trained_t": {name: statistics.fmean(per_t[t][name] for t in trained_t)
                                        for name in per_t[timesteps[0]]},
            })
        layers = per_seed[0]["per_layer_trained_t"]
        summary[arm] = {
            "per_seed": per_seed,
            "per_timestep": {t: statistics.fmean(s["per_timestep"][t] for s in per_seed) for t in timesteps},
            "trained_t_mean": statistics.fmean(s["trained_t_mean"] for s in per_seed),
            "warp_error": statistics.fmean(s["warp_error"] for s in per_seed),
            "per_layer_trained_t": {name: statistics.fmean(s["per_layer_trained_t"][name] for s in per_seed)
                                    for name in layers},
        }
    return summary


def short_layer(name: str) -> str:
    """``down_blocks.0.attentions.1.transformer_blocks.0.attn1`` -> ``down0.1``."""
    parts = name.split(".")
    if parts[0] == "mid_block":
        return f"mid.{parts[2]}"
    return f"{parts[0].split('_')[0]}{parts[1]}.{parts[3]}"


def markdown(summary: dict, runs: list[dict], args: argparse.Namespace, fixed: dict[str, float],
             grids: dict) -> str:
    timesteps, trained_t = args.timesteps, [t for t in args.timesteps if t < 500]
    seeds = [run["seed"] for run in runs]
    lines = [
        f"Attention-flow end-point error (pixels at {args.resolution[0]}x{args.resolution[1]}, lower is better) "
        f"on the {runs[0]['pairs']} held-out paired test pairs of the synthetic VITON-HD dataset; mean over the "
        f"{len(summary['init']['per_layer_trained_t'])} layers the loss uses, flow at tau = {EVAL_TAU}; "
        f"seeds {seeds} (mean; per seed in brackets).",
        "",
        "| model | " + " | ".join(f"t={t}" for t in timesteps) + " | mean t<500 |",
        "|---|" + "---|" * (len(timesteps) + 1),
    ]
    for arm in ARMS:
        per_seed = " / ".join(f"{s['trained_t_mean']:.2f}" for s in summary[arm]["per_seed"])
        cells = [f"{summary[arm]['per_timestep'][t]:.2f}" for t in timesteps]
        lines.append(f"| {ARM_TITLES[arm]} | " + " | ".join(cells)
                     + f" | **{summary[arm]['trained_t_mean']:.2f}** ({per_seed}) |")
    lines += ["", "The Leffa loss's own term on the same pairs (masked smooth-L1 warp error, mean over layers and "
              "t<500): " + ", ".join(f"{ARM_TITLES[arm]} {summary[arm]['warp_error']:.4f}" for arm in ARMS) + "."]
    lines += ["", f"Fixed flows for scale: zero displacement (garment image sampled at the person pixel's own "
              f"position) {fixed['zero displacement']:.2f} px; the reference centre everywhere (uniform "
              f"attention) {fixed['uniform attention']:.2f} px.", "",
              f"Per layer (mean over t in {trained_t} and seeds):", "",
              "| layer | grid | " + " | ".join(ARM_TITLES[arm] for arm in ARMS) + " |",
              "|---|---|" + "---|" * len(ARMS)]
    for name in summary["init"]["per_layer_trained_t"]:
        cells = [f"{summary[arm]['per_layer_trained_t'][name]:.2f}" for arm in ARMS]
        lines.append(f"| {short_layer(name)} | {grids[name]} | " + " | ".join(cells) + " |")
    seconds = statistics.fmean(sum(run["seconds"].values()) for run in runs)
    model = args.base_model or "tiny model"
    lines += ["", f"Setup: {model}, batch {args.batch_size}, AdamW lr {args.learning_rate}, grad clip 1.0; "
              f"base {args.base_steps} steps without the loss, then {args.finetune_steps} steps per fine-tune; "
              f"Leffa lambda {args.leffa_weight}, tau {args.leffa_tau}, theta_timestep 500, smooth-L1; "
              f"training {seconds:.0f} s per seed on {platform.machine()} ({torch.get_num_threads()} threads)."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    start = time.perf_counter()
    data_root, out = Path(args.data), Path(args.out)
    ensure_data(data_root)
    out.mkdir(parents=True, exist_ok=True)
    resolution = tuple(args.resolution)
    runs = []
    for seed in args.seeds:
        run = run_seed(seed, args, data_root, out)
        run["pairs"] = len(make_data(data_root, resolution, args.batch_size).pairs("test_paired")[0])
        runs.append(run)
        means = {arm: layer_mean(run["arms"][arm]["per_timestep"][args.timesteps[0]]) for arm in ARMS}
        print(f"seed {seed}: EPE at t={args.timesteps[0]}: " + ", ".join(f"{a} {v:.2f}" for a, v in means.items())
              + f" ({time.perf_counter() - start:.0f} s so far)", flush=True)
    summary = summarise(runs, args.timesteps)
    fixed = reference_flow_errors(make_data(data_root, resolution, args.batch_size))
    grids = runs[0]["arms"]["init"]["grids"]
    table = markdown(summary, runs, args, fixed, grids)
    (out / "results.md").write_text(table)
    (out / "results.json").write_text(json.dumps(
        {"args": vars(args), "fixed_flow_epe": fixed, "summary": summary, "runs": runs}, indent=1))
    print(table)
    print(f"wrote {out / 'results.md'} and {out / 'results.json'} in {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
