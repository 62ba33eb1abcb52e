"""The one base class of the datasets: contract samples over a list of pairs whose files are declared.

A dataset holds ``pairs`` and says, per pair, which files its sample reads (``files``) and which ids it has
(``sample_ids``, without reading anything). From these the checker walks every file (``required_files``),
prediction names its outputs before reading a pair, and evaluation finds the ground truth
(``person_file``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Generic, Sequence, TypeVar

from torch.utils.data import Dataset

from leffa_pl.data.files import RequiredFile

PairT = TypeVar("PairT")


class PairDataset(Dataset, Generic[PairT]):
    """Subclasses set ``pairs`` and implement ``files``, ``sample_ids`` and ``__getitem__`` (a contract sample)."""

    pairs: Sequence[PairT]

    def files(self, pair: PairT) -> dict[str, RequiredFile]:
        """The files the sample of ``pair`` reads, by role (``person`` is the target image)."""
        raise NotImplementedError

    def sample_ids(self, index: int) -> tuple[str, str]:
        """``(person_id, reference_id)`` of a sample, without reading its files."""
        raise NotImplementedError

    def __getitem__(self, index: int) -> dict:
        raise NotImplementedError

    def __len__(self) -> int:
        return len(self.pairs)

    def required_files(self) -> list[RequiredFile]:
        """Every file the pairs need, for the checker."""
        return [f for pair in self.pairs for f in self.files(pair).values()]

    def person_file(self, index: int) -> Path:
        """The person (target) image of a sample: the evaluation's ground truth."""
        return self.files(self.pairs[index])["person"].path
