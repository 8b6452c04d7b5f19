"""Offline pseudo-labelling: a teacher's detections on pages of your own, as a COCO file with
scores that trains like a labelled dataset (``dla_kd.data.register_pseudo_labeled``).

Layout of the output folder::

    pages/                   PDF pages rendered at --dpi (dla_kd/data/pages.py; images stay where they are)
    pseudo_labels.jsonl      the journal: a header line (teacher, classes, threshold), then one line per page
    pseudo_labels.json       the COCO file (written atomically from the journal at the end of a run)

The journal makes a run resumable: each labelled page is appended as one line and flushed to
disk (fsync) before the next page; a line cut short by a kill is dropped on the next run, which
labels only the pages the journal lacks. The header must match the current run (same teacher
weights or exported model by sha256, classes, minimum score, DPI, polygon tolerance), else the run
is refused: a folder holds the labels of one teacher. Where the teacher's files are (config and
weights paths, mtimes) may change (another checkout, a copied checkpoint): a warning says so. The
COCO ``info`` records that teacher (``dla_kd.data.pseudo_labeled``) and every annotation its
``score`` and its mask as polygons (Detectron2's default ``INPUT.MASK_FORMAT``), simplified to
within ``polygon_tolerance`` pixels of the traced contour; ``file_name`` is relative to the output
folder for rendered pages, absolute for image files. The COCO file holds every page of the journal, i.e.
every page labelled into this folder. Teachers from other toolkits (``dla_kd/predict/external``:
a results file or an in-process plugin, behind a class map) label through the same journal;
their header adds the class map, their page lines the detections it dropped.
"""
import json
import logging
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import numpy as np
from tqdm import tqdm

from ..data.pages import Skipped, collect_pages
from ..data.pseudo_labeled import PSEUDO_LABELS_KIND, PseudoLabelMismatchError
from ..utils.files import atomic_write_json, file_fingerprint
from .segmentation import simplify_polygon

logger = logging.getLogger(__name__)

JOURNAL_FILE = "pseudo_labels.jsonl"
LABELS_FILE = "pseudo_labels.json"
PAGES_DIR = "pages"
EXPORTED_MODEL_FILES = ("model.ts", "model.onnx")
DEFAULT_POLYGON_TOLERANCE = 1.0  # pixels; a mask's contour points dropped within this distance


@dataclass
class PseudoLabelSummary:
    json_file: str
    labelled: int = 0  # pages labelled by this run
    resumed: int = 0  # pages labelled by an earlier run into the same folder
    skipped: List[Skipped] = field(default_factory=list)  # unusable files and pages (dla_kd/data/pages.py)
    failures: List[Skipped] = field(default_factory=list)  # pages the teacher failed on (retried next run)
    dropped: Counter = field(default_factory=Counter)  # detections of unmapped classes (external teachers), by class


def _model_file(path: str) -> str:
    if not os.path.isdir(path):
        return path
    for name in EXPORTED_MODEL_FILES:
        if os.path.isfile(os.path.join(path, name)):
            return os.path.join(path, name)
    raise FileNotFoundError(f"no {' or '.join(EXPORTED_MODEL_FILES)} in {path}")


def teacher_record(class_names: Sequence[str], config_file: Optional[str] = None, weights: Optional[str] = None,
                   exported: Optional[str] = None) -> Dict:
    """What identifies the teacher in the COCO ``info``: its config, weights or exported model
    (path, size, mtime, sha256) and class names in order."""
    return {
        "config": os.path.abspath(config_file) if config_file else None,
        "weights": file_fingerprint(weights) if weights else None,
        "exported": file_fingerprint(_model_file(exported)) if exported else None,
        "classes": list(class_names),
    }


# Header keys that say where the teacher's files were, not which teacher it is (its weights'
# sha256 does): another checkout, a copied checkpoint or a touched file keeps the journal.
LOCATION_KEYS = ("info.teacher.config", "info.teacher.weights.path", "info.teacher.weights.mtime_ns",
                 "info.teacher.exported.path", "info.teacher.exported.mtime_ns",
                 # external teachers (dla_kd/predict/external): model, results file and class map
                 "info.teacher.model.path", "info.teacher.model.mtime_ns", "info.teacher.results.path",
                 "info.teacher.results.mtime_ns", "info.class_map.path")


