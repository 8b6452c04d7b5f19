"""Checks of the training pages that depend on the model, made before the first step.

The annotation loaders check every record on its own (``coco_layout.py``); two problems only show
with the model and used to surface deep inside a worker:

* a page with more instances than ``DATASETS.MAX_INSTANCES_PER_PAGE`` (e.g. 10^6 tiny boxes:
  the RPN's anchor matching then asks for about 10 GB);
* an instance without a mask on a mask model (``MODEL.MASK_ON``): Detectron2's mapper fails at
  the iteration that draws the page with a bare ``KeyError: 'segmentation'``. The COCO loader
  gives a box-only annotation of a file that has masks elsewhere its box as a rectangle polygon
  (with a warning), so this catches datasets without masks at all.

Both raise :class:`~dla_kd.data.coco_layout.CorruptAnnotationError` naming the dataset, the
page's file and image id.
"""
from typing import Dict, List

from .coco_layout import CorruptAnnotationError

_MAX_LISTED = 10


def _page(record: Dict) -> str:
    return f"page {record.get('file_name')} (image id {record.get('image_id')})"


def _listed(items: List, describe) -> str:
    """The first ``_MAX_LISTED`` items described, ``"; "``-joined, `` ...`` when there are more."""
    return "; ".join(describe(*i) for i in items[:_MAX_LISTED]) + (" ..." if len(items) > _MAX_LISTED else "")


def check_training_pages(cfg, records: List[Dict]) -> None:
    """Raise :class:`CorruptAnnotationError` for pages over the instance limit, and for instances
    without ``segmentation`` when the model predicts masks. ``records``: the training dataset dicts
    of ``cfg.DATASETS.TRAIN``."""
    limit = cfg.DATASETS.MAX_INSTANCES_PER_PAGE
    names = ", ".join(cfg.DATASETS.TRAIN)
    if limit > 0:
        crowded = [(len(r.get("annotations", ())), r) for r in records if len(r.get("annotations", ())) > limit]
        if crowded:
            listed = _listed(crowded, lambda n, r: f"{_page(r)}: {n} instances")
            raise CorruptAnnotationError(
                f"training data {names}: {len(crowded)} pages have more than DATASETS.MAX_INSTANCES_PER_PAGE="
                f"{limit} instances: {listed}. Fix their annotations "
                "or raise the limit (memory of the RPN and ROI heads grows with the instances of a page)."
            )
    if cfg.MODEL.MASK_ON:
        maskless = [
            (r, a) for r in records for a in r.get("annotations", ())
            if not a.get("iscrowd", 0) and not a.get("segmentation")
        ]
        if maskless:
            listed = _listed(maskless, lambda r, a: f"{_page(r)}, box {a.get('bbox')}")
            raise CorruptAnnotationError(
                f"training data {names}: {len(maskless)} instances have no segmentation but the model predicts "
                f"masks (MODEL.MASK_ON): {listed}. Add their "
                "polygons, or train a box-only model (MODEL.MASK_ON False)."
            )
