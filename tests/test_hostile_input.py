"""Mistaken and hostile input (issue 18): one test per case, named by its row of the issue's table, plus the
file-name rule as a property over generated hostile names. Nothing may be written or read outside the folders
given, nothing overwritten, no result silently wrong."""

import errno
import hashlib
import os
import random
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from leffa_pl.atomic_write import MAX_NAME_BYTES, atomic_write
from leffa_pl.callbacks.export_checkpoint import ExportError, ExportReleasedCheckpoint, export_complete, write_export
from leffa_pl.data import check_data
from leffa_pl.data.datamodule import DeepFashionDataModule, VitonHDDataModule
from leffa_pl.data.files import DataFileError, RequiredFile, check_name, name_problem
from leffa_pl.data.io import probe_file, read_rgb
from leffa_pl.datasets.deepfashion import reader as deepfashion
from leffa_pl.datasets.dresscode import reader as dresscode
from leffa_pl.datasets.vitonhd import reader as vitonhd
from leffa_pl.datasets.vitonhd import synthetic as vitonhd_synthetic
from leffa_pl.datasets.vitonhd.writer import VitonHDLayout
from leffa_pl.model.checkpoint import CheckpointError, read_state_dict
from leffa_pl.model.leffa_model import LeffaModel
from leffa_pl.model.provenance import RECORD_KEY, Provenance, TaskMismatchError
from leffa_pl.preprocess import prepare
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

    def annotate(self, image, layout, mask_recipe=None):
        raise AssertionError("a photo was annotated")


MANIFEST_HEADER = "id,split,category,person,garment,mask_recipe\n"


@pytest.mark.parametrize("row, problem", [
    ("00000_00,../x,upper_body,p.jpg,g.jpg,leffa-hd", "split '../x' not in"),
    ("00000_00/../../../../x,train,upper_body,p.jpg,g.jpg,leffa-hd", "contains a path separator"),
    ("..,train,upper_body,p.jpg,g.jpg,leffa-hd", "is a reference to a folder"),
    ("7,train,upper_body,p.jpg,g.jpg,leffa-hd", "id '7' is not a VITON-HD id"),
    ("00000_00,train,../../x,p.jpg,g.jpg,leffa-hd", "category '../../x' not in"),
    ("00000_00,train,upper_body", "expected the columns"),
    ("00000_00,train,upper_body,p.jpg,g.jpg,../x", "mask recipe '../x' not in"),
])
def test_row1_tampered_manifest_is_refused_before_writing(tmp_path, row, problem):
    out = tmp_path / "deep" / "dataset"
    out.mkdir(parents=True)
    (out / prepare.MANIFEST).write_text(MANIFEST_HEADER + row + "\n")
    before = sorted(tmp_path.rglob("*"))
    with pytest.raises(prepare.PrepareInputError, match=rf"prepare-manifest.csv: line 2: .*{problem}"):
        prepare.prepare_dataset([], out, "vitonhd", (64, 48), _NoNetworks(), progress=False)
    assert sorted(tmp_path.rglob("*")) == before  # nothing written, inside or outside


def test_manifest_of_an_earlier_version_without_mask_recipes_is_refused(tmp_path):
    old_header = "id,split,category,person,garment\n"
    (tmp_path / prepare.MANIFEST).write_text(old_header + "00000_00,train,upper_body,p.jpg,g.jpg\n")
    with pytest.raises(prepare.PrepareInputError, match="no mask_recipe column.*prepare into a new folder"):
        prepare.prepare_dataset([], tmp_path, "vitonhd", (64, 48), _NoNetworks(), progress=False)


def test_photos_inside_the_output_folder_are_refused_before_writing(tmp_path):
    out = tmp_path / "dataset"
    photos = out / "train" / "image"  # a prepared person image 00000_00.jpg would replace this photo
    photos.mkdir(parents=True)
    Image.new("RGB", (48, 64)).save(photos / "00000_00.jpg")
    Image.new("RGB", (48, 64)).save(tmp_path / "shirt.jpg")
    before = sorted(tmp_path.rglob("*"))
    sources = [prepare.Source(str(photos / "00000_00.jpg"), str(tmp_path / "shirt.jpg"), "upper_body")]
    with pytest.raises(prepare.PrepareInputError, match=r"1 photo\(s\) lie inside the output folder .*00000_00.jpg"):
        prepare.prepare_dataset(sources, out, "vitonhd", (64, 48), _NoNetworks(), progress=False)
    assert sorted(tmp_path.rglob("*")) == before


