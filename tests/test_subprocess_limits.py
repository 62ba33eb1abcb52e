"""The load-scaled subprocess limit of the tests: it stretches with the load, up to a cap, and a hang fails
with the hung process's stacks."""

import os
import sys
import time

import pytest
from subprocess_limits import MAX_STRETCH, LoadScaledDeadline, SubprocessTimeout, run_with_limit, spawn_with_limit


def test_a_hung_subprocess_fails_with_its_stacks():
    command = [sys.executable, "-c", "import time\ndef wait_forever():\n    time.sleep(3600)\nwait_forever()"]
    with pytest.raises(SubprocessTimeout, match=r"(?s)ran past 1 s of an idle machine's time.*in wait_forever"):
        run_with_limit(command, 1)


def wait_forever(rank: int) -> None:
    time.sleep(3600)


def test_hung_spawned_ranks_fail_with_their_stacks_and_are_killed(capfd):
    with pytest.raises(SubprocessTimeout, match=r"2 ranks of wait_forever ran past 1 s .* 2 still ran"):
        spawn_with_limit(wait_forever, (), 2, 1)
    assert capfd.readouterr().err.count("Fatal Python error: Aborted") == 2  # each rank's stacks follow


def test_a_finished_subprocess_returns_its_output():
    finished = run_with_limit([sys.executable, "-c", "import sys; print('out'); sys.exit(3)"], 30)
    assert (finished.returncode, finished.stdout) == (3, "out\n")


def expired_after(deadline: LoadScaledDeadline, wall_seconds: float) -> bool:
    deadline._last -= wall_seconds  # as if that much wall time had passed since the last check
    deadline.started -= wall_seconds
    return deadline.expired()


def test_the_limit_stretches_with_the_load_up_to_a_cap(monkeypatch):
    cores = LoadScaledDeadline(1).cores
    monkeypatch.setattr(os, "getloadavg", lambda: (4.0 * cores, 0.0, 0.0))  # a quarter of a core each
    deadline = LoadScaledDeadline(10)
    assert not expired_after(deadline, 30)  # 7.5 of the 10 s
    assert expired_after(deadline, 10)
    monkeypatch.setattr(os, "getloadavg", lambda: (1000.0 * cores, 0.0, 0.0))
    deadline = LoadScaledDeadline(10)
    assert not expired_after(deadline, MAX_STRETCH * 10 - 1)
    assert expired_after(deadline, 1)  # a hang under any load still fails, at MAX_STRETCH times the limit
