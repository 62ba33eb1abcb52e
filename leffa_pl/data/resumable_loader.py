"""A DataLoader that Lightning can checkpoint and resume in the middle of an epoch, and that can be kept (with
persistent workers) across epochs.

Every iteration (pass) starts by drawing a *pass seed* from the loader's shuffle generator. The pass seed
orders the samples (a shuffled loader's permutation) and goes with every index to the dataset as a
``SampleKey``, from which a dataset derives the sample's augmentation (``transforms.sample_rng``). So one
draw per pass is all the randomness there is: neither the number of workers, nor whether they persist, nor
which worker loads a sample changes a batch.

Lightning saves ``state_dict()`` of every training loader that has one into the fit loop's checkpoint
state and calls ``load_state_dict()`` on the first training loader built after resuming, before iterating
it. The state is the number of batches this pass has handed out and the shuffle generator's state when the
pass started; the resumed pass restores the generator (same pass seed: same order, same augmentations) and
leaves out the batches already trained on as index lists, without loading their samples. Later passes go on
from the generator as in the uninterrupted run.

The count is of batches handed to the consumer, not of indices the workers have prefetched; Lightning
fetches a sized loader's batches on demand (its one-batch-ahead prefetch is only for loaders without a
length), so the count at a checkpoint is the number of batches trained on.

Under DDP the sampler is a DistributedSampler (its permutation set by its seed and the epoch, both restored
by Lightning): a data module can build it (``PersonImageDataModule`` does, so Lightning keeps the loader), or
Lightning re-instantiates a loader whose ``sampler`` is not one with a DistributedSampler inside a new
``SkippingBatchSampler`` (it re-creates BatchSampler subclasses with the new sampler, from the arguments it
records while a ``*_dataloader`` hook runs: build the loader there). Either way each rank leaves out the
first batches of its own shard.
"""

from __future__ import annotations

import itertools
from typing import Any, Iterator

import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, Sampler, SequentialSampler


class SampleKey(int):
    """A dataset index that carries its pass's seed (datasets that only index with it see a plain int)."""

    seed: int

    def __new__(cls, index: int, seed: int) -> SampleKey:
        key = super().__new__(cls, index)
        key.seed = seed
        return key

    def __reduce__(self):  # on its way to a worker
        return SampleKey, (int(self), self.seed)


class SkippingBatchSampler(BatchSampler):
    """A BatchSampler of ``SampleKey``s that leaves out the first ``skip`` batches (its owner sets ``skip`` and
    ``seed`` per pass)."""

    def __init__(self, sampler: Sampler[int], batch_size: int, drop_last: bool):
        super().__init__(sampler, batch_size, drop_last)
        self.skip = 0
        self.seed = 0

    def __iter__(self) -> Iterator[list[SampleKey]]:
        # A generator, so this runs at the first batch taken, not at iter().
        seed = self.seed
        for batch in itertools.islice(super().__iter__(), self.skip, None):
            yield [SampleKey(index, seed) for index in batch]


class ResumableDataLoader(DataLoader):
    """A map-style DataLoader (``batch_size``, ``shuffle``/``sampler``, ``drop_last`` and the other DataLoader
    arguments) with ``state_dict``/``load_state_dict`` for mid-epoch resume. ``shuffle_generator`` draws the
    pass seeds (without one it is seeded from torch's global generator); ``generator`` is the DataLoader's own
    (worker base seeds), kept apart so that starting workers or not leaves the shuffle generator alone."""

    def __init__(self, dataset: Dataset, batch_size: int = 1, shuffle: bool = False, sampler: Sampler | None = None,
                 batch_sampler: SkippingBatchSampler | None = None, drop_last: bool = False,
                 shuffle_generator: torch.Generator | None = None, generator: torch.Generator | None = None,
                 **kwargs: Any):
        if shuffle_generator is None:
            shuffle_generator = torch.Generator().manual_seed(int(torch.randint(0, 2**62, ()).item()))
        if generator is None:  # not torch's global generator: DataLoader draws from it at every new iterator
            generator = torch.Generator().manual_seed(shuffle_generator.initial_seed() + 1)
        self._permutation = torch.Generator()  # reseeded by every pass
        if batch_sampler is None:
            if sampler is None:
                sampler = RandomSampler(dataset, generator=self._permutation) if shuffle else SequentialSampler(dataset)
            batch_sampler = SkippingBatchSampler(sampler, batch_size, drop_last)
        elif not isinstance(batch_sampler, SkippingBatchSampler):
            raise TypeError(f"ResumableDataLoader needs a SkippingBatchSampler, got {type(batch_sampler).__name__}")
        super().__init__(dataset, batch_sampler=batch_sampler, generator=generator, **kwargs)
        # DataLoader keeps a placeholder SequentialSampler beside a batch sampler: name the one in use (Lightning
        # looks at `sampler` to decide whether a loader is already sharded for DDP).
        object.__setattr__(self, "sampler", batch_sampler.sampler)
        self.shuffle_generator = shuffle_generator
        self._skip_next = 0  # batches the next pass leaves out (set by load_state_dict)
        self._served = 0  # batches the running pass has handed out, left-out ones included
        self._start_generator_state = shuffle_generator.get_state()

    def __iter__(self) -> Iterator[Any]:
        # The pass seed is drawn here, whether or not a batch is ever taken, so the shuffle generator advances once
        # per pass in an uninterrupted and in a resumed run alike.
        self._start_generator_state = self.shuffle_generator.get_state()
        seed = int(torch.randint(0, 2**62, (), generator=self.shuffle_generator).item())
        skip, self._skip_next = self._skip_next, 0
        self._served = skip
        return self._pass(seed, skip)

    def _pass(self, seed: int, skip: int) -> Iterator[Any]:
        # Workers start (or resume) at the first batch taken: Lightning calls iter() twice on some epochs.
        self._permutation.manual_seed(seed)
        self.batch_sampler.skip, self.batch_sampler.seed = skip, seed
        for batch in super().__iter__():
            self._served += 1
            yield batch

    def state_dict(self) -> dict[str, Any]:
        """Batches of the running pass handed out so far, and the shuffle generator state it started from."""
        return {"batches_served": self._served, "generator_state": self._start_generator_state}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Make the next pass repeat the saved one from batch ``batches_served`` on."""
        self.shuffle_generator.set_state(state_dict["generator_state"])
        self._skip_next = int(state_dict["batches_served"])
