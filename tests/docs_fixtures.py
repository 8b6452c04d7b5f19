"""Helpers of the tests that run the documentation's commands (tests/test_docs*.py): the overrides
that make a documented run small, stand-ins for Detectron2's ImageNet files, and a datasets folder
shaped like DocLayNet's.

The overrides only make a run small (CPU, one iteration of one image, 128-px images, few RoIs; the
learning rate scaled to the batch of 1) or skip what a one-iteration teacher cannot pass (its AP
check): a documented command keeps its config, weights and datasets.
"""
import json
import os
import pickle
import shutil

import torch
from detectron2.layers import ShapeSpec
from detectron2.modeling.backbone.resnet import build_resnet_backbone

from dla_kd.config import get_dla_kd_cfg
from dla_kd.data.synthetic import generate_dataset

# --- overrides: small, CPU ------------------------------------------------------------------------
TEST_SIZE = ["MODEL.DEVICE", "cpu", "INPUT.MIN_SIZE_TEST", "128", "INPUT.MAX_SIZE_TEST", "160",
             "MODEL.RPN.POST_NMS_TOPK_TEST", "64"]
TRAIN_1 = TEST_SIZE + [
    "SOLVER.MAX_ITER", "1", "SOLVER.IMS_PER_BATCH", "1", "SOLVER.BASE_LR", "0.00125",
    "INPUT.MIN_SIZE_TRAIN", "(128,)", "INPUT.MAX_SIZE_TRAIN", "160",
    "MODEL.RPN.POST_NMS_TOPK_TRAIN", "64", "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "32",
    "DATALOADER.NUM_WORKERS", "0",
]
# The teacher of a one-iteration run is at chance: its AP check would (rightly) stop distillation.
DISTILL_1 = TRAIN_1 + ["DISTILL.TEACHER.SANITY_CHECK.ENABLED", "False"]

# --- files ---------------------------------------------------------------------------------------
MSRA_BRANCH = {"conv1": "branch2a", "conv2": "branch2b", "conv3": "branch2c", "shortcut": "branch1"}


def _msra_name(module: str) -> str:
    """Detectron2 ResNet module name -> MSRA blob prefix ("res3.1.conv2" -> "res3_1_branch2b")."""
    if module == "stem.conv1":
        return "conv1"
    stage, block, conv = module.split(".")
    return f"{stage}_{block}_{MSRA_BRANCH[conv]}"


def imagenet_standin(path: str, depth: int, seed: int = 0) -> str:
    """A stand-in for Detectron2's ImageNetPretrained/MSRA/R-<depth>.pkl: the same blob names
    (conv weights ``*_w``, frozen BatchNorm as scale ``*_bn_s`` and shift ``*_bn_b``), random
    conv weights, and BatchNorm folded from statistics measured on random pixel-scale pages, so
    that a detector built on it starts with finite, moderate losses."""
    cfg = get_dla_kd_cfg()
    cfg.MODEL.RESNETS.DEPTH, cfg.MODEL.RESNETS.NORM = depth, "BN"
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
    cfg.MODEL.BACKBONE.FREEZE_AT = 0
    torch.manual_seed(seed)
    net = build_resnet_backbone(cfg, ShapeSpec(channels=3)).train()
    norms = {name[: -len(".norm")]: m for name, m in net.named_modules() if isinstance(m, torch.nn.BatchNorm2d)}
    for bn in norms.values():
        bn.momentum = None  # cumulative average over the calibration batches
    mean = torch.tensor(cfg.MODEL.PIXEL_MEAN).view(1, 3, 1, 1)
    with torch.no_grad():
        for _ in range(3):
            net(torch.rand(2, 3, 128, 128) * 255 - mean)
    blobs = {}
    for module, bn in norms.items():
        prefix = "res_conv1" if module == "stem.conv1" else _msra_name(module)
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        blobs[prefix + "_bn_s"] = scale.detach().numpy()
        blobs[prefix + "_bn_b"] = (bn.bias - bn.running_mean * scale).detach().numpy()
        conv = net.get_submodule(module)
        blobs[_msra_name(module) + "_w"] = conv.weight.detach().numpy()
    with open(path, "wb") as f:
        pickle.dump(blobs, f)
    return path


def doclaynet_layout(root: str, pages: dict, size=(256, 256)) -> None:
    """``root/DocLayNet/COCO/<split>.json`` + ``root/DocLayNet/PNG/`` as DocLayNet_core.zip unpacks,
    with synthetic DocLayNet-style pages (``pages``: split -> number of pages)."""
    coco, png = os.path.join(root, "DocLayNet", "COCO"), os.path.join(root, "DocLayNet", "PNG")
    os.makedirs(coco), os.makedirs(png)
    scratch = os.path.join(root, ".synthetic")
    for seed, (split, n) in enumerate(pages.items()):
        data = json.load(open(generate_dataset("doclaynet", n, scratch, seed=seed, split=split,
                                               page_size=size, show_progress=False)))
        for image in data["images"]:
            name = f"{split}_{os.path.basename(image['file_name'])}"
            shutil.copy(os.path.join(scratch, split, image["file_name"]), os.path.join(png, name))
            image["file_name"] = name
        with open(os.path.join(coco, f"{split}.json"), "w") as f:
            json.dump(data, f)
    shutil.rmtree(scratch)
