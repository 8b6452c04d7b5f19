"""Teacher and student of a distillation run must predict the same classes in the same order.

Equal ``NUM_CLASSES`` is not enough: a teacher trained with another category order gives the
student confident targets for the wrong classes. The names come from the ``thing_classes``
metadata of each side's ``DATASETS.TRAIN``, or, for a dataset registered with Detectron2's
``register_coco_instances`` (whose ``thing_classes`` appear only once the dataset is loaded), from
the ``categories`` of its ``json_file``, in id order as ``load_coco_json`` lists them. When they
are unknown on either side (no training dataset, or one registered without either) the order
cannot be proven and the build stops, unless ``DISTILL.TEACHER.ALLOW_UNVERIFIED_CLASSES`` says
the user checked it.
"""
import functools
import json
import logging
import os
from typing import List, Optional, Tuple

from detectron2.data import MetadataCatalog

logger = logging.getLogger(__name__)


@functools.lru_cache(maxsize=16)
def _json_category_names(json_file: str, mtime_ns: int) -> Optional[Tuple[str, ...]]:
    """Category names of a COCO JSON in id order (parsed once per file version: teacher and
    student often train on the same large file)."""
    try:
        with open(json_file) as f:
            categories = json.load(f).get("categories")
    except (ValueError, AttributeError) as e:
        raise ValueError(f"{json_file}: not a COCO JSON file ({e})") from e
    return tuple(c["name"] for c in sorted(categories, key=lambda c: c["id"])) if categories else None


def _names(dataset: str) -> Optional[List[str]]:
    meta = MetadataCatalog.get(dataset)
    names = meta.get("thing_classes", None)
    json_file = meta.get("json_file", None)
    if names is None and json_file and os.path.isfile(json_file):
        try:
            from_json = _json_category_names(json_file, os.stat(json_file).st_mtime_ns)
        except ValueError as e:
            raise ValueError(f"json_file of dataset {dataset!r}: {e}") from e
        names = list(from_json) if from_json else None
    return names


def train_classes(cfg, side: str) -> Optional[List[str]]:
    """The ``thing_classes`` shared by every dataset of ``cfg.DATASETS.TRAIN``; ``None`` when
    there is none or one of them has no names. ``side`` ("teacher"/"student") names it in errors."""
    found = {name: _names(name) for name in cfg.DATASETS.TRAIN}
    if not found or any(names is None for names in found.values()):
        return None
    distinct = {tuple(names) for names in found.values()}
    if len(distinct) > 1:
        raise ValueError(f"The {side}'s DATASETS.TRAIN disagree on their classes: {found}")
    return list(distinct.pop())


def _unnamed(cfg) -> str:
    missing = [n for n in cfg.DATASETS.TRAIN if _names(n) is None]
    return f"no thing_classes for {missing}" if missing else "DATASETS.TRAIN is empty"


def check_same_classes(cfg, tcfg) -> None:
    """Raise ``ValueError`` unless the student (``cfg``) and the teacher (``tcfg``) are proven to
    predict the same classes in the same order (or ``DISTILL.TEACHER.ALLOW_UNVERIFIED_CLASSES``)."""
    s_k, t_k = cfg.MODEL.ROI_HEADS.NUM_CLASSES, tcfg.MODEL.ROI_HEADS.NUM_CLASSES
    if s_k != t_k:
        raise ValueError(
            f"Teacher/student class mismatch: the teacher ({cfg.DISTILL.TEACHER.CONFIG}) predicts {t_k} classes, "
            f"the student {s_k} (MODEL.ROI_HEADS.NUM_CLASSES)"
        )
    s_classes, t_classes = train_classes(cfg, "student"), train_classes(tcfg, "teacher")
    if s_classes is None or t_classes is None:
        unknown = [f"{side}: {_unnamed(c)}" for side, c, names in
                   (("student", cfg, s_classes), ("teacher", tcfg, t_classes)) if names is None]
        if cfg.DISTILL.TEACHER.ALLOW_UNVERIFIED_CLASSES:
            logger.warning(f"Teacher/student class order not verified ({'; '.join(unknown)}): "
                           "DISTILL.TEACHER.ALLOW_UNVERIFIED_CLASSES is set")
            return
        raise ValueError(
            f"Cannot verify that teacher ({cfg.DISTILL.TEACHER.CONFIG}) and student predict the same classes in "
            f"the same order: {'; '.join(unknown)}. Register the datasets with their class names "
            "(MetadataCatalog.get(name).set(thing_classes=[...])), or, if you checked the order yourself, "
            "set DISTILL.TEACHER.ALLOW_UNVERIFIED_CLASSES True."
        )
    if s_classes != t_classes:
        raise ValueError(
            f"Teacher/student dataset mismatch: the teacher was configured for {tcfg.DATASETS.TRAIN[0]} with classes "
            f"{t_classes}, the student trains on {cfg.DATASETS.TRAIN[0]} with classes {s_classes}"
        )
