"""build_metric_suite: the one assembly of a protocol's metrics, for leffa-pl-score and in-training scores."""

import pytest

from leffa_pl.datasets.registry import get_protocol
from leffa_pl.evaluation.metric_suite import build_metric_suite
from leffa_pl.metrics.weights import WeightsUnavailable


def _never_built():
    raise AssertionError("a network was built for a metric that is not computed")


def _unavailable():
    raise WeightsUnavailable("LPIPS alex", "alexnet.pth: no such file", "give --lpips-weights")


def test_metrics_not_computed_build_no_network_and_keep_their_reason():
    suite = build_metric_suite(get_protocol("vton-paired"), fid_extractor=_never_built, lpips_network=_unavailable,
                               not_computed={"fid": "no real set", "kid": "no real set"})
    assert suite.metric_names == get_protocol("vton-paired").metrics
    assert suite.unavailable["fid"] == "no real set" and suite.fid is None and suite.kid is None
    assert "alexnet.pth: no such file" in suite.unavailable["lpips"] and suite.lpips_network is None
    assert set(suite.ssim) == {"ssim_vtoneval", "ssim_gaussian"} and suite.psnr is not None


def test_a_metric_to_compute_without_a_network_builder_is_refused():
    with pytest.raises(ValueError, match="FID/KID need a feature extractor"):
        build_metric_suite(get_protocol("vton-unpaired"))
