"""What the Leffa loss adds to a training step: activation bytes per sample and FLOPs, loss off vs on.

Rows: the SD1.5 architecture under fake tensors (``FakeTensorMode``: shapes only, no GPU, no weights) at 512x384 and
1024x768 with the paper's Leffa-stage settings (bf16-mixed, gradient checkpointing), and the tiny model on real CPU
tensors (fp32, no checkpointing). Memory: ``measure_activations`` (the planner's probe step, every sample taking the
loss) at batch 2, extra per sample = (on - off) / 2. FLOPs: ``bench_train.count_step_flops`` (batch 1, the UNets'
checkpointing off, so only the loss's own recomputation is counted). ``--breakdown`` adds the tensors that the loss
keeps alive at the step's memory peak (layer, tensor, dtype, bytes). Results are appended to
benchmarks/results/leffa_stage.md with the machine, load, commit and command.

    python -m benchmarks.bench_leffa_stage                      # make bench-leffa-stage
    python -m benchmarks.bench_leffa_stage --rows tiny --breakdown
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections import Counter
from pathlib import Path

import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from benchmarks.bench_train import count_step_flops
from benchmarks.common import recorded
from leffa_pl.model.leffa_model import LeffaModel
from leffa_pl.planning.activations import StepSettings, probe_step
from leffa_pl.planning.memory_probe import PeakTensorMemory
from leffa_pl.planning.plan import ARCHITECTURES
from leffa_pl.training.trainable import select_trainable

MIB = 2**20
BATCH = 2
ROWS = {  # name: (architecture, image size, precision, gradient checkpointing, fake tensors)
    "sd15-512x384": ("sd15", (512, 384), "bf16-mixed", True, True),
    "sd15-1024x768": ("sd15", (1024, 768), "bf16-mixed", True, True),
    "tiny-256x192": ("tiny", (256, 192), "32-true", False, False),
}
LEFFA_FILES = ("leffa_loss.py", "attention_flow.py", "reference_attention.py")


class PeakBreakdown(PeakTensorMemory):
    """``PeakTensorMemory`` that also tells which tensors are alive at the peak: for each storage the op that made
    it, its dtype, shape and bytes, and where: the innermost Leffa-code line (with the layer being scored) or the
    innermost module running, or "backward"."""

    def __init__(self, model: torch.nn.Module):
        super().__init__(model)
        self._names = {id(module): name for name, module in model.named_modules()}
        self._modules: list[str] = []
        self._clock = 0
        self._peak_clock = 0
        self._events: dict[int, list] = {}  # id(weakref) -> [born, died, description, weakref]
        self._handles = [torch.nn.modules.module.register_module_forward_pre_hook(self._enter),
                         torch.nn.modules.module.register_module_forward_hook(self._leave)]

    def _enter(self, module, args):
        self._modules.append(self._names.get(id(module), type(module).__name__))

    def _leave(self, module, args, output):
        self._modules.pop()

    def _where(self) -> str:
        frame = sys._getframe(3)
        while frame is not None:
            if frame.f_code.co_filename.endswith(LEFFA_FILES):
                record = frame.f_locals.get("record")
                layer = f" [{record.name}]" if record is not None and hasattr(record, "name") else ""
                return f"{Path(frame.f_code.co_filename).stem}:{frame.f_code.co_name}:{frame.f_lineno}{layer}"
            frame = frame.f_back
        if torch._C._current_graph_task_id() != -1:
            return "backward" + (f" (recompute {self._modules[-1]})" if self._modules else "")
        return self._modules[-1] if self._modules else "step"

    def _allocated(self, storage, nbytes: int, func, tensor: torch.Tensor, reference) -> None:
        self._clock += 1
        description = (self._where(), str(func.__name__), str(tensor.dtype).removeprefix("torch."),
                       tuple(tensor.shape), nbytes)
        self._events[id(reference)] = [self._clock, None, description, reference]

    def _released(self, reference, nbytes: int) -> None:
        self._clock += 1
        event = self._events.get(id(reference))
        if event is not None:
            event[1] = self._clock

    def _new_peak(self) -> None:
        self._peak_clock = self._clock

    def __exit__(self, *exc_info):
        for handle in self._handles:
            handle.remove()
        return super().__exit__(*exc_info)

    def alive_at_peak(self, gradients: set[int]) -> Counter:
        """{(where, op, dtype, shape, bytes): count} of the storages alive at the peak, gradients left out."""
        alive = Counter()
        for born, died, description, reference in self._events.values():
            if born <= self._peak_clock and (died is None or died > self._peak_clock):
                storage = reference()
                if storage is None or id(storage) not in gradients:
                    alive[description] += 1
        return alive


def build(architecture: str) -> LeffaModel:
    model = ARCHITECTURES[architecture]()
    select_trainable(model, "both")
    return model


def activation_bytes(model: LeffaModel, size: tuple[int, int], settings: StepSettings, breakdown: bool
                     ) -> tuple[int, Counter | None]:
    probe = PeakBreakdown(model) if breakdown else PeakTensorMemory(model)
    with probe:
        probe_step(model, BATCH, size, settings)
    alive = None
    if breakdown:
        alive = probe.alive_at_peak({id(p.grad.untyped_storage()) for p in model.parameters() if p.grad is not None})
    for parameter in model.parameters():
        parameter.grad = None
    return probe.peak_bytes, alive


def measure_row(name: str, breakdown: bool) -> tuple[list[str], list[str]]:
    architecture, size, precision, checkpointing, fake = ROWS[name]
    started = time.perf_counter()
    with FakeTensorMode() if fake else contextlib.nullcontext():
        torch.manual_seed(0)
        model = build(architecture)
        peaks, alive = {}, {}
        for leffa in (False, True):
            settings = StepSettings(leffa, checkpointing, precision)
            peaks[leffa], alive[leffa] = activation_bytes(model, size, settings, breakdown)
        flops = {leffa: count_step_flops(model, size, leffa, "cpu") for leffa in (False, True)}
    extra = (peaks[True] - peaks[False]) / BATCH
    row = (f"| {name} | {'fake' if fake else 'real'} | {precision}, checkpointing {'on' if checkpointing else 'off'} "
           f"| {peaks[False] / BATCH / MIB:,.0f} | {peaks[True] / BATCH / MIB:,.0f} | {extra / MIB:,.0f} "
           f"| {flops[False] / 1e12:.3f} | {flops[True] / 1e12:.3f} | {flops[True] / flops[False]:.3f}x "
           f"| {time.perf_counter() - started:.0f} s |")
    details = breakdown_table(name, alive[False], alive[True]) if breakdown else []
    return [row], details


def breakdown_table(name: str, off: Counter, on: Counter, top: int = 40) -> list[str]:
    """The storages alive at the peak with the loss on and not with it off, grouped and largest first."""
    difference = on - off
    groups = Counter()
    for (where, op, dtype, shape, nbytes), count in difference.items():
        groups[(where, op, dtype, shape)] += nbytes * count
    lines = [f"\n{name}: tensors alive at the peak with the Leffa loss on that are not with it off "
             f"(batch {BATCH}; {sum(groups.values()) / MIB:,.0f} MiB in all)\n",
             "| where (file:function:line [layer] or module) | op | dtype | shape | MiB |", "|---|---|---|---|---|"]
    for (where, op, dtype, shape), nbytes in groups.most_common(top):
        lines.append(f"| {where} | {op} | {dtype} | {list(shape)} | {nbytes / MIB:,.1f} |")
    if len(groups) > top:
        rest = sum(nbytes for _, nbytes in groups.most_common()[top:])
        lines.append(f"| ({len(groups) - top} more) | | | | {rest / MIB:,.1f} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", nargs="+", choices=sorted(ROWS), default=list(ROWS))
    parser.add_argument("--breakdown", action="store_true", help="also the tensors the loss keeps at the peak")
    parser.add_argument("--label", default="", help="a word for this run in the results file (e.g. before)")
    args = parser.parse_args()
    lines = ["| row | tensors | settings | activations/sample, off (MiB) | on (MiB) | extra/sample (MiB) "
             "| TFLOP/sample, off | on | on/off | time |", "|---|---|---|---|---|---|---|---|---|---|"]
    details = []
    with recorded("leffa_stage", args.label):
        for name in args.rows:
            row, detail = measure_row(name, args.breakdown)
            lines += row
            details += detail
            print(row[0], file=sys.stderr, flush=True)
        print("\n".join([*lines, *details]))


if __name__ == "__main__":
    main()
