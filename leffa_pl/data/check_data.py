"""``leffa-pl-check-data``: walk the files a dataset's pairs need and report every problem by path.

The command builds the dataset's data module (``registry``) and runs the same walk its ``setup()`` runs
(``PersonImageDataModule.check_files``); it exits 1 when any file is missing or unreadable.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from leffa_pl.data.files import CHECK_LEVELS, no_such_folder
from leffa_pl.data.registry import build_data_module
from leffa_pl.datasets import registry
from leffa_pl.datasets.vitonhd import reader as vitonhd


def main(argv: Sequence[str] | None = None) -> int:
    """``leffa-pl-check-data ROOT --dataset NAME``: exit 0 when every file is fine, 1 otherwise."""
    parser = argparse.ArgumentParser(prog="leffa-pl-check-data", description=__doc__.splitlines()[0])
    parser.add_argument("root", help="dataset root (data/zalando-hd-resized, data/DressCode, data/deepfashion, ...)")
    parser.add_argument("--dataset", required=True, choices=sorted(registry.names()))
    parser.add_argument("--splits", nargs="+", help="splits to walk (default: all of the dataset's splits)")
    parser.add_argument("--level", default="decode", choices=CHECK_LEVELS,
                        help="exists: present and non-empty; open: headers/JSON parse; decode: full decode")
    parser.add_argument("--workers", type=int, default=8, help="threads probing files")
    parser.add_argument("--category", choices=["upper_body", "lower_body", "dresses", "all"],
                        help="DressCode category (default: all)")
    parser.add_argument("--mask-source", choices=["auto", "precomputed", "computed"],
                        help=f"VITON-HD inpaint masks: {vitonhd.FILES['mask'][0]}/ files or computed from parsing + "
                             "pose (default: auto)")
    args = parser.parse_args(argv)
    if not Path(args.root).is_dir():
        print(no_such_folder(args.root, "dataset folder"), file=sys.stderr)
        return 1
    try:
        module = build_data_module(args.dataset, args.root, category=args.category, mask_source=args.mask_source)
    except ValueError as error:
        parser.error(str(error))
    report = module.check_files(args.splits or module.splits, level=args.level, workers=args.workers)
    print(report.format())
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
