"""Mistaken and hostile input (issue 18): one test per case, named by its row of the issue's table, plus the
file-name rule as a property over generated hostile names. Nothing may be written or read outside the folders
given, nothing overwritten, no result silently wrong."""

import errno
import os
import random

import numpy as np
import pytest
import torch
from PIL import Image

from leffa_pl.atomic_write import atomic_write
from leffa_pl.data import check_data, deepfashion, dresscode, synthetic_vton, vitonhd
from leffa_pl.data.files import DataFileError, RequiredFile, check_name, name_problem
from leffa_pl.data.io import probe_file, read_rgb
from leffa_pl.model.checkpoint import CheckpointError, read_state_dict
from leffa_pl.preprocess import prepare
from leffa_pl.preprocess.layouts import VitonHDLayout
from leffa_pl.preprocess.photos import PhotoError, list_photos, load_photo

HOSTILE_NAMES = ["../x.jpg", "../../../outside/x.jpg", "/etc/passwd", "a/b.jpg", "a\\b.jpg", "..", ".",
                 "x\0.jpg", "x\n.jpg", "C:x.jpg", ""]


# ------------------------------------------------------------------------------ the name rule (property)
def _generated_names(count: int, seed: int = 18):
    """Names built from the pieces that escape folders or break paths, mixed with ordinary ones."""
    pieces = ["..", ".", "/", "\\", "\0", "\n", "\t", "C:", "a", "00001_00", ".jpg", " ", "_", "-", "é", "~", "%2e",
              "\u202e", "\x7f", "//", "./", "../"]
    rng = random.Random(seed)
    for _ in range(count):
        yield "".join(rng.choice(pieces) for _ in range(rng.randint(0, 6)))


def test_name_rule_property(tmp_path):
    """Every name either is refused naming the file and line, or joins to a direct child of the folder."""
    accepted = 0
    for name in _generated_names(3000):
        try:
            check_name(name, tmp_path / "pairs.txt", 7)
        except DataFileError as error:
            assert str(error).startswith(f"{tmp_path / 'pairs.txt'}: line 7: name {name!r}")
            continue
        accepted += 1
        joined = os.path.normpath(os.path.join(tmp_path, name))
        assert os.path.dirname(joined) == str(tmp_path) and os.path.basename(joined) == name, name
        assert (tmp_path / name).parent == tmp_path
    assert accepted > 100  # the generator also produces ordinary names
    assert all(name_problem(name) for name in HOSTILE_NAMES)
    assert name_problem("00006_00.jpg") is None and name_problem("a b..c.jpg") is None


# ----------------------------------------------------------------------------------------- row 1
class _NoNetworks:
    """A preprocessor for runs that must stop before the networks are needed."""

    def load(self):
        raise AssertionError("the networks were loaded")

    def annotate(self, image, layout):
        raise AssertionError("a photo was annotated")


MANIFEST_HEADER = "id,split,category,person,garment\n"


@pytest.mark.parametrize("row, problem", [
    ("00000_00,../x,upper_body,p.jpg,g.jpg", "split '../x' not in"),
    ("00000_00/../../../../x,train,upper_body,p.jpg,g.jpg", "contains a path separator"),
    ("..,train,upper_body,p.jpg,g.jpg", "is a reference to a folder"),
    ("7,train,upper_body,p.jpg,g.jpg", "id '7' is not a VITON-HD id"),
    ("00000_00,train,../../x,p.jpg,g.jpg", "category '../../x' not in"),
    ("00000_00,train,upper_body", "expected the columns"),
])
def test_row1_tampered_manifest_is_refused_before_writing(tmp_path, row, problem):
    out = tmp_path / "deep" / "dataset"
    out.mkdir(parents=True)
    (out / prepare.MANIFEST).write_text(MANIFEST_HEADER + row + "\n")
    before = sorted(tmp_path.rglob("*"))
    with pytest.raises(prepare.PrepareInputError, match=rf"prepare-manifest.csv: line 2: .*{problem}"):
        prepare.prepare_dataset([], out, "vitonhd", (64, 48), _NoNetworks(), progress=False)
    assert sorted(tmp_path.rglob("*")) == before  # nothing written, inside or outside


