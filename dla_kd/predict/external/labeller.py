"""An external teacher (a plugin or a results file) behind a class map, as the page labeller of
:func:`dla_kd.predict.pseudo_label.pseudo_label`.

Detections come out in the class map's table (ids and names), scoring at least their class's
threshold; those of unmapped classes are dropped and counted. Segmentation: the teacher's
polygons simplified to ``polygon_tolerance`` pixels, or, for a box-only teacher (rapid-layout,
YOLO), the box as a 4-point polygon, so Mask R-CNN configs train on the file unchanged (their
mask head then learns boxes; the COCO ``info.segmentation`` says which).
"""
from collections import Counter
from typing import Dict, List, Sequence, Tuple

import numpy as np

from ..segmentation import simplify_polygon
from .class_map import ClassMap
from .results import ResultsFileError

BOX_SEGMENTATION = "the box (the teacher gives no mask)"


def box_polygon(bbox: Sequence[float]) -> List[List[float]]:
    x, y, w, h = bbox
    return [[x, y, x + w, y, x + w, y + h, x, y + h]]


def polygon_area(polygons: Sequence[Sequence[float]]) -> float:
    """Sum of the polygons' areas (shoelace), page pixels."""
    area = 0.0
    for p in polygons:
        xy = np.asarray(p, dtype=float).reshape(-1, 2)
        area += 0.5 * abs(float(np.dot(xy[:, 0], np.roll(xy[:, 1], 1)) - np.dot(xy[:, 1], np.roll(xy[:, 0], 1))))
    return area


class ExternalLabeller:
    """``teacher``: a plugin (:class:`~dla_kd.predict.external.registry.ExternalTeacher`, called
    on the page's pixels) or a :class:`~dla_kd.predict.external.results.ResultsTeacher` (looked
    up by page); ``class_map``: :class:`ClassMap`."""

    def __init__(self, teacher, class_map: ClassMap, polygon_tolerance: float):
        self.teacher, self.class_map, self.polygon_tolerance = teacher, class_map, polygon_tolerance
        self.categories = class_map.categories
        self.from_results = hasattr(teacher, "match")

    @property
    def min_score(self) -> float:
        return self.class_map.lowest_threshold

    def info(self) -> Dict:
        """Keys added to the COCO ``info`` and the journal header."""
        return {"class_map": self.class_map.record(), "segmentation": "teacher polygons, else " + BOX_SEGMENTATION}

    def prepare(self, pages: Sequence, roots: Sequence[str]) -> None:
        """Match a results file's records to ``pages`` (ResultsFileError naming a record without one)."""
        if self.from_results:
            from_pdf = [p for p in pages if p.page is not None]
            if from_pdf:
                raise ResultsFileError(f"{from_pdf[0].source}: a results file is matched to image files by name; render "
                                 "the PDF pages with the tool that labelled them and give that folder")
            self.teacher.match(pages, roots)

    def label(self, page) -> Tuple[List[Dict], Counter]:
        """(detections of ``page`` in the table's ids with ``area`` and polygons, dropped by class)."""
        if self.from_results:
            raw = self.teacher.detections(page)
        else:
            from detectron2.data.detection_utils import read_image

            raw = self.teacher(read_image(page.file_name, format="RGB"))
        kept, dropped = self.class_map.apply(raw)
        out = []
        for det in sorted(kept, key=lambda d: -d["score"]):
            polygons = [[round(float(v), 2) for v in simplify_polygon(np.asarray(p, dtype=float), self.polygon_tolerance)]
                        for p in det["segmentation"] or []]
            polygons = [p for p in polygons if len(p) >= 6] or box_polygon(det["bbox"])
            out.append({"id": len(out) + 1, **det, "segmentation": polygons, "area": round(polygon_area(polygons), 3)})
        return out, dropped
