"""leffa-pl-prepare on folders / a CSV of generated photos with random-weight stand-ins of the networks: the
result passes leffa-pl-check-data and loads in the data modules; bad photos are reported by name and skipped;
an interrupted run resumes without redoing finished pairs."""

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from leffa_pl.annotators import weight_files as weights
from leffa_pl.data import check_data
from leffa_pl.data.contract import check_sample
from leffa_pl.data.datamodule import DressCodeDataModule, VitonHDDataModule
from leffa_pl.datasets import registry
from leffa_pl.datasets.synthetic_people import DRESS, PANTS, UPPER, draw_person
from leffa_pl.preprocess import prepare
from leffa_pl.preprocess.annotate import Preprocessor, PreprocessWeights
from leffa_pl.testing.preprocess_standins import build_all, cli_options

SIZE = (128, 96)
PHOTO = (160, 120)  # photos are fitted to SIZE


@pytest.fixture(scope="module")
def standins(tmp_path_factory) -> dict[str, Path]:
    return build_all(tmp_path_factory.mktemp("standins"))


def _draw(seed: int, outfit=None):
    person = draw_person(np.random.default_rng(seed), *PHOTO, outfit or {UPPER: True, PANTS: False})
    return person.image, person.garment.flat


def _photo_folders(root: Path) -> tuple[Path, Path]:
    """Good photos and bad ones (sorted names: with test_fraction 0.5 every second one is a test pair)."""
    persons, garments = root / "persons", root / "garments"
    persons.mkdir()
    garments.mkdir()
    for index, name in enumerate(["a_ok", "b_cmyk", "c_alpha", "d_exif", "e_blank", "f_unreadable", "g_small"]):
        image, garment = _draw(index)
        Image.fromarray(garment).save(garments / f"{name}.jpg")
        target = persons / f"{name}.jpg"
        if name == "b_cmyk":
            Image.fromarray(image).convert("CMYK").save(target)
        elif name == "c_alpha":
            rgba = np.dstack([image, np.full(PHOTO, 255, np.uint8)])
            rgba[:10, :10, 3] = 0
            Image.fromarray(rgba).save(target := persons / f"{name}.png")
        elif name == "d_exif":
            exif = Image.Exif()
            exif[0x0112] = 6  # rotated 90 degrees: stored as landscape
            Image.fromarray(np.rot90(image, 1).copy()).save(target, exif=exif)
        elif name == "e_blank":
            Image.fromarray(np.full(PHOTO + (3,), 200, np.uint8)).save(target)
        elif name == "f_unreadable":
            buffer = io.BytesIO()
            Image.fromarray(image).save(buffer, format="JPEG")
            target.write_bytes(buffer.getvalue()[:200])
        elif name == "g_small":
            Image.fromarray(image[:20, :15]).save(target)
        else:
            Image.fromarray(image).save(target)
    Image.fromarray(_draw(9)[1]).save(garments / "h_nobody_wears_it.jpg")
    return persons, garments


def test_prepare_vitonhd_folder(standins, tmp_path, capsys):
    persons, garments = _photo_folders(tmp_path)
    out = tmp_path / "dataset"
    argv = ["--layout", "vitonhd", "--persons", str(persons), "--garments", str(garments), "--out", str(out),
            "--size", "128x96", "--test-fraction", "0.5", "--device", "cpu", "--no-progress"]
    assert prepare.main(argv + cli_options(standins)) == 1  # some photos skipped
    report = capsys.readouterr().out
    assert "7 pairs: 4 prepared now, 0 already there, 3 skipped" in report
    assert "e_blank.jpg: no person found" in report
    assert "f_unreadable.jpg: unreadable image" in report
    assert "g_small.jpg: too small: 20x15 px, at least 32x24 for 128x96" in report
    assert "h_nobody_wears_it.jpg: no person photo named h_nobody_wears_it.*" in report
    assert "inpaint masks: mask recipe leffa-hd (franciszzj/Leffa@7848bedf" in report
    for note in ("b_cmyk.jpg: CMYK converted to RGB", "c_alpha.png: transparent pixels composited on white",
                 "d_exif.jpg: EXIF orientation 6 applied"):
        assert note in report
    assert (out / "train_pairs.txt").read_text().split() == ["00000_00.jpg"] * 2 + ["00002_00.jpg"] * 2
    assert (out / "test_pairs.txt").read_text().split() == ["00001_00.jpg", "00003_00.jpg",
                                                            "00003_00.jpg", "00001_00.jpg"]
    assert read_size(out / "test" / "image" / "00003_00.jpg") == SIZE  # the EXIF-rotated portrait, upright
    assert check_data.main([str(out), "--dataset", "vitonhd"]) == 0
    module = VitonHDDataModule(root=str(out), resolution=(64, 48), batch_size=2, num_workers=0, val_size=2)
    module.setup("fit")
    batch = next(iter(module.train_dataloader()))
    check_sample({key: value[0] for key, value in batch.items()})
    assert "precomputed" in module.describe()  # the agnostic-mask/ prepare wrote

    # Running again keeps everything and redoes nothing; the skipped pairs are retried (and skipped again).
    assert prepare.main(argv + cli_options(standins)) == 1
    assert "4 already there, 3 skipped" in capsys.readouterr().out


