"""A detection-results JSON another tool wrote for a folder of pages, as a pseudo-labelling teacher.

Two forms are read:

- COCO results (what ``pycocotools``' ``loadRes``, Detectron2's ``coco_instances_results.json``,
  MMDetection and YOLO's ``save_json`` write): a list of ``{"image_id", "category_id" (or
  "category_name"), "bbox": [x, y, w, h], "score", "segmentation" (optional: polygons or RLE)}``,
  optionally with ``"file_name"``;
- a COCO file with scores: ``{"images", "annotations" (each with "score"), "categories"}``.

Each detection is matched to a page of the folder by its ``file_name`` (absolute, relative to
an ``--input`` folder, or the bare name when that is unique), else by ``image_id``: through the
file's own ``images`` (or ``--image-list``, a COCO file listing the pages with their ids), else
an ``image_id`` equal to the page's file stem (``12`` for ``12.png``; YOLO writes that). A record
whose page is not in the folder is an error naming the record, never a silent drop. Category ids
are named by the file's ``categories`` or the class map's ``teacher_categories``.
"""
import json
import os
from collections import defaultdict
from typing import Dict, List, Optional, Sequence

import numpy as np

from ...utils.files import file_fingerprint
from ..segmentation import crop_polygons
from .class_map import ClassMap, ClassMapError


class ResultsFileError(ValueError):
    """A results file that cannot be matched to the pages (the message names the record)."""


def _load(path: str):
    if not os.path.isfile(path):
        raise ResultsFileError(f"results file {path} not found")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except ValueError as e:
        raise ResultsFileError(f"{path}: not valid JSON ({e})") from e


def _image_list(path: str, data, where: str) -> Dict[int, str]:
    images = data.get("images") if isinstance(data, dict) else None
    if not isinstance(images, list):
        raise ResultsFileError(f"{where}: no 'images' list")
    out = {}
    for k, image in enumerate(images):
        if not isinstance(image, dict) or "id" not in image or "file_name" not in image:
            raise ResultsFileError(f"{where}: images[{k}] needs 'id' and 'file_name', got {image!r}")
        out[image["id"]] = image["file_name"]
    return out


def _rle_polygons(segmentation: Dict) -> List[List[float]]:
    from pycocotools import mask as mask_utils

    rle = dict(segmentation)
    if isinstance(rle.get("counts"), list):  # uncompressed RLE
        rle = mask_utils.frPyObjects(rle, *rle["size"])
    mask = mask_utils.decode(rle).astype(bool)
    return [p.tolist() for p in crop_polygons(mask, (0, 0))]


# Pixels a box may reach beyond the page (rounding, a detector's unclipped edges); it is clipped.
# Further out, the results were made for another image size (a resized page): an error.
BOX_TOLERANCE = 2.0


def _page_box(bbox, page, where: str) -> List[float]:
    """``bbox`` [x, y, w, h] clipped to ``page``; ResultsFileError when malformed or off the page."""
    try:
        x, y, w, h = (float(v) for v in bbox)
    except (TypeError, ValueError):
        raise ResultsFileError(f"{where}: bbox must be [x, y, w, h], got {bbox!r}") from None
    if not (w >= 0 and h >= 0):
        raise ResultsFileError(f"{where}: bbox {bbox!r} has a negative (or NaN) width or height")
    W, H, t = page.width, page.height, BOX_TOLERANCE
    if x < -t or y < -t or x + w > W + t or y + h > H + t:
        raise ResultsFileError(f"{where}: bbox {bbox!r} is outside its {W}x{H} page {page.file_name} (results made "
                               "for another image size?)")
    x0, y0, x1, y1 = max(x, 0.0), max(y, 0.0), min(x + w, W), min(y + h, H)
    return [x0, y0, max(x1 - x0, 0.0), max(y1 - y0, 0.0)]


class PageIndex:
    """Pages (:class:`dla_kd.data.pages.Page`) looked up by the names a results file may use."""

    def __init__(self, pages: Sequence, roots: Sequence[str]):
        self.pages = list(pages)
        self.by_path, self.by_name, self.by_stem = {}, defaultdict(list), defaultdict(list)
        folders = [os.path.realpath(r) for r in roots if os.path.isdir(r)]
        for page in self.pages:
            if page.page is not None:  # a rendered PDF page: another tool's file names cannot be known
                continue
            real = os.path.realpath(page.file_name)
            self.by_path[real] = page
            for folder in folders:
                if real.startswith(folder + os.sep):
                    self.by_path[os.path.relpath(real, folder)] = page
            name = os.path.basename(real)
            self.by_name[name].append(page)
            self.by_stem[os.path.splitext(name)[0]].append(page)

    def by_file_name(self, file_name: str, where: str):
        key = os.path.realpath(file_name) if os.path.isabs(file_name) else os.path.normpath(file_name)
        if key in self.by_path:
            return self.by_path[key]
        # a bare or relative name matches a page of that name anywhere in the folders when unique;
        # an absolute path only itself
        found = [] if os.path.isabs(file_name) else self.by_name.get(os.path.basename(file_name), [])
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise ResultsFileError(f"{where}: file_name {file_name!r} matches {len(found)} pages "
                                   f"({', '.join(p.file_name for p in found[:3])}); write paths relative to the folder")
        raise ResultsFileError(f"{where}: file_name {file_name!r} is not a page of the input folders")

    def by_stem_id(self, image_id, where: str):
        found = self.by_stem.get(str(image_id), [])
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise ResultsFileError(f"{where}: image_id {image_id!r} matches {len(found)} pages by file stem; "
                                   "give --image-list")
        raise ResultsFileError(f"{where}: image_id {image_id!r} is no page of the input folders (no file named "
                               f"{image_id}.*, no 'images' list; give --image-list)")


