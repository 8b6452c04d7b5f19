"""Every recipe of the KD benchmark (projects/kd_benchmark/configs/) loads on the toolkit's
synthetic pair and builds, teacher included (random weights, no feature cache: the benchmark's
cache folder under output/ belongs to its real teacher)."""
from pathlib import Path

import pytest
import torch
from detectron2.modeling import build_model

import dla_kd  # noqa: F401
from dla_kd.config import load_config

PROJECT = Path(__file__).resolve().parents[1]
REPO = PROJECT.parents[1]
RECIPES = sorted((PROJECT / "configs").glob("*.yaml"))
PAIR_BASE = REPO / "configs" / "synthetic" / "bench" / "distill" / "Base-Distill-R_50-to-MNv3.yaml"
OPTS = ["MODEL.DEVICE", "cpu", "DISTILL.TEACHER.ALLOW_RANDOM_INIT", "True", "DISTILL.TEACHER.WEIGHTS", "",
        "DISTILL.TEACHER.FEATURE_CACHE.DIR", "", "DISTILL.TEACHER.SANITY_CHECK.ENABLED", "False"]


def test_the_recipes_are_the_published_rows():
    """kd_report names a row by its recipe's file name: the recipes are the published runs."""
    published = {p.name for p in (PROJECT / "results" / "runs").iterdir()} - {"teacher", "student"}
    assert {p.stem for p in RECIPES} == published


@pytest.mark.parametrize("path", RECIPES, ids=[p.stem for p in RECIPES])
def test_recipe_builds_on_the_synthetic_pair(path):
    cfg = load_config(str(path), OPTS)
    pair = load_config(str(PAIR_BASE), OPTS)
    assert cfg.MODEL.META_ARCHITECTURE == "DistillGeneralizedRCNN"
    # Same pair and schedule for every row: only DISTILL differs from the base.
    assert cfg.DISTILL.TEACHER.CONFIG == pair.DISTILL.TEACHER.CONFIG
    assert cfg.MODEL.dump() == pair.MODEL.dump() and cfg.SOLVER.dump() == pair.SOLVER.dump()
    assert cfg.INPUT.dump() == pair.INPUT.dump() and cfg.DATASETS.dump() == pair.DATASETS.dump()
    torch.manual_seed(0)
    model = build_model(cfg)
    assert sum(p.numel() for p in model.student.parameters()) > 0
