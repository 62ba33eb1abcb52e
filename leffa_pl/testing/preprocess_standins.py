"""Random-weight stand-ins of the preprocessing networks with the real interfaces, built by tests and benchmarks:
SCHP ONNX files (input ``input.1``, outputs parsing / fusion / edge at a quarter of the input size), a
TorchScript module returning DensePose's (boxes, coarse_segm, fine_segm, u, v), and a tiny ViTPose with a
tiny transformers detector (YOLOS) saved with ``save_pretrained``. Their outputs are meaningless; they test
the loading, the signatures and the plumbing. The DensePose stand-in finds nobody on a blank photo.

``schp_palette_onnx`` is a SCHP stand-in whose labels mean something: it labels each 4x4 block of its input by
the nearest of a few prototype colours, so a photo painted in those colours parses as painted (the golden
fixtures of tests/golden/maps run the Leffa app's own parsing code with it)."""

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


def schp_palette_onnx(path: Path, colours: dict[tuple[int, int, int], int], labels: int, size: int) -> Path:
    """SCHP's ONNX signature; the logit of a label is the softmax weight (sharpness 50) of the prototype RGB
    ``colours`` mapped to it, nearest in SCHP's normalised BGR input space, on 4x4 block means."""
    from leffa_pl.preprocess.parsing import BGR_MEAN, BGR_STD

    prototypes = (np.array(list(colours), np.float32)[:, ::-1] / 255.0 - BGR_MEAN) / BGR_STD
    count = len(prototypes)
    # -|x - p|^2 up to a term common to all prototypes: 2 p.x - |p|^2
    distance_w = numpy_helper.from_array((2 * prototypes).reshape(count, 3, 1, 1).astype(np.float32), "dw")
    distance_b = numpy_helper.from_array(-(prototypes ** 2).sum(1).astype(np.float32), "db")
    sharpness = numpy_helper.from_array(np.array(50.0, np.float32), "sharpness")
    grouping = np.zeros((labels, count, 1, 1), np.float32)
    grouping[list(colours.values()), np.arange(count)] = 1
    edge = numpy_helper.from_array(np.zeros((2, labels, 1, 1), np.float32), "edge_w")
    nodes = [helper.make_node("AveragePool", ["input.1"], ["pooled"], kernel_shape=[4, 4], strides=[4, 4]),
             helper.make_node("Conv", ["pooled", "dw", "db"], ["closeness"]),
             helper.make_node("Mul", ["closeness", "sharpness"], ["sharp"]),
             helper.make_node("Softmax", ["sharp"], ["weights"], axis=1),
             helper.make_node("Conv", ["weights", "group_w"], ["fusion"]),
             helper.make_node("Identity", ["fusion"], ["parsing"]),
             helper.make_node("Conv", ["fusion", "edge_w"], ["edge"])]
    initializers = [distance_w, distance_b, sharpness, numpy_helper.from_array(grouping, "group_w"), edge]
    quarter = size // 4
    outputs = [helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, channels, quarter, quarter])
               for name, channels in (("parsing", labels), ("fusion", labels), ("edge", 2))]
    graph = helper.make_graph(nodes, "schp_palette_standin",
                              [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, size, size])],
                              outputs, initializer=initializers)
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
