"""The evaluation protocols of the literature and the numbers published under them."""

from __future__ import annotations

from dataclasses import dataclass, field

from leffa_pl.data import deepfashion


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


# The evaluators behind the published numbers, read at these commits (docs/evaluation.md).
PIDM_EVALUATOR = ("ankanbhunia/PIDM utils/metrics.py (e4f1d88): FID with `inception.InceptionV3` (pytorch-fid's "
                  "API; the module is not in the repository), lpips AlexNet, scikit-image `ssim` (uniform 51, data "
                  "range 1) and `ssim_256` (Gaussian sigma 1.2)")
CFLD_EVALUATOR = ("YanzuoLu/CFLD models/metrics.py (f2ea2a7): torchvision Inception-v3 FID, lpips AlexNet on "
                  "[0, 1] (normalize=True), per-image PSNR (data range 1), scikit-image `ssim` (uniform 51) and "
                  "`ssim_256` (Gaussian sigma 1.5, data range max - min of the prediction)")
LEFFA_POSE_EVALUATOR = "not published (Leffa's README names VtonEval, a try-on evaluator, only)"
VTONEVAL_EVALUATOR = ("franciszzj/VtonEval eval.py (a4fdbef), named in Leffa's README: pytorch-fid and clean-fid "
                      "FID, clean-fid KID x1000, torchmetrics SSIM(data_range=1), LPIPS SqueezeNet on [-1, 1], "
                      "torchmetrics PSNR per batch of 16; ground truth resized to the prediction with LANCZOS")
_SSIM_UNSAID = ("The paper does not say which of the evaluator's two SSIMs it reports: `ssim` is `ssim_uniform51`; "
                "`ssim_256` is close to `ssim_gaussian` ({}).")
_PIDM_NOTE = ("FID: if pytorch-fid's (TF-FID weights), closest here `--fid-extractor tf-inception`. "
              + _SSIM_UNSAID.format("but sigma 1.2"))
_CFLD_MATCHES = {"fid": "fid", "lpips": "lpips", "psnr": "psnr"}
_CFLD_NOTE = _SSIM_UNSAID.format("but its data range is the prediction's max - min, not 255")
_LEFFA_POSE_NOTE = ("Evaluator not published; compared in the paper with PIDM's and CFLD's numbers, so "
                    "presumably one of their evaluators.")
_DEEPFASHION_LITERATURE = (
    PublishedResult("PIDM", "DeepFashion", "256x176", {"fid": 6.37, "ssim": 0.731, "lpips": 0.168},
                    PIDM_EVALUATOR, {"lpips": "lpips"}, _PIDM_NOTE),
    PublishedResult("CFLD", "DeepFashion", "256x176", {"fid": 6.80, "ssim": 0.738, "lpips": 0.152, "psnr": 18.2},
                    CFLD_EVALUATOR, _CFLD_MATCHES, _CFLD_NOTE),
    PublishedResult("Leffa", "DeepFashion", "256x176", {"fid": 5.71, "ssim": 0.732, "lpips": 0.114},
                    LEFFA_POSE_EVALUATOR, note=_LEFFA_POSE_NOTE),
    PublishedResult("PIDM", "DeepFashion", "512x352", {"fid": 5.84, "ssim": 0.742, "lpips": 0.177},
                    PIDM_EVALUATOR, {"lpips": "lpips"}, _PIDM_NOTE),
    PublishedResult("CFLD", "DeepFashion", "512x352", {"fid": 7.15, "ssim": 0.748, "lpips": 0.182},
                    CFLD_EVALUATOR, _CFLD_MATCHES, _CFLD_NOTE),
    PublishedResult("Leffa", "DeepFashion", "512x352", {"fid": 4.23, "ssim": 0.755, "lpips": 0.119},
                    LEFFA_POSE_EVALUATOR, note=_LEFFA_POSE_NOTE),
    PublishedResult("Leffa without the Leffa loss", "DeepFashion", "512x352",
                    {"fid": 5.72, "ssim": 0.744, "lpips": 0.153}, LEFFA_POSE_EVALUATOR, note=_LEFFA_POSE_NOTE),
)
_VTON_FID_NOTE = ("FID: VtonEval prints pytorch-fid's and clean-fid's and the paper does not say which it reports; "
                  "both use the TF-FID Inception weights, as `fid` here, but resize to 299 differently "
                  "(pytorch-fid: bilinear, clean-fid: PIL bicubic): `fid` is the closest, not the same.")

PROTOCOLS: dict[str, Protocol] = {
    "deepfashion": Protocol(
        name="deepfashion",
        title="DeepFashion pose transfer (CFLD / PIDM / GFLA protocol)",
        metrics=("fid", "ssim_gaussian", "ssim_uniform51", "lpips", "psnr"),
        fid_extractor="torchvision-inception",
        lpips_net="alex",
        ground_truth_resize="bicubic",
        needs_ground_truth=True,
        real_set=f"all DeepFashion training images of {deepfashion.SPLIT_LISTS['train']} (48,674 in the released "
                 "split), resized like the ground truth",
        real_set_defaults_to_ground_truth=False,
        split="test",
        literature=_DEEPFASHION_LITERATURE,
        notes=(f"The protocol generates every test pair of {deepfashion.PAIR_FILES['test']} (8,570 in the released "
               "split; the published numbers are on those) and scores every image.",
               "The papers do not say which SSIM variant their tables use; CFLD's and PIDM's evaluators print "
               "both (`ssim` = `ssim_uniform51`; `ssim_256`, close to `ssim_gaussian`).")),
    "vton-paired": Protocol(
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
               "pooled over the batch), averaged over batches: not the same number.")),
    "vton-unpaired": Protocol(
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
               "value).",)),
}


def get_protocol(name: str) -> Protocol:
    """The protocol of that name (``deepfashion``, ``vton-paired``, ``vton-unpaired``)."""
    if name not in PROTOCOLS:
        raise ValueError(f"unknown protocol {name!r}; expected one of {sorted(PROTOCOLS)}")
    return PROTOCOLS[name]
