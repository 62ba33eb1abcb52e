"""What an evaluation protocol is (``Protocol``), and the virtual try-on protocols VITON-HD and DressCode share.

A dataset names its protocols in its ``DatasetSpec`` (DeepFashion's: ``leffa_pl/datasets/deepfashion/protocol.py``);
``leffa_pl.datasets.registry.get_protocol`` finds any of them by name."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class PublishedResult:
    """One published row. ``values`` by the paper's column (``fid``, ``kid`` x1000, ``ssim``, ``lpips``,
    ``psnr``); ``evaluator``: the code and settings that produced them; ``metrics``: per column, the metric of
    ``leffa_pl.metrics.suite`` computed the same way. A column without one has no exact counterpart here:
    ``note`` says why and which metric is closest."""

    method: str
    dataset: str
    resolution: str
    values: dict[str, float]
    evaluator: str
    metrics: dict[str, str] = field(default_factory=dict)
    note: str = ""


@dataclass(frozen=True)
class Protocol:
    """Which metrics apply, how images are prepared, and what to compare with."""

    name: str
    title: str
    metrics: tuple[str, ...]
    fid_extractor: str
    lpips_net: str
    ground_truth_resize: str  # a key of leffa_pl.evaluation.images.RESIZE_METHODS
    needs_ground_truth: bool
    real_set: str  # what the FID/KID real set must be
    real_set_defaults_to_ground_truth: bool
    literature: tuple[PublishedResult, ...] = ()
    notes: tuple[str, ...] = field(default=())
    split: str = ""  # the data split it scores (a prediction folder records its own: prediction.json)
    one_image_per_target: bool = False  # paired try-on: each ground truth has exactly one generated image


# The evaluator behind the published try-on numbers, read at this commit (docs/evaluation.md).
VTONEVAL_EVALUATOR = ("franciszzj/VtonEval eval.py (a4fdbef), named in Leffa's README: pytorch-fid and clean-fid "
                      "FID, clean-fid KID x1000, torchmetrics SSIM(data_range=1), LPIPS SqueezeNet on [-1, 1], "
                      "torchmetrics PSNR per batch of 16; ground truth resized to the prediction with LANCZOS")
_VTON_FID_NOTE = ("FID: VtonEval prints pytorch-fid's and clean-fid's and the paper does not say which it reports; "
                  "both use the TF-FID Inception weights, as `fid` here, but resize to 299 differently "
                  "(pytorch-fid: bilinear, clean-fid: PIL bicubic): `fid` is the closest, not the same.")

VTON_PAIRED = Protocol(
    name="vton-paired",
    title="Virtual try-on, paired (same garment): VITON-HD / DressCode",
    metrics=("fid", "kid", "ssim_vtoneval", "ssim_gaussian", "lpips", "psnr"),
    fid_extractor="tf-inception",
    lpips_net="squeeze",
    ground_truth_resize="lanczos",
    needs_ground_truth=True,
    real_set="the test person images (the ground truth)",
    real_set_defaults_to_ground_truth=True,
    split="test_paired",
    one_image_per_target=True,
    literature=(PublishedResult("Leffa", "VITON-HD", "1024x768", {"fid": 4.54}, VTONEVAL_EVALUATOR,
                                note=_VTON_FID_NOTE),
                PublishedResult("Leffa", "DressCode", "1024x768", {"fid": 2.06}, VTONEVAL_EVALUATOR,
                                note=_VTON_FID_NOTE)),
    notes=("`ssim_vtoneval` is Leffa's evaluator's SSIM (VtonEval calls torchmetrics' "
           "StructuralSimilarityIndexMeasure(data_range=1) on [0, 1] images): its mean also covers the 5-pixel "
           "border, filtered on reflect padding (torchmetrics >= 1.4.2). `ssim_gaussian` leaves that border "
           "out, as scikit-image and torchmetrics before 1.4.2 do; VtonEval and Leffa pin no torchmetrics "
           "version, so a number computed with an older one matches `ssim_gaussian`.",
           "LPIPS: SqueezeNet on [-1, 1], the mean over images, as VtonEval. KID: shown x1000, the scale "
           "VtonEval prints clean-fid's KID in (metrics.json holds the raw value).",
           "PSNR: the mean of per-image PSNR. VtonEval's is torchmetrics' PSNR of each batch of 16 (one MSE "
           "pooled over the batch), averaged over batches: not the same number."))

VTON_UNPAIRED = Protocol(
    name="vton-unpaired",
    title="Virtual try-on, unpaired (another garment): VITON-HD / DressCode",
    metrics=("fid", "kid"),
    fid_extractor="tf-inception",
    lpips_net="squeeze",
    ground_truth_resize="lanczos",
    needs_ground_truth=False,
    real_set="the test person images",
    real_set_defaults_to_ground_truth=True,
    split="test_unpaired",
    literature=(PublishedResult("Leffa", "VITON-HD", "1024x768", {"fid": 8.52}, VTONEVAL_EVALUATOR,
                                note=_VTON_FID_NOTE),
                PublishedResult("Leffa", "DressCode", "1024x768", {"fid": 4.48}, VTONEVAL_EVALUATOR,
                                note=_VTON_FID_NOTE)),
    notes=("KID: shown x1000, the scale VtonEval prints clean-fid's KID in (metrics.json holds the raw "
           "value).",))
