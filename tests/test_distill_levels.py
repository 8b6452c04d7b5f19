"""Each feature loss reads its own ``DISTILL.<NAME>.IN_FEATURES`` (its reference's FPN levels by
default); an empty list falls back to ``DISTILL.FEATURE.IN_FEATURES``."""
from types import SimpleNamespace

import pytest
from detectron2.layers import ShapeSpec

import dla_kd  # noqa: F401
from dla_kd.config import get_dla_kd_cfg
from dla_kd.distill import DISTILLER_REGISTRY
from dla_kd.modeling.meta_arch.distill_rcnn import _teacher_levels_needed

P2_P5 = ("p2", "p3", "p4", "p5")
P2_P6 = ("p2", "p3", "p4", "p5", "p6")
# mmrazor pkd_fpn_faster-rcnn (neck outputs 0..3), yzd-v/FGD and yzd-v/MGD two-stage configs
# (neck.fpn_convs.0..3), DeFeat (all 5 neck outputs); the others fall back to p2..p6.
REFERENCE_LEVELS = {
    "pkd": P2_P5, "fgd": P2_P5, "mgd": P2_P5, "defeat": P2_P6,
    "cwd": P2_P6, "fitnet": P2_P6, "reviewkd": P2_P6, "simkd": P2_P6,
}


def _model():
    """What a feature distiller reads of a model: its backbone's output shapes (p2..p6)."""
    shapes = {f"p{i}": ShapeSpec(channels=16, stride=2 ** i) for i in range(2, 7)}
    return SimpleNamespace(backbone=SimpleNamespace(output_shape=lambda: dict(shapes)))


def _build(name, **levels):
    cfg = get_dla_kd_cfg()
    for key, names in levels.items():
        cfg.DISTILL[key].IN_FEATURES = list(names)
    return DISTILLER_REGISTRY.get(name)(cfg, _model(), _model())


@pytest.mark.parametrize("name", sorted(REFERENCE_LEVELS))
def test_default_levels_are_the_references(name):
    assert _build(name).in_features == REFERENCE_LEVELS[name]


@pytest.mark.parametrize("name", sorted(REFERENCE_LEVELS))
def test_own_key_sets_the_levels_and_empty_falls_back(name):
    own = {name.upper(): ["p5", "p3"]}
    assert _build(name, **own).in_features == ("p3", "p5")  # sorted fine to coarse
    fallback = {name.upper(): [], "FEATURE": ["p4", "p6"]}
    assert _build(name, **fallback).in_features == ("p4", "p6")


def test_feature_key_does_not_move_losses_with_their_own_levels():
    assert _build("pkd", FEATURE=["p4"]).in_features == P2_P5


def test_unknown_level_names_the_key_in_use():
    with pytest.raises(KeyError, match="DISTILL.PKD.IN_FEATURES has 'p7'"):
        _build("pkd", PKD=["p2", "p7"])
    with pytest.raises(KeyError, match="DISTILL.FEATURE.IN_FEATURES has 'p7'"):
        _build("cwd", FEATURE=["p7"])


def test_teacher_cache_levels_are_the_union_of_the_losses_levels():
    pkd, cwd = _build("pkd"), _build("cwd")
    assert _teacher_levels_needed(None, {"pkd": pkd}) == list(P2_P5)
    assert _teacher_levels_needed(None, {"pkd": pkd, "cwd": cwd}) == list(P2_P6)
