"""Predicting on many files: every page of every input gets ``<name>.json`` (and ``<name>.png``)
in the output folder, with a progress bar; a file or page that fails is recorded with the reason
and the others go on. ``summary.json`` lists what was written and what failed.

Names: ``<stem>`` for an image, ``<stem>_p<page:04d>`` for a PDF page; a stem met twice (same
name in two folders, ``a.png`` and ``a.jpg``) gets ``_2``, ``_3``... in input order.
"""
import json
import logging
import os
from dataclasses import dataclass, field
from typing import List, Sequence

from PIL import Image
from tqdm import tqdm

from .inputs import Failure, InputError, collect_sources, iter_pages
from .records import MASK_FORMATS

logger = logging.getLogger(__name__)

DEFAULT_DPI = 150.0
SUMMARY_FILE = "summary.json"


@dataclass
class RunSummary:
    written: List[str] = field(default_factory=list)  # JSON files, one per page
    failures: List[Failure] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures


def _unique_stem(path: str, used: set) -> str:
    stem = os.path.splitext(os.path.basename(path))[0] or "page"
    name, k = stem, 1
    while name in used:
        k += 1
        name = f"{stem}_{k}"
    used.add(name)
    return name


def _write_page(predictor, image, source: str, page, dpi, output_dir: str, name: str, mask_format: str,
                visualize: bool) -> str:
    """Predict one page image, write ``<name>.json`` (+ ``<name>.png``); return the JSON path."""
    instances = predictor(image)
    record = predictor.record(instances, os.path.abspath(source), page, dpi if page is not None else None, mask_format)
    json_path = os.path.join(output_dir, f"{name}.json")
    with open(json_path, "w") as f:
        json.dump(record, f)
    if visualize:
        Image.fromarray(predictor.visualize(image, instances)).save(os.path.join(output_dir, f"{name}.png"))
    return json_path


def predict_files(
    predictor, paths: Sequence[str], output_dir: str, dpi: float = DEFAULT_DPI, mask_format: str = "polygon",
    visualize: bool = True, progress: bool = True,
) -> RunSummary:
    """Run ``predictor`` (a :class:`dla_kd.Predictor`) on images, folders (their images and PDFs)
    and PDFs (every page rendered at ``dpi``); write JSON records (``mask_format`` "polygon" or
    "rle") and, with ``visualize``, PNG pictures of the page size into ``output_dir``."""
    if mask_format not in MASK_FORMATS:
        raise ValueError(f"mask_format must be one of {MASK_FORMATS}, got {mask_format!r}")
    os.makedirs(output_dir, exist_ok=True)
    sources, failures = collect_sources(paths)
    summary = RunSummary(failures=failures)
    used: set = set()
    with tqdm(total=sum(s.num_pages for s in sources), unit="page", disable=not progress, dynamic_ncols=True) as bar:
        for source in sources:
            stem = _unique_stem(source.path, used)
            bar.set_postfix_str(os.path.basename(source.path))
            try:
                for page, load in iter_pages(source, dpi):
                    name = stem if page is None else f"{stem}_p{page:04d}"
                    try:
                        summary.written.append(_write_page(predictor, load(), source.path, page, dpi, output_dir,
                                                           name, mask_format, visualize))
                    except Exception as e:  # one bad page must not stop the batch; the reason is reported
                        logger.debug("prediction failed", exc_info=True)
                        summary.failures.append(Failure(source.path, page, getattr(e, "reason", f"{type(e).__name__}: {e}")))
                    bar.update(1)
            except InputError as e:  # a PDF that became unreadable since it was collected
                summary.failures.append(Failure(e.path, e.page, e.reason))
    with open(os.path.join(output_dir, SUMMARY_FILE), "w") as f:
        json.dump({"written": summary.written, "failures": [vars(x) for x in summary.failures]}, f, indent=2)
    return summary
