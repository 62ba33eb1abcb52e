"""Writes the golden fixtures of this folder by running the Leffa app's own code (README.md says how and from
which commit). Not part of the suite: run by hand, it imports a Leffa checkout, never vendored here.

Parsing: ``preprocess/humanparsing/run_parsing.py`` ``Parsing`` (SCHP pre/post-processing, hole filling, neck
18) with the palette stand-in networks of leffa_pl/testing/preprocess_standins.py on painted people, as
``app.py`` calls it (the 768x1024 photo resized to 384x512 by PIL). DensePose: ``leffa_utils/densepose_predictor.py``
``predict_seg`` / ``predict_iuv`` and ``3rdparty/densepose`` (converter, extractor, visualizer) on generated
chart outputs and boxes; detectron2's model is replaced by those outputs.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import types
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image

from leffa_pl.testing.preprocess_standins import schp_palette_onnx

HERE = Path(__file__).resolve().parent

LEFFA_COMMIT = "7848bedf8fd04a72ac947c1e1018255af92cb851"
# Painted regions: RGB colour -> (ATR label, LIP label).
BACKGROUND, HAIR, FACE, NECK = (255, 255, 255), (70, 40, 10), (240, 190, 160), (200, 140, 100)
UPPER, BAG, PANTS, SHOE = (200, 30, 30), (30, 200, 30), (30, 30, 160), (20, 20, 20)
LEFT_ARM, RIGHT_ARM, LEFT_LEG, RIGHT_LEG = (160, 100, 60), (110, 60, 30), (230, 120, 200), (120, 200, 230)
REGIONS = {BACKGROUND: (0, 0), HAIR: (2, 2), FACE: (11, 13), NECK: (11, 0), UPPER: (4, 5), BAG: (16, 0),
           PANTS: (6, 9), SHOE: (9, 18), LEFT_ARM: (14, 14), RIGHT_ARM: (15, 15), LEFT_LEG: (12, 16),
           RIGHT_LEG: (13, 17)}
PARSING_CASES = ("standing", "raised_long_hair", "cut_at_thigh")
DENSEPOSE_CASES = {"one_person": ([[30.4, 12.7, 160.9, 250.2]], 0),
                   "two_people": ([[20.6, 10.2, 120.8, 240.9], [90.3, 30.5, 185.7, 255.0]], 1),
                   "at_the_border": ([[0.0, 0.0, 191.99, 256.0]], 2)}
DENSEPOSE_SIZE, CHART = (256, 192), 16  # image (H, W), chart output resolution


def paint(case: str) -> np.ndarray:
    """A person in the 384x512 frame (flat colours), returned at the app's 768x1024."""
    image = np.full((512, 384, 3), BACKGROUND, np.uint8)

    def box(colour, x0, y0, x1, y1):
        cv2.rectangle(image, (x0, y0), (x1 - 1, y1 - 1), colour, -1)

    cv2.ellipse(image, (192, 75), (46, 55), 0, 0, 360, HAIR, -1)
    cv2.ellipse(image, (192, 85), (32, 40), 0, 0, 360, FACE, -1)
    box(NECK, 176, 118, 209, 142)
    if case == "raised_long_hair":
        box(LEFT_ARM, 264, 20, 300, 170)  # raised, touching the garment at the shoulder only
        box(RIGHT_ARM, 84, 20, 120, 170)
    else:
        box(LEFT_ARM, 258, 140, 300, 320)
        box(RIGHT_ARM, 84, 140, 126, 320)
    bottom = 512 if case == "cut_at_thigh" else 330
    box(UPPER, 120, 135, 264, bottom)
    box(BAG, 170, 180, 200, 200)  # a small patch in the garment: filled as upper clothes
    box(BAG, 150, 230, 230, 282)  # a large one (area > 2000): keeps its label
    if case == "standing":
        box(BACKGROUND, 264, 190, 270, 290)  # small gap between arm and body: filled
        box(BACKGROUND, 102, 180, 122, 300)  # large gap (> 2000 px): kept
    if case == "raised_long_hair":
        box(HAIR, 140, 120, 158, 300)  # hair over the garment, joined to the head
        box(HAIR, 226, 160, 240, 200)  # a strand inside the garment: filled
    if case == "cut_at_thigh":
        box(BACKGROUND, 180, 480, 200, 512)  # a gap open to the bottom edge: not a hole
    else:
        box(PANTS, 130, 330, 254, 450)
        box(LEFT_LEG, 140, 450, 185, 500)
        box(RIGHT_LEG, 200, 450, 245, 500)
        box(SHOE, 140, 500, 185, 512)
        box(SHOE, 200, 500, 245, 512)
    return cv2.resize(image, (768, 1024), interpolation=cv2.INTER_NEAREST)


