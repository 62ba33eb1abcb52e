"""The one base class of the datasets: contract samples over a list of pairs whose files are declared.

A dataset holds ``pairs`` and says, per pair, which files its sample reads (``files``: each with the reader
that decodes it and whether it is aligned with the person image) and which ids it has (``sample_ids``, without
reading anything). ``__getitem__`` reads a sample's files through ``read``, so the checker, which walks the same
declarations with the same readers and the same size rule (``io.walk_files``), finds whatever the loader would
raise on. Prediction names its outputs from ``sample_ids`` before reading a pair, and evaluation finds the
ground truth with ``person_file``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Generic, Sequence, TypeVar

from torch.utils.data import Dataset

from leffa_pl.data.files import RequiredFile
from leffa_pl.data.io import check_map_size, data_size, read_file

PairT = TypeVar("PairT")


class PairDataset(Dataset, Generic[PairT]):
    """Subclasses set ``pairs`` and implement ``files``, ``sample_ids`` and ``__getitem__`` (a contract sample)."""

    pairs: Sequence[PairT]
    with_flow = False  # samples carry the optional contract key "flow" (the synthetic datasets' ground truth)

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

    def pair_files(self) -> list[dict[str, RequiredFile]]:
        """The files of every pair, for the checker."""
        return [self.files(pair) for pair in self.pairs]

    def read(self, index: int) -> dict[str, Any]:
        """Every file of a sample decoded by its reader, by role; an aligned map of another aspect ratio than the
        person image raises ``DataFileError`` naming it (one of the same aspect ratio is returned as stored: the
        sample's resize to the working resolution, nearest neighbour for maps, takes care of it)."""
        files = self.files(self.pairs[index])
        data = {role: read_file(required) for role, required in files.items()}
        image_size = data_size(data["person"])
        for role, required in files.items():
            if required.aligned:
                check_map_size(required.path, data_size(data[role]), image_size)
        return data

    def person_file(self, index: int) -> Path:
        """The person (target) image of a sample: the evaluation's ground truth."""
        return self.files(self.pairs[index])["person"].path
