import shutil
from pathlib import Path

import lpips
import pytest
import torch
from metrics_support import backbone_file, forbid_network
from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity
from torchvision.models import SqueezeNet1_1_Weights

from leffa_pl.metrics.perceptual import build_lpips_network
from leffa_pl.metrics.suite import MetricSuite

ARCHITECTURES = {"alex": "alexnet", "squeeze": "squeezenet1_1"}


@pytest.fixture(autouse=True)
def no_network(monkeypatch, tmp_path):
    forbid_network(monkeypatch, tmp_path)


@pytest.fixture(scope="module")
def backbones(tmp_path_factory):
    """Random torchvision classifiers (seeded), saved like the released weight files."""
    directory = tmp_path_factory.mktemp("backbones")
    return {net: backbone_file(directory, architecture, seed=7) for net, architecture in ARCHITECTURES.items()}


def reference_lpips(net: str, classifier: torch.nn.Module) -> lpips.LPIPS:
    """The `lpips` package's model with the same backbone: its slices hold ``features[i]`` under the name i."""
    model = lpips.LPIPS(net=net, pnet_rand=True, verbose=False)
    for slice_ in model.net.children():
        for index, layer in slice_.named_children():
            layer.load_state_dict(classifier.features[int(index)].state_dict())
    return model.eval()


@pytest.mark.parametrize("net", ["alex", "squeeze"])
def test_lpips_equals_the_lpips_package_with_the_same_backbone_weights(backbones, net):
    weights, classifier = backbones[net]
    ours = build_lpips_network(net, weights, allow_download=False)
    reference = reference_lpips(net, classifier)

    generator = torch.Generator().manual_seed(0)
    first = torch.rand(3, 3, 64, 48, generator=generator) * 2 - 1
    second = (first + 0.3 * torch.randn(3, 3, 64, 48, generator=generator)).clamp(-1, 1)
    with torch.no_grad():
        expected = reference(first, second).flatten()
        got = ours(first, second).flatten()
    assert expected.std() > 0  # per-image scores differ: a mix-up of images would show
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_the_suite_averages_lpips_over_images_on_inputs_in_minus_one_to_one(backbones):
    weights, classifier = backbones["alex"]
    reference = reference_lpips("alex", classifier)
    generator = torch.Generator().manual_seed(1)
    generated = torch.randint(0, 256, (5, 3, 64, 48), generator=generator, dtype=torch.uint8)
    truth = torch.randint(0, 256, (5, 3, 64, 48), generator=generator, dtype=torch.uint8)

    suite = MetricSuite(["lpips"], lpips_network=build_lpips_network("alex", weights, allow_download=False))
    suite.update(generated[:4], truth[:4])
    suite.update(generated[4:], truth[4:])
    with torch.no_grad():
        expected = reference(generated / 127.5 - 1, truth / 127.5 - 1).mean()
    assert suite.compute().values["lpips"] == pytest.approx(float(expected), rel=1e-5)


def test_the_suite_equals_torchmetrics_lpips_called_the_vtoneval_way(backbones, tmp_path):
    """VtonEval: LearnedPerceptualImagePatchSimilarity(net_type='squeeze') on [0, 1] images scaled to [-1, 1],
    batch means weighted by batch size. Its backbone comes from the hub cache (forbid_network's TORCH_HOME)."""
    weights, _ = backbones["squeeze"]
    cache = tmp_path / "torch-home" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    shutil.copy(weights, cache / Path(SqueezeNet1_1_Weights.DEFAULT.url).name)
    vtoneval = LearnedPerceptualImagePatchSimilarity(net_type="squeeze")
    generator = torch.Generator().manual_seed(2)
    generated = torch.randint(0, 256, (5, 3, 64, 48), generator=generator, dtype=torch.uint8)
    truth = generated.clone()
    truth[:, :, 8:40] = torch.randint(0, 256, (5, 3, 32, 48), generator=generator, dtype=torch.uint8)
    total = 0.0
    with torch.no_grad():
        for batch in (slice(0, 2), slice(2, 4), slice(4, 5)):
            gt, pred = truth[batch] / 255.0, generated[batch] / 255.0
            total += float(vtoneval(gt * 2 - 1, pred * 2 - 1)) * gt.shape[0]

    suite = MetricSuite(["lpips"], lpips_network=build_lpips_network("squeeze", weights, allow_download=False))
    suite.update(generated[:3], truth[:3])
    suite.update(generated[3:], truth[3:])
    assert suite.compute().values["lpips"] == pytest.approx(total / 5, rel=1e-5)