def standin_networks(folder: Path) -> tuple[Path, Path]:
    atr = schp_palette_onnx(folder / "palette_atr.onnx", {c: a for c, (a, _) in REGIONS.items()}, 18, 512)
    lip = schp_palette_onnx(folder / "palette_lip.onnx", {c: b for c, (_, b) in REGIONS.items()}, 20, 473)
    return atr, lip


def load_module(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def package(name: str, path: Path | None = None) -> types.ModuleType:
    """An empty package (its __init__ not run: it imports the whole of detectron2)."""
    module = types.ModuleType(name)
    module.__path__ = [str(path)] if path else []
    sys.modules[name] = module
    return module


def parsing_fixtures(leffa: Path, out: Path, work: Path) -> None:
    # run_parsing.py puts its own folder on sys.path for its sibling parsing_api
    parsing = load_module("run_parsing", leffa / "preprocess" / "humanparsing" / "run_parsing.py")
    atr, lip = standin_networks(work)
    parser = parsing.Parsing(str(atr), str(lip))
    for case in PARSING_CASES:
        person = Image.fromarray(paint(case))
        person.save(out / f"person_{case}.png")
        labels, _ = parser(person.resize((384, 512)))  # as app.py: src_image.resize((384, 512))
        Image.fromarray(np.asarray(labels)).save(out / f"parsing_{case}.png")


def chart_outputs(count: int, seed: int) -> dict[str, np.ndarray]:
    """Chart outputs of ``count`` people, low-frequency so that parts are blobs; U, V partly outside [0, 1] as the
    network's can be. Integers / 16 so that the stored int8 values are exact."""
    rng = np.random.default_rng(seed)

    def smooth(channels: int, scale: float, offset: float) -> np.ndarray:
        coarse = rng.normal(0, scale, (count, channels, 4, 4)).astype(np.float32)
        up = torch.nn.functional.interpolate(torch.from_numpy(coarse), size=(CHART, CHART), mode="bilinear",
                                             align_corners=False).numpy()
        return np.clip(np.round((up + offset) * 16), -128, 127).astype(np.int8)

    return {"coarse": smooth(2, 2.0, 0.0), "fine": smooth(25, 3.0, 0.0), "u": smooth(25, 0.4, 0.5),
            "v": smooth(25, 0.4, 0.5)}


def densepose_fixtures(leffa: Path, out: Path) -> None:
    root = leffa / "3rdparty"
    package("detectron2", root / "detectron2")
    package("detectron2.structures", root / "detectron2" / "structures")
    boxes = load_module("detectron2.structures.boxes", root / "detectron2" / "structures" / "boxes.py")
    d2_structures = sys.modules["detectron2.structures"]
    d2_structures.Boxes, d2_structures.BoxMode, d2_structures.BitMasks = boxes.Boxes, boxes.BoxMode, None
    sys.modules["densepose.converters.to_mask"] = types.SimpleNamespace(ImageSizeType=None)
    package("densepose", root / "densepose")
    structures = package("densepose.structures", root / "densepose" / "structures")
    chart_result = load_module("densepose.structures.chart_result",
                               root / "densepose" / "structures" / "chart_result.py")
    structures.DensePoseChartResult = chart_result.DensePoseChartResult
    structures.DensePoseChartResultWithConfidences = chart_result.DensePoseChartResultWithConfidences
    structures.DensePoseChartPredictorOutput = object
    structures.DensePoseDataRelative = type("DensePoseDataRelative", (), {"N_PART_LABELS": 24})
    converters = package("densepose.converters", root / "densepose" / "converters")
    load_module("densepose.converters.base", root / "densepose" / "converters" / "base.py")
    segm = load_module("densepose.converters.segm_to_mask", root / "densepose" / "converters" / "segm_to_mask.py")
    converters.resample_fine_and_coarse_segm_to_bbox = segm.resample_fine_and_coarse_segm_to_bbox
    convert = load_module("densepose.converters.chart_output_to_chart_result",
                          root / "densepose" / "converters" / "chart_output_to_chart_result.py")
    package("densepose.vis", root / "densepose" / "vis")
    load_module("densepose.vis.base", root / "densepose" / "vis" / "base.py")
    results = load_module("densepose.vis.densepose_results", root / "densepose" / "vis" / "densepose_results.py")
    # densepose_predictor.py itself, with the detectron2 model it builds stubbed out
    sys.modules["densepose"].add_densepose_config = None
    sys.modules["densepose.vis.extractor"] = types.SimpleNamespace(DensePoseResultExtractor=None)
    sys.modules["detectron2.config"] = types.SimpleNamespace(get_cfg=None)
    sys.modules["detectron2.engine"] = types.SimpleNamespace(DefaultPredictor=None)
    predictor_module = load_module("densepose_predictor", leffa / "leffa_utils" / "densepose_predictor.py")

    class ChartOutput:  # DensePoseChartPredictorOutput of one instance, no confidences
        def __init__(self, **tensors):
            self.__dict__.update(tensors)
            for key in ("sigma_1", "sigma_2", "kappa_u", "kappa_v", "fine_segm_confidence",
                        "coarse_segm_confidence"):
                setattr(self, key, None)

        def __len__(self):
            return 1

    for case, (box_list, seed) in DENSEPOSE_CASES.items():
        stored = chart_outputs(len(box_list), seed)
        xyxy = torch.tensor(box_list, dtype=torch.float32)
        np.savez_compressed(out / f"densepose_{case}.npz", boxes=xyxy.numpy(), **stored)
        tensors = {key: torch.from_numpy(value.astype(np.float32) / 16) for key, value in stored.items()}

        def extract(_instances, tensors=tensors, xyxy=xyxy):
            # DensePoseResultExtractor: one chart result per instance (best first) and the boxes as XYWH
            found = [convert.densepose_chart_predictor_output_to_result_with_confidences(
                ChartOutput(coarse_segm=tensors["coarse"][[i]], fine_segm=tensors["fine"][[i]], u=tensors["u"][[i]],
                            v=tensors["v"][[i]]), boxes.Boxes(xyxy[[i]])) for i in range(len(xyxy))]
            xywh = xyxy.clone()
            xywh[:, 2:] -= xywh[:, :2]
            return found, xywh

        predictor = types.SimpleNamespace(predict=lambda image, extract=extract: extract(None),
                                          visualizer=results.DensePoseResultsFineSegmentationVisualizer())
        image = np.zeros(DENSEPOSE_SIZE + (3,), np.uint8)
        seg = predictor_module.DensePosePredictor.predict_seg(predictor, image)[:, :, ::-1]  # app.py: [:, :, ::-1]
        iuv = predictor_module.DensePosePredictor.predict_iuv(predictor, image)[:, :, ::-1]  # pose transfer
        Image.fromarray(np.ascontiguousarray(seg)).save(out / f"densepose_seg_{case}.png")
        Image.fromarray(np.ascontiguousarray(iuv)).save(out / f"densepose_iuv_{case}.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--leffa", type=Path, required=True, help="franciszzj/Leffa checkout at 7848bedf")
    parser.add_argument("--work", type=Path, required=True, help="scratch folder (stand-in networks)")
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    parsing_fixtures(args.leffa, args.out, args.work)
    densepose_fixtures(args.leffa, args.out)
    settings = {"leffa_commit": LEFFA_COMMIT, "opencv": cv2.__version__, "torch": torch.__version__,
                "regions": [[list(colour), list(labels)] for colour, labels in REGIONS.items()],
                "parsing_cases": list(PARSING_CASES), "densepose_cases": list(DENSEPOSE_CASES),
                "densepose_size": list(DENSEPOSE_SIZE)}
    (args.out / "settings.json").write_text(json.dumps(settings, indent=1) + "\n")


if __name__ == "__main__":
    main()
