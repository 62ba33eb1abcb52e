import os

import numpy as np
import pytest
import scipy.linalg
import torch
from metrics_support import TinyFeatures, forbid_network, textured_images, write_image

from leffa_pl.evaluation.score import ScoreOptions, score_images
from leffa_pl.metrics.real_statistics import RealStatistics, RealStatisticsCache, describe_real_set
from leffa_pl.metrics.suite import MetricSuite


@pytest.fixture(autouse=True)
def no_network(monkeypatch, tmp_path):
    forbid_network(monkeypatch, tmp_path)


def image_sets(real_count: int, generated_count: int):
    rng = np.random.default_rng(11)
    real = torch.from_numpy(textured_images(rng, real_count, 48, 40))
    generated = torch.from_numpy(textured_images(rng, generated_count, 48, 40)) // 2 + 100  # another distribution
    return real, generated


def features_of(extractor, images) -> np.ndarray:
    with torch.no_grad():
        return extractor(images).double().numpy()


def test_fid_equals_the_frechet_distance_from_scipy_sqrtm():
    extractor = TinyFeatures()
    real, generated = image_sets(40, 15)
    statistics = RealStatistics.empty(extractor.num_features, keep_features=False)
    for batch in real.split(16):
        statistics.add(extractor(batch))
    suite = MetricSuite(["fid"], fid_features=extractor)
    suite.set_real_statistics(statistics)
    for batch in generated.split(4):
        suite.update(batch)
    result = suite.compute()

    real_features, fake_features = features_of(extractor, real), features_of(extractor, generated)
    mu_r, mu_f = real_features.mean(axis=0), fake_features.mean(axis=0)
    sigma_r, sigma_f = np.cov(real_features, rowvar=False), np.cov(fake_features, rowvar=False)
    covmean = scipy.linalg.sqrtm(sigma_r @ sigma_f).real
    expected = ((mu_r - mu_f) ** 2).sum() + np.trace(sigma_r + sigma_f - 2 * covmean)
    assert expected > 0.1
    assert result.values["fid"] == pytest.approx(expected, rel=1e-6)
    assert (result.n_generated, result.n_real) == (15, 40)


def test_kid_is_the_unbiased_polynomial_mmd_of_the_shared_features():
    extractor = TinyFeatures()
    real, generated = image_sets(15, 15)  # subsets of all 15 images: every subset is the whole set
    statistics = RealStatistics.empty(extractor.num_features, keep_features=True)
    statistics.add(extractor(real))
    suite = MetricSuite(["fid", "kid"], fid_features=extractor, kid_subsets=3)
    suite.set_real_statistics(statistics)
    suite.update(generated[:10])
    suite.update(generated[10:])
    result = suite.compute()
    assert extractor.images_seen == 15 + 15  # FID and KID share one feature pass

    x, y = features_of(extractor, real), features_of(extractor, generated)
    kernel = lambda a, b: (a @ b.T / x.shape[1] + 1) ** 3  # noqa: E731
    m = len(x)
    k_xx, k_yy, k_xy = kernel(x, x), kernel(y, y), kernel(x, y)
    mmd = ((k_xx.sum() - np.trace(k_xx)) + (k_yy.sum() - np.trace(k_yy))) / (m * (m - 1)) - 2 * k_xy.mean()
    assert result.kid_subset_size == 15
    assert result.values["kid"] == pytest.approx(mmd, rel=1e-6)
    assert result.values["kid_std"] == pytest.approx(0, abs=1e-9)


def test_fid_needs_two_images_on_each_side_and_says_so():
    extractor = TinyFeatures()
    real, generated = image_sets(5, 1)
    statistics = RealStatistics.empty(extractor.num_features, keep_features=False)
    statistics.add(extractor(real))
    suite = MetricSuite(["fid"], fid_features=extractor)
    suite.set_real_statistics(statistics)
    suite.update(generated)
    result = suite.compute()
    assert "fid" not in result.values
    assert "at least 2 generated and 2 real images, got 1 and 5" in result.not_computed["fid"]


@pytest.fixture
def folders(tmp_path):
    rng = np.random.default_rng(2)
    real = [write_image(tmp_path / "real" / f"{i:05d}_00.jpg", image)
            for i, image in enumerate(textured_images(rng, 6, 80, 60))]
    generated = [write_image(tmp_path / "gen" / f"{i:05d}_00.png", image)
                 for i, image in enumerate(textured_images(rng, 3, 64, 48))]
    return tmp_path, real, generated


