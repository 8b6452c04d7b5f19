"""Validated loading of layout datasets stored as COCO json into Detectron2 dataset dicts.

Detectron2's ``load_coco_json`` trusts its input; layout datasets are large and hand-edited, so this
loader checks every record once and fails with the file and the record named:

* missing json or image folder -> :class:`DatasetNotFoundError` (points at ``datasets/README.md``);
* malformed json, unknown category id, negative/NaN box, box outside its page, odd-length or
  too-short polygon, annotation of an unlisted image, image listed but absent on disk
  -> :class:`CorruptAnnotationError`;
* image files that PIL cannot read, or whose size disagrees with the json's width/height
  (``image_check.py``; all of them listed in one :class:`CorruptAnnotationError`).

Records that are legal but unusable are *not* silently lost: zero-width/height boxes are dropped
with a warning that gives their count and first ids. An annotation without a mask
(``segmentation`` absent or ``[]``) in a file whose other annotations have masks gets its box as a
rectangle polygon, with a warning giving the count and the first annotation and image ids (layout
regions are mostly rectangles; Detectron2's mapper would otherwise fail on the page mid-training
with a bare ``KeyError: 'segmentation'``). A file without any masks stays box-only (a mask model
refuses it before training: ``page_checks.py``). A polygon that lies far outside its page
(more than ``POLYGON_OUTSIDE_FRACTION`` of its bounding box beyond the page and the box
tolerance) is kept, with a warning naming file, image id and annotation id.

DocLayNet's per-annotation ``precedence`` (0 = the primary annotator, >0 = redundant double/triple
annotations of the same page used for inter-annotator agreement) is handled by
``precedence_policy``: ``"primary"`` keeps precedence 0 only (the default for training *and*
evaluation: counting redundant annotations as ground truth would duplicate objects), ``"all"``
keeps everything.
"""
import json
import logging
import math
import os
from typing import Callable, Dict, List, Optional, Sequence

from detectron2.structures import BoxMode

from .image_check import find_image_problems

logger = logging.getLogger(__name__)

DATASETS_README = "datasets/README.md"
PRECEDENCE_POLICIES = ("primary", "all")
# Image-level fields of the published jsons kept on each record (DocLayNet's document metadata).
EXTRA_IMAGE_KEYS = ("doc_category", "collection", "doc_name", "page_no")
# Annotation-level fields kept on each instance (PRImA's PAGE element name and @type).
EXTRA_ANNOTATION_KEYS = ("page_region", "page_region_type")
# A box may stick out of its page by this many pixels (rounding in the published files).
_BOX_TOLERANCE = 2.0
# A polygon with more than this share of its bounding box outside the page (grown by
# _BOX_TOLERANCE) is reported: it was most likely drawn in another page's coordinates.
POLYGON_OUTSIDE_FRACTION = 0.1
# Problems listed in one error message at most (the count of the rest is given).
_MAX_LISTED = 100


class DatasetNotFoundError(FileNotFoundError):
    """A registered dataset's files are not on disk."""


class CorruptAnnotationError(ValueError):
    """An annotation file is malformed or inconsistent; the message names file and record."""


def _fail(json_file: str, what: str) -> None:
    raise CorruptAnnotationError(f"{json_file}: {what}")


