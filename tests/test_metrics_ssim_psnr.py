import io

import numpy as np
import pytest
import torch
from metrics_support import forbid_network, perturbed, textured_images, write_image
from PIL import Image
from skimage.metrics import structural_similarity
from torchmetrics.functional.image import structural_similarity_index_measure
from torchmetrics.image import StructuralSimilarityIndexMeasure
from torchvision.transforms.functional import to_tensor

from leffa_pl.evaluation.score import ScoreOptions, score_folder
from leffa_pl.metrics.ssim import SSIM_GAUSSIAN, SSIM_UNIFORM51, SSIM_VTONEVAL, ssim_per_image
from leffa_pl.metrics.suite import MetricSuite, quantize_images

SKIMAGE_CALLS = {
    # the settings each variant claims to reproduce (see SSIMVariant.equivalent)
    "ssim_gaussian": lambda a, b: structural_similarity(a, b, gaussian_weights=True, sigma=1.5,
                                                        use_sample_covariance=False, data_range=255,
                                                        channel_axis=0),
    "ssim_uniform51": lambda a, b: structural_similarity(a / 255.0, b / 255.0, win_size=51, data_range=1,
                                                         channel_axis=0),
}


@pytest.fixture(autouse=True)
def no_network(monkeypatch, tmp_path):
    forbid_network(monkeypatch, tmp_path)


@pytest.fixture
def pairs():
    rng = np.random.default_rng(3)
    truth = textured_images(rng, 5, 72, 60)
    generated = np.stack([perturbed(rng, image, noise) for image, noise in zip(truth, (2, 8, 20, 40, 70))])
    generated[0, :, :20] = 255  # a saturated block: flat regions stress the variance terms
    return generated, truth


@pytest.mark.parametrize("variant", [SSIM_GAUSSIAN, SSIM_UNIFORM51], ids=lambda v: v.name)
def test_ssim_equals_scikit_image_per_image_and_in_the_mean(pairs, variant):
    generated, truth = pairs
    expected = np.array([SKIMAGE_CALLS[variant.name](g, t) for g, t in zip(generated, truth)])
    assert np.ptp(expected) > 0.1  # the pairs span a range of qualities

    ours = ssim_per_image(torch.from_numpy(generated) / 255.0, torch.from_numpy(truth) / 255.0, variant)
    np.testing.assert_allclose(ours.numpy(), expected, rtol=0, atol=2e-6)

    suite = MetricSuite([variant.name])
    suite.update(torch.from_numpy(generated[:3]), torch.from_numpy(truth[:3]))
    suite.update(torch.from_numpy(generated[3:]), torch.from_numpy(truth[3:]))
    assert suite.compute().values[variant.name] == pytest.approx(expected.mean(), abs=2e-6)


def test_ssim_refuses_images_smaller_than_its_window():
    small = torch.rand(1, 3, 40, 64)
    with pytest.raises(ValueError, match="51-pixel window exceeds the 40x64"):
        ssim_per_image(small, small, SSIM_UNIFORM51)


def test_psnr_is_the_mean_of_per_image_psnr_with_data_range_1(pairs):
    generated, truth = pairs
    errors = ((generated / 255.0 - truth / 255.0) ** 2).reshape(len(truth), -1).mean(axis=1)
    per_image = 10 * np.log10(1.0 / errors)
    pooled = 10 * np.log10(1.0 / errors.mean())
    assert abs(per_image.mean() - pooled) > 0.5  # the two definitions really differ here

    suite = MetricSuite(["psnr"])
    suite.update(torch.from_numpy(generated[:2]), torch.from_numpy(truth[:2]))
    suite.update(torch.from_numpy(generated[2:]), torch.from_numpy(truth[2:]))
    # torchmetrics takes ln(10) in float32: agreement to ~1e-6 dB
    assert suite.compute().values["psnr"] == pytest.approx(per_image.mean(), abs=1e-5)


