"""AtomicCheckpointIO loads weights-only, memory-mapped and onto the CPU, whatever device the checkpoint was saved
from."""

import torch

from leffa_pl.training.atomic_checkpoint import AtomicCheckpointIO


def test_resume_loads_onto_the_cpu_weights_only_memory_mapped(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"state_dict": {"w": torch.ones(2)}}, path)
    calls, real_load = [], torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    # Lightning's strategies call it without map_location; torch.load's default would restore each tensor to the
    # device it was saved from (cuda:0 on every rank of a GPU run).
    loaded = AtomicCheckpointIO().load_checkpoint(path)
    assert [(call["map_location"], call["weights_only"], call["mmap"]) for call in calls] == [("cpu", True, True)]
    assert loaded["state_dict"]["w"].device == torch.device("cpu") and loaded["state_dict"]["w"].tolist() == [1, 1]
