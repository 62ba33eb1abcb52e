"""bench-gpu's plumbing on CPU (no GPU here): FLOP counting, the planner's prediction and the table, one tiny row."""

import json
import subprocess
import sys
from dataclasses import replace

import pytest

from benchmarks import bench_gpu
from benchmarks.common import REPO_ROOT
from leffa_pl.model.lora import LoraSettings
from leffa_pl.planning.plan import TrainingSetup, build_model, static_memory


def test_default_rows_are_the_paper_grid_lora_then_one_row_per_lever_on_the_first_resolution():
    args = bench_gpu.build_parser().parse_args([])
    configs = bench_gpu.configurations(args)
    paper, lora, levers = configs[:8], configs[8:10], configs[10:]
    assert [(c.resolution, c.batch_size) for c in paper[::4]] == [((512, 384), 32), ((1024, 768), 8)]
    assert not any(c.channels_last or c.torch_compile or c.lora_rank for c in paper)
    assert [(c.resolution, c.batch_size, c.leffa, c.strategy, c.optimizer, c.lora) for c in lora] == [
        (size, batch, True, "auto", "adamw", LoraSettings(rank=64, frozen_dtype="bfloat16"))
        for size, batch in (((512, 384), 32), ((1024, 768), 8))]
    assert bench_gpu.setting(lora[0]) == "single device + LoRA r64"
    assert [(c.channels_last, c.torch_compile, c.resolution, c.leffa, c.strategy) for c in levers] == [
        (True, False, (512, 384), True, "auto"), (False, True, (512, 384), True, "auto")]
    assert [bench_gpu.setting(c) for c in levers] == ["single device + channels-last", "single device + torch.compile"]


def test_cpu_smoke_run_counts_flops_plans_memory_and_prints_the_row(tmp_path):
    out = tmp_path / "rows.json"
    command = [sys.executable, "-m", "benchmarks.bench_gpu", "--device", "cpu", "--model", "tiny",
               "--resolutions", "64x48", "--batch-sizes", "2", "--precision", "32-true", "--leffa", "on",
               "--strategies", "auto", "--lora-ranks", "4", "--levers", "--warmup", "1", "--steps", "1",
               "--peak-tflops", "0.5",
               "--threads", "1", "--json", str(out)]
    finished = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert finished.returncode == 0, finished.stderr[-3000:]

    row, lora = json.loads(out.read_text())
    assert (row["resolution"], row["batch_size"], row["leffa"], row["strategy"]) == ([64, 48], 2, True, "auto")
    assert row["seconds"] > 0 and row["peak_bytes"] > row["baseline_bytes"] > 0
    # Tiny model, 64x48, one sample: well above the UNets' linear layers alone, far below a GFLOP per token.
    assert 1e8 < row["flops_per_sample"] < 1e10
    # The planner: the tiny model's exact weights + gradients + AdamW moments, plus a positive activation term.
    setup = TrainingSetup(devices=1, strategy="ddp", precision="32-true", gradient_checkpointing=True,
                          trainable="both", optimizer="adamw", ema=False)
    assert row["planned_bytes"] > static_memory(build_model("tiny", "both"), setup).total
    # The LoRA row: its own plan (the adapters' gradients and AdamW state instead of the UNets')
    lora_setup = replace(setup, trainable="lora", lora=LoraSettings(rank=4))
    assert (lora["lora_rank"], lora["trainable_parameters"]) == (4, sum(
        p.numel() for p in build_model("tiny", "lora", LoraSettings(rank=4)).parameters() if p.requires_grad))
    lora_static = static_memory(build_model("tiny", "lora", LoraSettings(rank=4)), lora_setup).total
    assert lora_static < lora["planned_bytes"] < row["planned_bytes"]
    table = [line for line in finished.stdout.splitlines() if line.startswith("| 64x48 |")]
    assert len(table) == 2 and "single device + LoRA r4" in table[1]
    cells = [cell.strip() for cell in table[0].strip("|").split("|")]
    step_tflop, mfu, planned_gib = float(cells[6]), cells[7], float(cells[9])
    assert step_tflop == pytest.approx(row["flops_per_sample"] * 2 / 1e12, rel=0.01)
    expected_mfu = row["flops_per_sample"] * 2 / row["seconds"] / 0.5e12
    assert mfu == f"{expected_mfu:.1%}"
    assert planned_gib == pytest.approx(row["planned_bytes"] / 2**30, abs=0.05)