def test_every_image_counts_when_the_last_batch_is_short(tmp_path):
    rng = np.random.default_rng(5)
    truth = textured_images(rng, 7, 64, 56)
    generated = np.stack([perturbed(rng, image, 5 + 10 * i) for i, image in enumerate(truth)])
    for i in range(7):
        write_image(tmp_path / "gt" / f"{i:05d}_00.jpg", truth[i])
        write_image(tmp_path / "gen" / f"{i:05d}_00.png", generated[i])
    # the scorer reads the JPEG ground truth back, so the expectation does too
    read_truth = np.stack([np.asarray(Image.open(tmp_path / "gt" / f"{i:05d}_00.jpg")).transpose(2, 0, 1)
                           for i in range(7)])
    errors = ((generated / 255.0 - read_truth / 255.0) ** 2).reshape(7, -1).mean(axis=1)
    per_image_psnr = 10 * np.log10(1.0 / errors)
    ssims = [SKIMAGE_CALLS["ssim_gaussian"](g, t) for g, t in zip(generated, read_truth)]

    result = score_folder(tmp_path / "gen", "vton-paired", tmp_path / "gt", options=ScoreOptions(
        batch_size=4, allow_download=False, cache_dir=tmp_path / "cache"))

    assert (result.n_generated, result.n_paired) == (7, 7)
    assert result.values["psnr"] == pytest.approx(per_image_psnr.mean(), abs=1e-5)
    assert result.values["ssim_gaussian"] == pytest.approx(np.mean(ssims), abs=2e-6)
    assert abs(per_image_psnr[:4].mean() - per_image_psnr.mean()) > 0.1  # dropping the remainder would show


def test_quantize_images_matches_what_a_png_holds():
    images = torch.rand(2, 3, 8, 6) * 2.2 - 1.1  # a little outside [-1, 1], as decoders produce
    quantized = quantize_images(images)
    for image, stored in zip(images, quantized):
        array = ((image.clamp(-1, 1) + 1) / 2 * 255).round().byte().permute(1, 2, 0).numpy()
        buffer = io.BytesIO()
        Image.fromarray(array).save(buffer, format="PNG")
        reread = torch.from_numpy(np.array(Image.open(buffer))).permute(2, 0, 1)
        assert torch.equal(stored, reread)


def test_ssim_vtoneval_is_torchmetrics_called_the_vtoneval_way(tmp_path):
    """VtonEval: ground truth resized to the prediction with LANCZOS, both read with ToTensor into [0, 1],
    StructuralSimilarityIndexMeasure(data_range=1.0) called per batch, batch means weighted by batch size."""
    rng = np.random.default_rng(11)
    truth = textured_images(rng, 5, 120, 90)  # larger than the generated images: the resize is exercised
    for index, image in enumerate(truth):
        small = np.asarray(Image.fromarray(image.transpose(1, 2, 0)).resize((60, 80), Image.Resampling.BICUBIC))
        write_image(tmp_path / "gt" / f"{index:05d}_00.png", truth[index])
        write_image(tmp_path / "gen" / f"{index:05d}_00.png", perturbed(rng, small.transpose(2, 0, 1), 6 + 9 * index))
    vtoneval = StructuralSimilarityIndexMeasure(data_range=1.0)
    total = 0.0
    for batch in ([0, 1], [2, 3], [4]):
        gt = torch.stack([to_tensor(Image.open(tmp_path / "gt" / f"{i:05d}_00.png").resize((60, 80), Image.LANCZOS))
                          for i in batch])
        pred = torch.stack([to_tensor(Image.open(tmp_path / "gen" / f"{i:05d}_00.png")) for i in batch])
        total += float(vtoneval(pred, gt)) * len(batch)

    result = score_folder(tmp_path / "gen", "vton-paired", tmp_path / "gt", options=ScoreOptions(
        batch_size=4, allow_download=False, cache_dir=tmp_path / "cache"))

    assert list(result.values)[:2] == ["ssim_vtoneval", "ssim_gaussian"]  # first in the try-on tables
    assert result.values["ssim_vtoneval"] == pytest.approx(total / 5, abs=1e-6)
    assert abs(result.values["ssim_vtoneval"] - result.values["ssim_gaussian"]) > 0.005  # the border counts


def test_ssim_gaussian_is_torchmetrics_ssim_with_the_border_cropped_as_before_1_4_2(pairs):
    generated, truth = (torch.from_numpy(images) / 255.0 for images in pairs)
    _, full = structural_similarity_index_measure(generated, truth, data_range=1.0, reduction="none",
                                                  return_full_image=True)
    border = (SSIM_GAUSSIAN.size - 1) // 2
    cropped = full[..., border:-border, border:-border].flatten(1).mean(dim=1)
    torch.testing.assert_close(ssim_per_image(generated, truth, SSIM_GAUSSIAN), cropped, rtol=0, atol=2e-6)
    assert (ssim_per_image(generated, truth, SSIM_VTONEVAL) - cropped).abs().max() > 1e-3
