"""The one place a protocol's ``MetricSuite`` is assembled, for scoring a folder and for in-training scores.

Networks (the FID feature extractor, the LPIPS network) are built only for metrics that will be computed; one whose
weights cannot be had (``WeightsUnavailable``) makes its metrics "not computed", with the reason, and the others
are computed.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

from torch import nn

from leffa_pl.datasets.protocols import Protocol
from leffa_pl.metrics.suite import SET_METRICS, MetricSuite
from leffa_pl.metrics.weights import WeightsUnavailable

NetworkBuilder = Callable[[], nn.Module]


def build_metric_suite(protocol: Protocol, fid_extractor: NetworkBuilder | None = None,
                       lpips_network: NetworkBuilder | None = None,
                       not_computed: Mapping[str, str] | None = None, **suite_settings: Any) -> MetricSuite:
    """``protocol``'s metrics; ``not_computed`` (metric -> reason) are left out before any network is built. A
    metric to compute whose builder is ``None`` is refused by ``MetricSuite``."""
    unavailable = {name: reason for name, reason in (not_computed or {}).items() if name in protocol.metrics}
    active = [name for name in protocol.metrics if name not in unavailable]
    extractor = _built(fid_extractor, [name for name in active if name in SET_METRICS], unavailable)
    lpips = _built(lpips_network, [name for name in active if name == "lpips"], unavailable)
    return MetricSuite(protocol.metrics, fid_features=extractor, lpips_network=lpips, unavailable=unavailable,
                       **suite_settings)


def _built(build: NetworkBuilder | None, metrics: list[str], unavailable: dict[str, str]) -> nn.Module | None:
    if not metrics or build is None:
        return None
    try:
        return build()
    except WeightsUnavailable as error:
        unavailable.update({name: str(error) for name in metrics})
        return None