# ----------------------------------------------------------------------------------------- row 11
@pytest.fixture(scope="module")
def vitonhd_root(tmp_path_factory):
    return synthetic_vton.make_vitonhd(tmp_path_factory.mktemp("vitonhd") / "root", n_train=2, n_test=2,
                                       size=(64, 48), seed=3)


@pytest.mark.parametrize("name", ["../../../outside/x.jpg", "/etc/hostname", "x\0.jpg", "sub/00000_00.jpg"])
def test_row11_pair_names_never_leave_the_root(vitonhd_root, tmp_path, capsys, name):
    root = tmp_path / "copy"
    root.mkdir()
    for path in vitonhd_root.iterdir():
        (root / path.name).symlink_to(path)
    (root / "train_pairs.txt").unlink()
    (root / "train_pairs.txt").write_text(f"00000_00.jpg 00000_00.jpg\n{name} {name}\n", encoding="utf-8")
    with pytest.raises(DataFileError, match=r"train_pairs.txt: line 2: name .* refused"):
        vitonhd.read_pairs(root, "train")
    assert check_data.main([str(root), "--dataset", "vitonhd", "--splits", "train"]) == 1
    assert "train_pairs.txt" in capsys.readouterr().out


def test_row11_other_datasets_name_lists(tmp_path):
    (tmp_path / "train_pairs.txt").write_text("048462_0.jpg ../048462_1.jpg\n")
    with pytest.raises(DataFileError, match="line 1: name '../048462_1.jpg'"):
        dresscode.read_pairs(tmp_path, "train", "all")
    (tmp_path / "train.lst").write_text("fashionWOMENok.jpg\n../../x.jpg\n")
    with pytest.raises(DataFileError, match="train.lst: line 2: name '../../x.jpg'"):
        deepfashion.read_split_list(tmp_path / "train.lst")
    (tmp_path / "pairs.csv").write_text("from,to\na.jpg,/abs/b.jpg\n")
    with pytest.raises(DataFileError, match="pairs.csv: line 2: name '/abs/b.jpg'"):
        deepfashion.read_pair_csv(tmp_path / "pairs.csv")


# ----------------------------------------------------------------------------------------- row 5
def test_row5_decompression_bomb_is_a_named_bad_file(tmp_path, monkeypatch):
    path = tmp_path / "bomb.png"
    Image.new("RGB", (40, 40)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 1,600 pixels: over twice the limit
    with pytest.raises(PhotoError, match="bomb.png: unreadable image .*decompression bomb"):
        load_photo(path)
    with pytest.raises(DataFileError, match="bomb.png: unreadable image"):
        read_rgb(path)
    assert "decompression bomb" in probe_file(RequiredFile(path, "rgb"), "open").problem


# ----------------------------------------------------------------------------------------- row 10
def test_row10_16bit_grey_png_keeps_its_values(tmp_path):
    path = tmp_path / "grey16.png"
    values = np.full((40, 30), 30000, np.uint16)
    values[:, :10] = 65535
    Image.fromarray(values).save(path)
    photo = load_photo(path)
    assert photo.image[0, 20].tolist() == [round(30000 / 257)] * 3  # mid grey, not white
    assert photo.image[0, 0].tolist() == [255] * 3
    assert any("16-bit" in note for note in photo.notes)
    assert read_rgb(path)[0, 20].tolist() == [117] * 3


# ----------------------------------------------------------------------------------------- row 12
def test_row12_next_prepare_run_removes_killed_writes(tmp_path):
    out = tmp_path / "dataset"
    stale = [out / "train" / "image" / ".00000_00.jpg.4242.tmp", out / ".prepare-manifest.csv.4243.tmp"]
    for path in stale:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"half")
    kept = out / "train" / "image" / ".notes"  # someone's hidden file, not a temporary
    kept.write_text("mine")
    prepare.prepare_dataset([], out, "vitonhd", (64, 48), _NoNetworks(), progress=False)
    assert not any(path.exists() for path in stale) and kept.exists()


