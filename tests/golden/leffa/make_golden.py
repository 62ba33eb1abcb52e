"""Golden masks of the Leffa app's recipes, made by running the official code (README.md here says how).

``make``: runs franciszzj/Leffa's ``leffa_utils/utils.py`` (``get_agnostic_mask_hd`` / ``get_agnostic_mask_dc``)
and ``leffa/transform.py`` (``LeffaTransform``), read from a git snapshot of the repository into a scratch folder
outside this one, the way ``app.py`` runs them: ATR + neck labels and COCO-18 keypoints at 384x512, the mask
resized to the photo (``Image.resize``) and binarised by the transform, agnostic = ``src_image * (mask < 0.5)``
(``leffa/pipeline.py``). Inputs are synthetic people (``leffa_pl.datasets.synthetic_people``) and hand-made edge cases;
inputs and outputs are written next to this file (``cases.json`` and PNGs).

``measure``: mean mask IoU against the official function on a separately seeded set the tests never see, per
dataset and category, for the project's recipes and for the recipe it had before (``leffa_pl/data/masks.py`` at
``--old-commit``, read from this repository's history).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from leffa_pl.data import mask_recipes
from leffa_pl.data.mask_recipes import leffa_app
from leffa_pl.datasets import synthetic_people as sv

HERE = Path(__file__).resolve().parent
FRAME = leffa_app.FRAME  # (H, W)
PHOTO = (128, 96)  # (H, W) of the stored person photos and agnostic images
ATR_NECK = {**sv.ATR, sv.NECK: 18}
OFFICIAL = {"leffa-hd": "get_agnostic_mask_hd", "leffa-dc": "get_agnostic_mask_dc"}
OUTFITS = {"upper_body": {sv.UPPER: True, sv.PANTS: False}, "lower_body": {sv.UPPER: False, sv.PANTS: True},
           "lower_body_skirt": {sv.UPPER: False, sv.SKIRT: True}, "dresses": {sv.DRESS: True}}


def load_official(git_dir: str, commit: str, scratch: Path):
    """``leffa_utils/utils.py`` and ``leffa/transform.py`` of ``commit`` as modules, from files in ``scratch``.
    Both import only what this environment has (numpy, cv2, PIL, torch, diffusers): nothing is stubbed."""
    modules = []
    for name, path in (("leffa_official_utils", "leffa_utils/utils.py"),
                       ("leffa_official_transform", "leffa/transform.py")):
        source = subprocess.run(["git", "--git-dir", git_dir, "show", f"{commit}:{path}"], check=True,
                                capture_output=True, text=True).stdout
        file = scratch / f"{name}.py"
        file.write_text(source)
        spec = importlib.util.spec_from_file_location(name, file)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        modules.append(module)
    return modules


# -- inputs: a person at the app's frame (ATR + neck labels, COCO-18 with missing points at 0, 0, the photo) ----

def coco18(pose: sv.Pose, height: int, width: int) -> np.ndarray:
    """COCO-18 (x, y); points outside the image are missing (0, 0), as the app's detector leaves them."""
    points = np.array([pose[sv.COCO_18[i]] for i in range(18)], np.float64)
    outside = (points[:, 0] < 0) | (points[:, 0] >= width) | (points[:, 1] < 0) | (points[:, 1] >= height)
    points[outside] = 0
    return np.round(points, 3)


def person(rng, outfit, height=FRAME[0], width=FRAME[1], pose=None):
    drawn = sv.draw_person(rng, height, width, outfit, pose)
    labels = np.vectorize(ATR_NECK.get, otypes=[np.uint8])(drawn.semantic)
    return labels, coco18(drawn.pose, height, width), drawn.image, drawn


def raised_arms(rng, outfit):
    """Elbows above the shoulders and wrists near the top edge: the extended wrist leaves the image."""
    pose = sv.random_pose(rng, *FRAME)
    height, width = FRAME
    for side, outward in (("r", -1), ("l", 1)):
        pose.joints[f"{side}_elbow"] = pose[f"{side}_shoulder"] + [outward * 0.12 * width, -0.13 * height]
        pose.joints[f"{side}_wrist"] = pose[f"{side}_elbow"] + [outward * 0.02 * width, -0.12 * height]
    return person(rng, outfit, pose=pose)[:3]


