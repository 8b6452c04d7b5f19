"""COCO records: polygon clipping and measurement, annotation/image/category records.
Polygons are (N, 2) float arrays of pixel coordinates (x right, y down).
"""

import json
from typing import Dict, List, Optional, Tuple

import numpy as np

from dla_kd.data.categories import get_categories

# Objects smaller than this (px^2) or thinner than MIN_SIDE px are never written.
MIN_AREA = 4.0
MIN_SIDE = 1.0
_DECIMALS = 2


def clip_polygon(polygon: np.ndarray, rect: Tuple[float, float, float, float]) -> np.ndarray:
    """``polygon`` clipped to ``rect`` = (x0, y0, x1, y1) (Sutherland-Hodgman); the result may
    have fewer than 3 points when nothing is left."""
    points = [tuple(p) for p in polygon]
    x0, y0, x1, y1 = rect
    for axis, limit, keep_below in ((0, x0, False), (0, x1, True), (1, y0, False), (1, y1, True)):
        if not points:
            break
        inside = [(p[axis] <= limit) if keep_below else (p[axis] >= limit) for p in points]
        clipped = []
        for k, p in enumerate(points):
            q, q_in = points[k - 1], inside[k - 1]
            if inside[k] != q_in:
                t = (limit - q[axis]) / (p[axis] - q[axis])
                clipped.append((q[0] + t * (p[0] - q[0]), q[1] + t * (p[1] - q[1])))
            if inside[k]:
                clipped.append(p)
        points = clipped
    return np.array(points, dtype=float).reshape(-1, 2)


def polygon_area(polygon: np.ndarray) -> float:
    """Shoelace area of an (N, 2) polygon (px^2)."""
    x, y = polygon[:, 0], polygon[:, 1]
    return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2)


def annotatable(polygon: np.ndarray, rect: Tuple[float, float, float, float]) -> Optional[np.ndarray]:
    """``polygon`` clipped to ``rect`` (the page inside its image) and rounded as written, or None
    when what is left is degenerate (fewer than 3 points, area < MIN_AREA or a side < MIN_SIDE)."""
    polygon = np.round(clip_polygon(polygon, rect), _DECIMALS)
    if len(polygon) < 3:
        return None
    extent = polygon.max(axis=0) - polygon.min(axis=0)
    if polygon_area(polygon) < MIN_AREA or extent.min() < MIN_SIDE:
        return None
    return polygon


def annotation_record(polygon: np.ndarray, category_id: int, image_id: int, ann_id: int) -> Dict:
    """COCO annotation of a polygon returned by :func:`annotatable` (box = polygon extent)."""
    x0, y0 = polygon.min(axis=0)
    x1, y1 = polygon.max(axis=0)
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": category_id,
        "bbox": [float(x0), float(y0), round(float(x1 - x0), _DECIMALS), round(float(y1 - y0), _DECIMALS)],
        "area": round(polygon_area(polygon), _DECIMALS),
        "iscrowd": 0,
        "segmentation": [[float(v) for v in polygon.reshape(-1)]],
    }


def coco_categories(style: str) -> List[Dict]:
    """The ``categories`` field for the category table ``style``."""
    return [{"id": c["id"], "name": c["name"], "supercategory": c["name"]} for c in get_categories(style)]


def category_counts(json_path: str) -> Dict[str, int]:
    """Number of annotations per category name (in category-table order) in a COCO json."""
    with open(json_path, encoding="utf-8") as f:
        data = json.load(f)
    counts = {c["id"]: 0 for c in data["categories"]}
    for ann in data["annotations"]:
        counts[ann["category_id"]] += 1
    return {c["name"]: counts[c["id"]] for c in data["categories"]}
