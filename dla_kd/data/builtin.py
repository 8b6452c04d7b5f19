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
Synthetic splits are generated on first use when absent (deterministic for their seed);
``synthetic_{style}_unlabeled`` registers only the page images of its split (for
``DATASETS.UNLABELED``); ``synthetic_publaynet_as_doclaynet_val`` is ``synthetic_publaynet_val``'s
pages labelled in DocLayNet's classes (another domain for a DocLayNet-style model);
``synthetic_doclaynet_unlabeled_pseudo`` the teacher's pseudo-labels of the unlabeled pages, once
``tools/pseudo_label.py`` wrote them (``SYNTHETIC_PSEUDO_LABELED``).

Pages of your own: :func:`register_unlabeled_pages` (folders of images and PDFs, no
annotations) and :func:`register_pseudo_labeled` (a teacher's detections written by
``tools/pseudo_label.py``, above a score threshold).
"""
import fcntl
import logging
import os
from contextlib import contextmanager
from typing import Callable, Dict, List, Optional, Sequence

from detectron2.data import DatasetCatalog, MetadataCatalog

from .categories import get_categories, metadata_from_categories
from .coco_layout import load_layout_coco_json
from .pseudo_labeled import load_pseudo_labeled
from .synthetic.styles import get_style
from .unlabeled import load_unlabeled_pages, without_annotations

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
    # train1k: the KD benchmark's training pages (configs/synthetic/bench, projects/kd_benchmark)
    for split, num_images, seed in (("train", 400, 0), ("val", 100, 1), ("train1k", 1000, 0))
}
# The KD benchmark's held-out test pages (an unseen seed; projects/kd_benchmark/pretrained/protocol.md):
# headline numbers only, never a choice.
SYNTHETIC_SPLITS["synthetic_doclaynet_test"] = ("doclaynet", "test", 500, 3)
# The PubLayNet-style validation pages (same images as synthetic_publaynet_val) labelled in DocLayNet's
# classes: a DocLayNet-style model scored on the other domain (configs/synthetic/unlabeled).
SYNTHETIC_SPLITS["synthetic_publaynet_as_doclaynet_val"] = ("publaynet_as_doclaynet", "val", 100, 1)
# name -> (style, split, number of pages, seed): synthetic pages registered without annotations
# (DATASETS.UNLABELED); "publaynet" pages are the other-domain case for a DocLayNet-style teacher.
SYNTHETIC_UNLABELED_SPLITS = {
    f"synthetic_{style}_unlabeled": (style, "unlabeled", 5000, 2) for style in ("publaynet", "doclaynet")
}
# name -> (category table, pseudo-label file relative to the root, score threshold): files written by
# tools/pseudo_label.py (README "Distil on your own PDFs"; configs/synthetic/unlabeled/kd_pseudo_offline.yaml
# trains on this one, the benchmark teacher's labels of synthetic_doclaynet_unlabeled).
SYNTHETIC_PSEUDO_LABELED = {
    "synthetic_doclaynet_unlabeled_pseudo": ("doclaynet", "synthetic/doclaynet/unlabeled_pseudo/pseudo_labels.json", 0.5),
}
# Rendered PDF pages of register_unlabeled_pages go here unless a cache folder is given.
ENV_PAGE_CACHE = "DLA_KD_PAGE_CACHE"


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
    """Generate ``<out_dir>/<split>.json`` (+ images) unless it is there and complete; return the
    json path. A json drawn with other settings (e.g. fewer or smaller pages, drawn on purpose with
    tools/make_synthetic_dataset.py) is used as it is, with a warning naming the differences; it
    is never overwritten."""
    json_file = os.path.join(out_dir, f"{split}.json")
    with _file_lock(os.path.join(out_dir, f".{split}.lock")):
        from .synthetic import generate_dataset

        if not os.path.isfile(json_file):
            logger.info(f"Generating synthetic {style} split {split!r} ({num_images} pages, seed {seed}) in {out_dir}")
        generate_dataset(style, num_images, out_dir, seed, split=split, other_settings="keep")
    return json_file


def register_synthetic(name: str, style: str, split: str, num_images: int, seed: int, root: str = None) -> None:
    """Register a synthetic split stored in ``<root>/synthetic/<style>/`` (root defaults to the
    datasets root at use time), generating it on first use."""

    table = get_style(style).name

    def load():
        out_dir = os.path.join(root or datasets_root(), "synthetic", style)
        json_file = ensure_synthetic_split(out_dir, style, split, num_images, seed)
        return load_layout_coco_json(json_file, os.path.join(out_dir, split), get_categories(table), name)

    _register(name, table, load, synthetic=True)


def register_synthetic_unlabeled(name: str, style: str, split: str, num_images: int, seed: int,
                                 root: str = None) -> None:
    """Register the page images of a synthetic split (generated on first use, see
    :func:`register_synthetic`) without their annotations, as unlabeled pages."""

    def load():
        out_dir = os.path.join(root or datasets_root(), "synthetic", style)
        json_file = ensure_synthetic_split(out_dir, style, split, num_images, seed)
        categories = get_categories(get_style(style).name)
        return without_annotations(load_layout_coco_json(json_file, os.path.join(out_dir, split), categories, name))

    DatasetCatalog.register(name, load)
    MetadataCatalog.get(name).set(unlabeled=True, synthetic=True)


def page_cache_dir(name: str) -> str:
    """Default cache folder of the rendered pages of unlabeled dataset ``name``:
    ``$DLA_KD_PAGE_CACHE/<name>``, else ``<datasets root>/page_cache/<name>``."""
    return os.path.join(os.getenv(ENV_PAGE_CACHE) or os.path.join(datasets_root(), "page_cache"), name)


def register_unlabeled_pages(name: str, paths: Sequence[str], dpi: float = 150.0, cache_dir: Optional[str] = None) -> None:
    """Register the pages of ``paths`` (folders searched recursively, image files, PDFs rendered
    at ``dpi``) as a dataset without annotations, for ``DATASETS.UNLABELED``. Relative paths are
    resolved against the datasets root at use time. Rendered pages are cached as PNG in
    ``cache_dir`` (default :func:`page_cache_dir`); unreadable files and empty pages are listed in
    a warning and skipped (``dla_kd/data/pages.py``)."""

    def load():
        root = datasets_root()
        folder = cache_dir or page_cache_dir(name)
        with _file_lock(os.path.join(folder, ".lock")):  # several ranks load at once
            return load_unlabeled_pages([os.path.join(root, p) for p in paths], dpi, folder, name)

    DatasetCatalog.register(name, load)
    MetadataCatalog.get(name).set(unlabeled=True, page_sources=list(paths), dpi=dpi)


def register_pseudo_labeled(
    name: str, table: str, json_file: str, image_root: Optional[str] = None, score_thresh: float = 0.5,
    teacher_weights: Optional[str] = None,
) -> None:
    """Register a pseudo-label file of ``tools/pseudo_label.py`` as a labelled training dataset
    of category table ``table``, keeping detections scoring at least ``score_thresh``.
    ``image_root`` defaults to the file's folder (rendered pages are relative to it, image files
    absolute). A file for other classes than ``table``'s, or, with ``teacher_weights``, written by
    another teacher, is refused with the reason (``dla_kd/data/pseudo_labeled.py``). Relative
    paths are resolved against the datasets root at use time."""

    def load():
        root = datasets_root()
        path = os.path.join(root, json_file)
        images = os.path.join(root, image_root) if image_root else os.path.dirname(path)
        return load_pseudo_labeled(
            path, images, table, get_categories(table), score_thresh, name, teacher_weights=teacher_weights
        )

    _register(name, table, load, pseudo_labels=json_file, score_thresh=score_thresh)


def register_all() -> None:
    for name, (table, json_file, image_root) in {**PUBLAYNET_SPLITS, **DOCLAYNET_SPLITS}.items():
        register_layout_coco(name, table, json_file, image_root)
    for name, (table, json_file, image_root) in DOCLAYNET_SPLITS.items():
        register_layout_coco(f"{name}_all_annotators", table, json_file, image_root, precedence_policy="all")
    for name, (style, split, num_images, seed) in SYNTHETIC_SPLITS.items():
        register_synthetic(name, style, split, num_images, seed)
    for name, (style, split, num_images, seed) in SYNTHETIC_UNLABELED_SPLITS.items():
        register_synthetic_unlabeled(name, style, split, num_images, seed)
    for name, (table, json_file, score_thresh) in SYNTHETIC_PSEUDO_LABELED.items():
        register_pseudo_labeled(name, table, json_file, score_thresh=score_thresh)
    # PRImA: COCO jsons written by tools/convert_prima_to_coco.py from PRImA/XML (dla_kd/data/prima.py).
    for split in ("train", "val"):
        register_layout_coco(f"prima_{split}", "prima", f"PRImA/annotations-{split}.json", "PRImA/Images")