# ----------------------------------------------------------------------------------------- row 11
@pytest.fixture(scope="module")
def vitonhd_root(tmp_path_factory):
    return vitonhd_synthetic.make_vitonhd(tmp_path_factory.mktemp("vitonhd") / "root", n_train=2, n_test=2,
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

        def annotate(self, image, layout, mask_recipe=None):
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
                                                          f"{tmp_path / 'gone2.jpg'},leffa-hd\n")
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


# ----------------------------------------------------------------------------------------- row 2
def test_row2_output_names_are_unique_and_clashes_refused(tmp_path, capsys):
    from leffa_pl.inference.single_image import Job, check_outputs, tryon_main

    people = [Path(name) for name in ("anna.jpg", "anna.png", "a b.jpg", "a_b.jpg")]
    jobs = [Job(person, Path("shirt.jpg")) for person in people]
    check_outputs(jobs)
    assert len({job.output_name for job in jobs}) == 4  # 4 people, 4 images
    assert jobs[0].output_name == "shirt.jpg__to__anna.jpg.png"

    persons = tmp_path / "persons"
    persons.mkdir()
    for name in ("Anna.jpg", "anna.jpg"):  # distinct on Linux, one file on a case-insensitive file system
        Image.new("RGB", (48, 64)).save(persons / name)
    Image.new("RGB", (48, 64)).save(tmp_path / "shirt.jpg")
    argv = ["--person", str(persons), "--garment", str(tmp_path / "shirt.jpg"), "--random-weights",
            "--out", str(tmp_path / "out"), "--resolution", "64x48"]
    assert tryon_main(argv) == 2
    assert "would both be written to shirt.jpg__to__anna.jpg.png" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # refused before any work


def test_row2_output_names_too_long_for_the_file_system_are_refused_before_work(tmp_path):
    from leffa_pl.inference.single_image import Job, check_outputs

    garment, person = Path("g" * 120 + ".jpg"), Path("p" * 120 + ".jpg")  # each fine alone, 258 bytes together
    with pytest.raises(PhotoError, match=rf"would be 258 bytes, over the {MAX_NAME_BYTES} .*shorten one"):
        check_outputs([Job(person, garment)])
    longest = Job(Path("p" * 110 + ".jpg"), Path("g" * (MAX_NAME_BYTES - 110 - 4 - 14) + ".jpg"))
    check_outputs([longest])
    with atomic_write(tmp_path / longest.output_name) as temporary:  # its temporary still fits the limit
        temporary.write_bytes(b"x")
    assert (tmp_path / longest.output_name).read_bytes() == b"x"


# ----------------------------------------------------------------------------------------- row 9
@pytest.mark.parametrize("arguments, code, message", [
    (["--steps", "0"], 2, "--steps must be an integer >= 1, got 0"),
    (["--steps", "-3"], 2, "--steps must be an integer >= 1"),
    (["--guidance-scale", "-5"], 2, "--guidance-scale must be a finite number >= 0"),
    (["--guidance-scale", "nan"], 2, "--guidance-scale nan: expected a finite number"),
    (["--resolution", "60x44"], 2, "--resolution 60x44: height and width must be multiples of 8"),
    (["--no-checkpoint"], 2, "no --checkpoint: give the trained weights (or --random-weights"),
    (["--out-is-a-file"], 3, "the output folder cannot be written"),
])
def test_row9_tryon_settings_checked_before_work(tmp_path, capsys, monkeypatch, arguments, code, message):
    from leffa_pl.inference import single_image

    Image.new("RGB", (48, 64)).save(tmp_path / "anna.jpg")
    monkeypatch.setattr(single_image, "Preprocessor", lambda *a, **k: pytest.fail("got past the checks"))
    argv = ["--person", str(tmp_path / "anna.jpg"), "--garment", str(tmp_path / "anna.jpg"),
            "--out", str(tmp_path / "out"), "--device", "cpu"]
    if arguments == ["--out-is-a-file"]:
        (tmp_path / "file").write_text("")
        argv += ["--out", str(tmp_path / "file"), "--random-weights"]
    elif arguments != ["--no-checkpoint"]:
        argv += ["--random-weights", *arguments]
    assert single_image.tryon_main(argv) == code
    assert message in capsys.readouterr().err


