"""Predicting on many files: every page of every input gets ``<name>.json`` (and ``<name>.png``)
in the output folder, with a progress bar; a file or page that fails is recorded with the reason
and the others go on. ``summary.json`` lists what was written and what failed, with the time
taken and the throughput (pages/s).

Pages are loaded ahead in worker processes (:mod:`.prefetch`) while the model runs, and given to
the model ``batch_size`` at a time (:meth:`Predictor.predict_batch`: one forward per page size
with a PyTorch model, one call per page with an exported one). A batch that fails is run again
page by page, so only the bad page is reported.

Names: ``<stem>`` for an image, ``<stem>_p<page:04d>`` for a PDF page; a stem met twice (same
name in two folders, ``a.png`` and ``a.jpg``) gets ``_2``, ``_3``... in input order.
"""
import contextlib
import json
import logging
import os
import time
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image
from tqdm import tqdm

from ..inference.inputs import Failure, PageJob, collect_sources, iter_pages
from .prefetch import load_pages
from .records import DEFAULT_OUTPUT_FORMAT, check_output_format
from .visualize import DEFAULT_VIS_MAX_SIZE

logger = logging.getLogger(__name__)

DEFAULT_DPI = 150.0
DEFAULT_BATCH_SIZE = 4
DEFAULT_WORKERS = 1
SUMMARY_FILE = "summary.json"


@dataclass
class RunSummary:
    written: List[str] = field(default_factory=list)  # JSON files, one per page
    failures: List[Failure] = field(default_factory=list)
    seconds: float = 0.0  # wall time from the first page loaded to the last written

    @property
    def ok(self) -> bool:
        return not self.failures

    @property
    def pages_per_second(self) -> float:
        return len(self.written) / self.seconds if self.seconds > 0 else 0.0


def _unique_stem(path: str, used: set) -> str:
    stem = os.path.splitext(os.path.basename(path))[0] or "page"
    name, k = stem, 1
    while name in used:
        k += 1
        name = f"{stem}_{k}"
    used.add(name)
    return name


def _pages(sources, dpi: float) -> List[Tuple[PageJob, str]]:
    """(job, output name) of every page, in input order."""
    pages, used = [], set()
    for source in sources:
        stem = _unique_stem(source.path, used)
        pages += [(job, stem if job.page is None else f"{stem}_p{job.page:04d}") for job in iter_pages(source, dpi)]
    return pages


def _predict(predictor, images: List[np.ndarray]) -> list:
    """Detections of each page, or the exception that stopped it (a failing batch is run again
    page by page)."""
    try:
        return predictor.predict_batch(images)
    except Exception as e:  # reported with the page
        return [e] if len(images) == 1 else [_predict(predictor, [image])[0] for image in images]


def _write_batch(predictor, batch: List[Tuple[PageJob, str, np.ndarray]], summary: RunSummary, output_dir: str,
                 output_format: str, visualize: Optional[int]) -> None:
    """Predict the pages of ``batch`` (job, name, image) and write each; failures go to ``summary``."""
    for (job, name, image), result in zip(batch, _predict(predictor, [image for _, _, image in batch])):
        try:
            if isinstance(result, Exception):
                raise result
            summary.written.append(_write_page(predictor, image, result, job, output_dir, name, output_format,
                                               visualize))
        except Exception as e:  # one bad page must not stop the others; the reason is reported
            logger.debug("prediction failed", exc_info=True)
            summary.failures.append(Failure(job.path, job.page, _reason(e)))


def _write_page(predictor, image, instances, job: PageJob, output_dir: str, name: str, output_format: str,
                visualize: Optional[int]) -> str:
    """Write ``<name>.json`` (+ ``<name>.png`` unless ``visualize`` is None, its longest side
    capped at ``visualize`` pixels if > 0); return the JSON path."""
    record = predictor.record(instances, os.path.abspath(job.path), job.page, job.dpi, output_format)
    json_path = os.path.join(output_dir, f"{name}.json")
    with open(json_path, "w") as f:
        json.dump(record, f)
    if visualize is not None:
        Image.fromarray(predictor.visualize(image, instances, visualize)).save(os.path.join(output_dir, f"{name}.png"))
    return json_path


def _reason(e: Exception) -> str:
    return getattr(e, "reason", f"{type(e).__name__}: {e}")


def predict_files(
    predictor, paths: Sequence[str], output_dir: str, dpi: float = DEFAULT_DPI,
    output_format: str = DEFAULT_OUTPUT_FORMAT, visualize: bool = True, progress: bool = True,
    batch_size: int = DEFAULT_BATCH_SIZE, workers: int = DEFAULT_WORKERS, vis_max_size: int = DEFAULT_VIS_MAX_SIZE,
) -> RunSummary:
    """Run ``predictor`` (a :class:`dla_kd.Predictor`) on images, folders (their images and PDFs)
    and PDFs (every page rendered at ``dpi``); write JSON records (``output_format`` "rle",
    "polygons" or "boxes", see :mod:`.records`) and, with ``visualize``, PNG pictures of the page
    size (scaled down to a longest side of ``vis_max_size`` if larger; 0: never) into
    ``output_dir``. ``batch_size`` pages go to the model together; ``workers`` processes load
    pages ahead (0: in this process)."""
    check_output_format(output_format)
    os.makedirs(output_dir, exist_ok=True)
    sources, failures = collect_sources(paths)
    summary = RunSummary(failures=failures)
    pages = _pages(sources, dpi)
    start = time.perf_counter()
    batch: List[Tuple[PageJob, str, np.ndarray]] = []
    batch_size = max(int(batch_size), 1)
    loaded = load_pages([job for job, _ in pages], workers, ahead=batch_size + workers)
    with contextlib.closing(loaded), tqdm(total=len(pages), unit="page", disable=not progress,
                                          dynamic_ncols=True) as bar:
        for k, ((_, name), (job, image, error)) in enumerate(zip(pages, loaded)):
            bar.set_postfix_str(os.path.basename(job.path))
            if error is not None:
                summary.failures.append(Failure(job.path, job.page, error))
                bar.update(1)
            else:
                batch.append((job, name, image))
            if batch and (len(batch) >= batch_size or k == len(pages) - 1):
                _write_batch(predictor, batch, summary, output_dir, output_format, vis_max_size if visualize else None)
                bar.update(len(batch))
                batch = []
    summary.seconds = time.perf_counter() - start
    _write_summary(summary, predictor, output_dir, output_format, batch_size, workers)
    return summary


def _write_summary(summary: RunSummary, predictor, output_dir: str, output_format: str, batch_size: int,
                   workers: int) -> None:
    with open(os.path.join(output_dir, SUMMARY_FILE), "w") as f:
        json.dump({
            "written": summary.written, "failures": [vars(x) for x in summary.failures],
            "pages": len(summary.written), "seconds": round(summary.seconds, 3),
            "pages_per_second": round(summary.pages_per_second, 3),
            "backend": predictor.backend, "output_format": output_format,
            "batch_size": batch_size if predictor.batch_forward else 1, "workers": workers,
        }, f, indent=2)
