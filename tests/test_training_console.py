"""What a training run prints: the bar names stage and step, and warnings that say nothing are not printed."""

import warnings

from lightning.pytorch.utilities import rank_zero_warn
from lightning.pytorch.utilities._pytree import _tree_flatten
from lightning.pytorch.utilities.warnings import PossibleUserWarning
from test_cli_runs import write_config

from leffa_pl.callbacks.stage_schedule import StageProgressBar
from leffa_pl.cli import build_cli
from leffa_pl.training.leffa_module import filter_lightning_noise


def test_the_bar_shows_stage_and_step_and_epochs_set_no_limit_without_a_warning(tmp_path):
    config = write_config(tmp_path, tmp_path / "run")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cli = build_cli([f"--config={config}", "--trainer.enable_progress_bar=true"], run=False)
    assert not [w for w in caught if "max_epochs" in str(w.message)]
    assert cli.trainer.max_epochs == -1
    bar = cli.trainer.progress_bar_callback
    assert isinstance(bar, StageProgressBar)
    assert bar.get_metrics(cli.trainer, cli.model)["step"] == "0/?"

    config = write_config(tmp_path, tmp_path / "run2")  # the bar off: no bar added (Lightning would refuse one)
    assert build_cli([f"--config={config}"], run=False).trainer.progress_bar_callback is None


def test_lightnings_eval_mode_and_leafspec_warnings_are_filtered():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        filter_lightning_noise()  # what importing leffa_module does (pytest resets filters around each test)
        _tree_flatten({"a": 1})  # Lightning's real LeafSpec use
        rank_zero_warn("Found 1659 module(s) in eval mode at the start of training. This may lead to unexpected "
                       "behavior during training.", category=PossibleUserWarning)  # as the fit loop words it
        warnings.warn("another warning", stacklevel=1)
    assert [str(w.message) for w in caught] == ["another warning"]
