"""Pages for int8 calibration and for the AP check: N pages spread evenly over a registered
dataset or over a folder of images/PDFs (see :class:`.quantize.PageReader` for how they reach
onnxruntime's calibration)."""
import functools
import logging
import os
from typing import Callable, Dict, List

import numpy as np
from detectron2.data import DatasetCatalog

from ..inference.samples import read_image_rgb
from .errors import ExportError

logger = logging.getLogger(__name__)

DEFAULT_CALIBRATION_IMAGES = 32
PDF_DPI = 150.0


def spread(total: int, n: int) -> List[int]:
    """``n`` indices spread evenly over ``range(total)`` (all of them if ``n >= total``)."""
    if n >= total:
        return list(range(total))
    return sorted({int(i) for i in np.linspace(0, total - 1, n).round()})


def dataset_records(name: str, n: int) -> List[Dict]:
    """``n`` records spread over the registered dataset ``name`` (Detectron2 dataset dicts)."""
    if name not in DatasetCatalog.list():
        raise ExportError(f"{name!r} is neither a folder nor a registered dataset (e.g. synthetic_doclaynet_val)")
    records = DatasetCatalog.get(name)
    if not records:
        raise ExportError(f"Dataset {name!r} has no images")
    return [records[i] for i in spread(len(records), n)]


def _load(job) -> np.ndarray:
    from ..inference.inputs import close_documents, load_page

    try:
        return load_page(job)
    finally:
        close_documents()


def _folder_loaders(folder: str, n: int) -> List[Callable[[], np.ndarray]]:
    from ..inference.inputs import collect_sources, iter_pages  # the pages tools/predict.py reads

    sources, failures = collect_sources([folder])
    for failure in failures:
        logger.warning(f"Calibration: skipping {failure}")
    jobs = [job for source in sources for job in iter_pages(source, PDF_DPI)]
    return [functools.partial(_load, jobs[i]) for i in spread(len(jobs), n)]


def page_loaders(source: str, n: int) -> List[Callable[[], np.ndarray]]:
    """Loaders of ``n`` pages ((H, W, 3) uint8 RGB) of ``source``: a folder (its images and the
    pages of its PDFs, rendered at ``PDF_DPI``) or a registered dataset name."""
    if os.path.isdir(source):
        loaders = _folder_loaders(source, n)
    else:
        loaders = [functools.partial(read_image_rgb, r["file_name"]) for r in dataset_records(source, n)]
    if not loaders:
        raise ExportError(f"No pages to calibrate on in {source}")
    return loaders