def test_row9_evaluate_checks_ranges_before_loading(tmp_path, capsys):
    from leffa_pl.evaluation import evaluate

    code = evaluate.main(["--dataset", "vitonhd", "--data", str(tmp_path), "--out", str(tmp_path / "out"),
                          "--steps", "0", "--batch-size", "0"])
    assert code == 2
    error = capsys.readouterr().err
    assert "steps (num_inference_steps) must be an integer >= 1, got 0" in error
    assert "--batch-size 0: must be >= 1" in error


def test_row9_sampler_settings_ranges():
    from leffa_pl.model.sampler import SamplerSettings

    for bad in ({"num_inference_steps": 0}, {"num_inference_steps": 2.5}, {"guidance_scale": float("inf")},
                {"guidance_scale": -1.0}, {"scheduler": "euler"}):
        with pytest.raises(ValueError):
            SamplerSettings(**bad)


# ----------------------------------------------------------------------------------------- row 13
def test_row13_a_1x1_photo_is_too_small_not_personless(tmp_path):
    from leffa_pl.preprocess.photos import check_size

    Image.new("RGB", (1, 1)).save(tmp_path / "dot.png")
    with pytest.raises(PhotoError, match="dot.png: too small: 1x1 px, at least 16x12 for 64x48"):
        check_size(load_photo(tmp_path / "dot.png"), (64, 48))


# ----------------------------------------------------------------------------------------- row 3
POSE = Provenance("pose", "leffa_pl.data.datamodule.DeepFashionDataModule")
TRYON = Provenance("tryon", "leffa_pl.data.datamodule.VitonHDDataModule")


@pytest.fixture(scope="module")
def tiny_weights():
    return LeffaModel.tiny().state_dict()


def test_row3_exports_and_checkpoints_of_the_other_task_are_refused(tmp_path, tiny_weights):
    from leffa_pl.model.loading import load_model

    write_export(tiny_weights, tmp_path / "export", (".pth", ".safetensors"), POSE)
    lightning = tmp_path / "pose.ckpt"
    torch.save({"pytorch-lightning_version": "2", "global_step": 5, RECORD_KEY: POSE.as_dict(),
                "state_dict": {f"model.{k}": v for k, v in tiny_weights.items()}}, lightning)
    for path in (tmp_path / "export" / "leffa.safetensors", tmp_path / "export" / "leffa.pth", lightning):
        with pytest.raises(TaskMismatchError, match=rf"{path.name}: trained for pose transfer \(DeepFashionDataModule"
                                                    r"\), used here for virtual try-on"):
            load_model(path, task="tryon")
        assert "trained for pose transfer" in load_model(path, task="pose")[1]
        assert "trained for pose transfer" in load_model(path, task="tryon", allow_other_task=True)[1]


def test_row3_resume_with_another_data_module_is_refused(tmp_path):
    from leffa_pl.training.leffa_module import LeffaModule
    from leffa_pl.training.run_folder import RunFolderError, check_resume_checkpoint

    path = tmp_path / "last.ckpt"
    torch.save({"pytorch-lightning_version": "2", "state_dict": {}, "hyper_parameters": {},
                RECORD_KEY: TRYON.as_dict()}, path)
    check_resume_checkpoint(path, [], TRYON.data_module)
    with pytest.raises(RunFolderError, match="trained on leffa_pl.data.datamodule.VitonHDDataModule \\(virtual try-on"
                                             "\\), resumed here with leffa_pl.data.datamodule.DeepFashionDataModule"):
        check_resume_checkpoint(path, [], POSE.data_module)

    module = LeffaModule()  # and what a training checkpoint records
    module._trainer = SimpleNamespace(datamodule=DeepFashionDataModule(root=str(tmp_path)))
    checkpoint = {}
    module.on_save_checkpoint(checkpoint)
    assert checkpoint[RECORD_KEY] == POSE.as_dict()


