"""The dataset checker (``leffa-pl-check-data``), the data modules' file check, and the readers' errors."""

import json
import shutil

import lightning
import numpy as np
import pytest
import torch
import torch.distributed as dist
from PIL import Image
from subprocess_limits import spawn_with_limit

from leffa_pl.data import check_data
from leffa_pl.data.datamodule import VitonHDDataModule
from leffa_pl.data.files import DataFileError, DatasetFilesError
from leffa_pl.data.io import parsing_palette, read_json, read_label, read_pair_list, read_rgb
from leffa_pl.datasets.dresscode import synthetic as dresscode_synthetic
from leffa_pl.datasets.vitonhd import synthetic as vitonhd_synthetic

SIZE = (64, 48)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    base = tmp_path_factory.mktemp("pristine")
    return (vitonhd_synthetic.make_vitonhd(base / "zalando-hd-resized", n_train=4, n_test=2, size=SIZE),
            dresscode_synthetic.make_dresscode(base / "DressCode", n_train=1, n_test=2, size=SIZE))


def scramble_middle(path):
    """Overwrite the middle third of a file with noise, keeping its header and end (a bit-rotted photo)."""
    data = bytearray(path.read_bytes())
    third = len(data) // 3
    data[third:2 * third] = np.random.default_rng(0).integers(0, 256, third, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))


@pytest.fixture
def broken(pristine, tmp_path):
    """A VITON-HD copy with 2 + 1 deleted files, a truncated JPEG, a garbage PNG, invalid JSON and a photo
    with a corrupt middle."""
    root = tmp_path / "zalando-hd-resized"
    shutil.copytree(pristine[0], root)
    (root / "train/image/00001_00.jpg").unlink()
    (root / "train/image/00002_00.jpg").unlink()
    (root / "test/cloth/00005_00.jpg").unlink()
    cloth = root / "train/cloth/00003_00.jpg"
    cloth.write_bytes(cloth.read_bytes()[:-400])
    (root / "train/image-parse-v3/00000_00.png").write_bytes(b"not a png at all")
    (root / "test/openpose_json/00004_00_keypoints.json").write_text("{\"people\": [")
    scramble_middle(root / "train/cloth/00000_00.jpg")
    return root


def test_intact_datasets_pass(pristine, capsys):
    assert check_data.main([str(pristine[0]), "--dataset", "vitonhd"]) == 0
    out = capsys.readouterr().out
    assert "VITON-HD" in out and ": OK" in out and "pairs" in out
    assert check_data.main([str(pristine[1]), "--dataset", "dresscode", "--category", "dresses"]) == 0


def test_report_lists_every_problem_with_counts_per_folder(broken, capsys):
    assert check_data.main([str(broken), "--dataset", "vitonhd", "--mask-source", "computed"]) == 1
    out = capsys.readouterr().out
    assert "3 missing, 4 unreadable" in out
    assert "  train/image/: 2 missing" in out
    assert "  test/cloth/: 1 missing" in out
    assert "  train/cloth/: 2 unreadable" in out
    assert "  train/image-parse-v3/: 1 unreadable" in out
    assert "  test/openpose_json/: 1 unreadable" in out
    for name in ("train/image/00001_00.jpg", "train/image/00002_00.jpg", "test/cloth/00005_00.jpg",
                 "train/cloth/00003_00.jpg", "train/image-parse-v3/00000_00.png",
                 "test/openpose_json/00004_00_keypoints.json"):
        assert str(broken / name) in out, name
    assert "truncated" in out


def test_levels(broken):
    dm = VitonHDDataModule(str(broken), mask_source="computed")
    splits = ["train", "test_paired", "test_unpaired"]
    exists, opened, decoded = (dm.check_files(splits, level=level) for level in ("exists", "open", "decode"))
    assert len(exists.problems) == 3  # only the deleted files
    # + the garbage PNG, the invalid JSON and the truncated JPEG (no end marker)
    assert len(opened.problems) == 6
    assert len(decoded.problems) == 7  # + the photo with a corrupt middle, found only by decoding it
    assert str(broken / "train/cloth/00000_00.jpg") in decoded.format()


def test_missing_pair_file_and_folder(pristine, tmp_path, capsys):
    root = tmp_path / "copy"
    shutil.copytree(pristine[0], root)
    (root / "test_pairs.txt").unlink()
    assert check_data.main([str(root), "--dataset", "vitonhd", "--level", "exists"]) == 1
    assert f"{root / 'test_pairs.txt'}  (missing)" in capsys.readouterr().out
    assert check_data.main([str(tmp_path / "nowhere"), "--dataset", "vitonhd"]) == 1