def test_real_statistics_are_cached_and_recomputed_when_an_input_changes(folders):
    root, real, generated = folders
    extractor = TinyFeatures()
    options = ScoreOptions(batch_size=4, cache_dir=root / "cache", fid_extractor_module=extractor)

    first = score_images(generated, "vton-unpaired", real_images=real, options=options)
    assert extractor.images_seen == 6 + 3
    assert first.details["real_statistics_cache_hit"] is False
    assert first.n_real == 6 and set(first.values) == {"fid", "kid", "kid_std"}

    second = score_images(generated, "vton-unpaired", real_images=real, options=options)
    assert extractor.images_seen == 9 + 3  # only the generated images went through the extractor
    assert second.details["real_statistics_cache_hit"] is True
    assert second.values == first.values

    # a real image rewritten (content, size and mtime change)
    write_image(real[0], textured_images(np.random.default_rng(9), 1, 80, 60)[0])
    stamp = os.stat(real[0]).st_mtime_ns
    os.utime(real[0], ns=(stamp + 10**9, stamp + 10**9))
    third = score_images(generated, "vton-unpaired", real_images=real, options=options)
    assert third.details["real_statistics_cache_hit"] is False
    assert third.values["fid"] != first.values["fid"]

    # other extractor weights
    with torch.no_grad():
        extractor.conv.bias += 0.5
    fourth = score_images(generated, "vton-unpaired", real_images=real, options=options)
    assert fourth.details["real_statistics_cache_hit"] is False

    # another resolution (the generated images define it)
    smaller = [write_image(root / "gen-small" / p.name, textured_images(np.random.default_rng(4), 1, 56, 40)[0])
               for p in generated]
    fifth = score_images(smaller, "vton-unpaired", real_images=real, options=options)
    assert fifth.details["real_statistics_cache_hit"] is False
    assert fifth.details["real_statistics_cache"] != fourth.details["real_statistics_cache"]


def test_the_cache_key_covers_resize_method_extractor_and_the_file_list(folders):
    root, real, _ = folders
    cache = RealStatisticsCache(root / "cache")
    base = describe_real_set(real, (64, 48), "bicubic", "extractor A")
    variants = [describe_real_set(real, (64, 48), "lanczos", "extractor A"),
                describe_real_set(real, (64, 48), "bicubic", "extractor B"),
                describe_real_set(real, (48, 64), "bicubic", "extractor A"),
                describe_real_set(real[:-1], (64, 48), "bicubic", "extractor A")]
    paths = {cache.path_for(description) for description in [base, *variants]}
    assert len(paths) == 5
    assert describe_real_set(list(reversed(real)), (64, 48), "bicubic", "extractor A") == base  # order-free


def test_cached_statistics_without_features_do_not_serve_kid_and_corrupt_files_are_recomputed(folders):
    root, real, _ = folders
    cache = RealStatisticsCache(root / "cache")
    description = describe_real_set(real, (64, 48), "bicubic", "extractor A")
    statistics = RealStatistics.empty(4, keep_features=False)
    statistics.add(torch.randn(6, 4))
    path = cache.save(description, statistics)

    assert cache.load(description, need_features=True) is None
    loaded = cache.load(description, need_features=False)
    assert loaded.count == 6 and torch.equal(loaded.outer_sum, statistics.outer_sum)

    path.write_bytes(b"not a safetensors file")
    assert cache.load(description, need_features=False) is None


def test_reset_forgets_the_generated_images_and_keeps_the_real_set():
    extractor = TinyFeatures()
    real, generated = image_sets(12, 8)
    statistics = RealStatistics.empty(extractor.num_features, keep_features=True)
    statistics.add(extractor(real))

    def fresh() -> MetricSuite:
        suite = MetricSuite(["fid", "kid", "psnr"], fid_features=extractor, kid_subset_size=4)
        suite.set_real_statistics(statistics)
        return suite

    reused = fresh()
    reused.update(generated[:4], real[:4])
    reused.compute()
    reused.reset()
    reused.update(generated[4:], real[4:8])
    again = fresh()
    again.update(generated[4:], real[4:8])
    first, second = reused.compute(), again.compute()
    assert first.values == second.values
    assert (first.n_generated, first.n_paired, first.n_real) == (4, 4, 12)