def cut_at_thigh(rng, outfit):
    """A person drawn 1.6x larger and cropped to the frame: the lower body leaves the image below the hips."""
    height, width = FRAME
    labels, _, image, drawn = person(rng, outfit, int(height * 1.6), int(width * 1.6))
    left = (labels.shape[1] - width) // 2
    points = np.array([drawn.pose[sv.COCO_18[i]] for i in range(18)], np.float64) - [left, 0]
    inside = (points[:, 0] >= 0) & (points[:, 0] < width) & (points[:, 1] >= 0) & (points[:, 1] < height)
    points[~inside] = 0
    return labels[:height, left:left + width], np.round(points, 3), image[:height, left:left + width]


def long_hair(rng, outfit):
    """Hair falling over the shoulders and the garment down to mid-chest."""
    labels, points, image, drawn = person(rng, outfit)
    height, width = FRAME
    head_x, head_y = drawn.pose["head"]
    for offset in (-0.1 * width, 0.07 * width):
        left, top = int(head_x + offset), int(head_y)
        labels[top:int(0.45 * height), left:left + int(0.05 * width)] = sv.ATR[sv.HAIR]
        image[top:int(0.45 * height), left:left + int(0.05 * width)] = (60, 40, 25)
    return labels, points, image


def two_people(rng, outfit):
    """Two people side by side, the first one's keypoints (the app's detector gives one person)."""
    height, width = FRAME
    first, points, first_image, _ = person(rng, outfit)
    second, _, second_image, _ = person(rng, outfit)
    shift = width // 4
    labels = np.zeros((height, width + 2 * shift), np.uint8)
    image = np.full((height, width + 2 * shift, 3), 230, np.uint8)
    for placed, placed_image, left in ((first, first_image, 0), (second, second_image, 2 * shift)):
        where = placed > 0
        labels[:, left:left + width][where] = placed[where]
        image[:, left:left + width][where] = placed_image[where]
    points = np.where(points > 0, points - [shift, 0], 0)
    points[points[:, 0] < 0] = 0
    return labels[:, shift:shift + width], np.round(points, 3), image[:, shift:shift + width]


def missing_wrist(rng, outfit):
    labels, points, image, _ = person(rng, outfit)
    points[4] = 0  # the right wrist
    return labels, points, image


EDGE_CASES = {"missing_wrist": missing_wrist, "raised_arms": raised_arms, "cut_at_thigh": cut_at_thigh,
              "long_hair": long_hair, "two_people": two_people}


def golden_inputs(seed: int, per_outfit: int):
    """(name, category, labels, keypoints, photo): synthetic people per outfit, then the edge cases."""
    for outfit_name, outfit in OUTFITS.items():
        category = outfit_name.replace("_skirt", "")
        for index in range(per_outfit):
            labels, points, image, _ = person(np.random.default_rng([seed, len(outfit_name), index]), outfit)
            yield f"{outfit_name}_{index}", category, labels, points, image
    for number, (name, make) in enumerate(EDGE_CASES.items()):
        labels, points, image = make(np.random.default_rng([seed, 100 + number]), OUTFITS["upper_body"])
        yield name, "upper_body", labels, points, image
    labels, points, image = missing_wrist(np.random.default_rng([seed, 200]), OUTFITS["dresses"])
    yield "missing_wrist_dress", "dresses", labels, points, image


def official_app(utils, transform, recipe, labels, points, category, photo):
    """The official mask at the frame, the mask and agnostic image at the photo's size, as app.py runs them."""
    function = getattr(utils, OFFICIAL[recipe])
    frame_mask = function(Image.fromarray(labels), {"pose_keypoints_2d": points.tolist()}, category)
    height, width = photo.shape[:2]
    mask = frame_mask.resize((width, height))
    data = transform.LeffaTransform(height=height, width=width)(
        {"src_image": [Image.fromarray(photo)], "ref_image": [Image.fromarray(photo)], "mask": [mask],
         "densepose": [Image.fromarray(np.zeros_like(photo))]})
    agnostic = data["src_image"] * (data["mask"] < 0.5)
    return (np.asarray(frame_mask) > 127, data["mask"][0, 0].numpy() >= 0.5,
            ((agnostic[0].permute(1, 2, 0).numpy() + 1) * 127.5).round().astype(np.uint8))


