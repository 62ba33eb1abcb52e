"""Scoring results: ``metrics.json``, a Markdown report (``metrics.md``) and logging to a Lightning logger."""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from leffa_pl.atomic_write import atomic_write
from leffa_pl.datasets.registry import get_protocol
from leffa_pl.metrics.suite import MetricResults

LABELS = {
    "fid": "FID ↓",
    "kid": "KID ×1000 ↓",
    "ssim_vtoneval": "SSIM, torchmetrics as VtonEval (border in) ↑",
    "ssim_gaussian": "SSIM, Gaussian σ=1.5 (11×11), border out ↑",
    "ssim_uniform51": "SSIM, uniform 51×51 ↑",
    "lpips": "LPIPS ↓",
    "psnr": "PSNR (dB) ↑",
}
LITERATURE_COLUMNS = (("fid", "FID"), ("kid", "KID ×1000"), ("ssim", "SSIM"), ("lpips", "LPIPS"),
                      ("psnr", "PSNR"))


@dataclass
class ScoreResult:
    """The outcome of scoring one folder; ``metrics.json`` holds ``to_dict()``."""

    protocol: str
    resolution: tuple[int, int]
    n_generated: int
    n_paired: int
    n_real: int
    values: dict[str, float]
    not_computed: dict[str, str]
    details: dict[str, object] = field(default_factory=dict)

    @classmethod
    def from_metrics(cls, protocol: str, resolution: tuple[int, int], results: MetricResults,
                     details: dict[str, object] | None = None) -> "ScoreResult":
        """Wrap a ``MetricSuite.compute()`` result (e.g. from an evaluation inside training)."""
        return cls(protocol, tuple(resolution), results.n_generated, results.n_paired, results.n_real,
                   results.values, results.not_computed, dict(details or {}))

    def to_dict(self) -> dict:
        data = asdict(self)
        data["resolution"] = list(self.resolution)
        data["values"] = {name: value if math.isfinite(value) else str(value)  # JSON has no inf
                          for name, value in self.values.items()}
        spec = get_protocol(self.protocol)
        data["literature"] = [asdict(row) for row in spec.literature]
        data["protocol_notes"] = list(spec.notes)
        return data


def _format(name: str, values: dict[str, float]) -> str:
    value = values[name]
    if name == "kid":
        return f"{value * 1000:.2f} ± {values.get('kid_std', float('nan')) * 1000:.2f}"
    return f"{value:.3f}" if name in ("fid", "psnr") else f"{value:.4f}"


def markdown_report(result: ScoreResult) -> str:
    """The report as Markdown: values, counts, what was not computed and why, the published numbers."""
    spec = get_protocol(result.protocol)
    height, width = result.resolution
    lines = [f"# Evaluation: {spec.title}", "",
             f"Protocol `{spec.name}`, resolution {height}x{width} (H x W). n = {result.n_generated} generated "
             f"images, all scored; {result.n_paired} paired with ground truth; FID/KID real set: "
             f"{result.n_real} images ({spec.real_set}).", "",
             "| metric | value |", "|---|---|"]
    for name in spec.metrics:
        shown = _format(name, result.values) if name in result.values else "not computed"
        lines.append(f"| {LABELS[name]} | {shown} |")
    if result.not_computed:
        lines += ["", "Not computed:"]
        lines += [f"- **{name}**: {reason}" for name, reason in result.not_computed.items()]
    if spec.literature:
        columns = [(key, title) for key, title in LITERATURE_COLUMNS
                   if any(key in row.values for row in spec.literature)]
        lines += ["", "## Published results under this protocol", "",
                  "| method | dataset | resolution | " + " | ".join(title for _, title in columns) + " |",
                  "|---|---|---|" + "---|" * len(columns)]
        for row in spec.literature:
            cells = [f"{row.values[key]:g}" if key in row.values else "" for key, _ in columns]
            lines.append(f"| {row.method} | {row.dataset} | {row.resolution} | " + " | ".join(cells) + " |")
        lines += ["", "Evaluators, and the metric here computed the same way:", ""]
        provenance: dict[tuple, list[str]] = {}  # rows with the same evaluator, matches and note: said once
        for row in spec.literature:
            key = (row.evaluator, tuple(row.metrics.items()), row.note)
            provenance.setdefault(key, []).append(f"{row.method} {row.dataset} {row.resolution}")
        for (evaluator, metrics, note), rows in provenance.items():
            same = ", ".join(f"{column} = `{metric}`" for column, metric in metrics) or "none exactly"
            lines.append(f"- {'; '.join(rows)}: {evaluator}. Same here: {same}." + (f" {note}" if note else ""))
    lines += ["", "## Details", ""]
    lines += [f"- {note}" for note in spec.notes]
    lines += [f"- `{key}`: {value}" for key, value in result.details.items()]
    return "\n".join(lines) + "\n"


def write_report(result: ScoreResult, directory: str | os.PathLike, name: str = "metrics") -> tuple[Path, Path]:
    """Write ``<name>.json`` and ``<name>.md`` into ``directory``, each atomically."""
    directory = Path(directory)
    json_path, markdown_path = directory / f"{name}.json", directory / f"{name}.md"
    for path, text in ((json_path, json.dumps(result.to_dict(), indent=2, ensure_ascii=False) + "\n"),
                       (markdown_path, markdown_report(result))):
        with atomic_write(path) as temporary:
            temporary.write_text(text)
    return json_path, markdown_path


def log_results(result: ScoreResult, logger, step: int | None = None, prefix: str = "eval") -> None:
    """Log the values (and the Markdown report, where the logger's experiment takes text, as TensorBoard's
    does) to a Lightning logger, e.g. ``trainer.logger`` from a callback."""
    metrics = {f"{prefix}/{name}": value for name, value in result.values.items()}
    metrics[f"{prefix}/n_generated"] = result.n_generated
    logger.log_metrics(metrics, step=step)
    experiment = getattr(logger, "experiment", None)
    if hasattr(experiment, "add_text"):
        experiment.add_text(f"{prefix}/{result.protocol}", markdown_report(result), global_step=step)
