"""DeepFashionDataModule.prepare_data computes the missing DensePose maps (random-weight TorchScript stand-in of
the DensePose R50-FPN export): exactly the missing ones, nothing when none is missing, only on rank 0 under DDP."""

from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from PIL import Image

from leffa_pl.annotators.densepose import TorchScriptDensePose
from leffa_pl.data.check_data import main as check_data
from leffa_pl.data.datamodule import DeepFashionDataModule
from leffa_pl.data.io import read_rgb
from leffa_pl.datasets.deepfashion import reader as deepfashion
from leffa_pl.datasets.deepfashion import synthetic as synthetic_deepfashion
from leffa_pl.datasets.deepfashion.densepose_fill import iuv_map
from leffa_pl.datasets.deepfashion.reader import read_iuv
from leffa_pl.testing.preprocess_standins import densepose_torchscript


@pytest.fixture(scope="module")
def standin(tmp_path_factory) -> Path:
    return densepose_torchscript(tmp_path_factory.mktemp("standin") / "densepose.torchscript")


def _dataset(tmp_path: Path) -> Path:
    # 2 + 1 people, 2 views: 4 train + 2 test pairs; every image is a target
    return synthetic_deepfashion.make_deepfashion(tmp_path / "deepfashion", train_people=2, test_people=1, views=2,
                                                  size=(64, 44), seed=2)


def _maps(root: Path) -> dict[str, tuple[int, bytes]]:
    return {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted((root / "densepose").glob("*.png"))}


def _module(root: Path, standin: Path, **kwargs) -> DeepFashionDataModule:
    settings = {"compute_densepose": True, "densepose_model": str(standin), "densepose_device": "cpu",
                "resolution": (64, 40), "batch_size": 2, "num_workers": 0, "val_size": 1, "augment": False}
    return DeepFashionDataModule(str(root), **settings | kwargs)


def test_prepare_data_fills_exactly_the_missing_maps_then_is_a_no_op(tmp_path, standin, monkeypatch, capsys):
    root = _dataset(tmp_path)
    kept = _maps(root)
    removed = sorted(kept)[::2]
    for name in removed:
        (root / "densepose" / name).unlink()
        del kept[name]
    assert check_data([str(root), "--dataset", "deepfashion", "--level", "open"]) == 1
    assert "compute_densepose: true" in capsys.readouterr().out  # the checker says how to make them

    DeepFashionDataModule(str(root), num_workers=0).prepare_data()  # off by default: nothing computed
    assert sorted(_maps(root)) == sorted(kept)

    data = _module(root, standin)
    data.prepare_data()
    after = _maps(root)
    assert sorted(after) == sorted([*kept, *removed])
    assert {name: after[name] for name in kept} == kept  # the others untouched (same bytes, same mtime)
    network = TorchScriptDensePose(standin)  # the module's encoding of the network's output, read back
    train = set(deepfashion.read_split_list(root / "train.lst"))
    for name in removed:
        image = f"{name[:-4]}.jpg"
        path = deepfashion.image_path(root, "train" if image in train else "test", image, "flat")
        assert np.array_equal(read_iuv(root / "densepose" / name), iuv_map(network(read_rgb(path))))
    data.setup("fit")
    assert len(data.pairs("train")[0]) == 4 and len(data.pairs("test")[0]) == 2  # no pair skipped any more
    assert check_data([str(root), "--dataset", "deepfashion", "--level", "open"]) == 0

    def no_network():
        raise AssertionError("the network was loaded although no map is missing")

    again = _module(root, standin)
    monkeypatch.setattr(again, "densepose_estimator", no_network)
    again.prepare_data()
    assert _maps(root) == after


def test_computed_maps_take_the_chosen_iuv_scaling(tmp_path, standin):
    root = _dataset(tmp_path)
    name = sorted(_maps(root))[0]
    (root / "densepose" / name).unlink()
    _module(root, standin, densepose_iuv_scaling="minmax").prepare_data()
    train = set(deepfashion.read_split_list(root / "train.lst"))
    image = f"{name[:-4]}.jpg"
    photo = read_rgb(deepfashion.image_path(root, "train" if image in train else "test", image, "flat"))
    found = TorchScriptDensePose(standin)(photo)
    written = read_iuv(root / "densepose" / name)
    assert np.array_equal(written, iuv_map(found, "minmax"))
    assert not np.array_equal(written, iuv_map(found, "scale"))
    with pytest.raises(ValueError, match="IUV scaling 'stretch' is not one of"):
        _module(root, standin, densepose_iuv_scaling="stretch", compute_densepose=True).prepare_data()


def test_an_image_with_nobody_gets_no_map_and_its_pairs_stay_skipped(tmp_path, standin):
    root = _dataset(tmp_path)
    name = deepfashion.read_split_list(root / "test.lst")[0]
    Image.new("RGB", (44, 64), (128, 128, 128)).save(root / "test_highres" / name)  # the stand-in finds nobody
    (root / "densepose" / f"{name[:-4]}.png").unlink()
    data = _module(root, standin)
    data.prepare_data()
    assert not (root / "densepose" / f"{name[:-4]}.png").exists()
    assert data.split_pairs("test").skipped_pairs == 1


class RankRecordingDeepFashion(DeepFashionDataModule):
    """Records, per process, which rank ran the DensePose network and how many times."""

    def __init__(self, calls: str, **settings):
        super().__init__(**settings)
        self.calls = Path(calls)

    def densepose_estimator(self):
        network, calls = super().densepose_estimator(), self.calls
        rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else -1

        def recorded(image):
            with open(calls / f"rank{rank}", "a") as handle:
                handle.write("1")
            return network(image)

        return recorded


class OneStep(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(()))

    def training_step(self, batch, batch_idx):
        return (self.weight - batch["person"].mean()) ** 2

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_under_two_process_ddp_only_rank_0_computes_and_writes(tmp_path, standin):
    root = _dataset(tmp_path)
    removed = sorted(_maps(root))[1::2]
    for name in removed:
        (root / "densepose" / name).unlink()
    calls = tmp_path / "calls"
    calls.mkdir()
    data = RankRecordingDeepFashion(str(calls), root=str(root), compute_densepose=True, densepose_model=str(standin),
                                    densepose_device="cpu", resolution=(64, 40), batch_size=1, num_workers=0,
                                    val_size=1, augment=False)
    trainer = pl.Trainer(accelerator="cpu", devices=2, strategy="ddp_spawn", max_steps=1, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         num_sanity_val_steps=0, limit_val_batches=0)
    trainer.fit(OneStep(), data)
    assert {p.name: len(p.read_text()) for p in calls.iterdir()} == {"rank0": len(removed)}
    assert all((root / "densepose" / name).is_file() for name in removed)
