"""The metric suite under DDP (two CPU processes, gloo) gives the single-process results."""

import json

import numpy as np
import pytest
import torch
import torch.distributed as dist
from metrics_support import TinyFeatures, perturbed, textured_images
from subprocess_limits import spawn_with_limit

from leffa_pl.metrics.real_statistics import RealStatistics
from leffa_pl.metrics.suite import MetricSuite

METRICS = ["fid", "kid", "ssim_gaussian", "psnr"]


def image_sets():
    rng = np.random.default_rng(4)
    real = torch.from_numpy(textured_images(rng, 12, 48, 40))
    truth = textured_images(rng, 7, 48, 40)
    generated = torch.from_numpy(np.stack([perturbed(rng, image, 10 + 5 * i) for i, image in enumerate(truth)]))
    return real, generated, torch.from_numpy(truth)


def suite_with_real_set(real: torch.Tensor) -> MetricSuite:
    extractor = TinyFeatures()
    statistics = RealStatistics.empty(extractor.num_features, keep_features=True)
    statistics.add(extractor(real))
    # KID subsets of all 7 generated images: the value does not depend on the order ranks gather them in
    suite = MetricSuite(METRICS, fid_features=extractor, kid_subsets=2, kid_subset_size=7)
    suite.set_real_statistics(statistics)
    return suite


def run_rank(rank: int, store: str, output: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    real, generated, truth = image_sets()
    suite = suite_with_real_set(real)
    # uneven shares, as without a padding sampler: rank 0 gets two batches (4 images), rank 1 one (3)
    batches = [slice(0, 2), slice(2, 4)] if rank == 0 else [slice(4, 7)]
    for batch in batches:
        suite.update(generated[batch], truth[batch])
    result = suite.compute()
    if rank == 0:
        with open(output, "w") as handle:
            json.dump({"values": result.values, "n": [result.n_generated, result.n_paired, result.n_real]}, handle)
    dist.destroy_process_group()


def test_two_ranks_give_the_single_process_results(tmp_path):
    real, generated, truth = image_sets()
    single = suite_with_real_set(real)
    single.update(generated, truth)
    expected = single.compute()

    spawn_with_limit(run_rank, (str(tmp_path / "store"), str(tmp_path / "result.json")), 2, 120)
    distributed = json.loads((tmp_path / "result.json").read_text())

    assert distributed["n"] == [7, 7, 12]
    assert distributed["values"].keys() == expected.values.keys()
    for name, value in expected.values.items():
        assert distributed["values"][name] == pytest.approx(value, rel=1e-9, abs=1e-12), name
