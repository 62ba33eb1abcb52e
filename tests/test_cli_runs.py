"""leffa-pl fit as a user runs it (LightningCLI, YAML config, in this process): run folders, SIGTERM, resume."""

import os
import re
import stat
import subprocess
from pathlib import Path

import pytest
import torch
import yaml

from leffa_pl.cli import main
from leffa_pl.model.leffa_model import LeffaModel
from leffa_pl.training.leffa_module import LeffaModule
from leffa_pl.training.module_settings import FLAT_SETTINGS

REPO_ROOT = Path(__file__).resolve().parents[1]
STAGES = [{"name": "a", "steps": 2, "resolution": [32, 24], "batch_size": 2},
          {"name": "b", "steps": 3, "resolution": [32, 24], "batch_size": 2, "leffa_loss": True}]


def write_config(folder: Path, run_dir: Path, *callbacks: dict) -> Path:
    config = {
        "seed_everything": 0,
        "run": {"dir": str(run_dir)},
        "trainer": {
            "accelerator": "cpu", "devices": 1, "logger": False, "enable_progress_bar": False,
            "enable_model_summary": False, "num_sanity_val_steps": 0, "limit_val_batches": 0,
            "default_root_dir": "${run.dir}",
            "plugins": [{"class_path": "leffa_pl.training.atomic_checkpoint.AtomicCheckpointIO"}],
            "callbacks": [{"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                           "init_args": {"dirpath": "${run.dir}/checkpoints", "save_last": True}},
                          *callbacks]},
        "model": {"learning_rate": 1e-3},
        "data": {"class_path": "leffa_pl.testing.training.RandomTryOnDataModule",
                 "init_args": {"size": 16, "shuffle": True}},
        "stages": {"stages": STAGES},
        "export": {"dirpath": "${run.dir}/export"},
    }
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def losses(path: Path) -> list[tuple[int, float]]:
    return [(int(step), float(loss)) for step, loss in (line.split() for line in path.read_text().splitlines())]


def loss_log(path: Path) -> dict:
    return {"class_path": "leffa_pl.testing.training.LossLog", "init_args": {"path": str(path)}}


def test_sigterm_saves_last_ckpt_exits_143_and_the_resumed_run_reproduces_the_losses(tmp_path):
    (tmp_path / "full").mkdir(), (tmp_path / "killed").mkdir()
    full = write_config(tmp_path / "full", tmp_path / "full" / "run", loss_log(tmp_path / "full.txt"))
    main(["fit", f"--config={full}"])
    killed = write_config(tmp_path / "killed", tmp_path / "killed" / "run", loss_log(tmp_path / "killed.txt"),
                          {"class_path": "leffa_pl.testing.training.SigtermAtStep", "init_args": {"step": 3}})

    with pytest.raises(SystemExit) as stopped:
        main(["fit", f"--config={killed}"])
    assert stopped.value.code == 143
    last = tmp_path / "killed" / "run" / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == 3  # mid-stage b, not at an epoch end
    assert list((tmp_path / "killed" / "run" / "export").iterdir()) == []  # training did not end: no export
    assert [name for name in last.parent.iterdir() if name.name.startswith(".")] == []

    stale = last.parent / ".last.ckpt.999.tmp"  # a checkpoint write a crash interrupted: removed at the start
    stale.write_bytes(b"half a checkpoint")
    resume = write_config(tmp_path / "killed", tmp_path / "killed" / "run", loss_log(tmp_path / "resumed.txt"))
    main(["fit", f"--config={resume}", "--run.resume=true"])  # what make train-* RESUME=1 adds: last.ckpt
    assert losses(tmp_path / "killed.txt") + losses(tmp_path / "resumed.txt") == losses(tmp_path / "full.txt")
    assert [step for step, _ in losses(tmp_path / "full.txt")] == [1, 2, 3, 4, 5]
    assert not stale.exists()


def test_the_make_targets_pass_resume_and_extra_arguments_to_leffa_pl_fit():
    for target, configs in (("train-vton", "configs/data/vitonhd.yaml --config configs/stages/vton_paper.yaml"),
                            ("train-pose", "configs/data/deepfashion.yaml --config configs/stages/pose_paper.yaml")):
        dry = subprocess.run(["make", "-n", target, "DATA=/data/x", "RESUME=1",
                              "ARGS=--trainer.max_steps=7 --run.dir=r"],
                             cwd=REPO_ROOT, capture_output=True, text=True, timeout=60, check=True).stdout
        [command] = [line for line in dry.splitlines() if " -m leffa_pl.cli fit " in line]
        assert f"--config {configs} --data.init_args.root=/data/x " in command
        assert command.endswith(" --run.resume=true --trainer.max_steps=7 --run.dir=r"), command


def refusal(*args: str) -> str:
    """The error leffa-pl fit exits with before training."""
    with pytest.raises(SystemExit) as stopped:
        main(["fit", *args])
    return str(stopped.value.code)


def test_a_used_run_folder_is_refused_unless_resuming_or_overwriting(tmp_path):
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "checkpoints" / "last.ckpt").write_bytes(b"another run's")
    config = write_config(tmp_path, run_dir)
    message = refusal(f"--config={config}")
    assert f"{run_dir}: the run folder already holds a run (checkpoints)" in message
    assert "--ckpt_path=" in message and "--run.overwrite=true" in message