def _differences(old: Dict, new: Dict, prefix: str = "") -> Dict[str, str]:
    """{dotted key: "key: old before, new now"} of the values that differ."""
    out = {}
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out.update(_differences(a, b, f"{prefix}{key}."))
        elif a != b:
            out[f"{prefix}{key}"] = f"{prefix}{key}: {a!r} before, {b!r} now"
    return out


def mask_polygons(detection: Dict, tolerance: float) -> Optional[List[List[float]]]:
    """The detection's mask polygons (a record of output format "polygons", what Detectron2's
    default ``INPUT.MASK_FORMAT`` "polygon" trains on) simplified to ``tolerance`` pixels
    (:func:`~dla_kd.predict.segmentation.simplify_polygon`); the box itself when nothing of the
    mask is left; None for a model without masks."""
    segmentation = detection.get("segmentation")
    if segmentation is None:
        return None
    polygons = [[round(float(v), 2) for v in simplify_polygon(np.asarray(p), tolerance)] for p in segmentation]
    if not polygons:
        x, y, w, h = detection["bbox"]
        polygons = [[x, y, x + w, y, x + w, y + h, x, y + h]]
    return polygons


class Journal:
    """``pseudo_labels.jsonl``: header, then one JSON line per labelled page (see module docstring)."""

    def __init__(self, path: str, header: Dict):
        self.path, self.header, self.records = path, header, []
        if os.path.isfile(path):
            self._load()
        else:
            self._append({"header": header, "created": time.strftime("%Y-%m-%dT%H:%M:%S")})

    def _load(self) -> None:
        good = 0  # bytes of complete lines
        with open(self.path, "rb") as f:
            lines = f.read().split(b"\n")
        for line in lines[:-1]:  # the part after the last newline is incomplete
            try:
                item = json.loads(line)
            except ValueError:
                break
            if good == 0:
                found = item.get("header", {})
                differences = _differences(found, self.header)
                moved = [d for k, d in differences.items() if k in LOCATION_KEYS]
                if moved:
                    logger.warning(f"{self.path}: the same teacher (weights sha256) from another place; "
                                   f"going on ({'; '.join(moved)})")
                changed = [d for k, d in differences.items() if k not in LOCATION_KEYS]
                if changed:
                    raise PseudoLabelMismatchError(
                        f"{self.path} holds pseudo labels of another teacher or setting ({'; '.join(changed)}). "
                        "Write to another --output folder, or delete it to start again."
                    )
            else:
                self.records.append(item)
            good += len(line) + 1
        if good == 0:
            raise PseudoLabelMismatchError(f"{self.path} has no readable header line; delete it to start again")
        if good < sum(len(line) + 1 for line in lines) - 1:
            logger.warning(f"{self.path}: dropping an incomplete last line (an interrupted run)")
            with open(self.path, "r+b") as f:
                f.truncate(good)

    def _append(self, item: Dict) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(item, separators=(",", ":")) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def add(self, record: Dict) -> None:
        self._append(record)
        self.records.append(record)

    def done(self) -> set:
        """Real paths of the pages labelled so far: a page listed again through another spelling of
        its path (a symlinked folder, another working directory) is not labelled twice."""
        return {os.path.realpath(r["file_name"]) for r in self.records}


def coco_from_journal(journal: Journal, output_dir: str) -> Dict:
    """The COCO dict of every page in the journal (ids in journal order)."""
    images, annotations = [], []
    root = os.path.abspath(output_dir) + os.sep
    for image_id, record in enumerate(journal.records, start=1):
        file_name = record["file_name"]
        images.append({
            "id": image_id, "width": record["width"], "height": record["height"],
            "file_name": file_name[len(root):] if file_name.startswith(root) else file_name,
            "source_file": record["source"], "page": record["page"],
        })
        for det in record["detections"]:
            ann = {k: det[k] for k in ("category_id", "bbox", "score", "area")}
            if det.get("segmentation") is not None:
                ann["segmentation"] = det["segmentation"]
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, **ann, "iscrowd": 0})
    header = journal.header
    info = dict(header["info"])
    dropped = dropped_in(journal)
    if "class_map" in info:  # an external teacher: what its class map dropped, over every page
        info["dropped"] = dict(sorted(dropped.items()))
    return {"info": info, "images": images, "annotations": annotations, "categories": header["categories"]}