def test_row3_training_from_the_other_tasks_weights_is_refused(tmp_path, tiny_weights):
    from leffa_pl.training.leffa_module import LeffaModule

    write_export(tiny_weights, tmp_path / "export", (".safetensors",), POSE)
    weights = str(tmp_path / "export" / "leffa.safetensors")
    for allow in (False, True):
        module = LeffaModule(init_checkpoint=weights, allow_other_task=allow)
        module._trainer = SimpleNamespace(datamodule=VitonHDDataModule(root=str(tmp_path)))
        if allow:
            module.setup("fit")
        else:
            with pytest.raises(TaskMismatchError, match="--model.allow_other_task=true to use it anyway"):
                module.setup("fit")


# ----------------------------------------------------------------------------------------- row 7
def test_row7_export_is_all_or_nothing_and_a_finished_resume_redoes_it(tmp_path, tiny_weights, monkeypatch):
    from leffa_pl.callbacks import export_checkpoint

    folder = tmp_path / "export"
    real = export_checkpoint.save_state_dict

    def disk_full_on_safetensors(state, target, suffix, metadata=None):
        if suffix == ".safetensors":
            raise OSError(errno.ENOSPC, "No space left on device")
        real(state, target, suffix, metadata)

    monkeypatch.setattr(export_checkpoint, "save_state_dict", disk_full_on_safetensors)
    with pytest.raises(ExportError, match="export/leffa.safetensors: the export could not be written"):
        write_export(tiny_weights, folder, (".pth", ".safetensors"), TRYON)
    assert list(folder.iterdir()) == []  # neither file, no temporaries
    monkeypatch.setattr(export_checkpoint, "save_state_dict", real)

    # A resumed run that had finished: no training, so only on_fit_end runs; it exports what is missing.
    callback = ExportReleasedCheckpoint(str(folder))
    strategy = SimpleNamespace(broadcast=lambda value: value,
                               lightning_module_state_dict=lambda: {f"model.{k}": v for k, v in tiny_weights.items()})
    trainer = SimpleNamespace(strategy=strategy, is_global_zero=True, fit_loop=SimpleNamespace(done=True),
                              datamodule=None)
    module = SimpleNamespace(model=LeffaModel.tiny())  # no LoRA
    callback.on_fit_end(trainer, module)
    assert export_complete(folder, callback.formats)
    stamp = (folder / "leffa.pth").stat().st_mtime_ns
    callback.on_fit_end(trainer, module)  # complete: not redone
    assert (folder / "leffa.pth").stat().st_mtime_ns == stamp


# ----------------------------------------------------------------------------------------- row 8
@pytest.mark.parametrize("setting, value, message", [
    ("leffa_loss.weight", -1.0, "model.leffa_loss.weight=-1.0: must be a finite number >= 0"),
    ("leffa_loss.theta_timestep", -1, r"model.leffa_loss.theta_timestep=-1: must be in \(0, 1000\]"),
    ("leffa_loss.theta_timestep", 5000, r"model.leffa_loss.theta_timestep=5000: must be in \(0, 1000\]"),
    ("leffa_loss.theta_resolution", 0.0, r"model.leffa_loss.theta_resolution=0.0: must be in \(0, 1\]"),
    ("leffa_loss.tau", float("nan"), "model.leffa_loss.tau=nan: must be a finite number > 0"),
    ("validation_sampler.steps", 0, "model.validation_sampler: steps .*must be an integer >= 1"),
    ("learning_rate", -1e-5, "model.learning_rate=-1e-05: must be a finite number >= 0"),
    ("reference_dropout", 1.5, r"model.reference_dropout=1.5: must be a finite number in \[0, 1\]"),
])
def test_row8_training_settings_out_of_range_fail_at_construction(setting, value, message):
    from leffa_pl.training.leffa_module import LeffaModule

    section, _, key = setting.rpartition(".")  # a config section arrives as a mapping from a checkpoint
    with pytest.raises(ValueError, match=message):
        LeffaModule(**({section: {key: value}} if section else {key: value}))


def test_row8_leffa_settings_without_a_leffa_stage_warn():
    from leffa_pl.callbacks.stage_schedule import Stage, StageSchedule
    from leffa_pl.losses.leffa_loss import LeffaLossSettings
    from leffa_pl.training.leffa_module import LeffaModule

    module = LeffaModule(leffa_loss=LeffaLossSettings(weight=0.5, tau=3.0))
    assert module.leffa_settings_changed() == ["model.leffa_loss.tau=3.0", "model.leffa_loss.weight=0.5"]
    schedule = StageSchedule([Stage("plain", 2, (64, 48), 1)])
    with pytest.warns(UserWarning, match=r"model.leffa_loss.tau=3.0, model.leffa_loss.weight=0.5: no effect, no "
                                         "stage trains with the Leffa loss"):
        schedule.warn_unused_leffa_settings(module)


