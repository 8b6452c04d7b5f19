"""COCO bbox AP per class on a few pages, with bootstrap intervals over the pages.

With 20 test pages an AP is one draw of a page sample: :func:`bootstrap_ap` redraws the pages
with replacement (a page drawn twice counts twice, under new image ids) and reports the
percentile interval of every AP. A class without a ground-truth box in a redraw has no AP there;
its interval is over the redraws that have one (their number is reported).
"""
import contextlib
import io
from typing import Dict, List, Sequence

import numpy as np


def coco_bbox_ap(images: Sequence[Dict], annotations: Sequence[Dict], detections: Sequence[Dict],
                 categories: Sequence[Dict]) -> Dict:
    """COCO bbox AP (pycocotools, 0-100) of ``detections`` (``image_id``, ``category_id``,
    ``bbox`` XYWH, ``score``) against ``annotations``: ``{"AP", "AP50", "AP75", "per_class":
    {name: AP or None (no ground truth)}}``."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt = COCO()
    gt.dataset = {"images": [dict(i) for i in images], "categories": [dict(c) for c in categories],
                  "annotations": [dict(a, id=k + 1, iscrowd=a.get("iscrowd", 0),
                                       area=a.get("area", a["bbox"][2] * a["bbox"][3]))
                                  for k, a in enumerate(annotations)]}
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
        if not detections:
            return {"AP": 0.0, "AP50": 0.0, "AP75": 0.0, "per_class": {
                c["name"]: (0.0 if any(a["category_id"] == c["id"] for a in annotations) else None)
                for c in categories}}
        dt = gt.loadRes([dict(d) for d in detections])
        ev = COCOeval(gt, dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    precision = ev.eval["precision"]  # (iou, recall, class, area, max_dets)
    per_class = {}
    for k, c in enumerate(categories):
        p = precision[:, :, k, 0, -1]
        per_class[c["name"]] = float(np.mean(p[p > -1]) * 100) if (p > -1).any() else None
    return {"AP": float(ev.stats[0] * 100), "AP50": float(ev.stats[1] * 100), "AP75": float(ev.stats[2] * 100),
            "per_class": per_class}


def _resample(images, annotations, detections, picks):
    new_images, new_anns, new_dets = [], [], []
    by_image_ann, by_image_det = {}, {}
    for a in annotations:
        by_image_ann.setdefault(a["image_id"], []).append(a)
    for d in detections:
        by_image_det.setdefault(d["image_id"], []).append(d)
    for new_id, k in enumerate(picks, start=1):
        image = images[k]
        new_images.append(dict(image, id=new_id))
        new_anns += [dict(a, image_id=new_id) for a in by_image_ann.get(image["id"], [])]
        new_dets += [dict(d, image_id=new_id) for d in by_image_det.get(image["id"], [])]
    return new_images, new_anns, new_dets


def _mean(result: Dict, names: Sequence[str]):
    values = [result["per_class"][n] for n in names if result["per_class"][n] is not None]
    return float(np.mean(values)) if values else None


def bootstrap_ap(images: Sequence[Dict], annotations: Sequence[Dict], detections: Sequence[Dict],
                 categories: Sequence[Dict], samples: int = 1000, seed: int = 0, level: float = 0.95,
                 means: Dict[str, Sequence[str]] = None) -> Dict:
    """:func:`coco_bbox_ap` on the pages as they are, and its percentile intervals over
    ``samples`` redraws of the pages: ``{"point": ..., "interval": {"AP": [lo, hi], ...,
    "per_class": {name: [lo, hi] or None}}, "per_class_samples": {name: redraws with ground
    truth}, "means": {label: {"classes", "point", "interval"}}, "samples", "seed", "level"}``.
    ``means``: {label: class names}, the mean of those classes' APs (e.g. over the classes a
    teacher can predict), over the same redraws."""
    images, means = list(images), dict(means or {})
    point = coco_bbox_ap(images, annotations, detections, categories)
    mean_draws: Dict[str, List[float]] = {label: [] for label in means}
    rng = np.random.default_rng(seed)
    draws: Dict[str, List[float]] = {k: [] for k in ("AP", "AP50", "AP75")}
    per_class: Dict[str, List[float]] = {c["name"]: [] for c in categories}
    for _ in range(samples):
        picks = rng.integers(0, len(images), size=len(images))
        result = coco_bbox_ap(*_resample(images, annotations, detections, picks), categories)
        for k in draws:
            draws[k].append(result[k])
        for name, ap in result["per_class"].items():
            if ap is not None:
                per_class[name].append(ap)
        for label, names in means.items():
            m = _mean(result, names)
            if m is not None:
                mean_draws[label].append(m)
    lo, hi = (1 - level) / 2 * 100, (1 + level) / 2 * 100

    def interval(values):
        return [float(np.percentile(values, lo)), float(np.percentile(values, hi))] if values else None

    return {"point": point, "interval": {**{k: interval(v) for k, v in draws.items()},
                                         "per_class": {n: interval(v) for n, v in per_class.items()}},
            "per_class_samples": {n: len(v) for n, v in per_class.items()},
            "means": {label: {"classes": list(names), "point": _mean(point, names), "interval": interval(mean_draws[label])}
                      for label, names in means.items()},
            "samples": samples, "seed": seed, "level": level}
