"""configs/trainer/: cpu_demo, gpu and gpu_fsdp layer over base.yaml; the make targets and the planner put it first,
and the planner reads the configuration through leffa-pl's own parser."""

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from leffa_pl.callbacks.checkpoints import RetainedCheckpoints
from leffa_pl.callbacks.ema import LeffaEMA
from leffa_pl.cli import main
from leffa_pl.config import TRAINER_BASE, ConfigError, callbacks_of, read_config
from leffa_pl.planning.plan import read_setup

REPO_ROOT = Path(__file__).resolve().parents[1]
TRAINER = REPO_ROOT / "configs" / "trainer"
DEMO_STAGES = "configs/stages/vton_demo.yaml"


def test_gpu_fsdp_restates_base_yaml_s_callbacks_as_they_are():
    # a list replaces the one before it whole: gpu_fsdp.yaml drops gpu.yaml's LeffaEMA by giving base's again
    base, fsdp = (yaml.safe_load((TRAINER / name).read_text())["trainer"]["callbacks"]
                  for name in ("base.yaml", "gpu_fsdp.yaml"))
    assert fsdp == base


@pytest.mark.parametrize(("trainer", "every", "ema"), [("cpu_demo", 8, False), ("gpu", 2000, True)])
def test_each_trainer_config_over_base_checkpoints_at_its_interval(trainer, every, ema):
    config = read_config([TRAINER_BASE, f"configs/trainer/{trainer}.yaml", DEMO_STAGES]).as_dict()
    [checkpoints] = callbacks_of(config, RetainedCheckpoints)
    assert checkpoints == {"dirpath": f"{config['run']['dir']}/checkpoints", "every_n_train_steps": every, "keep": 2}
    assert bool(callbacks_of(config, LeffaEMA)) is ema
    assert config["trainer"]["logger"]["init_args"]["save_dir"] == config["run"]["dir"]
    moved = read_config([TRAINER_BASE, f"configs/trainer/{trainer}.yaml", DEMO_STAGES],
                        ["--run.dir=elsewhere", "--run.checkpoint_every_n_steps=3"]).as_dict()
    assert callbacks_of(moved, RetainedCheckpoints) == [{"dirpath": "elsewhere/checkpoints", "every_n_train_steps": 3,
                                                         "keep": 2}]


@pytest.mark.parametrize("trainer", ["cpu_demo", "gpu", "gpu_fsdp"])
def test_a_trainer_config_without_base_yaml_first_is_refused_naming_the_fix(trainer):
    config = f"configs/trainer/{trainer}.yaml"
    with pytest.raises(ConfigError, match=f"{config} layers over configs/trainer/base.yaml .* give --config "
                                          "configs/trainer/base.yaml before it"):
        read_config([config, TRAINER_BASE, DEMO_STAGES])
    with pytest.raises(SystemExit, match=f"{config} layers over configs/trainer/base.yaml"):
        main(["fit", f"--config={config}", f"--config={DEMO_STAGES}"])


def test_the_make_targets_layer_the_trainer_configs_over_base_yaml():
    base = "--config configs/trainer/base.yaml --config configs/trainer"
    for target, variables, expected in (
            ("train-vton", [], f"{base}/cpu_demo.yaml --config configs/data/vitonhd_synthetic.yaml"),
            ("train-pose", [], f"{base}/cpu_demo.yaml --config configs/data/deepfashion_synthetic.yaml"),
            ("train-pose", ["DATA=/d", "TRAINER=configs/trainer/gpu.yaml configs/trainer/gpu_fsdp.yaml"],
             f"{base}/gpu.yaml --config configs/trainer/gpu_fsdp.yaml --config configs/data/deepfashion.yaml"),
            ("plan", ["DEVICES=8"], "--trainer configs/trainer/base.yaml configs/trainer/gpu.yaml")):
        dry = subprocess.run(["make", "-n", target, *variables], cwd=REPO_ROOT, capture_output=True, text=True,
                             timeout=60, check=True).stdout.replace("\\\n", " ")
        commands = [line for line in dry.splitlines() if re.search(r" -m leffa_pl\.(cli|planning)", line)]
        assert commands and all(expected in " ".join(command.split()) for command in commands), (target, commands)


def test_the_planner_reads_the_strategy_and_callbacks_the_parser_resolves(tmp_path):
    layered = [TRAINER_BASE, TRAINER / "gpu.yaml", TRAINER / "gpu_fsdp.yaml"]
    assert read_setup(layered, devices=4).devices == 4  # as --trainer.devices=4
    offload = tmp_path / "offload.yaml"  # Lightning's registry name for FSDP, over gpu.yaml's LeffaEMA
    offload.write_text("trainer: {strategy: fsdp_cpu_offload}\n")
    with pytest.raises(SystemExit, match="LeffaEMA refuses FSDP"):
        read_setup([*layered[:2], offload])
    appended = tmp_path / "ema.yaml"  # an EMA callback appended over gpu_fsdp.yaml's list
    appended.write_text("trainer:\n  callbacks+:\n    - class_path: lightning.pytorch.callbacks.EMAWeightAveraging\n")
    with pytest.raises(SystemExit, match="LeffaEMA refuses FSDP"):
        read_setup([*layered, appended])