# ------------------------------------------------------------------------------------------ weights
def test_downloaded_weights_are_checked_against_the_recorded_sha256(tmp_path, caplog):
    from leffa_pl.annotators import weight_files as weights

    path = tmp_path / "parsing.onnx"
    path.write_bytes(b"weights")
    digest = hashlib.sha256(b"weights").hexdigest()
    good = weights.WeightFile("org/repo", "parsing.onnx", "a parser", revision="0" * 40, sha256=digest)
    assert weights.verified(good, path) == path
    with pytest.raises(weights.WeightsChecksumError, match=f"parsing.onnx: SHA-256 {digest}, expected f{{63}}"):
        weights.verified(weights.WeightFile("org/repo", "parsing.onnx", "a parser", sha256="f" * 64), path)
    weights.verified(weights.WeightFile("org/repo", "parsing.onnx", "a parser"), path)
    assert f"not verified; its SHA-256 is {digest}" in caplog.text


def test_default_weights_are_pinned_where_the_hub_ids_are_known(tmp_path):
    from leffa_pl.annotators import weight_files as weights

    assert all(len(spec.sha256 or "") == 64 for spec in (weights.SCHP_ATR, weights.SCHP_LIP, weights.DENSEPOSE_R50))
    assert weights.SCHP_ATR.revision == weights.SCHP_LIP.revision == weights.LEFFA_WEIGHTS_REVISION
    assert len(weights.LEFFA_WEIGHTS_REVISION) == 40 and len(weights.PERSON_DETECTOR_REVISION) == 40
    hub = weights.pretrained_source(None, weights.PERSON_DETECTOR, "detector", True, weights.PERSON_DETECTOR_REVISION)
    assert hub == (weights.PERSON_DETECTOR, True, weights.PERSON_DETECTOR_REVISION)
    assert weights.pretrained_source(tmp_path, weights.VITPOSE, "pose", False) == (str(tmp_path), True, None)


# ----------------------------------------------------------------------------------------- row 4
def _images(folder: Path, names, size=(64, 48)):
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        Image.new("RGB", (size[1], size[0]), (90, 90, 90)).save(folder / name)


def test_row4_score_refuses_wrong_split_double_targets_and_stretching_and_names_the_uncovered(tmp_path, caplog):
    from leffa_pl.evaluation.score import ScoreInputError, match_ground_truth, score_folder

    truth = tmp_path / "truth"
    _images(truth, [f"{index:05d}_00.jpg" for index in range(8)])
    unpaired = tmp_path / "unpaired"
    _images(unpaired, [f"{(index + 1) % 8:05d}_00__to__{index:05d}_00.png" for index in range(8)])
    (unpaired / "prediction.json").write_text('{"split": "test_unpaired"}')
    with pytest.raises(ScoreInputError, match="generated from the test_unpaired split .* the vton-paired protocol "
                                              "scores the test_paired split"):
        score_folder(unpaired, "vton-paired", truth, write=False)

    doubled = tmp_path / "doubled"
    _images(doubled, [f"{index:05d}_00__to__{index:05d}_00.png" for index in range(8)] + ["x__to__00003_00.png"])
    with pytest.raises(ScoreInputError, match="1 ground truths have more than one generated image .*00003_00: "
                                              "00003_00__to__00003_00.png, x__to__00003_00.png"):
        score_folder(doubled, "vton-paired", truth, write=False)

    wide = tmp_path / "wide"
    _images(wide, ["00001_00.jpg"], size=(64, 64))
    _images(tmp_path / "square", ["00001_00__to__00001_00.png"])
    with pytest.raises(ScoreInputError, match="another aspect ratio than the generated 64x48 .*00001_00.jpg 64x64"):
        score_folder(tmp_path / "square", "vton-paired", wide, write=False)

    half = sorted(doubled.glob("0000[0-3]*.png"))
    targets, uncovered = match_ground_truth(half, truth, one_image_per_target=True)
    assert len(targets) == 4 and uncovered == [f"{index:05d}_00.jpg" for index in range(4, 8)]
