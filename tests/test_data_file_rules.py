"""The auxiliary-map size rule (every map, every dataset) and the checker finding whatever the loader raises on."""

import logging
import shutil

import numpy as np
import pytest
from PIL import Image

from leffa_pl.data.contract import check_sample
from leffa_pl.data.datamodule import DeepFashionDataModule, DressCodeDataModule, VitonHDDataModule
from leffa_pl.data.files import DataFileError, DatasetFilesError
from leffa_pl.datasets.deepfashion import synthetic as synthetic_deepfashion
from leffa_pl.datasets.dresscode import synthetic as dresscode_synthetic
from leffa_pl.datasets.vitonhd import synthetic as vitonhd_synthetic

NATIVE = (64, 48)
WORKING = (32, 24)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    base = tmp_path_factory.mktemp("pristine")
    return {"vitonhd": vitonhd_synthetic.make_vitonhd(base / "zalando-hd-resized", 2, 1, NATIVE),
            "dresscode": dresscode_synthetic.make_dresscode(base / "DressCode", 1, 2, NATIVE, categories=("dresses",)),
            "deepfashion": synthetic_deepfashion.make_deepfashion(base / "deepfashion", 1, 1, 2, (66, 45))}


# layout -> (dataset, data-module factory at the working resolution)
LAYOUTS = {
    "vitonhd-precomputed": ("vitonhd", lambda root: VitonHDDataModule(str(root), mask_source="precomputed",
                                                                       resolution=WORKING, **LOADER)),
    "vitonhd-computed": ("vitonhd", lambda root: VitonHDDataModule(str(root), mask_source="computed",
                                                                    resolution=WORKING, **LOADER)),
    "dresscode": ("dresscode", lambda root: DressCodeDataModule(str(root), category="dresses", resolution=WORKING,
                                                                **LOADER)),
    "deepfashion": ("deepfashion", lambda root: DeepFashionDataModule(str(root), resolution=(44, 30), **LOADER)),
}
LOADER = {"batch_size": 1, "num_workers": 0, "augment": False, "val_size": 1}


def copy_of(pristine, layout, tmp_path):
    dataset, factory = LAYOUTS[layout]
    root = tmp_path / pristine[dataset].name
    if root.exists():
        shutil.rmtree(root)
    shutil.copytree(pristine[dataset], root)
    return root, factory(root)


def train_dataset(module):
    return module._dataset("train", module.pairs("train")[0], module.resolution, augment=False)


def rewrite_at(path, size_of):
    """Store a map again at ``size_of((H, W))``, nearest neighbour, in its own format."""
    if path.suffix == ".npz":
        with np.load(path) as archive:
            flow = archive["flow"]
        height, width = size_of(flow.shape[1:])
        rows = np.linspace(0, flow.shape[1] - 1, height).round().astype(int)
        cols = np.linspace(0, flow.shape[2] - 1, width).round().astype(int)
        np.savez_compressed(path, flow=flow[:, rows][:, :, cols])
        return
    with Image.open(path) as image:
        image.load()
        image_format = image.format
        height, width = size_of((image.height, image.width))
        image.resize((width, height), Image.NEAREST).save(path, format=image_format)


def half(size):
    return size[0] // 2, size[1] // 2


def other_aspect(size):
    return size[0], size[1] // 2


def test_maps_of_another_size_with_the_aspect_ratio_are_resized_and_logged_once(pristine, tmp_path, caplog):
    for layout in LAYOUTS:
        root, module = copy_of(pristine, layout, tmp_path)
        files = train_dataset(module).files(train_dataset(module).pairs[0])
        aligned = [required.path for required in files.values() if required.aligned]
        assert aligned, layout
        for path in aligned:
            rewrite_at(path, half)
        caplog.clear()
        with caplog.at_level(logging.INFO):
            module.setup("fit")
            module.setup("test")
        notes = [r.getMessage() for r in caplog.records if "resized with nearest neighbour" in r.getMessage()]
        assert len(notes) == 1 and f"{len(aligned)} auxiliary map(s)" in notes[0], (layout, notes)
        sample = train_dataset(module)[0]
        check_sample(sample, where=layout)
        assert sample["person"].shape[1:] == module.resolution