def save_mask(path: Path, mask: np.ndarray) -> str:
    Image.fromarray(mask).save(path, optimize=True)  # mode "1"
    return path.name


def make(args, utils, transform) -> None:
    cases = []
    for name, category, labels, points, image in golden_inputs(args.seed, args.per_outfit):
        photo = np.asarray(Image.fromarray(image).resize(PHOTO[::-1], Image.LANCZOS))
        sv._save_palette_png(HERE / f"{name}_labels.png", labels)
        Image.fromarray(photo).save(HERE / f"{name}_photo.png", optimize=True)
        case = {"name": name, "category": category, "labels": f"{name}_labels.png", "photo": f"{name}_photo.png",
                "keypoints": points.tolist(), "outputs": {}}
        for recipe in OFFICIAL:
            frame_mask, mask, agnostic = official_app(utils, transform, recipe, labels, points, category, photo)
            Image.fromarray(agnostic).save(HERE / f"{name}_{recipe}_agnostic.png", optimize=True)
            case["outputs"][recipe] = {"frame_mask": save_mask(HERE / f"{name}_{recipe}_frame.png", frame_mask),
                                       "mask": save_mask(HERE / f"{name}_{recipe}_mask.png", mask),
                                       "agnostic": f"{name}_{recipe}_agnostic.png"}
        cases.append(case)
    (HERE / "cases.json").write_text(json.dumps({"frame": list(FRAME), "photo": list(PHOTO), "cases": cases}) + "\n")
    print(f"{len(cases)} cases, {2 * len(cases)} official masks written to {HERE}")


# -- measure: agreement on unseen inputs, at a dataset's working resolution -------------------------------------

def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = (a | b).sum()
    return float((a & b).sum() / union) if union else 1.0


