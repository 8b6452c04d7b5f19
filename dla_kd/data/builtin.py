"""Registration of the layout datasets in Detectron2's ``DatasetCatalog``/``MetadataCatalog``.

Paths are resolved when a dataset is *used*, from ``$DETECTRON2_DATASETS`` (default
``./datasets``), in each dataset's published layout (see ``datasets/README.md``):

========================  ===============================  ==========================
name                      annotations                      images
========================  ===============================  ==========================
publaynet_{train,val}     publaynet/{split}.json           publaynet/{split}/
doclaynet_{train,val,test} DocLayNet/COCO/{split}.json     DocLayNet/PNG/
synthetic_{style}_{split} synthetic/{style}/{split}.json   synthetic/{style}/{split}/
========================  ===============================  ==========================

DocLayNet splits keep the primary annotation only (``precedence == 0``); the
``doclaynet_{split}_all_annotators`` variants keep the redundant double/triple annotations too.
Synthetic splits are generated on first use when absent (deterministic for their seed).
"""
import fcntl
import logging
import os
from contextlib import contextmanager
from typing import Callable, Dict, List

from detectron2.data import DatasetCatalog, MetadataCatalog

from .categories import get_categories, metadata_from_categories
from .coco_layout import load_layout_coco_json

logger = logging.getLogger(__name__)


def datasets_root() -> str:
    """The datasets root: ``$DETECTRON2_DATASETS`` or ``./datasets``."""
    return os.path.expanduser(os.getenv("DETECTRON2_DATASETS", "datasets"))


# name -> (category table name, json path relative to the root, image folder relative to the root)
PUBLAYNET_SPLITS = {
    f"publaynet_{s}": ("publaynet", f"publaynet/{s}.json", f"publaynet/{s}") for s in ("train", "val")
}
DOCLAYNET_SPLITS = {
    f"doclaynet_{s}": ("doclaynet", f"DocLayNet/COCO/{s}.json", "DocLayNet/PNG") for s in ("train", "val", "test")
}
# name -> (style, split, number of pages, seed) generated under <root>/synthetic/<style>/
SYNTHETIC_SPLITS = {
    f"synthetic_{style}_{split}": (style, split, num_images, seed)
    for style in ("publaynet", "doclaynet")
    # train1k: the KD benchmark's training pages (configs/synthetic/bench, results/kd_benchmark)
    for split, num_images, seed in (("train", 400, 0), ("val", 100, 1), ("train1k", 1000, 0))
}


def _register(name: str, table: str, loader: Callable[[], List[Dict]], **extra_metadata) -> None:
    DatasetCatalog.register(name, loader)
    MetadataCatalog.get(name).set(
        evaluator_type="coco", category_table=table, **metadata_from_categories(get_categories(table)), **extra_metadata
    )


def register_layout_coco(
    name: str, table: str, json_file: str, image_root: str, precedence_policy: str = "primary"
) -> None:
    """Register a COCO-format layout dataset. Relative paths are resolved against the datasets
    root at use time."""

    def load():
        root = datasets_root()
        return load_layout_coco_json(
            os.path.join(root, json_file),
            os.path.join(root, image_root),
            get_categories(table),
            name,
            precedence_policy=precedence_policy,
        )

    _register(name, table, load)


@contextmanager
def _file_lock(path: str):
    """Inter-process lock (several ranks may ask for the same synthetic split at once)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def ensure_synthetic_split(out_dir: str, style: str, split: str, num_images: int, seed: int) -> str:
    """Generate ``<out_dir>/<split>.json`` (+ images) unless it exists; return the json path."""
    json_file = os.path.join(out_dir, f"{split}.json")
    with _file_lock(os.path.join(out_dir, f".{split}.lock")):
        if not os.path.isfile(json_file):
            from .synthetic import generate_dataset

            logger.info(f"Generating synthetic {style} split {split!r} ({num_images} pages, seed {seed}) in {out_dir}")
            generate_dataset(style, num_images, out_dir, seed, split=split)
    return json_file


def register_synthetic(name: str, style: str, split: str, num_images: int, seed: int, root: str = None) -> None:
    """Register a synthetic split stored in ``<root>/synthetic/<style>/`` (root defaults to the
    datasets root at use time), generating it on first use."""

    def load():
        out_dir = os.path.join(root or datasets_root(), "synthetic", style)
        json_file = ensure_synthetic_split(out_dir, style, split, num_images, seed)
        return load_layout_coco_json(json_file, os.path.join(out_dir, split), get_categories(style), name)

    _register(name, style, load, synthetic=True)


def register_all() -> None:
    for name, (table, json_file, image_root) in {**PUBLAYNET_SPLITS, **DOCLAYNET_SPLITS}.items():
        register_layout_coco(name, table, json_file, image_root)
    for name, (table, json_file, image_root) in DOCLAYNET_SPLITS.items():
        register_layout_coco(f"{name}_all_annotators", table, json_file, image_root, precedence_policy="all")
    for name, (style, split, num_images, seed) in SYNTHETIC_SPLITS.items():
        register_synthetic(name, style, split, num_images, seed)
    # PRImA: COCO jsons written by tools/convert_prima_to_coco.py from PRImA/XML (dla_kd/data/prima.py).
    for split in ("train", "val"):
        register_layout_coco(f"prima_{split}", "prima", f"PRImA/annotations-{split}.json", "PRImA/Images")