def test_a_map_of_another_aspect_ratio_is_an_error_naming_it(pristine, tmp_path):
    for layout in LAYOUTS:
        root, module = copy_of(pristine, layout, tmp_path)
        data = train_dataset(module)
        for role, required in data.files(data.pairs[0]).items():
            if not required.aligned:
                continue
            root, module = copy_of(pristine, layout, tmp_path)
            data = train_dataset(module)
            path = data.files(data.pairs[0])[role].path
            rewrite_at(path, other_aspect)
            with pytest.raises(DataFileError, match="has another aspect ratio than its image's") as caught:
                data[0]
            assert caught.value.path == path, (layout, role)
            with pytest.raises(DatasetFilesError, match="another aspect ratio") as report:
                module.setup("fit")
            assert str(path) in str(report.value), (layout, role)


# -- damage each file of a sample in turn: the checker reports every file the loader raises on -------------

def truncate(path):
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) * 2 // 3])


def scramble(path):
    data = bytearray(path.read_bytes())
    third = len(data) // 3
    data[third:2 * third] = np.random.default_rng(0).integers(0, 256, third, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))


def out_of_range(path):
    """A label 250 (DressCode/DeepFashion DensePose allow 0..24, VITON-HD parsing 0..19; others take any label)."""
    with Image.open(path) as image:
        image.load()
        image_format, mode = image.format, image.mode
        pixels = np.array(image)
    pixels.reshape(-1, *pixels.shape[2:])[0] = 250
    stored = Image.fromarray(pixels, mode=mode)
    if mode == "P":
        stored.putpalette(image.getpalette())
    stored.save(path, format=image_format)


def no_flow_key(path):
    np.savez_compressed(path, other=np.zeros((2, 4, 4), np.float32))


DAMAGES = {
    "delete": lambda path: path.unlink(),
    "empty": lambda path: path.write_bytes(b""),
    "truncate": truncate,
    "garbage": lambda path: path.write_bytes(b"not what this file should hold"),
    "scramble": scramble,
    "another aspect ratio": lambda path: rewrite_at(path, other_aspect),
    "half size": lambda path: rewrite_at(path, half),
}
EXTRA_DAMAGES = {
    ".png": {"label 250": out_of_range},
    ".json": {"not the expected structure": lambda path: path.write_text('{"unexpected": []}')},
    ".npz": {"no flow array": no_flow_key},
}
# Image-only damages do not apply to JSON.
JSON_DAMAGES = ("delete", "empty", "truncate", "garbage")


def loader_failures(module):
    """Paths the loader raises on over the training split (any error but a DataFileError fails the test)."""
    failures = set()
    data = train_dataset(module)
    for index in range(len(data)):
        try:
            data[index]
        except DataFileError as error:
            failures.add(error.path)
    return failures


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_the_checker_reports_every_file_the_loader_raises_on(pristine, tmp_path, layout):
    _, module = copy_of(pristine, layout, tmp_path)
    roles = train_dataset(module).files(train_dataset(module).pairs[0])
    cases, raising_cases, missed = 0, 0, []
    for role, declared in roles.items():
        damages = dict(DAMAGES, **EXTRA_DAMAGES.get(declared.path.suffix, {}))
        if declared.path.suffix == ".json":
            damages = {name: damages[name] for name in (*JSON_DAMAGES, "not the expected structure")}
        for name, damage in damages.items():
            _, module = copy_of(pristine, layout, tmp_path)
            path = train_dataset(module).files(train_dataset(module).pairs[0])[role].path
            damage(path)
            raised = loader_failures(module)
            raising_cases += bool(raised)
            for level in ("open", "decode"):
                reported = {problem.path for problem in module.check_files(["train"], level=level).problems}
                # 'open' reads plain photos' headers and ends only: a corrupt middle is found by 'decode'.
                header_only = declared.kind == "rgb" and declared.reader is None
                if not raised <= reported and not (level == "open" and name == "scramble" and header_only):
                    missed.append(f"{role} / {name} / {level}: loader raised on {sorted(map(str, raised))}, "
                                  f"checker reported {sorted(map(str, reported))}")
            cases += 1
    assert not missed, "\n".join(missed)
    assert cases >= 7 * len(roles) and raising_cases >= 4 * len(roles)  # the damages do break the loader