def old_module(commit: str, scratch: Path):
    source = subprocess.run(["git", "-C", str(HERE), "show", f"{commit}:leffa_pl/data/masks.py"], check=True,
                            capture_output=True, text=True).stdout
    file = scratch / "old_masks.py"
    file.write_text(source)
    spec = importlib.util.spec_from_file_location("old_masks", file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def unseen(rng, outfit, size, cut):
    """A person at ``size`` (H, W), sometimes without a wrist or with hair over the garment; ``cut``: drawn
    1.6x larger and cropped below the hips, as real VITON-HD photos are."""
    height, width = size
    scale = 1.6 if cut else 1.0
    drawn = sv.draw_person(rng, int(height * scale), int(width * scale), outfit)
    left = (drawn.semantic.shape[1] - width) // 2
    semantic = drawn.semantic[:height, left:left + width].copy()
    if rng.random() < 0.2:
        head_x, head_y = drawn.pose["head"] - [left, 0]
        for offset in (-0.1 * width, 0.07 * width):
            semantic[int(head_y):int(0.45 * height), int(head_x + offset):int(head_x + offset + 0.05 * width)] = sv.HAIR
    points = {name: drawn.pose[name] - [left, 0] for name in set(sv.COCO_18.values()) | set(sv.BODY_25.values())}
    for name, point in points.items():
        if not (0 <= point[0] < width and 0 <= point[1] < height):
            points[name] = np.array([np.nan, np.nan])
    if rng.random() < 0.2:
        points["r_wrist" if rng.random() < 0.5 else "l_wrist"] = np.array([np.nan, np.nan])
    return semantic, points


def measure(args, utils, scratch: Path) -> None:
    old = old_module(args.old_commit, scratch)
    size = tuple(args.size)
    groups = [("VITON-HD, full figure", "upper_body", "upper_body", False),  # (row, category, outfit, cut)
              ("VITON-HD, cut at the thigh", "upper_body", "upper_body", True),
              ("DressCode upper_body", "upper_body", "upper_body", False),
              ("DressCode lower_body, pants", "lower_body", "lower_body", False),
              ("DressCode lower_body, skirts", "lower_body", "lower_body_skirt", False),
              ("DressCode dresses", "dresses", "dresses", False)]
    rows = []
    for group, (dataset, category, outfit, cut) in enumerate(groups):
        vitonhd = dataset.startswith("VITON-HD")
        recipe = "leffa-hd" if vitonhd else "leffa-dc"
        scores = {"new": [], "old": []}
        for index in range(args.count):
            semantic, points = unseen(np.random.default_rng([args.seed, group, index]), OUTFITS[outfit], size, cut)
            atr_neck = np.vectorize(ATR_NECK.get, otypes=[np.uint8])(semantic)
            coco = np.array([points[sv.COCO_18[i]] for i in range(18)])
            # The official function, as app.py runs it: labels at the frame, missing points at 0, 0.
            app_labels = Image.fromarray(atr_neck).resize(FRAME[::-1], Image.NEAREST)
            app_points = np.nan_to_num(coco * [FRAME[1] / size[1], FRAME[0] / size[0]], nan=0.0)
            official = getattr(utils, OFFICIAL[recipe])(app_labels, {"pose_keypoints_2d": app_points.tolist()},
                                                        category)
            official = np.asarray(official.resize(size[::-1])) >= 128
            if vitonhd:  # what VITON-HD stores: CIHP parsing and BODY_25
                labels = np.vectorize(sv.CIHP.get, otypes=[np.uint8])(semantic)
                body = np.array([points[sv.BODY_25[i]] if i in sv.BODY_25 else (np.nan, np.nan) for i in range(25)])
                stored = mask_recipes.ParsedPerson(labels, "cihp", body, "body25", size)
                previous = old.vitonhd_inpaint_mask(labels, body)
            else:  # DressCode: ATR label maps, COCO-18; the old reader dropped points with x <= 1 OR y <= 1
                labels = np.vectorize(sv.ATR.get, otypes=[np.uint8])(semantic)
                stored = mask_recipes.ParsedPerson(labels, "atr", coco, "coco18", size)
                in_file = coco * [FRAME[1] / size[1], FRAME[0] / size[0]]  # DressCode's 384x512 keypoint frame
                old_points = np.where(((in_file[:, 0] <= 1) | (in_file[:, 1] <= 1))[:, None], np.nan, coco)
                previous = old.dresscode_inpaint_mask(labels, old_points, category)
            scores["new"].append(iou(mask_recipes.inpaint_mask(recipe, stored, category, size), official))
            scores["old"].append(iou(previous, official))
        rows.append(f"| {dataset} | {recipe} | {np.mean(scores['old']):.3f} | {np.mean(scores['new']):.4f} | "
                    f"{np.min(scores['new']):.4f} | {args.count} |")
    print(f"# mean mask IoU against the official function, {args.count} unseen synthetic people per row at "
          f"{size[0]}x{size[1]} (seed {args.seed}); old = leffa_pl/data/masks.py at {args.old_commit}")
    print("| inputs | recipe | old recipe | new (mean) | new (min) | n |\n|---|---|---|---|---|---|")
    print("\n".join(rows))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["make", "measure"])
    parser.add_argument("--leffa-git", required=True, help="git directory of a franciszzj/Leffa snapshot")
    parser.add_argument("--commit", default="7848bedf")
    parser.add_argument("--seed", type=int, default=None, help="default: 0 for make, 1 for measure")
    parser.add_argument("--per-outfit", type=int, default=2, help="make: synthetic people per outfit")
    parser.add_argument("--count", type=int, default=40, help="measure: people per row")
    parser.add_argument("--size", type=int, nargs=2, default=[1024, 768], help="measure: working H W")
    parser.add_argument("--old-commit", default="016a3e4", help="measure: the commit of the old recipe")
    args = parser.parse_args(argv)
    args.seed = args.seed if args.seed is not None else {"make": 0, "measure": 1}[args.command]
    with tempfile.TemporaryDirectory(prefix="leffa-official-") as scratch:
        utils, transform = load_official(args.leffa_git, args.commit, Path(scratch))
        if args.command == "make":
            make(args, utils, transform)
        else:
            measure(args, utils, Path(scratch))
    return 0


if __name__ == "__main__":
    sys.exit(main())
