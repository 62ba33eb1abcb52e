"""What every benchmark records with its results: a section appended to ``benchmarks/results/<name>.md`` with the
date, the commit, the command, the machine (CPU, cores, threads, torch) and its load at the start and the end.

    with recorded("train_cpu", label="after"):
        print(table)            # printed as usual, and kept for the results file

Timings and memory depend on the machine and on what else runs on it, so the numbers never go into prose that a
commit must keep true: the docs link these files.
"""

from __future__ import annotations

import contextlib
import io
import os
import platform
import sys
import time
from pathlib import Path
from typing import Iterator, TextIO

import torch

from leffa_pl.revision import commit

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"


def command_line() -> str:
    """How this process was started, as typed: ``python -m benchmarks.bench_x --flag``."""
    spec = getattr(sys.modules["__main__"], "__spec__", None)
    program = ["-m", spec.name] if spec is not None else sys.argv[:1]
    return " ".join(["python", *program, *sys.argv[1:]])


def rerun_command(module: str) -> list[str]:
    """The command that runs benchmark ``module`` (its ``__spec__.name``) in a fresh process; run it with
    ``cwd=REPO_ROOT``: benchmarks/ is a package of the repository, not installed."""
    return [sys.executable, "-m", module]


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


class _Tee(io.TextIOBase):
    def __init__(self, *streams: TextIO):
        self.streams = streams

    def write(self, text: str) -> int:
        for stream in self.streams:
            stream.write(text)
        return len(text)

    def flush(self) -> None:
        for stream in self.streams:
            stream.flush()


@contextlib.contextmanager
def recorded(name: str, label: str = "") -> Iterator[None]:
    """Print as usual; append what was printed, under a header, to ``benchmarks/results/<name>.md`` (also when
    the run fails or is interrupted: the header then says so)."""
    started, load, kept = time.perf_counter(), os.getloadavg()[0], io.StringIO()
    status = "interrupted"
    try:
        with contextlib.redirect_stdout(_Tee(sys.stdout, kept)):
            yield
        status = ""
    finally:
        gpu = f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
        header = (f"\n## {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} {label} (commit {commit()})"
                  f"{' ' + status.upper() if status else ''}\n\n"
                  f"`{command_line()}`; {cpu_model()} ({platform.machine()}, {os.cpu_count()} "
                  f"cores{gpu}), {torch.get_num_threads()} threads, torch {torch.__version__}; load average "
                  f"{load:.1f} at the start, {os.getloadavg()[0]:.1f} at the end; {time.perf_counter() - started:.0f} s"
                  "\n\n")
        RESULTS_DIR.mkdir(exist_ok=True)
        with (RESULTS_DIR / f"{name}.md").open("a") as results:
            results.write(header + kept.getvalue())
