"""Random-weight stand-ins of the preprocessing networks with the real interfaces, built in the tests:
SCHP ONNX files (input ``input.1``, outputs parsing / fusion / edge at a quarter of the input size), a
TorchScript module returning DensePose's (boxes, coarse_segm, fine_segm, u, v), and a tiny ViTPose with a
tiny transformers detector (YOLOS) saved with ``save_pretrained``. Their outputs are meaningless; they test
the loading, the signatures and the plumbing. The DensePose stand-in finds nobody on a blank photo."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper, numpy_helper


def schp_onnx(path: Path, labels: int, size: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    nodes, weights, outputs = [], [], []
    for name, channels in (("parsing", labels), ("fusion", labels), ("edge", 2)):
        weight = numpy_helper.from_array(rng.normal(0, 1, (channels, 3, 4, 4)).astype(np.float32), f"{name}_w")
        nodes.append(helper.make_node("Conv", ["input.1", f"{name}_w"], [name], kernel_shape=[4, 4], strides=[4, 4]))
        weights.append(weight)
        outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, channels, size // 4, size // 4]))
    graph = helper.make_graph(nodes, "schp_standin",
                              [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, size, size])],
                              outputs, initializer=weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


class DensePoseStandIn(torch.nn.Module):
    def __init__(self, seed: int = 0):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.heads = torch.nn.Conv2d(3, 2 + 3 * 25, 3, padding=1)
        with torch.no_grad():
            self.heads.weight.copy_(torch.randn(self.heads.weight.shape, generator=generator))
            self.heads.bias.zero_()
            self.heads.bias[1] = 20.0  # coarse segmentation: foreground everywhere in the box

    def forward(self, image: torch.Tensor):
        x = image.float()[None] / 255.0
        height, width = image.shape[1], image.shape[2]
        if bool(x.std() < 0.02):  # a blank photo: nobody
            empty = torch.zeros(0, 25, 112, 112)
            return torch.zeros(0, 4), torch.zeros(0, 2, 112, 112), empty, empty, empty
        out = self.heads(F.interpolate(x, size=[112, 112], mode="bilinear", align_corners=False))
        box = torch.tensor([[0.1 * width, 0.05 * height, 0.9 * width, 0.95 * height]])
        return box, out[:, :2], out[:, 2:27], torch.sigmoid(out[:, 27:52]), torch.sigmoid(out[:, 52:])


def densepose_torchscript(path: Path) -> Path:
    torch.jit.script(DensePoseStandIn()).save(str(path))
    return path


def vitpose_folders(root: Path) -> tuple[Path, Path]:
    """(pose model folder, detector folder)."""
    from transformers import (
        VitPoseBackboneConfig,
        VitPoseConfig,
        VitPoseForPoseEstimation,
        VitPoseImageProcessor,
        YolosConfig,
        YolosForObjectDetection,
        YolosImageProcessor,
    )

    torch.manual_seed(0)
    pose_dir, detector_dir = root / "vitpose", root / "detector"
    backbone = VitPoseBackboneConfig(image_size=[64, 48], patch_size=[16, 16], hidden_size=32, num_hidden_layers=1,
                                     num_attention_heads=2, mlp_ratio=2, out_indices=[1])
    VitPoseForPoseEstimation(VitPoseConfig(backbone_config=backbone, num_labels=17)).save_pretrained(pose_dir)
    VitPoseImageProcessor(size={"height": 64, "width": 48}).save_pretrained(pose_dir)
    detector = YolosConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                           image_size=[64, 48], patch_size=16, num_detection_tokens=8,
                           id2label={0: "person", 1: "other"}, label2id={"person": 0, "other": 1})
    model = YolosForObjectDetection(detector)
    with torch.no_grad():  # random weights score every class alike: make the boxes persons
        model.class_labels_classifier.layers[-1].bias[0] = 5.0
    model.save_pretrained(detector_dir)
    YolosImageProcessor(size={"shortest_edge": 64, "longest_edge": 64}).save_pretrained(detector_dir)
    return pose_dir, detector_dir


def build_all(root: Path) -> dict[str, Path]:
    """Every stand-in under ``root``, by the name of the command-line option that takes it."""
    root.mkdir(parents=True, exist_ok=True)
    pose, detector = vitpose_folders(root)
    return {"parser_atr": schp_onnx(root / "parsing_atr.onnx", 18, 512, seed=1),
            "parser_lip": schp_onnx(root / "parsing_lip.onnx", 20, 473, seed=2),
            "densepose_model": densepose_torchscript(root / "densepose.torchscript"),
            "pose_model": pose, "detector": detector}


def cli_options(paths: dict[str, Path]) -> list[str]:
    """The stand-ins as command-line options (detector threshold 0: its random boxes always count)."""
    options = []
    for key, path in paths.items():
        options += [f"--{key.replace('_', '-')}", str(path)]
    return options + ["--box-threshold", "0", "--offline"]
