"""ResumableDataLoader: its state round-trips and a loaded state continues the saved epoch."""

import io

import pytest
import torch
from torch.utils.data import Dataset, DistributedSampler

from leffa_pl.data.resumable_loader import ResumableDataLoader


class Numbers(Dataset):
    """Index i -> i; records which indices were loaded (in this process)."""

    def __init__(self, size: int = 10):
        self.size, self.loaded = size, []

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> int:
        self.loaded.append(index)
        return index


def _ids(batches) -> list[list[int]]:
    return [batch.tolist() for batch in batches]


def _round_trip(state: dict) -> dict:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_a_loaded_state_continues_the_epoch_and_later_epochs_are_unchanged(num_workers):
    original = ResumableDataLoader(Numbers(), batch_size=3, shuffle=True, num_workers=num_workers,
                                   shuffle_generator=torch.Generator().manual_seed(1))
    iterator = iter(original)
    first_two = [next(iterator).tolist() for _ in range(2)]  # workers have prefetched further: not counted
    state = _round_trip(original.state_dict())
    assert state["batches_served"] == 2
    epoch = first_two + _ids(iterator)
    next_epoch = _ids(original)

    data = Numbers()
    resumed = ResumableDataLoader(data, batch_size=3, shuffle=True, num_workers=num_workers,
                                  shuffle_generator=torch.Generator().manual_seed(2))
    resumed.load_state_dict(state)
    assert _ids(resumed) == epoch[2:]
    assert resumed.state_dict()["batches_served"] == len(epoch)
    if num_workers == 0:
        assert sorted(data.loaded) == sorted(i for batch in epoch[2:] for i in batch)  # skipped ones not loaded
    assert _ids(resumed) == next_epoch
    assert len(resumed) == len(epoch) == 4


def test_each_rank_skips_the_first_batches_of_its_own_shard():
    def rank_loader(rank: int) -> ResumableDataLoader:
        sampler = DistributedSampler(Numbers(), num_replicas=2, rank=rank, shuffle=True, seed=3)
        sampler.set_epoch(5)
        return ResumableDataLoader(Numbers(), batch_size=2, sampler=sampler)

    for rank in (0, 1):
        shard = _ids(rank_loader(rank))
        resumed = rank_loader(rank)
        resumed.load_state_dict({"batches_served": 1, "generator_state": resumed.shuffle_generator.get_state()})
        assert _ids(resumed) == shard[1:]
