"""Every config under configs/ loads and builds, and its backbone(s) run on a small image.

``Base-*`` files are not built on their own: they are checked through their children (and each
must have one). Distillation configs (``DistillGeneralizedRCNN``) are built with a random teacher.
"""

import math
from pathlib import Path

import pytest
import torch
import yaml

import dla_kd  # noqa: F401
from detectron2.modeling import Backbone, build_model
from dla_kd.engine import load_config

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
ALL_YAML = sorted(CONFIG_DIR.rglob("*.yaml"))
CONFIGS = [p for p in ALL_YAML if not p.name.startswith("Base-")]
# No feature cache: a config's cache folder (e.g. the KD benchmark's, under output/) belongs to its
# real teacher; a random teacher's signature written there would stop the real runs.
DISTILL_OPTS = ["DISTILL.TEACHER.ALLOW_RANDOM_INIT", "True", "DISTILL.TEACHER.WEIGHTS", "",
                "DISTILL.TEACHER.FEATURE_CACHE.DIR", ""]
IMAGE_HW = (128, 160)
# Teachers and students every dataset folder provides (DiT-L: PubLayNet only).
MODEL_SET = {
    "cascade_mask_rcnn_DiT_B_FPN.yaml",
    "mask_rcnn_DiT_B_FPN.yaml",
    "mask_rcnn_ViT_B_16_FPN.yaml",
    "mask_rcnn_R_101_FPN_3x.yaml",
    "mask_rcnn_R_50_FPN_3x.yaml",
    "mask_rcnn_R_18_FPN_3x.yaml",
    "mask_rcnn_ViT_T_16_FPN.yaml",
    "mask_rcnn_ViT_S_16_FPN.yaml",
    "mask_rcnn_mobilenetv3_large_FPN.yaml",
}


def _opts(path: Path):
    opts = ["MODEL.DEVICE", "cpu"]
    peek = load_config(str(path), opts, freeze=False)
    if peek.MODEL.META_ARCHITECTURE == "DistillGeneralizedRCNN":
        opts += DISTILL_OPTS
    return opts


def _backbones(model):
    """The detector backbones of a model: ``backbone`` (plain) or ``*.backbone`` (student/teacher)."""
    return {
        name: m
        for name, m in model.named_modules()
        if isinstance(m, Backbone) and (name == "backbone" or name.endswith(".backbone"))
    }


@pytest.mark.parametrize("path", CONFIGS, ids=[str(p.relative_to(CONFIG_DIR)) for p in CONFIGS])
def test_config_builds_and_backbone_runs(path):
    cfg = load_config(str(path), _opts(path))
    model = build_model(cfg).eval()
    backbones = _backbones(model)
    assert backbones, f"{path}: no backbone found"
    for name, backbone in backbones.items():
        with torch.no_grad():
            features = backbone(torch.randn(1, 3, *IMAGE_HW))
        shapes = backbone.output_shape()
        assert set(features) == set(shapes), name
        for feature, tensor in features.items():
            stride, channels = shapes[feature].stride, shapes[feature].channels
            assert tuple(tensor.shape) == (
                1,
                channels,
                math.ceil(IMAGE_HW[0] / stride),
                math.ceil(IMAGE_HW[1] / stride),
            )
        assert set(cfg.MODEL.RPN.IN_FEATURES) <= set(features)
        assert IMAGE_HW[0] % backbone.size_divisibility == 0


def _bases(path: Path):
    with open(path) as f:
        base = (yaml.safe_load(f) or {}).get("_BASE_", [])
    return [(path.parent / b).resolve() for b in ([base] if isinstance(base, str) else base)]


@pytest.mark.parametrize("dataset", ["publaynet", "doclaynet", "prima"])
def test_every_base_file_is_used_by_a_built_config(dataset):
    used = set()
    stack = list(CONFIGS)
    while stack:
        for base in _bases(stack.pop()):
            assert base.is_file(), base
            if base not in used:
                used.add(base)
                stack.append(base)
    unused = [p for p in (CONFIG_DIR / dataset).glob("Base-*.yaml") if p.resolve() not in used]
    assert not unused, f"Base files no config builds: {unused}"


@pytest.mark.parametrize("dataset", ["publaynet", "doclaynet", "prima"])
def test_each_dataset_has_the_teachers_and_students(dataset):
    present = {p.name for p in (CONFIG_DIR / dataset).glob("*.yaml")}
    assert MODEL_SET <= present, sorted(MODEL_SET - present)


def test_flatten_config_gives_dotted_leaf_keys_of_nodes_and_plain_dicts():
    from dla_kd.config import flatten_config, get_dla_kd_cfg

    cfg = get_dla_kd_cfg()
    flat = dict(flatten_config(cfg))
    assert flat["DISTILL.MGD.WEIGHT"] == cfg.DISTILL.MGD.WEIGHT
    assert flat["DISTILL.MGD.SCHEDULE.STOP_ITER"] == -1
    assert not any(isinstance(v, dict) for v in flat.values())
    # a loaded config.yaml is a plain nested dict; the prefix goes before every key
    assert list(flatten_config({"A": {"B": 1, "C": {"D": [2]}}, "E": "x"}, "P.")) == [
        ("P.A.B", 1), ("P.A.C.D", [2]), ("P.E", "x")]
