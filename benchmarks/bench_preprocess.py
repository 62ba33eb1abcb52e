"""Per-image cost of preparing photos (``leffa-pl-prepare``) at 1024x768 on CPU, in one run.

Measured: (1) the keypoint step with its real architectures, ViTPose-base and the RT-DETR-R50 person detector
(transformers' default configs of those models, RANDOMLY INITIALISED: the hub weights cannot be fetched here,
and the time does not depend on the values); (2) everything else ``leffa-pl-prepare`` does per pair (reading
and fitting the photos, the mask recipe, writing the layout's files) with the random-weight stand-ins of
``leffa_pl/testing/preprocess_standins.py``, whose own network time is subtracted. NOT measured: SCHP (parsing) and
DensePose R50-FPN, whose architectures cannot be built here without their released files.
Run: ``make bench-preprocess`` (``python -m benchmarks.bench_preprocess --device cuda``).
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from leffa_pl.datasets import registry
from leffa_pl.datasets.synthetic_people import PANTS, UPPER, draw_person
from leffa_pl.preprocess import prepare
from leffa_pl.preprocess.annotate import Preprocessor, PreprocessWeights
from leffa_pl.testing.preprocess_standins import build_all

SIZE = (1024, 768)


def median_seconds(run, repeats: int) -> float:
    run()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def keypoint_step(image: np.ndarray, device: str, repeats: int) -> tuple[float, float]:
    from transformers import (
        RTDetrConfig,
        RTDetrForObjectDetection,
        RTDetrImageProcessor,
        VitPoseConfig,
        VitPoseForPoseEstimation,
        VitPoseImageProcessor,
    )

    detector, detector_processor = RTDetrForObjectDetection(RTDetrConfig()).to(device).eval(), RTDetrImageProcessor()
    pose, pose_processor = VitPoseForPoseEstimation(VitPoseConfig()).to(device).eval(), VitPoseImageProcessor()
    box = [[[100.0, 50.0, 568.0, 924.0]]]

    @torch.no_grad()
    def detect():
        detector(**detector_processor(images=image, return_tensors="pt").to(device))

    @torch.no_grad()
    def estimate():
        pose(**pose_processor(image, boxes=box, return_tensors="pt").to(device))

    return median_seconds(detect, repeats), median_seconds(estimate, repeats)


class TimedPreprocessor:
    def __init__(self, inner: Preprocessor):
        self.inner, self.seconds = inner, 0.0

    def annotate(self, image, layout, mask_recipe=None):
        start = time.perf_counter()
        try:
            return self.inner.annotate(image, layout, mask_recipe)
        finally:
            self.seconds += time.perf_counter() - start


def prepare_overhead(root: Path, layout: str, pairs: int) -> float:
    photos = root / "photos"
    photos.mkdir(exist_ok=True)
    sources = []
    for index in range(pairs):
        person = draw_person(np.random.default_rng(index), *SIZE, {UPPER: True, PANTS: False})
        Image.fromarray(person.image).save(photos / f"p{index}.jpg", quality=95)
        Image.fromarray(person.garment.flat).save(photos / f"g{index}.jpg", quality=95)
        sources.append(prepare.Source(str(photos / f"p{index}.jpg"), str(photos / f"g{index}.jpg"), "upper_body"))
    standins = build_all(root / "standins")
    weights = PreprocessWeights(parser_atr=str(standins["parser_atr"]), parser_lip=str(standins["parser_lip"]),
                                densepose=str(standins["densepose_model"]), pose_model=str(standins["pose_model"]),
                                detector=str(standins["detector"]), box_threshold=0.0, offline=True)
    timed = TimedPreprocessor(Preprocessor(weights))
    timed.inner.annotate(np.asarray(Image.open(sources[0].person)), registry.get(layout))  # load the stand-ins first
    start = time.perf_counter()
    summary = prepare.prepare_dataset(sources, root / layout, layout, SIZE, timed, test_fraction=0.5, progress=False)
    assert not summary.failed, summary.failed
    return (time.perf_counter() - start - timed.seconds) / pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--pairs", type=int, default=4)
    args = parser.parse_args()
    image = draw_person(np.random.default_rng(0), *SIZE, {UPPER: True, PANTS: False}).image
    detect, estimate = keypoint_step(image, args.device, args.repeats)
    with tempfile.TemporaryDirectory() as folder:
        overheads = {layout: prepare_overhead(Path(folder), layout, args.pairs) for layout in ("vitonhd", "dresscode")}
    print(f"# bench-preprocess: seconds per image at {SIZE[0]}x{SIZE[1]}, device {args.device}, "
          f"{torch.get_num_threads()} torch threads, torch {torch.__version__}, {platform.machine()}, "
          f"load average {os.getloadavg()[0]:.1f} at the end")
    print("| step | what ran | s / image |\n|---|---|---:|")
    print(f"| person detector | RT-DETR-R50 architecture, random weights, 640x640 input | {detect:.3f} |")
    print(f"| keypoints | ViTPose-base architecture, random weights, one 256x192 box | {estimate:.3f} |")
    for layout, seconds in overheads.items():
        print(f"| the rest of prepare, {layout} | photo IO, fitting, mask recipe, files (stand-in networks' time "
              f"subtracted), mean of {args.pairs} pairs | {seconds:.3f} |")
    print("| SCHP parsing (ATR + LIP), DensePose R50-FPN | not measured: not buildable without the released "
          "files | - |")


if __name__ == "__main__":
    main()