# ----------------------------------------------------------------------------------------- row 6
def test_row6_disk_full_stops_with_summary_and_exit_3(tmp_path, monkeypatch):
    photos = tmp_path / "photos"
    photos.mkdir()
    sources = []
    for index in range(3):
        for kind in ("p", "g"):
            Image.new("RGB", (48, 64), (index * 40, 90, 90)).save(photos / f"{kind}{index}.jpg")
        sources.append(prepare.Source(str(photos / f"p{index}.jpg"), str(photos / f"g{index}.jpg"), "upper_body"))

    class Annotating(_NoNetworks):
        def load(self):
            pass

        def annotate(self, image, layout):
            return None

    def full(self, item, *arguments):
        raise OSError(errno.ENOSPC, "No space left on device", str(self.outputs(item)["labels"]))

    monkeypatch.setattr(VitonHDLayout, "write", full)
    summary = prepare.prepare_dataset(sources, tmp_path / "out", "vitonhd", (64, 48), Annotating(), progress=False)
    assert summary.exit_code() == 3 and not summary.failed  # not "skipped": stopped
    assert summary.stopped.startswith("cannot write ") and "00000_00.png: No space left on device" in summary.stopped
    assert "3 pairs not prepared" in summary.format("VITON-HD", tmp_path / "out")

    monkeypatch.setattr(prepare, "unwritable_reason", lambda folder: "Read-only file system")
    with pytest.raises(prepare.PrepareWriteError, match="Read-only file system"):
        prepare.prepare_dataset(sources, tmp_path / "ro", "vitonhd", (64, 48), _NoNetworks(), progress=False)


# ----------------------------------------------------------------------------------------- row 13
def test_row13_deleted_bad_photo_is_dropped_from_the_manifest(tmp_path):
    out = tmp_path / "dataset"
    out.mkdir()
    (out / prepare.MANIFEST).write_text(MANIFEST_HEADER + f"00000_00,train,upper_body,{tmp_path / 'gone.jpg'},"
                                                          f"{tmp_path / 'gone2.jpg'}\n")
    summary = prepare.prepare_dataset([], out, "vitonhd", (64, 48), _NoNetworks(), progress=False)
    assert summary.exit_code() == 0 and summary.items == []
    assert "gone.jpg no longer exists" in summary.format("VITON-HD", out)
    assert (out / prepare.MANIFEST).read_text() == MANIFEST_HEADER


def test_row13_unused_folder_entries_are_named(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "ok.jpg")
    Image.new("RGB", (8, 8)).save(tmp_path / "anim.gif")
    (tmp_path / "photo.heic").write_bytes(b"....")
    (tmp_path / "folder.jpg").mkdir()
    (tmp_path / "loop.jpg").symlink_to(tmp_path / "loop.jpg")
    photos, ignored = list_photos(tmp_path)
    assert [p.name for p in photos] == ["ok.jpg"]
    text = "\n".join(ignored)
    for name, why in [("anim.gif", "suffix '.gif'"), ("photo.heic", "suffix '.heic'"), ("folder.jpg", "a folder"),
                      ("loop.jpg", "")]:
        assert f"{tmp_path / name}: not used: {why}" in text


def test_row13_an_image_given_as_checkpoint_says_so(tmp_path):
    path = tmp_path / "photo.pth"
    Image.new("RGB", (8, 8)).save(path, format="PNG")
    with pytest.raises(CheckpointError, match=r"photo.pth: not a PyTorch checkpoint .*starts with b'\\x89PNG"):
        read_state_dict(path)
    torch.save({"w": torch.zeros(1)}, tmp_path / "ok.pth")
    assert list(read_state_dict(tmp_path / "ok.pth")) == ["w"]


# ------------------------------------------------------------------------------------ atomic write
def test_atomic_write_fsyncs_file_and_folder(tmp_path, monkeypatch):
    synced = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(os.readlink(f"/proc/self/fd/{fd}")), real(fd)))
    with atomic_write(tmp_path / "a.txt") as temporary:
        temporary.write_text("x")
    assert synced[0].endswith(".tmp") and synced[1] == str(tmp_path)
    assert (tmp_path / "a.txt").read_text() == "x"
