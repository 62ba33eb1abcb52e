"""``leffa-pl-make-synthetic-data``: write the synthetic VITON-HD, DressCode and DeepFashion datasets.

Each dataset goes to its own folder under ``--out`` (``zalando-hd-resized/``, ``DressCode/``, ``deepfashion/``:
its spec's ``synthetic``) in the real layout (``leffa_pl/datasets/<name>/synthetic.py``). A folder that exists is
left alone; a new one is written into a temporary sibling and renamed, so an interrupted run never leaves half a
dataset.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from functools import partial
from pathlib import Path
from typing import Callable, Sequence

from leffa_pl.data.layout import parse_size
from leffa_pl.datasets import registry, synthetic_people
from leffa_pl.datasets.deepfashion import synthetic as synthetic_deepfashion


def write_if_missing(target: Path, write: Callable[[Path], object]) -> bool:
    """Write into a temporary sibling and rename, so an interrupted run never leaves half a dataset."""
    if target.exists():
        print(f"{target}: exists, left as it is")
        return False
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        write(staging)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    print(f"{target}: written")
    return True


def main(argv: Sequence[str] | None = None) -> int:
    """Write the chosen synthetic datasets under ``--out`` where they are missing."""
    parser = argparse.ArgumentParser(prog="leffa-pl-make-synthetic-data", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="data/synthetic",
                        help="folder receiving zalando-hd-resized/, DressCode/ and deepfashion/")
    synthetic = [spec.name for spec in registry.specs() if spec.synthetic is not None]
    parser.add_argument("--datasets", nargs="+", default=synthetic, choices=synthetic)
    parser.add_argument("--seed", type=int, default=0)
    try_on = parser.add_argument_group("VITON-HD and DressCode")
    try_on.add_argument("--size", type=parse_size, default=synthetic_people.DEFAULT_SIZE,
                        help="HxW, e.g. 256x192 (default)")
    try_on.add_argument("--train", type=int, default=24, help="VITON-HD train pairs (DressCode: a third per category)")
    try_on.add_argument("--test", type=int, default=8, help="VITON-HD test pairs (DressCode: half per category)")
    pose = parser.add_argument_group("DeepFashion")
    pose.add_argument("--deepfashion-size", type=parse_size, default=synthetic_deepfashion.DEFAULT_SIZE,
                      help="HxW, default 220x150 (1101x750 / 5)")
    pose.add_argument("--train-people", type=int, default=6)
    pose.add_argument("--test-people", type=int, default=3)
    pose.add_argument("--views", type=int, default=3, help="poses per person (2..4)")
    args = parser.parse_args(argv)
    for dataset in args.datasets:
        synthetic = registry.get(dataset).synthetic
        write_if_missing(Path(args.out) / synthetic.folder, partial(synthetic.write, args=args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