class ResultsTeacher:
    """Detections of a results file for the pages of the input folders (module docstring).

    ``teacher_model``: the file of the model that wrote the results (its sha256 goes into the
    teacher record; optional but recommended), ``name``: the tool or model's name."""

    def __init__(self, results_file: str, class_map: ClassMap, image_list: Optional[str] = None,
                 teacher_model: Optional[str] = None, name: str = ""):
        self.results_file, self.class_map, self.name = results_file, class_map, name
        self.teacher_model = teacher_model
        if teacher_model and not os.path.isfile(teacher_model):
            raise FileNotFoundError(f"teacher model file {teacher_model} not found")
        data = _load(results_file)
        if isinstance(data, dict):
            self.images = _image_list(results_file, data, results_file)
            self.records = data.get("annotations")
            categories = {c["id"]: c["name"] for c in data.get("categories", [])}
            if not isinstance(self.records, list):
                raise ResultsFileError(f"{results_file}: a COCO file without an 'annotations' list")
        elif isinstance(data, list):
            self.images, self.records, categories = None, data, {}
        else:
            raise ResultsFileError(f"{results_file}: expected a list of detections or a COCO dict, got "
                                   f"{type(data).__name__}")
        if image_list:
            self.images = _image_list(image_list, _load(image_list), image_list)
        self.categories = categories or dict(class_map.teacher_categories)
        self.by_page: Dict[str, List[Dict]] = {}
        self.unmatched_pages: List = []

    @property
    def class_names(self) -> List[str]:
        names = list(self.categories.values())
        return names or sorted({str(r.get("category_name")) for r in self.records if isinstance(r, dict)})

    def record(self) -> Dict:
        return {"results": file_fingerprint(self.results_file), "name": self.name,
                "model": file_fingerprint(self.teacher_model) if self.teacher_model else None,
                "classes": self.class_names}

    def _class_name(self, r: Dict, where: str) -> str:
        if "category_name" in r:
            return str(r["category_name"])
        if r.get("category_id") in self.categories:
            return self.categories[r["category_id"]]
        try:
            return self.class_map.teacher_name(r.get("category_id"), where)
        except ClassMapError as e:
            raise ResultsFileError(str(e)) from None

    def match(self, pages: Sequence, roots: Sequence[str]) -> None:
        """Assign every record to its page; ResultsFileError naming the first record that has none."""
        index = PageIndex(pages, roots)
        by_page = defaultdict(list)
        for k, r in enumerate(self.records):
            where = f"{self.results_file}: record {k}"
            if not isinstance(r, dict) or "bbox" not in r or "score" not in r:
                raise ResultsFileError(f"{where} needs 'bbox' and 'score', got {r!r}")
            if r.get("file_name"):
                page = index.by_file_name(str(r["file_name"]), where)
            elif "image_id" not in r:
                raise ResultsFileError(f"{where} has neither 'file_name' nor 'image_id'")
            elif self.images is not None:
                if r["image_id"] not in self.images:
                    raise ResultsFileError(f"{where}: image_id {r['image_id']!r} is not in the images list")
                page = index.by_file_name(self.images[r["image_id"]], f"{where} (image_id {r['image_id']!r})")
            else:
                page = index.by_stem_id(r["image_id"], where)
            bbox = _page_box(r["bbox"], page, where)
            segmentation = r.get("segmentation")
            if isinstance(segmentation, dict):
                segmentation = _rle_polygons(segmentation)
            by_page[os.path.realpath(page.file_name)].append({
                "class_name": self._class_name(r, where), "score": float(r["score"]), "bbox": bbox,
                "segmentation": segmentation or None})
        self.by_page = dict(by_page)
        self.unmatched_pages = [p for p in index.pages if os.path.realpath(p.file_name) not in self.by_page]

    def detections(self, page) -> List[Dict]:
        return sorted(self.by_page.get(os.path.realpath(page.file_name), []), key=lambda d: -d["score"])