def load_layout_coco_json(
    json_file: str,
    image_root: str,
    categories: Sequence[Dict],
    dataset_name: str = "",
    *,
    precedence_policy: str = "primary",
    check_image_files: bool = True,
    annotation_filter: Optional[Callable[[Dict], bool]] = None,
) -> List[Dict]:
    """Load and validate a COCO-format layout annotation file.

    Args:
        json_file: path of the COCO json.
        image_root: folder that ``file_name`` of each image is relative to.
        categories: the dataset's category table (``dla_kd.data.categories``); category ids in the
            file must be ids of this table (names must agree too).
        dataset_name: name used in messages.
        precedence_policy: ``"primary"`` or ``"all"`` (see module docstring).
        check_image_files: check that every listed image exists on disk, can be read and has
            the size the json says (``image_check.py``; mode from ``$DLA_KD_IMAGE_CHECK``).

    Returns:
        list[dict]: Detectron2 dataset dicts with ``file_name, height, width, image_id,
        annotations`` (each annotation: ``bbox`` in XYWH_ABS, ``bbox_mode``, contiguous
        ``category_id``, ``segmentation`` polygons or RLE, ``iscrowd``, and the
        ``EXTRA_ANNOTATION_KEYS`` present in the file).
    """
    if precedence_policy not in PRECEDENCE_POLICIES:
        raise ValueError(f"precedence_policy must be one of {PRECEDENCE_POLICIES}, got {precedence_policy!r}")
    label = f"dataset {dataset_name!r}: " if dataset_name else ""
    for path, kind in ((json_file, "annotation file"), (image_root, "image folder")):
        if not os.path.exists(path):
            raise DatasetNotFoundError(
                f"{label}{kind} {path} not found. Lay the data out as described in "
                f"{DATASETS_README} (dataset root: $DETECTRON2_DATASETS, default ./datasets)."
            )
    try:
        with open(json_file, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise CorruptAnnotationError(f"{json_file}: not valid JSON ({e})") from e
    if not isinstance(data, dict):
        _fail(json_file, "top level must be a JSON object with 'images', 'annotations', 'categories'")
    for key in ("images", "annotations"):
        if not isinstance(data.get(key), list):
            _fail(json_file, f"missing list {key!r}")

    id_to_contiguous = _check_categories(json_file, data.get("categories", []), categories)
    records = _load_images(json_file, image_root, data["images"], check_image_files)
    if check_image_files:
        _check_image_files(json_file, list(records.values()))
    annotations = data["annotations"]
    if annotation_filter is not None:
        annotations = [ann for ann in annotations if annotation_filter(ann)]
        filtered = len(data["annotations"]) - len(annotations)
        logger.info(f"{json_file}: {filtered} of {len(data['annotations'])} annotations filtered out")
    dropped = _attach_annotations(json_file, records, annotations, id_to_contiguous, precedence_policy)

    num_anns = sum(len(r["annotations"]) for r in records.values())
    logger.info(
        f"Loaded {len(records)} images, {num_anns} instances from {json_file}"
        + (f" ({dropped['precedence']} redundant annotations with precedence>0 excluded)" if dropped["precedence"] else "")
    )
    if dropped["empty"]:
        logger.warning(
            f"{json_file}: dropped {len(dropped['empty'])} annotations with zero width or height "
            f"(ids {dropped['empty'][:10]}{' ...' if len(dropped['empty']) > 10 else ''})"
        )
    if dropped["boxed"]:
        listed = ", ".join(dropped["boxed"][:10])
        logger.warning(
            f"{json_file}: {len(dropped['boxed'])} annotations have no segmentation while the others have: "
            f"their boxes are used as rectangle masks ({listed}{' ...' if len(dropped['boxed']) > 10 else ''})"
        )
    if dropped["outside"]:
        listed = "; ".join(dropped["outside"][:20])
        logger.warning(
            f"{json_file}: {len(dropped['outside'])} polygons lie more than {POLYGON_OUTSIDE_FRACTION:.0%} outside "
            f"their page (kept; check their coordinates): {listed}{' ...' if len(dropped['outside']) > 20 else ''}"
        )
    return list(records.values())


def _check_image_files(json_file: str, records: List[Dict]) -> None:
    """One :class:`CorruptAnnotationError` listing every unreadable or wrongly sized image."""
    problems = find_image_problems(records, json_file)
    if problems:
        listed = problems[:_MAX_LISTED]
        if len(problems) > _MAX_LISTED:
            listed.append(f"... and {len(problems) - _MAX_LISTED} more")
        _fail(
            json_file,
            f"{len(problems)} of {len(records)} images are unreadable or disagree with the json "
            f"(see {DATASETS_README}):\n  " + "\n  ".join(listed),
        )


def _check_categories(json_file: str, file_categories: List[Dict], table: Sequence[Dict]) -> Dict[int, int]:
    """Check the file's categories against the table; return dataset id -> contiguous id."""
    table_by_id = {c["id"]: c["name"] for c in table}
    for cat in file_categories:
        cid, name = cat.get("id"), cat.get("name")
        if cid not in table_by_id:
            _fail(json_file, f"category {cat} is not in the dataset's category table {table_by_id}")
        if name is not None and name != table_by_id[cid]:
            _fail(json_file, f"category id {cid} is named {name!r} but the table says {table_by_id[cid]!r}")
    return {c["id"]: i for i, c in enumerate(table)}


def _load_images(json_file: str, image_root: str, images: List[Dict], check_files: bool) -> Dict[int, Dict]:
    records: Dict[int, Dict] = {}
    for img in images:
        try:
            image_id, file_name = img["id"], img["file_name"]
            width, height = int(img["width"]), int(img["height"])
        except (KeyError, TypeError, ValueError) as e:
            _fail(json_file, f"image record {img} lacks a valid id/file_name/width/height ({e!r})")
        if width <= 0 or height <= 0:
            _fail(json_file, f"image {image_id} ({file_name}) has size {width}x{height}")
        if image_id in records:
            _fail(json_file, f"image id {image_id} is listed twice")
        path = os.path.join(image_root, file_name)
        if check_files and not os.path.isfile(path):
            _fail(json_file, f"image {image_id} is listed but its file {path} does not exist")
        record = {"file_name": path, "height": height, "width": width, "image_id": image_id, "annotations": []}
        record.update({k: img[k] for k in EXTRA_IMAGE_KEYS if k in img})
        records[image_id] = record
    return records


def _attach_annotations(
    json_file: str,
    records: Dict[int, Dict],
    annotations: List[Dict],
    id_to_contiguous: Dict[int, int],
    precedence_policy: str,
) -> Dict:
    # "outside": polygons far outside their page, kept but reported; "boxed": no mask, box used
    dropped = {"empty": [], "precedence": 0, "outside": [], "boxed": []}
    maskless = []  # (object, where) of annotations without a mask
    for ann in annotations:
        ann_id = ann.get("id")
        where = f"annotation {ann_id} (image {ann.get('image_id')})"
        record = records.get(ann.get("image_id"))
        if record is None:
            _fail(json_file, f"{where} refers to an image id that is not in 'images'")
        if precedence_policy == "primary" and ann.get("precedence", 0) > 0:
            dropped["precedence"] += 1
            continue
        if ann.get("category_id") not in id_to_contiguous:
            _fail(json_file, f"{where} has unknown category_id {ann.get('category_id')!r}")
        bbox = _check_bbox(json_file, where, ann.get("bbox"), record)
        if bbox[2] == 0 or bbox[3] == 0:
            dropped["empty"].append(ann_id)
            continue
        obj = {
            "bbox": bbox,
            "bbox_mode": BoxMode.XYWH_ABS,
            "category_id": id_to_contiguous[ann["category_id"]],
            "iscrowd": int(ann.get("iscrowd", 0)),
        }
        segm = _check_segmentation(json_file, where, ann.get("segmentation"))
        if segm is not None:
            obj["segmentation"] = segm
            try:
                outside = _polygons_outside_fraction(segm, record["width"], record["height"])
            except TypeError:
                _fail(json_file, f"{where} has a polygon with non-numeric coordinates")
            if outside > POLYGON_OUTSIDE_FRACTION:
                dropped["outside"].append(f"{where} in {record['file_name']}: {outside:.0%} outside")
        else:
            maskless.append((obj, where))
        obj.update({k: ann[k] for k in EXTRA_ANNOTATION_KEYS if k in ann})
        record["annotations"].append(obj)
    masked = sum(len(r["annotations"]) for r in records.values()) - len(maskless)
    if maskless and masked:
        for obj, where in maskless:
            x, y, w, h = obj["bbox"]
            obj["segmentation"] = [[x, y, x + w, y, x + w, y + h, x, y + h]]
            dropped["boxed"].append(where)
    return dropped


def _check_bbox(json_file: str, where: str, bbox, record: Dict) -> List[float]:
    if not isinstance(bbox, (list, tuple)) or len(bbox) != 4:
        _fail(json_file, f"{where} has bbox {bbox!r}; expected [x, y, width, height]")
    try:
        x, y, w, h = (float(v) for v in bbox)
    except (TypeError, ValueError):
        _fail(json_file, f"{where} has non-numeric bbox {bbox!r}")
    if not all(math.isfinite(v) for v in (x, y, w, h)):
        _fail(json_file, f"{where} has non-finite bbox {bbox!r}")
    if w < 0 or h < 0:
        _fail(json_file, f"{where} has negative box size {bbox!r}")
    W, H, t = record["width"], record["height"], _BOX_TOLERANCE
    if x < -t or y < -t or x + w > W + t or y + h > H + t:
        _fail(json_file, f"{where} has bbox {bbox!r} outside its {W}x{H} page {record['file_name']}")
    return [x, y, w, h]


def _axis_inside(lo: float, hi: float, size: float) -> float:
    """Share of the interval [lo, hi] inside [-tolerance, size + tolerance] (a point: 0 or 1)."""
    start, end = max(lo, -_BOX_TOLERANCE), min(hi, size + _BOX_TOLERANCE)
    if hi == lo:
        return float(start <= end)
    return max(0.0, end - start) / (hi - lo)


def _polygons_outside_fraction(segm, width: int, height: int) -> float:
    """Share of the polygons' bounding box that lies outside the page (0 for RLE)."""
    if isinstance(segm, dict):
        return 0.0
    x0, x1 = min(min(p[0::2]) for p in segm), max(max(p[0::2]) for p in segm)
    y0, y1 = min(min(p[1::2]) for p in segm), max(max(p[1::2]) for p in segm)
    return 1.0 - _axis_inside(x0, x1, width) * _axis_inside(y0, y1, height)


def _check_segmentation(json_file: str, where: str, segm) -> Optional[object]:
    """Polygons (list of flat coordinate lists) or RLE dict; ``None`` when absent/empty."""
    if segm is None or (isinstance(segm, list) and len(segm) == 0):
        return None
    if isinstance(segm, dict):
        if "counts" not in segm or "size" not in segm:
            _fail(json_file, f"{where} has an RLE segmentation without 'counts'/'size'")
        return segm
    if not isinstance(segm, list) or not all(isinstance(p, list) for p in segm):
        _fail(json_file, f"{where} has segmentation of unsupported type {type(segm).__name__}")
    for poly in segm:
        if len(poly) % 2 != 0 or len(poly) < 6:
            _fail(json_file, f"{where} has a polygon with {len(poly)} coordinates (need an even number >= 6)")
    return segm
