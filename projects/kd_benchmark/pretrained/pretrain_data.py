"""The pre-training corpus of the pretrained-regime KD benchmark (``protocol.md``): class-agnostic
layout regions on synthetic pages of both styles, drawn from seeds the benchmark's pages never use.

``kd_pretrain_regions``: ``synthetic_doclaynet_pretrain`` (5000 pages, seed 20) +
``synthetic_publaynet_pretrain`` (5000 pages, seed 21), every instance relabelled as the one class
``region``. Class-agnostic on purpose: the backbone learns what layout regions look like (text
texture, rules, pictures, tables, their edges) without the target task's label semantics, as an
ImageNet backbone brings generic features and no layout classes. Only the bottom-up backbone is
kept (``export_weights.py``); the FPN and the heads start fresh in fine-tuning.
"""
import copy
from typing import Dict, List

from detectron2.data import DatasetCatalog, MetadataCatalog

from dla_kd.data.builtin import register_synthetic

# name -> (style, split, number of pages, seed)
PRETRAIN_SPLITS = {
    "synthetic_doclaynet_pretrain": ("doclaynet", "pretrain", 5000, 20),
    "synthetic_publaynet_pretrain": ("publaynet", "pretrain", 5000, 21),
}
REGIONS = "kd_pretrain_regions"


def class_agnostic(dicts: List[Dict]) -> List[Dict]:
    """Copies of Detectron2 dataset dicts with every annotation's ``category_id`` set to 0."""
    out = copy.deepcopy(dicts)
    for d in out:
        for a in d.get("annotations", []):
            a["category_id"] = 0
    return out


def load_regions() -> List[Dict]:
    dicts = []
    for name in PRETRAIN_SPLITS:
        dicts.extend(class_agnostic(DatasetCatalog.get(name)))
    return dicts


def register_pretrain_corpus() -> None:
    """Register both styles' pre-training splits and their class-agnostic union (idempotent)."""
    for name, (style, split, num_images, seed) in PRETRAIN_SPLITS.items():
        if name not in DatasetCatalog.list():
            register_synthetic(name, style, split, num_images, seed)
    if REGIONS not in DatasetCatalog.list():
        DatasetCatalog.register(REGIONS, load_regions)
        MetadataCatalog.get(REGIONS).set(thing_classes=["region"], thing_colors=[(31, 119, 180)], synthetic=True)
