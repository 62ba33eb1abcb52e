"""Time limits for test subprocesses that stretch with the machine's load and still catch hangs.

A fixed wall-clock limit fails a healthy run on a shared, loaded machine (a 2-process DDP run ran past
120 s at load 12-15 on 2 cores) and is no better at catching a hang than a longer one. Here the limit is
in seconds of an idle machine: each wall-clock second counts as the share of a core a runnable process
gets, min(1, cores / 1-minute load average). A hung process fails at any load, after at most
``MAX_STRETCH`` times the limit; on failure every process of the run dumps its Python stacks
(faulthandler, SIGABRT), so the report shows where it hung, beside the wall time and the load.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from unittest import mock

import torch.multiprocessing as mp

MAX_STRETCH = 8  # a limit never stretches past this many times its idle-machine seconds
POLL_SECONDS = 1.0
STACK_DUMP_SECONDS = 10  # after SIGABRT, before SIGKILL


class LoadScaledDeadline:
    """``seconds`` of an idle machine's time, spent at each wall-clock second's CPU share."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.cores = len(os.sched_getaffinity(0))
        self.started = self._last = time.monotonic()
        self.spent = 0.0
        self.peak_load = 0.0

    def share(self) -> float:
        load = os.getloadavg()[0]
        self.peak_load = max(self.peak_load, load)
        return min(1.0, self.cores / load) if load > 0 else 1.0

    def expired(self) -> bool:
        now = time.monotonic()
        self.spent += (now - self._last) * self.share()
        self._last = now
        return self.spent >= self.seconds or now - self.started >= MAX_STRETCH * self.seconds

    def describe(self) -> str:
        return (f"{self.seconds:.0f} s of an idle machine's time, {time.monotonic() - self.started:.0f} s wall, "
                f"load average up to {self.peak_load:.1f} on {self.cores} cores")


class SubprocessTimeout(AssertionError):
    """A test subprocess ran past its load-scaled limit; the message has its output and stacks."""


def run_with_limit(command: Sequence[str], seconds: float, env: dict[str, str] | None = None
                   ) -> subprocess.CompletedProcess:
    """``subprocess.run(command, capture_output=True, text=True)`` that raises ``SubprocessTimeout`` past
    ``seconds`` of an idle machine's time (see the module docstring)."""
    env = {**(os.environ if env is None else env), "PYTHONFAULTHANDLER": "1"}
    deadline = LoadScaledDeadline(seconds)
    # Its own process group: the DDP ranks it launches get the stack-dump signal too.
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    while True:
        try:
            stdout, stderr = process.communicate(timeout=POLL_SECONDS)  # retrying loses no output
            return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)
        except subprocess.TimeoutExpired:
            if deadline.expired():
                break
    _signal_group(process, signal.SIGABRT)
    try:
        stdout, stderr = process.communicate(timeout=STACK_DUMP_SECONDS)
    except subprocess.TimeoutExpired:
        _signal_group(process, signal.SIGKILL)
        stdout, stderr = process.communicate()
    raise SubprocessTimeout(f"{' '.join(command)} ran past {deadline.describe()}; its output and stacks:\n"
                            f"{stdout[-2000:]}\n{stderr[-6000:]}")


def spawn_with_limit(function: Callable[..., None], args: tuple, nprocs: int, seconds: float) -> None:
    """``torch.multiprocessing.spawn(function, args, nprocs)`` (a failing rank raises here) that raises
    ``SubprocessTimeout`` past ``seconds`` of an idle machine's time; the ranks' stacks go to stderr."""
    deadline = LoadScaledDeadline(seconds)
    with mock.patch.dict(os.environ, {"PYTHONFAULTHANDLER": "1"}):  # each rank's from its start (imports too)
        context = mp.start_processes(function, args=args, nprocs=nprocs, join=False, start_method="spawn")
    while not context.join(timeout=POLL_SECONDS):
        if deadline.expired():
            alive = [process for process in context.processes if process.is_alive()]
            for process in alive:  # one at a time: concurrent dumps interleave their lines on the shared stderr
                os.kill(process.pid, signal.SIGABRT)
                process.join(STACK_DUMP_SECONDS)
                if process.is_alive():
                    process.kill()
            raise SubprocessTimeout(f"{nprocs} ranks of {function.__name__} ran past {deadline.describe()}; "
                                    f"{len(alive)} still ran (their stacks are on stderr)")


def _signal_group(process: subprocess.Popen, signal_number: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # the whole group may have ended meanwhile
        os.killpg(process.pid, signal_number)
