"""DeepFashion's evaluation protocol (CFLD / PIDM / GFLA) and the numbers published under it."""

from __future__ import annotations

from leffa_pl.datasets.deepfashion.reader import PAIR_FILES, SPLIT_LISTS
from leffa_pl.evaluation.protocols import Protocol, PublishedResult

# The evaluators behind the published numbers, read at these commits (docs/evaluation.md).
PIDM_EVALUATOR = ("ankanbhunia/PIDM utils/metrics.py (e4f1d88): FID with `inception.InceptionV3` (pytorch-fid's "
                  "API; the module is not in the repository), lpips AlexNet, scikit-image `ssim` (uniform 51, data "
                  "range 1) and `ssim_256` (Gaussian sigma 1.2)")
CFLD_EVALUATOR = ("YanzuoLu/CFLD models/metrics.py (f2ea2a7): torchvision Inception-v3 FID, lpips AlexNet on "
                  "[0, 1] (normalize=True), per-image PSNR (data range 1), scikit-image `ssim` (uniform 51) and "
                  "`ssim_256` (Gaussian sigma 1.5, data range max - min of the prediction)")
LEFFA_POSE_EVALUATOR = "not published (Leffa's README names VtonEval, a try-on evaluator, only)"
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

PROTOCOL = Protocol(
    name="deepfashion",
    title="DeepFashion pose transfer (CFLD / PIDM / GFLA protocol)",
    metrics=("fid", "ssim_gaussian", "ssim_uniform51", "lpips", "psnr"),
    fid_extractor="torchvision-inception",
    lpips_net="alex",
    ground_truth_resize="bicubic",
    needs_ground_truth=True,
    real_set=f"all DeepFashion training images of {SPLIT_LISTS['train']} (48,674 in the released "
             "split), resized like the ground truth",
    real_set_defaults_to_ground_truth=False,
    split="test",
    literature=_DEEPFASHION_LITERATURE,
    notes=(f"The protocol generates every test pair of {PAIR_FILES['test']} (8,570 in the released "
           "split; the published numbers are on those) and scores every image.",
           "The papers do not say which SSIM variant their tables use; CFLD's and PIDM's evaluators print "
           "both (`ssim` = `ssim_uniform51`; `ssim_256`, close to `ssim_gaussian`)."))
