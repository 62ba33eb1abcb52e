import json
from pathlib import Path

import numpy as np
import pytest
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from metrics_support import DEEPFASHION_NAMES, TinyFeatures, backbone_file, forbid_network, textured_images, write_image
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from leffa_pl.datasets.registry import protocols
from leffa_pl.evaluation.report import LITERATURE_COLUMNS, ScoreResult, log_results, markdown_report
from leffa_pl.evaluation.score import ScoreInputError, ScoreOptions, main, score_folder

HIGHRES = (110, 75)  # DeepFashion img_highres is 1101x750 (H x W); same aspect, smaller
GENERATED = (80, 55)  # 256x176 aspect; large enough for the 51-pixel SSIM window


@pytest.fixture(autouse=True)
def no_network(monkeypatch, tmp_path):
    forbid_network(monkeypatch, tmp_path)


@pytest.fixture(scope="module")
def squeeze_weights(tmp_path_factory):
    return backbone_file(tmp_path_factory.mktemp("weights"), "squeezenet1_1")[0]


@pytest.fixture
def deepfashion(tmp_path):
    """Test images (ground truth) and training images with flattened DeepFashion names, a train.lst, and
    generated images named <from>__to__<to>.png; one target appears in two pairs, as in the test pairs."""
    rng = np.random.default_rng(0)
    root = tmp_path / "deepfashion"
    test_names, train_names = DEEPFASHION_NAMES[:4], DEEPFASHION_NAMES[4:]
    for name, image in zip(test_names, textured_images(rng, 4, *HIGHRES)):
        write_image(root / "test_highres" / name, image)
    for name, image in zip(train_names + ["fashionMENDenimid0000008001_9unlisted.jpg"],
                           textured_images(rng, 4, *HIGHRES)):
        write_image(root / "train_highres" / name, image)
    (root / "train.lst").write_text("\n".join(train_names) + "\n")
    pairs = [(0, 1), (1, 0), (2, 3), (3, 2), (0, 2)]  # target 2 twice
    generated = root / "generated"
    for (source, target), image in zip(pairs, textured_images(rng, len(pairs), *GENERATED)):
        name = f"{Path(test_names[source]).stem}__to__{Path(test_names[target]).stem}.png"
        write_image(generated / name, image)
    return root


def options(tmp_path, weights, **overrides) -> ScoreOptions:
    settings = dict(batch_size=2, cache_dir=tmp_path / "cache", allow_download=False, lpips_net="squeeze",
                    lpips_weights=weights, fid_extractor_module=TinyFeatures())
    settings.update(overrides)
    return ScoreOptions(**settings)


def test_deepfashion_folder_is_scored_with_a_report_beside_the_images(tmp_path, deepfashion, squeeze_weights):
    result = score_folder(deepfashion / "generated", "deepfashion", deepfashion / "test_highres",
                          deepfashion / "train_highres", deepfashion / "train.lst",
                          options=options(tmp_path, squeeze_weights))

    stored = json.loads((deepfashion / "generated" / "metrics.json").read_text())
    assert stored["protocol"] == "deepfashion" and stored["resolution"] == list(GENERATED)
    assert (stored["n_generated"], stored["n_paired"], stored["n_real"]) == (5, 5, 3)
    assert set(stored["values"]) == {"fid", "ssim_gaussian", "ssim_uniform51", "lpips", "psnr"}
    assert stored["not_computed"] == {}
    cfld = next(row for row in stored["literature"] if row["method"] == "CFLD" and row["resolution"] == "256x176")
    assert cfld["values"] == {"fid": 6.80, "ssim": 0.738, "lpips": 0.152, "psnr": 18.2}
    assert cfld["evaluator"].startswith("YanzuoLu/CFLD models/metrics.py")
    assert cfld["metrics"] == {"fid": "fid", "lpips": "lpips", "psnr": "psnr"}
    report = (deepfashion / "generated" / "metrics.md").read_text()
    assert "resolution 80x55 (H x W). n = 5 generated images" in report
    assert "| Leffa | DeepFashion | 256x176 | 5.71 | 0.732 | 0.114 |  |" in report

    # the ground truth was resized to the generated resolution with PIL bicubic
    errors = []
    for path in sorted((deepfashion / "generated").glob("*.png")):
        target = Image.open(deepfashion / "test_highres" / (path.stem.split("__to__")[1] + ".jpg")).convert("RGB")
        target = np.asarray(target.resize(GENERATED[::-1], Image.Resampling.BICUBIC)) / 255.0
        errors.append(((np.asarray(Image.open(path)) / 255.0 - target) ** 2).mean())
    assert result.values["psnr"] == pytest.approx(np.mean(10 * np.log10(1 / np.array(errors))), abs=1e-5)


def test_generated_images_without_ground_truth_are_all_listed(tmp_path, deepfashion, squeeze_weights):
    for stem in ("fashionWOMENSkirtsid0000111101_1front__to__missing_one", "orphan"):
        write_image(deepfashion / "generated" / f"{stem}.png", np.zeros((3, *GENERATED), np.uint8))
    with pytest.raises(ScoreInputError) as error:
        score_folder(deepfashion / "generated", "deepfashion", deepfashion / "test_highres",
                     options=options(tmp_path, squeeze_weights))
    message = str(error.value)
    assert "2 of 7 generated images have no ground truth" in message
    assert "(id missing_one)" in message and "orphan.png (id orphan)" in message