def test_overwrite_empties_the_run_folder_first(tmp_path):
    from leffa_pl.training.run_folder import prepare_run_folder

    (tmp_path / "export").mkdir()
    (tmp_path / "export" / "leffa.pth").write_bytes(b"old")
    (tmp_path / "notes.txt").write_text("old")
    prepare_run_folder(tmp_path, resuming=False, overwrite=True)
    assert list(tmp_path.iterdir()) == []


def test_ckpt_path_that_is_not_a_training_checkpoint_says_what_it_is(tmp_path):
    config = write_config(tmp_path, tmp_path / "run")
    text = tmp_path / "notes.txt"
    text.write_text("not a checkpoint")
    assert "not a checkpoint that torch.load reads" in refusal(f"--config={config}", f"--ckpt_path={text}")
    exported = LeffaModel.tiny().export(tmp_path / "leffa.pth")
    message = refusal(f"--config={config}", f"--ckpt_path={exported}")
    assert f"{exported}: a weights file (flat state dict" in message
    assert f"--model.init_checkpoint={exported}" in message


def test_a_checkpoint_with_a_retired_model_setting_resumes_with_a_warning(tmp_path):
    # Checkpoints written before log_images_every_n_steps left LeffaModule carry it in their hyper_parameters,
    # which LightningCLI applies as model settings on --ckpt_path (it refused them: "does not accept option").
    # Those written up to f8eb75b hold the flat leffa_* / validation_* settings: moved into their sections.
    config = write_config(tmp_path, tmp_path / "run")
    main(["fit", f"--config={config}", "--trainer.max_steps=2"])  # the end of stage a: last.ckpt
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(last, weights_only=True)
    hparams = checkpoint["hyper_parameters"]
    hparams["log_images_every_n_steps"] = 50
    for flat, (section, key) in FLAT_SETTINGS.items():  # as f8eb75b wrote them
        hparams[flat] = hparams[section][key]
    del hparams["leffa_loss"], hparams["validation_sampler"]
    hparams["leffa_weight"], hparams["validation_steps"] = 0.5, 3
    old = tmp_path / "old.ckpt"
    torch.save(checkpoint, old)

    with pytest.warns(UserWarning, match=r"model.log_images_every_n_steps=50 .*retired setting, dropped.*"
                                         r"images.every_n_steps"):
        main(["fit", f"--config={config}", f"--ckpt_path={old}", "--trainer.max_steps=3"])
    resumed = torch.load(last, weights_only=True)
    assert resumed["global_step"] == 3  # resumed at 2, one more step
    assert resumed["hyper_parameters"]["leffa_loss"]["weight"] == 0.5  # the old run's settings, in their sections
    assert resumed["hyper_parameters"]["validation_sampler"]["steps"] == 3
    assert not set(FLAT_SETTINGS) & set(resumed["hyper_parameters"])
    saved = (tmp_path / "run" / "config.yaml").read_text()
    assert "log_images_every_n_steps" not in saved and "leffa_weight" not in saved
    loaded = LeffaModule.load_from_checkpoint(old)  # Lightning drops unknown keys here; the flat ones are moved
    assert loaded.hparams.learning_rate == 1e-3 and loaded.leffa_loss.weight == 0.5
    assert loaded.validation_sampler.num_inference_steps == 3

    hparams["no_such_setting"] = 1  # not retired: unknown, refused before any work
    torch.save(checkpoint, old)
    assert (f"{old}: its hyper_parameters hold model settings that LeffaModule does not take (no_such_setting)"
            in refusal(f"--config={config}", f"--ckpt_path={old}"))


