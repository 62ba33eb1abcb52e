"""DressCode per category (LaDI-VTON's val_metrics.py): each category's generated images against its own ground
truth and real set, beside the score of all categories together."""

import json

import numpy as np
import pytest
from metrics_support import TinyFeatures, forbid_network, perturbed, write_image
from PIL import Image

from leffa_pl.datasets.dresscode import reader as dresscode
from leffa_pl.datasets.dresscode import synthetic as dresscode_synthetic
from leffa_pl.evaluation import score
from leffa_pl.evaluation.evaluate import category_groups, report_name, score_categories
from leffa_pl.evaluation.predict import plan_predictions
from leffa_pl.evaluation.score import ScoreOptions, score_images

SIZE = (64, 48)


@pytest.fixture(autouse=True)
def no_network(monkeypatch, tmp_path):
    forbid_network(monkeypatch, tmp_path)


def test_each_category_is_scored_against_its_own_ground_truth_and_real_set(tmp_path):
    root = dresscode_synthetic.make_dresscode(tmp_path / "DressCode", n_train=1, n_test=2, size=SIZE, seed=4)
    pairs, problems = dresscode.read_pairs(root, "test_paired", "all")
    assert not problems
    dataset = dresscode.DressCodeDataset(root, pairs, SIZE)
    plan = plan_predictions(dataset, tmp_path / "paired")
    rng = np.random.default_rng(0)
    noise = {"upper_body": 4, "lower_body": 30, "dresses": 80}  # the categories differ: a mix-up would show
    for index, path in zip(plan.unique, plan.files):
        person = np.asarray(Image.open(dataset.person_file(index)).convert("RGB")).transpose(2, 0, 1)
        write_image(path, perturbed(rng, person, noise[dataset.pairs[index].person_category]))
    real = sorted({dataset.person_file(index) for index in range(len(dataset))})
    options = ScoreOptions(batch_size=4, allow_download=False, cache_dir=tmp_path / "cache",
                           fid_extractor_module=TinyFeatures())

    groups = category_groups(dataset, plan.unique)
    results = score_categories(dataset, plan, "vton-paired", real, options, {"model": "test"})

    assert list(groups) == list(dresscode.CATEGORIES) and [len(g) for g in groups.values()] == [2, 2, 2]
    assert [report_name(result) for result in results] == [f"metrics_{c}" for c in dresscode.CATEGORIES]
    for (category, positions), result in zip(groups.items(), results):
        files = [plan.files[position] for position in positions]
        targets = [dataset.person_file(plan.unique[position]) for position in positions]
        alone = score_images(files, "vton-paired", targets, targets, options)
        assert (result.n_generated, result.n_real) == (2, 2)
        assert result.values == pytest.approx(alone.values)
        stored = json.loads((tmp_path / "paired" / f"metrics_{category}.json").read_text())
        assert stored["details"]["category"] == category and stored["details"]["model"] == "test"
        assert {"fid", "kid", "ssim_vtoneval", "psnr"} <= set(stored["values"])
    psnr = [result.values["psnr"] for result in results]
    assert psnr[0] > psnr[1] > psnr[2]


def test_a_single_category_or_a_dataset_without_categories_has_no_subsets(tmp_path):
    root = dresscode_synthetic.make_dresscode(tmp_path / "DressCode", n_train=1, n_test=2, size=SIZE,
                                         categories=("dresses",))
    pairs, _ = dresscode.read_pairs(root, "test_paired", "all")
    dataset = dresscode.DressCodeDataset(root, pairs, SIZE)
    assert category_groups(dataset, range(len(dataset))) == {}


def test_leffa_pl_score_scores_one_category_against_its_test_persons(tmp_path, capsys):
    """The documented command for images made elsewhere (named <person image stem>.png, as LaDI-VTON and
    CatVTON write them): the real set is the first column of the category's test_pairs_paired.txt."""
    root = dresscode_synthetic.make_dresscode(tmp_path / "DressCode", n_train=2, n_test=2, size=SIZE, seed=6)
    category = root / "lower_body"
    persons = [line.split()[0] for line in (category / "test_pairs_paired.txt").read_text().splitlines()]
    rng = np.random.default_rng(1)
    for name in persons:
        person = np.asarray(Image.open(category / "images" / name).convert("RGB")).transpose(2, 0, 1)
        write_image(tmp_path / "generated" / "lower_body" / name.replace(".jpg", ".png"), perturbed(rng, person, 9))

    assert score.main([str(tmp_path / "generated" / "lower_body"), "--protocol", "vton-paired",
                       "--ground-truth", str(category / "images"), "--real-list",
                       str(category / "test_pairs_paired.txt"), "--offline", "--num-workers", "0",
                       "--device", "cpu", "--cache-dir", str(tmp_path / "cache")]) == 0
    stored = json.loads((tmp_path / "generated" / "lower_body" / "metrics.json").read_text())
    assert (stored["n_generated"], stored["n_paired"], stored["n_real"]) == (2, 2, 2)  # not every image of the folder
    assert "ssim_vtoneval" in stored["values"]