class PredictorLabeller:
    """A dla-kd teacher (:class:`dla_kd.Predictor`) as the page labeller of :func:`pseudo_label`
    (the other kind: :class:`dla_kd.predict.external.labeller.ExternalLabeller`). A labeller has
    ``categories`` (``[{"id", "name"}]`` of the file), ``info()`` (keys added to the COCO ``info``
    and the journal header), ``prepare(pages, input_paths)`` (before labelling) and ``label(page)``
    -> (detections of :func:`~dla_kd.predict.records.page_record`'s form with polygon masks,
    Counter of dropped detections by teacher class)."""

    def __init__(self, predictor, polygon_tolerance: float):
        self.predictor, self.polygon_tolerance = predictor, polygon_tolerance
        self.categories = [{"id": c.id, "name": c.name} for c in predictor.spec.categories]

    def info(self) -> Dict:
        return {}

    def prepare(self, pages, roots) -> None:
        pass

    def label(self, page):
        from detectron2.data.detection_utils import read_image

        image = read_image(page.file_name, format="RGB")
        record = self.predictor.record(self.predictor(image), page.file_name, output_format="polygons")
        return [dict(d, segmentation=mask_polygons(d, self.polygon_tolerance)) for d in record["detections"]], Counter()


def dropped_in(journal: Journal) -> Counter:
    """Detections dropped by the class map (unmapped classes), by teacher class, over the journal."""
    return sum((Counter(r.get("dropped", {})) for r in journal.records), Counter())


def pseudo_label(teacher, paths: Sequence[str], output_dir: str, teacher_record: Dict, dpi: float = 150.0,
                 min_score: float = 0.05, polygon_tolerance: float = DEFAULT_POLYGON_TOLERANCE,
                 progress: bool = True) -> PseudoLabelSummary:
    """Label every page of ``paths`` (images, folders searched recursively, PDFs rendered at
    ``dpi`` into ``output_dir/pages``) with ``teacher``, resuming an earlier run into
    ``output_dir``; write ``output_dir/pseudo_labels.json``. ``teacher``: a :class:`dla_kd.Predictor`
    whose ``min_score`` is ``min_score``, or an external teacher behind a class map
    (:class:`~dla_kd.predict.external.labeller.ExternalLabeller`: its class map's thresholds are the
    minimum scores). ``teacher_record``: :func:`teacher_record` (or the external teacher's
    ``record()``). Mask contours are simplified to ``polygon_tolerance`` pixels (0: every contour
    point, hundreds per layout element: about 0.4 MB of JSON per page of 50 detections, instead of
    a few kB)."""
    labeller = teacher if hasattr(teacher, "label") else PredictorLabeller(teacher, polygon_tolerance)
    os.makedirs(output_dir, exist_ok=True)
    info = {"description": PSEUDO_LABELS_KIND, "teacher": teacher_record,
            "min_score": getattr(labeller, "min_score", min_score), "dpi": dpi,
            "polygon_tolerance": polygon_tolerance, **labeller.info()}
    journal = Journal(os.path.join(output_dir, JOURNAL_FILE), {"info": info, "categories": labeller.categories})
    pages, skipped = collect_pages(paths, dpi, os.path.join(output_dir, PAGES_DIR), progress=progress, desc="render")
    labeller.prepare(pages, paths)
    done = journal.done()
    todo = [p for p in pages if os.path.realpath(p.file_name) not in done]
    summary = PseudoLabelSummary(os.path.join(output_dir, LABELS_FILE), resumed=len(pages) - len(todo), skipped=skipped)
    if summary.resumed:
        logger.info(f"{output_dir}: {summary.resumed} pages already labelled, {len(todo)} to go")
    for page in tqdm(todo, desc="pseudo-label", unit="page", disable=not progress, dynamic_ncols=True):
        try:
            detections, dropped = labeller.label(page)
        except Exception as e:  # one bad page must not stop the run; it is retried next time
            logger.debug("pseudo-labelling failed", exc_info=True)
            summary.failures.append(Skipped(page.source, page.page, f"{type(e).__name__}: {e}"))
            continue
        record = {"file_name": page.file_name, "width": page.width, "height": page.height,
                  "source": page.source, "page": page.page, "detections": detections}
        journal.add({**record, "dropped": dict(dropped)} if dropped else record)
        summary.labelled += 1
    summary.dropped = dropped_in(journal)
    atomic_write_json(summary.json_file, coco_from_journal(journal, output_dir), unique=True, separators=(",", ":"))
    return summary