def test_data_module_fails_in_setup_with_the_same_report(broken):
    dm = VitonHDDataModule(str(broken), mask_source="computed", num_workers=0, file_check="decode")
    with pytest.raises(DatasetFilesError) as caught:
        dm.setup("fit")
    message = str(caught.value)
    assert "3 missing, 4 unreadable" in message and "train/image/: 2 missing" in message
    assert str(broken / "train/cloth/00003_00.jpg") in message
    # The default level ('open') finds the truncated JPEG by its missing end marker; it does not decode photos.
    with pytest.raises(DatasetFilesError, match="3 missing, 3 unreadable") as caught:
        VitonHDDataModule(str(broken), mask_source="computed", num_workers=0).setup("fit")
    assert f"{broken / 'train/cloth/00003_00.jpg'}  (unreadable: truncated JPEG (no end marker))" in str(caught.value)


def test_corrupt_photo_names_its_file_when_read(pristine, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(pristine[0], root)
    scramble_middle(root / "train/cloth/00003_00.jpg")
    dm = VitonHDDataModule(str(root), resolution=SIZE, num_workers=0, augment=False)
    dm.setup("fit")  # the default level reads only the headers and ends of photos
    data = dm.train_dataloader().dataset
    index = [p.person for p in data.pairs].index("00003_00.jpg")
    with pytest.raises(DataFileError, match=r"train/cloth/00003_00.jpg: unreadable image \(broken data stream"):
        data[index]


def test_readers_name_the_file(tmp_path):
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("a.jpg b.jpg\n\nc.jpg\n")
    with pytest.raises(DataFileError, match=r"pairs.txt: line 3: expected 2 file names"):
        read_pair_list(pairs)
    rgb = tmp_path / "label.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (4, 4, 3), dtype=np.uint8)).save(rgb)
    with pytest.raises(DataFileError, match="label.png: expected a single-channel label map"):
        read_label(rgb)
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(DataFileError, match="bad.json: invalid JSON"):
        read_json(bad)
    with pytest.raises(DataFileError, match="nothing.jpg: file not found"):
        read_rgb(tmp_path / "nothing.jpg")
    palette = tmp_path / "palette.png"
    image = Image.fromarray(np.array([[0, 5], [13, 19]], np.uint8), mode="P")
    image.putpalette(parsing_palette())
    image.save(palette)
    assert read_label(palette).tolist() == [[0, 5], [13, 19]]  # indices, not colours


def test_a_missing_relative_root_says_what_it_is_relative_to(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(NotADirectoryError, match=rf"data/absent: no such VITON-HD dataset folder \(root\) "
                                                 rf"\(relative to the current directory {tmp_path}\)"):
        VitonHDDataModule("data/absent").setup("fit")
    with pytest.raises(NotADirectoryError) as caught:
        VitonHDDataModule(str(tmp_path / "absent")).setup("fit")
    assert "relative to the current directory" not in str(caught.value)
    assert check_data.main(["data/absent", "--dataset", "vitonhd"]) == 1
    assert f"relative to the current directory {tmp_path}" in capsys.readouterr().err


class CountingModule(lightning.LightningModule):
    """Counts its training steps."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(()))
        self.steps = 0

    def training_step(self, batch, batch_idx):
        self.steps += 1
        return self.weight * 0

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_fit_stops_before_the_first_step_on_a_truncated_jpeg(pristine, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(pristine[0], root)
    cloth = root / "train/cloth/00003_00.jpg"
    cloth.write_bytes(cloth.read_bytes()[:-400])
    trainer = lightning.Trainer(max_steps=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                                enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                                default_root_dir=tmp_path)
    data = VitonHDDataModule(str(root), resolution=SIZE, batch_size=1, num_workers=0)  # default file_check
    module = CountingModule()
    with pytest.raises(DatasetFilesError, match=r"train/cloth/00003_00.jpg  \(unreadable: truncated JPEG"):
        trainer.fit(module, datamodule=data)
    assert module.steps == 0


def check_in_rank(rank: int, root: str, store: str, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    dm = VitonHDDataModule(root, mask_source="computed", num_workers=0)
    report = dm.check_files(dm.splits, level="decode")
    try:
        dm.setup("fit")
        raised = False
    except DatasetFilesError:
        raised = True
    with open(f"{out}.{rank}", "w") as handle:
        json.dump({"problems": sorted(str(p.path) for p in report.problems), "pairs": report.pairs,
                   "text": report.format(), "raised": raised}, handle)
    dist.destroy_process_group()


def test_under_ddp_the_ranks_share_the_walk_and_all_get_the_whole_report(broken, tmp_path):
    single = VitonHDDataModule(str(broken), mask_source="computed").check_files(
        ["train", "test_paired", "test_unpaired"], level="decode")
    spawn_with_limit(check_in_rank, (str(broken), str(tmp_path / "store"), str(tmp_path / "report")), 2, 120)
    for rank in (0, 1):
        shared = json.loads((tmp_path / f"report.{rank}").read_text())
        assert shared["problems"] == sorted(str(p.path) for p in single.problems)
        assert shared["pairs"] == single.pairs and "shared by 2 processes" in shared["text"]
        assert shared["raised"]  # every rank raises, so none waits for the others