def read_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as image:
        return image.height, image.width


def test_prepare_dresscode_csv(standins, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    rows = ["person,garment,category,split"]
    for index, (category, split) in enumerate([("upper_body", "train"), ("dresses", "train"),
                                               ("upper_body", "test"), ("dresses", "test")]):
        image, garment = _draw(index, {DRESS: True} if category == "dresses" else None)
        Image.fromarray(image).save(photos / f"p{index}.jpg")
        Image.fromarray(garment).save(photos / f"g{index}.jpg")
        rows.append(f"photos/p{index}.jpg,photos/g{index}.jpg,{category},{split}")
    (tmp_path / "pairs.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "DressCode"
    argv = ["--layout", "dresscode", "--pairs", str(tmp_path / "pairs.csv"), "--out", str(out), "--size", "128x96",
            "--device", "cpu", "--no-progress"]
    assert prepare.main(argv + ["--mask-recipe", "leffa-dc"] + cli_options(standins)) == 2  # no masks stored
    assert not out.exists()
    assert prepare.main(argv + cli_options(standins)) == 0
    assert (out / "dresses" / "test_pairs_unpaired.txt").read_text().split() == ["000003_0.jpg", "000003_1.jpg"]
    assert len((out / "train_pairs.txt").read_text().splitlines()) == 2
    assert check_data.main([str(out), "--dataset", "dresscode", "--category", "all"]) == 0
    module = DressCodeDataModule(root=str(out), resolution=(64, 48), batch_size=2, num_workers=0)
    module.setup("fit")
    check_sample({key: value[0] for key, value in next(iter(module.train_dataloader())).items()})


class _Interrupting:
    """Wraps a Preprocessor: counts ``annotate`` calls and raises KeyboardInterrupt at call ``stop_at``."""

    def __init__(self, inner: Preprocessor, stop_at: int | None = None):
        self.inner, self.stop_at, self.calls = inner, stop_at, 0

    def load(self):
        self.inner.load()

    def annotate(self, image, layout, mask_recipe=None):
        self.calls += 1
        if self.calls == self.stop_at:
            raise KeyboardInterrupt
        return self.inner.annotate(image, layout, mask_recipe)


def test_interrupted_run_resumes_without_redoing(standins, tmp_path):
    photos = tmp_path / "persons"
    photos.mkdir()
    sources = []
    for index in range(4):
        image, garment = _draw(index)
        Image.fromarray(image).save(photos / f"p{index}.jpg")
        Image.fromarray(garment).save(photos / f"g{index}.jpg")
        sources.append(prepare.Source(str(photos / f"p{index}.jpg"), str(photos / f"g{index}.jpg"), "upper_body"))
    weights = PreprocessWeights(**{("densepose" if k == "densepose_model" else k): str(v) for k, v in standins.items()},
                                box_threshold=0.0, offline=True)
    out = tmp_path / "dataset"
    first = _Interrupting(Preprocessor(weights), stop_at=3)
    with pytest.raises(KeyboardInterrupt):
        prepare.prepare_dataset(sources, out, "vitonhd", SIZE, first, test_fraction=0.5, progress=False)
    assert sorted(p.name for p in out.glob("*/image/*.jpg")) == ["00000_00.jpg", "00001_00.jpg"]
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and p.parent.name != out.name}
    assert not list(out.rglob(".*.tmp"))
    second = _Interrupting(first.inner)
    summary = prepare.prepare_dataset(sources, out, "vitonhd", SIZE, second, test_fraction=0.5, progress=False)
    assert second.calls == 2 and len(summary.present) == 2 and len(summary.prepared) == 2
    assert all(p.stat().st_mtime_ns == stamp for p, stamp in stamps.items())  # finished pairs untouched
    assert json.loads((out / "prepare.json").read_text()) == {"layout": "vitonhd", "size": list(SIZE),
                                                              "mask_recipe": "leffa-hd"}
    manifest = prepare.read_manifest(out, registry.get("vitonhd").layout_writer)
    assert {item.mask_recipe for item in manifest} == {"leffa-hd"}
    with pytest.raises(prepare.PrepareInputError, match="prepared with .*128, 96.*now.*64, 48"):
        prepare.prepare_dataset(sources, out, "vitonhd", (64, 48), second, progress=False)
    assert check_data.main([str(out), "--dataset", "vitonhd"]) == 0


def test_missing_weights_stop_before_the_first_photo(standins, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(weights.constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    persons, garments = _photo_folders(tmp_path)
    argv = ["--layout", "dresscode", "--persons", str(persons), "--garments", str(garments),
            "--out", str(tmp_path / "out"), "--no-progress", "--offline"]
    given = {key: path for key, path in standins.items() if key != "densepose_model"}
    assert prepare.main(argv + cli_options(given)) == 2
    error = capsys.readouterr().err
    assert "densepose_r50_fpn_dl.torchscript (DensePose R50-FPN (TorchScript)) is not in the Hugging Face" in error
    assert "huggingface.co/LayerNorm/DensePose-TorchScript-with-hint-image" in error
    assert not list((tmp_path / "out").rglob("*.jpg"))