def test_flat_leffa_and_validation_settings_are_refused_naming_their_sections(tmp_path, capsys):
    config = write_config(tmp_path, tmp_path / "run")  # its ${run.dir} makes jsonargparse re-read the config

    def error(*args: str) -> str:
        with pytest.raises(SystemExit) as stopped:
            main(["fit", f"--config={config}", *args])
        assert stopped.value.code == 2  # argparse's: bad arguments
        return capsys.readouterr().err

    message = error("--model.leffa_weight=0.5")
    assert "model.leffa_weight -> model.leffa_loss.weight" in message and "--model.leffa_loss.weight=0.5" in message
    flat = tmp_path / "flat.yaml"
    flat.write_text("model:\n  leffa_tau: 3.0\n  validation_steps: 3\n")
    message = error(f"--config={flat}")
    assert "model.leffa_tau -> model.leffa_loss.tau, model.validation_steps -> model.validation_sampler.steps" \
        in message and "model: {leffa_loss: {tau: 3.0}}" in message
    assert not (tmp_path / "run").exists()  # refused before any work


def test_an_output_folder_that_cannot_be_written_fails_before_training(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    config = write_config(tmp_path, blocker / "run")
    assert f"{blocker / 'run'}: the run folder cannot be written" in refusal(f"--config={config}")


def test_a_lightning_checkpoint_as_init_checkpoint_says_to_use_ckpt_path(tmp_path):
    from leffa_pl.model.checkpoint import CheckpointError

    path = tmp_path / "last.ckpt"
    torch.save({"pytorch-lightning_version": "2.6.6", "global_step": 3,
                "state_dict": {f"model.{k}": v for k, v in LeffaModel.tiny().state_dict().items()}}, path)
    with pytest.raises(CheckpointError, match=f"{path}: a Lightning training checkpoint.*--ckpt_path={path}"):
        LeffaModule(init_checkpoint=str(path))


def test_exported_weights_are_world_readable_like_checkpoints(tmp_path):
    umask = os.umask(0o022)
    os.umask(umask)
    for suffix in (".pth", ".safetensors"):
        path = LeffaModel.tiny().export(tmp_path / f"leffa{suffix}")
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask


def test_a_run_that_does_not_fit_the_disk_is_refused_before_the_model_is_built(tmp_path, monkeypatch):
    config = write_config(tmp_path, tmp_path / "run")
    monkeypatch.setattr("leffa_pl.training.run_folder.free_bytes", lambda folder: 10 * 2**20)  # 10 MiB free
    monkeypatch.setattr("leffa_pl.training.leffa_module.build_model", lambda *args: pytest.fail("model built"))
    message = refusal(f"--config={config}")
    assert re.search(r"run: the run needs up to \d+\.\d GiB on disk \(\d+ checkpoints of .* GiB .*\) and 0\.0 GiB is "
                     r"available .*--run\.ignore_free_space=true", message), message
    assert not (tmp_path / "run" / "checkpoints").exists() or not any((tmp_path / "run" / "checkpoints").iterdir())
