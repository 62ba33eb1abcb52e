"""What the layout writers of prepared photos share (each dataset's ``writer.py``: which files an item gets,
writing them, each atomically, and the pair files).

An ``Item`` is one prepared pair: a person photo and the garment they wear, with its dataset id, split
(``train`` or ``test``), DressCode category and the mask recipe of its stored inpaint mask (VITON-HD; empty for
DressCode, which stores no masks). Pair files list the items whose files are all present:
training and paired testing use each person's own garment; the unpaired test file pairs each test person
with the next test item's garment (of the same category), as the datasets' unpaired files do.
"""

from __future__ import annotations

from dataclasses import dataclass

SPLITS = ("train", "test")
GARMENT_BACKGROUND = 250  # garment photos are on white: darker pixels are the garment (cloth-mask)
AGNOSTIC_GRAY = 128


@dataclass(frozen=True)
class Item:
    id: str
    split: str
    category: str
    person: str  # source photo paths
    garment: str
    mask_recipe: str = ""


def unpaired(ids: list[str]) -> list[tuple[str, str]]:
    return [(identifier, ids[(k + 1) % len(ids)]) for k, identifier in enumerate(ids)]
