"""Pseudo-labelled datasets: COCO files of a teacher's detections (``tools/pseudo_label.py``)
read back as training data, above a score threshold.

The file's ``info`` records what produced it (:data:`PSEUDO_LABELS_KIND`)::

    "info": {"description": "dla-kd pseudo labels",
             "teacher": {"config": path or null, "weights": fingerprint or null,
                         "exported": fingerprint or null, "classes": [names in order]},
             "min_score": lowest score kept, "dpi": PDF render resolution, "created": ISO time}

A teacher from another toolkit (``dla_kd/predict/external``) is recorded as ``{"plugin": name,
"version", "model": fingerprint, "classes": its own class names}`` (an in-process plugin) or
``{"results": fingerprint, "name", "model": fingerprint or null, "classes"}`` (a results file
another tool wrote), and ``info`` adds its ``class_map`` (path, sha256, table, classes,
thresholds), ``dropped`` (detections of unmapped classes, by class) and ``segmentation`` (what the
masks are). Fingerprint: ``{"path", "size", "mtime_ns", "sha256"}``. Each annotation carries its
``score``. Loading refuses a file whose classes are not the registered category table's (the
message names the teacher that wrote it and the first difference), and, when the expected
teacher weights are given, a file written by another teacher.
"""
import json
import logging
import os
from typing import Dict, List, Optional, Sequence

from ..utils.files import file_sha256
from .coco_layout import CorruptAnnotationError, DatasetNotFoundError, load_layout_coco_json

logger = logging.getLogger(__name__)

PSEUDO_LABELS_KIND = "dla-kd pseudo labels"


class PseudoLabelMismatchError(ValueError):
    """A pseudo-label file made by another teacher or for another class set."""


def describe_teacher(teacher: Dict) -> str:
    """'config C, weights W', 'exported model M', 'plugin P, model M' or 'results R' from a recorded teacher."""
    if teacher.get("exported"):
        return f"exported model {teacher['exported']['path']}"
    model = (teacher.get("model") or {}).get("path")
    if teacher.get("plugin"):
        return f"plugin {teacher['plugin']} {teacher.get('version', '')}, model {model}"
    if teacher.get("results"):
        return f"results {teacher['results']['path']}" + (f", model {model}" if model else "")
    weights = (teacher.get("weights") or {}).get("path", "?")
    return f"config {teacher.get('config')}, weights {weights}"


def _first_difference(a: Sequence[str], b: Sequence[str]) -> str:
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return f"class {i} is {x!r} in the file, {y!r} in the table"
    return f"the file has {len(a)} classes, the table {len(b)}"


def check_pseudo_labels(data: Dict, json_file: str, table: str, categories: Sequence[Dict],
                        teacher_weights: Optional[str] = None) -> Dict:
    """Raise unless ``data`` (a loaded pseudo-label file) is for the category table ``table``
    (``categories``: ids and names in order) and, when ``teacher_weights`` is given, was written by
    a teacher with exactly those weights (same sha256). Returns the file's ``info``."""
    info = data.get("info") if isinstance(data, dict) else None
    if not isinstance(info, dict) or info.get("description") != PSEUDO_LABELS_KIND:
        raise CorruptAnnotationError(
            f"{json_file}: not a pseudo-label file (its info.description is not {PSEUDO_LABELS_KIND!r}); "
            "write one with tools/pseudo_label.py"
        )
    teacher = info.get("teacher", {})
    file_cats = [(c.get("id"), c.get("name")) for c in data.get("categories", [])]
    table_cats = [(c["id"], c["name"]) for c in categories]
    if file_cats != table_cats:
        names = [n for _, n in file_cats]
        raise PseudoLabelMismatchError(
            f"{json_file}: pseudo labels of the teacher ({describe_teacher(teacher)}) are for the classes {names}, "
            f"but the dataset is registered with category table {table!r} {[n for _, n in table_cats]}: "
            f"{_first_difference(names, [n for _, n in table_cats])}. Label the pages with a teacher of these "
            "classes, or register the file with its own table."
        )
    if teacher_weights:
        recorded = (teacher.get("weights") or teacher.get("exported") or teacher.get("model") or {}).get("sha256")
        expected = file_sha256(teacher_weights)
        if recorded != expected:
            raise PseudoLabelMismatchError(
                f"{json_file} was written by another teacher ({describe_teacher(teacher)}, sha256 {recorded}), "
                f"not by {teacher_weights} (sha256 {expected})"
            )
    return info


def load_pseudo_labeled(json_file: str, image_root: str, table: str, categories: Sequence[Dict],
                        score_thresh: float, dataset_name: str = "", teacher_weights: Optional[str] = None) -> List[Dict]:
    """Detectron2 dataset dicts of a pseudo-label file (checked by :func:`check_pseudo_labels`),
    keeping the detections scoring at least ``score_thresh``; validated like every layout dataset
    (:func:`load_layout_coco_json`)."""
    if not os.path.isfile(json_file):
        raise DatasetNotFoundError(f"pseudo-label file {json_file} not found (write it with tools/pseudo_label.py)")
    try:
        with open(json_file, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise CorruptAnnotationError(f"{json_file}: not valid JSON ({e})") from e
    info = check_pseudo_labels(data, json_file, table, categories, teacher_weights)
    if score_thresh < info.get("min_score", 0.0):
        logger.warning(
            f"{json_file}: score threshold {score_thresh} is below the file's own {info['min_score']}: "
            "detections below that were never written"
        )
    return load_layout_coco_json(
        json_file, image_root, categories, dataset_name,
        annotation_filter=lambda ann: float(ann.get("score", 1.0)) >= score_thresh,
    )
