"""Golden masks of the ``dresscode`` and ``hrviton`` recipes, made by the official code, and their agreement.

    python tests/golden/dataset_masks.py write --dress-code DIR --hr-viton DIR
    python tests/golden/dataset_masks.py agreement --dress-code DIR --hr-viton DIR [--seed 1 --count 40]

``DIR``: the official sources, e.g. ``git --git-dir=<clone>/.git show HEAD:data/dataset.py`` written to
``DIR/data/dataset.py`` (aimagelab/dress-code@2e9e7ed5: ``data/dataset.py``, ``data/labelmap.py``;
sangyun884/HR-VITON@2715bdd6: ``cp_dataset.py``). They run unchanged: DressCode's ``Dataset.__getitem__`` on a
DressCode-layout folder written here (its mask read from the method's locals when it returns), HR-VITON's
``CPDataset.get_agnostic`` on the person image (the agnostic image) and on a black image (the painted region).

Inputs are synthetic people (``leffa_pl.datasets.synthetic_people``) in the real file formats, plus hand-made edge
cases.
``write`` stores inputs and official outputs under ``tests/golden/{dresscode,hrviton}/``; ``agreement`` draws a
separate set (another seed, edge cases at random) and writes the mean IoU per category of the recipes against the
official code to ``--out`` (the project's earlier recipe, removed since, measured 0.55-0.93: commit ae769e4).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import sys
import tempfile
import time
import types
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from leffa_pl.data import mask_recipes
from leffa_pl.data.io import label_image
from leffa_pl.data.mask_recipes import hrviton
from leffa_pl.datasets import synthetic_people as sv
from leffa_pl.datasets.dresscode import reader as dresscode

GOLDEN = Path(__file__).resolve().parent
HRVITON_SIZE = hrviton.FRAME
SMALL, LARGE = (512, 384), (1024, 768)
OUTFITS = {"upper_body": lambda rng: {sv.UPPER: True, sv.PANTS: False},
           "lower_body": lambda rng: {sv.UPPER: False, sv.PANTS if rng.random() < 0.6 else sv.SKIRT: True},
           "dresses": lambda rng: {sv.DRESS: True},
           "vitonhd": lambda rng: {sv.UPPER: True, sv.PANTS if rng.random() < 0.7 else sv.SKIRT: False}}
EDGES = ("missing_right_wrist", "missing_left_wrist", "missing_right_arm", "missing_left_shoulder", "raised_arms",
         "wrists_above_frame", "cut_at_thigh", "long_hair", "skirt", "two_people", "accessories", "no_hips")
# Extra labels of the accessories case: (ATR, CIHP); ATR has a bag and a belt, CIHP gloves and socks.
# Cases whose person and official agnostic image are stored too (the others: labels, keypoints, mask).
AGNOSTIC_CASES = {"upper_body_0_512", "lower_body_0_512", "dresses_0_512", "missing_right_wrist_dresses_512",
                  "synthetic_0", "missing_right_wrist"}
ACCESSORIES = {"hat": (1, 1), "sunglasses": (3, 4), "scarf": (17, 11), "bag": (16, 3), "belt": (8, 8)}


@dataclass
class Case:
    """One person: internal classes, labels in both label sets, the image and joint positions (pixels)."""

    name: str
    category: str  # a DressCode category, or "vitonhd"
    atr: np.ndarray
    cihp: np.ndarray
    image: np.ndarray
    joints: dict[str, np.ndarray]
    missing: set[str] = field(default_factory=set)
    others: list[dict[str, np.ndarray]] = field(default_factory=list)  # more people (OpenPose lists them too)


def _labels(semantic: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return (np.vectorize(sv.ATR.get, otypes=[np.uint8])(semantic),
            np.vectorize(sv.CIHP.get, otypes=[np.uint8])(semantic))


def _raised(pose: sv.Pose, rng: np.random.Generator, height: int, forearm: float) -> sv.Pose:
    """Both arms up; a ``forearm`` of 0.3 (of the height) takes the wrists above the frame."""
    joints = dict(pose.joints)
    for side, outward in (("r", -1.0), ("l", 1.0)):
        angle = np.deg2rad(rng.uniform(20, 60))
        joints[f"{side}_elbow"] = joints[f"{side}_shoulder"] + 0.17 * height * np.array(
            [outward * np.sin(angle), -np.cos(angle)])
        joints[f"{side}_wrist"] = joints[f"{side}_elbow"] + forearm * height * np.array(
            [outward * np.sin(angle / 2), -np.cos(angle / 2)])
    return sv.Pose(joints)


def make_case(name: str, category: str, size: tuple[int, int], rng: np.random.Generator, edge: str | None) -> Case:
    """A synthetic person of ``category`` at ``size`` (H, W), changed by ``edge`` (one of ``EDGES``) if given."""
    height, width = size
    outfit = OUTFITS[category](rng)
    if edge == "skirt":
        outfit = {sv.UPPER: False, sv.SKIRT: True}
    draw_height = int(height * 1.5) if edge == "cut_at_thigh" else height
    pose = sv.random_pose(rng, draw_height, width)
    if edge in ("raised_arms", "wrists_above_frame"):
        pose = _raised(pose, rng, height, 0.3 if edge == "wrists_above_frame" else 0.15)
    person = sv.draw_person(rng, draw_height, width, outfit, pose)
    semantic, image = person.semantic[:height], person.image[:height]
    joints = {k: v.astype(np.float64) for k, v in pose.joints.items()}
    missing = {k for k, v in joints.items() if v[1] >= height}  # cut off at the bottom
    case = Case(name, category, *_labels(semantic), image.copy(), joints, missing)
    if edge in ("missing_right_wrist", "missing_left_wrist"):
        case.missing.add(edge.split("_", 1)[1].replace("right", "r").replace("left", "l"))
    elif edge == "missing_right_arm":
        case.missing |= {"r_elbow", "r_wrist"}
    elif edge == "missing_left_shoulder":
        case.missing.add("l_shoulder")
    elif edge == "no_hips":
        case.missing |= {"r_hip", "l_hip", "mid_hip"}
    elif edge == "long_hair":
        _long_hair(case, rng, size)
    elif edge == "two_people":
        _second_person(case, rng, size)
    elif edge == "accessories":
        _accessories(case, size)
    return case


def _ellipse(size: tuple[int, int], centre: np.ndarray, axes: tuple[float, float]) -> np.ndarray:
    canvas = np.zeros(size, np.uint8)
    cv2.ellipse(canvas, (int(centre[0]), int(centre[1])), (int(axes[0]), int(axes[1])), 0, 0, 360, 1, -1)
    return canvas.astype(bool)


def _paint(case: Case, region: np.ndarray, atr: int, cihp: int, color) -> None:
    case.atr[region], case.cihp[region], case.image[region] = atr, cihp, color


def _long_hair(case: Case, rng: np.random.Generator, size: tuple[int, int]) -> None:
    """Hair from the head down over both shoulders and the garment."""
    head, height = case.joints["head"], size[0]
    hair = np.zeros(size, bool)
    for shoulder in ("r_shoulder", "l_shoulder"):
        centre = (head + case.joints[shoulder]) / 2 + [0, 0.06 * height]
        hair |= _ellipse(size, centre, (0.06 * size[1], 0.16 * height))
    face = case.atr == sv.ATR[sv.FACE]
    _paint(case, hair & ~face, sv.ATR[sv.HAIR], sv.CIHP[sv.HAIR], rng.integers(0, 90, 3))


def _second_person(case: Case, rng: np.random.Generator, size: tuple[int, int]) -> None:
    """A second person behind, shifted right; the first stays first (OpenPose's ``people[0]``)."""
    height, width = size
    shift = int(0.42 * width)
    other = sv.draw_person(rng, height, width, OUTFITS["vitonhd"](rng))
    atr, cihp = _labels(other.semantic)
    behind = np.zeros(size, bool)
    behind[:, shift:] = other.semantic[:, :width - shift] != sv.BG
    behind &= case.atr == 0
    case.atr[behind] = atr[:, :width - shift][behind[:, shift:]]
    case.cihp[behind] = cihp[:, :width - shift][behind[:, shift:]]
    case.image[behind] = other.image[:, :width - shift][behind[:, shift:]]
    case.others.append({k: v + [shift, 0] for k, v in other.pose.joints.items()})


def _accessories(case: Case, size: tuple[int, int]) -> None:
    """A hat, sunglasses, a scarf, a bag at the hip and a belt: labels the synthetic people lack."""
    height, width = size
    j = case.joints
    shapes = {
        "hat": _ellipse(size, j["head"] + [0, -0.06 * height], (0.09 * width, 0.03 * height)),
        "sunglasses": _ellipse(size, j["head"] + [0, 0.0], (0.05 * width, 0.012 * height)),
        "scarf": _ellipse(size, j["neck"] + [0, 0.02 * height], (0.1 * width, 0.025 * height)),
        "bag": _ellipse(size, j["l_hip"] + [0.1 * width, 0], (0.06 * width, 0.06 * height)),
        "belt": _ellipse(size, j["mid_hip"] + [0, -0.03 * height], (0.13 * width, 0.012 * height)),
    }
    for index, (name, region) in enumerate(shapes.items()):
        atr, cihp = ACCESSORIES[name]
        _paint(case, region, atr, cihp, (40 * index, 200 - 30 * index, 90))


def golden_cases(seed: int) -> dict[str, list[tuple[Case, tuple[int, int]]]]:
    """The fixture cases per recipe: synthetic people in each category, then every edge case."""
    cases: dict[str, list[tuple[Case, tuple[int, int]]]] = {"dresscode": [], "hrviton": []}

    def rng(*key: int) -> np.random.Generator:
        return np.random.default_rng([seed, *key])

    for c, category in enumerate(dresscode.CATEGORIES):
        for k, size in enumerate((SMALL, SMALL, LARGE)):
            name = f"{category}_{k}_{size[0]}"
            cases["dresscode"].append((make_case(name, category, size, rng(1, c, k), None), size))
    for e, edge in enumerate(EDGES):
        categories = {"skirt": ("lower_body",), "two_people": ("upper_body", "lower_body")}.get(
            edge, ("upper_body", "dresses"))
        for c, category in enumerate(categories):
            size = LARGE if (e + c) % 4 == 0 else SMALL
            name = f"{edge}_{category}_{size[0]}"
            cases["dresscode"].append((make_case(name, category, size, rng(2, e, c), edge), size))
        if edge != "skirt":
            cases["hrviton"].append((make_case(edge, "vitonhd", HRVITON_SIZE, rng(3, e), edge), HRVITON_SIZE))
    for k in range(4):
        name = f"synthetic_{k}"
        cases["hrviton"].append((make_case(name, "vitonhd", HRVITON_SIZE, rng(4, k), None), HRVITON_SIZE))
    return cases


# -- the real file formats ---------------------------------------------------------------------------

def dresscode_keypoints(case: Case, size: tuple[int, int]) -> dict:
    """DressCode's ``{id}_2.json``: COCO-18 [x, y, score, index] in the 384x512 frame, missing (-1, -1, 0, -1),
    a point above or beside the frame on its edge (as DressCode has faces cut at the top: y = 0, score > 0)."""
    frame = np.array([dresscode.KEYPOINT_FRAME[1] / size[1], dresscode.KEYPOINT_FRAME[0] / size[0]])
    rows = []
    for index, joint in sv.COCO_18.items():
        if joint in case.missing:
            rows.append([-1.0, -1.0, 0.0, -1.0])
        else:
            x, y = np.clip(np.round(case.joints[joint] * frame), 0, [dresscode.KEYPOINT_FRAME[1] - 1, np.inf])
            rows.append([float(x), float(y), 0.9, float(index)])
    return {"keypoints": rows}


def openpose_keypoints(case: Case) -> dict:
    """OpenPose 1.3 BODY_25 JSON: ``people`` in order, missing (0, 0, 0), as is a point outside the frame."""
    people = []
    height, width = case.atr.shape
    for number, joints in enumerate([case.joints, *case.others]):
        flat = []
        for index in range(25):
            name = sv.BODY_25.get(index)
            outside = name is not None and not (0 <= joints[name][0] < width and 0 <= joints[name][1] < height)
            if name is None or outside or (number == 0 and name in case.missing):
                flat += [0, 0, 0]
            else:
                flat += [round(float(joints[name][0]), 3), round(float(joints[name][1]), 3), 0.9]
        people.append({"person_id": [-1], "pose_keypoints_2d": flat})
    return {"version": 1.3, "people": people}


# -- the official code -------------------------------------------------------------------------------

def _load(name: str, path: Path) -> types.ModuleType:
    if not path.is_file():
        sys.exit(f"{path}: missing (see the module docstring for the official sources)")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


class OfficialDressCode:
    """aimagelab/dress-code's ``Dataset`` on a DressCode-layout folder; masks read from ``__getitem__``'s locals."""

    def __init__(self, source: Path):
        package = types.ModuleType("data")  # data/__init__.py also imports a DataLoader nothing here needs
        package.__path__ = [str(source / "data")]
        sys.modules["data"] = package
        _load("data.labelmap", source / "data" / "labelmap.py")
        self.module = _load("data.dataset", source / "data" / "dataset.py")

    def __call__(self, case: Case, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """(inpaint mask bool [H, W], ``im_mask`` [3, H, W] float in [-1, 1]) for ``case`` at ``size``."""
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp) / case.category
            # The person goes in as PNG (PIL reads by content, not name): lossless, so the fixture's PNG is the
            # official code's input pixel for pixel.
            write = {"person": lambda p: Image.fromarray(case.image).save(p, format="PNG"),
                     "garment": lambda p: Image.fromarray(case.image).save(p),
                     "keypoints": lambda p: p.write_text(json.dumps(dresscode_keypoints(case, size))),
                     "labels": lambda p: label_image(case.atr).save(p),
                     "densepose": lambda p: Image.fromarray(np.zeros(size, np.uint8)).save(p),
                     "densepose_uv": lambda p: np.savez(p, uv=np.zeros((2, 8, 6), np.float32)),
                     "skeleton": lambda p: Image.fromarray(case.image).save(p)}
            paths = dresscode.DressCodePaths(Path(tmp))
            for kind, writer in write.items():
                paths.folder(case.category, kind).mkdir(parents=True, exist_ok=True)
                writer(paths.file(case.category, kind, "000000"))
            (folder / "train_pairs.txt").write_text(dresscode.pair_line("000000", "000000") + "\n")
            args = argparse.Namespace(radius=5, height=size[0])
            dataset = self.module.Dataset(args, tmp, "train", category=[case.category], size=size)
            found = {}
            code = self.module.Dataset.__getitem__.__code__

            def tracer(frame, event, arg):
                if frame.f_code is not code:
                    return None

                def on_return(frame, event, arg):
                    if event == "return":
                        found.update(frame.f_locals)
                    return on_return
                return on_return

            sys.settrace(tracer)
            try:
                dataset[0]
            finally:
                sys.settrace(None)
        keep = np.asarray(found["parse_mask"], bool) | np.asarray(found["parser_mask_fixed"], bool)
        return ~keep, np.asarray(found["im_mask"])


class OfficialHRVITON:
    """sangyun884/HR-VITON's ``CPDataset.get_agnostic``, called unbound (it reads nothing from ``self``)."""

    def __init__(self, source: Path):
        self.get_agnostic = _load("cp_dataset", source / "cp_dataset.py").CPDataset.get_agnostic

    def __call__(self, person: Image.Image, parse: Image.Image, openpose: dict) -> tuple[np.ndarray, np.ndarray]:
        """(painted region bool [H, W], agnostic image uint8 [H, W, 3]) as ``__getitem__`` feeds it."""

        def pose():
            return np.array(openpose["people"][0]["pose_keypoints_2d"]).reshape((-1, 3))[:, :2]

        agnostic = np.asarray(self.get_agnostic(None, person, parse, pose()))
        painted = np.asarray(self.get_agnostic(None, Image.new("RGB", person.size), parse, pose()))
        return painted[..., 0] > 0, agnostic


# -- fixtures ----------------------------------------------------------------------------------------

def _save_mask(path: Path, mask: np.ndarray) -> None:
    Image.fromarray(mask.astype(np.uint8) * 255).convert("1").save(path, optimize=True)


def agnostic_png(im_mask: np.ndarray) -> np.ndarray:
    """DressCode's ``im_mask`` ([3, H, W] in [-1, 1], 0 where masked) as uint8 HWC: masked pixels read 128."""
    return np.round((np.moveaxis(im_mask, 0, -1) + 1) * 127.5).astype(np.uint8)


def write(args: argparse.Namespace) -> None:
    official_dc, official_hr = OfficialDressCode(args.dress_code), OfficialHRVITON(args.hr_viton)
    cases = golden_cases(args.seed)
    index = {"dresscode": [], "hrviton": []}
    out = GOLDEN / "dresscode"
    out.mkdir(exist_ok=True)
    for case, size in cases["dresscode"]:
        mask, im_mask = official_dc(case, size)
        label_image(case.atr).save(out / f"{case.name}_4.png", optimize=True)
        (out / f"{case.name}_2.json").write_text(json.dumps(dresscode_keypoints(case, size)))
        _save_mask(out / f"{case.name}_mask.png", mask)
        entry = {"name": case.name, "category": case.category, "size": list(size)}
        if case.name in AGNOSTIC_CASES:  # person and official im_mask
            Image.fromarray(case.image).save(out / f"{case.name}_0.png", optimize=True)
            Image.fromarray(agnostic_png(im_mask)).save(out / f"{case.name}_agnostic.png", optimize=True)
            entry["agnostic"] = True
        index["dresscode"].append(entry)
    out = GOLDEN / "hrviton"
    out.mkdir(exist_ok=True)
    for case, size in cases["hrviton"]:
        keypoints = openpose_keypoints(case)
        person, parse = Image.fromarray(case.image), label_image(case.cihp)
        mask, agnostic = official_hr(person, parse, keypoints)
        parse.save(out / f"{case.name}.png", optimize=True)
        (out / f"{case.name}_keypoints.json").write_text(json.dumps(keypoints))
        _save_mask(out / f"{case.name}_mask.png", mask)
        entry = {"name": case.name, "category": "upper_body", "size": list(size)}
        if case.name in AGNOSTIC_CASES:
            person.save(out / f"{case.name}_person.png", optimize=True)
            Image.fromarray(agnostic).save(out / f"{case.name}_agnostic.png", optimize=True)
            entry["agnostic"] = True
        index["hrviton"].append(entry)
    for recipe, entries in index.items():
        (GOLDEN / recipe / "cases.json").write_text(json.dumps(entries, indent=1) + "\n")
        print(f"{recipe}: {len(entries)} cases")


# -- agreement ---------------------------------------------------------------------------------------

def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = (a | b).sum()
    return float((a & b).sum() / union) if union else 1.0


def _nan_where(points: np.ndarray, rule) -> np.ndarray:
    points = points[:, :2].astype(np.float64)
    points[rule(points)] = np.nan
    return points


def agreement(args: argparse.Namespace) -> None:
    official_dc, official_hr = OfficialDressCode(args.dress_code), OfficialHRVITON(args.hr_viton)
    rng = np.random.default_rng([args.seed, 99])
    rows: dict[tuple[str, str, str], list[float]] = {}

    def edge() -> str | None:  # half of the people get an edge case
        return str(rng.choice(EDGES)) if rng.random() < 0.5 else None

    def add(key: tuple[str, str, str], official: np.ndarray, new: np.ndarray) -> None:
        rows.setdefault(key, []).append(iou(new, official))

    start = time.perf_counter()
    for category in dresscode.CATEGORIES:
        for size in (SMALL, LARGE):
            for _ in range(args.count):
                chosen = edge()
                chosen = None if chosen == "skirt" and category != "lower_body" else chosen
                case = make_case("agreement", category, size, rng, chosen)
                official, _ = official_dc(case, size)
                raw = np.asarray(dresscode_keypoints(case, size)["keypoints"], np.float64)
                points = _nan_where(raw, lambda p: (p[:, 0] <= 1) & (p[:, 1] <= 1))
                person = mask_recipes.ParsedPerson(case.atr, "atr", points, "coco18", dresscode.KEYPOINT_FRAME)
                new = mask_recipes.inpaint_mask("dresscode", person, category, size)
                add(("dresscode", category, f"{size[0]}x{size[1]}"), official, new)
    for _ in range(args.count):
        case = make_case("agreement", "vitonhd", HRVITON_SIZE, rng, edge())
        keypoints = openpose_keypoints(case)
        official, _ = official_hr(Image.fromarray(case.image), label_image(case.cihp), keypoints)
        raw = np.asarray(keypoints["people"][0]["pose_keypoints_2d"], np.float64).reshape(-1, 3)
        points = _nan_where(raw, lambda p: (p[:, 0] == 0) & (p[:, 1] == 0))
        person = mask_recipes.ParsedPerson(case.cihp, "cihp", points, "body25", HRVITON_SIZE)
        add(("hrviton", "upper_body", "1024x768"), official,
            mask_recipes.inpaint_mask("hrviton", person, "upper_body", HRVITON_SIZE))
    lines = ["| recipe | category | size | people | mean IoU vs official | min |", "|---|---|---|---|---|---|"]
    for (recipe, category, size), row in rows.items():
        lines.append(f"| {recipe} | {category} | {size} | {len(row)} | {np.mean(row):.4f} | {np.min(row):.4f} |")
    command = "python tests/golden/dataset_masks.py agreement " + " ".join(sys.argv[2:])
    header = (f"Written by `{command}` on {time.strftime('%Y-%m-%d')} ({platform.platform()}, "
              f"{time.perf_counter() - start:.0f} s). Seed {args.seed}, {args.count} people per row, about half "
              f"of them with an edge case drawn from: {', '.join(EDGES)}.\n\n")
    args.out.write_text(header + "\n".join(lines) + "\n")
    print(header + "\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=("write", "agreement"))
    parser.add_argument("--dress-code", type=Path, required=True, help="aimagelab/dress-code sources")
    parser.add_argument("--hr-viton", type=Path, required=True, help="sangyun884/HR-VITON sources")
    parser.add_argument("--seed", type=int, default=None, help="default: 0 for write, 1 for agreement")
    parser.add_argument("--count", type=int, default=40, help="agreement: people per row")
    parser.add_argument("--out", type=Path, default=GOLDEN / "dataset_masks_agreement.md")
    args = parser.parse_args()
    args.seed = (0 if args.command == "write" else 1) if args.seed is None else args.seed
    (write if args.command == "write" else agreement)(args)


if __name__ == "__main__":
    main()
