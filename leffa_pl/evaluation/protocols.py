"""The evaluation protocols of the literature and the numbers published under them."""

from __future__ import annotations

from dataclasses import dataclass, field

from leffa_pl.data import deepfashion


@dataclass(frozen=True)
class PublishedResult:
    """One published row; ``values`` uses the metric names of ``leffa_pl.metrics.suite``."""

    method: str
    dataset: str
    resolution: str
    values: dict[str, float]
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


_DEEPFASHION_LITERATURE = (
    PublishedResult("PIDM", "DeepFashion", "256x176", {"fid": 6.37, "ssim": 0.731, "lpips": 0.168}),
    PublishedResult("CFLD", "DeepFashion", "256x176", {"fid": 6.80, "ssim": 0.738, "lpips": 0.152, "psnr": 18.2}),
    PublishedResult("Leffa", "DeepFashion", "256x176", {"fid": 5.71, "ssim": 0.732, "lpips": 0.114}),
    PublishedResult("PIDM", "DeepFashion", "512x352", {"fid": 5.84, "ssim": 0.742, "lpips": 0.177}),
    PublishedResult("CFLD", "DeepFashion", "512x352", {"fid": 7.15, "ssim": 0.748, "lpips": 0.182}),
    PublishedResult("Leffa", "DeepFashion", "512x352", {"fid": 4.23, "ssim": 0.755, "lpips": 0.119}),
    PublishedResult("Leffa without the Leffa loss", "DeepFashion", "512x352",
                    {"fid": 5.72, "ssim": 0.744, "lpips": 0.153}),
)

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
               "The papers do not say which SSIM variant their tables use; CFLD's evaluator reports both "
               "(`ssim` = uniform 51 window, `ssim_256` = Gaussian sigma 1.5).")),
    "vton-paired": Protocol(
        name="vton-paired",
        title="Virtual try-on, paired (same garment): VITON-HD / DressCode",
        metrics=("fid", "kid", "ssim_gaussian", "lpips", "psnr"),
        fid_extractor="tf-inception",
        lpips_net="squeeze",
        ground_truth_resize="lanczos",
        needs_ground_truth=True,
        real_set="the test person images (the ground truth)",
        real_set_defaults_to_ground_truth=True,
        split="test_paired",
        one_image_per_target=True,
        literature=(PublishedResult("Leffa", "VITON-HD", "1024x768", {"fid": 4.54}),
                    PublishedResult("Leffa", "DressCode", "1024x768", {"fid": 2.06})),
        notes=("Leffa's evaluator used torchmetrics' SSIM, whose mean also covers a 5-pixel border filtered "
               "on reflect padding; `ssim_gaussian` leaves that border out, as scikit-image does.",
               "Leffa's FID/KID came from pytorch-fid and clean-fid (TF-FID Inception weights, as here).")),
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
        literature=(PublishedResult("Leffa", "VITON-HD", "1024x768", {"fid": 8.52}),
                    PublishedResult("Leffa", "DressCode", "1024x768", {"fid": 4.48})),
        notes=("Leffa's FID/KID came from pytorch-fid and clean-fid (TF-FID Inception weights, as here).",)),
}


def get_protocol(name: str) -> Protocol:
    """The protocol of that name (``deepfashion``, ``vton-paired``, ``vton-unpaired``)."""
    if name not in PROTOCOLS:
        raise ValueError(f"unknown protocol {name!r}; expected one of {sorted(PROTOCOLS)}")
    return PROTOCOLS[name]