def test_bad_folders_are_reported_before_any_work(tmp_path, deepfashion, squeeze_weights):
    with pytest.raises(ScoreInputError, match="nowhere: no such folder"):
        score_folder(tmp_path / "nowhere", "deepfashion", deepfashion / "test_highres")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ScoreInputError, match="empty: no generated PNG images"):
        score_folder(tmp_path / "empty", "deepfashion", deepfashion / "test_highres")
    with pytest.raises(ScoreInputError, match="needs the ground-truth folder"):
        score_folder(deepfashion / "generated", "deepfashion")
    (deepfashion / "train.lst").write_text("fashionMENTees_Tanksid0000999999_1front.jpg\n")
    with pytest.raises(ScoreInputError, match="1 of 1 listed images are not in .*Tanksid0000999999"):
        score_folder(deepfashion / "generated", "deepfashion", deepfashion / "test_highres",
                     deepfashion / "train_highres", deepfashion / "train.lst")
    (deepfashion / "test_highres" / DEEPFASHION_NAMES[0]).write_bytes(b"truncated")
    with pytest.raises(ScoreInputError, match=f"{DEEPFASHION_NAMES[0]}: not a readable image"):
        score_folder(deepfashion / "generated", "deepfashion", deepfashion / "test_highres")
    write_image(deepfashion / "generated" / "odd.png", np.zeros((3, 64, 64), np.uint8))
    with pytest.raises(ScoreInputError, match="generated images differ in size .*64x64: 1 files, e.g. odd.png"):
        score_folder(deepfashion / "generated", "vton-unpaired", real_dir=deepfashion / "train_highres")


def test_dresscode_unpaired_scores_fid_kid_against_the_person_images_only(tmp_path, squeeze_weights):
    rng = np.random.default_rng(1)
    images = tmp_path / "dresscode" / "upper_body" / "images"
    for index, image in enumerate(textured_images(rng, 8, 64, 48)):
        write_image(images / f"{48462 + index // 2:06d}_{index % 2}.jpg", image)  # _0 person, _1 garment
    for index, image in enumerate(textured_images(rng, 3, 64, 48)):
        write_image(tmp_path / "generated" / f"{48462 + index:06d}_0.png", image)

    result = score_folder(tmp_path / "generated", "vton-unpaired", real_dir=images, real_pattern="*_0.jpg",
                          options=options(tmp_path, squeeze_weights))
    assert set(result.values) == {"fid", "kid", "kid_std"}
    assert (result.n_generated, result.n_paired, result.n_real) == (3, 0, 4)
    assert result.details["kid"] == "100 subsets of 3 images, seed 0"


def test_command_line_scores_offline_and_reports_errors(tmp_path, deepfashion, squeeze_weights, capsys):
    assert main([str(tmp_path / "nowhere"), "--protocol", "deepfashion"]) == 2
    assert "leffa-pl-score: error: " in capsys.readouterr().err

    code = main([str(deepfashion / "generated"), "--protocol", "deepfashion",
                 "--ground-truth", str(deepfashion / "test_highres"), "--real", str(deepfashion / "train_highres"),
                 "--real-list", str(deepfashion / "train.lst"), "--offline", "--lpips-net", "squeeze",
                 "--lpips-weights", str(squeeze_weights), "--num-workers", "0", "--device", "cpu",
                 "--cache-dir", str(tmp_path / "cache")])
    assert code == 0
    printed = capsys.readouterr().out
    assert "| FID ↓ | not computed |" in printed and "metrics.json" in printed
    stored = json.loads((deepfashion / "generated" / "metrics.json").read_text())
    assert set(stored["not_computed"]) == {"fid"}
    assert "torchvision IMAGENET1K_V1" in stored["not_computed"]["fid"]
    assert set(stored["values"]) == {"ssim_gaussian", "ssim_uniform51", "lpips", "psnr"}


def test_results_are_logged_to_tensorboard(tmp_path):
    result = ScoreResult("deepfashion", (256, 176), 8570, 8570, 48674,
                         {"fid": 6.5, "ssim_gaussian": 0.73, "psnr": 18.25}, {"lpips": "weights missing"})
    logger = TensorBoardLogger(tmp_path, name="run")
    log_results(result, logger, step=300)
    logger.experiment.flush()

    events = EventAccumulator(logger.log_dir)
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("eval/psnr")] == [(300, pytest.approx(18.25))]
    assert [e.value for e in events.Scalars("eval/n_generated")] == [8570]
    assert "eval/lpips" not in events.Tags()["scalars"]
    text = [tag for tag in events.Tags()["tensors"] if tag.startswith("eval/deepfashion")]
    assert text and b"weights missing" in events.Tensors(text[0])[0].tensor_proto.string_val[0]
    torch.testing.assert_close(torch.tensor(events.Scalars("eval/fid")[0].value), torch.tensor(6.5))


def test_a_small_run_report_states_its_own_counts_not_the_full_splits_as_its_own():
    report = markdown_report(ScoreResult("deepfashion", (128, 88), 18, 18, 36, {"psnr": 12.0}, {}))
    assert "n = 18 generated images, all scored; 18 paired with ground truth; FID/KID real set: 36 images" in report
    # the released split's sizes appear only as such, never as what this run scored
    assert "the 8,570 test pairs" not in report and "train.lst, 48,674" not in report
    assert "8,570 in the released split" in report and "48,674 in the released split" in report


def test_every_published_number_names_its_evaluator_and_the_metric_computed_the_same_way():
    columns = {key for key, _ in LITERATURE_COLUMNS}
    for protocol in protocols().values():
        for row in protocol.literature:
            assert row.evaluator and set(row.values) <= columns and set(row.metrics) <= columns
            assert set(row.metrics.values()) <= set(protocol.metrics)  # computed under this very protocol
            if set(row.values) - set(row.metrics):
                assert row.note, f"{row.method} {row.resolution}: say why a column has no counterpart"
    report = markdown_report(ScoreResult("vton-paired", (1024, 768), 2, 2, 2, {}, {}))
    assert "franciszzj/VtonEval eval.py (a4fdbef)" in report and "`ssim_vtoneval`" in report
