"""A DataLoader that Lightning can checkpoint and resume in the middle of an epoch.

Lightning saves ``state_dict()`` of every training loader that has one into the fit loop's checkpoint
state and calls ``load_state_dict()`` on the first training loader built after resuming, before iterating
it. The state is the number of batches this epoch's iteration has handed out and the shuffle generator's
state when the iteration started; the resumed iteration restores the generator (same permutation, same
worker base seed, hence the same augmentations) and leaves out the batches already trained on as index
lists, without loading their samples. Later iterations are normal.

The count is of batches handed to the consumer, not of indices the workers have prefetched; Lightning
fetches a sized loader's batches on demand (its one-batch-ahead prefetch is only for loaders without a
length), so the count at a checkpoint is the number of batches trained on.

Under DDP Lightning re-instantiates the loader with a DistributedSampler inside a new
``SkippingBatchSampler`` (it re-creates BatchSampler subclasses with the new sampler, from the arguments it
records while a ``*_dataloader`` hook runs: build the loader there), so each rank leaves out the first
batches of its own shard; the DistributedSampler's permutation is set by its seed and the epoch, both
restored by Lightning.
"""

from __future__ import annotations

import itertools
from typing import Any, Iterator

import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, Sampler, SequentialSampler


class SkippingBatchSampler(BatchSampler):
    """A BatchSampler that leaves out the first ``skip`` batches (its owner sets ``skip`` per iteration)."""

    def __init__(self, sampler: Sampler[int], batch_size: int, drop_last: bool):
        super().__init__(sampler, batch_size, drop_last)
        self.skip = 0

    def __iter__(self) -> Iterator[list[int]]:
        # A generator, so this runs at the first batch taken, not at iter(): a multi-worker DataLoader
        # iterator calls iter() on its batch sampler twice and takes batches from the second.
        yield from itertools.islice(super().__iter__(), self.skip, None)


class ResumableDataLoader(DataLoader):
    """A map-style DataLoader (``batch_size``, ``shuffle``/``sampler``, ``drop_last`` and the other DataLoader
    arguments) with ``state_dict``/``load_state_dict`` for mid-epoch resume. Without a ``generator`` one is
    seeded from torch's global generator, so the shuffle can be checkpointed."""

    def __init__(self, dataset: Dataset, batch_size: int = 1, shuffle: bool = False, sampler: Sampler | None = None,
                 batch_sampler: SkippingBatchSampler | None = None, drop_last: bool = False,
                 generator: torch.Generator | None = None, **kwargs: Any):
        if generator is None:
            generator = torch.Generator().manual_seed(int(torch.randint(0, 2**62, ()).item()))
        if batch_sampler is None:
            if sampler is None:
                sampler = RandomSampler(dataset, generator=generator) if shuffle else SequentialSampler(dataset)
            batch_sampler = SkippingBatchSampler(sampler, batch_size, drop_last)
        elif not isinstance(batch_sampler, SkippingBatchSampler):
            raise TypeError(f"ResumableDataLoader needs a SkippingBatchSampler, got {type(batch_sampler).__name__}")
        super().__init__(dataset, batch_sampler=batch_sampler, generator=generator, **kwargs)
        self._skip_next = 0  # batches the next iteration leaves out (set by load_state_dict)
        self._served = 0  # batches the running iteration has handed out, left-out ones included
        self._start_generator_state = generator.get_state()

    def __iter__(self) -> Iterator[Any]:
        self._start_generator_state = self.generator.get_state()
        self.batch_sampler.skip, self._skip_next = self._skip_next, 0
        self._served = self.batch_sampler.skip
        return self._counted(super().__iter__())

    def _counted(self, batches: Iterator[Any]) -> Iterator[Any]:
        for batch in batches:
            self._served += 1
            yield batch

    def state_dict(self) -> dict[str, Any]:
        """Batches of the running iteration handed out so far, and the generator state it started from."""
        return {"batches_served": self._served, "generator_state": self._start_generator_state}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Make the next iteration repeat the saved one from batch ``batches_served`` on."""
        self.generator.set_state(state_dict["generator_state"])
        self._skip_next = int(state_dict["batches_served"])
