import json
import socket
import time
import urllib.error

import numpy as np
import pytest
import torch
import torch.hub
from metrics_support import backbone_file, forbid_network, textured_images, write_image
from safetensors.torch import save_file

from leffa_pl.evaluation.score import ScoreOptions, score_folder
from leffa_pl.metrics.features import (
    build_fid_feature_extractor,
    feature_extractor_identity,
    random_inception_state_dict,
)
from leffa_pl.metrics.perceptual import build_lpips_network
from leffa_pl.metrics.weights import WeightsSource, WeightsUnavailable, resolve_weights_file

DOWNLOAD = torch.hub.download_url_to_file  # before the fixture forbids it


@pytest.fixture(autouse=True)
def torch_home(monkeypatch, tmp_path):
    return forbid_network(monkeypatch, tmp_path)


def test_missing_inception_weights_leave_fid_kid_not_computed_and_the_rest_computed(tmp_path, torch_home):
    rng = np.random.default_rng(0)
    for i, image in enumerate(textured_images(rng, 3, 64, 56)):
        write_image(tmp_path / "gt" / f"{i:05d}_00.jpg", image)
        write_image(tmp_path / "gen" / f"{i:05d}_00.png", image // 2)
    squeeze, _ = backbone_file(tmp_path, "squeezenet1_1")

    result = score_folder(tmp_path / "gen", "vton-paired", tmp_path / "gt", options=ScoreOptions(
        allow_download=False, lpips_weights=squeeze, cache_dir=tmp_path / "cache"))

    assert set(result.values) == {"ssim_vtoneval", "ssim_gaussian", "lpips", "psnr"}
    for name in ("fid", "kid"):
        reason = result.not_computed[name]
        assert "downloads are switched off" in reason
        assert "--inception-weights PATH" in reason
        assert str(torch_home / "hub" / "checkpoints" / "weights-inception-2015-12-05-6726825d.pth") in reason
    stored = json.loads((tmp_path / "gen" / "metrics.json").read_text())
    assert stored["not_computed"]["fid"] == result.not_computed["fid"]
    report = (tmp_path / "gen" / "metrics.md").read_text()
    assert "| FID ↓ | not computed |" in report and "--inception-weights" in report


def test_a_missing_or_unreadable_local_file_is_named(tmp_path):
    with pytest.raises(WeightsUnavailable, match="nothing.pth: no such file"):
        build_fid_feature_extractor("tf-inception", tmp_path / "nothing.pth", allow_download=False)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"\x00" * 64)
    with pytest.raises(WeightsUnavailable, match="garbage.pth: not a PyTorch checkpoint"):
        build_lpips_network("alex", garbage, allow_download=False)
    pickled_code = tmp_path / "module.pth"
    torch.save({"layer": torch.nn.Linear(2, 2)}, pickled_code)
    with pytest.raises(WeightsUnavailable, match="refused to load"):
        build_lpips_network("alex", pickled_code, allow_download=False)


def test_weights_of_another_network_are_refused_with_the_reason(tmp_path):
    squeeze, _ = backbone_file(tmp_path, "squeezenet1_1")
    with pytest.raises(WeightsUnavailable, match="is not torchvision's alexnet"):
        build_lpips_network("alex", squeeze, allow_download=False)


def test_the_torch_hub_cache_is_used_without_downloading(tmp_path, torch_home):
    checkpoints = torch_home / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    path, _ = backbone_file(tmp_path, "squeezenet1_1")
    path.rename(checkpoints / "squeezenet1_1-b8a52dc0.pth")
    network = build_lpips_network("squeeze", allow_download=False)
    assert network(torch.zeros(1, 3, 32, 32), torch.zeros(1, 3, 32, 32)).item() == 0


def test_a_failed_download_is_reported_with_the_url(monkeypatch):
    calls = []

    def offline(url, destination, hash_prefix=None, progress=True):
        calls.append((url, hash_prefix))
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(WeightsUnavailable, match="download of https://download.pytorch.org/models/"
                                                 "squeezenet1_1-b8a52dc0.pth failed"):
        build_lpips_network("squeeze", allow_download=True)
    assert calls == [("https://download.pytorch.org/models/squeezenet1_1-b8a52dc0.pth", "b8a52dc0")]


def test_a_download_from_a_server_that_never_answers_times_out(monkeypatch):
    monkeypatch.setattr(torch.hub, "download_url_to_file", DOWNLOAD)  # the real downloader, to this machine only
    monkeypatch.setattr("leffa_pl.metrics.weights.DOWNLOAD_TIMEOUT_S", 0.5)
    monkeypatch.setenv("no_proxy", "*")
    with socket.socket() as server:  # accepts the connection (the kernel does), never answers the request
        server.bind(("127.0.0.1", 0))
        server.listen()
        url = f"http://127.0.0.1:{server.getsockname()[1]}/weights-0123abcd.pth"
        start = time.monotonic()
        with pytest.raises(WeightsUnavailable, match=f"download of {url} failed .*timed out"):
            resolve_weights_file(WeightsSource("test weights", url, check_hash=False, option="--x"))
    assert time.monotonic() - start < 30
    assert socket.getdefaulttimeout() is None  # restored


@pytest.mark.parametrize("kind", ["tf-inception", "torchvision-inception"])
def test_inception_extractors_run_on_local_safetensors_weights(tmp_path, kind):
    path = tmp_path / f"{kind}.safetensors"
    save_file(random_inception_state_dict(kind), str(path))
    extractor = build_fid_feature_extractor(kind, path, allow_download=False)
    images = torch.from_numpy(textured_images(np.random.default_rng(0), 2, 64, 44))
    with torch.no_grad():
        features = extractor(images)
    assert features.shape == (2, 2048) and torch.isfinite(features).all()
    assert extractor.preprocessing in feature_extractor_identity(extractor)

    other = "torchvision-inception" if kind == "tf-inception" else "tf-inception"
    with pytest.raises(WeightsUnavailable, match=f"does not fit the {other} network"):
        build_fid_feature_extractor(other, path, allow_download=False)
